//! The function's IAM execution role: trusts only `lambda.amazonaws.com`, carries
//! `AWSLambdaBasicExecutionRole` and nothing else.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aws_sdk_iam::Client;
use aws_sdk_iam::types::Tag;
use serde_json::{Value, json};
use tokio::time::Instant;

use futures::future::BoxFuture;

use crate::app::App;
use crate::aws::Clients;
use crate::error::{AwsResultExt, Failure};
use crate::names::{Names, OWNER_TAG, owned_by};
use crate::resources::check::{SETUP, check, fail, ok};
use crate::resources::{
    Action, Check, Desired, NOT_OURS_HINT, Observed as All, Outcome, Planned as _, Reading,
    Removal, Resource, SetupOptions, Step, not_ours,
};

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub arn: String,
    pub trust_policy: Value,
    pub attached: Vec<String>,
    pub inline: Vec<String>,
    pub owned: bool,
}

pub fn trust_policy() -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
}

/// True when the trust policy lets Lambda, and only Lambda, assume the role.
pub fn trusts_only_lambda(doc: &Value) -> bool {
    let one = |v: &Value, want: &str| match v {
        Value::String(s) => s == want,
        Value::Array(a) => a.len() == 1 && a[0] == want,
        _ => false,
    };
    let Some(statements) = doc.get("Statement").and_then(Value::as_array) else {
        return false;
    };
    !statements.is_empty()
        && statements.iter().all(|s| {
            s.get("Effect") == Some(&json!("Allow"))
                && s.get("Action").is_some_and(|a| one(a, "sts:AssumeRole"))
                && s.get("Principal")
                    .and_then(Value::as_object)
                    .is_some_and(|p| {
                        p.len() == 1
                            && p.get("Service")
                                .is_some_and(|v| one(v, "lambda.amazonaws.com"))
                    })
        })
}

pub async fn read(iam: &Client, names: &Names) -> Result<Option<Observed>> {
    let role = match iam.get_role().role_name(&names.role).send().await {
        Ok(out) => out.role.context("GetRole returned no role")?,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).aws("iam:GetRole"),
    };
    let (attached, inline) = tokio::try_join!(
        async {
            iam.list_attached_role_policies()
                .role_name(&names.role)
                .send()
                .await
                .aws("iam:ListAttachedRolePolicies")
        },
        async {
            iam.list_role_policies()
                .role_name(&names.role)
                .send()
                .await
                .aws("iam:ListRolePolicies")
        }
    )?;
    // IAM returns the trust policy URL-encoded.
    let raw = role.assume_role_policy_document().unwrap_or_default();
    let decoded = urlencoding::decode(raw)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| raw.to_string());
    Ok(Some(Observed {
        arn: role.arn().to_string(),
        trust_policy: serde_json::from_str(&decoded).unwrap_or(Value::Null),
        attached: attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_owned))
            .collect(),
        inline: inline.policy_names().to_vec(),
        owned: owned_by(
            role.tags().iter().map(|t| (t.key(), t.value())),
            &names.deployment,
        ),
    }))
}

/// The changes that bring an existing role to the desired state (empty: nothing to do).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: bool,
    pub update_trust: bool,
    pub attach_basic: bool,
    pub detach: Vec<String>,
    pub delete_inline: Vec<String>,
}

impl crate::resources::Planned for Plan {
    fn creates(&self) -> bool {
        self.create
    }

    fn changes(&self) -> Vec<String> {
        self.describe()
    }
}

impl Plan {
    pub fn describe(&self) -> Vec<String> {
        let mut d = Vec::new();
        if self.update_trust {
            d.push("trust policy reset to lambda.amazonaws.com only".to_string());
        }
        if self.attach_basic {
            d.push("attach AWSLambdaBasicExecutionRole".to_string());
        }
        d.extend(self.detach.iter().map(|p| format!("detach {p}")));
        d.extend(
            self.delete_inline
                .iter()
                .map(|p| format!("delete inline policy {p}")),
        );
        d
    }
}

/// Pure: what to change, with `basic` the ARN of AWSLambdaBasicExecutionRole in the caller's
/// partition. An existing role that is not ours must be handled by the caller.
pub fn plan(basic: &str, observed: Option<&Observed>) -> Plan {
    let Some(o) = observed else {
        return Plan {
            create: true,
            attach_basic: true,
            ..Plan::default()
        };
    };
    Plan {
        create: false,
        update_trust: !trusts_only_lambda(&o.trust_policy),
        attach_basic: !o.attached.iter().any(|a| a == basic),
        detach: o.attached.iter().filter(|a| *a != basic).cloned().collect(),
        delete_inline: o.inline.clone(),
    }
}

pub async fn apply(iam: &Client, desired: &Desired, plan: &Plan) -> Result<()> {
    let names = &desired.names;
    let policy = trust_policy().to_string();
    if plan.create {
        iam.create_role()
            .role_name(&names.role)
            .description(format!(
                "Execution role of the IoT custom authorizer `{}` (iot-custom-auth)",
                names.deployment
            ))
            .assume_role_policy_document(&policy)
            .tags(
                Tag::builder()
                    .key(OWNER_TAG)
                    .value(&names.deployment)
                    .build()?,
            )
            .send()
            .await
            .aws("iam:CreateRole")
            .with_context(|| format!("creating role {}", names.role))?;
    }
    if plan.update_trust {
        iam.update_assume_role_policy()
            .role_name(&names.role)
            .policy_document(&policy)
            .send()
            .await
            .aws("iam:UpdateAssumeRolePolicy")?;
    }
    if plan.attach_basic {
        iam.attach_role_policy()
            .role_name(&names.role)
            .policy_arn(desired.basic_execution_policy_arn())
            .send()
            .await
            .aws("iam:AttachRolePolicy")?;
    }
    detach_all(iam, names, &plan.detach, &plan.delete_inline).await
}

async fn detach_all(
    iam: &Client,
    names: &Names,
    attached: &[String],
    inline: &[String],
) -> Result<()> {
    for arn in attached {
        iam.detach_role_policy()
            .role_name(&names.role)
            .policy_arn(arn)
            .send()
            .await
            .aws("iam:DetachRolePolicy")?;
    }
    for name in inline {
        iam.delete_role_policy()
            .role_name(&names.role)
            .policy_name(name)
            .send()
            .await
            .aws("iam:DeleteRolePolicy")?;
    }
    Ok(())
}

/// How long teardown retries DeleteRole while IAM still reports the policies it just detached
/// (`DeleteConflict`; IAM is eventually consistent, and Terraform retries exactly this). AWS gives
/// no bound; propagation takes seconds.
const DELETE_CONFLICT_BUDGET: Duration = Duration::from_secs(60);
const DELETE_CONFLICT_DELAY: Duration = Duration::from_secs(2);

/// Detaches every policy, then deletes the role (IAM refuses while policies are attached).
pub async fn delete(app: &App, iam: &Client, names: &Names, observed: &Observed) -> Result<()> {
    detach_all(iam, names, &observed.attached, &observed.inline).await?;
    let started = Instant::now();
    loop {
        match iam.delete_role().role_name(&names.role).send().await {
            Ok(_) => return Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                return Ok(());
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_delete_conflict_exception())
                    && started.elapsed() + DELETE_CONFLICT_DELAY <= DELETE_CONFLICT_BUDGET =>
            {
                app.progress(format!(
                    "  IAM still sees policies on role {} right after detaching them; retrying DeleteRole ({}s so far, up to {}s)",
                    names.role,
                    started.elapsed().as_secs(),
                    DELETE_CONFLICT_BUDGET.as_secs()
                ));
                tokio::time::sleep(DELETE_CONFLICT_DELAY).await;
            }
            Err(e) => {
                return Err(e).aws("iam:DeleteRole").with_context(|| {
                    format!(
                        "deleting role {} (retried for up to {}s while IAM propagated the detach)",
                        names.role,
                        DELETE_CONFLICT_BUDGET.as_secs()
                    )
                });
            }
        }
    }
}

/// The role as one of the deployment's resources.
pub struct Role;
pub static RESOURCE: Role = Role;

impl Resource for Role {
    fn kind(&self) -> &'static str {
        "role"
    }

    fn label(&self) -> &'static str {
        "IAM role"
    }

    fn after(&self) -> &'static [&'static str] {
        &[]
    }

    /// Nothing: IAM deletes a role a function still names (Lambda only assumes it when it
    /// runs), so the IAM chain runs alongside the Lambda one; a function left behind by a failed
    /// deletion is removed by the next `teardown` all the same.
    fn removed_after(&self) -> &'static [&'static str] {
        &[]
    }

    fn read<'a>(
        &'a self,
        clients: &'a Clients,
        names: &'a Names,
    ) -> BoxFuture<'a, Result<Reading>> {
        Box::pin(async move {
            let found = read(&clients.iam, names).await?;
            Ok(Box::new(move |o: &mut All| o.role = found) as Reading)
        })
    }

    fn checks(&self, desired: &Desired, observed: &All) -> Vec<Check> {
        let Some(r) = &observed.role else {
            return vec![fail(
                "role.exists",
                format!("IAM role {} not found", desired.names.role),
                SETUP,
            )];
        };
        let basic_arn = desired.basic_execution_policy_arn();
        let basic = r.attached.contains(&basic_arn);
        let extra: Vec<&str> = r
            .attached
            .iter()
            .filter(|a| **a != basic_arn)
            .chain(&r.inline)
            .map(String::as_str)
            .collect();
        vec![
            ok("role.exists", r.arn.clone()),
            check(
                "role.owned",
                r.owned,
                "tagged as ours",
                "not tagged as created by this deployment",
                "choose another --name or remove the role by hand",
            ),
            check(
                "role.trust_policy",
                trusts_only_lambda(&r.trust_policy),
                "trusts lambda.amazonaws.com only",
                "trust policy does not limit the role to lambda.amazonaws.com",
                SETUP,
            ),
            check(
                "role.execution_policy",
                basic && extra.is_empty(),
                "AWSLambdaBasicExecutionRole only",
                if basic {
                    format!("extra policies: {}", extra.join(", "))
                } else {
                    "AWSLambdaBasicExecutionRole is not attached".to_string()
                },
                SETUP,
            ),
        ]
    }

    fn refuse(&self, desired: &Desired, observed: &All, _: &SetupOptions) -> Result<()> {
        let n = &desired.names;
        if observed.role.as_ref().is_some_and(|r| !r.owned) {
            bail!(Failure::new(
                not_ours("IAM role", &n.role, &n.deployment),
                NOT_OURS_HINT
            ));
        }
        Ok(())
    }

    fn plan(&self, desired: &Desired, observed: &All) -> Outcome {
        plan(
            &desired.basic_execution_policy_arn(),
            observed.role.as_ref(),
        )
        .outcome(self.kind(), &desired.names.role)
    }

    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let basic = step.desired.basic_execution_policy_arn();
            let plan = plan(&basic, step.observed.role.as_ref());
            apply(&step.clients.iam, step.desired, &plan).await
        })
    }

    /// Never while a function that is not ours still runs as the role: deleting it would break
    /// that function. (A function whose tags could not be read stops teardown before this.)
    fn removal(&self, names: &Names, observed: &All) -> Removal {
        let user = observed
            .function
            .as_ref()
            .filter(|f| !f.owned && observed.role.as_ref().is_some_and(|r| r.arn == f.role));
        match &observed.role {
            None => Removal::Absent,
            Some(r) if r.owned && user.is_some() => Removal::Skip(
                Outcome::new(self.kind(), &names.role, Action::Skipped).with(vec![format!(
                    "still the execution role of function `{}`, which is not this deployment's",
                    names.function
                )]),
            ),
            Some(r) if r.owned => {
                Removal::Delete(Outcome::new(self.kind(), &names.role, Action::Deleted))
            }
            Some(_) => Removal::Skip(
                Outcome::new(self.kind(), &names.role, Action::Skipped).with(vec![not_ours(
                    "IAM role",
                    &names.role,
                    &names.deployment,
                )]),
            ),
        }
    }

    fn delete<'a>(
        &'a self,
        app: &'a App,
        clients: &'a Clients,
        names: &'a Names,
        observed: &'a All,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match &observed.role {
                Some(r) => delete(app, &clients.iam, names, r).await,
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";

    fn observed() -> Observed {
        Observed {
            arn: "arn".into(),
            trust_policy: trust_policy(),
            attached: vec![BASIC.into()],
            inline: vec![],
            owned: true,
        }
    }

    #[test]
    fn a_correct_role_needs_nothing() {
        assert_eq!(plan(BASIC, Some(&observed())), Plan::default());
    }

    #[test]
    fn a_missing_role_is_created_with_the_basic_policy() {
        let p = plan(BASIC, None);
        assert!(p.create && p.attach_basic && !p.update_trust);
    }

    #[test]
    fn drift_is_repaired_item_by_item() {
        let mut o = observed();
        o.attached = vec!["arn:aws:iam::aws:policy/AdministratorAccess".into()];
        o.inline = vec!["extra".into()];
        o.trust_policy = json!({"Statement":[{"Effect":"Allow","Principal":{"Service":["lambda.amazonaws.com","ec2.amazonaws.com"]},"Action":"sts:AssumeRole"}]});
        let p = plan(BASIC, Some(&o));
        assert!(p.update_trust && p.attach_basic);
        assert_eq!(
            p.detach,
            vec!["arn:aws:iam::aws:policy/AdministratorAccess"]
        );
        assert_eq!(p.delete_inline, vec!["extra"]);
    }

    #[test]
    fn trust_policy_shapes() {
        assert!(trusts_only_lambda(&trust_policy()));
        assert!(trusts_only_lambda(
            &json!({"Statement":[{"Effect":"Allow","Principal":{"Service":["lambda.amazonaws.com"]},"Action":["sts:AssumeRole"]}]})
        ));
        assert!(!trusts_only_lambda(
            &json!({"Statement":[{"Effect":"Allow","Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]})
        ));
        assert!(!trusts_only_lambda(&json!({"Statement":[]})));
        assert!(!trusts_only_lambda(&Value::Null));
    }
}

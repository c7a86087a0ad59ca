//! The function's IAM execution role: trusts only `lambda.amazonaws.com`, carries
//! `AWSLambdaBasicExecutionRole` and nothing else, except with the DynamoDB store one inline
//! policy ([`DEVICES_POLICY`]) that allows `dynamodb:GetItem` on the devices table and nothing
//! more. Any other inline policy is drift and is deleted.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aws_sdk_iam::Client;
use aws_sdk_iam::types::Tag;
use serde_json::{Value, json};
use tokio::time::Instant;

use futures::future::BoxFuture;

use crate::app::App;
use crate::aws::Clients;
use crate::config::CredentialStore;
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
    /// The document of [`DEVICES_POLICY`], read only with the DynamoDB store.
    pub devices_policy: Option<Value>,
    pub owned: bool,
}

/// The name of the role's inline policy that lets the function read the devices table.
pub const DEVICES_POLICY: &str = "read-devices-table";

/// One item per login, by key: GetItem on the table, nothing else (no Scan, no writes).
pub fn devices_policy(table_arn: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ReadDevices",
            "Effect": "Allow",
            "Action": "dynamodb:GetItem",
            "Resource": table_arn
        }]
    })
}

/// The inline policy the role should carry: only with the DynamoDB store.
pub fn desired_devices_policy(desired: &Desired) -> Option<Value> {
    (desired.names.store == CredentialStore::Dynamodb).then(|| devices_policy(&desired.table_arn()))
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
    let role = async {
        match iam.get_role().role_name(&names.role).send().await {
            Ok(out) => Ok(Some(out.role.context("GetRole returned no role")?)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).aws("iam:GetRole"),
        }
    };
    // Asked at once with GetRole rather than after ListRolePolicies, so reading the role stays
    // two round trips; NoSuchEntity means no role or no such policy.
    let devices_policy = async {
        if names.store != CredentialStore::Dynamodb {
            return Ok(None);
        }
        match iam
            .get_role_policy()
            .role_name(&names.role)
            .policy_name(DEVICES_POLICY)
            .send()
            .await
        {
            Ok(out) => Ok(Some(url_decoded_json(out.policy_document()))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_no_such_entity_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).aws("iam:GetRolePolicy"),
        }
    };
    let (role, devices_policy) = tokio::try_join!(role, devices_policy)?;
    let Some(role) = role else {
        return Ok(None);
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
    let inline = inline.policy_names().to_vec();
    Ok(Some(Observed {
        arn: role.arn().to_string(),
        trust_policy: url_decoded_json(role.assume_role_policy_document().unwrap_or_default()),
        attached: attached
            .attached_policies()
            .iter()
            .filter_map(|p| p.policy_arn().map(str::to_owned))
            .collect(),
        inline,
        devices_policy,
        owned: owned_by(
            role.tags().iter().map(|t| (t.key(), t.value())),
            &names.deployment,
        ),
    }))
}

/// IAM returns policy documents URL-encoded.
fn url_decoded_json(raw: &str) -> Value {
    let decoded = urlencoding::decode(raw)
        .map(|c| c.into_owned())
        .unwrap_or_else(|_| raw.to_string());
    serde_json::from_str(&decoded).unwrap_or(Value::Null)
}

/// The changes that bring an existing role to the desired state (empty: nothing to do).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: bool,
    pub update_trust: bool,
    pub attach_basic: bool,
    pub detach: Vec<String>,
    pub delete_inline: Vec<String>,
    /// The devices table read grant to write (missing or different).
    pub put_devices_policy: Option<Value>,
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
        if self.put_devices_policy.is_some() && !self.create {
            d.push(format!(
                "inline policy {DEVICES_POLICY}: dynamodb:GetItem on the devices table"
            ));
        }
        d
    }
}

/// Pure: what to change, with `basic` the ARN of AWSLambdaBasicExecutionRole in the caller's
/// partition and `devices` the inline policy the DynamoDB store needs (None: no inline policy
/// at all). An existing role that is not ours must be handled by the caller.
pub fn plan(basic: &str, devices: Option<&Value>, observed: Option<&Observed>) -> Plan {
    let Some(o) = observed else {
        return Plan {
            create: true,
            attach_basic: true,
            put_devices_policy: devices.cloned(),
            ..Plan::default()
        };
    };
    let keep = |name: &String| devices.is_some() && name == DEVICES_POLICY;
    Plan {
        create: false,
        update_trust: !trusts_only_lambda(&o.trust_policy),
        attach_basic: !o.attached.iter().any(|a| a == basic),
        detach: o.attached.iter().filter(|a| *a != basic).cloned().collect(),
        delete_inline: o.inline.iter().filter(|p| !keep(p)).cloned().collect(),
        put_devices_policy: devices
            .filter(|want| o.devices_policy.as_ref() != Some(*want))
            .cloned(),
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
    if let Some(document) = &plan.put_devices_policy {
        iam.put_role_policy()
            .role_name(&names.role)
            .policy_name(DEVICES_POLICY)
            .policy_document(document.to_string())
            .send()
            .await
            .aws("iam:PutRolePolicy")?;
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
        let want_devices = desired_devices_policy(desired);
        let extra: Vec<&str> = r
            .attached
            .iter()
            .filter(|a| **a != basic_arn)
            .chain(
                r.inline
                    .iter()
                    .filter(|p| want_devices.is_none() || *p != DEVICES_POLICY),
            )
            .map(String::as_str)
            .collect();
        let mut checks = vec![
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
        ];
        if let Some(want) = want_devices {
            checks.push(check(
                "role.table_access",
                r.devices_policy.as_ref() == Some(&want),
                format!(
                    "inline policy {DEVICES_POLICY}: dynamodb:GetItem on {}",
                    desired.names.table
                ),
                match &r.devices_policy {
                    None => format!(
                        "no inline policy {DEVICES_POLICY}: the function cannot read the devices table, so every login is refused"
                    ),
                    Some(_) => format!(
                        "inline policy {DEVICES_POLICY} differs from dynamodb:GetItem on {} alone",
                        desired.names.table
                    ),
                },
                SETUP,
            ));
        }
        checks
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
            desired_devices_policy(desired).as_ref(),
            observed.role.as_ref(),
        )
        .outcome(self.kind(), &desired.names.role)
    }

    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let basic = step.desired.basic_execution_policy_arn();
            let devices = desired_devices_policy(step.desired);
            let plan = plan(&basic, devices.as_ref(), step.observed.role.as_ref());
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
            devices_policy: None,
            owned: true,
        }
    }

    #[test]
    fn a_correct_role_needs_nothing() {
        assert_eq!(plan(BASIC, None, Some(&observed())), Plan::default());
    }

    #[test]
    fn a_missing_role_is_created_with_the_basic_policy() {
        let p = plan(BASIC, None, None);
        assert!(p.create && p.attach_basic && !p.update_trust);
    }

    #[test]
    fn drift_is_repaired_item_by_item() {
        let mut o = observed();
        o.attached = vec!["arn:aws:iam::aws:policy/AdministratorAccess".into()];
        o.inline = vec!["extra".into()];
        o.trust_policy = json!({"Statement":[{"Effect":"Allow","Principal":{"Service":["lambda.amazonaws.com","ec2.amazonaws.com"]},"Action":"sts:AssumeRole"}]});
        let p = plan(BASIC, None, Some(&o));
        assert!(p.update_trust && p.attach_basic);
        assert_eq!(
            p.detach,
            vec!["arn:aws:iam::aws:policy/AdministratorAccess"]
        );
        assert_eq!(p.delete_inline, vec!["extra"]);
    }

    #[test]
    fn the_devices_grant_is_kept_only_with_the_dynamodb_store() {
        let table = "arn:aws:dynamodb:eu-west-1:111122223333:table/d-devices";
        let grant = devices_policy(table);
        // Created with the role.
        assert_eq!(
            plan(BASIC, Some(&grant), None).put_devices_policy,
            Some(grant.clone())
        );
        // In place and right: nothing to do; another inline policy is still drift.
        let mut o = observed();
        o.inline = vec![DEVICES_POLICY.into(), "extra".into()];
        o.devices_policy = Some(grant.clone());
        let p = plan(BASIC, Some(&grant), Some(&o));
        assert_eq!(p.put_devices_policy, None);
        assert_eq!(p.delete_inline, vec!["extra"]);
        // Widened by hand: written back.
        o.devices_policy = Some(devices_policy("*"));
        assert_eq!(
            plan(BASIC, Some(&grant), Some(&o)).put_devices_policy,
            Some(grant.clone())
        );
        // Back to the package store: the grant goes too.
        let p = plan(BASIC, None, Some(&o));
        assert_eq!(p.delete_inline, vec![DEVICES_POLICY, "extra"]);
        assert_eq!(p.put_devices_policy, None);
        assert_eq!(grant["Statement"][0]["Action"], "dynamodb:GetItem");
        assert_eq!(grant["Statement"][0]["Resource"], table);
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

//! The IoT custom authorizer: token signing disabled (immutable in AWS), ACTIVE, pointing at our
//! function, tagged as ours.

use anyhow::{Context as _, Result, bail};
use aws_sdk_iot::Client;
use aws_sdk_iot::types::{AuthorizerStatus, Tag};
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
    pub function_arn: String,
    pub active: bool,
    pub signing_disabled: bool,
    pub owned: bool,
}

pub async fn read(iot: &Client, names: &Names) -> Result<Option<Observed>> {
    let out = match iot
        .describe_authorizer()
        .authorizer_name(&names.authorizer)
        .send()
        .await
    {
        Ok(out) => out,
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).aws("iot:DescribeAuthorizer"),
    };
    let d = out
        .authorizer_description()
        .context("DescribeAuthorizer returned no description")?;
    let arn = d.authorizer_arn().unwrap_or_default().to_string();
    let tags = iot
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .aws("iot:ListTagsForResource")?;
    Ok(Some(Observed {
        function_arn: d.authorizer_function_arn().unwrap_or_default().to_string(),
        active: d.status() == Some(&AuthorizerStatus::Active),
        // The documented default is signing enabled.
        signing_disabled: d.signing_disabled().unwrap_or(false),
        owned: owned_by(
            tags.tags()
                .iter()
                .map(|t| (t.key(), t.value().unwrap_or_default())),
            &names.deployment,
        ),
        arn,
    }))
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: bool,
    pub set_function: bool,
    pub activate: bool,
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
        if self.set_function {
            d.push("function ARN".to_string());
        }
        if self.activate {
            d.push("status ACTIVE".to_string());
        }
        d
    }
}

/// Pure. Signing and ownership problems cannot be planned away; the caller refuses them first.
pub fn plan(desired: &Desired, observed: Option<&Observed>) -> Plan {
    match observed {
        None => Plan {
            create: true,
            ..Plan::default()
        },
        Some(o) => Plan {
            create: false,
            set_function: o.function_arn != desired.function_arn(),
            activate: !o.active,
        },
    }
}

pub async fn apply(iot: &Client, desired: &Desired, plan: &Plan) -> Result<()> {
    let name = &desired.names.authorizer;
    if plan.create {
        iot.create_authorizer()
            .authorizer_name(name)
            .authorizer_function_arn(desired.function_arn())
            .signing_disabled(true)
            .status(AuthorizerStatus::Active)
            .tags(
                Tag::builder()
                    .key(OWNER_TAG)
                    .value(&desired.names.deployment)
                    .build()?,
            )
            .send()
            .await
            .aws("iot:CreateAuthorizer")
            .with_context(|| format!("creating authorizer {name}"))?;
        return Ok(());
    }
    if plan.set_function || plan.activate {
        // Only the fields that change: signingDisabled is not updatable at all.
        let mut update = iot.update_authorizer().authorizer_name(name);
        if plan.set_function {
            update = update.authorizer_function_arn(desired.function_arn());
        }
        if plan.activate {
            update = update.status(AuthorizerStatus::Active);
        }
        update.send().await.aws("iot:UpdateAuthorizer")?;
    }
    Ok(())
}

/// AWS refuses to delete an ACTIVE authorizer ("You can't delete a custom authorizer while
/// it's active", aws-facts.md §1), so teardown deactivates it first.
pub async fn deactivate(iot: &Client, name: &str) -> Result<()> {
    iot.update_authorizer()
        .authorizer_name(name)
        .status(AuthorizerStatus::Inactive)
        .send()
        .await
        .aws("iot:UpdateAuthorizer")?;
    Ok(())
}

/// Deletes the authorizer; `active`: it was read ACTIVE, so a refusal (DeleteConflict) may mean
/// the deactivation done beforehand failed, and it is deactivated once more and deleted again.
pub async fn delete(iot: &Client, name: &str, active: bool) -> Result<()> {
    let send = || iot.delete_authorizer().authorizer_name(name).send();
    let result = match send().await {
        Err(e)
            if active
                && e.as_service_error()
                    .is_some_and(|e| e.is_delete_conflict_exception()) =>
        {
            deactivate(iot, name).await?;
            send().await
        }
        other => other,
    };
    match result {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).aws("iot:DeleteAuthorizer"),
    }
}

/// The authorizer as one of the deployment's resources.
pub struct Authorizer;
pub static RESOURCE: Authorizer = Authorizer;

impl Resource for Authorizer {
    fn kind(&self) -> &'static str {
        "authorizer"
    }

    fn label(&self) -> &'static str {
        "IoT authorizer"
    }

    /// Nothing: it only names the function's ARN, which is known before the function exists,
    /// and CreateAuthorizer does not check it ("The model does not validate it", aws-facts.md
    /// §1), so it is created while IAM propagates the role and Lambda creates the function.
    fn after(&self) -> &'static [&'static str] {
        &[]
    }

    /// The default cleared first: the stand-in refuses to delete the default authorizer (what
    /// AWS does is not documented, aws-facts.md §1), so no caller relies on it.
    fn removed_after(&self) -> &'static [&'static str] {
        &["default-authorizer"]
    }

    fn read<'a>(
        &'a self,
        clients: &'a Clients,
        names: &'a Names,
    ) -> BoxFuture<'a, Result<Reading>> {
        Box::pin(async move {
            let found = read(&clients.iot, names).await?;
            Ok(Box::new(move |o: &mut All| o.authorizer = found) as Reading)
        })
    }

    fn checks(&self, desired: &Desired, observed: &All) -> Vec<Check> {
        let Some(a) = &observed.authorizer else {
            return vec![fail(
                "authorizer.exists",
                format!("IoT authorizer {} not found", desired.names.authorizer),
                SETUP,
            )];
        };
        vec![
            ok("authorizer.exists", a.arn.clone()),
            check(
                "authorizer.owned",
                a.owned,
                "tagged as ours",
                "not tagged as created by this deployment",
                "choose another --name or remove the authorizer by hand",
            ),
            check(
                "authorizer.status",
                a.active,
                "ACTIVE",
                "INACTIVE: IoT does not call it",
                SETUP,
            ),
            check(
                "authorizer.signing",
                a.signing_disabled,
                "token signing disabled",
                "token signing enabled: username/password logins never reach it",
                "`teardown` then `setup` (signing cannot be changed after creation)",
            ),
            check(
                "authorizer.function",
                a.function_arn == desired.function_arn(),
                "points at our function",
                format!("points at {}", a.function_arn),
                SETUP,
            ),
        ]
    }

    fn refuse(&self, desired: &Desired, observed: &All, _: &SetupOptions) -> Result<()> {
        let n = &desired.names;
        let Some(a) = &observed.authorizer else {
            return Ok(());
        };
        if !a.owned {
            bail!(Failure::new(
                not_ours("IoT authorizer", &n.authorizer, &n.deployment),
                NOT_OURS_HINT
            ));
        }
        if !a.signing_disabled {
            bail!(Failure::new(
                format!(
                    "IoT authorizer `{}` has token signing enabled, and AWS cannot change that after creation",
                    n.authorizer
                ),
                "run `iot-custom-auth teardown` and `setup` again to recreate it, or use another --name"
            ));
        }
        Ok(())
    }

    fn plan(&self, desired: &Desired, observed: &All) -> Outcome {
        plan(desired, observed.authorizer.as_ref()).outcome(self.kind(), &desired.names.authorizer)
    }

    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let plan = plan(step.desired, step.observed.authorizer.as_ref());
            apply(&step.clients.iot, step.desired, &plan).await
        })
    }

    fn removal(&self, names: &Names, observed: &All) -> Removal {
        match &observed.authorizer {
            None => Removal::Absent,
            Some(a) if a.owned => Removal::Delete(Outcome::new(
                self.kind(),
                &names.authorizer,
                Action::Deleted,
            )),
            Some(_) => {
                Removal::Skip(
                    Outcome::new(self.kind(), &names.authorizer, Action::Skipped).with(vec![
                        not_ours("IoT authorizer", &names.authorizer, &names.deployment),
                    ]),
                )
            }
        }
    }

    fn delete<'a>(
        &'a self,
        _: &'a App,
        clients: &'a Clients,
        names: &'a Names,
        observed: &'a All,
    ) -> BoxFuture<'a, Result<()>> {
        let active = observed.authorizer.as_ref().is_some_and(|a| a.active);
        Box::pin(delete(&clients.iot, &names.authorizer, active))
    }

    /// Deactivated while the default is cleared, in the same round trip: the stand-in lets the
    /// default be deactivated (AWS documents no rule either way, aws-facts.md §1), and when it
    /// refuses, `delete` deactivates it again once the default is cleared.
    fn retire<'a>(
        &'a self,
        clients: &'a Clients,
        names: &'a Names,
        observed: &'a All,
    ) -> BoxFuture<'a, Result<()>> {
        let active = observed.authorizer.as_ref().is_some_and(|a| a.active);
        Box::pin(async move {
            if active {
                deactivate(&clients.iot, &names.authorizer).await?;
            }
            Ok(())
        })
    }
}

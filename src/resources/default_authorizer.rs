//! The account's default authorizer: the one IoT calls when a device's username names none.
//! There is one per account and region, so another tool's default is never replaced silently.

use anyhow::{Result, bail};
use aws_sdk_iot::Client;
use futures::future::BoxFuture;

use crate::aws::Clients;
use crate::error::{AwsResultExt, Failure};
use crate::names::Names;
use crate::resources::check::{SETUP, check};
use crate::resources::{
    Action, Check, Desired, Observed as All, Outcome, Reading, Removal, Resource, SetupOptions,
    Step,
};

/// The name of the account's default authorizer, if one is set.
pub async fn read(iot: &Client) -> Result<Option<String>> {
    match iot.describe_default_authorizer().send().await {
        Ok(out) => Ok(out
            .authorizer_description()
            .and_then(|d| d.authorizer_name())
            .map(str::to_owned)),
        // AWS answers 404 when no default is set (aws-facts.md §1).
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).aws("iot:DescribeDefaultAuthorizer"),
    }
}

/// Makes `name` the default. When another is set, it is cleared first (AWS may refuse to
/// overwrite a default, aws-facts.md §1).
pub async fn set(iot: &Client, name: &str, current: Option<&str>) -> Result<()> {
    if current.is_some_and(|c| c != name) {
        clear(iot).await?;
    }
    iot.set_default_authorizer()
        .authorizer_name(name)
        .send()
        .await
        .aws("iot:SetDefaultAuthorizer")?;
    Ok(())
}

pub async fn clear(iot: &Client) -> Result<()> {
    match iot.clear_default_authorizer().send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).aws("iot:ClearDefaultAuthorizer"),
    }
}

/// The account's default authorizer as one of the deployment's resources.
pub struct DefaultAuthorizer;
pub static RESOURCE: DefaultAuthorizer = DefaultAuthorizer;

impl Resource for DefaultAuthorizer {
    fn kind(&self) -> &'static str {
        "default-authorizer"
    }

    fn label(&self) -> &'static str {
        "default authorizer"
    }

    fn after(&self) -> &'static [&'static str] {
        &["authorizer"]
    }

    fn read<'a>(&'a self, clients: &'a Clients, _: &'a Names) -> BoxFuture<'a, Result<Reading>> {
        Box::pin(async move {
            let found = read(&clients.iot).await?;
            Ok(Box::new(move |o: &mut All| o.default_authorizer = found) as Reading)
        })
    }

    fn checks(&self, desired: &Desired, observed: &All) -> Vec<Check> {
        let n = &desired.names;
        let current = observed.default_authorizer.as_deref();
        let is_ours = current == Some(n.authorizer.as_str());
        vec![if desired.default_authorizer {
            check(
                "default_authorizer",
                is_ours,
                format!("{} is the account's default", n.authorizer),
                match current {
                    Some(other) => format!(
                        "the default is `{other}`: devices that send a plain username reach it, not ours"
                    ),
                    None => "no default authorizer: devices must name ours in their username"
                        .to_string(),
                },
                "run `iot-custom-auth setup` (with --replace-default if another authorizer is the default)",
            )
        } else {
            check(
                "default_authorizer",
                !is_ours,
                "not the default, as configured",
                "ours is the default, but the config says it should not be",
                SETUP,
            )
        }]
    }

    fn refuse(&self, desired: &Desired, observed: &All, options: &SetupOptions) -> Result<()> {
        if let Some(current) = &observed.default_authorizer
            && desired.default_authorizer
            && current != &desired.names.authorizer
            && !options.replace_default
        {
            bail!(Failure::new(
                format!(
                    "the account's default authorizer is `{current}`; replacing it would cut off the devices that rely on it"
                ),
                "pass --replace-default to replace it anyway, or --no-default and have devices send \
                     `USERNAME?x-amz-customauthorizer-name=NAME`"
            ));
        }
        Ok(())
    }

    fn plan(&self, desired: &Desired, observed: &All) -> Outcome {
        let ours = desired.names.authorizer.as_str();
        let current = observed.default_authorizer.as_deref();
        let is_ours = current == Some(ours);
        let (action, details) = match (desired.default_authorizer, is_ours) {
            (true, true) | (false, false) => (Action::Unchanged, Vec::new()),
            (true, false) => (
                if current.is_some() {
                    Action::Updated
                } else {
                    Action::Created
                },
                current
                    .map(|c| vec![format!("replaced `{c}`")])
                    .unwrap_or_default(),
            ),
            (false, true) => (
                Action::Cleared,
                vec!["--no-default / default_authorizer = false".to_string()],
            ),
        };
        let name = if desired.default_authorizer {
            ours
        } else {
            current.unwrap_or("none")
        };
        Outcome::new(self.kind(), name, action).with(details)
    }

    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let iot = &step.clients.iot;
            let current = step.observed.default_authorizer.as_deref();
            match self.plan(step.desired, step.observed).action {
                Action::Created | Action::Updated => {
                    set(iot, &step.desired.names.authorizer, current).await
                }
                Action::Cleared => clear(iot).await,
                _ => Ok(()),
            }
        })
    }

    /// Only when ours is the default, and the authorizer is ours: clearing another's default
    /// would cut off its devices.
    fn removal(&self, names: &Names, observed: &All) -> Removal {
        let authorizer_ours = observed.authorizer.as_ref().is_some_and(|a| a.owned);
        if observed.default_authorizer.as_deref() == Some(names.authorizer.as_str())
            && authorizer_ours
        {
            Removal::Delete(Outcome::new(
                self.kind(),
                &names.authorizer,
                Action::Cleared,
            ))
        } else {
            Removal::Absent
        }
    }

    fn delete<'a>(
        &'a self,
        clients: &'a Clients,
        _: &'a Names,
        _: &'a All,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(clear(&clients.iot))
    }
}

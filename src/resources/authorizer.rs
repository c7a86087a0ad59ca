//! The IoT custom authorizer: token signing disabled (immutable in AWS), ACTIVE, pointing at our
//! function, tagged as ours.

use anyhow::{Context as _, Result};
use aws_sdk_iot::Client;
use aws_sdk_iot::types::{AuthorizerStatus, Tag};

use crate::error::AwsResultExt;
use crate::names::{Names, OWNER_TAG, owned_by};
use crate::resources::Desired;

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

/// AWS refuses to delete an ACTIVE authorizer, so deactivate it first.
pub async fn delete(iot: &Client, name: &str, active: bool) -> Result<()> {
    if active {
        iot.update_authorizer()
            .authorizer_name(name)
            .status(AuthorizerStatus::Inactive)
            .send()
            .await
            .aws("iot:UpdateAuthorizer")?;
    }
    match iot.delete_authorizer().authorizer_name(name).send().await {
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

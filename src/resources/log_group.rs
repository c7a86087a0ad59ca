//! The function's CloudWatch Logs log group `/aws/lambda/<function>`. Lambda creates it on the
//! first invocation with no retention (every login line kept, and paid for, forever) and leaves it
//! behind when the function is deleted (aws-facts.md §13), so `setup` creates it first, with a
//! retention and our owner tag, and `teardown` deletes it when it is ours.
//!
//! The function is told to log there in JSON ([`logging_config`]): CloudWatch filter patterns on
//! JSON fields, which `logs` uses, never match Lambda's default Text lines.

use anyhow::Result;
use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_lambda::types::{LogFormat, LoggingConfig};
use futures::future::BoxFuture;

use crate::app::App;
use crate::aws::Clients;
use crate::error::AwsResultExt;
use crate::names::{Names, OWNER_TAG, owned_by};
use crate::resources::check::{SETUP, check, fail, ok};
use crate::resources::{
    Action, Check, Desired, Observed as All, Outcome, Planned as _, Reading, Removal, Resource,
    Step, not_ours,
};

/// The log group Lambda writes the function's output to.
pub fn name(names: &Names) -> String {
    format!("/aws/lambda/{}", names.function)
}

/// Its ARN, as IAM policies and ListTagsForResource name it (without DescribeLogGroups' `:*`).
pub fn arn(names: &Names, partition: &str, region: &str, account: &str) -> String {
    format!(
        "arn:{partition}:logs:{region}:{account}:log-group:{}",
        name(names)
    )
}

/// What `setup` deploys the function with: JSON lines into our log group.
pub fn logging_config(names: &Names) -> LoggingConfig {
    LoggingConfig::builder()
        .log_format(LogFormat::Json)
        .log_group(name(names))
        .build()
}

/// The function's logging as read back: its format and group. Lambda fills in defaults (Text,
/// `/aws/lambda/<function>`) when none was set.
#[derive(Clone, Debug, PartialEq)]
pub struct Logging {
    pub format: String,
    pub group: String,
}

impl Logging {
    pub fn from_config(config: Option<&LoggingConfig>, names: &Names) -> Self {
        Self {
            format: config
                .and_then(|c| c.log_format())
                .map_or("Text", |f| f.as_str())
                .to_string(),
            group: config
                .and_then(|c| c.log_group())
                .map_or_else(|| name(names), str::to_string),
        }
    }

    /// Pure: whether the function logs the way `logs` and the log group's retention rely on.
    pub fn is_desired(&self, names: &Names) -> bool {
        self.format == LogFormat::Json.as_str() && self.group == name(names)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub arn: String,
    /// None: kept forever.
    pub retention_days: Option<i32>,
    pub owned: bool,
}

pub async fn read(logs: &Client, names: &Names) -> Result<Option<Observed>> {
    let wanted = name(names);
    // The prefix also matches longer names (`/aws/lambda/x-authorizer-old`): page until ours.
    let mut token = None;
    let group = loop {
        let out = logs
            .describe_log_groups()
            .log_group_name_prefix(&wanted)
            .set_next_token(token)
            .send()
            .await
            .aws("logs:DescribeLogGroups")?;
        if let Some(g) = out
            .log_groups()
            .iter()
            .find(|g| g.log_group_name() == Some(wanted.as_str()))
        {
            break g.clone();
        }
        match out.next_token() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(None),
        }
    };
    let arn = group
        .log_group_arn()
        .map(str::to_string)
        .or_else(|| group.arn().map(|a| a.trim_end_matches(":*").to_string()))
        .unwrap_or_default();
    let tags = match logs
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
    {
        Ok(out) => out.tags().cloned().unwrap_or_default(),
        // Deleted between the two reads: gone.
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).aws("logs:ListTagsForResource"),
    };
    Ok(Some(Observed {
        arn,
        retention_days: group.retention_in_days(),
        owned: owned_by(
            tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &names.deployment,
        ),
    }))
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub create: bool,
    /// The retention to set, when it differs (or the group is new).
    pub retention: Option<i32>,
    /// The group exists but is not ours: left alone.
    pub not_ours: bool,
}

impl crate::resources::Planned for Plan {
    fn creates(&self) -> bool {
        self.create
    }

    fn changes(&self) -> Vec<String> {
        self.retention
            .map(|d| vec![format!("retention {d} days")])
            .unwrap_or_default()
    }
}

/// Pure: what `setup` does to the log group.
pub fn plan(retention_days: i32, observed: Option<&Observed>) -> Plan {
    match observed {
        None => Plan {
            create: true,
            retention: Some(retention_days),
            not_ours: false,
        },
        Some(o) if !o.owned => Plan {
            create: false,
            retention: None,
            not_ours: true,
        },
        Some(o) => Plan {
            create: false,
            retention: (o.retention_days != Some(retention_days)).then_some(retention_days),
            not_ours: false,
        },
    }
}

pub async fn apply(logs: &Client, names: &Names, plan: &Plan) -> Result<()> {
    let group = name(names);
    if plan.create {
        match logs
            .create_log_group()
            .log_group_name(&group)
            .tags(OWNER_TAG, &names.deployment)
            .send()
            .await
        {
            Ok(_) => {}
            // Lambda created it in between (an invocation of an older function of this name):
            // it has no tag, so it is not ours and keeps whatever retention it has.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_already_exists_exception()) =>
            {
                anyhow::bail!(crate::error::Failure::new(
                    format!("log group {group} appeared while setup was creating it"),
                    "run `iot-custom-auth setup` again"
                ));
            }
            Err(e) => return Err(e).aws("logs:CreateLogGroup"),
        }
    }
    if let Some(days) = plan.retention {
        logs.put_retention_policy()
            .log_group_name(&group)
            .retention_in_days(days)
            .send()
            .await
            .aws("logs:PutRetentionPolicy")?;
    }
    Ok(())
}

pub async fn delete(logs: &Client, names: &Names) -> Result<()> {
    match logs
        .delete_log_group()
        .log_group_name(name(names))
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).aws("logs:DeleteLogGroup"),
    }
}

/// The log group as one of the deployment's resources (see `resources::RESOURCES`).
pub struct LogGroup;

pub static RESOURCE: LogGroup = LogGroup;

impl Resource for LogGroup {
    fn kind(&self) -> &'static str {
        "log-group"
    }

    fn label(&self) -> &'static str {
        "log group"
    }

    fn after(&self) -> &'static [&'static str] {
        &[]
    }

    /// After the function: an invocation in between would have Lambda create it again, with no
    /// retention and no owner tag.
    fn removed_after(&self) -> &'static [&'static str] {
        &["function"]
    }

    fn read<'a>(
        &'a self,
        clients: &'a Clients,
        names: &'a Names,
    ) -> BoxFuture<'a, Result<Reading>> {
        Box::pin(async move {
            let found = read(&clients.logs, names).await?;
            Ok(Box::new(move |o: &mut All| o.log_group = found) as Reading)
        })
    }

    fn checks(&self, desired: &Desired, observed: &All) -> Vec<Check> {
        let n = &desired.names;
        let group = name(n);
        let Some(g) = &observed.log_group else {
            return vec![fail(
                "log_group.exists",
                format!("log group {group} not found (Lambda would create it without a retention)"),
                SETUP,
            )];
        };
        let shown = |d: Option<i32>| d.map_or("never expire".to_string(), |d| format!("{d} days"));
        vec![
            ok("log_group.exists", group),
            check(
                "log_group.owned",
                g.owned,
                "tagged as ours",
                "not tagged as created by this deployment: setup leaves its retention alone",
                &format!(
                    "tag it to let setup manage it: `aws logs tag-resource --resource-arn {} --tags {}={}`, or delete it by hand",
                    g.arn, OWNER_TAG, n.deployment
                ),
            ),
            check(
                "log_group.retention",
                g.retention_days == Some(desired.log_retention_days),
                shown(g.retention_days),
                format!(
                    "{} (config says {} days)",
                    shown(g.retention_days),
                    desired.log_retention_days
                ),
                SETUP,
            ),
        ]
    }

    fn plan(&self, desired: &Desired, observed: &All) -> Outcome {
        let group = name(&desired.names);
        let plan = plan(desired.log_retention_days, observed.log_group.as_ref());
        if plan.not_ours {
            // [silent] A log group Lambda created before this tool managed it (an older
            // deployment) has no tag. Unlike the other resources it blocks nothing and holds
            // logs, so setup neither refuses nor adopts it: it reports it and leaves it alone.
            return Outcome::new(self.kind(), &group, Action::Skipped).with(vec![format!(
                "{}; its retention is left as it is",
                not_ours("log group", &group, &desired.names.deployment)
            )]);
        }
        plan.outcome(self.kind(), &group)
    }

    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let plan = plan(
                step.desired.log_retention_days,
                step.observed.log_group.as_ref(),
            );
            apply(&step.clients.logs, &step.desired.names, &plan).await
        })
    }

    fn removal(&self, names: &Names, observed: &All) -> Removal {
        let group = name(names);
        match &observed.log_group {
            None => Removal::Absent,
            Some(g) if g.owned => {
                Removal::Delete(Outcome::new(self.kind(), &group, Action::Deleted))
            }
            Some(_) => Removal::Skip(
                Outcome::new(self.kind(), &group, Action::Skipped).with(vec![not_ours(
                    "log group",
                    &group,
                    &names.deployment,
                )]),
            ),
        }
    }

    fn delete<'a>(
        &'a self,
        _: &'a App,
        clients: &'a Clients,
        names: &'a Names,
        _observed: &'a All,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { delete(&clients.logs, names).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Planned;

    fn ours(days: Option<i32>) -> Observed {
        Observed {
            arn: "arn".into(),
            retention_days: days,
            owned: true,
        }
    }

    #[test]
    fn a_missing_group_is_created_with_its_retention() {
        let p = plan(30, None);
        assert!(p.create);
        assert_eq!(p.retention, Some(30));
    }

    #[test]
    fn only_a_different_retention_is_changed() {
        assert_eq!(
            plan(30, Some(&ours(Some(30)))).changes(),
            Vec::<String>::new()
        );
        for observed in [None, Some(7)] {
            let p = plan(30, Some(&ours(observed)));
            assert_eq!(
                p.changes(),
                vec!["retention 30 days".to_string()],
                "{observed:?}"
            );
        }
    }

    #[test]
    fn a_group_that_is_not_ours_is_left_alone() {
        let mut o = ours(None);
        o.owned = false;
        let p = plan(30, Some(&o));
        assert!(p.not_ours && !p.create && p.retention.is_none());
    }

    #[test]
    fn logging_is_desired_only_as_json_into_our_group() {
        let n = Names::new("d").unwrap();
        let defaults = Logging::from_config(None, &n);
        assert_eq!(defaults.group, "/aws/lambda/d-authorizer");
        assert!(!defaults.is_desired(&n), "Lambda's default is Text");
        assert!(Logging::from_config(Some(&logging_config(&n)), &n).is_desired(&n));
        let elsewhere = LoggingConfig::builder()
            .log_format(LogFormat::Json)
            .log_group("/shared")
            .build();
        assert!(!Logging::from_config(Some(&elsewhere), &n).is_desired(&n));
    }
}

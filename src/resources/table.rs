//! The devices table `<deployment>-devices`, only with `credential_store = "dynamodb"`: partition
//! key `username` (S), on-demand billing, encrypted at rest (DynamoDB always is: an AWS owned key
//! unless another is chosen), point-in-time recovery on, our owner tag. With the package store
//! nothing here calls AWS: the table is neither read nor created, so a package deployment needs
//! no DynamoDB permission.
//!
//! Emptiness is read exactly and cheaply with `Scan` `Limit 1` `Select COUNT` (one item at most,
//! and the caller's policy can allow only `Select = COUNT`, which reveals no verifier); the
//! number of devices `status` shows is DescribeTable's `ItemCount`, which "DynamoDB updates
//! approximately every six hours" (DynamoDB API reference, TableDescription), so it says
//! "about". Counting exactly would scan the whole table: 1,000,000 devices are hundreds of
//! sequential 1 MB pages on every `status`.

use std::time::Duration;

use anyhow::{Result, bail};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    PointInTimeRecoveryStatus, ScalarAttributeType, Select, TableStatus, Tag,
};
use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::app::App;
use crate::aws::Clients;
use crate::config::CredentialStore;
use crate::error::{AwsResultExt, Failure};
use crate::names::{Names, OWNER_TAG, owned_by};
use crate::resources::check::{SETUP, check, fail, ok};
use crate::resources::{
    Action, Check, Desired, NOT_OURS_HINT, Observed as All, Outcome, Planned as _, Reading,
    Removal, Resource, SetupOptions, Step, TeardownOptions, not_ours,
};

/// The table's partition key: one item per device, found by the username it logs in with.
pub const KEY: &str = "username";

/// How long `setup` waits for a new table to become ACTIVE. AWS gives no bound; an empty
/// on-demand table takes seconds.
const ACTIVE_BUDGET: Duration = Duration::from_secs(120);
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What `teardown` prints when it keeps a table that holds devices.
pub const EXPORT_HINT: &str = "export them first with `iot-custom-auth device export > devices.jsonl`, then run `iot-custom-auth teardown --delete-devices`";

#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub arn: String,
    /// CREATING, ACTIVE, UPDATING, DELETING, ...
    pub status: String,
    /// PAY_PER_REQUEST or PROVISIONED.
    pub billing_mode: String,
    /// The key schema is `username` (S) alone.
    pub key_ok: bool,
    /// `SSEDescription.SSEType` (KMS); None: DynamoDB's default, an AWS owned key.
    pub sse_type: Option<String>,
    pub pitr: bool,
    /// DescribeTable's ItemCount: refreshed by DynamoDB about every six hours.
    pub approximate_items: i64,
    /// Exact: at least one item exists (Scan Limit 1).
    pub holds_devices: bool,
    pub owned: bool,
}

pub async fn read(dynamodb: &Client, names: &Names) -> Result<Option<Observed>> {
    if names.store != CredentialStore::Dynamodb {
        return Ok(None);
    }
    let table = match dynamodb
        .describe_table()
        .table_name(&names.table)
        .send()
        .await
    {
        Ok(out) => match out.table {
            Some(t) => t,
            None => return Ok(None),
        },
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).aws("dynamodb:DescribeTable"),
    };
    let arn = table.table_arn().unwrap_or_default().to_string();
    let status = table
        .table_status()
        .map_or("UNKNOWN", TableStatus::as_str)
        .to_string();
    let active = table.table_status() == Some(&TableStatus::Active);
    let (tags, pitr, holds_devices) = tokio::try_join!(
        async {
            dynamodb
                .list_tags_of_resource()
                .resource_arn(&arn)
                .send()
                .await
                .aws("dynamodb:ListTagsOfResource")
        },
        async {
            dynamodb
                .describe_continuous_backups()
                .table_name(&names.table)
                .send()
                .await
                .aws("dynamodb:DescribeContinuousBackups")
        },
        async {
            // A table that is not ACTIVE cannot be read (ResourceNotFoundException); while it is
            // being created it is empty.
            if !active {
                return Ok(false);
            }
            let out = dynamodb
                .scan()
                .table_name(&names.table)
                .select(Select::Count)
                .limit(1)
                .send()
                .await
                .aws("dynamodb:Scan")?;
            Ok::<_, anyhow::Error>(out.count() > 0 || out.last_evaluated_key().is_some())
        },
    )?;
    let key_ok = matches!(table.key_schema(), [k] if k.attribute_name() == KEY && k.key_type() == &KeyType::Hash)
        && table
            .attribute_definitions()
            .iter()
            .any(|a| a.attribute_name() == KEY && a.attribute_type() == &ScalarAttributeType::S);
    Ok(Some(Observed {
        arn,
        status,
        // A table created on demand reports BillingModeSummary; one never switched may not.
        billing_mode: table
            .billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .map_or("PROVISIONED", BillingMode::as_str)
            .to_string(),
        key_ok,
        sse_type: table
            .sse_description()
            .and_then(|s| s.sse_type())
            .map(|t| t.as_str().to_string()),
        pitr: pitr
            .continuous_backups_description()
            .and_then(|c| c.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status())
            == Some(&PointInTimeRecoveryStatus::Enabled),
        approximate_items: table.item_count().unwrap_or(0),
        holds_devices,
        owned: owned_by(
            tags.tags().iter().map(|t| (t.key(), t.value())),
            &names.deployment,
        ),
    }))
}

/// What `setup` changes about the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    pub create: bool,
    pub on_demand: bool,
    pub pitr: bool,
}

impl crate::resources::Planned for Plan {
    fn creates(&self) -> bool {
        self.create
    }

    fn changes(&self) -> Vec<String> {
        let mut d = Vec::new();
        if self.on_demand {
            d.push("billing on demand (PAY_PER_REQUEST)".to_string());
        }
        if self.pitr {
            d.push("point-in-time recovery on".to_string());
        }
        d
    }
}

/// Pure: what to do, for an absent or owned table (the caller refuses one that is not ours).
pub fn plan(observed: Option<&Observed>) -> Plan {
    match observed {
        None => Plan {
            create: true,
            on_demand: false,
            // PITR can only be turned on once the table is ACTIVE: a separate call after creation.
            pitr: true,
        },
        Some(o) => Plan {
            create: false,
            on_demand: o.billing_mode != BillingMode::PayPerRequest.as_str(),
            pitr: !o.pitr,
        },
    }
}

pub async fn apply(app: &App, dynamodb: &Client, names: &Names, plan: &Plan) -> Result<()> {
    let table = &names.table;
    if plan.create {
        dynamodb
            .create_table()
            .table_name(table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(KEY)
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .billing_mode(BillingMode::PayPerRequest)
            .tags(
                Tag::builder()
                    .key(OWNER_TAG)
                    .value(&names.deployment)
                    .build()?,
            )
            .send()
            .await
            .aws("dynamodb:CreateTable")?;
    }
    if plan.create || plan.on_demand || plan.pitr {
        // A re-run right after an interrupted one may find the table still CREATING.
        wait_active(app, dynamodb, table).await?;
    }
    if plan.on_demand {
        dynamodb
            .update_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .aws("dynamodb:UpdateTable")?;
        wait_active(app, dynamodb, table).await?;
    }
    if plan.pitr {
        dynamodb
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(
                PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(true)
                    .build()?,
            )
            .send()
            .await
            .aws("dynamodb:UpdateContinuousBackups")?;
    }
    Ok(())
}

/// Polls DescribeTable until the table is ACTIVE. (The SDK's `table_exists` waiter polls every
/// 20 s at least: most of a minute for a table that takes seconds.)
async fn wait_active(app: &App, dynamodb: &Client, table: &str) -> Result<()> {
    let _wait = app.wait(format!(
        "  waiting for table {table} to become ACTIVE (up to {}s)",
        ACTIVE_BUDGET.as_secs()
    ));
    let started = Instant::now();
    loop {
        let out = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .aws("dynamodb:DescribeTable")?;
        let status = out.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            return Ok(());
        }
        if started.elapsed() + POLL_INTERVAL > ACTIVE_BUDGET {
            bail!(Failure::new(
                format!(
                    "table {table} is still {} after {}s",
                    status.map_or("UNKNOWN", TableStatus::as_str),
                    ACTIVE_BUDGET.as_secs()
                ),
                "check the table in the DynamoDB console, then run `setup` again"
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

pub async fn delete(dynamodb: &Client, names: &Names) -> Result<()> {
    match dynamodb
        .delete_table()
        .table_name(&names.table)
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
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            Err(anyhow::Error::new(Failure::new(
                format!(
                    "table {} is being created or changed and cannot be deleted yet",
                    names.table
                ),
                "wait a minute and run `iot-custom-auth teardown` again",
            )))
        }
        Err(e) => Err(e).aws("dynamodb:DeleteTable"),
    }
}

/// The devices table as one of the deployment's resources.
pub struct Table;
pub static RESOURCE: Table = Table;

impl Resource for Table {
    fn kind(&self) -> &'static str {
        "table"
    }

    fn label(&self) -> &'static str {
        "DynamoDB table"
    }

    fn after(&self) -> &'static [&'static str] {
        &[]
    }

    /// Only once no function can read it any more.
    fn removed_after(&self) -> &'static [&'static str] {
        &["function"]
    }

    fn deployed(&self, desired: &Desired) -> bool {
        desired.names.store == CredentialStore::Dynamodb
    }

    fn read<'a>(
        &'a self,
        clients: &'a Clients,
        names: &'a Names,
    ) -> BoxFuture<'a, Result<Reading>> {
        Box::pin(async move {
            let found = read(&clients.dynamodb, names).await?;
            Ok(Box::new(move |o: &mut All| o.table = found) as Reading)
        })
    }

    fn checks(&self, desired: &Desired, observed: &All) -> Vec<Check> {
        if desired.names.store != CredentialStore::Dynamodb {
            return vec![];
        }
        let n = &desired.names;
        let Some(t) = &observed.table else {
            return vec![fail(
                "table.exists",
                format!("DynamoDB table {} not found", n.table),
                SETUP,
            )];
        };
        let devices = if t.holds_devices {
            format!(
                "about {} devices (DynamoDB refreshes this count about every six hours)",
                t.approximate_items.max(1)
            )
        } else {
            "no devices yet: add them with `iot-custom-auth device add` or `device import`"
                .to_string()
        };
        vec![
            ok("table.exists", t.arn.clone()),
            check(
                "table.owned",
                t.owned,
                "tagged as ours",
                "not tagged as created by this deployment",
                "choose another --name, or tag the table by hand if it is this deployment's",
            ),
            check(
                "table.key",
                t.key_ok,
                format!("partition key `{KEY}` (string)"),
                format!(
                    "the key schema is not `{KEY}` (string) alone: the authorizer cannot find devices"
                ),
                "choose another --name, or delete the table by hand and run `setup`",
            ),
            check(
                "table.status",
                t.status == TableStatus::Active.as_str(),
                "ACTIVE",
                format!("{} (devices can log in only once it is ACTIVE)", t.status),
                "wait a minute and check again; `setup` waits for it",
            ),
            check(
                "table.billing",
                t.billing_mode == BillingMode::PayPerRequest.as_str(),
                "on demand (PAY_PER_REQUEST)",
                format!(
                    "{}: logins beyond the provisioned capacity are throttled and refused",
                    t.billing_mode
                ),
                SETUP,
            ),
            ok(
                "table.encryption",
                match &t.sse_type {
                    None => {
                        "encrypted at rest with an AWS owned key (DynamoDB's default)".to_string()
                    }
                    Some(kind) => format!("encrypted at rest with {kind}"),
                },
            ),
            check(
                "table.pitr",
                t.pitr,
                "point-in-time recovery on",
                "point-in-time recovery is off: a mistaken `device remove` or import cannot be undone",
                SETUP,
            ),
            ok("table.devices", devices),
        ]
    }

    fn refuse(&self, desired: &Desired, observed: &All, _: &SetupOptions) -> Result<()> {
        let n = &desired.names;
        if desired.names.store != CredentialStore::Dynamodb {
            return Ok(());
        }
        match &observed.table {
            Some(t) if !t.owned => bail!(Failure::new(
                not_ours("DynamoDB table", &n.table, &n.deployment),
                NOT_OURS_HINT
            )),
            Some(t) if !t.key_ok => bail!(Failure::new(
                format!(
                    "DynamoDB table {} exists with another key than `{KEY}` (string)",
                    n.table
                ),
                "a table's key cannot be changed: choose another --name, or delete the table by hand"
            )),
            _ => Ok(()),
        }
    }

    fn plan(&self, desired: &Desired, observed: &All) -> Outcome {
        plan(observed.table.as_ref()).outcome(self.kind(), &desired.names.table)
    }

    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if step.desired.names.store != CredentialStore::Dynamodb {
                return Ok(());
            }
            let plan = plan(step.observed.table.as_ref());
            apply(step.app, &step.clients.dynamodb, &step.desired.names, &plan).await
        })
    }

    fn removal(&self, names: &Names, observed: &All) -> Removal {
        self.removal_with(names, observed, &TeardownOptions::default())
    }

    /// A table that holds devices is kept unless `--delete-devices`: it is the one thing
    /// `teardown` cannot recreate.
    fn removal_with(&self, names: &Names, observed: &All, options: &TeardownOptions) -> Removal {
        match &observed.table {
            None => Removal::Absent,
            Some(t) if !t.owned => Removal::Skip(
                Outcome::new(self.kind(), &names.table, Action::Skipped).with(vec![not_ours(
                    "DynamoDB table",
                    &names.table,
                    &names.deployment,
                )]),
            ),
            Some(t) if t.holds_devices && !options.delete_devices => Removal::Skip(
                Outcome::new(self.kind(), &names.table, Action::Kept).with(vec![format!(
                    "it still holds devices (about {}); {EXPORT_HINT}",
                    t.approximate_items.max(1)
                )]),
            ),
            Some(_) => Removal::Delete(Outcome::new(self.kind(), &names.table, Action::Deleted)),
        }
    }

    fn delete<'a>(
        &'a self,
        _: &'a App,
        clients: &'a Clients,
        names: &'a Names,
        _observed: &'a All,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { delete(&clients.dynamodb, names).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Planned;

    fn ours() -> Observed {
        Observed {
            arn: "arn:aws:dynamodb:eu-west-1:111122223333:table/d-devices".into(),
            status: "ACTIVE".into(),
            billing_mode: "PAY_PER_REQUEST".into(),
            key_ok: true,
            sse_type: None,
            pitr: true,
            approximate_items: 0,
            holds_devices: false,
            owned: true,
        }
    }

    #[test]
    fn a_missing_table_is_created_then_given_pitr() {
        let p = plan(None);
        assert!(p.create && p.pitr && !p.on_demand);
    }

    #[test]
    fn only_what_differs_is_changed() {
        assert_eq!(plan(Some(&ours())).changes(), Vec::<String>::new());
        let mut o = ours();
        o.pitr = false;
        o.billing_mode = "PROVISIONED".into();
        assert_eq!(
            plan(Some(&o)).changes(),
            [
                "billing on demand (PAY_PER_REQUEST)",
                "point-in-time recovery on"
            ]
        );
    }

    #[test]
    fn a_table_with_devices_is_kept_unless_told() {
        let names = Names::new("d").unwrap();
        let mut all = All {
            table: Some(ours()),
            ..All::default()
        };
        assert!(matches!(RESOURCE.removal(&names, &all), Removal::Delete(_)));
        all.table.as_mut().unwrap().holds_devices = true;
        let Removal::Skip(kept) = RESOURCE.removal(&names, &all) else {
            panic!("a table with devices must be kept");
        };
        assert_eq!(kept.action, Action::Kept);
        assert!(kept.details[0].contains("device export"), "{kept:?}");
        let told = TeardownOptions {
            delete_devices: true,
        };
        assert!(matches!(
            RESOURCE.removal_with(&names, &all, &told),
            Removal::Delete(_)
        ));
        all.table.as_mut().unwrap().owned = false;
        let Removal::Skip(skipped) = RESOURCE.removal_with(&names, &all, &told) else {
            panic!("never delete a table that is not ours");
        };
        assert_eq!(skipped.action, Action::Skipped);
    }
}

//! `device migrate --to dynamodb|package`: moves a deployment's devices from one store to the
//! other and switches the function, in an order that leaves no moment in which a device cannot
//! log in, and that a re-run completes wherever a run stopped.
//!
//! To the table (config → DynamoDB):
//! 1. the role's `read-devices-table` grant and the table, through the role's and the table's own
//!    `apply` (the resources `setup` creates with the DynamoDB store), while the function still
//!    serves from its package;
//! 2. every config device written into the table as it is (verifier, previous verifiers,
//!    disabled flag); an identical item is not rewritten;
//! 3. the table read back: every device there, exactly (else stop);
//! 4. the DynamoDB-mode package deployed through the function's `apply`, which returns once the
//!    update is done; every device is already in the table, so the old code and the new both
//!    let it in. A deploy that switches the function starts at least [`GRANT_PROPAGATION`]
//!    after the grant was known to be in place (written, or read, by this run), so that Lambda
//!    sees it even when an earlier run wrote it a moment ago;
//! 5. the config rewritten atomically: `credential_store = "dynamodb"`, no `[[devices]]`.
//!
//! Back (DynamoDB → config):
//! 1. every item read (a paged Scan: it reads verifiers, an admin operation) and checked as
//!    config devices, and the package built and checked against Lambda's limits;
//! 2. the package-mode function (devices inside) deployed; the table is still read by the old
//!    code until the update is done, and the grant is still there;
//! 3. the table read again: a device changed meanwhile stops the run before the config changes;
//! 4. the role's grant removed (what `setup` does with the package store);
//! 5. the config rewritten with `credential_store = "package"` and the devices.
//!
//! The table is kept (never delete data) and the result says how to delete it. With the package
//! store, `setup`, `status` and `teardown` do not read the table at all (they need no DynamoDB
//! permission then), so a kept table is left alone by them too.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::time::Instant;

use crate::app::App;
use crate::config::{Config, CredentialStore, Device};
use crate::error::{Failure, exit};
use crate::resources::{
    self, Action, Desired, Observed, Outcome, Resource, SetupOptions, Step, function, role, table,
};
use crate::store::dynamodb::TableStore;
use crate::store::{normalized, package};

/// How long `--to dynamodb` lets the role's read grant reach Lambda before deploying the code
/// that needs it, counted from when this run wrote it or read it in place (an earlier run that
/// stopped may have written it a moment before). IAM is eventually consistent and offers no way to wait for a change
/// (https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency);
/// changes usually show within about 2 s (/work/shared/aws-facts.md, Pulumi's maintainers);
/// 10 s is five times that, and it runs while the devices are written, so a large fleet does
/// not wait for it at all. A login refused for a grant not yet visible is the window this
/// command exists to avoid.
pub const GRANT_PROPAGATION: Duration = Duration::from_secs(10);

/// Lambda's limits for a package uploaded directly: 50 MB zipped, 250 MB unzipped
/// (https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
pub const MAX_ZIPPED_BYTES: usize = 50 * 1024 * 1024;
pub const MAX_UNZIPPED_BYTES: usize = 250 * 1024 * 1024;

/// The memory README recommends for the DynamoDB store: the SDK import alone projects to 3-4 s
/// of a cold start at 128 MB, 0.7-1 s at 512 MB (BENCHMARKS.md, "Authorizer").
const RECOMMENDED_DYNAMODB_MEMORY_MB: i32 = 512;

/// Items per Scan page when reading the table.
const SCAN_PAGE: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The `<name>-devices` DynamoDB table.
    Dynamodb,
    /// The config file, deployed inside the function's package.
    Package,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The store to move the devices to.
    #[arg(long, value_enum)]
    pub to: Target,
    /// DynamoDB batch requests in flight at once while writing the devices into the table and
    /// reading them back (--to dynamodb).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

#[derive(Serialize)]
struct Migrated {
    deployment: String,
    region: String,
    from: &'static str,
    to: &'static str,
    devices: usize,
    /// One line per step, in the order they ran.
    steps: Vec<Outcome>,
    /// `--to package`: the table, kept with its devices, and how to delete it.
    #[serde(skip_serializing_if = "Option::is_none")]
    table_kept: Option<TableKept>,
}

#[derive(Serialize)]
struct TableKept {
    table: String,
    devices: usize,
    delete_with: String,
}

impl fmt::Display for Migrated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.steps {
            o.write_line(f, false)?;
        }
        writeln!(
            f,
            "moved {} devices of deployment `{}` in {} from the {} store to the {} store",
            self.devices, self.deployment, self.region, self.from, self.to
        )?;
        if let Some(t) = &self.table_kept {
            writeln!(
                f,
                "The table {} is kept with its {} devices; the deployment no longer reads it, and \
                 setup, status and teardown leave it alone. Delete it once you no longer need it:",
                t.table, t.devices
            )?;
            writeln!(f, "  {}", t.delete_with)?;
        }
        Ok(())
    }
}

pub async fn run(app: &App, args: MigrateArgs) -> Result<u8> {
    let config = app.config()?;
    let to = match args.to {
        Target::Dynamodb => CredentialStore::Dynamodb,
        Target::Package => CredentialStore::Package,
    };
    if config.deployment.credential_store == to {
        bail!(Failure::usage(
            format!(
                "{} already uses the {} store (credential_store = \"{}\"); nothing to migrate",
                app.global.config.display(),
                store_name(to),
                store_name(to)
            ),
            "to move the devices the other way, pass the other --to",
        ));
    }
    if config.deployment.code.is_some() {
        bail!(Failure::usage(
            "deployment.code deploys your own authorizer, which reads devices its own way; \
             `device migrate` switches the bundled one only",
            "remove deployment.code to use the bundled authorizer, or move your devices by hand",
        ));
    }
    let concurrency = args.concurrency as usize;
    let mut target = config.clone();
    target.deployment.credential_store = to;
    let migrated = match to {
        CredentialStore::Dynamodb => to_dynamodb(app, &config, target, concurrency).await?,
        CredentialStore::Package => to_package(app, &config, target).await?,
    };
    app.print(&migrated);
    Ok(exit::OK)
}

fn store_name(store: CredentialStore) -> &'static str {
    match store {
        CredentialStore::Package => "package",
        CredentialStore::Dynamodb => "dynamodb",
    }
}

/// Reads the deployment as `target` describes it and refuses, before anything changes, when
/// there is none or a resource it touches is not ours.
async fn prepare(app: &App, target: &Config) -> Result<(Desired, Observed)> {
    let names = app.names(target)?;
    let clients = app.clients().await?;
    app.progress(format!(
        "reading deployment `{}` in {}",
        names.deployment, clients.region
    ));
    let (identity, observed) = resources::read_all(clients, &names).await?;
    if observed.function.is_none() {
        bail!(Failure::usage(
            format!(
                "deployment `{}` has no function in {}: there is nothing to migrate",
                names.deployment, clients.region
            ),
            "run `iot-custom-auth setup` first (check --name and --region); to start with the \
             other store, set credential_store in [deployment] before that setup",
        ));
    }
    let desired = Desired::new(
        target,
        names,
        &identity,
        &clients.region,
        None,
        target.deployment.default_authorizer,
    )?;
    let options = SetupOptions::default();
    for resource in touched() {
        resource.refuse(&desired, &observed, &options)?;
    }
    Ok((desired, observed))
}

/// The resources a migration changes; the authorizer, its permission and the default are the
/// same whatever the store.
fn touched() -> [&'static dyn Resource; 3] {
    [&role::RESOURCE, &table::RESOURCE, &function::RESOURCE]
}

/// Applies `resource` as `setup` would, with a progress line when it changes something, and
/// returns its result line.
async fn apply(app: &App, step: &Step<'_>, resource: &dyn Resource) -> Result<Outcome> {
    let outcome = resource.plan(step.desired, step.observed);
    if outcome.action != Action::Unchanged {
        app.progress(format!(
            "{} {} {}...",
            outcome.action.progressive(),
            resource.label(),
            outcome.name
        ));
    }
    resource
        .apply(step)
        .await
        .with_context(|| format!("{} {}", resource.label(), outcome.name))?;
    Ok(outcome)
}

/// Refuses a package of `devices` past Lambda's size limits (`zipped`, `unzipped` bytes).
fn fits_lambda(devices: usize, zipped: usize, unzipped: usize) -> Result<()> {
    const MB: usize = 1024 * 1024;
    if zipped > MAX_ZIPPED_BYTES || unzipped > MAX_UNZIPPED_BYTES {
        bail!(Failure::usage(
            format!(
                "{devices} devices make a {} MB package ({} MB unzipped), past Lambda's limits \
                 of {} MB zipped and {} MB unzipped; nothing was changed",
                zipped.div_ceil(MB),
                unzipped.div_ceil(MB),
                MAX_ZIPPED_BYTES / MB,
                MAX_UNZIPPED_BYTES / MB
            ),
            "keep this fleet in DynamoDB (the package store is meant for up to 30,000 devices)",
        ));
    }
    Ok(())
}

/// Every device in the table, sorted by username, read a page at a time.
async fn scan_all(store: &TableStore) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    let mut after: Option<String> = None;
    loop {
        // A malformed item fails here, naming its device (`from_item`).
        let page = store.list(SCAN_PAGE, after.as_deref()).await?;
        devices.extend(page.devices);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    devices.sort_by(|a, b| a.username.cmp(&b.username));
    Ok(devices)
}

fn usernames(devices: &[Device]) -> String {
    const SHOWN: usize = 10;
    let mut names: Vec<&str> = devices.iter().map(|d| d.username.as_str()).collect();
    names.sort_unstable();
    let mut list = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        list.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    list
}

/// The last step of a migration: the config file, unchanged since the run read it, switched to
/// `store` (holding `devices`), and its result line.
fn switch_config(
    app: &App,
    config: &Config,
    store: CredentialStore,
    devices: &[Device],
    details: String,
) -> Result<Outcome> {
    config_unchanged(app, config)?;
    package::switch_store(&app.global.config, store, devices)?;
    let path = app.global.config.display().to_string();
    Ok(Outcome::new("config", path, Action::Updated).with(vec![details]))
}

/// The config file must still be what the migration started from (nobody added or changed a
/// device meanwhile), else rewriting it would lose that change.
fn config_unchanged(app: &App, start: &Config) -> Result<()> {
    let now = app.config()?;
    if now.deployment.credential_store != start.deployment.credential_store
        || now.devices != start.devices
    {
        bail!(Failure::new(
            format!(
                "{} changed while `device migrate` ran; it was left as it is",
                app.global.config.display()
            ),
            "run `iot-custom-auth device migrate` again: it carries on from where it stopped",
        ));
    }
    Ok(())
}

async fn to_dynamodb(
    app: &App,
    config: &Config,
    target: Config,
    concurrency: usize,
) -> Result<Migrated> {
    let devices: Vec<Device> = config.devices.iter().cloned().map(normalized).collect();
    let (desired, observed) = prepare(app, &target).await?;
    let clients = app.clients().await?;
    let store = TableStore::new(clients.dynamodb.clone(), desired.names.table.clone());
    if config.deployment.memory_mb < RECOMMENDED_DYNAMODB_MEMORY_MB {
        app.progress(format!(
            "warning: memory_mb = {}: the DynamoDB-mode authorizer imports the AWS SDK at every \
             cold start, about 3-4 s of IoT's 5 s at 128 MB (README, \"Choosing a credential \
             store\"); set memory_mb = {RECOMMENDED_DYNAMODB_MEMORY_MB} in [deployment] first \
             (this command deploys it with the new code)",
            config.deployment.memory_mb
        ));
    }
    // A table left by an earlier migration back may hold devices the config has since
    // dropped; moving in would let them log in again.
    if observed.table.as_ref().is_some_and(|t| t.holds_devices) {
        app.progress(format!(
            "reading table {} (it already holds devices)",
            desired.names.table
        ));
        let wanted: BTreeSet<&str> = devices.iter().map(|d| d.username.as_str()).collect();
        let extra: Vec<Device> = scan_all(&store)
            .await?
            .into_iter()
            .filter(|d| !wanted.contains(d.username.as_str()))
            .collect();
        if !extra.is_empty() {
            bail!(Failure::usage(
                format!(
                    "table {} holds {} devices that {} does not ({}), so moving in would let \
                     them log in again; nothing was changed",
                    desired.names.table,
                    extra.len(),
                    app.global.config.display(),
                    usernames(&extra)
                ),
                format!(
                    "if the table is left from an earlier `device migrate --to package`, delete \
                     it (`aws dynamodb delete-table --table-name {} --region {}`) or add those \
                     devices to the config, then run again",
                    desired.names.table, desired.region
                ),
            ));
        }
    }

    let step = Step {
        app,
        clients,
        desired: &desired,
        observed: &observed,
    };
    let (role_done, table_done) = tokio::try_join!(
        apply(app, &step, &role::RESOURCE),
        apply(app, &step, &table::RESOURCE)
    )?;
    // The grant was written, or read in place, by now.
    let granted_at = Instant::now();
    let mut steps = vec![role_done, table_done];

    app.progress(format!(
        "writing {} devices into table {}...",
        devices.len(),
        desired.names.table
    ));
    let count = crate::progress::Count::start(devices.len(), "written", app.global.quiet);
    let tick = |n: usize| count.add(n);
    let written = store.copy_in(devices.clone(), concurrency, &tick).await?;
    drop(count);
    let differing = store.differing(&devices, concurrency).await?;
    if !differing.is_empty() {
        bail!(Failure::new(
            format!(
                "after writing, table {} still misses or differs on {} devices ({}); the \
                 function and the config were not changed",
                desired.names.table,
                differing.len(),
                differing
                    .iter()
                    .take(10)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "run `iot-custom-auth device migrate --to dynamodb` again",
        ));
    }

    steps.push(
        Outcome::new(
            "devices",
            format!("table {}", desired.names.table),
            if written.written > 0 {
                Action::Updated
            } else {
                Action::Unchanged
            },
        )
        .with(vec![format!(
            "{} written, {} already there; all {} read back",
            written.written,
            written.unchanged,
            devices.len()
        )]),
    );

    let switches = function::RESOURCE.plan(&desired, &observed).action != Action::Unchanged;
    let left = GRANT_PROPAGATION.saturating_sub(granted_at.elapsed());
    if switches && !left.is_zero() {
        let _wait = app.wait(format!(
            "  letting IAM propagate the role's read grant to Lambda ({}s)",
            left.as_secs().max(1)
        ));
        tokio::time::sleep(left).await;
    }
    steps.push(apply(app, &step, &function::RESOURCE).await?);

    steps.push(switch_config(
        app,
        config,
        CredentialStore::Dynamodb,
        &[],
        format!(
            "credential_store = \"dynamodb\"; {} devices removed, the table holds them",
            devices.len()
        ),
    )?);
    Ok(Migrated {
        deployment: desired.names.deployment.clone(),
        region: desired.region.clone(),
        from: "package",
        to: "dynamodb",
        devices: devices.len(),
        steps,
        table_kept: None,
    })
}

async fn to_package(app: &App, config: &Config, mut target: Config) -> Result<Migrated> {
    let clients = app.clients().await?;
    // The table's name does not depend on the store; the store is needed to read it.
    let source = app.names(config)?;
    let store = TableStore::new(clients.dynamodb.clone(), source.table.clone());
    app.progress(format!("reading every device of table {}", source.table));
    let devices = scan_all(&store).await?;
    if devices.is_empty() {
        bail!(Failure::usage(
            format!(
                "table {} holds no devices: with the package store every login would be refused, \
                 and `setup` refuses a config without devices; nothing was changed",
                source.table
            ),
            "add devices first (`iot-custom-auth device add`), or set credential_store = \
             \"package\" by hand and run `setup` if you mean to start over",
        ));
    }
    target.devices = devices.clone();
    target.validate().map_err(|e| {
        Failure::usage(
            format!(
                "the devices of table {} cannot be config devices: {e:#}; nothing was changed",
                source.table
            ),
            "fix that device with the `device` commands (they act on the table), then run again",
        )
    })?;
    let (desired, observed) = prepare(app, &target).await?;
    let zipped = desired.package.zip.len();
    let unzipped = crate::bundle::device_data(&target, &desired.names, &desired.iot_arn_prefix())
        .len()
        + crate::bundle::AUTHORIZER_SOURCE.len();
    fits_lambda(devices.len(), zipped, unzipped)?;
    crate::commands::device::warn_if_large(app, devices.len());

    let step = Step {
        app,
        clients,
        desired: &desired,
        observed: &observed,
    };
    let mut steps = vec![apply(app, &step, &function::RESOURCE).await?];

    // A device added, changed or removed in the table while the package was built is not in
    // it: stop before the config says the package is the truth. A re-run deploys the new set.
    let again = scan_all(&store).await?;
    if again != devices {
        bail!(Failure::new(
            format!(
                "the devices of table {} changed while `device migrate` ran; the config was not \
                 changed (the function serves the devices read first)",
                source.table
            ),
            "run `iot-custom-auth device migrate --to package` again",
        ));
    }
    steps.push(
        Outcome::new(
            "devices",
            format!("table {}", source.table),
            Action::Unchanged,
        )
        .with(vec![format!(
            "{} devices read, in the new package",
            devices.len()
        )]),
    );
    steps.push(apply(app, &step, &role::RESOURCE).await?);

    let written = format!(
        "credential_store = \"package\"; {} devices written",
        devices.len()
    );
    steps.push(switch_config(
        app,
        config,
        CredentialStore::Package,
        &devices,
        written,
    )?);
    Ok(Migrated {
        deployment: desired.names.deployment.clone(),
        region: desired.region.clone(),
        from: "dynamodb",
        to: "package",
        devices: devices.len(),
        steps,
        table_kept: Some(TableKept {
            table: source.table.clone(),
            devices: devices.len(),
            delete_with: format!(
                "aws dynamodb delete-table --table-name {} --region {}",
                source.table, desired.region
            ),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_past_lambdas_limits_is_refused_as_bad_input() {
        assert!(fits_lambda(10, MAX_ZIPPED_BYTES, MAX_UNZIPPED_BYTES).is_ok());
        for (zipped, unzipped) in [(MAX_ZIPPED_BYTES + 1, 1), (1, MAX_UNZIPPED_BYTES + 1)] {
            let err = fits_lambda(2_000_000, zipped, unzipped).unwrap_err();
            let failure = err.downcast_ref::<Failure>().expect("a Failure");
            assert!(failure.usage, "exit code 2");
            assert!(
                failure.message.starts_with("2000000 devices make a"),
                "{}",
                failure.message
            );
            assert!(failure.message.contains("50 MB zipped and 250 MB unzipped"));
        }
    }
}

//! `setup`: the manual recipe as one idempotent command. Read everything, refuse what must not be
//! touched before changing anything, then create or update only what differs, walking the
//! resources forward ([`resources::walk`]) with each one applied as soon as what AWS needs
//! before it is done: the role and the log group before the function, the function (Active)
//! before the invoke permission, the authorizer before the default authorizer. The authorizer
//! and the default need only the function's ARN, which is known in advance, so they are created
//! while IAM propagates the role and Lambda creates the function.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::app::App;
use crate::config::CredentialStore;
use crate::error::exit;
use crate::resources::{self, Action, Desired, Outcome, Resource, SetupOptions, Step, endpoint};

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Print what would change and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Deploy your own authorizer (a directory or .zip) instead of the bundled one.
    #[arg(long, value_name = "DIR|ZIP")]
    pub code: Option<PathBuf>,
    /// Don't make this authorizer the account's default (devices then name it in their username).
    #[arg(long, conflicts_with = "replace_default")]
    pub no_default: bool,
    /// Replace another authorizer that is the account's default (its devices lose access).
    #[arg(long)]
    pub replace_default: bool,
}

#[derive(Serialize)]
pub struct Report {
    pub deployment: String,
    pub account: String,
    pub region: String,
    pub dry_run: bool,
    pub resources: Vec<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<Connection>,
}

/// How a device reaches the deployment.
#[derive(Serialize)]
pub struct Connection {
    pub endpoint: String,
    pub port: u16,
    pub alpn: &'static str,
    /// The username a device sends, with `<username>` standing for its own.
    pub username_format: String,
    pub example: String,
}

pub async fn run(app: &App, args: SetupArgs) -> Result<u8> {
    let mut config = app.config()?;
    let names = app.names(&config)?;
    // With the DynamoDB store the devices live in the table, which setup creates: an empty
    // config is the normal case, and devices are added after setup.
    if config.deployment.credential_store == CredentialStore::Package
        && config.devices.is_empty()
        && args.code.is_none()
        && config.deployment.code.is_none()
    {
        config = crate::commands::device::first_device(app)?;
    }
    if config.deployment.credential_store == crate::config::CredentialStore::Package {
        crate::commands::device::warn_if_large(app, config.devices.len());
    }
    let clients = app.clients().await?;
    app.progress(format!(
        "reading deployment `{}` in {}",
        names.deployment, clients.region
    ));
    // The endpoint is read with everything else, so it costs no round trip of its own, and a
    // missing iot:DescribeEndpoint permission stops setup before its first change, not after.
    let ((identity, observed), address) = tokio::try_join!(
        resources::read_all(clients, &names),
        endpoint::read(&clients.iot)
    )?;
    let wants_default = config.deployment.default_authorizer && !args.no_default;
    let desired = Desired::new(
        &config,
        names,
        &identity,
        &clients.region,
        args.code.as_deref(),
        wants_default,
    )?;
    let options = SetupOptions {
        replace_default: args.replace_default,
    };
    let walk: Vec<_> = resources::walk()
        .into_iter()
        .filter(|r| r.deployed(&desired))
        .collect();
    for resource in &walk {
        resource.refuse(&desired, &observed, &options)?;
    }

    let mut report = Report {
        deployment: desired.names.deployment.clone(),
        account: desired.account.clone(),
        region: desired.region.clone(),
        dry_run: args.dry_run,
        resources: Vec::new(),
        connection: None,
    };
    let step = Step {
        app,
        clients,
        desired: &desired,
        observed: &observed,
    };
    report.resources = walk.iter().map(|r| r.plan(&desired, &observed)).collect();
    if !args.dry_run {
        apply(app, &step, &walk, &report.resources).await?;
    }

    report.connection = Some(connection(&desired, &config, address));
    app.print(&report);
    Ok(exit::OK)
}

/// Applies every resource, each as soon as what its [`Resource::after`] names is done, so that
/// the IoT steps run while IAM propagates the role and Lambda creates the function. Each step
/// returns only once its resource is usable (the function once Active), so nothing is reported
/// before it works. The progress lines are printed up front, in walk order, so they read the
/// same whatever finishes first; a failure stops only what depends on it, and the first one
/// (in walk order, so a cause before what it stopped) is returned once the others have finished.
async fn apply(
    app: &App,
    step: &Step<'_>,
    walk: &[&'static dyn Resource],
    outcomes: &[Outcome],
) -> Result<()> {
    for (resource, outcome) in walk.iter().zip(outcomes) {
        if outcome.action != Action::Unchanged {
            let verb = outcome.action.progressive();
            app.progress(format!("{verb} {} {}...", resource.label(), outcome.name));
        }
    }
    let results = resources::concurrently(
        walk,
        |r| r.after(),
        |resource, ready| {
            Box::pin(async move {
                if !ready.await {
                    return Err(resources::not_attempted(resource.after()));
                }
                resource.apply(step).await
            })
        },
    )
    .await;
    for (i, (resource, result)) in walk.iter().zip(results).enumerate() {
        result.with_context(|| format!("step {}/{}: {}", i + 1, walk.len(), resource.label()))?;
    }
    Ok(())
}

fn connection(desired: &Desired, config: &crate::config::Config, address: String) -> Connection {
    let authorizer = (!desired.default_authorizer).then_some(desired.names.authorizer.as_str());
    let device = config.devices.first();
    let user = device
        .map(|d| d.username.clone())
        .unwrap_or_else(|| "USERNAME".to_string());
    let client_id = device
        .and_then(|d| d.client_ids().first().cloned())
        .unwrap_or_else(|| user.clone());
    let topic = device
        .and_then(|d| d.publish().first().cloned())
        .unwrap_or_else(|| format!("telemetry/{client_id}"));
    // `mosquitto_pub -P` would put the password in argv, where `ps` shows it to every user of the
    // machine. mosquitto_pub (2.0 too, which has no options-file flag) reads default options from
    // `$XDG_CONFIG_HOME/mosquitto_pub`, so the password goes there, in a private temp dir, written
    // by the shell's builtin printf (no process, no argv), and the dir is removed afterwards.
    Connection {
        example: format!(
            "(umask 077; d=$(mktemp -d); printf -- '-P %s\\n' \"$IOT_CUSTOM_AUTH_PASSWORD\" > \"$d/mosquitto_pub\"; XDG_CONFIG_HOME=\"$d\" mosquitto_pub -h {address} -p {port} --tls-alpn {alpn} --tls-use-os-certs -i {client_id} -u '{username}' -t {topic} -q 1 -m hello; rm -r \"$d\")",
            port = endpoint::PORT,
            alpn = endpoint::ALPN,
            username = endpoint::username(&user, authorizer),
        ),
        username_format: endpoint::username("<username>", authorizer),
        endpoint: address,
        port: endpoint::PORT,
        alpn: endpoint::ALPN,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.resources {
            o.write_line(f, self.dry_run)?;
        }
        let changed = self
            .resources
            .iter()
            .filter(|o| !matches!(o.action, Action::Unchanged | Action::Skipped))
            .count();
        let verb = if self.dry_run {
            "would change"
        } else {
            "changed"
        };
        writeln!(
            f,
            "{verb} {changed} of {} resources of deployment `{}` in {} ({})",
            self.resources.len(),
            self.deployment,
            self.region,
            self.account
        )?;
        if let Some(c) = &self.connection {
            writeln!(f)?;
            writeln!(
                f,
                "Devices connect to {}:{} with TLS ALPN `{}`",
                c.endpoint, c.port, c.alpn
            )?;
            writeln!(f, "MQTT username: {}", c.username_format)?;
            writeln!(f, "Try it:  {}", c.example)?;
            writeln!(f, "    or:  iot-custom-auth connect --username <username>")?;
        }
        Ok(())
    }
}

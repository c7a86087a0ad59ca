//! `setup`: the manual recipe as one idempotent command. Read everything, refuse what must not be
//! touched before changing anything, then create or update only what differs, in the order AWS
//! needs: role → function → authorizer → permission → default authorizer.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::app::App;
use crate::error::{Failure, exit};
use crate::resources::{
    self, Action, Desired, Observed, Outcome, Planned, authorizer, default_authorizer, endpoint,
    function, not_ours, permission, role,
};

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
    if config.devices.is_empty() && args.code.is_none() && config.deployment.code.is_none() {
        config = crate::commands::device::first_device(app)?;
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
    refuse_conflicts(&desired, &observed, args.replace_default)?;

    let mut report = Report {
        deployment: desired.names.deployment.clone(),
        account: desired.account.clone(),
        region: desired.region.clone(),
        dry_run: args.dry_run,
        resources: Vec::new(),
        connection: None,
    };
    let steps = Steps {
        app,
        clients,
        desired: &desired,
        dry_run: args.dry_run,
    };

    let plan = role::plan(observed.role.as_ref());
    report
        .resources
        .push(steps.role(&plan).await.context("step 1/5: IAM role")?);
    let plan = function::plan(&desired, observed.function.as_ref());
    report.resources.push(
        steps
            .function(&plan)
            .await
            .context("step 2/5: Lambda function")?,
    );
    let plan = authorizer::plan(&desired, observed.authorizer.as_ref());
    report.resources.push(
        steps
            .authorizer(&plan)
            .await
            .context("step 3/5: IoT authorizer")?,
    );
    // Deleting and recreating the function drops its policy, so a function created just now has
    // no statement whatever was read before.
    let statement = if observed.function.is_some() {
        observed.permission.as_ref()
    } else {
        None
    };
    report.resources.push(
        steps
            .permission(statement)
            .await
            .context("step 4/5: invoke permission")?,
    );
    report.resources.push(
        steps
            .default_authorizer(observed.default_authorizer.as_deref())
            .await
            .context("step 5/5: default authorizer")?,
    );

    report.connection = Some(connection(&desired, &config, address));
    app.print(&report);
    Ok(exit::OK)
}

/// Everything that must stop setup before its first change.
fn refuse_conflicts(desired: &Desired, observed: &Observed, replace_default: bool) -> Result<()> {
    let d = &desired.names;
    let hint = "choose another --name, or remove the resource by hand";
    if observed.role.as_ref().is_some_and(|r| !r.owned) {
        bail!(Failure::new(
            not_ours("IAM role", &d.role, &d.deployment),
            hint
        ));
    }
    if observed.function.as_ref().is_some_and(|f| !f.owned) {
        bail!(Failure::new(
            not_ours("Lambda function", &d.function, &d.deployment),
            hint
        ));
    }
    if let Some(a) = &observed.authorizer {
        if !a.owned {
            bail!(Failure::new(
                not_ours("IoT authorizer", &d.authorizer, &d.deployment),
                hint
            ));
        }
        if !a.signing_disabled {
            bail!(Failure::new(
                format!(
                    "IoT authorizer `{}` has token signing enabled, and AWS cannot change that after creation",
                    d.authorizer
                ),
                "run `iot-custom-auth teardown` and `setup` again to recreate it, or use another --name"
            ));
        }
    }
    if let Some(current) = &observed.default_authorizer
        && desired.default_authorizer
        && current != &d.authorizer
        && !replace_default
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

/// Applies each resource's plan (or, in a dry run, only describes it).
struct Steps<'a> {
    app: &'a App,
    clients: &'a crate::aws::Clients,
    desired: &'a Desired,
    dry_run: bool,
}

impl Steps<'_> {
    fn doing(&self, what: &str, outcome: &Outcome) {
        if !self.dry_run && outcome.action != Action::Unchanged {
            let verb = outcome.action.progressive();
            self.app
                .progress(format!("{verb} {what} {}...", outcome.name));
        }
    }

    async fn role(&self, plan: &role::Plan) -> Result<Outcome> {
        let outcome = plan.outcome("role", &self.desired.names.role);
        self.doing("IAM role", &outcome);
        if !self.dry_run {
            role::apply(&self.clients.iam, &self.desired.names, plan).await?;
        }
        Ok(outcome)
    }

    async fn function(&self, plan: &function::Plan) -> Result<Outcome> {
        let outcome = plan.outcome("function", &self.desired.names.function);
        self.doing("Lambda function", &outcome);
        if !self.dry_run {
            function::apply(self.app, &self.clients.lambda, self.desired, plan).await?;
        }
        Ok(outcome)
    }

    async fn authorizer(&self, plan: &authorizer::Plan) -> Result<Outcome> {
        let outcome = plan.outcome("authorizer", &self.desired.names.authorizer);
        self.doing("IoT authorizer", &outcome);
        if !self.dry_run {
            authorizer::apply(&self.clients.iot, self.desired, plan).await?;
        }
        Ok(outcome)
    }

    async fn permission(&self, observed: Option<&permission::Observed>) -> Result<Outcome> {
        let name = &self.desired.names.statement_id;
        let problems = permission::problems(self.desired, observed);
        let outcome = match (observed, problems.is_empty()) {
            (None, _) => Outcome::new("permission", name, Action::Created),
            (Some(_), true) => Outcome::new("permission", name, Action::Unchanged),
            (Some(_), false) => Outcome::new("permission", name, Action::Updated).with(problems),
        };
        self.doing("invoke permission", &outcome);
        if !self.dry_run && outcome.action != Action::Unchanged {
            permission::apply(&self.clients.lambda, self.desired, observed.is_some()).await?;
        }
        Ok(outcome)
    }

    async fn default_authorizer(&self, current: Option<&str>) -> Result<Outcome> {
        let ours = self.desired.names.authorizer.as_str();
        let is_ours = current == Some(ours);
        let (action, details) = match (self.desired.default_authorizer, is_ours) {
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
        let name = if self.desired.default_authorizer {
            ours
        } else {
            current.unwrap_or("none")
        };
        let outcome = Outcome::new("default-authorizer", name, action).with(details);
        self.doing("default authorizer", &outcome);
        if !self.dry_run {
            match action {
                Action::Created | Action::Updated => {
                    default_authorizer::set(&self.clients.iot, ours, current).await?
                }
                Action::Cleared => default_authorizer::clear(&self.clients.iot).await?,
                _ => {}
            }
        }
        Ok(outcome)
    }
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
            write!(
                f,
                "{:<19} {:<40} {}",
                o.resource,
                o.name,
                o.action.verb(self.dry_run)
            )?;
            if !o.details.is_empty() {
                write!(f, " ({})", o.details.join("; "))?;
            }
            writeln!(f)?;
        }
        let changed = self
            .resources
            .iter()
            .filter(|o| o.action != Action::Unchanged)
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

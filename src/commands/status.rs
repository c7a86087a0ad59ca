//! `status`: a read-only health check for CI. It reads everything concurrently, then compares
//! desired with observed in one pure function ([`checks`]) that names each failing item and its fix.

use std::fmt;
use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use aws_sdk_iot::primitives::Blob;
use aws_sdk_iot::types::{MqttContext, TlsContext};
use clap::Args;
use serde::Serialize;

use crate::app::App;
use crate::commands::connect::{self, ConnectOptions};
use crate::config::Config;
use crate::error::{AwsResultExt, Failure, exit};
use crate::names::BASIC_EXECUTION_POLICY_ARN;
use crate::resources::{self, Desired, Observed, endpoint, function, log_group, permission};
use crate::tls::Target;
use crate::{bundle, policy, verifier};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also log in as this device through TestInvokeAuthorizer: it must be allowed with the
    /// policy the config says, and a random password must be denied.
    #[arg(long, value_name = "USERNAME")]
    pub probe_user: Option<String>,
    /// Read the probe password from stdin (otherwise IOT_CUSTOM_AUTH_PASSWORD).
    #[arg(long, requires = "probe_user")]
    pub password_stdin: bool,
    /// The deployment uses your own authorizer code (as passed to `setup --code`).
    #[arg(long, value_name = "DIR|ZIP")]
    pub code: Option<PathBuf>,
    /// The deployment is not meant to be the account's default authorizer.
    #[arg(long)]
    pub no_default: bool,
    /// With --probe-user: also connect as that device the way it would (MQTT over TLS, port 443,
    /// ALPN `mqtt`) and publish one message to its first topic.
    #[arg(long, requires = "probe_user")]
    pub connect: bool,
    /// With --connect: connect here instead of the account's data endpoint (a custom domain, or
    /// `iot-custom-auth local`).
    #[arg(long, value_name = "HOST[:PORT]", requires = "connect")]
    pub host: Option<String>,
    /// With --connect: also trust this CA (PEM), e.g. the one `iot-custom-auth local` prints.
    #[arg(long, value_name = "PEM", requires = "connect")]
    pub ca_file: Vec<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    Fail,
    /// Not checked because something it depends on is missing.
    Skip,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `permission.source_arn`.
    pub id: &'static str,
    pub state: State,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn ok(id: &'static str, detail: impl Into<String>) -> Check {
    Check {
        id,
        state: State::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(id: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        id,
        state: State::Fail,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn skip(id: &'static str, detail: impl Into<String>) -> Check {
    Check {
        id,
        state: State::Skip,
        detail: detail.into(),
        fix: None,
    }
}

fn check(
    id: &'static str,
    good: bool,
    ok_detail: impl Into<String>,
    bad_detail: impl Into<String>,
    fix: &str,
) -> Check {
    if good {
        ok(id, ok_detail)
    } else {
        fail(id, bad_detail, fix)
    }
}

const SETUP: &str = "run `iot-custom-auth setup`";

/// Pure: every check of a working deployment, from what should be and what is.
pub fn checks(desired: &Desired, observed: &Observed) -> Vec<Check> {
    let mut out = Vec::new();
    let n = &desired.names;
    match &observed.role {
        None => out.push(fail(
            "role.exists",
            format!("IAM role {} not found", n.role),
            SETUP,
        )),
        Some(r) => {
            out.push(ok("role.exists", r.arn.clone()));
            out.push(check(
                "role.owned",
                r.owned,
                "tagged as ours",
                "not tagged as created by this deployment",
                "choose another --name or remove the role by hand",
            ));
            out.push(check(
                "role.trust_policy",
                resources::role::trusts_only_lambda(&r.trust_policy),
                "trusts lambda.amazonaws.com only",
                "trust policy does not limit the role to lambda.amazonaws.com",
                SETUP,
            ));
            let basic = r.attached.iter().any(|a| a == BASIC_EXECUTION_POLICY_ARN);
            let extra: Vec<&String> = r
                .attached
                .iter()
                .filter(|a| *a != BASIC_EXECUTION_POLICY_ARN)
                .chain(&r.inline)
                .collect();
            out.push(check(
                "role.execution_policy",
                basic && extra.is_empty(),
                "AWSLambdaBasicExecutionRole only",
                if basic {
                    format!(
                        "extra policies: {}",
                        extra
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                } else {
                    "AWSLambdaBasicExecutionRole is not attached".to_string()
                },
                SETUP,
            ));
        }
    }
    match &observed.function {
        None => out.push(fail(
            "function.exists",
            format!("Lambda function {} not found", n.function),
            SETUP,
        )),
        Some(f) => {
            out.push(ok("function.exists", f.arn.clone()));
            out.push(check(
                "function.owned",
                f.owned,
                "tagged as ours",
                "not tagged as created by this deployment",
                "choose another --name or remove the function by hand",
            ));
            out.push(check(
                "function.state",
                f.state == "Active",
                "Active",
                format!("state is {}", f.state),
                "wait, or check the function's StateReason in the Lambda console",
            ));
            // An update still running is not a failure: the previous code keeps serving until
            // it completes, and CI often checks right after a deploy.
            out.push(check(
                "function.last_update",
                f.last_update_status != "Failed",
                if f.last_update_status == "InProgress" {
                    "InProgress (an update is running)".to_string()
                } else {
                    f.last_update_status.clone()
                },
                "the last update Failed: Lambda kept the previous code",
                SETUP,
            ));
            let deprecated = function::DEPRECATED_RUNTIMES.contains(&f.runtime.as_str());
            out.push(check(
                "function.runtime",
                f.runtime == desired.runtime && !deprecated,
                f.runtime.clone(),
                if deprecated {
                    format!("{} is deprecated by Lambda", f.runtime)
                } else {
                    format!("{} (config says {})", f.runtime, desired.runtime)
                },
                SETUP,
            ));
            out.push(check(
                "function.timeout",
                f.timeout <= crate::config::MAX_TIMEOUT_SECONDS
                    && f.timeout == desired.timeout_seconds,
                format!("{} s", f.timeout),
                format!(
                    "{} s (IoT stops waiting after 5 s; config says {} s)",
                    f.timeout, desired.timeout_seconds
                ),
                SETUP,
            ));
            out.push(check(
                "function.role",
                f.role == desired.role_arn(),
                "our role",
                format!("runs as {}", f.role),
                SETUP,
            ));
            out.push(check(
                "function.code",
                f.code_sha256 == desired.package.sha256 && f.handler == desired.package.handler,
                "identical to what setup would deploy",
                "differs from what setup would deploy from the current config (devices added or removed, or code changed by hand)",
                SETUP,
            ));
            // `logs` filters on JSON fields, which Lambda's default Text lines never have.
            out.push(check(
                "function.logging",
                f.logging.is_desired(n),
                format!("JSON lines into {}", f.logging.group),
                format!(
                    "logs {} lines into {} (setup deploys JSON into {}; `logs` cannot filter Text lines)",
                    f.logging.format,
                    f.logging.group,
                    log_group::name(n)
                ),
                SETUP,
            ));
        }
    }
    let group = log_group::name(n);
    match &observed.log_group {
        None => out.push(fail(
            "log_group.exists",
            format!("log group {group} not found (Lambda would create it without a retention)"),
            SETUP,
        )),
        Some(g) => {
            out.push(ok("log_group.exists", group.clone()));
            out.push(check(
                "log_group.owned",
                g.owned,
                "tagged as ours",
                "not tagged as created by this deployment: setup leaves its retention alone",
                format!(
                    "tag it to let setup manage it: `aws logs tag-resource --resource-arn {} --tags {}={}`, or delete it by hand",
                    g.arn,
                    crate::names::OWNER_TAG,
                    n.deployment
                )
                .as_str(),
            ));
            let shown =
                |d: Option<i32>| d.map_or("never expire".to_string(), |d| format!("{d} days"));
            out.push(check(
                "log_group.retention",
                g.retention_days == Some(desired.log_retention_days),
                shown(g.retention_days),
                format!(
                    "{} (config says {} days)",
                    shown(g.retention_days),
                    desired.log_retention_days
                ),
                SETUP,
            ));
        }
    }
    match &observed.authorizer {
        None => out.push(fail(
            "authorizer.exists",
            format!("IoT authorizer {} not found", n.authorizer),
            SETUP,
        )),
        Some(a) => {
            out.push(ok("authorizer.exists", a.arn.clone()));
            out.push(check(
                "authorizer.owned",
                a.owned,
                "tagged as ours",
                "not tagged as created by this deployment",
                "choose another --name or remove the authorizer by hand",
            ));
            out.push(check(
                "authorizer.status",
                a.active,
                "ACTIVE",
                "INACTIVE: IoT does not call it",
                SETUP,
            ));
            out.push(check(
                "authorizer.signing",
                a.signing_disabled,
                "token signing disabled",
                "token signing enabled: username/password logins never reach it",
                "`teardown` then `setup` (signing cannot be changed after creation)",
            ));
            out.push(check(
                "authorizer.function",
                a.function_arn == desired.function_arn(),
                "points at our function",
                format!("points at {}", a.function_arn),
                SETUP,
            ));
        }
    }
    if observed.function.is_none() {
        out.push(skip("permission.exists", "no function to hold it"));
    } else {
        match &observed.permission {
            None => out.push(fail(
                "permission.exists",
                format!(
                    "statement {} not in the function's policy: IoT cannot invoke it",
                    n.statement_id
                ),
                SETUP,
            )),
            Some(p) => {
                out.push(ok("permission.exists", n.statement_id.clone()));
                let want = |got: &Option<String>, want: &str| got.as_deref() == Some(want);
                let shown =
                    |got: &Option<String>| got.clone().unwrap_or_else(|| "unset".to_string());
                out.push(check(
                    "permission.principal",
                    want(&p.principal, permission::PRINCIPAL),
                    permission::PRINCIPAL,
                    shown(&p.principal),
                    SETUP,
                ));
                out.push(check(
                    "permission.action",
                    want(&p.action, permission::ACTION),
                    permission::ACTION,
                    shown(&p.action),
                    SETUP,
                ));
                out.push(check(
                    "permission.source_arn",
                    want(&p.source_arn, &desired.authorizer_arn()),
                    desired.authorizer_arn(),
                    format!(
                        "{} (want {})",
                        shown(&p.source_arn),
                        desired.authorizer_arn()
                    ),
                    SETUP,
                ));
                out.push(check(
                    "permission.source_account",
                    want(&p.source_account, &desired.account),
                    desired.account.clone(),
                    format!("{} (want {})", shown(&p.source_account), desired.account),
                    SETUP,
                ));
            }
        }
    }
    let current = observed.default_authorizer.as_deref();
    let is_ours = current == Some(n.authorizer.as_str());
    out.push(if desired.default_authorizer {
        check(
            "default_authorizer",
            is_ours,
            format!("{} is the account's default", n.authorizer),
            match current {
                Some(other) => format!("the default is `{other}`: devices that send a plain username reach it, not ours"),
                None => "no default authorizer: devices must name ours in their username".to_string(),
            },
            "run `iot-custom-auth setup` (with --replace-default if another authorizer is the default)",
        )
    } else {
        check("default_authorizer", !is_ours, "not the default, as configured", "ours is the default, but the config says it should not be", SETUP)
    });
    out
}

#[derive(Serialize)]
pub struct Report {
    pub deployment: String,
    pub account: String,
    pub region: String,
    /// true when every check is ok.
    pub healthy: bool,
    /// true when none of the deployment's resources exist.
    pub deployed: bool,
    pub checks: Vec<Check>,
}

pub async fn run(app: &App, args: StatusArgs) -> Result<u8> {
    let config = app.config()?;
    let names = app.names(&config)?;
    let probe_password = match &args.probe_user {
        Some(user) => Some(probe_password(&config, user, args.password_stdin)?),
        None => None,
    };
    let clients = app.clients().await?;
    let ((identity, observed), endpoint) = tokio::try_join!(
        resources::read_all(clients, &names),
        endpoint::read(&clients.iot)
    )?;
    let default = config.deployment.default_authorizer && !args.no_default;
    let desired = Desired::new(
        &config,
        names,
        &identity,
        &clients.region,
        args.code.as_deref(),
        default,
    )?;
    let deployed = !observed.is_empty();
    let mut checks = checks(&desired, &observed);
    checks.push(ok(
        "endpoint",
        format!("{endpoint}:{} ALPN {}", endpoint::PORT, endpoint::ALPN),
    ));
    if let (Some(user), Some(password)) = (&args.probe_user, probe_password) {
        if observed.authorizer.is_some() {
            checks.extend(probe(app, &config, &desired, user, &password, &endpoint).await?);
        } else {
            checks.push(skip("probe.allowed", "no authorizer to call"));
        }
        if args.connect {
            let target = match &args.host {
                Some(host) => Target::parse(host)?,
                None => Target::aws(&endpoint),
            };
            checks.push(
                connect_check(
                    app,
                    &config,
                    &desired,
                    user,
                    password,
                    target,
                    args.ca_file.clone(),
                )
                .await,
            );
        }
    }
    let healthy = checks.iter().all(|c| c.state != State::Fail) && deployed;
    app.print(&Report {
        deployment: desired.names.deployment.clone(),
        account: desired.account.clone(),
        region: desired.region.clone(),
        healthy,
        deployed,
        checks,
    });
    Ok(if healthy { exit::OK } else { exit::UNHEALTHY })
}

fn probe_password(config: &Config, user: &str, stdin: bool) -> Result<String> {
    if config.device(user).is_none() {
        bail!(Failure::usage(
            format!("--probe-user: no device `{user}` in the config"),
            "`iot-custom-auth device list` shows the declared devices"
        ));
    }
    if stdin {
        let mut pw = String::new();
        std::io::stdin()
            .read_to_string(&mut pw)
            .context("reading the password from stdin")?;
        return Ok(pw.trim_end_matches(['\r', '\n']).to_string());
    }
    match std::env::var("IOT_CUSTOM_AUTH_PASSWORD") {
        Ok(pw) if !pw.is_empty() => Ok(pw),
        _ => {
            let hint = if std::io::stdin().is_terminal() {
                "pipe it with --password-stdin"
            } else {
                "use --password-stdin"
            };
            bail!(Failure::usage(
                "--probe-user needs the device's password",
                format!("set IOT_CUSTOM_AUTH_PASSWORD or {hint}")
            ))
        }
    }
}

/// Logs in through TestInvokeAuthorizer as IoT would: the right password must give exactly the
/// config's policy, a random one must be refused.
async fn probe(
    app: &App,
    config: &Config,
    desired: &Desired,
    user: &str,
    password: &str,
    server_name: &str,
) -> Result<Vec<Check>> {
    let device = config.device(user).context("probe device vanished")?;
    let client_id = device.client_ids()[0].clone();
    let clients = app.clients().await?;
    let invoke = |password: Vec<u8>| {
        clients
            .iot
            .test_invoke_authorizer()
            .authorizer_name(&desired.names.authorizer)
            .mqtt_context(
                MqttContext::builder()
                    .username(user)
                    .password(Blob::new(password))
                    .client_id(&client_id)
                    .build(),
            )
            .tls_context(TlsContext::builder().server_name(server_name).build())
            .send()
    };
    let (good, bad) = tokio::try_join!(
        async {
            invoke(password.as_bytes().to_vec())
                .await
                .aws("iot:TestInvokeAuthorizer")
        },
        async {
            invoke(verifier::generate().into_bytes())
                .await
                .aws("iot:TestInvokeAuthorizer")
        },
    )?;
    let expected: Vec<serde_json::Value> = policy::documents(
        &bundle::arn_prefix(&desired.region, &desired.account),
        &client_id,
        device,
    )?
    .iter()
    .map(|d| serde_json::to_value(d).expect("documents serialize"))
    .collect();
    let got: Vec<serde_json::Value> = good
        .policy_documents()
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let allowed = if !good.is_authenticated().unwrap_or(false) {
        fail(
            "probe.allowed",
            format!("`{user}` with its password was refused"),
            crate::commands::logs::with_hint(
                app,
                Some("check the password, or run `setup` if the device was added since".into()),
                user,
                Some(client_id.as_str()),
            ),
        )
    } else if got != expected {
        fail(
            "probe.allowed",
            format!(
                "`{user}` was allowed, but with a different policy than the config says: {}",
                good.policy_documents().join(" ")
            ),
            SETUP,
        )
    } else {
        ok(
            "probe.allowed",
            format!("`{user}` as client {client_id}: allowed with the configured policy"),
        )
    };
    let denied = check(
        "probe.denied",
        !bad.is_authenticated().unwrap_or(false),
        "a random password is refused",
        "a random password was accepted: the authorizer lets anyone in",
        "check the authorizer code (with --code) or run `setup`",
    );
    Ok(vec![allowed, denied])
}

/// Connects and publishes as the device would: the end-to-end proof TestInvokeAuthorizer cannot
/// give (it skips TLS, ALPN, SNI, the username format and the broker's policy checks).
async fn connect_check(
    app: &App,
    config: &Config,
    desired: &Desired,
    user: &str,
    password: String,
    target: Target,
    ca_files: Vec<PathBuf>,
) -> Check {
    let device = config.device(user);
    let options = ConnectOptions {
        target: Some(target),
        ca_files,
        authorizer: (!desired.default_authorizer).then(|| desired.names.authorizer.clone()),
        client_id: device.and_then(|d| d.client_ids().first().cloned()),
        topic: device.and_then(|d| d.publish().first().cloned()),
        ..ConnectOptions::new(user, password)
    };
    match connect::check(app, &options).await {
        Ok(s) if s.passed => ok(
            "connect",
            format!(
                "{}:{} as {}: published to {} and got the PUBACK",
                s.host, s.port, s.client_id, s.topic
            ),
        ),
        Ok(s) => fail(
            "connect",
            s.reason
                .unwrap_or_else(|| "the device could not connect and publish".to_string()),
            s.remedy.unwrap_or_else(|| SETUP.to_string()),
        ),
        Err(e) => fail(
            "connect",
            format!("could not connect: {e:#}"),
            "check the network, the host and the CA; `iot-custom-auth connect` shows each step",
        ),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "deployment `{}` in {} ({})",
            self.deployment, self.region, self.account
        )?;
        let width = self.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
        let colour = crate::progress::colour();
        for c in &self.checks {
            use crate::progress::{Colour, paint};
            let mark = match c.state {
                State::Ok => paint("ok  ", Colour::Green, colour),
                State::Fail => paint("FAIL", Colour::Red, colour),
                State::Skip => paint("skip", Colour::Yellow, colour),
            };
            writeln!(f, "  {mark}  {:<width$}  {}", c.id, c.detail)?;
            if let Some(fix) = &c.fix {
                writeln!(f, "        {:<width$}  fix: {fix}", "")?;
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.state == State::Fail)
            .count();
        if !self.deployed {
            writeln!(f, "not deployed: run `iot-custom-auth setup`")
        } else if self.healthy {
            writeln!(f, "healthy: {} checks passed", self.checks.len())
        } else {
            writeln!(
                f,
                "not healthy: {failed} of {} checks failed",
                self.checks.len()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{authorizer, role};

    fn healthy() -> (Desired, Observed) {
        let d = crate::resources::tests::desired();
        let o = Observed {
            role: Some(role::Observed {
                arn: d.role_arn(),
                trust_policy: role::trust_policy(),
                attached: vec![BASIC_EXECUTION_POLICY_ARN.into()],
                inline: vec![],
                owned: true,
            }),
            function: Some(function::Observed {
                arn: d.function_arn(),
                runtime: d.runtime.clone(),
                handler: "index.handler".into(),
                timeout: 5,
                memory_mb: 128,
                role: d.role_arn(),
                code_sha256: d.package.sha256.clone(),
                state: "Active".into(),
                last_update_status: "Successful".into(),
                owned: true,
                logging: log_group::Logging::from_config(
                    Some(&log_group::logging_config(&d.names)),
                    &d.names,
                ),
            }),
            authorizer: Some(authorizer::Observed {
                arn: d.authorizer_arn(),
                function_arn: d.function_arn(),
                active: true,
                signing_disabled: true,
                owned: true,
            }),
            permission: Some(permission::Observed {
                principal: Some(permission::PRINCIPAL.into()),
                action: Some(permission::ACTION.into()),
                source_arn: Some(d.authorizer_arn()),
                source_account: Some(d.account.clone()),
            }),
            default_authorizer: Some(d.names.authorizer.clone()),
            log_group: Some(log_group::Observed {
                arn: "arn:aws:logs:eu-west-1:111122223333:log-group:/aws/lambda/d-authorizer"
                    .into(),
                retention_days: Some(30),
                owned: true,
            }),
        };
        (d, o)
    }

    fn failing(d: &Desired, o: &Observed) -> Vec<&'static str> {
        checks(d, o)
            .into_iter()
            .filter(|c| c.state == State::Fail)
            .map(|c| c.id)
            .collect()
    }

    #[test]
    fn a_healthy_deployment_passes_every_check() {
        let (d, o) = healthy();
        assert!(failing(&d, &o).is_empty());
    }

    #[test]
    fn each_break_names_exactly_its_item() {
        type Break = fn(&mut Observed);
        let cases: Vec<(&str, Break)> = vec![
            ("permission.exists", |o| o.permission = None),
            ("permission.source_arn", |o| {
                o.permission.as_mut().unwrap().source_arn =
                    Some("arn:aws:iot:eu-west-1:111122223333:authorizer/x".into())
            }),
            ("authorizer.status", |o| {
                o.authorizer.as_mut().unwrap().active = false
            }),
            ("default_authorizer", |o| o.default_authorizer = None),
            ("default_authorizer", |o| {
                o.default_authorizer = Some("other".into())
            }),
            ("function.code", |o| {
                o.function.as_mut().unwrap().code_sha256 = "x".into()
            }),
            ("role.execution_policy", |o| {
                o.role.as_mut().unwrap().attached.clear()
            }),
            ("function.exists", |o| {
                o.function = None;
                o.permission = None;
            }),
            ("function.runtime", |o| {
                o.function.as_mut().unwrap().runtime = "nodejs20.x".into()
            }),
            ("authorizer.signing", |o| {
                o.authorizer.as_mut().unwrap().signing_disabled = false
            }),
            ("role.trust_policy", |o| {
                o.role.as_mut().unwrap().trust_policy = serde_json::json!({})
            }),
            ("function.logging", |o| {
                o.function.as_mut().unwrap().logging.format = "Text".into()
            }),
            ("log_group.exists", |o| o.log_group = None),
            ("log_group.retention", |o| {
                o.log_group.as_mut().unwrap().retention_days = Some(7)
            }),
            ("log_group.retention", |o| {
                o.log_group.as_mut().unwrap().retention_days = None
            }),
            ("log_group.owned", |o| {
                o.log_group.as_mut().unwrap().owned = false
            }),
        ];
        for (id, brk) in cases {
            let (d, mut o) = healthy();
            brk(&mut o);
            assert_eq!(failing(&d, &o), vec![id], "break for {id}");
        }
    }

    #[test]
    fn no_default_wanted_means_ours_must_not_be_default() {
        let (mut d, mut o) = healthy();
        d.default_authorizer = false;
        assert_eq!(failing(&d, &o), vec!["default_authorizer"]);
        o.default_authorizer = Some("someone-else".into());
        assert!(failing(&d, &o).is_empty());
    }
}

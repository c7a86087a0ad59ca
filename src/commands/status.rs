//! `status`: a read-only health check for CI. It reads everything concurrently, then compares
//! desired with observed in one pure function ([`checks`]: every resource's own checks, in the
//! order of [`resources::walk`]) that names each failing item and its fix.

use std::fmt;
use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iot::operation::test_invoke_authorizer::{
    TestInvokeAuthorizerError, TestInvokeAuthorizerOutput,
};
use aws_sdk_iot::primitives::Blob;
use aws_sdk_iot::types::{MqttContext, TlsContext};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use clap::Args;
use serde::Serialize;

use crate::app::App;
use crate::commands::connect::{self, ConnectOptions};
use crate::config::{Config, CredentialStore, Device};
use crate::error::{AwsResultExt, Failure, exit, is_access_denied};
use crate::resources::check::{Check, SETUP, State, check, fail, ok, skip};
use crate::resources::{self, Desired, Observed, endpoint};
use crate::tls::Target;
use crate::{policy, verifier};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Also log in as this device through TestInvokeAuthorizer: it must be allowed with the
    /// policy its client IDs and topics say (from the config, or the devices table), and a
    /// random password must be denied.
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

/// Pure: every check of a working deployment, from what should be and what is: each resource's
/// checks, in the order of the resource walk.
pub fn checks(desired: &Desired, observed: &Observed) -> Vec<Check> {
    resources::walk()
        .into_iter()
        .flat_map(|r| r.checks(desired, observed))
        .collect()
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
    // The probed device: from the config, or (DynamoDB store) its non-secret attributes from
    // the table, before anything else so that an unknown username stops here. None: the table
    // does not exist (yet), which the table checks report; the probe is skipped.
    let probe_device = match &args.probe_user {
        Some(user) => match config.deployment.credential_store {
            CredentialStore::Package => Some(
                config
                    .device(user)
                    .cloned()
                    .context("probe device vanished")?,
            ),
            CredentialStore::Dynamodb => {
                table_device(&clients.dynamodb, &names.table, user).await?
            }
        },
        None => None,
    };
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
    if args.probe_user.is_some() && probe_device.is_none() {
        checks.push(skip(
            "probe.allowed",
            "no devices table to read the device from",
        ));
    }
    if let (Some(device), Some(password)) = (&probe_device, probe_password) {
        let user = &device.username;
        if observed.authorizer.is_some() {
            checks.extend(probe(app, device, &desired, &password, &endpoint).await?);
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
                    device,
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
    // With the DynamoDB store the device is read from the table once credentials are at hand
    // ([`table_device`]).
    if config.deployment.credential_store == CredentialStore::Package
        && config.device(user).is_none()
    {
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

/// The attributes `status --probe-user` reads from the devices table, and the only ones
/// `iam-policy --for status` lets it read: everything but the verifiers (`verifier`, `previous`).
pub const PROBE_ATTRIBUTES: &[&str] =
    &["clientIds", "disabled", "publish", "subscribe", "username"];

/// The probed device from the table: one GetItem projecting only [`PROBE_ATTRIBUTES`] (its
/// verifier is left empty: the probe never needs it). None when the table does not exist.
async fn table_device(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    user: &str,
) -> Result<Option<Device>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let projection: Vec<String> = (0..PROBE_ATTRIBUTES.len())
        .map(|i| format!("#a{i}"))
        .collect();
    let mut request = client
        .get_item()
        .table_name(table)
        .key("username", AttributeValue::S(user.to_string()))
        .projection_expression(projection.join(", "));
    for (placeholder, name) in projection.iter().zip(PROBE_ATTRIBUTES) {
        request = request.expression_attribute_names(placeholder, *name);
    }
    let out = match request.send().await {
        Ok(out) => out,
        Err(e) if e.code() == Some("ResourceNotFoundException") => return Ok(None),
        Err(e) if is_access_denied(e.code()) => bail!(Failure::new(
            format!(
                "--probe-user: reading `{user}` from table {table} was refused: {}",
                e.message().unwrap_or("access denied")
            ),
            "grant the conditional dynamodb:GetItem of `iot-custom-auth iam-policy --for status`"
        )),
        Err(e) => return Err(e).aws("dynamodb:GetItem"),
    };
    let Some(item) = out.item() else {
        bail!(Failure::usage(
            format!("--probe-user: no device `{user}` in table {table}"),
            "`iot-custom-auth device list` shows the devices in the table"
        ));
    };
    let strings = |key: &str| -> Vec<String> {
        match item.get(key) {
            Some(AttributeValue::L(values)) => values
                .iter()
                .filter_map(|v| v.as_s().ok().cloned())
                .collect(),
            _ => vec![],
        }
    };
    Ok(Some(Device {
        username: user.to_string(),
        password_verifier: String::new(),
        client_ids: strings("clientIds"),
        publish: strings("publish"),
        subscribe: strings("subscribe"),
        previous_verifiers: vec![],
        disabled: matches!(item.get("disabled"), Some(AttributeValue::Bool(true))),
    }))
}

/// Logs in through TestInvokeAuthorizer as IoT would: the right password must give exactly the
/// policy the device's client IDs and topics say, a random one must be refused.
async fn probe(
    app: &App,
    device: &Device,
    desired: &Desired,
    password: &str,
    server_name: &str,
) -> Result<Vec<Check>> {
    let user = device.username.as_str();
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
    let (good, bad) = tokio::join!(
        invoke(password.as_bytes().to_vec()),
        invoke(verifier::generate().into_bytes()),
    );
    // An error is a finding about the deployment (a denied permission, an Inactive function, an
    // invalid authorizer response), reported as that check failing, with AWS's message and the fix.
    let expected: Vec<serde_json::Value> =
        policy::documents(&desired.iot_arn_prefix(), &client_id, device)?
            .iter()
            .map(|d| serde_json::to_value(d).expect("documents serialize"))
            .collect();
    let allowed = match good {
        Err(e) => probe_error("probe.allowed", e),
        Ok(good) if device.disabled => check(
            "probe.allowed",
            !good.is_authenticated().unwrap_or(false),
            format!("`{user}` is disabled and was refused"),
            format!("`{user}` is disabled but was allowed"),
            "check the authorizer code (with --code) or run `setup`",
        ),
        Ok(good) => allowed_check(app, user, &client_id, &expected, &good),
    };
    let denied = match bad {
        Err(e) => probe_error("probe.denied", e),
        Ok(bad) => check(
            "probe.denied",
            !bad.is_authenticated().unwrap_or(false),
            "a random password is refused",
            "a random password was accepted: the authorizer lets anyone in",
            "check the authorizer code (with --code) or run `setup`",
        ),
    };
    Ok(vec![allowed, denied])
}

/// `probe.allowed` from TestInvokeAuthorizer's answer for the right password.
fn allowed_check(
    app: &App,
    user: &str,
    client_id: &str,
    expected: &[serde_json::Value],
    good: &TestInvokeAuthorizerOutput,
) -> Check {
    let got: Vec<serde_json::Value> = good
        .policy_documents()
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    if !good.is_authenticated().unwrap_or(false) {
        fail(
            "probe.allowed",
            format!("`{user}` with its password was refused"),
            crate::commands::logs::with_hint(
                app,
                Some("check the password, or run `setup` if the device was added since".into()),
                user,
                Some(client_id),
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
    }
}

/// A TestInvokeAuthorizer error as a failing probe check: what AWS said, and the fix.
fn probe_error(id: &'static str, err: SdkError<TestInvokeAuthorizerError, HttpResponse>) -> Check {
    let service = err.as_service_error();
    let code = service.and_then(ProvideErrorMetadata::code);
    let fix = if is_access_denied(code) {
        "grant `iot:TestInvokeAuthorizer` on the authorizer (`iot-custom-auth iam-policy --for status`)"
    } else if service.is_some_and(|e| e.is_invalid_response_exception()) {
        "the authorizer's response is not what IoT accepts: check its code (with --code) or run `setup`"
    } else {
        "run `iot-custom-auth setup` (it reactivates an Inactive function and repairs the permission), then check again"
    };
    let detail = format!(
        "TestInvokeAuthorizer failed: {:#}",
        Err::<(), _>(err)
            .aws("iot:TestInvokeAuthorizer")
            .unwrap_err()
    );
    fail(id, detail, fix)
}

/// Connects and publishes as the device would: the end-to-end proof TestInvokeAuthorizer cannot
/// give (it skips TLS, ALPN, SNI, the username format and the broker's policy checks).
async fn connect_check(
    app: &App,
    device: &Device,
    desired: &Desired,
    user: &str,
    password: String,
    target: Target,
    ca_files: Vec<PathBuf>,
) -> Check {
    let device = Some(device);
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
    use crate::resources::{authorizer, function, log_group, permission, role};

    fn healthy() -> (Desired, Observed) {
        let d = crate::resources::tests::desired();
        let o = Observed {
            role: Some(role::Observed {
                arn: d.role_arn(),
                trust_policy: role::trust_policy(),
                attached: vec![d.basic_execution_policy_arn()],
                inline: vec![],
                devices_policy: None,
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
                state_reason_code: String::new(),
                state_reason: String::new(),
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
            table: None,
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

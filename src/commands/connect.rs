//! `connect`: log in and publish the way a device does (MQTT over TLS on port 443, ALPN `mqtt`,
//! SNI = the endpoint's host name, username and password), because `TestInvokeAuthorizer` passing
//! proves none of that path. It replaces the manual recipe's Paho script.

use std::fmt;
use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::app::App;
use crate::error::{Failure, exit};
use crate::mqtt::{self, Connection, Login, Meaning, Refusal, Stop, Version};
use crate::resources::endpoint;
use crate::tls::{self, Handshake, Target};

/// Where the password comes from when `--password-stdin` is not given.
pub const PASSWORD_ENV: &str = "IOT_CUSTOM_AUTH_PASSWORD";

#[derive(Debug, Args)]
#[command(after_help = "\
The password is read from stdin (--password-stdin), else from IOT_CUSTOM_AUTH_PASSWORD, else \
prompted for on a terminal; never from the command line.

Exit codes:
  0  the broker did what was expected: every message acknowledged
     (with --expect-deny: the connection or a publish was refused)
  3  the check ran and the deployment failed it: refused, disconnected, or no PUBACK
     (with --expect-deny: everything got through)
  1  the check could not run: DNS, nothing listening, TLS trust or ALPN, not an MQTT broker
  2  usage error

Examples:
  iot-custom-auth connect --username sensor-1 --count 3
  iot-custom-auth connect --username sensor-1 --mqtt-version 5
  echo \"$WRONG\" | iot-custom-auth connect --username sensor-1 --password-stdin --expect-deny
  iot-custom-auth connect --username sensor-1 --topic other/topic --expect-deny")]
pub struct ConnectArgs {
    /// The device's username (without any `?x-amz-customauthorizer-name=` query).
    #[arg(long, value_name = "USER")]
    pub username: String,

    /// Read the password from stdin (trailing newline removed).
    #[arg(long)]
    pub password_stdin: bool,

    /// MQTT client ID [default: the username].
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,

    /// Topic to publish to [default: telemetry/<client ID>].
    #[arg(long, value_name = "TOPIC")]
    pub topic: Option<String>,

    /// Payload of every message [default: a small JSON document with a sequence number].
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,

    /// Number of messages to publish (QoS 1, each must be acknowledged).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub count: u32,

    /// Pause between messages.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = seconds)]
    pub interval: Duration,

    /// Broker to connect to [default: the account's iot:Data-ATS endpoint, port 443].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub host: Option<String>,

    /// Also trust the CA certificate(s) in this PEM file (a local broker); repeatable.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Vec<PathBuf>,

    /// Ask for this authorizer by name (appends `?x-amz-customauthorizer-name=NAME` to the
    /// username); without it AWS IoT uses the account's default authorizer.
    #[arg(long, value_name = "NAME")]
    pub authorizer: Option<String>,

    /// Pass when the broker refuses the connection or a publish (checks that wrong passwords,
    /// client IDs or topics get nothing through).
    #[arg(long)]
    pub expect_deny: bool,

    /// Longest wait for the connection (TCP, TLS, CONNACK) and for each PUBACK.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = seconds)]
    pub timeout: Duration,

    /// The MQTT version to log in with. AWS IoT Core speaks both; 3.1.1 is what most devices
    /// and every MQTT library speak. Under 5 a refusal carries a reason code and may carry
    /// the broker's reason string, both shown.
    #[arg(long, value_name = "VERSION", value_enum, default_value_t = Version::V311)]
    pub mqtt_version: Version,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err("must be between 0 and 3600 seconds".to_string());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What to check; `ConnectOptions::new` fills in the defaults the command line uses. No `Debug`:
/// it holds the password.
#[derive(Clone)]
pub struct ConnectOptions {
    pub username: String,
    pub password: String,
    /// `None`: the username.
    pub client_id: Option<String>,
    /// `None`: `telemetry/<client ID>`.
    pub topic: Option<String>,
    /// `None`: a small JSON document with a sequence number.
    pub message: Option<String>,
    pub count: u32,
    pub interval: Duration,
    /// `None`: look up the account's iot:Data-ATS endpoint (DescribeEndpoint), port 443.
    pub target: Option<Target>,
    pub ca_files: Vec<PathBuf>,
    pub authorizer: Option<String>,
    pub expect_deny: bool,
    pub timeout: Duration,
    pub version: Version,
}

impl ConnectOptions {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
            client_id: None,
            topic: None,
            message: None,
            count: 1,
            interval: Duration::from_secs(1),
            target: None,
            ca_files: Vec::new(),
            authorizer: None,
            expect_deny: false,
            timeout: Duration::from_secs(10),
            version: Version::V311,
        }
    }

    fn client_id(&self) -> &str {
        self.client_id.as_deref().unwrap_or(&self.username)
    }

    fn topic(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("telemetry/{}", self.client_id()))
    }

    fn payload(&self, seq: u32) -> Vec<u8> {
        match &self.message {
            Some(text) => text.clone().into_bytes(),
            None => serde_json::json!({ "seq": seq, "sent_by": "iot-custom-auth connect" })
                .to_string()
                .into_bytes(),
        }
    }

    fn validate(&self) -> Result<(), Failure> {
        let topic = self.topic();
        let problem = if self.username.is_empty() {
            "--username is empty".to_string()
        } else if self.client_id().is_empty() {
            "--client-id is empty".to_string()
        } else if topic.is_empty() || !rumqttc::valid_topic(&topic) {
            format!("--topic `{topic}`: a publish topic must not be empty or contain + or #")
        } else if self
            .message
            .as_ref()
            .is_some_and(|m| m.len() > mqtt::MAX_PAYLOAD)
        {
            format!(
                "--message is longer than AWS IoT's {} bytes",
                mqtt::MAX_PAYLOAD
            )
        } else if self.timeout.is_zero() {
            "--timeout must be more than 0 seconds".to_string()
        } else {
            return Ok(());
        };
        Err(Failure::usage(
            problem,
            "see `iot-custom-auth connect --help`",
        ))
    }
}

/// How the broker treated the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Connected, and every message was acknowledged.
    Accepted,
    /// The login was refused (CONNACK refusal, or closed before CONNACK).
    ConnectRefused,
    /// Connected, then disconnected after a publish: the policy does not allow the topic.
    PublishRefused,
    /// Neither accepted nor refused: the broker failed, went silent or hung up between messages.
    Failed,
}

impl Outcome {
    fn refused(self) -> bool {
        matches!(self, Self::ConnectRefused | Self::PublishRefused)
    }
}

/// The result of a check. JSON fields (`--output json`):
/// - `passed`: the outcome is the expected one (`accepted`, or a refusal with `expect_deny`).
/// - `outcome`: `accepted`, `connect_refused`, `publish_refused` or `failed`.
/// - `expect_deny`: whether a refusal was the expected outcome.
/// - `reason`: why it was not accepted, in plain words (absent when accepted).
/// - `remedy`: what to do about it (absent when there is nothing to do).
/// - `mqtt_version`: "3.1.1" or "5".
/// - `reason_code`: the code the broker refused with (CONNACK return code under 3.1.1; CONNACK,
///   PUBACK or DISCONNECT reason code under 5), absent when it sent none; `reason_string`: the
///   text an MQTT 5 broker added to it, absent when none.
/// - `host`, `port`: the broker; `tls_version`: e.g. "TLS 1.3"; `alpn`: the protocol the server
///   selected (`mqtt` on AWS IoT), null when it ignored ALPN.
/// - `username`: exactly as sent (authorizer query included); `client_id`; `topic`.
/// - `count`: messages to publish; `acknowledged`: messages the broker acknowledged (PUBACK).
/// - `connack_ms`, `first_puback_ms`: milliseconds from the start of the TCP connection to the
///   CONNACK and to the first PUBACK (null when not reached); `elapsed_ms`: to the end of the
///   check. The endpoint lookup (DescribeEndpoint) comes before and is not counted.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectSummary {
    pub passed: bool,
    pub outcome: Outcome,
    pub expect_deny: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
    pub mqtt_version: Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_string: Option<String>,
    pub host: String,
    pub port: u16,
    pub tls_version: String,
    pub alpn: Option<String>,
    pub username: String,
    pub client_id: String,
    pub topic: String,
    pub count: u32,
    pub acknowledged: u32,
    pub connack_ms: Option<u64>,
    pub first_puback_ms: Option<u64>,
    pub elapsed_ms: u64,
}

impl ConnectSummary {
    /// Before the MQTT session: nothing acknowledged yet.
    fn new(
        options: &ConnectOptions,
        target: &Target,
        handshake: &Handshake,
        login: &Login,
    ) -> Self {
        Self {
            passed: false,
            outcome: Outcome::Accepted,
            expect_deny: options.expect_deny,
            reason: None,
            remedy: None,
            mqtt_version: options.version,
            reason_code: None,
            reason_string: None,
            host: target.host.clone(),
            port: target.port,
            tls_version: handshake.version.clone(),
            alpn: handshake.alpn.clone(),
            username: login.username.clone(),
            client_id: login.client_id.clone(),
            topic: options.topic(),
            count: options.count,
            acknowledged: 0,
            connack_ms: None,
            first_puback_ms: None,
            elapsed_ms: 0,
        }
    }

    /// Compares the outcome with the expected one.
    fn finish(&mut self, elapsed_ms: u64) {
        self.elapsed_ms = elapsed_ms;
        self.passed = if self.expect_deny {
            self.outcome.refused()
        } else {
            self.outcome == Outcome::Accepted
        };
        if self.expect_deny && self.outcome == Outcome::Accepted {
            self.remedy = Some(
                "the deployment let this login and topic through: check the device's password, \
                 client IDs and topics in the config, then run `iot-custom-auth setup`"
                    .to_string(),
            );
        }
    }

    fn headline(&self) -> String {
        let acked = format!("{} of {}", self.acknowledged, self.count);
        let reason = self.reason.as_deref().unwrap_or_default();
        match (self.outcome, self.expect_deny) {
            (Outcome::Accepted, false) => format!("connected and {acked} messages acknowledged"),
            (Outcome::Accepted, true) => format!(
                "expected a refusal (--expect-deny), but connected and {acked} messages were \
                 acknowledged"
            ),
            (outcome, true) if outcome.refused() => {
                format!("refused as expected (--expect-deny): {reason}")
            }
            (Outcome::ConnectRefused, _) => format!("connection refused: {reason}"),
            (Outcome::PublishRefused, _) => format!("publish refused: {reason}"),
            (Outcome::Failed, _) => reason.to_string(),
        }
    }
}

impl fmt::Display for ConnectSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed { "ok" } else { "failed" };
        writeln!(f, "{verdict}: {}", self.headline())?;
        let alpn = self.alpn.as_deref().unwrap_or("none selected");
        writeln!(
            f,
            "  broker     {}:{} ({}, ALPN {alpn}, {})",
            self.host, self.port, self.tls_version, self.mqtt_version
        )?;
        writeln!(f, "  username   {}", self.username)?;
        writeln!(f, "  client ID  {}", self.client_id)?;
        writeln!(f, "  topic      {}", self.topic)?;
        writeln!(
            f,
            "  messages   {} of {} acknowledged",
            self.acknowledged, self.count
        )?;
        if let (Some(connack), Some(puback)) = (self.connack_ms, self.first_puback_ms) {
            writeln!(
                f,
                "  timing     CONNACK after {connack} ms, first PUBACK after {puback} ms"
            )?;
        }
        if let Some(remedy) = &self.remedy {
            writeln!(f, "hint: {remedy}")?;
        }
        Ok(())
    }
}

pub async fn run(app: &App, args: ConnectArgs) -> Result<u8> {
    let password = read_password(args.password_stdin, &args.username)?;
    let target = args.host.as_deref().map(Target::parse).transpose()?;
    let options = ConnectOptions {
        client_id: args.client_id,
        topic: args.topic,
        message: args.message,
        count: args.count,
        interval: args.interval,
        target,
        ca_files: args.ca_file,
        authorizer: args.authorizer,
        expect_deny: args.expect_deny,
        timeout: args.timeout,
        version: args.mqtt_version,
        ..ConnectOptions::new(args.username, password)
    };
    let summary = check(app, &options).await?;
    app.print(&summary);
    Ok(if summary.passed {
        exit::OK
    } else {
        exit::UNHEALTHY
    })
}

/// The password from stdin when asked, else `IOT_CUSTOM_AUTH_PASSWORD`, else a hidden prompt on
/// a terminal. Never from argv: other users can read a process's arguments.
pub fn read_password(from_stdin: bool, user: &str) -> Result<String> {
    if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from stdin")?;
        return non_empty(text.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return non_empty(password);
    }
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password(format!("Password for {user}: "))
            .context("reading the password from the terminal")?;
        return non_empty(password);
    }
    Err(Failure::usage(
        "no password given",
        format!("pipe it with --password-stdin or set {PASSWORD_ENV}"),
    )
    .into())
}

fn non_empty(password: String) -> Result<String> {
    if password.is_empty() {
        return Err(Failure::usage(
            "the password is empty",
            format!("pass it with --password-stdin or {PASSWORD_ENV}"),
        )
        .into());
    }
    Ok(password)
}

/// Logs in and publishes like a device, reporting each step on stderr. `Err` means the check
/// could not run (bad options, AWS lookup, DNS, TCP, TLS, not MQTT); a refusal or a broker
/// failure is an `Ok` summary whose `passed` says whether it was the expected outcome.
pub async fn check(app: &App, options: &ConnectOptions) -> Result<ConnectSummary> {
    options.validate()?;
    let target = match &options.target {
        Some(target) => target.clone(),
        None => {
            app.progress("Looking up the IoT data endpoint (DescribeEndpoint iot:Data-ATS)");
            Target::aws(endpoint::read(&app.clients().await?.iot).await?)
        }
    };
    let tls = tls::client_config(&options.ca_files)?;
    let start = Instant::now();

    let handshake = tokio::time::timeout(options.timeout, tls::handshake(&target, tls.clone()))
        .await
        .map_err(|_| handshake_timeout(&target, options.timeout))??;
    app.progress(tls_line(&target, &handshake, start));

    let login = Login {
        client_id: options.client_id().to_string(),
        username: endpoint::username(&options.username, options.authorizer.as_deref()),
        password: options.password.clone(),
    };
    let mut summary = ConnectSummary::new(options, &target, &handshake, &login);
    if let Err((stage, stop)) =
        session(app, options, &target, &login, tls, &mut summary, start).await
    {
        let at_login = matches!(stage, Stage::Connect);
        if let Stop::Refused(r) | Stop::PublishRefused(r) | Stop::Closed(Some(r)) = &stop {
            summary.reason_code = Some(r.code);
            summary.reason_string = r.reason_string.clone();
        }
        let verdict = judge(stage, stop, &summary, &handshake, options.timeout)?;
        summary.outcome = verdict.outcome;
        summary.reason = Some(verdict.reason);
        summary.remedy = verdict.remedy;
        if at_login {
            summary.remedy = Some(crate::commands::logs::with_hint(
                app,
                summary.remedy.take(),
                &options.username,
                Some(options.client_id()),
            ));
        }
    }
    summary.finish(millis(start));
    Ok(summary)
}

/// Where in the session a [`Stop`] happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connect,
    Publish,
    /// Between two messages.
    Pause,
}

/// CONNECT, then `count` publishes each waiting for its PUBACK, then DISCONNECT.
async fn session(
    app: &App,
    options: &ConnectOptions,
    target: &Target,
    login: &Login,
    tls: std::sync::Arc<rustls::ClientConfig>,
    summary: &mut ConnectSummary,
    start: Instant,
) -> Result<(), (Stage, Stop)> {
    app.progress(format!(
        "{} CONNECT as `{}`, client ID `{}`",
        options.version, login.username, login.client_id
    ));
    let mut connection = Connection::open(options.version, target, login, tls, options.timeout)
        .await
        .map_err(|stop| (Stage::Connect, stop))?;
    summary.connack_ms = Some(millis(start));
    app.progress(format!("CONNACK: accepted ({} ms)", millis(start)));

    for seq in 1..=options.count {
        if seq > 1 {
            connection
                .idle(options.interval)
                .await
                .map_err(|stop| (Stage::Pause, stop))?;
        }
        let sent = Instant::now();
        connection
            .publish(&summary.topic, options.payload(seq))
            .await
            .map_err(|stop| (Stage::Publish, stop))?;
        summary.acknowledged = seq;
        summary.first_puback_ms.get_or_insert_with(|| millis(start));
        app.progress(format!(
            "PUBACK {seq}/{} for `{}` ({} ms)",
            options.count,
            summary.topic,
            millis(sent)
        ));
    }
    connection.close().await;
    app.progress("DISCONNECT");
    Ok(())
}

fn tls_line(target: &Target, handshake: &Handshake, start: Instant) -> String {
    let alpn = match handshake.alpn.as_deref() {
        Some(endpoint::ALPN) => format!("ALPN `{}` selected", endpoint::ALPN),
        Some(other) => format!("ALPN `{other}` selected"),
        None => {
            "the server ignored ALPN (AWS IoT selects `mqtt`; plain brokers may not)".to_string()
        }
    };
    format!(
        "TLS: {} with {target}, SNI `{}`, certificate trusted, {alpn} ({} ms)",
        handshake.version,
        target.host,
        millis(start)
    )
}

fn handshake_timeout(target: &Target, timeout: Duration) -> anyhow::Error {
    Failure::new(
        format!(
            "no TLS connection to {target} within {} s",
            timeout.as_secs_f64()
        ),
        format!(
            "check the host and port; a firewall may drop outbound TCP {}",
            target.port
        ),
    )
    .into()
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What a [`Stop`] means for the deployment.
#[derive(Debug)]
struct Verdict {
    outcome: Outcome,
    reason: String,
    remedy: Option<String>,
}

/// Turns how the session stopped into plain words. Network, TLS and protocol failures are errors:
/// they say nothing about the deployment.
fn judge(
    stage: Stage,
    stop: Stop,
    summary: &ConnectSummary,
    handshake: &Handshake,
    timeout: Duration,
) -> Result<Verdict> {
    let verdict = |outcome, reason: String, remedy: &str| Verdict {
        outcome,
        reason,
        remedy: Some(remedy.to_string()),
    };
    let login_remedy = "check the password, that the device's client IDs include this client ID, \
                        and the authorizer Lambda's CloudWatch logs";
    let secs = timeout.as_secs_f64();
    let next = summary.acknowledged + 1;
    Ok(match (stage, stop) {
        (_, Stop::Unreachable(failure)) => return Err(failure.into()),
        (_, Stop::NotMqtt(detail)) => return Err(not_mqtt(summary, handshake, &detail).into()),
        (Stage::Connect, Stop::Refused(refused)) => refusal(&refused, summary, login_remedy),
        (Stage::Connect, Stop::Closed(None)) => verdict(
            Outcome::ConnectRefused,
            "the broker closed the connection without answering the login: AWS IoT does this \
             when the authorizer denies it, returns a policy without iot:Connect for this \
             client ID, or fails"
                .to_string(),
            login_remedy,
        ),
        (Stage::Connect, Stop::Closed(Some(said))) => verdict(
            Outcome::ConnectRefused,
            format!("the broker disconnected instead of answering the login (DISCONNECT {said})"),
            login_remedy,
        ),
        (Stage::Connect, _) => verdict(
            Outcome::Failed,
            format!("no answer to the login (CONNACK) within {secs} s"),
            "check the authorizer Lambda's CloudWatch logs (it must answer within 5 s), or raise \
             --timeout",
        ),
        (Stage::Publish, Stop::Closed(said)) => verdict(
            Outcome::PublishRefused,
            format!(
                "disconnected after publishing message {next} to `{}`{}: the policy does not \
                 allow this client to publish to that topic",
                summary.topic,
                said.map(|r| format!(" (DISCONNECT {r})"))
                    .unwrap_or_default()
            ),
            publish_remedy(),
        ),
        (Stage::Publish, Stop::PublishRefused(refused)) => verdict(
            Outcome::PublishRefused,
            format!(
                "message {next} to `{}` was refused (PUBACK {refused}){}",
                summary.topic,
                if refused.meaning == Meaning::NotAuthorized {
                    ": the policy does not allow this client to publish to that topic"
                } else {
                    ""
                }
            ),
            publish_remedy(),
        ),
        (Stage::Publish, _) => verdict(
            Outcome::Failed,
            format!("message {next} was not acknowledged (PUBACK) within {secs} s"),
            "check the broker, or raise --timeout",
        ),
        (Stage::Pause, Stop::Closed(said)) => verdict(
            Outcome::Failed,
            format!(
                "the broker closed the connection between messages, after {} acknowledged{}: \
                 another client connected with the same client ID, or the authorizer's \
                 disconnectAfterInSeconds elapsed",
                summary.acknowledged,
                said.map(|r| format!(" (DISCONNECT {r})"))
                    .unwrap_or_default()
            ),
            "use a client ID no other client is using, and check disconnectAfterInSeconds",
        ),
        (Stage::Pause, _) => verdict(
            Outcome::Failed,
            format!(
                "the broker stopped answering between messages, after {} acknowledged",
                summary.acknowledged
            ),
            "check the broker and the network",
        ),
    })
}

fn publish_remedy() -> &'static str {
    "allow the topic in the device's topics (the authorizer's policy), or publish to a topic it \
     allows with --topic"
}

/// A refused CONNACK in plain words, with the code (and MQTT 5 reason string) as sent.
fn refusal(refused: &Refusal, summary: &ConnectSummary, login_remedy: &str) -> Verdict {
    let client_id = &summary.client_id;
    let (outcome, plain, remedy) = match refused.meaning {
        Meaning::NotAuthorized => (
            Outcome::ConnectRefused,
            "not authorized: the authorizer denied this username, password or client ID"
                .to_string(),
            login_remedy.to_string(),
        ),
        Meaning::BadCredentials => (
            Outcome::ConnectRefused,
            "bad username or password: the broker rejected these credentials".to_string(),
            login_remedy.to_string(),
        ),
        Meaning::BadClientId => (
            Outcome::ConnectRefused,
            format!("client ID `{client_id}` rejected by the broker"),
            "use one of the device's client IDs with --client-id".to_string(),
        ),
        Meaning::Unavailable => (
            Outcome::Failed,
            "server unavailable: the broker could not check the login (on AWS IoT: the \
             authorizer Lambda failed, timed out, or IoT may not invoke it)"
                .to_string(),
            "run `iot-custom-auth status` and check the authorizer's CloudWatch logs".to_string(),
        ),
        Meaning::Version => (
            Outcome::Failed,
            format!("the broker does not accept {}", summary.mqtt_version),
            match summary.mqtt_version {
                Version::V5 => "try --mqtt-version 3.1.1".to_string(),
                Version::V311 => "try --mqtt-version 5".to_string(),
            },
        ),
        Meaning::Other => (
            Outcome::Failed,
            "the broker refused the connection".to_string(),
            "check the broker's logs".to_string(),
        ),
    };
    Verdict {
        outcome,
        reason: format!("{plain} (CONNACK {refused})"),
        remedy: Some(remedy),
    }
}

fn not_mqtt(summary: &ConnectSummary, handshake: &Handshake, detail: &str) -> Failure {
    let remedy = if handshake.alpn.as_deref() == Some(endpoint::ALPN) {
        "check --host and the port".to_string()
    } else {
        format!(
            "the server did not select ALPN `{}`, so it is probably not an MQTT broker; AWS IoT \
             custom authentication needs the iot:Data-ATS endpoint on port 443",
            endpoint::ALPN
        )
    };
    Failure::new(
        format!(
            "{}:{} did not answer like an MQTT broker: {detail}",
            summary.host, summary.port
        ),
        remedy,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> ConnectSummary {
        ConnectSummary {
            passed: false,
            outcome: Outcome::Accepted,
            expect_deny: false,
            reason: None,
            remedy: None,
            mqtt_version: Version::V311,
            reason_code: None,
            reason_string: None,
            host: "h".into(),
            port: 443,
            tls_version: "TLS 1.3".into(),
            alpn: Some("mqtt".into()),
            username: "s1".into(),
            client_id: "s1".into(),
            topic: "telemetry/s1".into(),
            count: 3,
            acknowledged: 1,
            connack_ms: Some(5),
            first_puback_ms: Some(7),
            elapsed_ms: 9,
        }
    }

    fn handshake(alpn: Option<&str>) -> Handshake {
        Handshake {
            version: "TLS 1.3".into(),
            alpn: alpn.map(str::to_string),
        }
    }

    fn judged(stage: Stage, stop: Stop) -> Verdict {
        judge(
            stage,
            stop,
            &summary(),
            &handshake(Some("mqtt")),
            Duration::from_secs(10),
        )
        .unwrap()
    }

    #[test]
    fn defaults_follow_the_username() {
        let options = ConnectOptions::new("s1", "pw");
        assert_eq!(options.client_id(), "s1");
        assert_eq!(options.topic(), "telemetry/s1");
        let options = ConnectOptions {
            client_id: Some("s1-a".into()),
            ..options
        };
        assert_eq!(options.topic(), "telemetry/s1-a");
        assert!(options.validate().is_ok());
    }

    #[test]
    fn rejects_bad_options() {
        let bad = [
            ConnectOptions::new("", "pw"),
            ConnectOptions {
                topic: Some("telemetry/#".into()),
                ..ConnectOptions::new("s1", "pw")
            },
            ConnectOptions {
                message: Some("x".repeat(mqtt::MAX_PAYLOAD + 1)),
                ..ConnectOptions::new("s1", "pw")
            },
        ];
        for options in bad {
            assert!(options.validate().unwrap_err().usage);
        }
    }

    #[test]
    fn parses_seconds() {
        assert_eq!(seconds("1.5"), Ok(Duration::from_millis(1500)));
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").is_err());
    }

    #[test]
    fn refusals_in_plain_words() {
        let v = judged(
            Stage::Connect,
            Stop::Refused(v311(rumqttc::ConnectReturnCode::NotAuthorized)),
        );
        assert_eq!(v.outcome, Outcome::ConnectRefused);
        assert!(
            v.reason
                .starts_with("not authorized: the authorizer denied")
        );
        let v = judged(Stage::Connect, Stop::Closed(None));
        assert_eq!(v.outcome, Outcome::ConnectRefused);
        let v = judged(Stage::Publish, Stop::Closed(None));
        assert_eq!(v.outcome, Outcome::PublishRefused);
        assert!(
            v.reason.contains("message 2 to `telemetry/s1`"),
            "{}",
            v.reason
        );
        let v = judged(
            Stage::Connect,
            Stop::Refused(v311(rumqttc::ConnectReturnCode::ServiceUnavailable)),
        );
        assert_eq!(v.outcome, Outcome::Failed);
        assert_eq!(
            judged(Stage::Publish, Stop::TimedOut).outcome,
            Outcome::Failed
        );
        assert_eq!(
            judged(Stage::Pause, Stop::Closed(None)).outcome,
            Outcome::Failed
        );
    }

    fn v311(code: rumqttc::ConnectReturnCode) -> Refusal {
        Refusal::v311(code)
    }

    fn v5(code: u8, name: &'static str, meaning: Meaning, reason: Option<&str>) -> Refusal {
        Refusal {
            version: Version::V5,
            code,
            name,
            meaning,
            reason_string: reason.map(str::to_string),
        }
    }

    #[test]
    fn mqtt5_refusals_show_the_reason_code_and_string() {
        let refused = v5(
            0x86,
            "Bad User Name or Password",
            Meaning::BadCredentials,
            Some("wrong password"),
        );
        let v = judged(Stage::Connect, Stop::Refused(refused));
        assert_eq!(v.outcome, Outcome::ConnectRefused);
        assert_eq!(
            v.reason,
            "bad username or password: the broker rejected these credentials (CONNACK reason \
             code 0x86 (Bad User Name or Password), reason string \"wrong password\")"
        );
        let refused = v5(0x87, "Not authorized", Meaning::NotAuthorized, None);
        let v = judged(Stage::Publish, Stop::PublishRefused(refused));
        assert_eq!(v.outcome, Outcome::PublishRefused);
        assert_eq!(
            v.reason,
            "message 2 to `telemetry/s1` was refused (PUBACK reason code 0x87 (Not authorized)): \
             the policy does not allow this client to publish to that topic"
        );
        let taken = v5(0x8E, "Session taken over", Meaning::Other, None);
        let v = judged(Stage::Pause, Stop::Closed(Some(taken)));
        assert!(
            v.reason
                .contains("(DISCONNECT reason code 0x8E (Session taken over))"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn a_broker_without_mqtt5_is_named_with_the_fix() {
        let mut s = summary();
        s.mqtt_version = Version::V5;
        let v = judge(
            Stage::Connect,
            Stop::Refused(v311(rumqttc::ConnectReturnCode::RefusedProtocolVersion)),
            &s,
            &handshake(Some("mqtt")),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(v.outcome, Outcome::Failed);
        assert_eq!(
            v.reason,
            "the broker does not accept MQTT 5 (CONNACK return code 1 (Unacceptable protocol \
             version))"
        );
        assert_eq!(v.remedy.as_deref(), Some("try --mqtt-version 3.1.1"));
    }

    #[test]
    fn garbage_is_an_error_that_mentions_alpn() {
        let err = judge(
            Stage::Connect,
            Stop::NotMqtt("HTTP".into()),
            &summary(),
            &handshake(None),
            Duration::from_secs(10),
        )
        .unwrap_err();
        let failure = err.downcast_ref::<Failure>().unwrap();
        assert!(
            failure
                .remedy
                .as_deref()
                .unwrap()
                .contains("did not select ALPN")
        );
    }

    #[test]
    fn headline_reads_the_verdict() {
        let mut s = summary();
        s.outcome = Outcome::ConnectRefused;
        s.reason = Some("not authorized: x".into());
        assert_eq!(s.headline(), "connection refused: not authorized: x");
        s.expect_deny = true;
        assert_eq!(
            s.headline(),
            "refused as expected (--expect-deny): not authorized: x"
        );
        s.outcome = Outcome::Accepted;
        assert!(s.headline().starts_with("expected a refusal"));
    }
}

//! `demo`: the whole flow on this machine, no AWS account needed. In a throwaway directory it
//! declares devices with generated passwords, starts the `local` gateway (the bundled authorizer
//! under `node`, IoT's policy checks) on a free loopback port in this process, and runs the seed's
//! connection test through it with the tool's own client: each step says what was sent, what the
//! client saw, and what the gateway and the authorizer decided and why (read from their log
//! lines). Nothing of the user's is read or written: the config, certificates and unpacked
//! authorizer live in the throwaway directory (and the system temp dir, cleaned up on exit).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, timeout_at};

use crate::app::App;
use crate::cli::{GlobalArgs, OutputFormat};
use crate::commands::connect::{self, ConnectOptions, Outcome};
use crate::commands::device::{self, AddArgs};
use crate::error::exit;
use crate::local::{self, LocalArgs};
use crate::tls::{self, Target};
use crate::verifier;

/// The device that publishes, and the one that watches its telemetry.
const SENSOR: &str = "sensor1";
const MONITOR: &str = "monitor1";
const MONITOR_FILTER: &str = "telemetry/#";
/// Bounds every wait of a step: the gateway answers a loopback client in milliseconds.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the gateway may take to log a connection's end after the client saw it.
const LOG_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the throwaway directory and the gateway running afterwards (until Ctrl-C), and print
    /// how to connect to it with mosquitto_pub and paho-mqtt.
    #[arg(long)]
    pub keep: bool,
    /// Run your own authorizer (a directory or .zip) instead of the bundled one, to see whether
    /// it holds the same expectations.
    #[arg(long, value_name = "DIR|ZIP")]
    pub code: Option<PathBuf>,
    /// The Node.js binary that runs the authorizer.
    #[arg(
        long,
        value_name = "PATH",
        env = "IOT_CUSTOM_AUTH_NODE",
        default_value = "node"
    )]
    pub node: PathBuf,
}

/// What the authorizer said about a login, from its `{"msg":"login",...}` log line.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizerDecision {
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One expectation of the connection test and how it went. JSON fields (`--output json`):
/// - `name`: stable id (`allowed_publish`, `wrong_password`, `other_client_id`,
///   `topic_outside_policy`, `subscriber_receives`); `expected`: in words;
/// - `sent`: what the client sent; `client`: what it saw;
/// - `authorizer`: `{result, reason}` from the authorizer's log lines (absent if it logged none);
/// - `gateway`: the gateway's decision lines; `log`: the authorizer's other log lines;
/// - `passed`: the expectation held.
#[derive(Debug, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub expected: &'static str,
    pub sent: String,
    pub client: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorizer: Option<AuthorizerDecision>,
    pub gateway: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<String>,
    pub passed: bool,
    #[serde(skip)]
    number: usize,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "[{}/{STEPS}] {}: {}",
            self.number,
            title(self.name),
            self.sent
        )?;
        writeln!(f, "      client      {}", self.client)?;
        match &self.authorizer {
            Some(AuthorizerDecision {
                result,
                reason: Some(reason),
            }) => writeln!(f, "      authorizer  {result}: {reason}")?,
            Some(AuthorizerDecision { result, .. }) => writeln!(f, "      authorizer  {result}")?,
            None if self.log.is_empty() => writeln!(f, "      authorizer  (logged nothing)")?,
            None => {
                for line in &self.log {
                    writeln!(f, "      authorizer  {line}")?;
                }
            }
        }
        for line in &self.gateway {
            writeln!(f, "      gateway     {line}")?;
        }
        let verdict = if self.passed { "ok" } else { "FAILED" };
        writeln!(f, "      {verdict}: expected {}", self.expected)
    }
}

const STEPS: usize = 5;

fn title(name: &str) -> String {
    name.replace('_', " ")
}

/// The whole run.
#[derive(Serialize)]
pub struct Report {
    pub passed: bool,
    /// Names of the expectations that did not hold.
    pub failed: Vec<&'static str>,
    pub gateway: SocketAddr,
    pub directory: PathBuf,
    pub kept: bool,
    pub authorizer: String,
    pub steps: Vec<Step>,
    /// The same against AWS IoT Core.
    pub aws: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f)?;
        let held = self.steps.iter().filter(|s| s.passed).count();
        if self.passed {
            writeln!(
                f,
                "{held} of {} expectations held: {SENSOR} publishes to its own topic and a \
                 subscriber allowed to read it receives; a wrong password, another client ID and \
                 another topic get nothing through.",
                self.steps.len()
            )?;
        } else {
            writeln!(
                f,
                "{held} of {} expectations held; FAILED: {}",
                self.steps.len(),
                self.failed
                    .iter()
                    .map(|n| title(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        if !self.kept {
            writeln!(
                f,
                "Stopped the gateway and removed {}.",
                self.directory.display()
            )?;
        }
        writeln!(f)?;
        writeln!(f, "The same against AWS IoT Core (needs AWS credentials):")?;
        for command in &self.aws {
            writeln!(f, "  {command}")?;
        }
        Ok(())
    }
}

pub async fn run(app: &App, args: DemoArgs) -> Result<u8> {
    let dir = tempfile::Builder::new()
        .prefix("iot-custom-auth-demo-")
        .tempdir()
        .context("creating the demo's throwaway directory")?;
    let root = dir.path().to_path_buf();
    // Everything below acts on the throwaway config only, whatever --config says.
    let inner = App::new(GlobalArgs {
        config: root.join("iot-custom-auth.toml"),
        name: None,
        region: None,
        profile: None,
        endpoint_url: None,
        output: OutputFormat::Text,
        verbose: 0,
        quiet: true,
    });
    let sensor = device::add_device(&inner, AddArgs::new(SENSOR), None)?;
    let monitor = device::add_device(
        &inner,
        AddArgs {
            subscribe: vec![MONITOR_FILTER.to_string()],
            ..AddArgs::new(MONITOR)
        },
        None,
    )?;
    let (Some(sensor_password), Some(monitor_password)) = (sensor.password, monitor.password)
    else {
        bail!("device add did not generate a password");
    };
    app.progress(format!(
        "created devices {SENSOR} (publishes to telemetry/{SENSOR}) and {MONITOR} (subscribes to \
         {MONITOR_FILTER}) with generated passwords in {}",
        root.display()
    ));

    let Some(mut console) = local::tap_console() else {
        bail!("the gateway's console is already tapped");
    };
    let local_args = LocalArgs {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        code: args.code.clone(),
        cert_dir: Some(root.join("certs")),
        node: args.node.clone(),
        ..local_defaults()
    };
    let started = local::start(&inner, &local_args).await?;
    let address = started.address();
    let ca_file = started.ca_file().to_path_buf();
    let serving = tokio::spawn(started.serve());
    // Lines logged while starting (the authorizer's init) belong to no step.
    while console.try_recv().is_ok() {}
    let authorizer = match &args.code {
        Some(code) => format!("{} (--code)", code.display()),
        None => "bundled".to_string(),
    };
    app.progress(format!(
        "gateway listening on {address} (MQTT over TLS, ALPN mqtt), authorizer: {authorizer}"
    ));

    let demo = Demo {
        app,
        inner: &inner,
        target: Target {
            host: address.ip().to_string(),
            port: address.port(),
        },
        ca_file: ca_file.clone(),
        sensor_password: sensor_password.clone(),
        monitor_password,
    };
    let mut steps = Vec::new();
    for number in 1..=STEPS {
        let mut step = demo.step(number, &mut console).await;
        step.number = number;
        if !app.json() {
            print!("{step}");
        }
        steps.push(step);
    }

    let failed: Vec<&'static str> = steps.iter().filter(|s| !s.passed).map(|s| s.name).collect();
    let report = Report {
        passed: failed.is_empty(),
        failed,
        gateway: address,
        directory: root.clone(),
        kept: args.keep,
        authorizer,
        steps,
        aws: vec![
            format!("iot-custom-auth device add {SENSOR}"),
            "iot-custom-auth setup".to_string(),
            format!("iot-custom-auth connect --username {SENSOR}"),
            format!("iot-custom-auth status --probe-user {SENSOR} --connect"),
        ],
    };
    if app.json() {
        app.print(&report);
    } else {
        print!("{report}");
    }
    let code = if report.passed {
        exit::OK
    } else {
        exit::UNHEALTHY
    };

    if args.keep {
        let root = dir.keep();
        keep_hints(&root, address, &ca_file, &sensor_password)?;
        // The gateway's log goes to stderr from now on, as `local` prints it.
        tokio::spawn(async move {
            while let Some(line) = console.recv().await {
                eprintln!("{line}");
            }
        });
        tokio::select! {
            served = serving => served??,
            _ = tokio::signal::ctrl_c() => app.progress("stopped"),
        }
    } else {
        serving.abort();
        let _ = serving.await;
        drop(dir);
    }
    Ok(code)
}

struct Demo<'a> {
    app: &'a App,
    inner: &'a App,
    target: Target,
    ca_file: PathBuf,
    sensor_password: String,
    monitor_password: String,
}

impl Demo<'_> {
    async fn step(&self, number: usize, console: &mut UnboundedReceiver<String>) -> Step {
        match number {
            1 => {
                let options = self.sensor(self.sensor_password.clone());
                let sent = format!(
                    "{SENSOR} logs in with its password and publishes to telemetry/{SENSOR}"
                );
                self.connect_step(
                    "allowed_publish",
                    "the message acknowledged",
                    sent,
                    options,
                    console,
                    Outcome::Accepted,
                )
                .await
            }
            2 => {
                let options = self.sensor(verifier::generate());
                let sent = format!("{SENSOR} logs in with a wrong password");
                self.connect_step(
                    "wrong_password",
                    "the login refused",
                    sent,
                    options,
                    console,
                    Outcome::ConnectRefused,
                )
                .await
            }
            3 => {
                let mut options = self.sensor(self.sensor_password.clone());
                options.client_id = Some("sensor2".into());
                let sent = format!(
                    "{SENSOR} logs in with its password but as client ID sensor2, which is not its own"
                );
                self.connect_step(
                    "other_client_id",
                    "the login refused",
                    sent,
                    options,
                    console,
                    Outcome::ConnectRefused,
                )
                .await
            }
            4 => {
                let mut options = self.sensor(self.sensor_password.clone());
                options.topic = Some("telemetry/sensor2".into());
                let sent = format!(
                    "{SENSOR} logs in with its password and publishes to telemetry/sensor2, \
                     another device's topic"
                );
                self.connect_step(
                    "topic_outside_policy",
                    "the connection cut off and the message dropped",
                    sent,
                    options,
                    console,
                    Outcome::PublishRefused,
                )
                .await
            }
            _ => self.subscriber_step(console).await,
        }
    }

    fn sensor(&self, password: String) -> ConnectOptions {
        ConnectOptions {
            target: Some(self.target.clone()),
            ca_files: vec![self.ca_file.clone()],
            interval: Duration::ZERO,
            timeout: STEP_TIMEOUT,
            ..ConnectOptions::new(SENSOR, password)
        }
    }

    /// One login (and publish) through `connect`'s own check.
    async fn connect_step(
        &self,
        name: &'static str,
        expected: &'static str,
        sent: String,
        options: ConnectOptions,
        console: &mut UnboundedReceiver<String>,
        want: Outcome,
    ) -> Step {
        self.app.progress(format!("{}...", title(name)));
        let client_id = options
            .client_id
            .clone()
            .unwrap_or_else(|| SENSOR.to_string());
        let (client, passed) = match connect::check(self.inner, &options).await {
            Ok(summary) => {
                let seen = match (summary.outcome, summary.reason.as_deref()) {
                    (Outcome::Accepted, _) => format!(
                        "connected; {} of {} messages acknowledged",
                        summary.acknowledged, summary.count
                    ),
                    (Outcome::ConnectRefused, reason) => {
                        format!("connection refused: {}", reason.unwrap_or_default())
                    }
                    (Outcome::PublishRefused, reason) => {
                        format!("publish refused: {}", reason.unwrap_or_default())
                    }
                    (Outcome::Failed, reason) => format!("failed: {}", reason.unwrap_or_default()),
                };
                (seen, summary.outcome == want)
            }
            Err(e) => (format!("could not run: {e:#}"), false),
        };
        let lines = gather(console, &[&client_id]).await;
        Step::new(name, expected, sent, client, lines, passed)
    }

    /// The monitor subscribes to telemetry/#, the sensor publishes, the monitor receives.
    async fn subscriber_step(&self, console: &mut UnboundedReceiver<String>) -> Step {
        let name = "subscriber_receives";
        self.app.progress(format!("{}...", title(name)));
        let message = format!("demo {}", uuid::Uuid::new_v4().simple());
        let sent = format!(
            "{MONITOR} subscribes to {MONITOR_FILTER}; {SENSOR} publishes `{message}` to \
             telemetry/{SENSOR}"
        );
        let (client, passed) = match self.receive(&message).await {
            Ok(()) => (format!("{MONITOR} received `{message}`"), true),
            Err(e) => (format!("{e:#}"), false),
        };
        let lines = gather(console, &[MONITOR, SENSOR]).await;
        Step::new(
            name,
            "the message delivered to the subscriber",
            sent,
            client,
            lines,
            passed,
        )
    }

    async fn receive(&self, message: &str) -> Result<()> {
        let mut options = MqttOptions::new(MONITOR, &self.target.host, self.target.port);
        options
            .set_credentials(MONITOR, &self.monitor_password)
            .set_transport(Transport::Tls(TlsConfiguration::Rustls(
                tls::client_config(std::slice::from_ref(&self.ca_file))?,
            )))
            .set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 10);
        let deadline = Instant::now() + STEP_TIMEOUT;
        client.subscribe(MONITOR_FILTER, QoS::AtLeastOnce).await?;
        let result = async {
            wait_for(&mut events, deadline, |p| matches!(p, Packet::SubAck(_)))
                .await
                .context("subscribing")?;
            let mut publish = self.sensor(self.sensor_password.clone());
            publish.message = Some(message.to_string());
            let summary = connect::check(self.inner, &publish).await?;
            if summary.outcome != Outcome::Accepted {
                bail!(
                    "{SENSOR}'s publish was not accepted: {}",
                    summary.reason.unwrap_or_default()
                );
            }
            wait_for(
                &mut events,
                deadline,
                |p| matches!(p, Packet::Publish(p) if p.payload == message.as_bytes()),
            )
            .await
            .with_context(|| format!("{MONITOR} waiting for the message"))
        }
        .await;
        let _ = client.disconnect().await;
        // Let the DISCONNECT go out, so that the gateway logs a clean end.
        let _ = wait_for(
            &mut events,
            Instant::now() + Duration::from_millis(500),
            |_| false,
        )
        .await;
        result
    }
}

/// Polls the subscriber's event loop until a packet satisfies `done`.
async fn wait_for(
    events: &mut rumqttc::EventLoop,
    deadline: Instant,
    done: impl Fn(&Packet) -> bool,
) -> Result<()> {
    loop {
        match timeout_at(deadline, events.poll()).await {
            Err(_) => bail!("no answer within {} s", STEP_TIMEOUT.as_secs()),
            Ok(Ok(Event::Incoming(packet))) if done(&packet) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("the connection ended: {e}"),
        }
    }
}

impl Step {
    fn new(
        name: &'static str,
        expected: &'static str,
        sent: String,
        client: String,
        lines: Vec<String>,
        passed: bool,
    ) -> Self {
        let mut step = Step {
            name,
            expected,
            sent,
            client,
            authorizer: None,
            gateway: Vec::new(),
            log: Vec::new(),
            passed,
            number: 0,
        };
        for line in lines {
            if line.starts_with("CONNECT ") || line.starts_with("client ") {
                step.gateway.push(line);
            } else if let Some(decision) = login_decision(&line) {
                // With two logins (the subscriber step), a deny is the one worth showing.
                if step.authorizer.as_ref().is_none_or(|d| d.result == "allow") {
                    step.authorizer = Some(decision);
                }
            } else if !is_runtime_line(&line) {
                step.log.push(line);
            }
        }
        step
    }
}

/// The bundled authorizer logs each decision as one JSON object (after CloudWatch's timestamp,
/// request id and level).
fn login_decision(line: &str) -> Option<AuthorizerDecision> {
    let record: Value = serde_json::from_str(&line[line.find('{')?..]).ok()?;
    if record["msg"] != "login" {
        return None;
    }
    Some(AuthorizerDecision {
        result: record["result"].as_str()?.to_string(),
        reason: record["reason"].as_str().map(str::to_string),
    })
}

/// Lambda's own START / END / REPORT / INIT_START lines say nothing about the decision.
fn is_runtime_line(line: &str) -> bool {
    ["START ", "END ", "REPORT ", "INIT_START "]
        .iter()
        .any(|p| line.starts_with(p))
}

/// The console lines of a step: until the gateway has logged the end of every client's
/// connection (refused, or disconnected), or a short grace period passes.
async fn gather(console: &mut UnboundedReceiver<String>, clients: &[&str]) -> Vec<String> {
    let mut open: Vec<String> = clients.iter().map(|c| format!("{c:?}")).collect();
    let mut lines = Vec::new();
    let deadline = Instant::now() + LOG_GRACE;
    while !open.is_empty() {
        let Ok(Some(line)) = timeout_at(deadline, console.recv()).await else {
            break;
        };
        open.retain(|quoted| {
            let refused = line.starts_with(&format!("CONNECT client {quoted} "))
                && line.contains(" refused: ");
            let ended = line.starts_with(&format!("client {quoted}: disconnected"));
            !(refused || ended)
        });
        lines.push(line);
    }
    lines
}

/// With --keep: files that let third-party clients connect without a password in argv.
fn keep_hints(root: &Path, address: SocketAddr, ca_file: &Path, password: &str) -> Result<()> {
    // The throwaway directory is private (0700), and these files are 0600 like any tempfile.
    let write_private = |name: &str, text: String| -> Result<PathBuf> {
        let path = root.join(name);
        let mut file = tempfile::NamedTempFile::new_in(root)?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    };
    // mosquitto_pub reads default options from $XDG_CONFIG_HOME/mosquitto_pub.
    write_private("mosquitto_pub", format!("-P {password}\n"))?;
    let paho = write_private(
        "paho_publish.py",
        format!(
            "# Publishes once as {SENSOR} to the demo gateway with paho-mqtt (pip install paho-mqtt).\n\
             import ssl, paho.mqtt.client as mqtt\n\
             c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id={SENSOR:?})\n\
             c.username_pw_set({SENSOR:?}, open({pw:?}).read().strip())\n\
             ctx = ssl.create_default_context(cafile={ca:?})\n\
             ctx.set_alpn_protocols([\"mqtt\"])\n\
             c.tls_set_context(ctx)\n\
             c.connect({host:?}, {port})\n\
             c.loop_start()\n\
             c.publish(\"telemetry/{SENSOR}\", \"hello from paho\", qos=1).wait_for_publish(5)\n\
             c.disconnect()\n\
             print(\"published\")\n",
            pw = root.join("sensor1.password").display().to_string(),
            ca = ca_file.display().to_string(),
            host = address.ip().to_string(),
            port = address.port(),
        ),
    )?;
    write_private("sensor1.password", format!("{password}\n"))?;
    let dir = root.display();
    eprintln!();
    eprintln!(
        "The gateway keeps running on {address} until Ctrl-C; its files stay in {dir}. \
         {SENSOR}'s password: {password}"
    );
    eprintln!(
        "  iot-custom-auth connect --host {address} --ca-file {} --username {SENSOR}",
        ca_file.display()
    );
    eprintln!(
        "  XDG_CONFIG_HOME={dir} mosquitto_pub -h {} -p {} --cafile {} --tls-alpn mqtt -i {SENSOR} -u {SENSOR} -t telemetry/{SENSOR} -q 1 -m hello",
        address.ip(),
        address.port(),
        ca_file.display()
    );
    eprintln!("  python3 {}", paho.display());
    Ok(())
}

/// `local`'s flags as its command line defaults them (worker count, connection caps), so the
/// demo's gateway is the one users run.
fn local_defaults() -> LocalArgs {
    #[derive(clap::Parser)]
    struct Local {
        #[command(flatten)]
        args: LocalArgs,
    }
    <Local as clap::Parser>::parse_from(["local"]).args
}

//! The local stand-in for the authorizer Lambda: one warm `node` process running
//! `assets/local/worker.mjs`, which imports the handler once and then serves invocations one at a
//! time, as one Lambda execution environment does. A login therefore costs one JSON line each way,
//! not a node start. Each invocation is printed on stderr the way CloudWatch shows it
//! (`START`, the function's log lines, `END`, `REPORT`).
//!
//! IoT gives an authorizer 5 s (aws-facts §2); past that the process is killed, the login refused,
//! and the next login starts a fresh process (a new cold start, as after a Lambda timeout).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use super::Console;

/// IoT's limit on an authorizer invocation.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Lambda's limit on a function's init phase.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
pub const WORKER_SOURCE: &str = include_str!("../../assets/local/worker.mjs");

/// How to start the worker.
pub struct Spec {
    pub node: PathBuf,
    pub worker_script: PathBuf,
    pub code_dir: PathBuf,
    pub handler: String,
    /// The variables Lambda sets that a handler may read.
    pub env: Vec<(String, String)>,
}

/// What a device sent, as IoT passes it to the authorizer.
pub struct Login<'a> {
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub client_id: &'a str,
    pub server_name: Option<&'a str>,
    pub connection_id: &'a str,
}

/// The event IoT sends for an MQTT login (aws-facts §2): fields the device did not send are left
/// out, and the password is base64.
pub fn mqtt_event(login: &Login) -> Value {
    let mut mqtt = serde_json::Map::new();
    if let Some(username) = login.username {
        mqtt.insert("username".into(), json!(username));
    }
    if let Some(password) = login.password {
        let encoded = base64::engine::general_purpose::STANDARD.encode(password);
        mqtt.insert("password".into(), json!(encoded));
    }
    if !login.client_id.is_empty() {
        mqtt.insert("clientId".into(), json!(login.client_id));
    }
    let mut protocol_data = serde_json::Map::new();
    if let Some(name) = login.server_name {
        protocol_data.insert("tls".into(), json!({ "serverName": name }));
    }
    protocol_data.insert("mqtt".into(), Value::Object(mqtt));
    json!({
        "protocols": ["tls", "mqtt"],
        "protocolData": protocol_data,
        "connectionMetadata": { "id": login.connection_id },
    })
}

/// How an invocation ended.
#[derive(Debug)]
pub enum Outcome {
    Returned(Value),
    /// The handler threw or rejected, the process died, or the 5 s ran out.
    Failed(String),
}

struct Job {
    event: Value,
    reply: oneshot::Sender<Outcome>,
}

/// A handle to the worker; cheap to clone, invocations queue in order.
#[derive(Clone)]
pub struct Lambda {
    jobs: mpsc::Sender<Job>,
}

impl Lambda {
    /// Starts the worker and waits for its init, so that a broken handler or a missing `node`
    /// stops `local` at once instead of refusing every login.
    pub async fn start(spec: Spec, console: Console) -> Result<Self> {
        let warm = Process::spawn(&spec, console).await?;
        let (jobs, rx) = mpsc::channel(64);
        tokio::spawn(serve(spec, console, Some(warm), rx));
        Ok(Self { jobs })
    }

    pub async fn invoke(&self, event: Value) -> Outcome {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send(Job { event, reply }).await.is_err() {
            return Outcome::Failed("the authorizer worker has stopped".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Outcome::Failed("the authorizer worker has stopped".into()))
    }
}

async fn serve(
    spec: Spec,
    console: Console,
    mut warm: Option<Process>,
    mut jobs: mpsc::Receiver<Job>,
) {
    while let Some(job) = jobs.recv().await {
        let process = match warm.take() {
            Some(p) => Ok(p),
            None => Process::spawn(&spec, console).await,
        };
        let outcome = match process {
            Ok(mut process) => {
                let (outcome, healthy) = process.invoke(&job.event, console).await;
                if healthy {
                    warm = Some(process);
                }
                outcome
            }
            Err(e) => Outcome::Failed(format!("{e:#}")),
        };
        // The connection may have gone meanwhile; nobody is left to tell.
        let _ = job.reply.send(outcome);
    }
}

struct Process {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Reported with the first invocation, as Lambda does.
    init_ms: Option<f64>,
}

impl Process {
    async fn spawn(spec: &Spec, console: Console) -> Result<Self> {
        let mut child = Command::new(&spec.node)
            .arg(&spec.worker_script)
            .arg(&spec.code_dir)
            .arg(&spec.handler)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting `{}`", spec.node.display()))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(INIT_TIMEOUT, stdout.next_line())
            .await
            .map_err(|_| anyhow!("the handler's init took longer than Lambda's 10 s"))?
            .context("reading from the authorizer worker")?
            .ok_or_else(|| anyhow!("node exited before loading the handler"))?;
        let ready: Value = serde_json::from_str(&line).context("the worker's first line")?;
        print_logs(console, &ready);
        if ready["ready"] != true {
            return Err(anyhow!(
                "the handler failed to load: {}",
                error_text(&ready["error"])
            ));
        }
        console.line(format!(
            "INIT_START Runtime Version: nodejs:{}",
            ready["node"].as_str().unwrap_or("?")
        ));
        Ok(Self {
            child,
            stdin,
            stdout,
            init_ms: ready["initMs"].as_f64(),
        })
    }

    /// Runs one invocation; the flag says whether the process may serve the next one.
    async fn invoke(&mut self, event: &Value, console: Console) -> (Outcome, bool) {
        let id = uuid::Uuid::new_v4().to_string();
        console.line(format!("START RequestId: {id} Version: $LATEST"));
        let request = json!({ "id": id, "event": event, "timeoutMs": TIMEOUT.as_millis() as u64 });
        let started = std::time::Instant::now();
        let reply = tokio::time::timeout(TIMEOUT, self.exchange(&request)).await;
        let (outcome, healthy, duration_ms) = match reply {
            Ok(Ok(reply)) => {
                print_logs(console, &reply);
                let outcome = match reply.get("error") {
                    Some(error) => Outcome::Failed(error_text(error)),
                    None => Outcome::Returned(reply.get("result").cloned().unwrap_or(Value::Null)),
                };
                (outcome, true, reply["durationMs"].as_f64().unwrap_or(0.0))
            }
            Ok(Err(e)) => (
                Outcome::Failed(format!("{e:#}")),
                false,
                elapsed_ms(started),
            ),
            Err(_) => {
                console.line(format!(
                    "{id} Task timed out after {:.2} seconds",
                    TIMEOUT.as_secs_f64()
                ));
                let message = format!(
                    "the authorizer ran past IoT's {} s limit",
                    TIMEOUT.as_secs()
                );
                (Outcome::Failed(message), false, elapsed_ms(started))
            }
        };
        if !healthy {
            let _ = self.child.start_kill();
        }
        console.line(format!("END RequestId: {id}"));
        let init = self
            .init_ms
            .take()
            .map(|ms| format!("\tInit Duration: {ms:.2} ms"))
            .unwrap_or_default();
        console.line(format!(
            "REPORT RequestId: {id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {} ms{init}",
            duration_ms.ceil() as u64
        ));
        (outcome, healthy)
    }

    async fn exchange(&mut self, request: &Value) -> Result<Value> {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .context("the authorizer worker exited")?;
        let reply = self
            .stdout
            .next_line()
            .await?
            .ok_or_else(|| anyhow!("the authorizer worker exited (Runtime.ExitError)"))?;
        Ok(serde_json::from_str(&reply)?)
    }
}

fn elapsed_ms(started: std::time::Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn print_logs(console: Console, message: &Value) {
    for line in message["logs"].as_array().into_iter().flatten() {
        console.line(line.as_str().unwrap_or_default());
    }
}

fn error_text(error: &Value) -> String {
    format!(
        "{}: {}",
        error["errorType"].as_str().unwrap_or("Error"),
        error["errorMessage"].as_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_has_what_iot_sends() {
        let event = mqtt_event(&Login {
            username: Some("sensor1?x-amz-customauthorizer-name=a"),
            password: Some(b"pw"),
            client_id: "sensor1",
            server_name: Some("localhost"),
            connection_id: "c0ffee",
        });
        assert_eq!(
            event,
            json!({
                "protocols": ["tls", "mqtt"],
                "protocolData": {
                    "tls": {"serverName": "localhost"},
                    "mqtt": {
                        "username": "sensor1?x-amz-customauthorizer-name=a",
                        "password": "cHc=",
                        "clientId": "sensor1"
                    }
                },
                "connectionMetadata": {"id": "c0ffee"}
            })
        );
    }

    #[test]
    fn fields_not_sent_are_left_out() {
        let event = mqtt_event(&Login {
            username: None,
            password: None,
            client_id: "",
            server_name: None,
            connection_id: "c",
        });
        assert_eq!(event["protocolData"], json!({"mqtt": {}}));
    }
}

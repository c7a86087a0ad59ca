//! The local stand-in for the authorizer Lambda: warm `node` processes running
//! `assets/local/worker.mjs`, each importing the handler once and then serving invocations one at
//! a time, as one Lambda execution environment does. A login therefore costs one JSON line each
//! way, not a node start. Like Lambda, which scales out to concurrent invocations, up to
//! `workers` processes run side by side; a warm one is reused before a new one is started (its
//! cold start is logged, `INIT_START`), and a new one is started only for a login that has
//! waited `SCALE_OUT_AFTER` for a warm one: an invocation takes well under a millisecond once
//! warm, so waiting for a busy process is nearly always faster than a cold start, and one
//! process kept hot serves more logins a second than several sharing the CPUs (bench/local:
//! about 1,500 against 1,200–1,400 with 4 on this 2-core machine). A hung or slow call still
//! only holds its own process: the logins behind it get a new one after that wait. Each invocation is printed on stderr the way CloudWatch
//! shows it (`START`, the function's log lines, `END`, `REPORT`).
//!
//! IoT gives an authorizer 5 s (aws-facts §2). Here that is one deadline per login, counted from
//! the moment the login asks, so time spent waiting for a free worker counts: a hung call holds
//! one worker until its own deadline, and a login queued behind busy workers is refused at its
//! deadline rather than served late. A process past the deadline is killed and replaced by a
//! fresh one on demand (a new cold start, as after a Lambda timeout).
//!
//! The processes get only the environment Lambda gives a function (`Spec::env`), never this
//! process's own: the operator's AWS keys and the device password variable stay out of reach of
//! the authorizer's code, as they would on AWS.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, timeout_at};

use super::Console;

/// IoT's limit on an authorizer invocation.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a login waits for a busy warm process before a new one is started for it.
const SCALE_OUT_AFTER: Duration = Duration::from_millis(50);
/// Lambda's limit on a function's init phase.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
pub const WORKER_SOURCE: &str = include_str!("../../assets/local/worker.mjs");

/// How to start a worker.
pub struct Spec {
    pub node: PathBuf,
    pub worker_script: PathBuf,
    pub code_dir: PathBuf,
    pub handler: String,
    /// The whole environment of the worker: the variables Lambda sets that a handler may read.
    pub env: Vec<(String, String)>,
    /// How many invocations may run at once (Lambda's concurrency for this function).
    pub workers: usize,
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

/// A handle to the workers; cheap to clone.
#[derive(Clone)]
pub struct Lambda {
    pool: Arc<Pool>,
}

struct Pool {
    spec: Spec,
    console: Console,
    /// One permit per invocation that may run now.
    slots: Arc<Semaphore>,
    /// Warm processes waiting for an invocation; the most recently used is taken first, so
    /// extra processes only start under concurrent load.
    idle: Mutex<Vec<Process>>,
    /// Signalled each time a process is back in `idle`.
    returned: Notify,
}

impl Lambda {
    /// Starts one worker and waits for its init, so that a broken handler or a missing `node`
    /// stops `local` at once instead of refusing every login.
    pub async fn start(spec: Spec, console: Console) -> Result<Self> {
        let warm = Process::spawn(&spec, console).await?;
        let pool = Pool {
            slots: Arc::new(Semaphore::new(spec.workers.max(1))),
            spec,
            console,
            idle: Mutex::new(vec![warm]),
            returned: Notify::new(),
        };
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// Invokes the authorizer within IoT's 5 s, counted from now. Its verdict ends the
    /// connection's login phase, which frees its place among those not yet logged in.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let outcome = self.invoke_by(event, Instant::now() + TIMEOUT).await;
        super::listener::logged_in();
        outcome
    }

    /// Invokes the authorizer if it can answer by `deadline`: waiting for a free worker, starting
    /// one and the call itself all count. The call runs on its own task, so a caller that gives
    /// up (its client hung up) does not kill a process mid-invocation.
    pub async fn invoke_by(&self, event: Value, deadline: Instant) -> Outcome {
        let busy = || {
            Outcome::Failed(format!(
                "all {} authorizer workers stayed busy past IoT's {} s limit for this login \
                 (raise --authorizer-workers if the authorizer is slow)",
                self.pool.spec.workers,
                TIMEOUT.as_secs()
            ))
        };
        let slot = match timeout_at(deadline, self.pool.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => slot,
            Ok(Err(_)) => return Outcome::Failed("the authorizer workers have stopped".into()),
            Err(_) => return busy(),
        };
        let pool = self.pool.clone();
        let call = tokio::spawn(async move {
            let outcome = pool.run(&event, deadline).await;
            drop(slot);
            outcome
        });
        call.await
            .unwrap_or_else(|_| Outcome::Failed("the authorizer worker stopped".into()))
    }
}

impl Pool {
    async fn run(&self, event: &Value, deadline: Instant) -> Outcome {
        let warm = self.warm(deadline).await;
        let mut process = match warm {
            Some(process) => process,
            None => match timeout_at(deadline, Process::spawn(&self.spec, self.console)).await {
                Ok(Ok(process)) => process,
                Ok(Err(e)) => return Outcome::Failed(format!("{e:#}")),
                Err(_) => {
                    return Outcome::Failed(format!(
                        "a new authorizer worker did not finish its init within IoT's {} s limit",
                        TIMEOUT.as_secs()
                    ));
                }
            },
        };
        let (outcome, healthy) = process.invoke(event, self.console, deadline).await;
        if healthy {
            self.idle.lock().expect("worker pool lock").push(process);
            self.returned.notify_one();
        }
        outcome
    }

    /// A warm process: one idle now, or one that becomes idle within `SCALE_OUT_AFTER` (but
    /// not past `deadline`); `None` means start a new one.
    async fn warm(&self, deadline: Instant) -> Option<Process> {
        let give_up = (Instant::now() + SCALE_OUT_AFTER).min(deadline);
        loop {
            // Created before looking, so a process returned in between is not missed.
            let returned = self.returned.notified();
            if let Some(process) = self.idle.lock().expect("worker pool lock").pop() {
                return Some(process);
            }
            timeout_at(give_up, returned).await.ok()?;
        }
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
            .env_clear()
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

    /// Runs one invocation, killed at `deadline`; the flag says whether the process may serve
    /// the next one.
    async fn invoke(
        &mut self,
        event: &Value,
        console: Console,
        deadline: Instant,
    ) -> (Outcome, bool) {
        let id = uuid::Uuid::new_v4().to_string();
        console.line(format!("START RequestId: {id} Version: $LATEST"));
        let started = Instant::now();
        let budget = deadline.saturating_duration_since(started);
        let request = json!({ "id": id, "event": event, "timeoutMs": budget.as_millis() as u64 });
        let reply = timeout_at(deadline, self.exchange(&request)).await;
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
                    budget.as_secs_f64()
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

fn elapsed_ms(started: Instant) -> f64 {
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

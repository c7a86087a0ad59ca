//! The local stand-in for the authorizer Lambda: warm `node` processes running
//! `assets/local/worker.mjs`, each importing the handler once and then serving invocations one at
//! a time, as one Lambda execution environment does. A login therefore costs one JSON line each
//! way, not a node start. Like Lambda, which scales out to concurrent invocations, up to
//! `workers` processes run side by side: logins wait in one queue, a worker takes the oldest as
//! soon as it is free (so a hot process goes from one invocation straight to the next), and a new
//! worker is started whenever more logins wait than workers are idle. A new worker takes logins
//! only once its process is warm (its cold start is logged, `INIT_START`), so no login waits
//! for a cold start that a hot process could have spared it. A hung or slow call therefore only
//! ever holds its own process. Each
//! invocation is printed on stderr the way CloudWatch shows it (`START`, the function's log
//! lines, `END`, `REPORT`).
//!
//! IoT gives an authorizer 5 s (aws-facts §2). Here that is one deadline per login, counted from
//! the moment the login asks, so time spent waiting for a free worker counts: a hung call holds
//! one worker until its own deadline, and a login queued behind busy workers is refused at its
//! deadline rather than served late. A process past the deadline is killed and replaced by a
//! fresh one at once (a new cold start, as after a Lambda timeout).
//!
//! The processes get only the environment Lambda gives a function (`Spec::env`), never this
//! process's own: the operator's AWS keys and the device password variable stay out of reach of
//! the authorizer's code, as they would on AWS.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, timeout_at};

use super::Console;

/// IoT's limit on an authorizer invocation.
pub const TIMEOUT: Duration = Duration::from_secs(5);
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
    queue: Mutex<Queue>,
    /// Wakes an idle worker when a login is queued.
    queued: Notify,
}

/// Logins waiting for a worker, and the workers (at most `spec.workers`).
#[derive(Default)]
struct Queue {
    logins: VecDeque<Job>,
    next_id: u64,
    /// Workers waiting for a login.
    idle: usize,
    /// Workers started, idle or busy.
    running: usize,
}

struct Job {
    id: u64,
    event: Value,
    deadline: Instant,
    reply: oneshot::Sender<Outcome>,
}

impl Lambda {
    /// Starts one worker and waits for its init, so that a broken handler or a missing `node`
    /// stops `local` at once instead of refusing every login.
    pub async fn start(spec: Spec, console: Console) -> Result<Self> {
        let warm = Process::spawn(&spec, console).await?;
        let pool = Arc::new(Pool {
            spec,
            console,
            queue: Mutex::new(Queue {
                running: 1,
                ..Queue::default()
            }),
            queued: Notify::new(),
        });
        tokio::spawn(pool.clone().work(Some(warm)));
        Ok(Self { pool })
    }

    /// Invokes the authorizer within IoT's 5 s, counted from now. Its verdict ends the
    /// connection's login phase, which frees its place among those not yet logged in.
    pub async fn invoke(&self, event: Value) -> Outcome {
        let outcome = self.invoke_by(event, Instant::now() + TIMEOUT).await;
        super::listener::logged_in();
        outcome
    }

    /// Invokes the authorizer if it can answer by `deadline`: waiting for a free worker, starting
    /// one and the call itself all count. The worker, not the caller, owns the call, so a caller
    /// that gives up (its client hung up) does not kill a process mid-invocation.
    pub async fn invoke_by(&self, event: Value, deadline: Instant) -> Outcome {
        let pool = &self.pool;
        let (reply, mut answer) = oneshot::channel();
        let (id, scale_out) = {
            let mut queue = pool.queue.lock().expect("worker queue lock");
            let id = queue.next_id;
            queue.next_id += 1;
            queue.logins.push_back(Job {
                id,
                event,
                deadline,
                reply,
            });
            // Every login waiting has an idle worker on its way, or gets a new one.
            let scale_out =
                queue.logins.len() > queue.idle && queue.running < pool.spec.workers.max(1);
            if scale_out {
                queue.running += 1;
            }
            (id, scale_out)
        };
        if scale_out {
            tokio::spawn(pool.clone().work(None));
        }
        pool.queued.notify_one();
        let stopped = || Outcome::Failed("the authorizer worker stopped".into());
        match timeout_at(deadline, &mut answer).await {
            Ok(outcome) => outcome.unwrap_or_else(|_| stopped()),
            Err(_) => {
                // Still queued: every worker stayed busy until this login's deadline.
                let still_queued = {
                    let mut queue = pool.queue.lock().expect("worker queue lock");
                    let at = queue.logins.iter().position(|job| job.id == id);
                    at.map(|at| queue.logins.remove(at)).is_some()
                };
                if still_queued {
                    return busy(pool.spec.workers);
                }
                // A worker has it and ends it at the same deadline: its answer says how.
                answer.await.unwrap_or_else(|_| stopped())
            }
        }
    }
}

impl Pool {
    /// One worker: starts its process (the cold start) before it takes any login, so the logins
    /// waiting meanwhile go to a hot process if one frees up first; then takes the oldest waiting
    /// login as soon as it is free, so a hot process goes from one invocation straight to the
    /// next. A process that failed or timed out is replaced at once. A worker whose process
    /// cannot start gives up its place and fails the oldest waiting login with the reason.
    async fn work(self: Arc<Self>, mut process: Option<Process>) {
        loop {
            let mut current = match process.take() {
                Some(process) => process,
                None => match Process::spawn(&self.spec, self.console).await {
                    Ok(process) => process,
                    Err(e) => return self.retire(&e),
                },
            };
            let job = self.next_job().await;
            let outcome = if Instant::now() >= job.deadline {
                // Taken just as its caller gave up waiting: it gets the caller's reason.
                busy(self.spec.workers)
            } else {
                let (outcome, healthy) =
                    current.invoke(&job.event, self.console, job.deadline).await;
                if healthy {
                    process = Some(current);
                }
                outcome
            };
            let _ = job.reply.send(outcome);
        }
    }

    fn retire(&self, error: &anyhow::Error) {
        let job = {
            let mut queue = self.queue.lock().expect("worker queue lock");
            queue.running -= 1;
            queue.logins.pop_front()
        };
        if let Some(job) = job {
            let _ = job.reply.send(Outcome::Failed(format!("{error:#}")));
        }
    }

    /// The oldest waiting login whose caller still waits.
    async fn next_job(&self) -> Job {
        loop {
            let mut notified = pin!(self.queued.notified());
            {
                let mut queue = self.queue.lock().expect("worker queue lock");
                while let Some(job) = queue.logins.pop_front() {
                    if !job.reply.is_closed() {
                        return job;
                    }
                }
                // Registered before the lock is released, so a login queued in between wakes it.
                notified.as_mut().enable();
                queue.idle += 1;
            }
            notified.await;
            self.queue.lock().expect("worker queue lock").idle -= 1;
        }
    }
}

fn busy(workers: usize) -> Outcome {
    Outcome::Failed(format!(
        "all {workers} authorizer workers stayed busy past IoT's {} s limit for this login \
         (raise --authorizer-workers if the authorizer is slow)",
        TIMEOUT.as_secs()
    ))
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

//! `device migrate` both ways, the built binary against the stand-in (real-AWS delays, moto's
//! DynamoDB), with a device logging in through TestInvokeAuthorizer every 50 ms throughout: no
//! login is refused, the devices arrive with their verifiers, rotations and disabled flags, and
//! the deployment is what `setup` would make of the new config. A failure between steps is
//! completed by running the command again; what cannot be migrated is refused before any change.

mod common;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::cli::{Cli, Run};
use common::standin::{ACCOUNT_ID, REGION, StandIn, logs_in};
use serde_json::{Value, json};

const NAME: &str = "iot-custom-auth";
const TABLE: &str = "iot-custom-auth-devices";

/// One TestInvokeAuthorizer call of the login loop: when it was sent and answered, and whether
/// the device was let in.
#[derive(Debug)]
struct Login {
    sent: Instant,
    answered: Instant,
    ok: bool,
}

/// A device logging in every 50 ms until stopped; every result, in order.
struct Pinger {
    stop: Arc<AtomicBool>,
    logins: Arc<Mutex<Vec<Login>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Pinger {
    /// Starts the loop and returns once the device has logged in once.
    async fn start(standin: &StandIn, user: &str, password: &str) -> Pinger {
        let iot = aws_sdk_iot::Client::new(&standin.sdk_config().await);
        let stop = Arc::new(AtomicBool::new(false));
        let logins = Arc::new(Mutex::new(Vec::new()));
        let (user, password) = (user.to_string(), password.to_string());
        let (flag, record) = (Arc::clone(&stop), Arc::clone(&logins));
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::SeqCst) {
                let sent = Instant::now();
                let ok = logs_in(&iot, NAME, &user, &password).await;
                record.lock().unwrap().push(Login {
                    sent,
                    answered: Instant::now(),
                    ok,
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let pinger = Pinger { stop, logins, task };
        pinger
            .answered_after(Instant::now() - Duration::from_secs(3600))
            .await;
        pinger
    }

    /// Waits until a login sent after `t` has been answered.
    async fn answered_after(&self, t: Instant) {
        while !self.logins.lock().unwrap().iter().any(|l| l.sent > t) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the loop once a login sent after the last run has been answered, so that the loop
    /// covers every run from before it started to after it ended.
    async fn results(self) -> Vec<Login> {
        self.answered_after(Instant::now()).await;
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the login loop");
        std::mem::take(&mut *self.logins.lock().unwrap())
    }
}

/// Runs the CLI without blocking the login loop's thread.
fn run(cli: &Cli, args: &[&str]) -> Run {
    tokio::task::block_in_place(|| cli.run(args))
}

/// The environment of an identity holding what README says `device migrate` needs: the policy
/// `iam-policy --for setup` prints for the DynamoDB store, plus the device commands' batch reads
/// and writes and a Scan that reads items, on the table only.
fn migrate_identity(standin: &StandIn, cli: &Cli) -> Vec<(String, String)> {
    let dynamodb_config = cli.path().join("dynamodb.toml");
    std::fs::write(
        &dynamodb_config,
        "[deployment]\ncredential_store = \"dynamodb\"\n",
    )
    .unwrap();
    let mut policy = run(
        cli,
        &[
            "iam-policy",
            "--for",
            "setup",
            "--output",
            "json",
            "--config",
            dynamodb_config.to_str().unwrap(),
        ],
    )
    .expect(0)
    .json();
    policy["Statement"].as_array_mut().unwrap().push(json!({
        "Effect": "Allow",
        "Action": ["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:Scan"],
        "Resource": format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{TABLE}"),
    }));
    standin.env_as(&standin.identity("ci-migrate", &policy))
}

/// [`run`] as the identity of `env`.
fn run_as(cli: &Cli, env: &[(String, String)], args: &[&str]) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    tokio::task::block_in_place(|| cli.run_with(args, None, &env))
}

/// [`run`], and when it ran.
fn run_during(cli: &Cli, env: &[(String, String)], args: &[&str]) -> (Run, Range<Instant>) {
    let start = Instant::now();
    let out = run_as(cli, env, args);
    (out, start..Instant::now())
}

fn config(cli: &Cli) -> String {
    std::fs::read_to_string(cli.config_path()).unwrap()
}

/// Every device as `device export --with-verifiers` prints it (either store), by username.
fn exported(cli: &Cli) -> Vec<Value> {
    let out = run(cli, &["device", "export", "--with-verifiers"]).expect(0);
    let mut rows: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    rows.sort_by(|a, b| a["username"].as_str().cmp(&b["username"].as_str()));
    rows
}

/// Every resource of a `setup --output json` run left as it was.
fn setup_changes_nothing(cli: &Cli) {
    let out = run(cli, &["setup", "--output", "json"]).expect(0).json();
    for r in out["resources"].as_array().unwrap() {
        assert_eq!(r["action"], "unchanged", "a setup after migrating: {out:#}");
    }
}

/// A fleet of three: `s1` logs in throughout, `s2` was rotated (its old password still works for
/// a day), `s3` is disabled. Returns (s1's password, s2's old password, s2's new password).
fn fleet(cli: &Cli) -> (String, String, String) {
    let p1 = cli.add_device("s1", &[]);
    let old2 = cli.add_device("s2", &["--subscribe", "commands/s2"]);
    let new2 = "Rotated-s2-Hq7Wm2Kx9Pd4Tz6N".to_string();
    cli.run_stdin(
        &[
            "device",
            "rotate",
            "s2",
            "--password-stdin",
            "--overlap",
            "24h",
        ],
        &new2,
    )
    .expect(0);
    cli.add_device("s3", &[]);
    cli.run(&["device", "disable", "s3"]).expect(0);
    (p1, old2, new2)
}

async fn assert_fleet_logs_in(standin: &StandIn, (p1, old2, new2): &(String, String, String)) {
    let iot = aws_sdk_iot::Client::new(&standin.sdk_config().await);
    assert!(logs_in(&iot, NAME, "s1", p1).await);
    assert!(
        logs_in(&iot, NAME, "s2", old2).await,
        "the rotation's overlap"
    );
    assert!(logs_in(&iot, NAME, "s2", new2).await);
    assert!(
        !logs_in(&iot, NAME, "s3", "Pw-s3-Zq8x3Lr5Tb7Nc2Vm9Kd4").await,
        "s3 stays disabled"
    );
}

/// No login was refused, and the loop was logging in while each of `runs` ran: some login was
/// in flight during it (the loop started before the first run and ended after the last, with
/// 50 ms between logins, so a run without one would mean the loop stalled).
fn assert_no_refusal(logins: &[Login], runs: &[Range<Instant>]) {
    let refused: Vec<&Login> = logins.iter().filter(|l| !l.ok).collect();
    assert!(
        refused.is_empty(),
        "{} of {} logins refused: {refused:?}",
        refused.len(),
        logins.len()
    );
    for run in runs {
        assert!(
            logins
                .iter()
                .any(|l| l.sent < run.end && l.answered > run.start),
            "no login while the migration ran: {logins:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_dynamodb_with_a_device_logging_in_throughout() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    let passwords = fleet(&cli);
    run(&cli, &["setup"]).expect(0);
    let before = exported(&cli);
    let env = migrate_identity(&standin, &cli);
    let pinger = Pinger::start(&standin, "s1", &passwords.0).await;

    let (out, during) = run_during(
        &cli,
        &env,
        &["device", "migrate", "--to", "dynamodb", "--output", "json"],
    );
    let out = out.expect(0);
    let results = pinger.results().await;
    assert_no_refusal(&results, &[during]);

    assert!(
        out.stderr.contains("warning: memory_mb = 128"),
        "the SDK's cold start at 128 MB: {}",
        out.stderr
    );
    let report = out.json();
    assert_eq!(report["devices"], 3);
    assert_eq!(
        (report["from"].as_str(), report["to"].as_str()),
        (Some("package"), Some("dynamodb"))
    );
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["resource"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["role", "table", "devices", "function", "config"]);
    // Devices are written before the function reads the table.
    let calls = standin.calls();
    let last_write = calls
        .iter()
        .rposition(|c| c.operation.contains("BatchWriteItem"))
        .expect("devices written");
    let deploy = calls
        .iter()
        .position(|c| c.operation.contains("UpdateFunctionCode"))
        .expect("function deployed");
    assert!(last_write < deploy, "{calls:#?}");

    let text = config(&cli);
    assert!(text.contains("credential_store = \"dynamodb\""), "{text}");
    assert!(!text.contains("[[devices]]"), "{text}");
    assert_eq!(exported(&cli), before, "the table holds the same devices");
    assert_fleet_logs_in(&standin, &passwords).await;
    run(&cli, &["status"]).expect(0);
    setup_changes_nothing(&cli);

    // Done: a second run is refused and changes nothing.
    standin.clear_calls();
    let again = run(&cli, &["device", "migrate", "--to", "dynamodb"]).expect(2);
    assert!(
        again.stderr.contains("already uses the dynamodb store"),
        "{}",
        again.stderr
    );
    assert!(standin.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_package_with_a_device_logging_in_throughout_keeps_the_table() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    std::fs::write(
        cli.config_path(),
        "# my fleet\n[deployment]\ncredential_store = \"dynamodb\"\ncache_seconds = 30\n",
    )
    .unwrap();
    run(&cli, &["setup"]).expect(0);
    let passwords = fleet(&cli);
    let before = exported(&cli);
    let env = migrate_identity(&standin, &cli);
    let pinger = Pinger::start(&standin, "s1", &passwords.0).await;

    let (out, during) = run_during(&cli, &env, &["device", "migrate", "--to", "package"]);
    let out = out.expect(0);
    let results = pinger.results().await;
    assert_no_refusal(&results, &[during]);

    assert!(
        out.stdout
            .contains(&format!("The table {TABLE} is kept with its 3 devices"))
            && out
                .stdout
                .contains(&format!("aws dynamodb delete-table --table-name {TABLE}")),
        "{}",
        out.stdout
    );
    let text = config(&cli);
    assert!(text.starts_with("# my fleet\n"), "comments survive: {text}");
    assert!(text.contains("credential_store = \"package\""), "{text}");
    assert_eq!(text.matches("[[devices]]").count(), 3, "{text}");
    assert_eq!(exported(&cli), before, "the config holds the same devices");
    assert_fleet_logs_in(&standin, &passwords).await;
    run(&cli, &["status"]).expect(0);
    setup_changes_nothing(&cli);

    // The table is still there, with its devices, and the role no longer reads it.
    let dynamodb = aws_sdk_dynamodb::Client::new(&standin.sdk_config().await);
    let items = dynamodb.scan().table_name(TABLE).send().await.unwrap();
    assert_eq!(items.count(), 3);
    let iam = aws_sdk_iam::Client::new(&standin.sdk_config().await);
    let inline = iam
        .list_role_policies()
        .role_name("iot-custom-auth-authorizer-role")
        .send()
        .await
        .unwrap();
    assert!(inline.policy_names().is_empty(), "{inline:?}");

    // Moving back in is allowed while the table holds exactly the config's devices; once the
    // config drops one, the kept table would let it in again, so that is refused.
    cli.run(&["device", "remove", "s3"]).expect(0);
    standin.clear_calls();
    let refused = run(&cli, &["device", "migrate", "--to", "dynamodb"]).expect(2);
    assert!(
        refused.stderr.contains("holds 1 devices") && refused.stderr.contains("`s3`"),
        "{}",
        refused.stderr
    );
    assert!(
        standin.calls().iter().all(|c| !c.mutating),
        "nothing changed"
    );

    // With the package store teardown does not look for the table: it removes the rest and
    // leaves the table and its devices, as the migration said.
    let gone = run(&cli, &["teardown", "--yes"]).expect(0);
    assert!(!gone.stdout.contains(TABLE), "{}", gone.stdout);
    let items = dynamodb.scan().table_name(TABLE).send().await.unwrap();
    assert_eq!(items.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_stopped_by_a_failure_is_completed_by_running_it_again() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    let passwords = fleet(&cli);
    run(&cli, &["setup"]).expect(0);
    let before = config(&cli);
    standin.set_behaviour(json!({
        "fail": {"lambda:UpdateFunctionCode": {
            "code": "ServiceException", "status": 400, "message": "injected", "count": 1}},
    }));
    let env = migrate_identity(&standin, &cli);
    let pinger = Pinger::start(&standin, "s1", &passwords.0).await;

    let (failed, first) = run_during(&cli, &env, &["device", "migrate", "--to", "dynamodb"]);
    let failed = failed.expect(1);
    assert!(failed.stderr.contains("injected"), "{}", failed.stderr);
    assert_eq!(config(&cli), before, "the config is left as it was");

    let (done, second) = run_during(&cli, &env, &["device", "migrate", "--to", "dynamodb"]);
    done.expect(0);
    assert!(config(&cli).contains("credential_store = \"dynamodb\""));
    assert_fleet_logs_in(&standin, &passwords).await;
    run(&cli, &["status"]).expect(0);

    // Back, stopped after the package is deployed, when the role's table grant is removed.
    standin.set_behaviour(json!({
        "fail": {"iam:DeleteRolePolicy": {
            "code": "ServiceFailure", "status": 400, "message": "injected", "count": 1}},
    }));
    let during = config(&cli);
    let (failed, third) = run_during(&cli, &env, &["device", "migrate", "--to", "package"]);
    let failed = failed.expect(1);
    assert!(failed.stderr.contains("injected"), "{}", failed.stderr);
    assert_eq!(config(&cli), during, "the config is left as it was");
    let (done, fourth) = run_during(&cli, &env, &["device", "migrate", "--to", "package"]);
    done.expect(0);
    let results = pinger.results().await;
    assert_no_refusal(&results, &[first, second, third, fourth]);
    assert!(config(&cli).contains("credential_store = \"package\""));
    assert_fleet_logs_in(&standin, &passwords).await;
    run(&cli, &["status"]).expect(0);
    setup_changes_nothing(&cli);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_without_a_deployment_or_when_already_there() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("s1", &[]);
    let before = config(&cli);

    let same = run(&cli, &["device", "migrate", "--to", "package"]).expect(2);
    assert!(
        same.stderr.contains("already uses the package store"),
        "{}",
        same.stderr
    );
    let none = run(&cli, &["device", "migrate", "--to", "dynamodb"]).expect(2);
    assert!(
        none.stderr.contains("has no function")
            && none.stderr.contains("run `iot-custom-auth setup` first"),
        "{}",
        none.stderr
    );
    assert_eq!(config(&cli), before);
    let calls = standin.calls();
    assert!(calls.iter().all(|c| !c.mutating), "{calls:#?}");

    // A table without devices would make a package that lets nobody in.
    let empty = "[deployment]\ncredential_store = \"dynamodb\"\n";
    std::fs::write(cli.config_path(), empty).unwrap();
    run(&cli, &["setup"]).expect(0);
    standin.clear_calls();
    let refused = run(&cli, &["device", "migrate", "--to", "package"]).expect(2);
    assert!(
        refused.stderr.contains("holds no devices"),
        "{}",
        refused.stderr
    );
    assert_eq!(config(&cli), empty);
    let calls = standin.calls();
    assert!(calls.iter().all(|c| !c.mutating), "{calls:#?}");

    // Devices the table accepts but a config file does not: two claiming one client ID.
    let dynamodb = aws_sdk_dynamodb::Client::new(&standin.sdk_config().await);
    for user in ["a1", "b1"] {
        let s = |v: &str| AttributeValue::S(v.to_string());
        dynamodb
            .put_item()
            .table_name(TABLE)
            .item("username", s(user))
            .item("verifier", s(&verifier(user)))
            .item("clientIds", AttributeValue::L(vec![s("shared")]))
            .item("publish", AttributeValue::L(vec![s("telemetry/shared")]))
            .item("subscribe", AttributeValue::L(vec![]))
            .send()
            .await
            .unwrap();
    }
    standin.clear_calls();
    let refused = run(&cli, &["device", "migrate", "--to", "package"]).expect(2);
    assert!(
        refused.stderr.contains("cannot be config devices")
            && refused.stderr.contains("client ID `shared` is claimed"),
        "{}",
        refused.stderr
    );
    assert_eq!(config(&cli), empty);
    let calls = standin.calls();
    assert!(calls.iter().all(|c| !c.mutating), "{calls:#?}");
}

/// A verifier as the tool writes it (`sha256:<16-byte salt>:<sha256(salt || password)>`).
fn verifier(password: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = [7u8; 16];
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    format!("sha256:{}:{}", b64.encode(salt), b64.encode(h.finalize()))
}

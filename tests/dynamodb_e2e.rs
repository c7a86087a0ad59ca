//! The DynamoDB device store end to end (issue 13's acceptance): the built binary against the
//! stand-in (moto's DynamoDB, the bundled authorizer run as Lambda runs it), every command as an
//! identity holding only the policy `iam-policy` prints for it. A device added, rotated,
//! disabled and removed without re-running `setup` is seen by TestInvokeAuthorizer and by
//! `iot-custom-auth local` (reading the same table through `--endpoint-url`) within the
//! authorizer's `cache_seconds`, and no device change ever updates the function.
//!
//! Needs IOT_CUSTOM_AUTH_LAMBDA_SDK, IOT_CUSTOM_AUTH_NODE and mosquitto_pub (`scripts/test`).

mod common;

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::cli::{Cli, Run};
use common::standin::{
    DEVICES_TABLE as TABLE, Identity, REGION, StandIn, devices_table_arn, logs_in,
};
use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_iot-custom-auth");
const AUTHORIZER: &str = "iot-custom-auth";
/// The authorizer's cache lifetime in these tests: a removed or disabled device may log in for
/// at most this long after the change.
const CACHE_SECONDS: u64 = 1;
/// Added to every wait for a change to be seen: the stand-in and `local` run on a loaded
/// 2-core machine under a debug build.
const MARGIN: Duration = Duration::from_secs(15);

/// A scratch config with the DynamoDB store, a 1 s cache and no device.
fn dynamodb_cli(standin: &StandIn) -> Cli {
    Cli::with_config(
        standin,
        &format!(
            "[deployment]\ncredential_store = \"dynamodb\"\ncache_seconds = {CACHE_SECONDS}\n"
        ),
    )
}

fn printed_policy(cli: &Cli, command: &str) -> Value {
    cli.run(&["iam-policy", "--for", command, "--output", "json"])
        .expect(0)
        .json()
}

/// An identity holding exactly `iam-policy --for <command>`, and the environment that signs as it.
fn as_identity(standin: &StandIn, cli: &Cli, command: &str) -> (Identity, Vec<(String, String)>) {
    let printed = printed_policy(cli, command);
    assert!(
        printed.to_string().contains(&devices_table_arn()),
        "the {command} policy names the table: {printed}"
    );
    let identity = standin.identity(&format!("ci-{command}"), &printed);
    let env = standin.env_as(&identity);
    (identity, env)
}

fn run_as(
    cli: &Cli,
    env: &[(String, String)],
    args: &[&str],
    stdin: Option<&str>,
    code: i32,
) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cli.run_with(args, stdin, &env).expect(code)
}

fn operations(standin: &StandIn) -> Vec<String> {
    standin
        .calls()
        .into_iter()
        .map(|c| format!("{}:{}", c.service, c.operation))
        .collect()
}

/// `iot-custom-auth local` on the same config, reading the table through `--endpoint-url` as an
/// identity that may only GetItem on it (what the authorizer's role may do).
struct Local {
    child: Child,
    dir: TempDir,
    address: SocketAddr,
    ca_file: PathBuf,
}

impl Local {
    fn start(standin: &StandIn, cli: &Cli, reader: &Identity) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("local.log")).unwrap();
        let mut command = Command::new(BIN);
        command
            .args(["--config".as_ref(), cli.config_path().as_os_str()])
            .args(["--endpoint-url", standin.url()])
            .args(["--output", "json", "local", "--listen", "127.0.0.1:0"])
            .args(["--cert-dir".as_ref(), dir.path().join("certs").as_os_str()])
            .env("TMPDIR", dir.path())
            .env_remove("AWS_PROFILE")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in standin.env_as(reader) {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let mut text = String::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            if line == "}" {
                break;
            }
        }
        let listening: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
            panic!(
                "local exited before listening:\n{}",
                std::fs::read_to_string(dir.path().join("local.log")).unwrap_or_default()
            )
        });
        Self {
            child,
            address: listening["address"].as_str().unwrap().parse().unwrap(),
            ca_file: listening["ca_file"].as_str().unwrap().into(),
            dir,
        }
    }

    /// A login with mosquitto_pub (MQTT 3.1.1 over TLS, ALPN `mqtt`), publishing one message to
    /// the device's default topic: true when it connected and published.
    fn login(&self, user: &str, password: &str) -> bool {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &self.address.port().to_string()])
            .args(["-V", "mqttv311", "--tls-alpn", "mqtt", "--cafile"])
            .arg(&self.ca_file)
            .args(["-i", user, "-u", user, "-P", password])
            .args(["-t", &format!("telemetry/{user}"), "-q", "1", "-m", "hello"])
            .output()
            .expect("mosquitto_pub (installed by scripts/test)");
        out.status.success()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- local's stderr ---\n{}", self.log());
        }
    }
}

/// Both paths' verdict for one login: (TestInvokeAuthorizer, local).
async fn both(
    iot: &aws_sdk_iot::Client,
    local: &Local,
    user: &str,
    password: &str,
) -> (bool, bool) {
    (
        logs_in(iot, AUTHORIZER, user, password).await,
        local.login(user, password),
    )
}

/// Polls both paths until they give `want` for this login, at most `within`; panics with what
/// they said last otherwise.
async fn eventually(
    iot: &aws_sdk_iot::Client,
    local: &Local,
    user: &str,
    password: &str,
    want: bool,
    within: Duration,
    what: &str,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = both(iot, local, user, password).await;
        if got == (want, want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after {within:?} TestInvokeAuthorizer / local still say {got:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn password_of(run: &Run) -> String {
    run.json()["password"]
        .as_str()
        .unwrap_or_else(|| panic!("a generated password in {}", run.stdout))
        .to_string()
}

/// setup → a device added without re-running setup logs in through TestInvokeAuthorizer and
/// `local` → rotate: old and new password both work, the old one stops after the overlap →
/// disable and remove take effect within the cache lifetime → no device change touches the
/// function → teardown keeps the non-empty table, and with `--delete-devices` leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_device_lives_its_whole_life_without_a_redeploy() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = dynamodb_cli(&standin);
    let (_, setup) = as_identity(&standin, &cli, "setup");
    let (_, device) = as_identity(&standin, &cli, "device");
    let (_, teardown) = as_identity(&standin, &cli, "teardown");
    // `local`'s worker reads the table with the operator's credentials: here only what the
    // authorizer's role holds.
    let reader = standin.identity(
        "ci-local",
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": "dynamodb:GetItem", "Resource": devices_table_arn()}]}),
    );
    let iot = aws_sdk_iot::Client::new(&standin.sdk_config().await);

    run_as(&cli, &setup, &["setup"], None, 0);
    standin.clear_calls();

    let first = "Pw-sensor1-Zq8x3Lr5Tb7Nc2Vm9Kd4";
    run_as(
        &cli,
        &device,
        &["device", "add", "sensor1", "--password-stdin"],
        Some(first),
        0,
    );
    let local = Local::start(&standin, &cli, &reader);
    // No setup since the add: the device is read from the table at its first login.
    assert_eq!(both(&iot, &local, "sensor1", first).await, (true, true));
    assert_eq!(
        both(&iot, &local, "sensor1", "Wrong-password-Zq8x3Lr5Tb7Nc").await,
        (false, false)
    );
    assert_eq!(both(&iot, &local, "nobody", first).await, (false, false));

    // Rotation with an overlap: both passwords work, then only the new one.
    let overlap = 10;
    let rotated = run_as(
        &cli,
        &device,
        &[
            "--output",
            "json",
            "device",
            "rotate",
            "sensor1",
            "--overlap",
            &format!("{overlap}s"),
        ],
        None,
        0,
    );
    let rotated_at = Instant::now();
    let second = password_of(&rotated);
    assert!(rotated.json()["old_password_valid_until"].is_string());
    // The new password is seen once the cached item expires; the old one keeps working.
    eventually(
        &iot,
        &local,
        "sensor1",
        &second,
        true,
        MARGIN,
        "the new password",
    )
    .await;
    assert_eq!(both(&iot, &local, "sensor1", first).await, (true, true));
    assert!(
        rotated_at.elapsed() < Duration::from_secs(overlap),
        "the machine was too slow to check the overlap inside it; rerun on a calmer machine"
    );
    eventually(
        &iot,
        &local,
        "sensor1",
        first,
        false,
        Duration::from_secs(overlap) + MARGIN,
        "the old password after the overlap",
    )
    .await;
    assert_eq!(both(&iot, &local, "sensor1", &second).await, (true, true));

    // Disable: allowed right before, refused within the cache lifetime; enable lets it back in.
    assert_eq!(both(&iot, &local, "sensor1", &second).await, (true, true));
    run_as(&cli, &device, &["device", "disable", "sensor1"], None, 0);
    let within = Duration::from_secs(CACHE_SECONDS) + MARGIN;
    eventually(&iot, &local, "sensor1", &second, false, within, "disabled").await;
    run_as(&cli, &device, &["device", "enable", "sensor1"], None, 0);
    eventually(
        &iot,
        &local,
        "sensor1",
        &second,
        true,
        within,
        "enabled again",
    )
    .await;

    // Remove: allowed right before, refused within the cache lifetime.
    assert_eq!(both(&iot, &local, "sensor1", &second).await, (true, true));
    run_as(&cli, &device, &["device", "remove", "sensor1"], None, 0);
    eventually(&iot, &local, "sensor1", &second, false, within, "removed").await;

    // Every change went to the table; the function was never touched.
    let ops = operations(&standin);
    for write in ["dynamodb:PutItem", "dynamodb:DeleteItem"] {
        assert!(ops.contains(&write.to_string()), "{write}: {ops:?}");
    }
    assert!(
        ops.iter().all(|op| !op.starts_with("lambda:")
            || op.starts_with("lambda:Get")
            || op == "lambda:Invoke"),
        "a device change touched the function: {ops:?}"
    );
    assert!(!ops.contains(&"lambda:UpdateFunctionCode".to_string()));
    drop(local);

    // teardown keeps a table that holds a device; --delete-devices leaves nothing.
    let kept = "Pw-sensor2-Zq8x3Lr5Tb7Nc2Vm9Kd4";
    run_as(
        &cli,
        &device,
        &["device", "add", "sensor2", "--password-stdin"],
        Some(kept),
        0,
    );
    let refused = run_as(&cli, &teardown, &["teardown", "--yes"], None, 1);
    assert!(
        refused
            .stdout
            .lines()
            .any(|l| l.starts_with("table") && l.contains("kept")),
        "{}",
        refused.stdout
    );
    let db = aws_sdk_dynamodb::Client::new(&standin.sdk_config().await);
    let item = db
        .get_item()
        .table_name(TABLE)
        .key("username", AttributeValue::S("sensor2".into()))
        .send()
        .await
        .unwrap();
    assert!(item.item().is_some(), "the device survived the teardown");
    run_as(
        &cli,
        &teardown,
        &["teardown", "--yes", "--delete-devices"],
        None,
        0,
    );
    assert!(
        db.describe_table()
            .table_name(TABLE)
            .send()
            .await
            .unwrap_err()
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
    );
    let nothing = cli.run(&["status", "--output", "json"]).expect(3);
    assert_eq!(nothing.json()["deployed"], false, "{}", nothing.stdout);
}

fn check(run: &Run, id: &str) -> Value {
    run.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no check {id} in {}", run.stdout))
}

/// `status --probe-user` with the table store, as the `--for status` identity: it reads the
/// device's client IDs and topics (one GetItem projecting only non-secret attributes), logs in
/// through TestInvokeAuthorizer and compares the policy; the same identity cannot read a
/// verifier, nor a whole item.
#[tokio::test(flavor = "multi_thread")]
async fn status_probes_a_table_device_without_reading_its_secrets() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = dynamodb_cli(&standin);
    // Before setup there is no table to read the device from: the probe is skipped, and status
    // says what is missing (exit 3), as it does without the probe.
    let before = cli
        .run_with(
            &["status", "--output", "json", "--probe-user", "sensor1"],
            None,
            &[(
                "IOT_CUSTOM_AUTH_PASSWORD",
                "Pw-sensor1-Zq8x3Lr5Tb7Nc2Vm9Kd4",
            )],
        )
        .expect(3);
    assert_eq!(
        check(&before, "probe.allowed")["state"],
        "skip",
        "{}",
        before.stdout
    );
    assert_eq!(
        check(&before, "table.exists")["state"],
        "fail",
        "{}",
        before.stdout
    );
    cli.run(&["setup"]).expect(0);
    let (identity, mut status) = as_identity(&standin, &cli, "status");
    let password = cli.add_device("sensor1", &["--subscribe", "commands/sensor1"]);
    status.push(("IOT_CUSTOM_AUTH_PASSWORD".into(), password));
    let probe = |code| {
        run_as(
            &cli,
            &status,
            &["status", "--output", "json", "--probe-user", "sensor1"],
            None,
            code,
        )
    };

    let run = probe(0);
    let allowed = check(&run, "probe.allowed");
    assert_eq!(allowed["state"], "ok", "{}", run.stdout);
    assert!(
        allowed["detail"]
            .as_str()
            .unwrap()
            .contains("allowed with the configured policy"),
        "{allowed}"
    );
    assert_eq!(check(&run, "probe.denied")["state"], "ok", "{}", run.stdout);

    // The identity reads the non-secret attributes it was granted, and nothing more.
    let db = aws_sdk_dynamodb::Client::new(&standin.sdk_config_for(REGION, Some(&identity)).await);
    let key = AttributeValue::S("sensor1".into());
    let read = |projection: Option<&'static str>| {
        let mut request = db.get_item().table_name(TABLE).key("username", key.clone());
        if let Some(p) = projection {
            request = request.projection_expression(p);
        }
        request.send()
    };
    let public = read(Some("clientIds, subscribe"))
        .await
        .expect("the granted attributes");
    let item = public.item().expect("the device");
    assert!(item.contains_key("subscribe") && !item.contains_key("verifier"));
    for projection in [None, Some("verifier"), Some("clientIds, previous")] {
        let err = read(projection).await.expect_err("a secret attribute");
        assert_eq!(
            aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&err),
            Some("AccessDeniedException"),
            "{projection:?}: {err:?}"
        );
    }

    // A disabled device must be refused: the probe says so, once the cached item has expired.
    cli.run(&["device", "disable", "sensor1"]).expect(0);
    let deadline = Instant::now() + Duration::from_secs(CACHE_SECONDS) + MARGIN;
    loop {
        let run = probe(0);
        let allowed = check(&run, "probe.allowed");
        if allowed["detail"]
            .as_str()
            .unwrap()
            .contains("is disabled and was refused")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{}", run.stdout);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // An unknown device is a usage error naming the table.
    let ghost = run_as(&cli, &status, &["status", "--probe-user", "ghost"], None, 2);
    assert!(
        ghost
            .stderr
            .contains("no device `ghost` in table iot-custom-auth-devices"),
        "{}",
        ghost.stderr
    );
}

/// Every device command runs as an identity holding only `iam-policy --for device`: DynamoDB
/// actions on the table, nothing else. With the package store there is no such policy to print.
#[tokio::test(flavor = "multi_thread")]
async fn the_device_commands_need_only_the_device_policy() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = dynamodb_cli(&standin);
    cli.run(&["setup"]).expect(0);
    let printed = printed_policy(&cli, "device");
    for statement in printed["Statement"].as_array().unwrap() {
        assert_eq!(
            statement["Resource"],
            devices_table_arn().as_str(),
            "{statement}"
        );
        for action in statement["Action"].as_array().unwrap() {
            assert!(
                action.as_str().unwrap().starts_with("dynamodb:"),
                "{action}"
            );
        }
    }
    let (identity, device) = as_identity(&standin, &cli, "device");
    let ok = |args: &[&str], stdin: Option<&str>| run_as(&cli, &device, args, stdin, 0);

    ok(
        &["device", "add", "sensor1", "--password-stdin"],
        Some("Pw-sensor1-Zq8x3Lr5Tb7Nc2Vm9Kd4"),
    );
    ok(
        &[
            "device",
            "add",
            "sensor2",
            "--subscribe",
            "commands/sensor2",
        ],
        None,
    );
    let csv = cli.path().join("fleet.csv");
    std::fs::write(
        &csv,
        "username,password,publish\n\
         fleet1,Fl-one-Zq8x3Lr5Tb7Nc2Vm9Kd4Hj6,data/fleet1\n\
         fleet2,Fl-two-Zq8x3Lr5Tb7Nc2Vm9Kd4Hj6,data/fleet2\n",
    )
    .unwrap();
    let imported = ok(&["--output", "json", "device", "import", "fleet.csv"], None).json();
    assert_eq!(imported["written"], 2, "{imported}");
    let again = ok(&["--output", "json", "device", "import", "fleet.csv"], None).json();
    assert_eq!(
        (again["written"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(2))
    );

    let listed = ok(&["--output", "json", "device", "list"], None).json();
    let mut names: Vec<&str> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["username"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["fleet1", "fleet2", "sensor1", "sensor2"]);
    let shown = ok(&["--output", "json", "device", "show", "sensor2"], None).json();
    assert!(shown.to_string().contains("commands/sensor2"), "{shown}");
    ok(&["device", "rotate", "sensor1", "--overlap", "1h"], None);
    ok(&["device", "disable", "fleet1"], None);
    ok(&["device", "enable", "fleet1"], None);
    let export = ok(&["device", "export"], None).stdout;
    assert_eq!(export.lines().count(), 4, "{export}");
    assert!(!export.contains("sha256:"));
    let secrets = ok(&["device", "export", "--with-verifiers"], None).stdout;
    assert_eq!(secrets.matches("sha256:").count(), 4);
    ok(&["device", "remove", "sensor2"], None);
    let listed = ok(&["--output", "json", "device", "list"], None).json();
    assert_eq!(listed["devices"].as_array().unwrap().len(), 3);

    // The policy is the table's only: a batch write naming another table is refused (the
    // stand-in checks BatchWriteItem on each table of RequestItems, as IAM does).
    let admin = aws_sdk_dynamodb::Client::new(&standin.sdk_config().await);
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    common::standin::create_devices_table(&admin, "other-devices").await;
    let put = |table: &str| {
        let request = WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .item("username", AttributeValue::S("intruder".into()))
                    .build()
                    .unwrap(),
            )
            .build();
        (table.to_string(), vec![request])
    };
    let db = aws_sdk_dynamodb::Client::new(&standin.sdk_config_for(REGION, Some(&identity)).await);
    let err = db
        .batch_write_item()
        .request_items(put(TABLE).0, put(TABLE).1)
        .request_items(put("other-devices").0, put("other-devices").1)
        .send()
        .await
        .expect_err("another table");
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&err),
        Some("AccessDeniedException"),
        "{err:?}"
    );
    assert!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::message(&err)
            .is_some_and(|m| m.contains("table/other-devices")),
        "{err:?}"
    );

    // With the package store the device commands edit the config file: no policy to print.
    let package = Cli::new(&standin);
    let refused = package.run(&["iam-policy", "--for", "device"]).expect(2);
    assert!(
        refused.stderr.contains("need no AWS permission")
            && refused.stderr.contains("credential_store = \"dynamodb\""),
        "{}",
        refused.stderr
    );
    let all = printed_policy(&package, "all");
    assert!(!all.to_string().contains("dynamodb"), "{all}");
}

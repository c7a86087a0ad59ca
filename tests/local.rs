//! End-to-end tests of `iot-custom-auth local`: the built binary with a temp config and cert dir,
//! the bundled authorizer under the machine's `node`, and two independent clients: paho-mqtt
//! (tests/local_paho.py, the client the manual recipe uses) and `iot-custom-auth connect`.
//!
//! The Python with paho-mqtt comes from IOT_CUSTOM_AUTH_TEST_PYTHON, which scripts/test sets.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_iot-custom-auth");

/// A running `local` gateway with two devices: `sensor1` (publishes to telemetry/sensor1) and
/// `reader1` (subscribes to telemetry/#).
struct Gateway {
    child: Child,
    dir: TempDir,
    address: SocketAddr,
    ca_file: PathBuf,
    sensor_password: String,
    reader_password: String,
}

impl Gateway {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("iot-custom-auth.toml");
        let sensor_password = add_device(&config, &["sensor1"]);
        let reader_password = add_device(&config, &["reader1", "--subscribe", "telemetry/#"]);
        let log = std::fs::File::create(dir.path().join("local.log")).unwrap();
        let mut child = Command::new(BIN)
            .args(["--config".as_ref(), config.as_os_str()])
            .args(["--output", "json", "local", "--listen", "127.0.0.1:0"])
            .args(["--cert-dir".as_ref(), dir.path().join("certs").as_os_str()])
            .args(extra)
            // The unpacked authorizer goes to the temp dir, and goes with it.
            .env("TMPDIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let listening = read_json(child.stdout.take().unwrap(), &dir);
        Self {
            child,
            address: listening["address"].as_str().unwrap().parse().unwrap(),
            ca_file: listening["ca_file"].as_str().unwrap().into(),
            dir,
            sensor_password,
            reader_password,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default()
    }

    fn paho(&self, scenario: &str, mut args: Value) -> Value {
        args["host"] = json!(self.address.ip().to_string());
        args["port"] = json!(self.address.port());
        args["ca"] = json!(self.ca_file);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/local_paho.py");
        let out = Command::new(python())
            .arg(script)
            .arg(scenario)
            .arg(args.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "paho: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn sensor(&self) -> Value {
        json!({"username": "sensor1", "password": self.sensor_password})
    }

    fn reader(&self) -> Value {
        json!({"username": "reader1", "password": self.reader_password})
    }

    /// `iot-custom-auth connect` against this gateway.
    fn connect(&self, password: &str, args: &[&str]) -> Output {
        let mut child = Command::new(BIN)
            .args(["connect", "--host", &self.address.to_string(), "--ca-file"])
            .arg(&self.ca_file)
            .args(["--password-stdin", "--interval", "0", "--timeout", "5"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- local's stderr ---\n{}", self.log());
        }
    }
}

fn python() -> PathBuf {
    std::env::var_os("IOT_CUSTOM_AUTH_TEST_PYTHON")
        .expect(
            "IOT_CUSTOM_AUTH_TEST_PYTHON is not set: run the tests with scripts/test, which \
             creates the Python venv with paho-mqtt and sets it",
        )
        .into()
}

/// Adds a device and returns its generated password.
fn add_device(config: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["--config".as_ref(), config.as_os_str()])
        .args(["--output", "json", "device", "add"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: Value = serde_json::from_slice(&out.stdout).unwrap();
    added["password"].as_str().unwrap().to_string()
}

/// The pretty-printed JSON `local` writes on stdout once it listens.
fn read_json(stdout: std::process::ChildStdout, dir: &TempDir) -> Value {
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        text.push_str(&line);
        if line == "}" {
            return serde_json::from_str(&text).unwrap();
        }
    }
    let log = std::fs::read_to_string(dir.path().join("local.log")).unwrap_or_default();
    panic!("local exited before listening:\n{log}");
}

/// paho's code for an MQTT 3.1.1 CONNACK "not authorized" (5), mapped to MQTT 5's 0x87.
const NOT_AUTHORIZED: u64 = 135;

#[test]
fn right_password_publishes_and_an_allowed_subscriber_receives() {
    let gw = Gateway::start();
    let seen = gw.paho(
        "pubsub",
        json!({"subscriber": gw.reader(), "filter": "telemetry/#",
               "publisher": gw.sensor(), "topic": "telemetry/sensor1", "payload": "21.5"}),
    );
    assert_eq!(seen["subscriber_connack"], 0, "{seen}");
    assert_eq!(seen["publisher_connack"], 0, "{seen}");
    assert_eq!(seen["granted"], json!([1]), "{seen}");
    assert_eq!(seen["puback"], true, "{seen}");
    assert_eq!(
        seen["received"],
        json!([{"topic": "telemetry/sensor1", "payload": "21.5"}])
    );
    let log = gw.log();
    for expected in [
        "START RequestId: ",
        "\"result\":\"allow\"",
        "REPORT RequestId: ",
    ] {
        assert!(log.contains(expected), "{expected} missing in:\n{log}");
    }
}

#[test]
fn wrong_password_and_other_client_id_are_refused() {
    let gw = Gateway::start();
    let wrong = json!({"username": "sensor1", "password": "not-the-password-at-all"});
    let seen = gw.paho("connect", json!({"device": wrong}));
    assert_eq!(seen["connack"], NOT_AUTHORIZED, "{seen}");
    let other =
        json!({"username": "sensor1", "password": gw.sensor_password, "client_id": "sensor2"});
    let seen = gw.paho("connect", json!({"device": other}));
    assert_eq!(seen["connack"], NOT_AUTHORIZED, "{seen}");
    let log = gw.log();
    assert!(log.contains("wrong password"), "{log}");
    assert!(log.contains("clientId not allowed"), "{log}");
}

#[test]
fn publish_outside_the_policy_disconnects_and_is_not_delivered() {
    let gw = Gateway::start();
    let seen = gw.paho(
        "pubsub",
        json!({"subscriber": gw.reader(), "filter": "telemetry/#",
               "publisher": gw.sensor(), "topic": "telemetry/reader1", "payload": "x"}),
    );
    assert_eq!(seen["publisher_connack"], 0, "{seen}");
    assert_eq!(seen["puback"], false, "{seen}");
    assert_eq!(seen["publisher_disconnected"], true, "{seen}");
    assert_eq!(seen["received"], json!([]), "{seen}");
    assert_eq!(seen["subscriber_disconnected"], false, "{seen}");
}

#[test]
fn subscribe_outside_the_policy_disconnects_the_client() {
    let gw = Gateway::start();
    let seen = gw.paho(
        "pubsub",
        json!({"subscriber": gw.reader(), "filter": "other/#",
               "publisher": gw.sensor(), "topic": "telemetry/sensor1", "payload": "x"}),
    );
    assert_eq!(seen["granted"], Value::Null, "no SUBACK: {seen}");
    assert_eq!(seen["received"], json!([]), "{seen}");
    assert_eq!(seen["subscriber_disconnected"], true, "{seen}");
}

#[test]
fn a_broken_connection_publishes_its_last_will() {
    let gw = Gateway::start();
    let seen = gw.paho(
        "will",
        json!({"subscriber": gw.reader(), "filter": "telemetry/#",
               "publisher": gw.sensor(), "topic": "telemetry/sensor1", "payload": "gone"}),
    );
    assert_eq!(
        seen["received"],
        json!([{"topic": "telemetry/sensor1", "payload": "gone"}]),
        "{seen}"
    );
}

#[test]
fn connections_without_alpn_mqtt_are_refused() {
    let gw = Gateway::start();
    // Not a completed handshake and a silent close: the TLS alert, which paho names.
    let seen = gw.paho("connect", json!({"device": gw.sensor(), "alpn": []}));
    let error = seen["connack"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("no application protocol"), "{seen}");
    let seen = gw.paho(
        "connect",
        json!({"device": gw.sensor(), "alpn": ["x-amzn-mqtt-ca"]}),
    );
    assert!(seen["connack"]["error"].is_string(), "{seen}");
    assert!(gw.log().contains("did not negotiate ALPN `mqtt`"));
    assert!(
        !gw.log().contains("START RequestId"),
        "no ALPN, no authorizer call"
    );
}

#[test]
fn a_second_connection_with_the_same_client_id_closes_the_first() {
    let gw = Gateway::start();
    let seen = gw.paho("takeover", json!({"device": gw.sensor()}));
    assert_eq!(seen["first_connack"], 0, "{seen}");
    assert_eq!(seen["second_connack"], 0, "{seen}");
    assert_eq!(seen["first_disconnected"], true, "{seen}");
    assert_eq!(seen["second_disconnected"], false, "{seen}");
}

#[test]
fn the_connect_command_sees_the_same_decisions() {
    let gw = Gateway::start();
    let ok = gw.connect(
        &gw.sensor_password,
        &["--username", "sensor1", "--count", "2"],
    );
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for (password, args) in [
        (
            "wrong-password-wrong-password",
            vec!["--username", "sensor1"],
        ),
        (
            gw.sensor_password.as_str(),
            vec!["--username", "sensor1", "--client-id", "sensor2"],
        ),
        (
            gw.sensor_password.as_str(),
            vec!["--username", "sensor1", "--topic", "telemetry/x"],
        ),
    ] {
        let denied = gw.connect(password, &[args.as_slice(), &["--expect-deny"]].concat());
        assert_eq!(
            denied.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&denied.stdout)
        );
    }
}

/// A `--code` directory whose handler is `body`.
fn authorizer(body: &str) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("index.mjs"),
        format!("export const handler = async (event) => {{ {body} }};\n"),
    )
    .unwrap();
    dir
}

#[test]
fn bad_authorizer_responses_and_throws_refuse_the_connection() {
    let cases = [
        (
            "invalid principalId",
            r#"return { isAuthenticated: true, principalId: "not-valid", policyDocuments: [],
                        refreshAfterInSeconds: 300, disconnectAfterInSeconds: 300 };"#,
            "`principalId`",
        ),
        ("a throw", r#"throw new Error("boom");"#, "Error: boom"),
    ];
    for (name, body, expected) in cases {
        let code = authorizer(body);
        let gw = Gateway::start_with(&["--code", code.path().to_str().unwrap()]);
        let seen = gw.paho("connect", json!({"device": gw.sensor()}));
        assert_eq!(seen["connack"], NOT_AUTHORIZED, "{name}: {seen}");
        assert!(gw.log().contains(expected), "{name}: {}", gw.log());
    }
}

#[test]
fn a_custom_authorizer_policy_is_enforced_with_the_client_id_variable() {
    let code = authorizer(
        r#"console.log("custom authorizer for", event.protocolData.mqtt.clientId);
           const p = "arn:aws:iot:us-east-1:000000000000";
           return { isAuthenticated: true, principalId: "anyone",
             policyDocuments: [JSON.stringify({ Version: "2012-10-17", Statement: [
               { Effect: "Allow", Action: "iot:Connect", Resource: `${p}:client/*` },
               { Effect: "Allow", Action: ["iot:Publish", "iot:Receive"], Resource: `${p}:topic/telemetry/\${iot:ClientId}` },
               { Effect: "Allow", Action: "iot:Subscribe", Resource: `${p}:topicfilter/telemetry/+` } ] })],
             refreshAfterInSeconds: 300, disconnectAfterInSeconds: 300 };"#,
    );
    let gw = Gateway::start_with(&["--code", code.path().to_str().unwrap()]);
    // reader1 may subscribe to telemetry/+ but receive only its own telemetry/reader1.
    let seen = gw.paho(
        "pubsub",
        json!({"subscriber": gw.reader(), "filter": "telemetry/+",
               "publisher": gw.sensor(), "topic": "telemetry/sensor1", "payload": "x"}),
    );
    assert_eq!(seen["granted"], json!([1]), "{seen}");
    assert_eq!(seen["puback"], true, "{seen}");
    assert_eq!(seen["received"], json!([]), "{seen}");
    let log = gw.log();
    assert!(log.contains("INFO\tcustom authorizer for sensor1"), "{log}");
    assert!(log.contains("not delivered"), "{log}");
}

#[test]
fn an_authorizer_past_5_seconds_is_killed_and_the_next_login_gets_a_fresh_one() {
    let code = authorizer(
        r#"if (event.protocolData.mqtt.username === "slow") await new Promise((r) => setTimeout(r, 60000));
           return { isAuthenticated: true, principalId: "any", policyDocuments: [
             { Version: "2012-10-17", Statement: [{ Effect: "Allow", Action: "iot:Connect", Resource: "*" }] }],
             refreshAfterInSeconds: 300, disconnectAfterInSeconds: 300 };"#,
    );
    let gw = Gateway::start_with(&["--code", code.path().to_str().unwrap()]);
    let slow = json!({"username": "slow", "password": "x", "client_id": "slow"});
    let seen = gw.paho("connect", json!({"device": slow}));
    assert_eq!(seen["connack"], NOT_AUTHORIZED, "{seen}");
    let seen = gw.paho("connect", json!({"device": gw.sensor()}));
    assert_eq!(seen["connack"], 0, "{seen}");
    let log = gw.log();
    assert!(log.contains("Task timed out after 5.00 seconds"), "{log}");
    assert_eq!(log.matches("INIT_START").count(), 2, "{log}");
}

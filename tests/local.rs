//! End-to-end tests of `iot-custom-auth local`: the built binary with a temp config and cert dir,
//! the bundled authorizer under the machine's `node`, and real third-party clients over MQTT 3.1.1
//! and 5: paho-mqtt (tests/local_paho.py, the client the manual recipe uses), Debian's
//! mosquitto_pub/mosquitto_sub, MQTT.js (tests/local_mqttjs.cjs), the AWS IoT Device SDK v2 for
//! Python's custom-authorizer builders (tests/local_awsiot.py), and `iot-custom-auth connect`.
//!
//! The Python with paho-mqtt and awsiotsdk comes from IOT_CUSTOM_AUTH_TEST_PYTHON, MQTT.js from
//! IOT_CUSTOM_AUTH_TEST_MQTTJS and node from IOT_CUSTOM_AUTH_NODE, which scripts/test sets.

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
    authorizer_name: String,
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
            authorizer_name: listening["authorizer_name"].as_str().unwrap().into(),
            dir,
            sensor_password,
            reader_password,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default()
    }

    /// paho-mqtt over MQTT 3.1.1.
    fn paho(&self, scenario: &str, args: Value) -> Value {
        self.paho_v(4, scenario, args)
    }

    /// paho-mqtt over MQTT `protocol` (4: 3.1.1, 5).
    fn paho_v(&self, protocol: u8, scenario: &str, mut args: Value) -> Value {
        args["host"] = json!(self.address.ip().to_string());
        args["port"] = json!(self.address.port());
        args["ca"] = json!(self.ca_file);
        args["protocol"] = json!(protocol);
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

    /// The AWS IoT Device SDK v2 for Python's custom-authorizer builder for `protocol`.
    fn aws_sdk(&self, protocol: u8, mut args: Value) -> Value {
        args["host"] = json!("localhost");
        args["port"] = json!(self.address.port());
        args["ca"] = json!(self.ca_file);
        args["protocol"] = json!(protocol);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/local_awsiot.py");
        let out = Command::new(python())
            .arg(script)
            .arg(args.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "awsiotsdk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// MQTT.js under the project's Node.js.
    fn mqttjs(&self, protocol: u8, mut args: Value) -> Value {
        args["port"] = json!(self.address.port());
        args["ca"] = json!(self.ca_file);
        args["protocol"] = json!(protocol);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/local_mqttjs.cjs");
        let node = std::env::var_os("IOT_CUSTOM_AUTH_NODE").unwrap_or_else(|| "node".into());
        let mqttjs = std::env::var_os("IOT_CUSTOM_AUTH_TEST_MQTTJS").expect(
            "IOT_CUSTOM_AUTH_TEST_MQTTJS is not set: run the tests with scripts/test, which \
             installs MQTT.js and sets it",
        );
        let out = Command::new(node)
            .arg(script)
            .arg(args.to_string())
            .env("IOT_CUSTOM_AUTH_TEST_MQTTJS", mqttjs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "MQTT.js: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// mosquitto_pub or mosquitto_sub (`tool`) against this gateway, `version` `mqttv311` or
    /// `mqttv5`.
    fn mosquitto(&self, tool: &str, version: &str, user: &str, password: &str) -> Command {
        let mut command = Command::new(tool);
        command
            .args(["-h", "localhost", "-p", &self.address.port().to_string()])
            .args(["-V", version, "--tls-alpn", "mqtt", "--cafile"])
            .arg(&self.ca_file)
            .args(["-i", user, "-u", user, "-P", password]);
        command
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

/// paho's code for an MQTT 3.1.1 CONNACK "not authorized" (5), mapped to MQTT 5's 0x87; also
/// MQTT 5's own 0x87.
const NOT_AUTHORIZED: u64 = 135;
/// MQTT 5's 0x86, bad user name or password.
const BAD_CREDENTIALS: u64 = 134;

/// A `--code` authorizer for the session tests: any device whose password is `open-sesame`,
/// allowed everything under `telemetry/` (shared subscriptions and retained messages included).
fn open_authorizer() -> TempDir {
    authorizer(
        r#"const { username, password } = event.protocolData.mqtt;
           if (Buffer.from(password ?? "", "base64").toString() !== "open-sesame")
             return { isAuthenticated: false };
           const p = "arn:aws:iot:us-east-1:000000000000";
           return { isAuthenticated: true, principalId: "open",
             policyDocuments: [{ Version: "2012-10-17", Statement: [
               { Effect: "Allow", Action: "iot:Connect", Resource: `${p}:client/*` },
               { Effect: "Allow", Action: ["iot:Publish", "iot:RetainPublish", "iot:Receive"],
                 Resource: `${p}:topic/telemetry/*` },
               { Effect: "Allow", Action: "iot:Subscribe",
                 Resource: [`${p}:topicfilter/telemetry/*`, `${p}:topicfilter/$share/*/telemetry/*`] } ] }],
             refreshAfterInSeconds: 300, disconnectAfterInSeconds: 300 };"#,
    )
}

fn open_device(name: &str) -> Value {
    json!({"username": name, "password": "open-sesame"})
}

#[test]
fn right_password_publishes_and_an_allowed_subscriber_receives() {
    let gw = Gateway::start();
    for protocol in [4, 5] {
        let seen = gw.paho_v(
            protocol,
            "pubsub",
            json!({"subscriber": gw.reader(), "filter": "telemetry/#",
                   "publisher": gw.sensor(), "topic": "telemetry/sensor1", "payload": "21.5"}),
        );
        assert_eq!(seen["subscriber_connack"], 0, "{protocol}: {seen}");
        assert_eq!(seen["publisher_connack"], 0, "{protocol}: {seen}");
        assert_eq!(seen["granted"], json!([1]), "{protocol}: {seen}");
        assert_eq!(seen["puback"], true, "{protocol}: {seen}");
        assert_eq!(seen["puback_reason"], 0, "{protocol}: {seen}");
        let received = &seen["received"][0];
        assert_eq!(received["topic"], "telemetry/sensor1", "{protocol}: {seen}");
        assert_eq!(received["payload"], "21.5", "{protocol}: {seen}");
        if protocol == 5 {
            // User and request/response properties reach an MQTT 5 receiver unchanged.
            assert_eq!(received["UserProperty"], json!([["site", "lab"]]), "{seen}");
            assert_eq!(received["ResponseTopic"], "telemetry/replies", "{seen}");
            assert_eq!(received["CorrelationData"], "req-1", "{seen}");
            assert_eq!(received["ContentType"], "text/plain", "{seen}");
        }
    }
    let log = gw.log();
    for expected in [
        "START RequestId: ",
        "\"result\":\"allow\"",
        "REPORT RequestId: ",
        "CONNECT MQTT 5 client",
        "CONNECT MQTT 3.1.1 client",
    ] {
        assert!(log.contains(expected), "{expected} missing in:\n{log}");
    }
}

#[test]
fn wrong_password_and_other_client_id_are_refused() {
    let gw = Gateway::start();
    let wrong = json!({"username": "sensor1", "password": "not-the-password-at-all"});
    let other =
        json!({"username": "sensor1", "password": gw.sensor_password, "client_id": "sensor2"});
    // 3.1.1 has only "not authorized" (5); MQTT 5 hears "bad user name or password" (0x86).
    for (protocol, expected) in [(4, NOT_AUTHORIZED), (5, BAD_CREDENTIALS)] {
        for device in [&wrong, &other] {
            let seen = gw.paho_v(protocol, "connect", json!({ "device": device }));
            assert_eq!(seen["connack"], expected, "{protocol} {device}: {seen}");
        }
    }
    let log = gw.log();
    assert!(log.contains("wrong password"), "{log}");
    assert!(log.contains("clientId not allowed"), "{log}");
}

#[test]
fn usernames_are_routed_to_authorizers_as_iot_does() {
    let gw = Gateway::start();
    let name = gw.authorizer_name.clone();
    let with_query = |query: &str| {
        json!({"username": format!("sensor1?{query}"), "password": gw.sensor_password,
               "client_id": "sensor1"})
    };
    let sdk =
        "SDK=IoTDeviceSDK/Python&Platform=Unix&Metadata=(CRTVersion=0.36.1;IoTSDKVersion=1.31.0)";
    for protocol in [4, 5] {
        // Our authorizer by name, with and without the SDKs' suffix; and as the default.
        for query in [
            format!("x-amz-customauthorizer-name={name}"),
            format!("x-amz-customauthorizer-name={name}&{sdk}"),
            sdk.to_string(),
        ] {
            let seen = gw.paho_v(protocol, "connect", json!({"device": with_query(&query)}));
            assert_eq!(seen["connack"], 0, "{protocol} {query}: {seen}");
        }
        // Another authorizer's name: refused without invoking ours.
        let before = gw.log().matches("START RequestId").count();
        let other = with_query(&format!("x-amz-customauthorizer-name=other&{sdk}"));
        let seen = gw.paho_v(protocol, "connect", json!({ "device": other }));
        assert_eq!(seen["connack"], NOT_AUTHORIZED, "{protocol}: {seen}");
        assert_eq!(gw.log().matches("START RequestId").count(), before);
    }
    assert!(
        gw.log().contains("asks for authorizer \"other\""),
        "{}",
        gw.log()
    );

    // Not the default authorizer: a username must name it.
    let strict = Gateway::start_with(&["--no-default"]);
    let name = strict.authorizer_name.clone();
    for protocol in [4, 5] {
        let seen = strict.paho_v(protocol, "connect", json!({"device": strict.sensor()}));
        assert_eq!(seen["connack"], NOT_AUTHORIZED, "{protocol}: {seen}");
        let named = json!({"username": format!("sensor1?x-amz-customauthorizer-name={name}"),
                           "password": strict.sensor_password, "client_id": "sensor1"});
        let seen = strict.paho_v(protocol, "connect", json!({ "device": named }));
        assert_eq!(seen["connack"], 0, "{protocol}: {seen}");
    }
    assert!(
        strict.log().contains("no default authorizer"),
        "{}",
        strict.log()
    );
}

#[test]
fn publish_outside_the_policy_gets_iots_treatment() {
    let gw = Gateway::start();
    let args = json!({"subscriber": gw.reader(), "filter": "telemetry/#",
                      "publisher": gw.sensor(), "topic": "telemetry/reader1", "payload": "x"});
    // MQTT 3.1.1: the connection is closed and the message goes nowhere.
    let seen = gw.paho_v(4, "pubsub", args.clone());
    assert_eq!(seen["publisher_connack"], 0, "{seen}");
    assert_eq!(seen["puback"], false, "{seen}");
    assert_eq!(seen["publisher_disconnected"], true, "{seen}");
    assert_eq!(seen["received"], json!([]), "{seen}");
    assert_eq!(seen["subscriber_disconnected"], false, "{seen}");
    // MQTT 5: PUBACK 0x87, the connection stays, the message goes nowhere.
    let seen = gw.paho_v(5, "pubsub", args);
    assert_eq!(seen["puback_reason"], NOT_AUTHORIZED, "{seen}");
    assert_eq!(seen["publisher_disconnected"], false, "{seen}");
    assert_eq!(seen["received"], json!([]), "{seen}");
}

#[test]
fn subscribe_outside_the_policy_gets_iots_treatment() {
    let gw = Gateway::start();
    let args = json!({"subscriber": gw.reader(), "filter": "other/#",
                      "publisher": gw.sensor(), "topic": "telemetry/sensor1", "payload": "x"});
    // MQTT 3.1.1: no SUBACK, the connection is closed.
    let seen = gw.paho_v(4, "pubsub", args.clone());
    assert_eq!(seen["granted"], Value::Null, "no SUBACK: {seen}");
    assert_eq!(seen["received"], json!([]), "{seen}");
    assert_eq!(seen["subscriber_disconnected"], true, "{seen}");
    // MQTT 5: SUBACK 0x87 for that filter, the connection stays.
    let seen = gw.paho_v(5, "pubsub", args);
    assert_eq!(seen["granted"], json!([NOT_AUTHORIZED]), "{seen}");
    assert_eq!(seen["subscriber_disconnected"], false, "{seen}");
}

#[test]
fn a_shared_subscription_delivers_each_message_once() {
    let code = open_authorizer();
    let gw = Gateway::start_with(&["--code", code.path().to_str().unwrap()]);
    for protocol in [4, 5] {
        let seen = gw.paho_v(
            protocol,
            "shared",
            json!({"subscriber": open_device("s1"), "subscriber2": open_device("s2"),
                   "publisher": open_device("p"), "filter": "$share/workers/telemetry/+",
                   "topic": "telemetry/job", "count": 10}),
        );
        assert_eq!(seen["granted"], json!([[1], [1]]), "{protocol}: {seen}");
        let received: Vec<u64> = serde_json::from_value(seen["received"].clone()).unwrap();
        assert_eq!(received.iter().sum::<u64>(), 10, "{protocol}: {seen}");
        assert!(received.iter().all(|&n| n > 0), "both members: {seen}");
    }
}

#[test]
fn a_retained_message_reaches_a_later_subscriber_until_deleted() {
    let code = open_authorizer();
    let gw = Gateway::start_with(&["--code", code.path().to_str().unwrap()]);
    for protocol in [4, 5] {
        let topic = format!("telemetry/state{protocol}");
        let seen = gw.paho_v(
            protocol,
            "retained",
            json!({"subscriber": open_device("late"), "publisher": open_device("p"),
                   "filter": topic, "topic": topic, "payload": "on"}),
        );
        assert_eq!(
            seen["received"],
            json!([{"topic": topic, "payload": "on", "retain": true}]),
            "{protocol}: {seen}"
        );
        assert_eq!(seen["after_delete"], json!([]), "{protocol}: {seen}");
    }
}

#[test]
fn a_persistent_session_gets_its_queued_messages_after_a_reconnect() {
    let code = open_authorizer();
    let gw = Gateway::start_with(&["--code", code.path().to_str().unwrap()]);
    for protocol in [4, 5] {
        let seen = gw.paho_v(
            protocol,
            "persistent",
            json!({"subscriber": open_device(&format!("away{protocol}")),
                   "publisher": open_device("p"), "filter": "telemetry/#",
                   "topic": "telemetry/x"}),
        );
        assert_eq!(seen["second_connack"], 0, "{protocol}: {seen}");
        assert_eq!(seen["session_present"], true, "{protocol}: {seen}");
        let payloads: Vec<&str> = seen["received"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["payload"].as_str().unwrap())
            .collect();
        assert_eq!(
            payloads,
            ["queued 0", "queued 1", "queued 2"],
            "{protocol}: {seen}"
        );
    }
}

#[test]
fn a_stalled_subscriber_does_not_slow_a_publisher_and_is_disconnected() {
    let code = open_authorizer();
    let gw = Gateway::start_with(&["--code", code.path().to_str().unwrap()]);
    for protocol in [4, 5] {
        let seen = gw.paho_v(
            protocol,
            "stalled",
            json!({"subscriber": open_device(&format!("stuck{protocol}")),
                   "publisher": open_device("fast"), "filter": "telemetry/#",
                   "topic": "telemetry/load", "count": 1500, "size": 1024, "budget": 20,
                   "pause_after": 100}),
        );
        // The first 100 fill the stalled subscriber's window; the rest arrive after a pause, so
        // the gateway must notice them waiting by itself (it once slept until the keep-alive).
        // Every QoS 1 message acknowledged: the publisher never waited on the stalled receiver
        // (before, each one past the receiver's queue waited 1 s).
        assert_eq!(seen["acked"], 1500, "{protocol}: {seen}");
        assert_eq!(seen["publisher_disconnected"], false, "{protocol}: {seen}");
        assert_eq!(seen["subscriber_closed"], true, "{protocol}: {seen}");
    }
    let log = gw.log();
    assert!(log.contains("the client did not keep up"), "{log}");
}

#[test]
fn no_password_in_any_output_after_a_second_connect() {
    let gw = Gateway::start();
    let second_password = "second-connect-secret-8c1f";
    let seen = gw.paho(
        "second_connect",
        json!({"device": gw.sensor(), "second_password": second_password}),
    );
    assert_eq!(seen["connack"], json!([0x20, 2, 0, 0]), "{seen}");
    assert_eq!(seen["closed"], true, "{seen}");
    let log = gw.log();
    assert!(log.contains("a second CONNECT"), "{log}");
    assert!(!log.contains(second_password), "{log}");
    assert!(!log.contains(&gw.sensor_password), "{log}");
}

#[test]
fn an_unknown_protocol_level_gets_an_answer_the_client_can_read() {
    let gw = Gateway::start();
    let seen = gw.paho("unknown_level", json!({}));
    // A 3.1.1 CONNACK: 0x01, unacceptable protocol version.
    assert_eq!(seen["answer"], json!([0x20, 2, 0, 1]), "{seen}");
    assert!(
        gw.log().contains("protocol level 6 is not served"),
        "{}",
        gw.log()
    );
}

#[test]
fn mosquitto_clients_over_both_versions() {
    let gw = Gateway::start();
    for version in ["mqttv311", "mqttv5"] {
        let subscriber = gw
            .mosquitto("mosquitto_sub", version, "reader1", &gw.reader_password)
            .args(["-t", "telemetry/#", "-q", "1", "-C", "1", "-W", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let published = gw
            .mosquitto("mosquitto_pub", version, "sensor1", &gw.sensor_password)
            .args(["-t", "telemetry/sensor1", "-q", "1", "-m", "from mosquitto"])
            .output()
            .unwrap();
        assert!(
            published.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&published.stderr)
        );
        let received = subscriber.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&received.stdout).trim(),
            "from mosquitto",
            "{version}: {}",
            String::from_utf8_lossy(&received.stderr)
        );
        let refused = gw
            .mosquitto(
                "mosquitto_pub",
                version,
                "sensor1",
                "wrong-password-entirely",
            )
            .args(["-t", "telemetry/sensor1", "-q", "1", "-m", "x"])
            .output()
            .unwrap();
        assert!(!refused.status.success(), "{version}");
        let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
        let expected = if version == "mqttv5" {
            "bad user name or password"
        } else {
            "not authorised"
        };
        assert!(said.contains(expected), "{version}: {said}");
    }
}

/// A subscriber that reads at full speed gets a burst whole and in order: nothing is dropped
/// for it while its queue (8 MiB) has room, whatever the publisher's pace.
#[test]
fn a_burst_reaches_a_subscriber_that_keeps_reading_whole() {
    const BURST: usize = 20_000;
    let gw = Gateway::start();
    for version in ["mqttv311", "mqttv5"] {
        let subscriber = gw
            .mosquitto("mosquitto_sub", version, "reader1", &gw.reader_password)
            .args(["-t", "telemetry/#", "-q", "0", "-C", &BURST.to_string()])
            .args(["-W", "60"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        // mosquitto_pub -l: one QoS 0 message per line of stdin, as fast as it can send.
        let mut publisher = gw
            .mosquitto("mosquitto_pub", version, "sensor1", &gw.sensor_password)
            .args(["-t", "telemetry/sensor1", "-q", "0", "-l"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines: String = (0..BURST).map(|i| format!("{i}\n")).collect();
        std::io::Write::write_all(&mut publisher.stdin.take().unwrap(), lines.as_bytes()).unwrap();
        let published = publisher.wait_with_output().unwrap();
        assert!(
            published.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&published.stderr)
        );
        let received = subscriber.wait_with_output().unwrap();
        let got: Vec<usize> = String::from_utf8_lossy(&received.stdout)
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(
            got.len(),
            BURST,
            "{version}: {}",
            String::from_utf8_lossy(&received.stderr)
        );
        assert!(
            got.iter().enumerate().all(|(i, n)| i == *n),
            "{version}: out of order"
        );
    }
    assert!(!gw.log().contains("dropped"), "{}", gw.log());
}

#[test]
fn mqttjs_over_both_versions() {
    let gw = Gateway::start();
    let sensor = |extra: Value| {
        let mut args = json!({"username": "sensor1", "password": gw.sensor_password,
                              "topic": "telemetry/sensor1"});
        for (k, v) in extra.as_object().unwrap() {
            args[k] = v.clone();
        }
        args
    };
    for protocol in [4, 5] {
        let seen = gw.mqttjs(protocol, sensor(json!({})));
        assert_eq!(seen["connack"], 0, "{protocol}: {seen}");
        assert_eq!(seen["puback"], 0, "{protocol}: {seen}");
        let seen = gw.mqttjs(
            protocol,
            sensor(json!({"password": "wrong-password-entirely"})),
        );
        let expected = if protocol == 5 { 134 } else { 5 };
        assert_eq!(seen["connack"], expected, "{protocol}: {seen}");
    }
    // MQTT 5: a publish outside the policy is answered in its PUBACK.
    let seen = gw.mqttjs(5, sensor(json!({"topic": "telemetry/reader1"})));
    assert_eq!(seen["puback"], NOT_AUTHORIZED, "{seen}");
    let seen = gw.mqttjs(5, sensor(json!({"subscribe": "other/#"})));
    assert_eq!(seen["granted"], json!([NOT_AUTHORIZED]), "{seen}");
}

#[test]
fn the_aws_iot_device_sdk_builders_over_both_versions() {
    let gw = Gateway::start();
    let name = gw.authorizer_name.clone();
    for protocol in [4, 5] {
        let device = |authorizer: &str, password: &str| {
            json!({"username": "sensor1", "password": password, "authorizer": authorizer,
                   "topic": "telemetry/sensor1"})
        };
        let seen = gw.aws_sdk(protocol, device(&name, &gw.sensor_password));
        assert_eq!(seen["connected"], true, "{protocol}: {seen}");
        assert_eq!(seen["puback"], 0, "{protocol}: {seen}");
        for (authorizer, password, reason) in [
            ("other", gw.sensor_password.as_str(), NOT_AUTHORIZED),
            (name.as_str(), "wrong-password-entirely", BAD_CREDENTIALS),
        ] {
            let seen = gw.aws_sdk(protocol, device(authorizer, password));
            assert_eq!(seen["connected"], false, "{protocol}: {seen}");
            if protocol == 5 {
                assert_eq!(seen["reason"], reason, "{seen}");
            }
        }
    }
    // The SDK's MQTT 3 client reports a CONNACK refusal (3.1.1 code 5, which paho and
    // mosquitto read as "not authorised") only as AWS_ERROR_MQTT_PROTOCOL_ERROR, so the
    // gateway's side says what it answered.
    let log = gw.log();
    assert!(
        log.contains("CONNECT MQTT 3.1.1 client \"sensor1\" (user \"sensor1?x-amz-customauthorizer-name=other&SDK="),
        "{log}"
    );
    // The username the SDK really sends reached the authorizer, suffixes and all.
    let log = gw.log();
    assert!(
        log.contains(&format!("sensor1?x-amz-customauthorizer-name={name}&SDK=")),
        "{log}"
    );
}

#[test]
fn a_broken_connection_publishes_its_last_will() {
    let gw = Gateway::start();
    for protocol in [4, 5] {
        let seen = gw.paho_v(
            protocol,
            "will",
            json!({"subscriber": gw.reader(), "filter": "telemetry/#",
                   "publisher": gw.sensor(), "topic": "telemetry/sensor1", "payload": "gone"}),
        );
        assert_eq!(
            seen["received"],
            json!([{"topic": "telemetry/sensor1", "payload": "gone"}]),
            "{protocol}: {seen}"
        );
    }
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
    for protocol in [4, 5] {
        let seen = gw.paho_v(protocol, "takeover", json!({"device": gw.sensor()}));
        assert_eq!(seen["first_connack"], 0, "{seen}");
        assert_eq!(seen["second_connack"], 0, "{seen}");
        assert_eq!(seen["first_disconnected"], true, "{seen}");
        assert_eq!(seen["second_disconnected"], false, "{seen}");
        if protocol == 5 {
            // MQTT 5 is told why: 0x8E, session taken over.
            assert_eq!(seen["first_disconnect_reason"], 0x8E, "{seen}");
        }
    }
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

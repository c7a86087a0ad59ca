//! The first run: `demo` (the whole flow on this machine, the built binary with the bundled
//! authorizer under the machine's `node`), and `setup`'s guidance when there is nothing to deploy
//! yet or no AWS account (against the local AWS stand-in).

mod common;
// Only the broker is used here, not the raw TLS pieces tests/connect.rs needs.
#[allow(dead_code)]
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::process::{Command, Output, Stdio};

use common::cli::Cli;
use common::standin::StandIn;
use serde_json::Value;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_iot-custom-auth");

/// Empty directories for the working directory, TMPDIR and HOME, so a test sees every file the
/// demo writes.
struct Sandbox {
    cwd: TempDir,
    tmp: TempDir,
    home: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            cwd: tempfile::tempdir().unwrap(),
            tmp: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn demo(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("demo")
            .args(args)
            .current_dir(self.cwd.path())
            .env("TMPDIR", self.tmp.path())
            .env("HOME", self.home.path())
            .env_remove("IOT_CUSTOM_AUTH_CONFIG")
            .env_remove("IOT_CUSTOM_AUTH_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Nothing left behind: no file in any of the three, no process mentioning them.
    fn assert_clean(&self) {
        for dir in [self.cwd.path(), self.tmp.path(), self.home.path()] {
            let left: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert!(left.is_empty(), "left behind: {left:?}");
        }
        let tmp = self.tmp.path().to_string_lossy().into_owned();
        let running = processes_mentioning(&tmp);
        assert!(running.is_empty(), "still running: {running:?}");
    }
}

/// Command lines of live processes that contain `needle` (the node worker runs from the temp
/// dir). Zombies have no command line, and cannot run anything.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_shows_every_step_with_its_reason_and_leaves_nothing_behind() {
    let sandbox = Sandbox::new();
    let out = sandbox.demo(&[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // Each step: what was sent, what the client saw, what the authorizer and gateway decided.
    for expected in [
        "[1/5] allowed publish: sensor1 logs in with its password and publishes to telemetry/sensor1",
        "client      connected; 1 of 1 messages acknowledged",
        "authorizer  allow",
        "accepted: principal sensor1",
        "[2/5] wrong password",
        "authorizer  deny: wrong password",
        "gateway     CONNECT MQTT 3.1.1 client \"sensor1\" (user \"sensor1\") refused (reason 0x86): the authorizer returned isAuthenticated: false",
        "[3/5] other client id",
        "authorizer  deny: clientId not allowed",
        "[4/5] topic outside policy",
        "PUBLISH to telemetry/sensor2 refused (0x87): the policy does not allow iot:Publish",
        "publish refused",
        "[5/5] subscriber receives",
        "monitor1 received `demo ",
        "5 of 5 expectations held",
        "iot-custom-auth setup",
        "iot-custom-auth connect --username sensor1",
    ] {
        assert!(
            stdout.contains(expected),
            "expected `{expected}` in:\n{stdout}"
        );
    }
    assert_eq!(stdout.matches("      ok: expected").count(), 5, "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    sandbox.assert_clean();
}

#[test]
fn demo_json_gives_the_steps_as_data() {
    let sandbox = Sandbox::new();
    let out = sandbox.demo(&["--output", "json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON document on stdout");
    assert_eq!(report["passed"], true);
    assert_eq!(report["failed"], serde_json::json!([]));
    let steps = report["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "allowed_publish",
            "wrong_password",
            "other_client_id",
            "topic_outside_policy",
            "subscriber_receives"
        ]
    );
    assert_eq!(steps[1]["authorizer"]["result"], "deny");
    assert_eq!(steps[1]["authorizer"]["reason"], "wrong password");
    assert_eq!(steps[2]["authorizer"]["reason"], "clientId not allowed");
    for step in steps {
        assert_eq!(step["passed"], true, "{step}");
        assert!(!step["gateway"].as_array().unwrap().is_empty(), "{step}");
    }
    sandbox.assert_clean();
}

/// An authorizer that lets everyone in with every right: demo must notice and say which
/// expectations failed. Its directory's `.env` stays out of the package, and demo says so.
#[test]
fn demo_with_an_allow_everything_authorizer_fails_naming_the_expectations() {
    let sandbox = Sandbox::new();
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("index.mjs"),
        r#"export const handler = async (event) => {
  console.log(JSON.stringify({ msg: "login", result: "allow", reason: "allows everyone" }));
  return {
    isAuthenticated: true,
    principalId: "anyone",
    policyDocuments: [JSON.stringify({
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Action: "iot:*", Resource: "*" }],
    })],
    refreshAfterInSeconds: 300,
    disconnectAfterInSeconds: 86400,
  };
};
"#,
    )
    .unwrap();
    std::fs::write(code.path().join(".env"), "AWS_SECRET_ACCESS_KEY=leak\n").unwrap();
    let dir = code.path().to_str().unwrap();

    let out = sandbox.demo(&["--code", dir]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "2 of 5 expectations held; FAILED: wrong password, other client id, topic outside policy"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("authorizer  allow: allows everyone"),
        "{stdout}"
    );
    assert!(
        stderr.contains("left out of the Lambda package") && stderr.contains(".env"),
        "{stderr}"
    );

    let out = sandbox.demo(&["--code", dir, "--output", "json"]);
    assert_eq!(out.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(
        report["failed"],
        serde_json::json!(["wrong_password", "other_client_id", "topic_outside_policy"])
    );
    sandbox.assert_clean();
}

fn on_a_terminal(cli: &Cli, standin: &StandIn, command: &str, input: &str) -> (i32, String) {
    let command = format!("{BIN} {command}");
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(cli.path())
        .envs(standin.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script (util-linux)");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// With no devices, `setup` on a terminal asks for the first one, shows its generated password
/// once, and deploys it; without a terminal it stops as before, pointing at `device add` and
/// `demo`.
#[tokio::test(flavor = "multi_thread")]
async fn setup_without_devices_offers_to_add_the_first_one_on_a_terminal() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);

    let run = cli.run(&["setup"]).expect(2);
    assert!(
        run.stderr.contains("declares no devices")
            && run.stderr.contains("`iot-custom-auth device add USERNAME`")
            && run.stderr.contains("`iot-custom-auth demo`"),
        "{}",
        run.stderr
    );
    assert!(standin.calls().iter().all(|c| !c.mutating));

    let (code, screen) = on_a_terminal(&cli, &standin, "setup", "bad name\nsensor1\n");
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("Add the first one now?"), "{screen}");
    assert!(screen.contains("username `bad name` must be"), "{screen}");
    let password = screen
        .lines()
        .find_map(|l| l.trim().strip_prefix("password:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| panic!("no password shown:\n{screen}"));
    assert_eq!(password.len(), 24, "{screen}");
    assert!(
        screen.contains("Store this password now") && screen.contains("authorizer "),
        "{screen}"
    );
    assert!(screen.contains("changed 6 of 6 resources"), "{screen}");
    let config = std::fs::read_to_string(cli.config_path()).unwrap();
    assert!(config.contains("username = \"sensor1\"") && !config.contains(&password));
    // The device it added is the one deployed: the authorizer lets it in.
    let run = cli.run_with(
        &["status", "--probe-user", "sensor1"],
        None,
        &[("IOT_CUSTOM_AUTH_PASSWORD", password.as_str())],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);

    // An empty answer stops, changing nothing.
    let fresh = Cli::new(&standin);
    standin.clear_calls();
    let (code, screen) = on_a_terminal(&fresh, &standin, "setup", "\n");
    assert_eq!(code, 2, "{screen}");
    assert!(!fresh.config_path().exists());
    assert!(standin.calls().is_empty(), "no AWS call");
}

/// Without AWS credentials, the hint names `demo` as the way to try everything.
#[tokio::test(flavor = "multi_thread")]
async fn missing_credentials_point_to_demo() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let run = cli
        .run_with(
            &["setup"],
            None,
            &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
        )
        .expect(1);
    assert!(
        run.stderr.contains("no usable AWS credentials")
            && run
                .stderr
                .contains("without an AWS account, run `iot-custom-auth demo`"),
        "{}",
        run.stderr
    );
}

/// `setup`'s "Try it" line keeps the password out of argv (where `ps` shows it) and still logs
/// in: run as printed, with only the broker's address and CA swapped for a real mosquitto.
#[tokio::test(flavor = "multi_thread")]
async fn the_setup_hint_keeps_the_password_out_of_argv_and_works() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    let password = cli.add_device("sensor1", &[]);
    let run = cli.run(&["setup", "--output", "json"]).expect(0);
    let connection = &run.json()["connection"];
    let example = connection["example"].as_str().unwrap().to_string();
    let endpoint = connection["endpoint"].as_str().unwrap();
    let (_, command) = example
        .split_once("mosquitto_pub ")
        .expect("a mosquitto_pub command");
    assert!(!command.contains("-P "), "password flag in argv: {example}");
    assert!(!example.contains(&password));

    let broker = mosquitto::Mosquitto::start(&[("sensor1", &password)]);
    let local = example
        .replace(
            &format!("-h {endpoint} -p 443"),
            &format!("-h localhost -p {}", broker.port),
        )
        .replace(
            "--tls-use-os-certs",
            &format!("--cafile {}", broker.ca_file.display()),
        );
    assert_ne!(local, example, "the hint's shape changed: {example}");
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args(["-c", &local])
        .env("IOT_CUSTOM_AUTH_PASSWORD", &password)
        .env("HOME", home.path())
        .env("PATH", path_with_sbin())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{local}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log()
    );
    assert!(
        broker.log().contains("u'sensor1'"),
        "mosquitto saw the login: {}",
        broker.log()
    );
}

fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/sbin:/usr/bin")
}

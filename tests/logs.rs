//! `logs` and the log group end to end, against the stand-in: TestInvokeAuthorizer's output lands
//! in CloudWatch Logs as Lambda writes it, and `logs` reads the decisions back through the real
//! FilterLogEvents API with JSON filter patterns.

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::Client as Logs;
use aws_sdk_lambda::types::{LogFormat, LoggingConfig};
use common::cli::{Cli, Run};
use common::standin::StandIn;
use serde_json::Value;

const FUNCTION: &str = "iot-custom-auth-authorizer";
const GROUP: &str = "/aws/lambda/iot-custom-auth-authorizer";
const OWNER_TAG: &str = "iot-custom-auth:deployment";

fn deployed() -> (StandIn, Cli, String) {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    let password = cli.add_device("sensor1", &[]);
    cli.add_device("sensor2", &[]);
    cli.run(&["setup"]).expect(0);
    (standin, cli, password)
}

/// One allowed and one denied login of `user` (status's probes: its password, a random one).
fn probe(cli: &Cli, user: &str, password: &str) {
    probe_expecting(cli, user, password, 0);
}

/// The same, from a status that exits `code`.
fn probe_expecting(cli: &Cli, user: &str, password: &str, code: i32) {
    cli.run_with(
        &["status", "--probe-user", user],
        None,
        &[("IOT_CUSTOM_AUTH_PASSWORD", password)],
    )
    .expect(code);
}

fn json_lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON object a line ({e}): {l}\n{}", run.stdout))
        })
        .collect()
}

async fn logs_client(standin: &StandIn) -> Logs {
    Logs::new(&standin.sdk_config().await)
}

async fn lambda_client(standin: &StandIn) -> aws_sdk_lambda::Client {
    aws_sdk_lambda::Client::new(&standin.sdk_config().await)
}

async fn group(logs: &Logs) -> Option<aws_sdk_cloudwatchlogs::types::LogGroup> {
    logs.describe_log_groups()
        .log_group_name_prefix(GROUP)
        .send()
        .await
        .unwrap()
        .log_groups()
        .iter()
        .find(|g| g.log_group_name() == Some(GROUP))
        .cloned()
}

#[test]
fn logs_shows_allowed_and_denied_logins_with_their_reasons() {
    let (_standin, cli, password) = deployed();
    let before = cli.run(&["logs"]).expect(0);
    assert!(before.stdout.is_empty(), "{}", before.stdout);
    assert!(
        before.stderr.contains("no login decisions since"),
        "one clear line when nothing was logged yet:\n{}",
        before.stderr
    );
    probe(&cli, "sensor1", &password);

    let table = cli.run(&["logs"]).expect(0);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(rows.len(), 3, "header and two decisions:\n{}", table.stdout);
    assert!(
        rows[0].starts_with("TIME") && rows[0].contains("REASON"),
        "{}",
        rows[0]
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("sensor1") && r.contains("allow")),
        "{}",
        table.stdout
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("sensor1") && r.contains("deny") && r.contains("wrong password")),
        "{}",
        table.stdout
    );
    assert!(
        !table.stdout.contains('\x1b'),
        "no colour without a terminal"
    );

    let all = json_lines(&cli.run(&["logs", "--output", "json"]).expect(0));
    assert_eq!(all.len(), 2, "{all:?}");
    for d in &all {
        assert_eq!(d["user"], "sensor1");
        assert_eq!(d["client_id"], "sensor1");
        assert!(d["duration_ms"].as_f64().is_some(), "REPORT joined: {d}");
        assert!(d["time"].as_str().unwrap().ends_with('Z'), "{d}");
    }
    assert!(
        all[0]["time"].as_str() <= all[1]["time"].as_str(),
        "newest last"
    );

    let denied = json_lines(&cli.run(&["logs", "--denied", "--output", "json"]).expect(0));
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["result"], "deny");
    assert_eq!(denied[0]["reason"], "wrong password");

    let other = cli.run(&["logs", "--user", "sensor2"]).expect(0);
    assert!(other.stdout.is_empty(), "{}", other.stdout);
    assert!(
        other.stderr.contains("matching user sensor2"),
        "{}",
        other.stderr
    );

    let limited = json_lines(
        &cli.run(&["logs", "--limit", "1", "--output", "json"])
            .expect(0),
    );
    assert_eq!(limited, all[1..].to_vec(), "--limit keeps the newest");

    std::thread::sleep(Duration::from_millis(2100));
    let recent = cli.run(&["logs", "--since", "2s"]).expect(0);
    assert!(recent.stdout.is_empty(), "--since 2s: {}", recent.stdout);
    let since_date = cli.run(&["logs", "--since", "2020-01-01T00:00Z", "--output", "json"]);
    assert_eq!(json_lines(&since_date.expect(0)).len(), 2);
}

#[test]
fn logs_refuses_bad_filters_before_calling_aws() {
    let (standin, cli, _) = deployed();
    standin.clear_calls();
    let run = cli.run(&["logs", "--user", "a\" || $.x = \"y"]).expect(2);
    assert!(run.stderr.contains("--user"), "{}", run.stderr);
    let run = cli.run(&["logs", "--since", "yesterday"]).expect(2);
    assert!(run.stderr.contains("15m"), "{}", run.stderr);
    assert!(standin.calls().is_empty());
}

#[test]
fn logs_without_permission_says_which_one_in_one_line() {
    let (standin, cli, _) = deployed();
    standin.set_behaviour(serde_json::json!({"fail": {"logs:FilterLogEvents": {
        "code": "AccessDeniedException", "status": 400,
        "message": "User is not authorized to perform: logs:FilterLogEvents"}}}));
    let run = cli.run(&["logs"]).expect(1);
    assert!(
        run.stderr.contains("logs:FilterLogEvents") && run.stderr.contains("iam-policy --for logs"),
        "{}",
        run.stderr
    );
}

#[test]
fn logs_says_when_the_authorizer_was_never_invoked() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let run = cli.run(&["logs"]).expect(0);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("no logs yet") && run.stderr.contains(GROUP),
        "{}",
        run.stderr
    );
}

#[test]
fn logs_follow_prints_a_later_decision_and_stops_cleanly_on_sigint() {
    let (_standin, cli, password) = deployed();
    let mut child = Command::new(env!("CARGO_BIN_EXE_iot-custom-auth"))
        .args(["logs", "--follow", "--denied", "--output", "json"])
        .current_dir(cli.path())
        .envs(_standin.env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // Let it read once before the login happens.
    std::thread::sleep(Duration::from_millis(1500));
    probe(&cli, "sensor1", &password);
    let line = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("--follow printed the new decision");
    let d: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(d["result"], "deny", "{d}");
    assert_eq!(d["reason"], "wrong password", "{d}");

    let started = Instant::now();
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "clean exit on SIGINT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "the allowed login is filtered out by --denied"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_owns_the_log_group_with_its_retention_and_repairs_drift() {
    let (standin, cli, password) = deployed();
    let logs = logs_client(&standin).await;
    let g = group(&logs).await.expect("setup created the log group");
    assert_eq!(g.retention_in_days(), Some(30));
    let tags = logs
        .list_tags_for_resource()
        .resource_arn(g.log_group_arn().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.tags().unwrap().get(OWNER_TAG).map(String::as_str),
        Some("iot-custom-auth")
    );
    let lambda = lambda_client(&standin).await;
    let logging = lambda
        .get_function_configuration()
        .function_name(FUNCTION)
        .send()
        .await
        .unwrap()
        .logging_config()
        .cloned()
        .unwrap();
    assert_eq!(logging.log_format(), Some(&LogFormat::Json));
    assert_eq!(logging.log_group(), Some(GROUP));

    // A retention changed by hand: named by status, repaired by setup.
    logs.put_retention_policy()
        .log_group_name(GROUP)
        .retention_in_days(7)
        .send()
        .await
        .unwrap();
    let status = cli.run(&["status", "--output", "json"]).expect(3);
    let check = status.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "log_group.retention")
        .cloned()
        .unwrap();
    assert_eq!(check["state"], "fail");
    assert!(
        check["detail"].as_str().unwrap().contains("7 days"),
        "{check}"
    );
    let run = cli.run(&["setup"]).expect(0);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("log-group") && l.contains("updated (retention 30 days)")),
        "{}",
        run.stdout
    );
    assert_eq!(group(&logs).await.unwrap().retention_in_days(), Some(30));
    cli.run(&["status"]).expect(0);

    // The function switched back to Text logging: `logs` cannot filter that, status names it,
    // setup repairs it.
    lambda
        .update_function_configuration()
        .function_name(FUNCTION)
        .logging_config(LoggingConfig::builder().log_format(LogFormat::Text).build())
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // status fails function.logging now, and still probes.
    probe_expecting(&cli, "sensor1", &password, 3);
    let text_lines = logs
        .filter_log_events()
        .log_group_name(GROUP)
        .filter_pattern("wrong password")
        .send()
        .await
        .unwrap();
    assert_eq!(text_lines.events().len(), 1, "the Text line is in the log");
    assert!(
        text_lines.events()[0]
            .message()
            .unwrap()
            .contains("\tINFO\t{\"msg\":\"login\""),
        "{:?}",
        text_lines.events()[0].message()
    );
    let json_pattern = logs
        .filter_log_events()
        .log_group_name(GROUP)
        .filter_pattern("{ $.message.result = \"deny\" }")
        .send()
        .await
        .unwrap();
    assert!(
        json_pattern.events().is_empty(),
        "a JSON pattern never matches a Text line: {:?}",
        json_pattern.events()
    );
    let run = cli.run(&["logs"]).expect(1);
    assert!(run.stderr.contains("Text"), "{}", run.stderr);
    let status = cli.run(&["status", "--output", "json"]).expect(3);
    assert!(
        status.stdout.contains("function.logging"),
        "{}",
        status.stdout
    );
    let run = cli.run(&["setup"]).expect(0);
    assert!(run.stdout.contains("logging"), "{}", run.stdout);
    cli.run(&["status"]).expect(0);

    // A new retention in the config.
    let config = std::fs::read_to_string(cli.config_path()).unwrap();
    std::fs::write(
        cli.config_path(),
        format!("[deployment]\nlog_retention_days = 14\n\n{config}"),
    )
    .unwrap();
    cli.run(&["setup"]).expect(0);
    assert_eq!(group(&logs).await.unwrap().retention_in_days(), Some(14));

    let run = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("log-group") && l.contains(GROUP) && l.contains("deleted")),
        "{}",
        run.stdout
    );
    assert!(
        group(&logs).await.is_none(),
        "teardown removed the log group"
    );
}

#[test]
fn an_unusable_retention_is_refused_before_anything_changes() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let config = std::fs::read_to_string(cli.config_path()).unwrap();
    std::fs::write(
        cli.config_path(),
        format!("[deployment]\nlog_retention_days = 31\n\n{config}"),
    )
    .unwrap();
    standin.clear_calls();
    let run = cli.run(&["setup"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("log_retention_days") && run.stderr.contains("30, 60"),
        "{}",
        run.stderr
    );
    assert!(standin.calls().iter().all(|c| !c.mutating));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_group_that_is_not_ours_is_left_alone_and_reported() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let logs = logs_client(&standin).await;
    logs.create_log_group()
        .log_group_name(GROUP)
        .send()
        .await
        .unwrap();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let run = cli.run(&["setup"]).expect(0);
    assert!(
        run.stdout.lines().any(|l| l.starts_with("log-group")
            && l.contains("skipped")
            && l.contains("not created by")),
        "{}",
        run.stdout
    );
    assert_eq!(group(&logs).await.unwrap().retention_in_days(), None);
    let status = cli.run(&["status", "--output", "json"]).expect(3);
    let failing: Vec<String> = status.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        failing.iter().any(|id| id == "log_group.owned"),
        "{failing:?}"
    );
    let run = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("log-group") && l.contains("skipped")),
        "{}",
        run.stdout
    );
    assert!(group(&logs).await.is_some(), "left alone");
}

#[test]
fn a_refused_probe_points_to_the_exact_logs_command() {
    let (_standin, cli, _) = deployed();
    let status = cli
        .run_with(
            &[
                "--name",
                "iot-custom-auth",
                "status",
                "--probe-user",
                "sensor1",
                "--output",
                "json",
            ],
            None,
            &[("IOT_CUSTOM_AUTH_PASSWORD", "wrong-password-wrong-password")],
        )
        .expect(3);
    let fix = status.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "probe.allowed")
        .and_then(|c| c["fix"].as_str().map(str::to_string))
        .unwrap();
    let command = fix
        .split('`')
        .find(|part| part.contains(" logs "))
        .unwrap_or_else(|| panic!("no logs command in {fix}"));
    assert!(
        command.ends_with("logs --user sensor1 --client-id sensor1 --since 15m"),
        "{command}"
    );
    // Run exactly what it says (without the program name), and it shows the refusal.
    let args: Vec<&str> = command
        .split(' ')
        .skip(1)
        .chain(["--output", "json"])
        .collect();
    let shown = json_lines(&cli.run(&args).expect(0));
    assert!(
        shown
            .iter()
            .any(|d| d["result"] == "deny" && d["reason"] == "wrong password"),
        "{shown:?}"
    );
}

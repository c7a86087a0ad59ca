//! `setup` runs its steps concurrently (issue 15): the IoT steps while IAM propagates the role and
//! Lambda creates the function, the invoke permission once the function is Active. Against the
//! stand-in with its real-AWS delays, as a caller holding only what `iam-policy --for setup`
//! prints: nothing is reported before it works (a device logs in the moment `setup` returns),
//! and a failure in any one step leaves a state the next `setup` completes.

mod common;

use common::cli::{Cli, Run};
use common::standin::{Call, StandIn, logs_in};
use serde_json::json;

const NAME: &str = "iot-custom-auth";

/// The stand-in's environment signed as an identity holding only the printed `setup` policy.
fn setup_identity(standin: &StandIn, admin: &Cli, name: &str) -> Vec<(String, String)> {
    let printed = admin
        .run(&["iam-policy", "--for", "setup", "--output", "json"])
        .expect(0)
        .json();
    let identity = standin.identity(name, &printed);
    standin.env_as(&identity)
}

fn run_as(cli: &Cli, env: &[(String, String)], args: &[&str]) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cli.run_with(args, None, &env)
}

/// TestInvokeAuthorizer for the one device these tests add: authenticated?
async fn sensor1_logs_in(standin: &StandIn, password: &str) -> bool {
    logs_in(
        &aws_sdk_iot::Client::new(&standin.sdk_config().await),
        NAME,
        "sensor1",
        password,
    )
    .await
}

fn ok(c: &Call) -> bool {
    (200..300).contains(&c.status)
}

/// The result lines of a text `setup` run: (resource, action).
fn results(run: &Run) -> Vec<(String, String)> {
    run.stdout
        .lines()
        .take_while(|l| !l.starts_with("changed "))
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words[0].to_string(), words[2].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_overlaps_the_iot_steps_with_the_waits_and_returns_only_once_a_device_logs_in() {
    let standin = StandIn::start();
    let admin = Cli::new(&standin);
    let password = admin.add_device("sensor1", &[]);
    let env = setup_identity(&standin, &admin, "ci-setup");

    let run = run_as(&admin, &env, &["setup"]).expect(0);
    // Right away: no grace period after `setup` returns.
    assert!(sensor1_logs_in(&standin, &password).await);

    let calls = standin.calls();
    let timeline = format!("{calls:#?}");
    let created = calls
        .iter()
        .find(|c| c.operation == "CreateFunction" && ok(c))
        .expect("a successful CreateFunction");
    let refused = calls
        .iter()
        .filter(|c| c.operation == "CreateFunction" && !ok(c))
        .count();
    assert!(refused > 0, "the role was not propagating:\n{timeline}");
    // The IoT steps only need the function's ARN: both were done while IAM propagated the role.
    for op in ["CreateAuthorizer", "SetDefaultAuthorizer"] {
        let call = calls.iter().find(|c| c.operation == op).unwrap();
        assert!(
            ok(call) && call.end <= created.start,
            "{op} waited for the function:\n{timeline}"
        );
    }
    // The permission once the function is Active: one AddPermission, never refused as Pending,
    // sent after the poll that saw Active.
    let permissions: Vec<&Call> = calls
        .iter()
        .filter(|c| c.operation == "AddPermission")
        .collect();
    assert!(
        permissions.len() == 1 && ok(permissions[0]),
        "AddPermission:\n{timeline}"
    );
    let last_poll = calls
        .iter()
        .filter(|c| c.operation == "GetFunction" && c.start > created.end)
        .map(|c| c.end)
        .max()
        .expect("polls while Pending");
    assert!(permissions[0].start >= last_poll, "{timeline}");
    // Only the refused CreateFunction attempts failed.
    let failed: Vec<&Call> = calls
        .iter()
        .filter(|c| !ok(c) && c.mutating && c.operation != "CreateFunction")
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");

    // Results and progress in walk order, whatever finished first.
    let kinds: Vec<String> = results(&run).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        kinds,
        [
            "role",
            "log-group",
            "function",
            "authorizer",
            "permission",
            "default-authorizer"
        ]
    );
    let announced: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("creating "))
        .collect();
    let labels = [
        "IAM role",
        "log group",
        "Lambda function",
        "IoT authorizer",
        "invoke permission",
        "default authorizer",
    ];
    assert_eq!(announced.len(), labels.len(), "{}", run.stderr);
    for (line, label) in announced.iter().zip(labels) {
        assert!(line.starts_with(&format!("creating {label} ")), "{line}");
    }
    assert_eq!(
        run.stderr.matches("waiting for IAM to propagate").count(),
        1,
        "the wait is said once:\n{}",
        run.stderr
    );
}

/// A failure injected in each step that runs concurrently with others: `setup` fails naming the
/// step, what does not depend on it is done anyway, what depends on it is not attempted, and the
/// next `setup` completes exactly what is left, after which a device logs in.
#[tokio::test(flavor = "multi_thread")]
async fn a_failure_in_each_overlapped_step_leaves_a_state_the_next_setup_completes() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    // (injected operation, its code, the step named in the error, what the re-run changes)
    let cases: [(&str, &str, &str, &[&str]); 7] = [
        (
            "iam:CreateRole",
            "InvalidInput",
            "IAM role",
            &["role", "function", "permission"],
        ),
        (
            "iam:AttachRolePolicy",
            "InvalidInput",
            "IAM role",
            &["role", "function", "permission"],
        ),
        (
            "logs:CreateLogGroup",
            "InvalidParameterException",
            "log group",
            &["log-group", "function", "permission"],
        ),
        (
            "lambda:CreateFunction",
            "InvalidParameterValueException",
            "Lambda function",
            &["function", "permission"],
        ),
        (
            "iot:CreateAuthorizer",
            "InvalidRequestException",
            "IoT authorizer",
            &["authorizer", "default-authorizer"],
        ),
        (
            "lambda:AddPermission",
            "InvalidParameterValueException",
            "invoke permission",
            &["permission"],
        ),
        (
            "iot:SetDefaultAuthorizer",
            "InvalidRequestException",
            "default authorizer",
            &["default-authorizer"],
        ),
    ];
    for (i, (operation, code, step, left)) in cases.into_iter().enumerate() {
        standin.reset();
        standin.set_behaviour(json!({
            "role_propagation_seconds": 1.0,
            "function_pending_seconds": 0.5,
            "fail": {operation: {"code": code, "status": 400, "message": "injected", "count": 1}},
        }));
        let admin = Cli::new(&standin);
        let password = admin.add_device("sensor1", &[]);
        let env = setup_identity(&standin, &admin, &format!("ci-setup-{i}"));

        let failed = run_as(&admin, &env, &["setup"]).expect(1);
        assert!(
            failed.stderr.contains(step) && failed.stderr.contains("injected"),
            "{operation}: {}",
            failed.stderr
        );
        assert!(failed.stdout.is_empty(), "{operation}: {}", failed.stdout);

        let rerun = run_as(&admin, &env, &["setup"]).expect(0);
        assert!(
            sensor1_logs_in(&standin, &password).await,
            "{operation}: no login after the re-run"
        );
        let changed: Vec<String> = results(&rerun)
            .into_iter()
            .filter(|(_, action)| action != "unchanged")
            .map(|(kind, _)| kind)
            .collect();
        assert_eq!(changed, *left, "{operation}:\n{}", rerun.stdout);
        admin.run(&["status"]).expect(0);
    }
}

//! Where real AWS is stricter than a lenient emulator (issue 10), end to end against the stand-in
//! in its strict modes: a caller without `lambda:ListTags`, Lambda's Failed/Inactive/Pending
//! states, IAM's DeleteConflict after a detach, a refused SetDefaultAuthorizer, TestInvokeAuthorizer
//! errors, and the least-privilege lifecycle in every partition.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::cli::{Cli, Run};
use common::standin::StandIn;
use serde_json::{Value, json};

const FUNCTION: &str = "iot-custom-auth-authorizer";

fn mutating(standin: &StandIn) -> Vec<String> {
    standin
        .calls()
        .into_iter()
        .filter(|c| c.mutating)
        .map(|c| c.operation)
        .collect()
}

/// The check `id` of a `status --output json` run.
fn check(run: &Run, id: &str) -> Value {
    run.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id}:\n{}", run.stdout))
        .clone()
}

fn deployed_fast() -> (StandIn, Cli, String) {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    let password = cli.add_device("sensor1", &[]);
    cli.run(&["setup"]).expect(0);
    (standin, cli, password)
}

/// GetFunction leaves out Tags for a caller without lambda:ListTags: absent tags must not read as
/// "not ours". status stops with exit 1 naming the permission; setup and teardown change nothing
/// (in particular teardown keeps the role the function runs as).
#[test]
fn without_list_tags_every_command_stops_naming_it_and_changes_nothing() {
    let (standin, cli, _) = deployed_fast();
    standin.set_behaviour(json!({"get_function_hides_tags": true}));
    standin.clear_calls();
    for args in [&["status"][..], &["setup"][..], &["teardown", "--yes"][..]] {
        let run = cli.run(args).expect(1);
        assert!(
            run.stderr.contains("lambda:ListTags"),
            "{args:?} must name lambda:ListTags:\n{}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("not created by deployment"),
            "{args:?} called our function someone else's:\n{}",
            run.stderr
        );
    }
    assert_eq!(mutating(&standin), Vec::<String>::new());
    // With the permission, all is well again.
    standin.set_behaviour(json!({"get_function_hides_tags": false}));
    cli.run(&["status"]).expect(0);
}

/// A function whose creation Failed can only be deleted and recreated: status says so, and the
/// next setup does it, saying why.
#[test]
fn a_failed_create_is_named_by_status_and_recreated_by_setup() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    standin.set_behaviour(json!({
        "fail_next_function_create": {"reason": "The function's deployment package could not be unpacked.", "reason_code": "InvalidZipFileException"}
    }));
    let first = cli.run(&["setup"]).expect(1);
    assert!(first.stderr.contains("Failed"), "{}", first.stderr);

    let status = cli.run(&["status", "--output", "json"]).expect(3);
    let state = check(&status, "function.state");
    assert_eq!(state["state"], "fail");
    assert!(
        state["detail"]
            .as_str()
            .unwrap()
            .contains("InvalidZipFileException"),
        "{state}"
    );
    assert!(
        state["fix"].as_str().unwrap().contains("recreates"),
        "{state}"
    );

    let second = cli.run(&["setup"]).expect(0);
    let line = second
        .stdout
        .lines()
        .find(|l| l.starts_with("function"))
        .unwrap();
    assert!(
        line.contains("created") && line.contains("deleted and recreated"),
        "{}",
        second.stdout
    );
    cli.run(&["status"]).expect(0);
}

/// An Inactive function fails the next logins: status names it with the fix (setup), and setup
/// reactivates it and waits until it is Active.
#[test]
fn an_inactive_function_is_named_by_status_and_reactivated_by_setup() {
    let (standin, cli, password) = deployed_fast();
    standin.set_behaviour(json!({"function_pending_seconds": 1.0}));
    standin.deactivate_function(FUNCTION, None);

    let status = cli.run(&["status", "--output", "json"]).expect(3);
    let state = check(&status, "function.state");
    assert!(
        state["detail"].as_str().unwrap().contains("Inactive (Idle"),
        "{state}"
    );
    assert!(state["fix"].as_str().unwrap().contains("setup"), "{state}");

    let setup = cli.run(&["setup"]).expect(0);
    assert!(
        setup.stdout.contains("reactivated: it was Inactive"),
        "{}",
        setup.stdout
    );
    assert!(
        setup.stderr.contains("to become Active"),
        "the wait must be visible:\n{}",
        setup.stderr
    );
    cli.run_with(
        &["status", "--probe-user", "sensor1"],
        None,
        &[("IOT_CUSTOM_AUTH_PASSWORD", &password)],
    )
    .expect(0);
}

/// A setup interrupted while its new function is Pending leaves nothing to change but the
/// permission; the re-run waits for Active before AddPermission (which Pending refuses).
#[test]
fn a_pending_function_is_waited_for_before_anything_operates_on_it() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    standin.set_behaviour(json!({"function_pending_seconds": 4.0}));
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);

    let mut first = Command::new(env!("CARGO_BIN_EXE_iot-custom-auth"))
        .arg("setup")
        .current_dir(cli.path())
        .envs(standin.env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(first.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains("to become Active") {
            break;
        }
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let rerun = cli.run(&["setup"]).expect(0);
    assert!(
        rerun.stderr.contains("to become Active"),
        "{}",
        rerun.stderr
    );
    assert!(
        rerun
            .stdout
            .lines()
            .any(|l| l.starts_with("function") && l.contains("unchanged")),
        "{}",
        rerun.stdout
    );
    cli.run(&["status"]).expect(0);
}

/// DeleteRole right after detaching can answer DeleteConflict while IAM propagates: teardown
/// retries, visibly, and one run finishes the job.
#[test]
fn teardown_retries_delete_role_while_iam_propagates_the_detach() {
    let (standin, cli, _) = deployed_fast();
    standin.set_behaviour(json!({"delete_role_conflict_seconds": 3.0}));
    let run = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(run.stderr.contains("retrying DeleteRole"), "{}", run.stderr);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("role") && l.contains("deleted")),
        "{}",
        run.stdout
    );
    let again = cli.run(&["status", "--output", "json"]).expect(3);
    assert_eq!(again.json()["deployed"], false, "{}", again.stdout);
}

fn default_authorizer(cli: &Cli) -> Value {
    let status = cli.run(&["status", "--output", "json"]);
    check(&status, "default_authorizer")
}

/// --replace-default sets ours first; only when AWS refuses to overwrite does it clear and set;
/// and when that fails too, the previous default is back and the error says so.
#[test]
fn replace_default_never_leaves_the_account_without_a_default() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    cli.run(&["--name", "other", "setup"]).expect(0);
    cli.run(&["setup", "--no-default"]).expect(0);

    // AWS refuses to overwrite, and the clear-then-set fails again: `other` is restored.
    let refuse = |count: u32| {
        json!({"fail": {"iot:SetDefaultAuthorizer": {
            "code": "ResourceAlreadyExistsException", "status": 409,
            "message": "a default authorizer is already set", "count": count}}})
    };
    standin.set_behaviour(refuse(2));
    let failed = cli.run(&["setup", "--replace-default"]).expect(1);
    assert!(
        failed
            .stderr
            .contains("`other` was restored as the default"),
        "{}",
        failed.stderr
    );
    let other = default_authorizer(&cli);
    assert!(
        other["detail"].as_str().unwrap().contains("`other`"),
        "{other}"
    );

    // Refused once: cleared, then set.
    standin.set_behaviour(refuse(1));
    standin.clear_calls();
    cli.run(&["setup", "--replace-default"]).expect(0);
    let ops: Vec<String> = mutating(&standin)
        .into_iter()
        .filter(|op| op.contains("DefaultAuthorizer"))
        .collect();
    assert_eq!(
        ops,
        [
            "SetDefaultAuthorizer",
            "ClearDefaultAuthorizer",
            "SetDefaultAuthorizer"
        ]
    );
    assert_eq!(default_authorizer(&cli)["state"], "ok");

    // No default to replace: set directly, nothing cleared.
    cli.run(&["setup", "--no-default"]).expect(0);
    standin.clear_calls();
    cli.run(&["setup", "--replace-default"]).expect(0);
    let ops: Vec<String> = mutating(&standin)
        .into_iter()
        .filter(|op| op.contains("DefaultAuthorizer"))
        .collect();
    assert_eq!(ops, ["SetDefaultAuthorizer"]);
}

/// TestInvokeAuthorizer errors are findings: a failing probe check with AWS's message and the
/// fix, exit 3, not an abort.
#[test]
fn probe_errors_are_failing_checks_with_the_fix() {
    let (standin, cli, password) = deployed_fast();
    let probe = |cli: &Cli| {
        cli.run_with(
            &["status", "--output", "json", "--probe-user", "sensor1"],
            None,
            &[("IOT_CUSTOM_AUTH_PASSWORD", &password)],
        )
        .expect(3)
    };

    standin.set_behaviour(json!({"fail": {"iot:TestInvokeAuthorizer": {
        "code": "AccessDeniedException", "status": 403, "count": 2,
        "message": "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: iot:TestInvokeAuthorizer"}}}));
    let denied = check(&probe(&cli), "probe.allowed");
    assert_eq!(denied["state"], "fail");
    assert!(
        denied["detail"]
            .as_str()
            .unwrap()
            .contains("not authorized to perform: iot:TestInvokeAuthorizer"),
        "{denied}"
    );
    assert!(
        denied["fix"]
            .as_str()
            .unwrap()
            .contains("iot:TestInvokeAuthorizer"),
        "{denied}"
    );

    // The two injected failures are used up by the two probes above. Of the probe's two
    // concurrent invocations, the first to arrive finds the function Inactive and starts its
    // reactivation; the other finds it Inactive too or already Pending.
    standin.set_behaviour(json!({"function_pending_seconds": 3.0}));
    standin.deactivate_function(FUNCTION, None);
    let run = probe(&cli);
    let failed: Vec<Value> = ["probe.allowed", "probe.denied"]
        .iter()
        .map(|id| check(&run, id))
        .filter(|c| c["state"] == "fail")
        .collect();
    assert!(
        failed
            .iter()
            .any(|c| c["detail"].as_str().unwrap().contains("Inactive")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .all(|c| c["fix"].as_str().unwrap().contains("setup")),
        "{failed:?}"
    );
}

/// The whole lifecycle as identities holding exactly what `iam-policy --for <command>` prints,
/// in each partition: setup, status with the probe, a device change and setup again, teardown.
#[test]
fn least_privilege_lifecycle_in_every_partition() {
    for (region, partition) in [
        ("us-east-1", "aws"),
        ("cn-north-1", "aws-cn"),
        ("us-gov-west-1", "aws-us-gov"),
    ] {
        let standin = StandIn::start_with(&["--no-aws-delays"]);
        let admin = Cli::with_env(standin.env_in(region));
        let password = admin.add_device("sensor1", &[]);
        let as_identity = |command: &str| {
            let printed = admin
                .run(&["iam-policy", "--for", command, "--output", "json"])
                .expect(0)
                .json();
            let text = printed.to_string();
            assert!(
                text.contains(&format!("arn:{partition}:lambda:{region}:")),
                "{region}: {text}"
            );
            let identity = standin.identity_in(region, &format!("ci-{command}"), &printed);
            let mut env = standin.env_in(region);
            for (k, v) in identity.env() {
                env.retain(|(name, _)| *name != k);
                env.push((k, v));
            }
            env
        };
        let setup = as_identity("setup");
        let status = as_identity("status");
        let teardown = as_identity("teardown");
        let run_as = |env: &Vec<(String, String)>, args: &[&str], code: i32| {
            let mut all: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            all.push(("IOT_CUSTOM_AUTH_PASSWORD", password.as_str()));
            admin.run_with(args, None, &all).expect(code)
        };

        let deployed = run_as(&setup, &["setup"], 0);
        assert!(deployed.stdout.contains(region), "{}", deployed.stdout);
        let healthy = run_as(&status, &["status", "--probe-user", "sensor1"], 0);
        assert!(healthy.stdout.contains("healthy"), "{}", healthy.stdout);
        admin.add_device("sensor2", &[]);
        let changed = run_as(&setup, &["setup"], 0);
        assert!(
            changed
                .stdout
                .lines()
                .any(|l| l.starts_with("function") && l.contains("updated")),
            "{region}: {}",
            changed.stdout
        );
        run_as(&status, &["status", "--probe-user", "sensor1"], 0);
        run_as(&teardown, &["teardown", "--yes"], 0);
        let gone = run_as(&status, &["status", "--output", "json"], 3);
        assert_eq!(gone.json()["deployed"], false, "{region}");
    }
}

/// Each action of a printed policy, with the index of its statement.
fn actions_of(policy: &Value) -> Vec<(usize, String)> {
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .flat_map(|(i, s)| match &s["Action"] {
            Value::String(a) => vec![(i, a.clone())],
            Value::Array(list) => list
                .iter()
                .map(|a| (i, a.as_str().unwrap().to_string()))
                .collect(),
            _ => vec![],
        })
        .collect()
}

/// `policy` without `action` (in statement `statement`); a statement left with no action goes
/// too, as IAM refuses a statement without one.
fn without(policy: &Value, statement: usize, action: &str) -> Value {
    let mut without = policy.clone();
    let statements = without["Statement"].as_array_mut().unwrap();
    let kept: Vec<Value> = match &statements[statement]["Action"] {
        Value::Array(list) => list.iter().filter(|a| *a != action).cloned().collect(),
        _ => vec![],
    };
    if kept.is_empty() {
        statements.remove(statement);
    } else {
        statements[statement]["Action"] = Value::Array(kept);
    }
    without
}

/// Least privilege the other way: without any one action of the printed status policy, status
/// fails with AWS's AccessDenied naming that action (exit 1, or a failing probe check for
/// TestInvokeAuthorizer, exit 3).
#[test]
fn status_fails_without_each_action_of_its_printed_policy() {
    let (standin, cli, password) = deployed_fast();
    let policy = cli
        .run(&["iam-policy", "--for", "status", "--output", "json"])
        .expect(0)
        .json();
    let actions = actions_of(&policy);
    assert!(actions.len() >= 10, "{policy}");
    for (n, (statement, action)) in actions.iter().enumerate() {
        let without = without(&policy, *statement, action);
        let identity = standin.identity(&format!("without-{n}"), &without);
        let mut env: Vec<(String, String)> = standin.env_as(&identity);
        env.push(("IOT_CUSTOM_AUTH_PASSWORD".into(), password.clone()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let run = cli.run_with(&["status", "--probe-user", "sensor1"], None, &env);
        assert_ne!(run.code, 0, "status passed without {action}");
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains(&format!("not authorized to perform: {action}")),
            "without {action}, status did not name it:\n{said}"
        );
    }
}

/// The same for teardown: each run removes a fresh deployment whose role also carries an inline
/// policy (so DeleteRolePolicy is needed too), as an identity lacking one action of the printed
/// teardown policy, and must fail naming it.
#[test]
fn teardown_fails_without_each_action_of_its_printed_policy() {
    let (standin, cli, _) = deployed_fast();
    let policy = cli
        .run(&["iam-policy", "--for", "teardown", "--output", "json"])
        .expect(0)
        .json();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (n, (statement, action)) in actions_of(&policy).iter().enumerate() {
        standin.reset();
        cli.run(&["setup"]).expect(0);
        rt.block_on(async {
            let iam = aws_sdk_iam::Client::new(&standin.sdk_config().await);
            iam.put_role_policy()
                .role_name("iot-custom-auth-authorizer-role")
                .policy_name("extra")
                .policy_document(
                    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]})
                        .to_string(),
                )
                .send()
                .await
                .expect("PutRolePolicy");
        });
        let identity = standin.identity(
            &format!("teardown-{n}"),
            &without(&policy, *statement, action),
        );
        let env = standin.env_as(&identity);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let run = cli.run_with(&["teardown", "--yes"], None, &env);
        assert_ne!(
            run.code, 0,
            "teardown passed without {action}:\n{}",
            run.stdout
        );
        let said = format!("{}{}", run.stdout, run.stderr);
        assert!(
            said.contains(&format!("not authorized to perform: {action}")),
            "without {action}, teardown did not name it:\n{said}"
        );
    }
}

/// With the DynamoDB store: the actions that store adds to each printed policy (the table's and
/// the role's grant's), each one removed in turn, make the command fail naming it.
#[test]
fn dynamodb_commands_fail_without_each_action_the_store_adds() {
    use aws_sdk_dynamodb::types::{BillingMode, ProvisionedThroughput};
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    std::fs::write(
        cli.config_path(),
        "[deployment]\ncredential_store = \"dynamodb\"\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Drift that makes setup read and repair everything of the store: provisioned billing, PITR
    // off, a widened grant.
    let drift = || {
        rt.block_on(async {
            let config = standin.sdk_config().await;
            let db = aws_sdk_dynamodb::Client::new(&config);
            db.update_table()
                .table_name("iot-custom-auth-devices")
                .billing_mode(BillingMode::Provisioned)
                .provisioned_throughput(
                    ProvisionedThroughput::builder()
                        .read_capacity_units(1)
                        .write_capacity_units(1)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .expect("UpdateTable");
            db.update_continuous_backups()
                .table_name("iot-custom-auth-devices")
                .point_in_time_recovery_specification(
                    aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                        .point_in_time_recovery_enabled(false)
                        .build()
                        .unwrap(),
                )
                .send()
                .await
                .expect("UpdateContinuousBackups");
            aws_sdk_iam::Client::new(&config)
                .put_role_policy()
                .role_name("iot-custom-auth-authorizer-role")
                .policy_name("read-devices-table")
                .policy_document(
                    json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}]})
                        .to_string(),
                )
                .send()
                .await
                .expect("PutRolePolicy");
        })
    };
    let added = |action: &str| {
        action.starts_with("dynamodb:")
            || ["iam:GetRolePolicy", "iam:PutRolePolicy"].contains(&action)
    };
    let mut covered = Vec::new();
    for command in ["setup", "status", "teardown"] {
        let policy = cli
            .run(&["iam-policy", "--for", command, "--output", "json"])
            .expect(0)
            .json();
        for (n, (statement, action)) in actions_of(&policy).iter().enumerate() {
            if !added(action) {
                continue;
            }
            standin.reset();
            // Creating is what a fresh setup does; everything else needs the table there.
            let fresh = command == "setup"
                && ["dynamodb:CreateTable", "dynamodb:TagResource"].contains(&action.as_str());
            if !fresh {
                cli.run(&["setup"]).expect(0);
                if command == "setup" {
                    drift();
                }
            }
            let identity = standin.identity(
                &format!("{command}-{n}"),
                &without(&policy, *statement, action),
            );
            let mut env = standin.env_as(&identity);
            // status probes a device, so that its conditional GetItem is exercised too.
            if command == "status" {
                let password = cli.add_device("sensor1", &[]);
                env.push(("IOT_CUSTOM_AUTH_PASSWORD".into(), password));
            }
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let args: &[&str] = match command {
                "teardown" => &["teardown", "--yes"],
                "status" => &["status", "--probe-user", "sensor1"],
                other => &[other],
            };
            let run = cli.run_with(args, None, &env);
            assert_ne!(
                run.code, 0,
                "{command} passed without {action}:\n{}",
                run.stdout
            );
            let said = format!("{}{}", run.stdout, run.stderr);
            assert!(
                said.contains(&format!("not authorized to perform: {action}")),
                "without {action}, {command} did not name it:\n{said}"
            );
            covered.push(format!("{command} {action}"));
        }
    }
    for want in [
        "setup dynamodb:CreateTable",
        "setup dynamodb:TagResource",
        "setup dynamodb:UpdateTable",
        "setup dynamodb:UpdateContinuousBackups",
        "setup iam:PutRolePolicy",
        "status dynamodb:Scan",
        "status dynamodb:GetItem",
        "status iam:GetRolePolicy",
        "teardown dynamodb:DeleteTable",
    ] {
        assert!(
            covered.iter().any(|c| c == want),
            "{want} not covered: {covered:?}"
        );
    }
}

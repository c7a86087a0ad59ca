//! `setup`, `status`, `teardown` and `iam-policy` end to end: the built binary against the local
//! AWS stand-in with its real-AWS behaviours on (role propagation delay, Pending functions,
//! in-progress updates, conflicting permission ids).

mod common;

use aws_sdk_iot::primitives::Blob;
use aws_sdk_iot::types::{AuthorizerStatus, MqttContext};
use common::cli::{Cli, Run};
use common::standin::{ACCOUNT_ID, REGION, StandIn};
use serde_json::{Value, json};

const NAME: &str = "iot-custom-auth";
const ROLE: &str = "iot-custom-auth-authorizer-role";
const FUNCTION: &str = "iot-custom-auth-authorizer";
const SID: &str = "iot-custom-auth-iot-invoke";

struct Clients {
    iot: aws_sdk_iot::Client,
    lambda: aws_sdk_lambda::Client,
    iam: aws_sdk_iam::Client,
}

async fn clients(standin: &StandIn) -> Clients {
    let config = standin.sdk_config().await;
    Clients {
        iot: aws_sdk_iot::Client::new(&config),
        lambda: aws_sdk_lambda::Client::new(&config),
        iam: aws_sdk_iam::Client::new(&config),
    }
}

fn mutating(standin: &StandIn) -> Vec<String> {
    standin
        .calls()
        .into_iter()
        .filter(|c| c.mutating)
        .map(|c| c.operation)
        .collect()
}

/// The ids of the failing checks of a `status --output json` run.
fn failing(run: &Run) -> Vec<String> {
    run.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["state"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// A fresh stand-in with sensor1 deployed.
fn deployed() -> (StandIn, Cli, String) {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    let password = cli.add_device("sensor1", &[]);
    cli.run(&["setup"]).expect(0);
    (standin, cli, password)
}

async fn test_invoke(
    iot: &aws_sdk_iot::Client,
    user: &str,
    password: &str,
    client_id: &str,
) -> aws_sdk_iot::operation::test_invoke_authorizer::TestInvokeAuthorizerOutput {
    iot.test_invoke_authorizer()
        .authorizer_name(NAME)
        .mqtt_context(
            MqttContext::builder()
                .username(user)
                .password(Blob::new(password.as_bytes()))
                .client_id(client_id)
                .build(),
        )
        .send()
        .await
        .expect("TestInvokeAuthorizer")
}

#[tokio::test(flavor = "multi_thread")]
async fn setup_from_empty_deploys_a_working_authorizer_and_a_rerun_changes_nothing() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    let password = cli.add_device("sensor1", &[]);

    let run = cli.run(&["setup"]).expect(0);
    for line in [
        "role",
        "function",
        "authorizer",
        "permission",
        "default-authorizer",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with(line) && l.contains("created")),
            "{line} not created:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains(":443 with TLS ALPN `mqtt`"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("waiting for IAM to propagate role"),
        "the role wait must be visible:\n{}",
        run.stderr
    );

    let c = clients(&standin).await;
    let allowed = test_invoke(&c.iot, "sensor1", &password, "sensor1").await;
    assert_eq!(allowed.is_authenticated(), Some(true));
    assert_eq!(allowed.principal_id(), Some("sensor1"));
    let docs: Vec<Value> = allowed
        .policy_documents()
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let prefix = format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}");
    assert_eq!(
        docs,
        vec![json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": [format!("{prefix}:client/sensor1")]},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": [format!("{prefix}:topic/telemetry/sensor1")]},
        ]})]
    );
    let with_query = test_invoke(
        &c.iot,
        "sensor1?x-amz-customauthorizer-name=iot-custom-auth",
        &password,
        "sensor1",
    )
    .await;
    assert_eq!(with_query.is_authenticated(), Some(true));
    for (user, pw, client) in [
        ("sensor1", "wrong-password", "sensor1"),
        ("nobody", password.as_str(), "sensor1"),
        ("sensor1", password.as_str(), "other"),
    ] {
        let denied = test_invoke(&c.iot, user, pw, client).await;
        assert_eq!(
            denied.is_authenticated(),
            Some(false),
            "{user}/{client} must be denied"
        );
        assert!(denied.policy_documents().is_empty());
    }

    standin.clear_calls();
    let again = cli.run(&["setup"]).expect(0);
    assert_eq!(
        again
            .stdout
            .lines()
            .filter(|l| l.contains(" unchanged"))
            .count(),
        6,
        "{}",
        again.stdout
    );
    assert!(again.stdout.contains("changed 0 of 6"), "{}", again.stdout);
    assert_eq!(mutating(&standin), Vec::<String>::new());
    cli.run(&["status"]).expect(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_and_status_never_write() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let dry = cli
        .run(&["setup", "--dry-run", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(dry["dry_run"], true);
    let actions: Vec<&str> = dry["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created"; 6]);
    let status = cli.run(&["status"]).expect(3);
    assert!(status.stdout.contains("not deployed"), "{}", status.stdout);
    assert_eq!(mutating(&standin), Vec::<String>::new());
}

/// Each single break made by hand is named by `status` (exit 3) and repaired by the next
/// `setup`, which touches nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn status_names_each_break_and_setup_repairs_exactly_it() {
    let (standin, cli, _) = deployed();
    let c = clients(&standin).await;
    cli.run(&["status"]).expect(0);

    // An authorizer of someone else's, for the "another default" break.
    c.iot
        .create_authorizer()
        .authorizer_name("someone-else")
        .authorizer_function_arn(format!(
            "arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{FUNCTION}"
        ))
        .signing_disabled(true)
        .status(AuthorizerStatus::Active)
        .send()
        .await
        .unwrap();

    let cases: Vec<(&str, &[&str], Vec<&str>)> = vec![
        (
            "permission removed",
            &["permission.exists"],
            vec!["AddPermission"],
        ),
        (
            "permission with the wrong SourceArn",
            &["permission.source_arn"],
            vec!["RemovePermission", "AddPermission"],
        ),
        (
            "authorizer deactivated",
            &["authorizer.status"],
            vec!["UpdateAuthorizer"],
        ),
        (
            "default authorizer cleared",
            &["default_authorizer"],
            vec!["SetDefaultAuthorizer"],
        ),
        (
            "another authorizer made the default",
            &["default_authorizer"],
            // Set first; the stand-in refuses to overwrite (ResourceAlreadyExists), so clear and
            // set again: the account is never without a default before ours is being set.
            vec![
                "SetDefaultAuthorizer",
                "ClearDefaultAuthorizer",
                "SetDefaultAuthorizer",
            ],
        ),
        (
            "function code changed",
            &["function.code"],
            vec!["UpdateFunctionCode"],
        ),
        (
            "execution policy detached",
            &["role.execution_policy"],
            vec!["AttachRolePolicy"],
        ),
        (
            "function deleted",
            &["function.exists"],
            vec!["CreateFunction", "AddPermission"],
        ),
    ];
    for (what, expected, repair) in cases {
        match what {
            "permission removed" => {
                c.lambda
                    .remove_permission()
                    .function_name(FUNCTION)
                    .statement_id(SID)
                    .send()
                    .await
                    .unwrap();
            }
            "permission with the wrong SourceArn" => {
                c.lambda
                    .remove_permission()
                    .function_name(FUNCTION)
                    .statement_id(SID)
                    .send()
                    .await
                    .unwrap();
                c.lambda
                    .add_permission()
                    .function_name(FUNCTION)
                    .statement_id(SID)
                    .action("lambda:InvokeFunction")
                    .principal("iot.amazonaws.com")
                    .source_arn(format!(
                        "arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{FUNCTION}"
                    ))
                    .source_account(ACCOUNT_ID)
                    .send()
                    .await
                    .unwrap();
            }
            "authorizer deactivated" => {
                c.iot
                    .update_authorizer()
                    .authorizer_name(NAME)
                    .status(AuthorizerStatus::Inactive)
                    .send()
                    .await
                    .unwrap();
            }
            "default authorizer cleared" => {
                c.iot.clear_default_authorizer().send().await.unwrap();
            }
            "another authorizer made the default" => {
                c.iot.clear_default_authorizer().send().await.unwrap();
                c.iot
                    .set_default_authorizer()
                    .authorizer_name("someone-else")
                    .send()
                    .await
                    .unwrap();
            }
            "function code changed" => {
                c.lambda
                    .update_function_code()
                    .function_name(FUNCTION)
                    .zip_file(aws_sdk_lambda::primitives::Blob::new(tiny_zip()))
                    .send()
                    .await
                    .unwrap();
            }
            "execution policy detached" => {
                c.iam
                    .detach_role_policy()
                    .role_name(ROLE)
                    .policy_arn("arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
                    .send()
                    .await
                    .unwrap();
            }
            "function deleted" => {
                c.lambda
                    .delete_function()
                    .function_name(FUNCTION)
                    .send()
                    .await
                    .unwrap();
            }
            _ => unreachable!(),
        }
        let status = cli.run(&["status", "--output", "json"]).expect(3);
        assert_eq!(failing(&status), expected, "{what}");
        let mut setup_args = vec!["setup"];
        if what == "another authorizer made the default" {
            let refused = cli.run(&["setup"]).expect(1);
            assert!(
                refused.stderr.contains("--replace-default"),
                "{what}: {}",
                refused.stderr
            );
            setup_args.push("--replace-default");
        }
        standin.clear_calls();
        cli.run(&setup_args).expect(0);
        assert_eq!(
            mutating(&standin),
            repair,
            "{what}: setup must repair exactly that"
        );
        cli.run(&["status"]).expect(0);
    }
}

fn tiny_zip() -> Vec<u8> {
    use std::io::Write as _;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("index.mjs", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"export const handler = async () => ({ isAuthenticated: true });")
        .unwrap();
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn device_changes_reach_aws_at_the_next_setup_only() {
    let (standin, cli, _) = deployed();
    let c = clients(&standin).await;
    let pw2 = cli.add_device("sensor2", &["--subscribe", "cmd/sensor2/#"]);
    let status = cli.run(&["status", "--output", "json"]).expect(3);
    assert_eq!(
        failing(&status),
        ["function.code"],
        "an added device is drift until setup"
    );
    assert_eq!(
        test_invoke(&c.iot, "sensor2", &pw2, "sensor2")
            .await
            .is_authenticated(),
        Some(false)
    );

    standin.clear_calls();
    cli.run(&["setup"]).expect(0);
    assert_eq!(mutating(&standin), ["UpdateFunctionCode"]);
    let allowed = test_invoke(&c.iot, "sensor2", &pw2, "sensor2").await;
    assert_eq!(allowed.is_authenticated(), Some(true));
    assert!(allowed.policy_documents()[0].contains(":topicfilter/cmd/sensor2/#"));

    cli.run(&["device", "remove", "sensor2"]).expect(0);
    cli.run(&["setup"]).expect(0);
    assert_eq!(
        test_invoke(&c.iot, "sensor2", &pw2, "sensor2")
            .await
            .is_authenticated(),
        Some(false)
    );
    cli.run(&["status"]).expect(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setup_that_fails_after_any_step_is_completed_by_the_next() {
    let steps = [
        ("iam:AttachRolePolicy", "iam:AttachRolePolicy"),
        ("lambda:CreateFunction", "lambda:CreateFunction"),
        ("iot:CreateAuthorizer", "iot:CreateAuthorizer"),
        ("lambda:AddPermission", "lambda:AddPermission"),
        ("iot:SetDefaultAuthorizer", "iot:SetDefaultAuthorizer"),
    ];
    let standin = StandIn::start_with(&["--role-propagation-seconds", "0.5"]);
    for (op, action) in steps {
        standin.reset();
        standin.set_behaviour(json!({"role_propagation_seconds": 0.5}));
        let cli = Cli::new(&standin);
        cli.add_device("sensor1", &[]);
        let (code, status) = if op.starts_with("iam") {
            ("AccessDenied", 403)
        } else {
            ("AccessDeniedException", 403)
        };
        standin.set_behaviour(json!({"fail": {op: {"code": code, "status": status, "message": format!("User: arn:aws:iam::{ACCOUNT_ID}:user/ci is not authorized to perform: {action}"), "count": 1}}}));
        let failed = cli.run(&["setup"]).expect(1);
        assert!(
            failed.stderr.contains(&format!("grant `{action}`")),
            "{op}: the error must name the action:\n{}",
            failed.stderr
        );
        let status = cli.run(&["status"]);
        assert_eq!(
            status.code, 3,
            "{op}: a half-finished deployment is not healthy"
        );
        cli.run(&["setup"]).expect(0);
        cli.run(&["status"]).expect(0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn teardown_after_a_half_finished_setup_removes_what_was_created() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    standin.set_behaviour(json!({"fail": {"iot:CreateAuthorizer": {"code": "AccessDeniedException", "status": 403, "message": "denied", "count": 1}}}));
    cli.run(&["setup"]).expect(1);
    let down = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(
        // The role, the log group, the function and its permission: none of them waits for the
        // authorizer, so they were done although its creation failed.
        down.stdout.contains("removed 4 resources"),
        "{}",
        down.stdout
    );
    assert_nothing_left(&standin).await;
}

async fn assert_nothing_left(standin: &StandIn) {
    let c = clients(standin).await;
    let roles = c.iam.list_roles().send().await.unwrap();
    assert!(
        roles.roles().iter().all(|r| r.role_name() != ROLE),
        "role left"
    );
    let functions = c.lambda.list_functions().send().await.unwrap();
    assert!(
        functions
            .functions()
            .iter()
            .all(|f| f.function_name() != Some(FUNCTION)),
        "function left"
    );
    let authorizers = c.iot.list_authorizers().send().await.unwrap();
    assert!(
        authorizers
            .authorizers()
            .iter()
            .all(|a| a.authorizer_name() != Some(NAME)),
        "authorizer left"
    );
    let default = c.iot.describe_default_authorizer().send().await;
    assert!(default.is_err(), "default authorizer left");
}

#[tokio::test(flavor = "multi_thread")]
async fn teardown_removes_everything_then_has_nothing_to_do() {
    let (standin, cli, _) = deployed();
    let refused = cli.run(&["teardown"]).expect(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let down = cli.run(&["teardown", "--yes"]).expect(0);
    for line in [
        "default-authorizer",
        "authorizer",
        "permission",
        "function",
        "role",
    ] {
        assert!(
            down.stdout.lines().any(|l| l.starts_with(line)),
            "{line}:\n{}",
            down.stdout
        );
    }
    assert_nothing_left(&standin).await;
    standin.clear_calls();
    let again = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(
        again.stdout.contains("nothing to remove"),
        "{}",
        again.stdout
    );
    assert_eq!(mutating(&standin), Vec::<String>::new());
    let status = cli.run(&["status"]).expect(3);
    assert!(status.stdout.contains("not deployed"), "{}", status.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_with_our_names_that_are_not_ours_are_never_touched() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let c = clients(&standin).await;
    c.iam.create_role().role_name(ROLE).assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#).send().await.unwrap();
    standin.clear_calls();
    let refused = cli.run(&["setup"]).expect(1);
    assert!(
        refused.stderr.contains("not created by deployment"),
        "{}",
        refused.stderr
    );
    assert_eq!(mutating(&standin), Vec::<String>::new());
    let down = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(down.stdout.contains("skipped"), "{}", down.stdout);
    assert!(
        c.iam.get_role().role_name(ROLE).send().await.is_ok(),
        "someone else's role must survive"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_enabled_authorizer_of_ours_is_refused_with_the_way_out() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let c = clients(&standin).await;
    c.iot.create_authorizer().authorizer_name(NAME).authorizer_function_arn("arn:aws:lambda:us-east-1:123456789012:function:x").token_key_name("token").token_signing_public_keys("k", "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----").tags(aws_sdk_iot::types::Tag::builder().key("iot-custom-auth:deployment").value(NAME).build().unwrap()).send().await.unwrap();
    standin.clear_calls();
    let refused = cli.run(&["setup"]).expect(1);
    assert!(
        refused.stderr.contains("token signing enabled"),
        "{}",
        refused.stderr
    );
    assert_eq!(mutating(&standin), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn status_probe_logs_in_through_test_invoke() {
    let (standin, cli, password) = deployed();
    standin.clear_calls();
    let run = cli
        .run_with(
            &["status", "--probe-user", "sensor1", "--output", "json"],
            None,
            &[("IOT_CUSTOM_AUTH_PASSWORD", &password)],
        )
        .expect(0);
    let json = run.json();
    let ok_probes: Vec<&str> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "ok")
        .filter_map(|c| c["id"].as_str())
        .filter(|id| id.starts_with("probe"))
        .collect();
    assert_eq!(ok_probes, ["probe.allowed", "probe.denied"]);
    let wrong = cli
        .run_stdin(
            &[
                "status",
                "--probe-user",
                "sensor1",
                "--password-stdin",
                "--output",
                "json",
            ],
            "not-the-password",
        )
        .expect(3);
    assert_eq!(failing(&wrong), ["probe.allowed"]);
    assert!(!wrong.stdout.contains(&password) && !wrong.stderr.contains(&password));
    assert!(standin.calls().iter().all(|c| !c.mutating));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_explained_and_changes_nothing() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);

    let no_creds = cli
        .run_with(
            &["setup"],
            None,
            &[("AWS_ACCESS_KEY_ID", ""), ("AWS_SECRET_ACCESS_KEY", "")],
        )
        .expect(1);
    assert!(
        no_creds.stderr.contains("no usable AWS credentials"),
        "{}",
        no_creds.stderr
    );
    let errors: Vec<&str> = no_creds
        .stderr
        .lines()
        .filter(|l| !l.starts_with("reading deployment"))
        .collect();
    assert_eq!(
        errors.len(),
        2,
        "one clear line and a hint:\n{}",
        no_creds.stderr
    );

    let bad_region = cli
        .run_with(&["setup"], None, &[("AWS_REGION", "moon-base")])
        .expect(2);
    assert!(
        bad_region.stderr.contains("not an AWS region"),
        "{}",
        bad_region.stderr
    );

    let bad_name = cli.run(&["setup", "--name", "no spaces"]).expect(2);
    assert!(
        bad_name.stderr.contains("invalid deployment name"),
        "{}",
        bad_name.stderr
    );

    let bad_code = cli.dir.path().join("code.zip");
    std::fs::write(&bad_code, tiny_zip_named("main.mjs")).unwrap();
    let no_handler = cli
        .run(&["setup", "--code", bad_code.to_str().unwrap()])
        .expect(2);
    assert!(
        no_handler.stderr.contains("no index.mjs"),
        "{}",
        no_handler.stderr
    );

    let config = std::fs::read_to_string(cli.config_path()).unwrap();
    std::fs::write(
        cli.config_path(),
        format!("{config}\n[deployment]\nmemory_mb = = 1\n"),
    )
    .unwrap();
    let syntax = cli.run(&["setup"]).expect(2);
    assert!(
        syntax.stderr.contains("line "),
        "the error must point at the line:\n{}",
        syntax.stderr
    );

    assert_eq!(mutating(&standin), Vec::<String>::new());
}

fn tiny_zip_named(name: &str) -> Vec<u8> {
    use std::io::Write as _;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"export const handler = async () => ({ isAuthenticated: false });")
        .unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn an_unreachable_endpoint_gives_one_line() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cli = Cli::with_env(vec![
        ("AWS_ENDPOINT_URL".into(), format!("http://{closed}")),
        ("AWS_REGION".into(), REGION.into()),
        ("AWS_ACCESS_KEY_ID".into(), "test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ]);
    let run = cli.run(&["status"]).expect(1);
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    assert!(run.stderr.contains("could not reach AWS"), "{}", run.stderr);
    assert!(run.stderr.lines().count() <= 2, "{}", run.stderr);
}

/// Every call each command makes is allowed by the policy `iam-policy` prints for it.
#[tokio::test(flavor = "multi_thread")]
async fn iam_policy_covers_every_call_each_command_makes() {
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    let password = cli.add_device("sensor1", &[]);
    let record = |args: &[&str], env: &[(&str, &str)], code: i32| {
        standin.clear_calls();
        cli.run_with(args, None, env).expect(code);
        standin.calls()
    };
    let setup = record(&["setup"], &[], 0);
    let status = record(
        &["status", "--probe-user", "sensor1"],
        &[("IOT_CUSTOM_AUTH_PASSWORD", &password)],
        0,
    );
    let logs = record(&["logs", "--user", "sensor1"], &[], 0);
    let teardown = record(&["teardown", "--yes"], &[], 0);
    for (command, calls) in [
        ("setup", setup),
        ("status", status),
        ("logs", logs),
        ("teardown", teardown),
    ] {
        let policy = cli
            .run(&["iam-policy", "--for", command, "--output", "json"])
            .expect(0)
            .json();
        let allowed: Vec<String> = policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
                _ => vec![],
            })
            .collect();
        for call in calls {
            // GetCallerIdentity needs no permission.
            if call.operation == "GetCallerIdentity" {
                continue;
            }
            let action = format!("{}:{}", call.service, call.operation);
            assert!(
                allowed.contains(&action),
                "`iam-policy --for {command}` lacks {action}"
            );
        }
    }
}

/// On a terminal, teardown lists what it will delete and asks; only "y" proceeds. `script` gives
/// the binary a real pty.
#[tokio::test(flavor = "multi_thread")]
async fn teardown_asks_on_a_terminal() {
    let (standin, cli, _) = deployed();
    let on_tty = |answer: &str| {
        let command = format!("{} teardown", env!("CARGO_BIN_EXE_iot-custom-auth"));
        let mut child = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(cli.path())
            .envs(standin.env())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux)");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, screen) = on_tty("n\n");
    assert_eq!(code, Some(2), "{screen}");
    assert!(
        screen.contains("This removes from us-east-1:")
            && screen.contains(FUNCTION)
            && screen.contains("Proceed? [y/N]"),
        "{screen}"
    );
    assert!(screen.contains("nothing was removed"), "{screen}");
    cli.run(&["status"]).expect(0);
    let (code, screen) = on_tty("y\n");
    assert_eq!(code, Some(0), "{screen}");
    assert_nothing_left(&standin).await;
}

/// `status --connect` logs in and publishes like a device. `iot-custom-auth local`, serving the
/// same config, stands in for the account's data endpoint.
#[tokio::test(flavor = "multi_thread")]
async fn status_connect_publishes_like_a_device() {
    let (_standin, cli, password) = deployed();
    let mut gateway = std::process::Command::new(env!("CARGO_BIN_EXE_iot-custom-auth"))
        .args([
            "--output",
            "json",
            "local",
            "--listen",
            "127.0.0.1:0",
            "--cert-dir",
            "certs",
        ])
        .current_dir(cli.path())
        .env("TMPDIR", cli.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listening: Value = serde_json::Deserializer::from_reader(gateway.stdout.take().unwrap())
        .into_iter()
        .next()
        .expect("local prints where it listens")
        .unwrap();
    let host = listening["address"].as_str().unwrap().to_string();
    let ca = listening["ca_file"].as_str().unwrap().to_string();
    let args = [
        "status",
        "--probe-user",
        "sensor1",
        "--connect",
        "--host",
        &host,
        "--ca-file",
        &ca,
        "--output",
        "json",
    ];

    let good = cli
        .run_with(&args, None, &[("IOT_CUSTOM_AUTH_PASSWORD", &password)])
        .expect(0);
    let connect = good.json()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "connect")
        .cloned()
        .unwrap();
    assert_eq!(connect["state"], "ok", "{connect}");
    assert!(
        connect["detail"]
            .as_str()
            .unwrap()
            .contains("telemetry/sensor1"),
        "{connect}"
    );

    let wrong = cli
        .run_with(
            &args,
            None,
            &[("IOT_CUSTOM_AUTH_PASSWORD", "Wrong-password-Zq8x3Lr5Tb7Nc2")],
        )
        .expect(3);
    assert_eq!(failing(&wrong), ["probe.allowed", "connect"]);

    let unreachable = cli
        .run_with(
            &[
                "status",
                "--probe-user",
                "sensor1",
                "--connect",
                "--output",
                "json",
            ],
            None,
            &[("IOT_CUSTOM_AUTH_PASSWORD", &password)],
        )
        .expect(3);
    assert_eq!(
        failing(&unreachable),
        ["connect"],
        "the stand-in's endpoint does not exist"
    );
    gateway.kill().unwrap();
    gateway.wait().unwrap();
}

/// 10,000 devices deploy (their verifiers ride in the package, not in environment variables)
/// and the last one can log in.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_devices_deploy_and_log_in() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let standin = StandIn::start();
    let cli = Cli::new(&standin);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut config = String::new();
    for i in 0..10_000 {
        let salt = [(i % 251) as u8; 16];
        let password = format!("Device-{i:05}-Zq8x3Lr5Tb7Nc2Vm9");
        let hash = sha2::Sha256::new()
            .chain_update(salt)
            .chain_update(&password)
            .finalize();
        config.push_str(&format!(
            "[[devices]]\nusername = \"dev{i:05}\"\npassword_verifier = \"sha256:{}:{}\"\n",
            b64.encode(salt),
            b64.encode(hash)
        ));
    }
    std::fs::write(cli.config_path(), config).unwrap();
    cli.run(&["setup"]).expect(0);
    let c = clients(&standin).await;
    let last = test_invoke(
        &c.iot,
        "dev09999",
        "Device-09999-Zq8x3Lr5Tb7Nc2Vm9",
        "dev09999",
    )
    .await;
    assert_eq!(last.is_authenticated(), Some(true));
    assert!(last.policy_documents()[0].contains("topic/telemetry/dev09999"));
    let wrong = test_invoke(
        &c.iot,
        "dev09999",
        "Device-09998-Zq8x3Lr5Tb7Nc2Vm9",
        "dev09999",
    )
    .await;
    assert_eq!(wrong.is_authenticated(), Some(false));
    let function = c
        .lambda
        .get_function_configuration()
        .function_name(FUNCTION)
        .send()
        .await
        .unwrap();
    assert!(
        function.environment().is_none(),
        "no verifiers in environment variables"
    );
    cli.run(&["status"]).expect(0);
}

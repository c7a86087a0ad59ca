//! `setup`, `status` and `teardown` with `credential_store = "dynamodb"`, end to end: the built
//! binary against the stand-in (moto's DynamoDB, with a new table CREATING for a while as in AWS),
//! as identities holding exactly the policies `iam-policy` prints. Devices are put into the table
//! with the SDK, as the device commands would.

mod common;

use aws_sdk_dynamodb::types::{AttributeValue, PointInTimeRecoverySpecification};
use common::cli::{Cli, Run};
use common::standin::{DEVICES_TABLE as TABLE, StandIn, devices_table_arn};
use serde_json::Value;

const ROLE: &str = "iot-custom-auth-authorizer-role";

/// A scratch config with the DynamoDB store and no device.
fn dynamodb_cli(standin: &StandIn) -> Cli {
    Cli::with_config(
        standin,
        "[deployment]\ncredential_store = \"dynamodb\"\ncache_seconds = 30\n",
    )
}

async fn dynamodb(standin: &StandIn) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&standin.sdk_config().await)
}

/// One device item, in the shape the authorizer reads (see the shared contract).
async fn put_device(standin: &StandIn, username: &str) {
    let s = |v: &str| AttributeValue::S(v.to_string());
    dynamodb(standin)
        .await
        .put_item()
        .table_name(TABLE)
        .item("username", s(username))
        .item("verifier", s("sha256:c2FsdA==:aGFzaA=="))
        .item("clientIds", AttributeValue::L(vec![s(username)]))
        .item(
            "publish",
            AttributeValue::L(vec![s(&format!("telemetry/{username}"))]),
        )
        .item("subscribe", AttributeValue::L(vec![]))
        .send()
        .await
        .expect("PutItem");
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

fn failing(run: &Run) -> Vec<String> {
    run.json()["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["state"] == "fail")
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

fn operations(standin: &StandIn) -> Vec<String> {
    standin
        .calls()
        .into_iter()
        .map(|c| format!("{}:{}", c.service, c.operation))
        .collect()
}

/// The environment of an identity holding exactly `iam-policy --for <command>`.
fn as_identity(standin: &StandIn, cli: &Cli, command: &str) -> Vec<(String, String)> {
    let printed = cli
        .run(&["iam-policy", "--for", command, "--output", "json"])
        .expect(0)
        .json();
    assert!(
        printed.to_string().contains(&devices_table_arn()),
        "the {command} policy names the table: {printed}"
    );
    standin.env_as(&standin.identity(&format!("ci-{command}"), &printed))
}

fn run_as(cli: &Cli, env: &[(String, String)], args: &[&str], code: i32) -> Run {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    cli.run_with(args, None, &env).expect(code)
}

/// setup → status → a device added straight to the table (no redeploy) → teardown keeps the
/// table that holds it (exit 1, with the export hint) → teardown --delete-devices leaves nothing;
/// each command as an identity holding only its printed policy.
#[tokio::test(flavor = "multi_thread")]
async fn the_dynamodb_lifecycle_as_least_privilege_identities() {
    let standin = StandIn::start();
    let cli = dynamodb_cli(&standin);
    let setup = as_identity(&standin, &cli, "setup");
    let status = as_identity(&standin, &cli, "status");
    let teardown = as_identity(&standin, &cli, "teardown");

    // An empty config is fine with the DynamoDB store: no first-device prompt, no refusal.
    let run = run_as(&cli, &setup, &["setup", "--output", "json"], 0);
    let table = run.json()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "table")
        .cloned()
        .expect("the table is a resource");
    assert_eq!(table["name"], TABLE);
    assert_eq!(table["action"], "created");

    let db = dynamodb(&standin).await;
    let described = db.describe_table().table_name(TABLE).send().await.unwrap();
    let t = described.table().unwrap();
    assert_eq!(t.table_status().unwrap().as_str(), "ACTIVE");
    assert_eq!(
        t.billing_mode_summary()
            .and_then(|b| b.billing_mode())
            .unwrap()
            .as_str(),
        "PAY_PER_REQUEST"
    );
    let backups = db
        .describe_continuous_backups()
        .table_name(TABLE)
        .send()
        .await
        .unwrap();
    assert_eq!(
        backups
            .continuous_backups_description()
            .and_then(|c| c.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status())
            .unwrap()
            .as_str(),
        "ENABLED"
    );
    let tags = db
        .list_tags_of_resource()
        .resource_arn(devices_table_arn())
        .send()
        .await
        .unwrap();
    assert!(
        tags.tags()
            .iter()
            .any(|t| t.key() == "iot-custom-auth:deployment" && t.value() == "iot-custom-auth")
    );
    // The role reads the table by key, and nothing else.
    let iam = aws_sdk_iam::Client::new(&standin.sdk_config().await);
    let grant = iam
        .get_role_policy()
        .role_name(ROLE)
        .policy_name("read-devices-table")
        .send()
        .await
        .unwrap();
    let grant: Value =
        serde_json::from_str(&urlencoding::decode(grant.policy_document()).unwrap()).unwrap();
    assert_eq!(grant["Statement"].as_array().unwrap().len(), 1, "{grant}");
    assert_eq!(grant["Statement"][0]["Action"], "dynamodb:GetItem");
    assert_eq!(
        grant["Statement"][0]["Resource"],
        devices_table_arn().as_str()
    );

    let healthy = run_as(&cli, &status, &["status", "--output", "json"], 0);
    for id in [
        "table.exists",
        "table.owned",
        "table.key",
        "table.status",
        "table.billing",
        "table.encryption",
        "table.pitr",
        "table.devices",
        "role.table_access",
    ] {
        assert_eq!(
            check(&healthy, id)["state"],
            "ok",
            "{id}: {}",
            healthy.stdout
        );
    }
    assert!(
        check(&healthy, "table.encryption")["detail"]
            .as_str()
            .unwrap()
            .contains("AWS owned key")
    );
    assert!(
        check(&healthy, "table.devices")["detail"]
            .as_str()
            .unwrap()
            .contains("no devices")
    );

    // A device change is a table write: setup afterwards has nothing to deploy.
    put_device(&standin, "sensor1").await;
    standin.clear_calls();
    let again = run_as(&cli, &setup, &["setup", "--output", "json"], 0);
    assert!(
        again.json()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] == "unchanged"),
        "{}",
        again.stdout
    );
    assert!(
        !operations(&standin).contains(&"lambda:UpdateFunctionCode".to_string()),
        "{:?}",
        operations(&standin)
    );
    let counted = run_as(&cli, &status, &["status", "--output", "json"], 0);
    let devices = check(&counted, "table.devices")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(devices.starts_with("about 1 devices"), "{devices}");

    // teardown keeps the table that holds a device, removes the rest, says how to go on, exit 1.
    let kept = run_as(&cli, &teardown, &["teardown", "--yes"], 1);
    let line = kept
        .stdout
        .lines()
        .find(|l| l.starts_with("table"))
        .unwrap_or_else(|| panic!("{}", kept.stdout));
    assert!(line.contains("kept"), "{line}");
    assert!(
        kept.stdout
            .contains("iot-custom-auth device export > devices.jsonl"),
        "{}",
        kept.stdout
    );
    assert!(kept.stdout.contains("--delete-devices"), "{}", kept.stdout);
    for resource in ["role", "function", "authorizer", "log-group"] {
        assert!(
            kept.stdout
                .lines()
                .any(|l| l.starts_with(resource) && l.contains("deleted")),
            "{resource}: {}",
            kept.stdout
        );
    }
    let item = db
        .get_item()
        .table_name(TABLE)
        .key("username", AttributeValue::S("sensor1".into()))
        .send()
        .await
        .unwrap();
    assert!(item.item().is_some(), "the device survived");
    let remains = run_as(&cli, &status, &["status", "--output", "json"], 3);
    assert_eq!(remains.json()["deployed"], true, "the table is still there");

    // A re-run without the flag keeps it again; with it, nothing is left.
    run_as(&cli, &teardown, &["teardown", "--yes"], 1);
    let gone = run_as(
        &cli,
        &teardown,
        &["teardown", "--yes", "--delete-devices"],
        0,
    );
    assert!(
        gone.stdout
            .lines()
            .any(|l| l.starts_with("table") && l.contains("deleted")),
        "{}",
        gone.stdout
    );
    let err = db
        .describe_table()
        .table_name(TABLE)
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
    );
    let nothing = run_as(&cli, &status, &["status", "--output", "json"], 3);
    assert_eq!(nothing.json()["deployed"], false);
    run_as(&cli, &teardown, &["teardown", "--yes"], 0);
}

/// An empty table is deleted by a plain teardown: there is nothing to lose. (And `status
/// --probe-user` of a device the table does not hold is a usage error naming the table.)
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_table_goes_with_a_plain_teardown() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = dynamodb_cli(&standin);
    cli.run(&["setup"]).expect(0);
    // The device is looked up in the table (tests/dynamodb_e2e.rs probes one that is there).
    let probe = cli
        .run_with(
            &["status", "--probe-user", "sensor1"],
            None,
            &[(
                "IOT_CUSTOM_AUTH_PASSWORD",
                "Pw-sensor1-Zq8x3Lr5Tb7Nc2Vm9Kd4",
            )],
        )
        .expect(2);
    assert!(
        probe
            .stderr
            .contains("no device `sensor1` in table iot-custom-auth-devices"),
        "{}",
        probe.stderr
    );
    let run = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("table") && l.contains("deleted")),
        "{}",
        run.stdout
    );
    assert!(
        dynamodb(&standin)
            .await
            .describe_table()
            .table_name(TABLE)
            .send()
            .await
            .is_err()
    );
}

/// Drift on the table and the role's grant is named by status, each with its own check, and the
/// next setup repairs it; a table that is no longer tagged as ours is refused, never adopted.
#[tokio::test(flavor = "multi_thread")]
async fn status_names_table_drift_and_setup_repairs_it() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = dynamodb_cli(&standin);
    cli.run(&["setup"]).expect(0);
    let db = dynamodb(&standin).await;
    let iam = aws_sdk_iam::Client::new(&standin.sdk_config().await);

    db.update_continuous_backups()
        .table_name(TABLE)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(false)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let run = cli.run(&["status", "--output", "json"]).expect(3);
    assert_eq!(failing(&run), ["table.pitr"], "{}", run.stdout);
    cli.run(&["setup"]).expect(0);
    cli.run(&["status"]).expect(0);

    iam.delete_role_policy()
        .role_name(ROLE)
        .policy_name("read-devices-table")
        .send()
        .await
        .unwrap();
    let run = cli.run(&["status", "--output", "json"]).expect(3);
    assert_eq!(failing(&run), ["role.table_access"], "{}", run.stdout);
    assert!(
        check(&run, "role.table_access")["detail"]
            .as_str()
            .unwrap()
            .contains("every login is refused")
    );
    // Widened by hand: also drift.
    iam.put_role_policy()
        .role_name(ROLE)
        .policy_name("read-devices-table")
        .policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Action": "dynamodb:*", "Resource": "*"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let run = cli.run(&["status", "--output", "json"]).expect(3);
    assert_eq!(failing(&run), ["role.table_access"], "{}", run.stdout);
    let repaired = cli.run(&["setup"]).expect(0);
    assert!(
        repaired
            .stdout
            .lines()
            .any(|l| l.starts_with("role") && l.contains("read-devices-table")),
        "{}",
        repaired.stdout
    );
    cli.run(&["status"]).expect(0);

    db.untag_resource()
        .resource_arn(devices_table_arn())
        .tag_keys("iot-custom-auth:deployment")
        .send()
        .await
        .unwrap();
    let run = cli.run(&["status", "--output", "json"]).expect(3);
    assert_eq!(failing(&run), ["table.owned"], "{}", run.stdout);
    standin.clear_calls();
    let refused = cli.run(&["setup"]).expect(1);
    assert!(
        refused.stderr.contains("was not created by deployment"),
        "{}",
        refused.stderr
    );
    assert!(
        standin.calls().iter().all(|c| !c.mutating),
        "setup changed something before refusing"
    );
    // teardown leaves a table that is not ours alone.
    let run = cli.run(&["teardown", "--yes"]).expect(0);
    assert!(
        run.stdout
            .lines()
            .any(|l| l.starts_with("table") && l.contains("skipped")),
        "{}",
        run.stdout
    );
    assert!(db.describe_table().table_name(TABLE).send().await.is_ok());
}

/// A setup that fails right after creating the table (PITR not turned on yet) is completed by the
/// next run, which finds the table, waits for it to be ACTIVE and turns PITR on. The stand-in
/// keeps a new table CREATING for a while, as AWS does: PITR and DeleteTable are refused then.
#[tokio::test(flavor = "multi_thread")]
async fn a_setup_interrupted_after_creating_the_table_is_completed_by_the_next() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    // LimitExceededException is retried by the SDK (a throttling code): three exhaust it.
    standin.set_behaviour(serde_json::json!({
        "table_create_seconds": 3.0,
        "fail": {"dynamodb:UpdateContinuousBackups": {"code": "LimitExceededException", "status": 400,
            "message": "Too many operations", "count": 3}}
    }));
    let cli = dynamodb_cli(&standin);
    let failed = cli.run(&["setup"]).expect(1);
    assert!(
        failed.stderr.contains("UpdateContinuousBackups"),
        "{}",
        failed.stderr
    );
    let run = cli.run(&["status", "--output", "json"]).expect(3);
    assert!(
        failing(&run).contains(&"table.pitr".to_string()),
        "{}",
        run.stdout
    );

    // A table still CREATING cannot be deleted or given PITR: the stand-in says so as AWS does.
    let db = dynamodb(&standin).await;
    common::standin::create_devices_table(&db, "other-devices").await;
    let creating = db
        .describe_table()
        .table_name("other-devices")
        .send()
        .await
        .unwrap();
    assert_eq!(
        creating.table().unwrap().table_status().unwrap().as_str(),
        "CREATING"
    );
    let err = db
        .delete_table()
        .table_name("other-devices")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_in_use_exception())
    );

    let done = cli.run(&["setup"]).expect(0);
    assert!(
        done.stdout
            .lines()
            .any(|l| l.starts_with("table") && l.contains("point-in-time recovery on")),
        "{}",
        done.stdout
    );
    cli.run(&["status"]).expect(0);
}

/// The package store is today's deployment: no table, no DynamoDB call, no inline policy.
#[tokio::test(flavor = "multi_thread")]
async fn the_package_store_makes_no_dynamodb_call() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = Cli::new(&standin);
    cli.add_device("sensor1", &[]);
    let run = cli.run(&["setup"]).expect(0);
    assert!(
        !run.stdout.lines().any(|l| l.starts_with("table")),
        "{}",
        run.stdout
    );
    cli.run(&["status"]).expect(0);
    cli.run(&["teardown", "--yes"]).expect(0);
    assert!(
        operations(&standin)
            .iter()
            .all(|op| !op.starts_with("dynamodb:")),
        "{:?}",
        operations(&standin)
    );
}

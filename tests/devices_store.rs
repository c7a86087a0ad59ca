//! The device commands on both stores: the config file (`credential_store = "package"`) and the
//! `<name>-devices` table (`"dynamodb"`, moto's DynamoDB through the stand-in), read back the way
//! the authorizer reads them.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use common::cli::Cli;
use common::standin::StandIn;
use sha2::{Digest as _, Sha256};

const NAME: &str = "fleet";
const TABLE: &str = "fleet-devices";
const PW: &str = "Zq8x3Lr5Tb7Nc2Vm9Kd4Hw6J";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Whether `verifier` (`sha256:<salt>:<hash>`) was made from `password`, as the authorizer checks.
fn verifies(verifier: &str, password: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let parts: Vec<&str> = verifier.split(':').collect();
    let salt = b64.decode(parts[1]).unwrap();
    let hash = b64.decode(parts[2]).unwrap();
    let mut h = Sha256::new();
    h.update(&salt);
    h.update(password.as_bytes());
    h.finalize().as_slice() == hash.as_slice()
}

/// The table as `setup` creates it (key `username`, on demand); created here so the device
/// commands can be tested on their own.
async fn create_table(standin: &StandIn) -> aws_sdk_dynamodb::Client {
    let client = aws_sdk_dynamodb::Client::new(&standin.sdk_config().await);
    common::standin::create_devices_table(&client, TABLE).await;
    client
}

async fn item(
    client: &aws_sdk_dynamodb::Client,
    username: &str,
) -> Option<HashMap<String, AttributeValue>> {
    client
        .get_item()
        .table_name(TABLE)
        .key("username", AttributeValue::S(username.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .cloned()
}

async fn count(client: &aws_sdk_dynamodb::Client) -> usize {
    let mut n = 0;
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(TABLE)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        n += out.items().len();
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return n;
        }
    }
}

fn s(item: &HashMap<String, AttributeValue>, key: &str) -> String {
    item[key].as_s().unwrap().clone()
}

fn dynamodb_cli(standin: &StandIn) -> Cli {
    Cli::with_config(
        standin,
        &format!("[deployment]\nname = \"{NAME}\"\ncredential_store = \"dynamodb\"\n"),
    )
}

#[tokio::test]
async fn dynamodb_store_add_show_list_rotate_disable_remove_act_on_the_table() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let client = create_table(&standin).await;
    let cli = dynamodb_cli(&standin);
    let config_before = std::fs::read_to_string(cli.config_path()).unwrap();

    let added = cli
        .run(&["device", "add", "sensor1", "--output", "json"])
        .expect(0)
        .json();
    let password = added["password"].as_str().unwrap().to_string();
    let stored = item(&client, "sensor1").await.expect("the item is written");
    assert!(verifies(&s(&stored, "verifier"), &password));
    assert_eq!(
        stored["clientIds"],
        AttributeValue::L(vec![AttributeValue::S("sensor1".into())])
    );
    assert_eq!(
        stored["publish"],
        AttributeValue::L(vec![AttributeValue::S("telemetry/sensor1".into())])
    );
    assert!(!stored.contains_key("disabled") && !stored.contains_key("previous"));
    let text = cli.run(&["device", "add", "sensor1"]).expect(2);
    assert!(
        text.stderr
            .contains("already exists in table fleet-devices")
    );
    let second = cli.add_device("sensor2", &["--subscribe", "cmd/#"]);
    assert!(verifies(
        &s(&item(&client, "sensor2").await.unwrap(), "verifier"),
        &second
    ));
    assert_eq!(
        std::fs::read_to_string(cli.config_path()).unwrap(),
        config_before,
        "the config keeps only deployment settings"
    );

    // Paged: two pages of one, the second saying there is no more.
    let first = cli
        .run(&["device", "list", "--limit", "1", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(first["devices"].as_array().unwrap().len(), 1);
    let next = first["next"].as_str().unwrap();
    let rest = cli
        .run(&["device", "list", "--after", next, "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(rest["devices"].as_array().unwrap().len(), 1);
    assert!(rest.get("next").is_none());
    let mut names = vec![
        first["devices"][0]["username"].as_str().unwrap(),
        rest["devices"][0]["username"].as_str().unwrap(),
    ];
    names.sort();
    assert_eq!(names, ["sensor1", "sensor2"]);

    // Rotate: the old verifier moves to `previous` with the overlap's expiry.
    let before = now();
    let rotated = cli
        .run(&[
            "device",
            "rotate",
            "sensor1",
            "--overlap",
            "2h",
            "--output",
            "json",
        ])
        .expect(0)
        .json();
    let new_password = rotated["password"].as_str().unwrap();
    let stored = item(&client, "sensor1").await.unwrap();
    assert!(verifies(&s(&stored, "verifier"), new_password));
    let previous = stored["previous"].as_l().unwrap();
    assert_eq!(previous.len(), 1);
    let previous = previous[0].as_m().unwrap();
    assert!(verifies(&s(previous, "verifier"), &password));
    let expires: u64 = previous["expiresAt"].as_n().unwrap().parse().unwrap();
    assert!(
        (before + 7200..=now() + 7200).contains(&expires),
        "{expires}"
    );
    let shown = cli.run(&["device", "show", "sensor1"]).expect(0);
    assert!(shown.stdout.contains("previous password works until"));
    assert!(!shown.stdout.contains("sha256:"));
    // A zero overlap: the old password stops at once; the earlier one still runs out on time.
    cli.run(&["device", "rotate", "sensor1", "--overlap", "0s"])
        .expect(0);
    let stored = item(&client, "sensor1").await.unwrap();
    assert!(!verifies(&s(&stored, "verifier"), new_password));
    assert_eq!(stored["previous"].as_l().unwrap().len(), 1);

    cli.run(&["device", "disable", "sensor2"]).expect(0);
    assert_eq!(
        item(&client, "sensor2").await.unwrap()["disabled"],
        AttributeValue::Bool(true)
    );
    let listed = cli.run(&["device", "list"]).expect(0);
    assert!(listed.stdout.contains("(disabled)"), "{}", listed.stdout);
    cli.run(&["device", "enable", "sensor2"]).expect(0);
    assert!(
        !item(&client, "sensor2")
            .await
            .unwrap()
            .contains_key("disabled")
    );

    cli.run(&["device", "remove", "sensor2"]).expect(0);
    assert!(item(&client, "sensor2").await.is_none());
    let again = cli.run(&["device", "remove", "sensor2"]).expect(2);
    assert!(
        again
            .stderr
            .contains("no device `sensor2` in table fleet-devices")
    );
    cli.run(&["device", "show", "sensor2"]).expect(2);

    let calls = standin.calls();
    assert!(
        calls.iter().all(|c| c.service == "dynamodb"),
        "device changes never touch the function: {calls:?}"
    );
}

#[tokio::test]
async fn dynamodb_store_without_a_table_says_how_to_create_it() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let cli = dynamodb_cli(&standin);
    let run = cli.run(&["device", "add", "sensor1"]).expect(1);
    assert!(
        run.stderr
            .contains("the device table fleet-devices does not exist")
            && run.stderr.contains("iot-custom-auth setup"),
        "{}",
        run.stderr
    );
}

/// A CSV with good and bad rows, for both stores.
fn fleet_csv(dir: &std::path::Path, good: usize) -> std::path::PathBuf {
    let mut text = String::from("username,password,client_ids,publish,subscribe\n");
    for i in 0..good {
        text.push_str(&format!("dev{i},{PW}{i},,,\n"));
    }
    text.push_str("weak,password123,,,\n");
    text.push_str(&format!("dev0,{PW}dup,,,\n"));
    text.push_str("bad?name,Zq8x3Lr5Tb7Nc2Vm9Kd4Hw6Q,,,\n");
    text.push_str(&format!("wild,{PW}w,,telemetry/+,\n"));
    let path = dir.join("fleet.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn assert_refusals(report: &serde_json::Value, good: usize) {
    let refused = report["refused"].as_array().unwrap();
    let lines: Vec<u64> = refused
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    let first_bad = good as u64 + 2;
    assert_eq!(
        lines,
        [first_bad, first_bad + 1, first_bad + 2, first_bad + 3]
    );
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("password refused")
    );
    assert!(
        refused[1]["reason"]
            .as_str()
            .unwrap()
            .contains("also on line 2"),
        "{refused:?}"
    );
    assert!(refused[3]["reason"].as_str().unwrap().contains("wildcard"));
    let text = report.to_string();
    assert!(!text.contains("password123") && !text.contains(PW));
}

#[tokio::test]
async fn import_into_the_table_checks_every_row_first_and_a_rerun_writes_nothing() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let client = create_table(&standin).await;
    let cli = dynamodb_cli(&standin);
    let good = 60;
    let file = fleet_csv(cli.path(), good);
    let file = file.to_str().unwrap();

    let refused = cli.run(&["device", "import", file]).expect(2);
    assert!(
        refused.stderr.contains("4 of 64 rows") && refused.stderr.contains("--skip-invalid"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("password123"));
    assert_eq!(count(&client).await, 0, "nothing written");

    let run = cli
        .run(&[
            "device",
            "import",
            file,
            "--skip-invalid",
            "--output",
            "json",
        ])
        .expect(0);
    let report = run.json();
    assert_eq!(report["written"], good);
    assert_eq!(report["unchanged"], 0);
    assert_refusals(&report, good);
    assert!(
        run.stderr
            .contains(&format!("imported {good}/{good} devices")),
        "plain progress lines without a terminal: {}",
        run.stderr
    );
    assert_eq!(count(&client).await, good);
    let dev7 = item(&client, "dev7").await.unwrap();
    assert!(verifies(&s(&dev7, "verifier"), &format!("{PW}7")));

    standin.clear_calls();
    let rerun = cli
        .run(&[
            "device",
            "import",
            file,
            "--skip-invalid",
            "--output",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(rerun["written"], 0);
    assert_eq!(rerun["unchanged"], good);
    assert!(
        standin
            .calls()
            .iter()
            .all(|c| c.operation != "BatchWriteItem"),
        "a re-run writes nothing"
    );

    // A changed row is written again, keeping the others.
    std::fs::write(
        cli.path().join("one.jsonl"),
        format!(
            "{{\"username\":\"dev7\",\"password\":\"{PW}-new\",\"subscribe\":[\"cmd/dev7\"]}}\n"
        ),
    )
    .unwrap();
    let one = cli
        .run(&["device", "import", "one.jsonl", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(one["written"], 1);
    let dev7 = item(&client, "dev7").await.unwrap();
    assert!(verifies(&s(&dev7, "verifier"), &format!("{PW}-new")));
    assert_eq!(count(&client).await, good);

    // Export: no verifier unless asked, and an export with verifiers imports unchanged.
    let plain = cli.run(&["device", "export"]).expect(0);
    assert_eq!(plain.stdout.lines().count(), good);
    assert!(!plain.stdout.contains("sha256:") && !plain.stdout.contains("verifier"));
    let csv = cli.run(&["device", "export", "--format", "csv"]).expect(0);
    assert!(
        csv.stdout
            .starts_with("username,client_ids,publish,subscribe,disabled\n")
    );
    assert!(!csv.stdout.contains("sha256:"));
    let full = cli.run(&["device", "export", "--with-verifiers"]).expect(0);
    assert_eq!(full.stdout.matches("sha256:").count(), good);
    std::fs::write(cli.path().join("back.jsonl"), &full.stdout).unwrap();
    let back = cli
        .run(&["device", "import", "back.jsonl", "--output", "json"])
        .expect(0)
        .json();
    assert_eq!(back["unchanged"], good);
}

#[test]
fn import_into_the_config_file_and_rotate_disable_export_there() {
    let cli = Cli::with_env(vec![("AWS_EC2_METADATA_DISABLED".into(), "true".into())]);
    let good = 5;
    let file = fleet_csv(cli.path(), good);
    let file = file.to_str().unwrap();
    cli.run(&["device", "import", file]).expect(2);
    assert!(!cli.config_path().exists(), "nothing written");
    let report = cli
        .run(&[
            "device",
            "import",
            file,
            "--skip-invalid",
            "--output",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(report["written"], good);
    assert_refusals(&report, good);
    let config = std::fs::read_to_string(cli.config_path()).unwrap();
    assert_eq!(config.matches("[[devices]]").count(), good);
    assert!(!config.contains(PW));
    let rerun = cli
        .run(&[
            "device",
            "import",
            file,
            "--skip-invalid",
            "--output",
            "json",
        ])
        .expect(0)
        .json();
    assert_eq!(rerun["written"], 0);
    assert_eq!(rerun["unchanged"], good);
    assert_eq!(std::fs::read_to_string(cli.config_path()).unwrap(), config);

    // Rotate keeps the old verifier until the overlap ends; a later write drops expired ones.
    let rotated = cli
        .run(&[
            "device",
            "rotate",
            "dev1",
            "--overlap",
            "1h",
            "--output",
            "json",
        ])
        .expect(0)
        .json();
    assert!(rotated["password"].as_str().unwrap().len() >= 22);
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(cli.config_path()).unwrap()).unwrap();
    let dev1 = &config["devices"].as_array().unwrap()[1];
    let previous = dev1["previous_verifiers"].as_array().unwrap();
    assert_eq!(previous.len(), 1);
    assert!(verifies(
        previous[0]["verifier"].as_str().unwrap(),
        &format!("{PW}1")
    ));
    let expires = previous[0]["expires_at"].as_integer().unwrap() as u64;
    assert!(expires > now() + 3500 && expires <= now() + 3600);
    let text = std::fs::read_to_string(cli.config_path()).unwrap();
    std::fs::write(
        cli.config_path(),
        text.replace(&format!("expires_at = {expires}"), "expires_at = 1000"),
    )
    .unwrap();
    cli.run(&["device", "disable", "dev1"]).expect(0);
    let text = std::fs::read_to_string(cli.config_path()).unwrap();
    assert!(
        !text.contains("previous_verifiers"),
        "expired verifiers are dropped: {text}"
    );
    assert!(text.contains("disabled = true"));
    let shown = cli.run(&["device", "show", "dev1"]).expect(0);
    assert!(shown.stdout.contains("disabled"), "{}", shown.stdout);
    cli.run(&["device", "enable", "dev1"]).expect(0);
    assert!(
        !std::fs::read_to_string(cli.config_path())
            .unwrap()
            .contains("disabled")
    );

    let export = cli.run(&["device", "export"]).expect(0);
    assert_eq!(export.stdout.lines().count(), good);
    assert!(!export.stdout.contains("sha256:"));
    let with = cli.run(&["device", "export", "--with-verifiers"]).expect(0);
    assert_eq!(with.stdout.matches("sha256:").count(), good);
}

#[test]
fn local_with_the_table_store_needs_the_sdk_lambda_provides_and_says_how_to_install_it() {
    let cli = Cli::with_env(vec![("AWS_EC2_METADATA_DISABLED".into(), "true".into())]);
    std::fs::write(
        cli.config_path(),
        format!("[deployment]\nname = \"{NAME}\"\ncredential_store = \"dynamodb\"\n"),
    )
    .unwrap();
    let run = cli
        .run_with(
            &["local", "--listen", "127.0.0.1:0"],
            None,
            &[("IOT_CUSTOM_AUTH_LAMBDA_SDK", "")],
        )
        .expect(2);
    assert!(
        run.stderr.contains("IOT_CUSTOM_AUTH_LAMBDA_SDK is not set")
            && run.stderr.contains("npm install")
            && run.stderr.contains("@aws-sdk/client-dynamodb"),
        "{}",
        run.stderr
    );
    let empty = tempfile::tempdir().unwrap();
    let run = cli
        .run_with(
            &["local", "--listen", "127.0.0.1:0"],
            None,
            &[("IOT_CUSTOM_AUTH_LAMBDA_SDK", empty.path().to_str().unwrap())],
        )
        .expect(2);
    assert!(
        run.stderr
            .contains("has no node_modules/@aws-sdk/client-dynamodb"),
        "{}",
        run.stderr
    );
}

//! TestInvokeAuthorizer runs the real authorizer (assets/authorizer/index.mjs) in DynamoDB mode:
//! the stand-in gives the function Lambda's environment (role credentials, region, its own
//! endpoint) and the SDK the Lambda Node.js runtime includes, so each login reads the device's
//! item from moto's table. Needs IOT_CUSTOM_AUTH_LAMBDA_SDK (set by `scripts/test`).

mod common;

use std::io::{Cursor, Write};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_iot::types::{AuthorizerStatus, MqttContext};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, Runtime};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::standin::{ACCOUNT_ID, REGION, StandIn};
use serde_json::json;
use sha2::{Digest, Sha256};

const LAMBDA_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const TABLE: &str = "fleet-devices";
const PASSWORD: &str = "kX9-vT2qLm7Rw4Zp8Hs3Jd6N";
const OLD_PASSWORD: &str = "Qe5Yb1Uc8Wn3Fg7Tk2Mv9Lr4";

/// `sha256:<salt b64>:<SHA-256(salt || password) b64>`, as the CLI writes it.
fn verifier(password: &str, salt_byte: u8) -> String {
    let salt = [salt_byte; 16];
    let hash = Sha256::digest([&salt[..], password.as_bytes()].concat());
    format!("sha256:{}:{}", STANDARD.encode(salt), STANDARD.encode(hash))
}

/// The Lambda package in DynamoDB mode: index.mjs verbatim and a devices.json naming the
/// table instead of holding devices.
fn package(table: &str) -> Vec<u8> {
    let index = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/authorizer/index.mjs"
    ))
    .expect("read index.mjs");
    let devices = json!({
        "version": 1,
        "arnPrefix": format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}"),
        "refreshAfterInSeconds": 300,
        "disconnectAfterInSeconds": 86400,
        "store": { "kind": "dynamodb", "table": table, "cacheSeconds": 60 },
    });
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("index.mjs", options).unwrap();
    zip.write_all(&index).unwrap();
    zip.start_file("devices.json", options).unwrap();
    zip.write_all(devices.to_string().as_bytes()).unwrap();
    zip.finish().unwrap().into_inner()
}

fn strings(values: &[&str]) -> AttributeValue {
    AttributeValue::L(
        values
            .iter()
            .map(|v| AttributeValue::S(v.to_string()))
            .collect(),
    )
}

fn mqtt(username: &str, password: &str) -> MqttContext {
    MqttContext::builder()
        .username(username)
        .password(aws_sdk_iot::primitives::Blob::new(password.as_bytes()))
        .client_id(username.split('?').next().unwrap_or_default())
        .build()
}

struct Aws {
    dynamodb: aws_sdk_dynamodb::Client,
    iot: aws_sdk_iot::Client,
}

impl Aws {
    async fn put_device(&self, username: &str, extra: &[(&str, AttributeValue)]) {
        let mut put = self
            .dynamodb
            .put_item()
            .table_name(TABLE)
            .item("username", AttributeValue::S(username.into()))
            .item("verifier", AttributeValue::S(verifier(PASSWORD, 7)))
            .item("clientIds", strings(&[username]))
            .item("publish", strings(&[&format!("telemetry/{username}")]))
            .item("subscribe", strings(&[]))
            .item(
                "updatedAt",
                AttributeValue::S("2026-11-30T00:00:00Z".into()),
            );
        for (name, value) in extra {
            put = put.item(*name, value.clone());
        }
        put.send().await.expect("PutItem");
    }

    /// TestInvokeAuthorizer's verdict and, when allowed, the policy documents.
    async fn login(&self, authorizer: &str, username: &str, password: &str) -> Option<Vec<String>> {
        let reply = self
            .iot
            .test_invoke_authorizer()
            .authorizer_name(authorizer)
            .mqtt_context(mqtt(username, password))
            .send()
            .await
            .unwrap_or_else(|e| panic!("TestInvokeAuthorizer: {e:?}"));
        reply
            .is_authenticated()
            .unwrap_or(false)
            .then(|| reply.policy_documents().to_vec())
    }
}

/// Role (allowed `dynamodb:GetItem` on `table` when `grant`), function holding
/// `package(table)`, authorizer `name` allowed to invoke it.
async fn deploy(standin: &StandIn, name: &str, table: &str, grant: bool) {
    let config = standin.sdk_config().await;
    let iam = aws_sdk_iam::Client::new(&config);
    let lambda = aws_sdk_lambda::Client::new(&config);
    let iot = aws_sdk_iot::Client::new(&config);
    let role = iam
        .create_role()
        .role_name(format!("{name}-role"))
        .assume_role_policy_document(LAMBDA_TRUST)
        .send()
        .await
        .expect("CreateRole");
    if grant {
        let read = json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "dynamodb:GetItem",
            "Resource": format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{table}"),
        }]});
        iam.put_role_policy()
            .role_name(format!("{name}-role"))
            .policy_name("read-devices-table")
            .policy_document(read.to_string())
            .send()
            .await
            .expect("PutRolePolicy");
    }
    let function = lambda
        .create_function()
        .function_name(name)
        .runtime(Runtime::Nodejs22x)
        .role(role.role().unwrap().arn())
        .handler("index.handler")
        .timeout(5)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(package(table)))
                .build(),
        )
        .send()
        .await
        .expect("CreateFunction");
    let authorizer = iot
        .create_authorizer()
        .authorizer_name(name)
        .authorizer_function_arn(function.function_arn().unwrap())
        .signing_disabled(true)
        .status(AuthorizerStatus::Active)
        .send()
        .await
        .expect("CreateAuthorizer");
    lambda
        .add_permission()
        .function_name(name)
        .statement_id("iot-invoke")
        .action("lambda:InvokeFunction")
        .principal("iot.amazonaws.com")
        .source_arn(authorizer.authorizer_arn().unwrap())
        .send()
        .await
        .expect("AddPermission");
}

#[tokio::test]
async fn test_invoke_authorizer_reads_devices_from_the_table() {
    assert!(
        std::env::var_os("IOT_CUSTOM_AUTH_LAMBDA_SDK").is_some(),
        "IOT_CUSTOM_AUTH_LAMBDA_SDK is not set: run the tests through `scripts/test`, which \
         installs the SDK the Lambda runtime includes and sets it"
    );
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let config = standin.sdk_config().await;
    let aws = Aws {
        dynamodb: aws_sdk_dynamodb::Client::new(&config),
        iot: aws_sdk_iot::Client::new(&config),
    };
    common::standin::create_devices_table(&aws.dynamodb, TABLE).await;
    deploy(&standin, "fleet", TABLE, true).await;

    // A device added to the table logs in, with its policy from the item; no redeploy.
    assert_eq!(aws.login("fleet", "sensor1", PASSWORD).await, None);
    aws.put_device("sensor1", &[]).await;
    let policies = aws
        .login(
            "fleet",
            "sensor1?x-amz-customauthorizer-name=fleet",
            PASSWORD,
        )
        .await
        .expect("sensor1 allowed once its item exists");
    let policy: serde_json::Value = serde_json::from_str(&policies[0]).unwrap();
    assert_eq!(
        policy["Statement"][1]["Resource"][0],
        format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}:topic/telemetry/sensor1")
    );
    assert_eq!(aws.login("fleet", "sensor1", OLD_PASSWORD).await, None);

    // Rotation: the previous password works until its expiresAt.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let previous = |expires_at: u64| {
        AttributeValue::L(vec![AttributeValue::M(
            [
                (
                    "verifier".to_string(),
                    AttributeValue::S(verifier(OLD_PASSWORD, 9)),
                ),
                (
                    "expiresAt".to_string(),
                    AttributeValue::N(expires_at.to_string()),
                ),
            ]
            .into(),
        )])
    };
    aws.put_device("sensor1", &[("previous", previous(now + 3600))])
        .await;
    assert!(aws.login("fleet", "sensor1", OLD_PASSWORD).await.is_some());
    assert!(aws.login("fleet", "sensor1", PASSWORD).await.is_some());
    aws.put_device("sensor1", &[("previous", previous(now - 1))])
        .await;
    assert_eq!(aws.login("fleet", "sensor1", OLD_PASSWORD).await, None);

    // Disabled, then removed: refused.
    aws.put_device("sensor1", &[("disabled", AttributeValue::Bool(true))])
        .await;
    assert_eq!(aws.login("fleet", "sensor1", PASSWORD).await, None);
    aws.put_device("sensor1", &[]).await;
    assert!(aws.login("fleet", "sensor1", PASSWORD).await.is_some());
    aws.dynamodb
        .delete_item()
        .table_name(TABLE)
        .key("username", AttributeValue::S("sensor1".into()))
        .send()
        .await
        .expect("DeleteItem");
    assert_eq!(aws.login("fleet", "sensor1", PASSWORD).await, None);

    // A function whose table does not exist denies (it does not crash: TestInvokeAuthorizer
    // would fail with the function's error).
    deploy(&standin, "orphan", "missing-devices", true).await;
    assert_eq!(aws.login("orphan", "sensor1", PASSWORD).await, None);

    // The function's reads are its role's: a role not allowed to read the table gets
    // AccessDeniedException and its devices are refused, though the item is there.
    aws.put_device("sensor2", &[]).await;
    deploy(&standin, "ungranted", TABLE, false).await;
    assert_eq!(aws.login("ungranted", "sensor2", PASSWORD).await, None);
    assert!(aws.login("fleet", "sensor2", PASSWORD).await.is_some());

    // The function read the table itself: one GetItem per login (each TestInvokeAuthorizer
    // runs a fresh container here, so nothing came from its cache), 13 logins above, of which
    // the role without a grant was refused by IAM.
    let reads: Vec<u16> = standin
        .calls()
        .into_iter()
        .filter(|c| c.service == "dynamodb" && c.operation == "GetItem")
        .map(|c| c.status)
        .collect();
    assert_eq!(reads.len(), 12, "{reads:?}");
    assert_eq!(
        reads.iter().filter(|s| **s == 400).count(),
        2,
        "the missing table's ResourceNotFoundException and the ungranted role's \
         AccessDeniedException: {reads:?}"
    );
}

//! The local AWS stand-in behaves like real AWS where iot-custom-auth depends on it,
//! as observed through the real AWS SDK clients (see standin/README.md and
//! /work/shared/aws-facts.md for the behaviours checked here).

mod common;

use std::io::{Cursor, Write};
use std::time::Duration;

use aws_sdk_iam::error::ProvideErrorMetadata;
use aws_sdk_iot::types::{AuthorizerStatus, MqttContext, Tag};
use aws_sdk_lambda::client::Waiters;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{FunctionCode, LastUpdateStatus, Runtime, State, StateReasonCode};
use common::standin::{ACCOUNT_ID, Call, REGION, StandIn};
use serde_json::json;

const LAMBDA_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const EC2_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// Accepts password "test"; username "throw" throws and "badprincipal" gets a
/// principalId IoT rejects, to exercise the stand-in's reply validation.
const AUTHORIZER_JS: &str = r#"
export const handler = async (event) => {
  const mqtt = event.protocolData?.mqtt ?? {};
  const username = (mqtt.username ?? "").split("?")[0];
  const password = Buffer.from(mqtt.password ?? "", "base64").toString("utf8");
  if (username === "throw") throw new Error("authorizer crashed");
  if (password !== "test") return { isAuthenticated: false };
  return {
    isAuthenticated: true,
    principalId: username === "badprincipal" ? "not-valid!" : "device1",
    disconnectAfterInSeconds: 3600,
    refreshAfterInSeconds: 300,
    policyDocuments: [{
      Version: "2012-10-17",
      Statement: [{ Effect: "Allow", Action: "iot:Connect",
                    Resource: `arn:aws:iot:${process.env.AWS_REGION}:123456789012:client/${mqtt.clientId}` }],
    }],
  };
};
"#;

struct Clients {
    iam: aws_sdk_iam::Client,
    lambda: aws_sdk_lambda::Client,
    iot: aws_sdk_iot::Client,
}

async fn clients(standin: &StandIn) -> Clients {
    let config = standin.sdk_config().await;
    Clients {
        iam: aws_sdk_iam::Client::new(&config),
        lambda: aws_sdk_lambda::Client::new(&config),
        iot: aws_sdk_iot::Client::new(&config),
    }
}

fn authorizer_zip() -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file("index.mjs", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(AUTHORIZER_JS.as_bytes()).unwrap();
    zip.finish().unwrap().into_inner()
}

async fn create_role(c: &Clients, name: &str, trust: &str) -> String {
    let role = c
        .iam
        .create_role()
        .role_name(name)
        .assume_role_policy_document(trust)
        .send()
        .await
        .expect("CreateRole");
    role.role().expect("role").arn().to_string()
}

fn create_function_request(
    c: &Clients,
    name: &str,
    role_arn: &str,
    runtime: Runtime,
) -> aws_sdk_lambda::operation::create_function::builders::CreateFunctionFluentBuilder {
    c.lambda
        .create_function()
        .function_name(name)
        .runtime(runtime)
        .role(role_arn)
        .handler("index.handler")
        .timeout(5)
        .code(
            FunctionCode::builder()
                .zip_file(Blob::new(authorizer_zip()))
                .build(),
        )
}

/// Role + function, on a stand-in started with `--no-aws-delays`.
async fn create_authorizer_function(c: &Clients, name: &str) -> String {
    let role_arn = create_role(c, &format!("{name}-role"), LAMBDA_TRUST).await;
    let function = create_function_request(c, name, &role_arn, Runtime::Nodejs22x)
        .send()
        .await
        .expect("CreateFunction");
    function.function_arn().expect("function ARN").to_string()
}

async fn create_authorizer(c: &Clients, name: &str, function_arn: &str) -> String {
    let created = c
        .iot
        .create_authorizer()
        .authorizer_name(name)
        .authorizer_function_arn(function_arn)
        .signing_disabled(true)
        .status(AuthorizerStatus::Active)
        .tags(
            Tag::builder()
                .key("project")
                .value("iot-custom-auth")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateAuthorizer");
    created
        .authorizer_arn()
        .expect("authorizer ARN")
        .to_string()
}

fn mqtt(username: &str, password: &str) -> MqttContext {
    MqttContext::builder()
        .username(username)
        .password(aws_sdk_iot::primitives::Blob::new(password.as_bytes()))
        .client_id("client-1")
        .build()
}

fn calls_of(standin: &StandIn, operation: &str) -> Vec<Call> {
    standin
        .calls()
        .into_iter()
        .filter(|c| c.operation == operation)
        .collect()
}

#[tokio::test]
async fn authorizer_lifecycle() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    let function_arn = create_authorizer_function(&c, "auth-fn").await;

    let arn = create_authorizer(&c, "lifecycle", &function_arn).await;
    assert_eq!(
        arn,
        format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}:authorizer/lifecycle")
    );

    let duplicate = c
        .iot
        .create_authorizer()
        .authorizer_name("lifecycle")
        .authorizer_function_arn(&function_arn)
        .signing_disabled(true)
        .send()
        .await
        .unwrap_err();
    assert!(
        duplicate
            .as_service_error()
            .is_some_and(|e| e.is_resource_already_exists_exception())
    );

    let described = c
        .iot
        .describe_authorizer()
        .authorizer_name("lifecycle")
        .send()
        .await
        .unwrap();
    let description = described.authorizer_description().unwrap();
    assert_eq!(
        description.authorizer_function_arn(),
        Some(function_arn.as_str())
    );
    assert_eq!(description.status(), Some(&AuthorizerStatus::Active));
    assert_eq!(description.signing_disabled(), Some(true));
    assert!(description.creation_date().is_some() && description.last_modified_date().is_some());

    let updated = c
        .iot
        .update_authorizer()
        .authorizer_name("lifecycle")
        .enable_caching_for_http(true)
        .send()
        .await
        .unwrap();
    assert_eq!(updated.authorizer_arn(), Some(arn.as_str()));

    c.iot
        .set_default_authorizer()
        .authorizer_name("lifecycle")
        .send()
        .await
        .unwrap();
    let default = c.iot.describe_default_authorizer().send().await.unwrap();
    assert_eq!(
        default.authorizer_description().unwrap().authorizer_name(),
        Some("lifecycle")
    );

    // IoT may invoke the function only once it is granted for this authorizer.
    let refused = c
        .iot
        .test_invoke_authorizer()
        .authorizer_name("lifecycle")
        .mqtt_context(mqtt("device", "test"))
        .send()
        .await
        .unwrap_err();
    assert!(
        refused
            .as_service_error()
            .is_some_and(|e| e.is_invalid_request_exception()),
        "{refused:?}"
    );
    c.lambda
        .add_permission()
        .function_name("auth-fn")
        .statement_id("iot-invoke")
        .action("lambda:InvokeFunction")
        .principal("iot.amazonaws.com")
        .source_arn(&arn)
        .send()
        .await
        .unwrap();

    let allowed = c
        .iot
        .test_invoke_authorizer()
        .authorizer_name("lifecycle")
        .mqtt_context(mqtt("device?x-amz-customauthorizer-name=lifecycle", "test"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.is_authenticated(), Some(true));
    assert_eq!(allowed.principal_id(), Some("device1"));
    assert_eq!(allowed.refresh_after_in_seconds(), Some(300));
    assert_eq!(allowed.disconnect_after_in_seconds(), Some(3600));
    let policy: serde_json::Value = serde_json::from_str(&allowed.policy_documents()[0]).unwrap();
    assert_eq!(
        policy["Statement"][0]["Resource"],
        format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}:client/client-1")
    );

    let denied = c
        .iot
        .test_invoke_authorizer()
        .authorizer_name("lifecycle")
        .mqtt_context(mqtt("device", "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.is_authenticated(), Some(false));

    let delete_active = c
        .iot
        .delete_authorizer()
        .authorizer_name("lifecycle")
        .send()
        .await
        .unwrap_err();
    assert!(
        delete_active
            .as_service_error()
            .is_some_and(|e| e.is_delete_conflict_exception())
    );

    c.iot
        .update_authorizer()
        .authorizer_name("lifecycle")
        .status(AuthorizerStatus::Inactive)
        .send()
        .await
        .unwrap();
    let delete_default = c
        .iot
        .delete_authorizer()
        .authorizer_name("lifecycle")
        .send()
        .await
        .unwrap_err();
    assert!(
        delete_default
            .as_service_error()
            .is_some_and(|e| e.is_delete_conflict_exception())
    );

    c.iot.clear_default_authorizer().send().await.unwrap();
    let no_default = c
        .iot
        .describe_default_authorizer()
        .send()
        .await
        .unwrap_err();
    assert!(
        no_default
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
    );

    c.iot
        .delete_authorizer()
        .authorizer_name("lifecycle")
        .send()
        .await
        .unwrap();
    let gone = c
        .iot
        .describe_authorizer()
        .authorizer_name("lifecycle")
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
    );
}

#[tokio::test]
async fn list_authorizers_pages_and_filters() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    let function_arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:unused");
    for name in ["a1", "a2", "a3", "a4", "a5"] {
        create_authorizer(&c, name, &function_arn).await;
    }
    c.iot
        .update_authorizer()
        .authorizer_name("a2")
        .status(AuthorizerStatus::Inactive)
        .send()
        .await
        .unwrap();

    let mut names = Vec::new();
    let mut marker = None;
    loop {
        let page = c
            .iot
            .list_authorizers()
            .page_size(2)
            .ascending_order(true)
            .set_marker(marker)
            .send()
            .await
            .unwrap();
        assert!(page.authorizers().len() <= 2);
        names.extend(
            page.authorizers()
                .iter()
                .filter_map(|a| a.authorizer_name())
                .map(String::from),
        );
        marker = page.next_marker().map(String::from);
        if marker.is_none() {
            break;
        }
    }
    assert_eq!(names, ["a1", "a2", "a3", "a4", "a5"]);

    let inactive = c
        .iot
        .list_authorizers()
        .status(AuthorizerStatus::Inactive)
        .send()
        .await
        .unwrap();
    let inactive: Vec<_> = inactive
        .authorizers()
        .iter()
        .filter_map(|a| a.authorizer_name())
        .collect();
    assert_eq!(inactive, ["a2"]);
}

#[tokio::test]
async fn authorizer_tags_and_validation() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    let function_arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:unused");
    let arn = create_authorizer(&c, "tagged", &function_arn).await;

    let tag_keys = |tags: &[Tag]| tags.iter().map(|t| t.key().to_string()).collect::<Vec<_>>();
    let listed = c
        .iot
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tag_keys(listed.tags()), ["project"]);
    c.iot
        .tag_resource()
        .resource_arn(&arn)
        .tags(Tag::builder().key("owner").value("team").build().unwrap())
        .send()
        .await
        .unwrap();
    c.iot
        .untag_resource()
        .resource_arn(&arn)
        .tag_keys("project")
        .send()
        .await
        .unwrap();
    let listed = c
        .iot
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(tag_keys(listed.tags()), ["owner"]);

    // Signing is on unless disabled, and then needs the token key and public keys.
    let unsigned = c
        .iot
        .create_authorizer()
        .authorizer_name("signed")
        .authorizer_function_arn(&function_arn)
        .send()
        .await
        .unwrap_err();
    assert!(
        unsigned
            .as_service_error()
            .is_some_and(|e| e.is_invalid_request_exception())
    );
    assert!(
        unsigned
            .message()
            .unwrap_or_default()
            .contains("Token signing keys map")
    );

    let bad_name = c
        .iot
        .create_authorizer()
        .authorizer_name("no spaces allowed")
        .authorizer_function_arn(&function_arn)
        .signing_disabled(true)
        .send()
        .await
        .unwrap_err();
    assert!(
        bad_name
            .as_service_error()
            .is_some_and(|e| e.is_invalid_request_exception())
    );
}

#[tokio::test]
async fn test_invoke_rejects_replies_outside_the_contract() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    let function_arn = create_authorizer_function(&c, "contract-fn").await;
    let arn = create_authorizer(&c, "contract", &function_arn).await;
    c.lambda
        .add_permission()
        .function_name(&function_arn)
        .statement_id("iot-invoke")
        .action("lambda:InvokeFunction")
        .principal("iot.amazonaws.com")
        .source_arn(&arn)
        .source_account(ACCOUNT_ID)
        .send()
        .await
        .unwrap();

    for username in ["throw", "badprincipal"] {
        let err = c
            .iot
            .test_invoke_authorizer()
            .authorizer_name("contract")
            .mqtt_context(mqtt(username, "test"))
            .send()
            .await
            .unwrap_err();
        assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_invalid_response_exception()),
            "{username}: {err:?}"
        );
    }
}

#[tokio::test]
async fn new_role_is_assumable_only_after_propagation() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    standin.set_behaviour(json!({"role_propagation_seconds": 1.0}));
    let c = clients(&standin).await;
    let role_arn = create_role(&c, "fresh-role", LAMBDA_TRUST).await;

    let early = create_function_request(&c, "fresh-fn", &role_arn, Runtime::Nodejs22x)
        .send()
        .await
        .unwrap_err();
    assert!(
        early
            .as_service_error()
            .is_some_and(|e| e.is_invalid_parameter_value_exception())
    );
    assert_eq!(
        early.message(),
        Some("The role defined for the function cannot be assumed by Lambda.")
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_function_request(&c, "fresh-fn", &role_arn, Runtime::Nodejs22x)
        .send()
        .await
        .expect("the role is assumable once propagated");
}

#[tokio::test]
async fn role_without_lambda_trust_is_never_assumable() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    let role_arn = create_role(&c, "ec2-role", EC2_TRUST).await;

    let refused = create_function_request(&c, "untrusted-fn", &role_arn, Runtime::Nodejs22x)
        .send()
        .await
        .unwrap_err();
    assert!(
        refused
            .as_service_error()
            .is_some_and(|e| e.is_invalid_parameter_value_exception())
    );

    c.iam
        .update_assume_role_policy()
        .role_name("ec2-role")
        .policy_document(LAMBDA_TRUST)
        .send()
        .await
        .unwrap();
    create_function_request(&c, "untrusted-fn", &role_arn, Runtime::Nodejs22x)
        .send()
        .await
        .expect("a role trusting Lambda is assumable");
}

#[tokio::test]
async fn function_is_pending_then_active_and_updates_one_at_a_time() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    standin.set_behaviour(json!({"function_pending_seconds": 0.5, "function_update_seconds": 0.5}));
    let c = clients(&standin).await;
    let role_arn = create_role(&c, "state-role", LAMBDA_TRUST).await;

    let created = create_function_request(&c, "state-fn", &role_arn, Runtime::Nodejs24x)
        .send()
        .await
        .unwrap();
    assert_eq!(created.state(), Some(&State::Pending));
    assert_eq!(
        created.state_reason_code(),
        Some(&StateReasonCode::Creating)
    );

    let while_pending = c
        .lambda
        .update_function_code()
        .function_name("state-fn")
        .zip_file(Blob::new(authorizer_zip()))
        .send()
        .await
        .unwrap_err();
    assert!(
        while_pending
            .as_service_error()
            .is_some_and(|e| e.is_resource_conflict_exception())
    );

    c.lambda
        .wait_until_function_active_v2()
        .function_name("state-fn")
        .wait(Duration::from_secs(10))
        .await
        .expect("the function becomes Active");

    let updated = c
        .lambda
        .update_function_configuration()
        .function_name("state-fn")
        .description("second version")
        .send()
        .await
        .unwrap();
    assert_eq!(
        updated.last_update_status(),
        Some(&LastUpdateStatus::InProgress)
    );

    let second = c
        .lambda
        .update_function_code()
        .function_name("state-fn")
        .zip_file(Blob::new(authorizer_zip()))
        .send()
        .await
        .unwrap_err();
    assert!(
        second
            .as_service_error()
            .is_some_and(|e| e.is_resource_conflict_exception())
    );
    assert!(
        second
            .message()
            .unwrap_or_default()
            .contains("An update is in progress for resource")
    );

    c.lambda
        .wait_until_function_updated_v2()
        .function_name("state-fn")
        .wait(Duration::from_secs(10))
        .await
        .expect("the update finishes");
    c.lambda
        .update_function_code()
        .function_name("state-fn")
        .zip_file(Blob::new(authorizer_zip()))
        .send()
        .await
        .expect("a later update is accepted");
}

#[tokio::test]
async fn add_permission_answers_201_and_rejects_a_duplicate_statement_id() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    create_authorizer_function(&c, "perm-fn").await;
    let grant = || {
        c.lambda
            .add_permission()
            .function_name("perm-fn")
            .statement_id("iot-invoke")
            .action("lambda:InvokeFunction")
            .principal("iot.amazonaws.com")
            .source_arn(format!("arn:aws:iot:{REGION}:{ACCOUNT_ID}:authorizer/x"))
            .send()
    };
    grant().await.unwrap();
    let duplicate = grant().await.unwrap_err();
    assert!(
        duplicate
            .as_service_error()
            .is_some_and(|e| e.is_resource_conflict_exception())
    );

    let statuses: Vec<u16> = calls_of(&standin, "AddPermission")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [201, 409]);
}

#[tokio::test]
async fn deprecated_runtime_cannot_be_created() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    let role_arn = create_role(&c, "runtime-role", LAMBDA_TRUST).await;
    let blocked = create_function_request(&c, "old-fn", &role_arn, Runtime::Nodejs20x)
        .send()
        .await
        .unwrap_err();
    assert!(
        blocked
            .as_service_error()
            .is_some_and(|e| e.is_invalid_parameter_value_exception())
    );
    assert!(blocked.message().unwrap_or_default().contains("nodejs20.x"));
}

#[tokio::test]
async fn sdk_retry_absorbs_two_throttles_per_call() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    standin.set_behaviour(json!({"throttle": {
        "iot:ListAuthorizers": 2, "lambda:ListFunctions": 2, "iam:ListRoles": 2
    }}));

    c.iot
        .list_authorizers()
        .send()
        .await
        .expect("IoT retried through 2 throttles");
    c.lambda
        .list_functions()
        .send()
        .await
        .expect("Lambda retried through 2 throttles");
    c.iam
        .list_roles()
        .send()
        .await
        .expect("IAM retried through 2 throttles");

    for (operation, throttled) in [
        ("ListAuthorizers", 400),
        ("ListFunctions", 429),
        ("ListRoles", 400),
    ] {
        let statuses: Vec<u16> = calls_of(&standin, operation)
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(statuses, [throttled, throttled, 200], "{operation}");
    }
}

#[tokio::test]
async fn sdk_gives_up_after_three_throttled_attempts() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    standin.set_behaviour(json!({"throttle": {"iot:CreateAuthorizer": 4, "iam:CreateRole": 4}}));

    let iot = c
        .iot
        .create_authorizer()
        .authorizer_name("throttled")
        .authorizer_function_arn(format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:f"))
        .signing_disabled(true)
        .send()
        .await
        .unwrap_err();
    assert!(
        iot.as_service_error()
            .is_some_and(|e| e.is_throttling_exception())
    );
    assert_eq!(iot.code(), Some("ThrottlingException"));

    let iam = c
        .iam
        .create_role()
        .role_name("r")
        .assume_role_policy_document(LAMBDA_TRUST)
        .send()
        .await;
    assert_eq!(iam.unwrap_err().code(), Some("Throttling"));

    assert_eq!(calls_of(&standin, "CreateAuthorizer").len(), 3);
    assert!(
        calls_of(&standin, "CreateRole")
            .iter()
            .all(|c| c.status == 400 && c.mutating)
    );
}

#[tokio::test]
async fn injected_failures_surface_with_their_code() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    create_authorizer_function(&c, "fail-fn").await;
    standin.set_behaviour(json!({"fail": {
        "lambda:AddPermission": {"code": "AccessDeniedException", "status": 403, "message": "not allowed"},
        "iam:DeleteRole": {"code": "AccessDenied", "status": 403, "message": "no"},
        "iot:SetDefaultAuthorizer": {"code": "UnauthorizedException", "status": 401, "message": "no"}
    }}));

    let lambda = c
        .lambda
        .add_permission()
        .function_name("fail-fn")
        .statement_id("s")
        .action("lambda:InvokeFunction")
        .principal("iot.amazonaws.com")
        .send()
        .await
        .unwrap_err();
    assert_eq!(lambda.code(), Some("AccessDeniedException"));
    assert_eq!(lambda.message(), Some("not allowed"));

    let iam = c
        .iam
        .delete_role()
        .role_name("fail-fn-role")
        .send()
        .await
        .unwrap_err();
    assert_eq!(iam.code(), Some("AccessDenied"));

    let iot = c
        .iot
        .set_default_authorizer()
        .authorizer_name("x")
        .send()
        .await
        .unwrap_err();
    assert!(
        iot.as_service_error()
            .is_some_and(|e| e.is_unauthorized_exception())
    );

    // Each failure was injected once: the same calls now reach the stand-in's AWS.
    c.lambda
        .add_permission()
        .function_name("fail-fn")
        .statement_id("s")
        .action("lambda:InvokeFunction")
        .principal("iot.amazonaws.com")
        .send()
        .await
        .expect("the failure was injected once");
    let recorded = calls_of(&standin, "AddPermission");
    assert_eq!(
        recorded.iter().map(|c| c.status).collect::<Vec<_>>(),
        [403, 201]
    );
}

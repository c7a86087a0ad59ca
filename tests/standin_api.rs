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
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use common::standin::{ACCOUNT_ID, Call, Identity, REGION, StandIn};
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
    sts: aws_sdk_sts::Client,
}

async fn clients(standin: &StandIn) -> Clients {
    clients_for(standin, REGION, None).await
}

/// Clients in `region`, signing as `identity` (or as the unrestricted test key).
async fn clients_for(standin: &StandIn, region: &str, identity: Option<&Identity>) -> Clients {
    let config = standin.sdk_config_for(region, identity).await;
    Clients {
        iam: aws_sdk_iam::Client::new(&config),
        lambda: aws_sdk_lambda::Client::new(&config),
        iot: aws_sdk_iot::Client::new(&config),
        sts: aws_sdk_sts::Client::new(&config),
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
    // The role's age is compared with the window when each call arrives: a window no loaded
    // machine can outlast, then closing it, tests both sides without racing the clock.
    standin.set_behaviour(json!({"role_propagation_seconds": 3600.0}));
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

    standin.set_behaviour(json!({"role_propagation_seconds": 0.0}));
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

// --- least-privilege identities (aws-facts §13; standin/README.md "Identities") -------------

const BASIC_EXECUTION: &str = "iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";

fn allow(action: &str, resource: &str) -> serde_json::Value {
    json!({"Effect": "Allow", "Action": action, "Resource": resource})
}

fn policy(statements: &[serde_json::Value]) -> serde_json::Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn function_arn_in(region: &str, name: &str) -> String {
    format!(
        "arn:{}:lambda:{region}:{ACCOUNT_ID}:function:{name}",
        partition(region)
    )
}

fn role_arn_in(region: &str, name: &str) -> String {
    format!("arn:{}:iam::{ACCOUNT_ID}:role/{name}", partition(region))
}

fn authorizer_arn_in(region: &str, name: &str) -> String {
    format!(
        "arn:{}:iot:{region}:{ACCOUNT_ID}:authorizer/{name}",
        partition(region)
    )
}

fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// AWS's message when no identity-based policy allows the action.
fn not_allowed(caller: &str, action: &str, resource: &str) -> String {
    format!(
        "User: {caller} is not authorized to perform: {action} on resource: {resource} \
         because no identity-based policy allows the {action} action"
    )
}

/// The call was refused with HTTP 403, `code`, and `message`.
fn assert_denied<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, SdkError<E, HttpResponse>>,
    code: &str,
    message: &str,
) {
    let err = result.expect_err("the call is denied");
    assert_eq!(
        err.raw_response().map(|r| r.status().as_u16()),
        Some(403),
        "{err:?}"
    );
    assert_eq!(err.code(), Some(code), "{err:?}");
    assert_eq!(err.message(), Some(message), "{err:?}");
}

#[tokio::test]
async fn identity_is_allowed_what_its_policy_grants_and_denied_the_rest_in_each_services_format() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    let function_arn = create_authorizer_function(&admin, "scoped-fn").await;
    let authorizer = create_authorizer(&admin, "scoped", &function_arn).await;
    let role = role_arn_in(REGION, "scoped-fn-role");

    let identity = standin.identity(
        "ci-status",
        &policy(&[
            allow("iam:GetRole", &role),
            allow("lambda:GetPolicy", &function_arn),
            json!({"Effect": "Allow", "Action": ["iot:DescribeAuthorizer", "iot:ListTagsForResource"], "Resource": authorizer}),
        ]),
    );
    assert_eq!(
        identity.arn,
        format!("arn:aws:iam::{ACCOUNT_ID}:user/ci-status")
    );
    let me = clients_for(&standin, REGION, Some(&identity)).await;

    // sts:GetCallerIdentity needs no permission and names the identity.
    let caller = me.sts.get_caller_identity().send().await.unwrap();
    assert_eq!(caller.arn(), Some(identity.arn.as_str()));

    me.iam
        .get_role()
        .role_name("scoped-fn-role")
        .send()
        .await
        .expect("iam:GetRole is granted");
    me.iot
        .describe_authorizer()
        .authorizer_name("scoped")
        .send()
        .await
        .expect("iot:DescribeAuthorizer is granted");
    me.iot
        .list_tags_for_resource()
        .resource_arn(&authorizer)
        .send()
        .await
        .expect("iot:ListTagsForResource is granted");
    // GetPolicy is granted: it reaches Lambda, which has no policy for the function yet.
    let no_policy = me
        .lambda
        .get_policy()
        .function_name("scoped-fn")
        .send()
        .await
        .unwrap_err();
    assert_eq!(no_policy.code(), Some("ResourceNotFoundException"));

    // A missing action: IAM answers AccessDenied (query XML), Lambda and IoT AccessDeniedException.
    assert_denied(
        me.iam
            .delete_role()
            .role_name("scoped-fn-role")
            .send()
            .await,
        "AccessDenied",
        &not_allowed(&identity.arn, "iam:DeleteRole", &role),
    );
    assert_denied(
        me.lambda
            .get_function_configuration()
            .function_name("scoped-fn")
            .send()
            .await,
        "AccessDeniedException",
        &not_allowed(
            &identity.arn,
            "lambda:GetFunctionConfiguration",
            &function_arn,
        ),
    );
    assert_denied(
        me.iot
            .test_invoke_authorizer()
            .authorizer_name("scoped")
            .mqtt_context(mqtt("device", "test"))
            .send()
            .await,
        "AccessDeniedException",
        &not_allowed(&identity.arn, "iot:TestInvokeAuthorizer", &authorizer),
    );
    // Account-wide IoT actions are evaluated on resource `*`.
    assert_denied(
        me.iot.describe_default_authorizer().send().await,
        "AccessDeniedException",
        &not_allowed(&identity.arn, "iot:DescribeDefaultAuthorizer", "*"),
    );

    // Nothing denied was carried out, and denials are in the call record with their status.
    admin
        .iam
        .get_role()
        .role_name("scoped-fn-role")
        .send()
        .await
        .expect("the role was not deleted");
    let statuses: Vec<u16> = calls_of(&standin, "DeleteRole")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [403]);
}

#[tokio::test]
async fn explicit_deny_wins_over_any_allow() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    let function_arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:unused");
    let authorizer = create_authorizer(&admin, "guarded", &function_arn).await;
    let identity = standin.identity(
        "no-deletes",
        &policy(&[
            allow("iot:*", "*"),
            json!({"Effect": "Deny", "Action": "iot:Delete*", "Resource": authorizer}),
        ]),
    );
    let me = clients_for(&standin, REGION, Some(&identity)).await;

    me.iot
        .update_authorizer()
        .authorizer_name("guarded")
        .status(AuthorizerStatus::Inactive)
        .send()
        .await
        .expect("iot:* allows the update");
    assert_denied(
        me.iot
            .delete_authorizer()
            .authorizer_name("guarded")
            .send()
            .await,
        "AccessDeniedException",
        &format!(
            "User: {} is not authorized to perform: iot:DeleteAuthorizer on resource: {authorizer} \
             with an explicit deny in an identity-based policy",
            identity.arn
        ),
    );
    admin
        .iot
        .describe_authorizer()
        .authorizer_name("guarded")
        .send()
        .await
        .expect("the authorizer still exists");
}

#[tokio::test]
async fn actions_and_resources_match_as_iam_matches_them() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    for name in ["team-a", "team-b", "team-bb", "other"] {
        create_authorizer_function(&admin, name).await;
    }
    let arn = |name: &str| function_arn_in(REGION, name);
    let identity = standin.identity(
        "matcher",
        &policy(&[
            // Actions are case-insensitive; `?` is one character, `*` any run.
            allow("Lambda:getfunctionCONFIGURATION", &arn("team-?")),
            allow("lambda:GetPolicy", &arn("team-*")),
            json!({"Effect": "Allow", "NotAction": ["lambda:Delete*", "lambda:Get*", "lambda:ListTags"], "Resource": arn("other")}),
            json!({"Effect": "Allow", "Action": "lambda:ListTags", "NotResource": arn("team-*")}),
        ]),
    );
    let me = clients_for(&standin, REGION, Some(&identity)).await;
    let config = |name: &'static str| {
        me.lambda
            .get_function_configuration()
            .function_name(name)
            .send()
    };

    config("team-a").await.expect("team-? matches team-a");
    config("team-b").await.expect("team-? matches team-b");
    assert_denied(
        config("team-bb").await,
        "AccessDeniedException",
        &not_allowed(
            &identity.arn,
            "lambda:GetFunctionConfiguration",
            &arn("team-bb"),
        ),
    );
    // A full ARN as FunctionName is the same resource.
    me.lambda
        .get_function_configuration()
        .function_name(arn("team-a"))
        .send()
        .await
        .expect("the function's ARN names the same resource");

    let get_policy = |name: &'static str| me.lambda.get_policy().function_name(name).send();
    let reached = get_policy("team-bb").await.unwrap_err();
    assert_eq!(reached.code(), Some("ResourceNotFoundException"));
    assert_denied(
        get_policy("other").await,
        "AccessDeniedException",
        &not_allowed(&identity.arn, "lambda:GetPolicy", &arn("other")),
    );

    // NotAction: everything on `other` except deletes, reads and ListTags.
    me.lambda
        .update_function_configuration()
        .function_name("other")
        .description("changed")
        .send()
        .await
        .expect("NotAction allows what it does not name");
    assert_denied(
        me.lambda
            .delete_function()
            .function_name("other")
            .send()
            .await,
        "AccessDeniedException",
        &not_allowed(&identity.arn, "lambda:DeleteFunction", &arn("other")),
    );

    // NotResource: ListTags anywhere but team-*.
    me.lambda
        .list_tags()
        .resource(arn("other"))
        .send()
        .await
        .expect("NotResource allows other resources");
    assert_denied(
        me.lambda.list_tags().resource(arn("team-a")).send().await,
        "AccessDeniedException",
        &not_allowed(&identity.arn, "lambda:ListTags", &arn("team-a")),
    );
}

#[tokio::test]
async fn pass_role_is_checked_with_iam_passed_to_service() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    let role = create_role(&admin, "exec-role", LAMBDA_TRUST).await;
    let create_as = |identity: Identity, name: &'static str| {
        let standin = &standin;
        let role = role.clone();
        async move {
            let me = clients_for(standin, REGION, Some(&identity)).await;
            create_function_request(&me, name, &role, Runtime::Nodejs22x)
                .send()
                .await
        }
    };
    let functions = format!("arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:*");
    let with_condition = |service: &str| {
        policy(&[
            allow("lambda:CreateFunction", &functions),
            allow("lambda:UpdateFunctionConfiguration", &functions),
            json!({"Effect": "Allow", "Action": "iam:PassRole", "Resource": role,
                   "Condition": {"StringEquals": {"iam:PassedToService": service}}}),
        ])
    };

    let to_lambda = standin.identity("deployer", &with_condition("lambda.amazonaws.com"));
    create_as(to_lambda.clone(), "passed-fn")
        .await
        .expect("PassRole to lambda.amazonaws.com is allowed");

    let to_ec2 = standin.identity("ec2-only", &with_condition("ec2.amazonaws.com"));
    assert_denied(
        create_as(to_ec2.clone(), "not-passed-fn").await,
        "AccessDeniedException",
        &not_allowed(&to_ec2.arn, "iam:PassRole", &role),
    );
    // UpdateFunctionConfiguration with a Role passes it again.
    let me = clients_for(&standin, REGION, Some(&to_ec2)).await;
    assert_denied(
        me.lambda
            .update_function_configuration()
            .function_name("passed-fn")
            .role(&role)
            .send()
            .await,
        "AccessDeniedException",
        &not_allowed(&to_ec2.arn, "iam:PassRole", &role),
    );
    me.lambda
        .update_function_configuration()
        .function_name("passed-fn")
        .description("no role, nothing passed")
        .send()
        .await
        .expect("an update without Role passes nothing");

    let no_pass = standin.identity(
        "no-pass",
        &policy(&[allow("lambda:CreateFunction", &functions)]),
    );
    assert_denied(
        create_as(no_pass.clone(), "never-fn").await,
        "AccessDeniedException",
        &not_allowed(&no_pass.arn, "iam:PassRole", &role),
    );
}

#[tokio::test]
async fn attach_role_policy_is_checked_with_iam_policy_arn() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    let role = create_role(&admin, "attach-role", LAMBDA_TRUST).await;
    let basic = format!("arn:aws:{BASIC_EXECUTION}");
    let admin_policy = "arn:aws:iam::aws:policy/AdministratorAccess";

    for (name, operator, value) in [
        ("arn-equals", "ArnEquals", basic.clone()),
        (
            "arn-like",
            "ArnLike",
            "arn:aws:iam::aws:policy/service-role/*".to_string(),
        ),
        ("string-like", "StringLike", "*BasicExecution*".to_string()),
    ] {
        let identity = standin.identity(
            name,
            &policy(&[json!({"Effect": "Allow", "Action": ["iam:AttachRolePolicy", "iam:DetachRolePolicy"],
                             "Resource": role, "Condition": {operator: {"iam:PolicyARN": value}}})]),
        );
        let me = clients_for(&standin, REGION, Some(&identity)).await;
        me.iam
            .attach_role_policy()
            .role_name("attach-role")
            .policy_arn(&basic)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: the basic execution policy attaches: {e:?}"));
        me.iam
            .detach_role_policy()
            .role_name("attach-role")
            .policy_arn(&basic)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: and detaches: {e:?}"));
        assert_denied(
            me.iam
                .attach_role_policy()
                .role_name("attach-role")
                .policy_arn(admin_policy)
                .send()
                .await,
            "AccessDenied",
            &not_allowed(&identity.arn, "iam:AttachRolePolicy", &role),
        );
    }
    let attached = admin
        .iam
        .list_attached_role_policies()
        .role_name("attach-role")
        .send()
        .await
        .unwrap();
    assert!(attached.attached_policies().is_empty());
}

#[tokio::test]
async fn conditions_the_stand_in_cannot_evaluate_never_allow() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    let role = create_role(&admin, "cond-role", LAMBDA_TRUST).await;
    let get_role_with = |condition: serde_json::Value| {
        policy(&[
            json!({"Effect": "Allow", "Action": "iam:GetRole", "Resource": role, "Condition": condition}),
        ])
    };
    let cases = [
        // An unknown key (no source IP is modelled), a known operator.
        (
            "unknown-key",
            json!({"StringEquals": {"aws:SourceIp": "10.0.0.1"}}),
            false,
        ),
        // An unknown operator on a known key.
        (
            "unknown-operator",
            json!({"NumericLessThan": {"aws:username": "5"}}),
            false,
        ),
        // Set operators are evaluated on multivalued keys only (dynamodb:Attributes,
        // tests/dynamodb_e2e.rs), not on a single-valued one.
        (
            "set-operator",
            json!({"ForAnyValue:StringEquals": {"aws:username": "set-operator"}}),
            false,
        ),
        // Tags are not evaluated either.
        (
            "resource-tag",
            json!({"StringEquals": {"aws:ResourceTag/project": "iot-custom-auth"}}),
            false,
        ),
        (
            "bool-unknown",
            json!({"Bool": {"aws:SecureTransport": "true"}}),
            false,
        ),
        // Keys the stand-in supplies, each operator family.
        (
            "string-equals",
            json!({"StringEquals": {"aws:username": "string-equals"}}),
            true,
        ),
        (
            "string-equals-other",
            json!({"StringEquals": {"aws:username": "someone-else"}}),
            false,
        ),
        (
            "string-not-equals",
            json!({"StringNotEquals": {"aws:username": "someone-else"}}),
            true,
        ),
        (
            "arn-like-principal",
            json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:user/arn-like-*"}}),
            true,
        ),
        (
            "region",
            json!({"StringEquals": {"aws:RequestedRegion": REGION}}),
            true,
        ),
        // A key absent from this request: IfExists holds, a negated operator holds, a plain one fails.
        (
            "if-exists",
            json!({"StringEqualsIfExists": {"iam:PassedToService": "lambda.amazonaws.com"}}),
            true,
        ),
        (
            "absent-negated",
            json!({"StringNotEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
            true,
        ),
        (
            "absent-plain",
            json!({"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}),
            false,
        ),
        (
            "null-absent",
            json!({"Null": {"iam:PolicyARN": "true"}}),
            true,
        ),
    ];
    for (name, condition, allowed) in cases {
        let identity = standin.identity(name, &get_role_with(condition));
        let me = clients_for(&standin, REGION, Some(&identity)).await;
        let result = me.iam.get_role().role_name("cond-role").send().await;
        if allowed {
            result.unwrap_or_else(|e| panic!("{name}: expected allowed, got {e:?}"));
        } else {
            assert_denied(
                result,
                "AccessDenied",
                &not_allowed(&identity.arn, "iam:GetRole", &role),
            );
        }
    }

    // On a Deny, a condition that cannot be evaluated keeps the Deny.
    let identity = standin.identity(
        "deny-unknown",
        &policy(&[
            allow("iam:GetRole", &role),
            json!({"Effect": "Deny", "Action": "iam:GetRole", "Resource": "*",
                   "Condition": {"IpAddress": {"aws:SourceIp": "192.0.2.0/24"}}}),
        ]),
    );
    let me = clients_for(&standin, REGION, Some(&identity)).await;
    let denied = me
        .iam
        .get_role()
        .role_name("cond-role")
        .send()
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Some("AccessDenied"));
    assert!(
        denied
            .message()
            .unwrap_or_default()
            .ends_with("with an explicit deny in an identity-based policy"),
        "{denied:?}"
    );
}

#[tokio::test]
async fn creating_with_tags_needs_the_tagging_permission() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    let exec_role = create_role(&admin, "tag-exec-role", LAMBDA_TRUST).await;
    let new_role = role_arn_in(REGION, "tagged-role");
    let new_function = function_arn_in(REGION, "tagged-fn");
    let new_authorizer = authorizer_arn_in(REGION, "tagged-auth");
    let identity = standin.identity(
        "untagger",
        &policy(&[
            allow("iam:CreateRole", &new_role),
            allow("lambda:CreateFunction", &new_function),
            allow("iam:PassRole", &exec_role),
            allow("iot:CreateAuthorizer", &new_authorizer),
        ]),
    );
    let me = clients_for(&standin, REGION, Some(&identity)).await;

    assert_denied(
        me.iam
            .create_role()
            .role_name("tagged-role")
            .assume_role_policy_document(LAMBDA_TRUST)
            .tags(
                aws_sdk_iam::types::Tag::builder()
                    .key("project")
                    .value("x")
                    .build()
                    .unwrap(),
            )
            .send()
            .await,
        "AccessDenied",
        &not_allowed(&identity.arn, "iam:TagRole", &new_role),
    );
    assert_denied(
        create_function_request(&me, "tagged-fn", &exec_role, Runtime::Nodejs22x)
            .tags("project", "x")
            .send()
            .await,
        "AccessDeniedException",
        &not_allowed(&identity.arn, "lambda:TagResource", &new_function),
    );
    assert_denied(
        me.iot
            .create_authorizer()
            .authorizer_name("tagged-auth")
            .authorizer_function_arn(&new_function)
            .signing_disabled(true)
            .tags(Tag::builder().key("project").value("x").build().unwrap())
            .send()
            .await,
        "AccessDeniedException",
        &not_allowed(&identity.arn, "iot:TagResource", &new_authorizer),
    );

    // The same creations without tags need no tagging permission.
    me.iam
        .create_role()
        .role_name("tagged-role")
        .assume_role_policy_document(LAMBDA_TRUST)
        .send()
        .await
        .expect("CreateRole without tags");
    create_function_request(&me, "tagged-fn", &exec_role, Runtime::Nodejs22x)
        .send()
        .await
        .expect("CreateFunction without tags");
    me.iot
        .create_authorizer()
        .authorizer_name("tagged-auth")
        .authorizer_function_arn(&new_function)
        .signing_disabled(true)
        .send()
        .await
        .expect("CreateAuthorizer without tags");
}

#[tokio::test]
async fn get_function_returns_tags_only_to_callers_allowed_list_tags() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    let role = create_role(&admin, "tags-role", LAMBDA_TRUST).await;
    create_function_request(&admin, "tags-fn", &role, Runtime::Nodejs22x)
        .tags("project", "iot-custom-auth")
        .send()
        .await
        .unwrap();
    let function = function_arn_in(REGION, "tags-fn");
    let get_function = |identity: Option<Identity>| {
        let standin = &standin;
        async move {
            let c = clients_for(standin, REGION, identity.as_ref()).await;
            c.lambda
                .get_function()
                .function_name("tags-fn")
                .send()
                .await
                .expect("GetFunction is allowed")
        }
    };

    let reader = standin.identity("reader", &policy(&[allow("lambda:GetFunction", &function)]));
    let hidden = get_function(Some(reader.clone())).await;
    assert!(hidden.tags().is_none(), "{hidden:?}");
    let error = hidden.tags_error().expect("TagsError says why");
    assert_eq!(error.error_code(), "AccessDeniedException");
    assert_eq!(
        error.message(),
        not_allowed(&reader.arn, "lambda:ListTags", &function)
    );
    assert!(hidden.configuration().is_some());

    let tag_reader = standin.identity(
        "tag-reader",
        &policy(&[
            allow("lambda:GetFunction", &function),
            allow("lambda:ListTags", &function),
        ]),
    );
    let shown = get_function(Some(tag_reader)).await;
    assert_eq!(
        shown
            .tags()
            .and_then(|t| t.get("project"))
            .map(String::as_str),
        Some("iot-custom-auth")
    );
    assert!(shown.tags_error().is_none());

    // An explicit deny of ListTags hides them too.
    let denied = standin.identity(
        "tag-denied",
        &policy(&[
            allow("lambda:*", "*"),
            json!({"Effect": "Deny", "Action": "lambda:ListTags", "Resource": "*"}),
        ]),
    );
    assert!(get_function(Some(denied)).await.tags().is_none());

    // The administrator sees them unless the switch says otherwise.
    assert!(get_function(None).await.tags().is_some());
}

#[tokio::test]
async fn get_function_hides_tags_switch_applies_to_every_caller() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let admin = clients(&standin).await;
    let role = create_role(&admin, "switch-role", LAMBDA_TRUST).await;
    create_function_request(&admin, "switch-fn", &role, Runtime::Nodejs22x)
        .tags("project", "iot-custom-auth")
        .send()
        .await
        .unwrap();
    let function = function_arn_in(REGION, "switch-fn");
    standin.set_behaviour(json!({"get_function_hides_tags": true}));

    let got = admin
        .lambda
        .get_function()
        .function_name("switch-fn")
        .send()
        .await
        .unwrap();
    assert!(got.tags().is_none());
    assert_eq!(
        got.tags_error().map(|e| e.error_code()),
        Some("AccessDeniedException")
    );
    let admin_arn = format!("arn:aws:sts::{ACCOUNT_ID}:user/moto");
    assert_denied(
        admin.lambda.list_tags().resource(&function).send().await,
        "AccessDeniedException",
        &not_allowed(&admin_arn, "lambda:ListTags", &function),
    );

    // Even an identity allowed lambda:ListTags.
    let tag_reader = standin.identity("tag-reader", &policy(&[allow("lambda:*", "*")]));
    let me = clients_for(&standin, REGION, Some(&tag_reader)).await;
    let got = me
        .lambda
        .get_function()
        .function_name("switch-fn")
        .send()
        .await
        .unwrap();
    assert!(got.tags().is_none());
    assert!(
        me.lambda
            .list_tags()
            .resource(&function)
            .send()
            .await
            .is_err()
    );

    standin.set_behaviour(json!({"get_function_hides_tags": false}));
    admin
        .lambda
        .list_tags()
        .resource(&function)
        .send()
        .await
        .expect("ListTags works again");
}

#[tokio::test]
async fn china_and_govcloud_regions_use_their_partitions_arns() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    for region in ["cn-north-1", "us-gov-west-1"] {
        let p = partition(region);
        let admin = clients_for(&standin, region, None).await;
        let caller = admin.sts.get_caller_identity().send().await.unwrap();
        assert!(
            caller
                .arn()
                .unwrap_or_default()
                .starts_with(&format!("arn:{p}:")),
            "{region}: {caller:?}"
        );

        let role = create_role(&admin, "part-role", LAMBDA_TRUST).await;
        assert_eq!(role, role_arn_in(region, "part-role"));
        admin
            .iam
            .attach_role_policy()
            .role_name("part-role")
            .policy_arn(format!("arn:{p}:{BASIC_EXECUTION}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{region}: the partition's managed policy attaches: {e:?}"));
        let function = create_function_request(&admin, "part-fn", &role, Runtime::Nodejs22x)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{region}: CreateFunction: {e:?}"));
        assert_eq!(
            function.function_arn(),
            Some(function_arn_in(region, "part-fn").as_str())
        );
        let authorizer =
            create_authorizer(&admin, "part-auth", &function_arn_in(region, "part-fn")).await;
        assert_eq!(authorizer, authorizer_arn_in(region, "part-auth"));

        // IoT may invoke the function when the grant names the partitioned authorizer ARN.
        admin
            .lambda
            .add_permission()
            .function_name("part-fn")
            .statement_id("iot-invoke")
            .action("lambda:InvokeFunction")
            .principal("iot.amazonaws.com")
            .source_arn(&authorizer)
            .send()
            .await
            .unwrap();
        let invoked = admin
            .iot
            .test_invoke_authorizer()
            .authorizer_name("part-auth")
            .mqtt_context(mqtt("device", "test"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{region}: TestInvokeAuthorizer: {e:?}"));
        assert_eq!(invoked.is_authenticated(), Some(true));

        let endpoint = admin
            .iot
            .describe_endpoint()
            .endpoint_type("iot:Data-ATS")
            .send()
            .await
            .unwrap();
        let suffix = if p == "aws-cn" {
            ".amazonaws.com.cn"
        } else {
            ".amazonaws.com"
        };
        let address = endpoint.endpoint_address().unwrap_or_default();
        assert!(
            address.ends_with(&format!("iot.{region}{suffix}")),
            "{address}"
        );

        // An identity's ARN and the resources it is evaluated on carry the partition: a policy
        // written for `arn:aws:` grants nothing here.
        let name = format!("reader-{p}");
        let scoped = standin.identity_in(
            region,
            &name,
            &policy(&[
                allow("iot:DescribeAuthorizer", &authorizer_arn_in(region, "*")),
                allow("lambda:GetFunction", &function_arn_in("us-east-1", "*")),
            ]),
        );
        assert_eq!(scoped.arn, format!("arn:{p}:iam::{ACCOUNT_ID}:user/{name}"));
        let me = clients_for(&standin, region, Some(&scoped)).await;
        let who = me.sts.get_caller_identity().send().await.unwrap();
        assert_eq!(who.arn(), Some(scoped.arn.as_str()));
        me.iot
            .describe_authorizer()
            .authorizer_name("part-auth")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{region}: partitioned grant: {e:?}"));
        assert_denied(
            me.lambda
                .get_function()
                .function_name("part-fn")
                .send()
                .await,
            "AccessDeniedException",
            &not_allowed(
                &scoped.arn,
                "lambda:GetFunction",
                &function_arn_in(region, "part-fn"),
            ),
        );
    }
}

// --- Lambda's lifecycle (aws-facts §6, §13) ---------------------------------------------

async fn authorizer_with_grant(c: &Clients, function: &str, authorizer: &str) {
    let arn = create_authorizer(c, authorizer, &function_arn_in(REGION, function)).await;
    c.lambda
        .add_permission()
        .function_name(function)
        .statement_id("iot-invoke")
        .action("lambda:InvokeFunction")
        .principal("iot.amazonaws.com")
        .source_arn(arn)
        .send()
        .await
        .expect("AddPermission");
}

async fn state_of(c: &Clients, function: &str) -> (State, Option<StateReasonCode>, String) {
    let got = c
        .lambda
        .get_function()
        .function_name(function)
        .send()
        .await
        .unwrap();
    let config = got.configuration().expect("configuration");
    (
        config.state().cloned().expect("State"),
        config.state_reason_code().cloned(),
        config.state_reason().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn failed_create_stays_failed_until_deleted_and_recreated() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    let role = create_role(&c, "failing-role", LAMBDA_TRUST).await;
    standin.set_behaviour(json!({
        "function_pending_seconds": 0.3,
        "fail_next_function_create": {"reason": "Lambda was unable to extract the zip.", "reason_code": "InvalidZipFileException"}
    }));

    let created = create_function_request(&c, "failing-fn", &role, Runtime::Nodejs22x)
        .send()
        .await
        .unwrap();
    assert_eq!(created.state(), Some(&State::Pending));
    let waited = c
        .lambda
        .wait_until_function_active_v2()
        .function_name("failing-fn")
        .wait(Duration::from_secs(10))
        .await;
    assert!(waited.is_err(), "the Active waiter stops on Failed");
    assert_eq!(
        state_of(&c, "failing-fn").await,
        (
            State::Failed,
            Some(StateReasonCode::InvalidZipFileException),
            "Lambda was unable to extract the zip.".to_string()
        )
    );

    // It stays Failed: updates are refused and IoT cannot invoke it.
    let update = c
        .lambda
        .update_function_code()
        .function_name("failing-fn")
        .zip_file(Blob::new(authorizer_zip()))
        .send()
        .await
        .unwrap_err();
    assert!(
        update
            .as_service_error()
            .is_some_and(|e| e.is_resource_conflict_exception())
    );
    assert_eq!(
        update.message(),
        Some(
            "The operation cannot be performed at this time. The function is currently in the \
             following state: Failed"
        )
    );
    authorizer_with_grant(&c, "failing-fn", "failing").await;
    let invoke = c
        .iot
        .test_invoke_authorizer()
        .authorizer_name("failing")
        .mqtt_context(mqtt("device", "test"))
        .send()
        .await
        .unwrap_err();
    assert!(
        invoke
            .as_service_error()
            .is_some_and(|e| e.is_invalid_request_exception()),
        "{invoke:?}"
    );
    assert!(invoke.message().unwrap_or_default().contains("Failed"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(state_of(&c, "failing-fn").await.0, State::Failed);

    // Only delete + create recovers; the injection was for one creation.
    c.lambda
        .delete_function()
        .function_name("failing-fn")
        .send()
        .await
        .unwrap();
    create_function_request(&c, "failing-fn", &role, Runtime::Nodejs22x)
        .send()
        .await
        .unwrap();
    c.lambda
        .wait_until_function_active_v2()
        .function_name("failing-fn")
        .wait(Duration::from_secs(10))
        .await
        .expect("the recreated function becomes Active");
}

#[tokio::test]
async fn inactive_function_fails_the_first_invocation_then_reactivates() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    create_authorizer_function(&c, "idle-fn").await;
    authorizer_with_grant(&c, "idle-fn", "idle").await;
    standin.deactivate_function("idle-fn", None);
    standin.set_behaviour(json!({"function_pending_seconds": 3.0}));

    let (state, code, _) = state_of(&c, "idle-fn").await;
    assert_eq!(
        (state, code),
        (State::Inactive, Some(StateReasonCode::Idle))
    );

    // An update is accepted and leaves it Inactive.
    c.lambda
        .update_function_configuration()
        .function_name("idle-fn")
        .description("touched")
        .send()
        .await
        .expect("an Inactive function can be updated");
    assert_eq!(state_of(&c, "idle-fn").await.0, State::Inactive);

    let invoke = || {
        c.iot
            .test_invoke_authorizer()
            .authorizer_name("idle")
            .mqtt_context(mqtt("device", "test"))
            .send()
    };
    let first = invoke().await.unwrap_err();
    assert!(
        first
            .as_service_error()
            .is_some_and(|e| e.is_invalid_request_exception()),
        "{first:?}"
    );
    assert!(first.message().unwrap_or_default().contains("Inactive"));

    // The failed invocation started reactivation: Pending (Restoring), then Active.
    let (state, code, _) = state_of(&c, "idle-fn").await;
    assert_eq!(
        (state, code),
        (State::Pending, Some(StateReasonCode::Restoring))
    );
    let while_pending = invoke().await.unwrap_err();
    assert_eq!(while_pending.code(), Some("ResourceConflictException"));
    assert_eq!(
        while_pending.raw_response().map(|r| r.status().as_u16()),
        Some(409)
    );
    c.lambda
        .wait_until_function_active_v2()
        .function_name("idle-fn")
        .wait(Duration::from_secs(10))
        .await
        .expect("it becomes Active again");
    assert_eq!(invoke().await.unwrap().is_authenticated(), Some(true));
}

#[tokio::test]
async fn pending_function_refuses_operations_on_it_until_active() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    let role = create_role(&c, "pending-role", LAMBDA_TRUST).await;
    let authorizer = create_authorizer(&c, "pending", &function_arn_in(REGION, "pending-fn")).await;
    // Long enough for the calls below on a loaded machine; the waiter ends it.
    standin.set_behaviour(json!({"function_pending_seconds": 5.0}));
    create_function_request(&c, "pending-fn", &role, Runtime::Nodejs22x)
        .send()
        .await
        .unwrap();
    let pending_message = "The operation cannot be performed at this time. The function is \
                           currently in the following state: Pending";

    let grant = || {
        c.lambda
            .add_permission()
            .function_name("pending-fn")
            .statement_id("iot-invoke")
            .action("lambda:InvokeFunction")
            .principal("iot.amazonaws.com")
            .source_arn(&authorizer)
            .send()
    };
    let refused = grant().await.unwrap_err();
    assert!(
        refused
            .as_service_error()
            .is_some_and(|e| e.is_resource_conflict_exception())
    );
    assert_eq!(refused.message(), Some(pending_message));
    let configuration = c
        .lambda
        .update_function_configuration()
        .function_name("pending-fn")
        .description("too early")
        .send()
        .await
        .unwrap_err();
    assert_eq!(configuration.message(), Some(pending_message));

    c.lambda
        .wait_until_function_active_v2()
        .function_name("pending-fn")
        .wait(Duration::from_secs(10))
        .await
        .unwrap();
    grant().await.expect("AddPermission once Active");
    let invoked = c
        .iot
        .test_invoke_authorizer()
        .authorizer_name("pending")
        .mqtt_context(mqtt("device", "test"))
        .send()
        .await
        .expect("TestInvokeAuthorizer once Active");
    assert_eq!(invoked.is_authenticated(), Some(true));
}

#[tokio::test]
async fn delete_role_conflicts_for_a_while_after_a_detach() {
    let standin = StandIn::start_with(&["--no-aws-delays"]);
    let c = clients(&standin).await;
    standin.set_behaviour(json!({"delete_role_conflict_seconds": 3.0}));
    create_role(&c, "detached-role", LAMBDA_TRUST).await;
    let basic = format!("arn:aws:{BASIC_EXECUTION}");
    c.iam
        .attach_role_policy()
        .role_name("detached-role")
        .policy_arn(&basic)
        .send()
        .await
        .unwrap();
    c.iam
        .detach_role_policy()
        .role_name("detached-role")
        .policy_arn(&basic)
        .send()
        .await
        .unwrap();

    let conflict = c
        .iam
        .delete_role()
        .role_name("detached-role")
        .send()
        .await
        .unwrap_err();
    assert!(
        conflict
            .as_service_error()
            .is_some_and(|e| e.is_delete_conflict_exception()),
        "{conflict:?}"
    );
    assert_eq!(
        conflict.message(),
        Some("Cannot delete entity, must detach all policies first.")
    );
    assert_eq!(
        conflict.raw_response().map(|r| r.status().as_u16()),
        Some(409)
    );

    // A role without a recent detach is deleted at once; the detached one after the window.
    create_role(&c, "untouched-role", LAMBDA_TRUST).await;
    c.iam
        .delete_role()
        .role_name("untouched-role")
        .send()
        .await
        .expect("no detach, no conflict");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    c.iam
        .delete_role()
        .role_name("detached-role")
        .send()
        .await
        .expect("the conflict window has passed");
}

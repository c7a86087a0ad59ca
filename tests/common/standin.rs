//! Test harness for the local AWS stand-in (`standin/server.py`).
//!
//! Each `StandIn` is one server process with its own state, so tests can run in
//! parallel. The server exits when its stdin closes, which happens when this
//! process dies for any reason; `Drop` also kills it explicitly.

// Each test binary uses only part of this helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const PYTHON_VAR: &str = "IOT_CUSTOM_AUTH_TEST_PYTHON";
const START_TIMEOUT: Duration = Duration::from_secs(30);
pub const REGION: &str = "us-east-1";
pub const ACCOUNT_ID: &str = "123456789012";
/// The devices table of a deployment with the default name.
pub const DEVICES_TABLE: &str = "iot-custom-auth-devices";

pub fn devices_table_arn() -> String {
    format!("arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{DEVICES_TABLE}")
}

/// One API call as the stand-in recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// "iam", "lambda", "iot" or "sts".
    pub service: String,
    /// AWS operation name, e.g. "CreateAuthorizer".
    pub operation: String,
    /// False for Get*/List*/Describe*/TestInvoke*/GetCallerIdentity.
    pub mutating: bool,
    /// HTTP status answered (including injected failures).
    pub status: u16,
    /// When the stand-in received the call and when it answered it, on its monotonic clock
    /// (comparable between calls of one stand-in only).
    pub start: Duration,
    pub end: Duration,
}

impl Call {
    /// True when the two calls were in flight at the same time.
    pub fn overlaps(&self, other: &Call) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// A least-privilege IAM identity made by the stand-in: calls signed with its key are evaluated
/// against its policy as IAM does (see standin/README.md, "Identities").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `arn:<partition>:iam::<account>:user/<name>`; the partition of the region it was made for.
    pub arn: String,
}

impl Identity {
    /// The variables that make the CLI binary (or any SDK) sign as this identity; put them after
    /// `StandIn::env()`'s, or use `StandIn::env_as`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".to_string(), self.access_key_id.clone()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                self.secret_access_key.clone(),
            ),
        ]
    }
}

pub struct StandIn {
    child: Child,
    url: String,
    addr: String,
}

impl StandIn {
    /// Start a stand-in with real-AWS delays (see `standin/README.md`).
    pub fn start() -> StandIn {
        Self::start_with(&[])
    }

    /// Start a stand-in with extra `server.py` flags, e.g. `&["--no-aws-delays"]`.
    pub fn start_with(args: &[&str]) -> StandIn {
        let python = std::env::var(PYTHON_VAR).unwrap_or_else(|_| {
            panic!(
                "{PYTHON_VAR} is not set: run the tests through `scripts/test`, which installs \
                 the stand-in's Python environment and sets it"
            )
        });
        let manifest_dir = env!("CARGO_MANIFEST_DIR");
        let mut child = Command::new(&python)
            .arg(Path::new(manifest_dir).join("standin/server.py"))
            .args(["--port", "0"])
            .args(args)
            .current_dir(manifest_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the stand-in with {python}: {e}"));
        let url = read_url(&mut child);
        let addr = url.trim_start_matches("http://").to_string();
        StandIn { child, url, addr }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every AWS call served so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        let body = self.control("GET", "/_standin/calls", "");
        let list: serde_json::Value = serde_json::from_str(&body).expect("calls is JSON");
        list.as_array()
            .expect("calls is a list")
            .iter()
            .map(|c| Call {
                service: c["service"].as_str().unwrap_or_default().to_string(),
                operation: c["operation"].as_str().unwrap_or_default().to_string(),
                mutating: c["mutating"].as_bool().unwrap_or_default(),
                status: c["status"].as_u64().unwrap_or_default() as u16,
                start: millis(&c["start_ms"]),
                end: millis(&c["end_ms"]),
            })
            .collect()
    }

    pub fn clear_calls(&self) {
        self.control("DELETE", "/_standin/calls", "");
    }

    /// Merge into the current behaviour, e.g.
    /// `json!({"throttle": {"iot:CreateAuthorizer": 2}, "role_propagation_seconds": 0.5})`, or
    /// `json!({"latency_ms": 200})` to make every call take at least that long.
    pub fn set_behaviour(&self, behaviour: serde_json::Value) {
        self.control("POST", "/_standin/behaviour", &behaviour.to_string());
    }

    /// Wipe all AWS state, the call record and the behaviour back to start-up values.
    pub fn reset(&self) {
        self.control("POST", "/_standin/reset", "");
    }

    /// Environment for running the CLI binary against this stand-in. Profile files
    /// point nowhere, so a developer's own AWS configuration cannot leak in.
    pub fn env(&self) -> Vec<(String, String)> {
        let nowhere = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/standin-no-aws-config");
        let nowhere = nowhere.to_string_lossy().into_owned();
        [
            ("AWS_ENDPOINT_URL", self.url.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_PROFILE", "default"),
            ("AWS_CONFIG_FILE", nowhere.as_str()),
            ("AWS_SHARED_CREDENTIALS_FILE", nowhere.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `env()` with the region replaced, e.g. `cn-north-1` for the `aws-cn` partition.
    pub fn env_in(&self, region: &str) -> Vec<(String, String)> {
        replace_vars(
            self.env(),
            &[("AWS_REGION".to_string(), region.to_string())],
        )
    }

    /// `env()` signing as `identity` instead of the unrestricted test key.
    pub fn env_as(&self, identity: &Identity) -> Vec<(String, String)> {
        replace_vars(self.env(), &identity.env())
    }

    /// Create an IAM user holding exactly `policy` (an IAM policy document) and an access key.
    /// The identity works in every region; `arn` is in the `aws` partition (see `identity_in`).
    pub fn identity(&self, name: &str, policy: &serde_json::Value) -> Identity {
        self.identity_in(REGION, name, policy)
    }

    /// `identity`, with `arn` in the partition of `region` (`aws-cn` for `cn-north-1`, ...).
    pub fn identity_in(&self, region: &str, name: &str, policy: &serde_json::Value) -> Identity {
        let spec = serde_json::json!({"name": name, "policy": policy, "region": region});
        let body = self.control("POST", "/_standin/identities", &spec.to_string());
        let made: serde_json::Value = serde_json::from_str(&body).expect("identity is JSON");
        let field = |key: &str| made[key].as_str().expect(key).to_string();
        Identity {
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            arn: field("arn"),
        }
    }

    /// Make the Active function `name` Inactive (StateReasonCode `Idle`), as weeks without an
    /// invocation would. `region` is needed only when functions of that name exist in several.
    pub fn deactivate_function(&self, name: &str, region: Option<&str>) {
        let query = region.map(|r| format!("?region={r}")).unwrap_or_default();
        self.control(
            "POST",
            &format!("/_standin/functions/{name}/deactivate{query}"),
            "",
        );
    }

    /// SDK configuration for `region` (any partition), signing as `identity` or, with `None`, as
    /// the unrestricted test key.
    pub async fn sdk_config_for(
        &self,
        region: &str,
        identity: Option<&Identity>,
    ) -> aws_config::SdkConfig {
        let (key, secret) = identity.map_or(("test", "test"), |i| {
            (i.access_key_id.as_str(), i.secret_access_key.as_str())
        });
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.url)
            .region(aws_config::Region::new(region.to_string()))
            .credentials_provider(aws_sdk_sts::config::Credentials::new(
                key, secret, None, None, "standin",
            ))
            .load()
            .await
    }

    /// SDK configuration for driving the AWS SDK clients against this stand-in,
    /// with the SDK's default (standard, 3 attempts) retry.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        self.sdk_config_for(REGION, None).await
    }

    /// One control-API request over plain HTTP/1.0; panics on a non-200 answer.
    fn control(&self, method: &str, path: &str, body: &str) -> String {
        let mut stream = TcpStream::connect(&self.addr).expect("connect to the stand-in");
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .expect("send to the stand-in");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read from the stand-in");
        let (head, payload) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("?");
        assert_eq!(status, "200", "{method} {path} failed: {response}");
        payload.to_string()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vars` with each of `overrides` replacing the variable of the same name.
fn replace_vars(
    vars: Vec<(String, String)>,
    overrides: &[(String, String)],
) -> Vec<(String, String)> {
    vars.into_iter()
        .map(|(k, v)| {
            let replaced = overrides.iter().find(|(name, _)| *name == k);
            (k, replaced.map_or(v, |(_, value)| value.clone()))
        })
        .collect()
}

fn millis(value: &serde_json::Value) -> Duration {
    Duration::from_secs_f64(value.as_f64().unwrap_or_default() / 1000.0)
}

/// Wait for the `STANDIN_URL=` line, then keep draining stdout on a thread so
/// the server can never block on a full pipe.
fn read_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok);
        let _ = sender.send(first);
        lines.for_each(drop);
    });
    match receiver.recv_timeout(START_TIMEOUT) {
        Ok(Some(line)) if line.starts_with("STANDIN_URL=") => {
            line["STANDIN_URL=".len()..].trim().to_string()
        }
        Ok(other) => {
            let _ = child.kill();
            panic!("the stand-in did not announce its URL; it printed {other:?}")
        }
        Err(_) => {
            let _ = child.kill();
            panic!("the stand-in did not start within {START_TIMEOUT:?}")
        }
    }
}

/// A login through TestInvokeAuthorizer, as IoT invokes `authorizer` when a device connects
/// (the username as client ID, SNI `example.com`): authenticated?
pub async fn logs_in(
    iot: &aws_sdk_iot::Client,
    authorizer: &str,
    user: &str,
    password: &str,
) -> bool {
    use aws_sdk_iot::primitives::Blob;
    use aws_sdk_iot::types::{MqttContext, TlsContext};
    let out = iot
        .test_invoke_authorizer()
        .authorizer_name(authorizer)
        .mqtt_context(
            MqttContext::builder()
                .username(user)
                .password(Blob::new(password.as_bytes()))
                .client_id(user)
                .build(),
        )
        .tls_context(TlsContext::builder().server_name("example.com").build())
        .send()
        .await
        .expect("TestInvokeAuthorizer");
    out.is_authenticated() == Some(true)
}

/// Creates the table `name` as `setup` creates the devices table (partition key `username`,
/// on demand), without waiting for it to become ACTIVE.
pub async fn create_devices_table(client: &aws_sdk_dynamodb::Client, name: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("username")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("username")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {name}: {e:?}"));
}

//! The IoT policy documents the bundled authorizer returns for a device, built here by the same
//! algorithm as `assets/authorizer/index.mjs` (a cross-language test compares them byte for byte).
//! The CLI uses it to refuse, at `device add`, a device whose policy would break IoT's limits, and
//! `status --probe-user` to check the live authorizer returns what the config says.

use anyhow::{Result, bail};
use serde::Serialize;

use crate::config::Device;

/// IoT's limits on an authorizer response.
pub const MAX_DOCUMENTS: usize = 10;
pub const MAX_DOCUMENT_CHARS: usize = 2048;
pub const VERSION: &str = "2012-10-17";

/// Longer than any real `arn:<partition>:iot:<region>:<account>` prefix, so that a device which
/// fits with it fits in every account and region.
const WORST_CASE_ARN_PREFIX: &str = "arn:aws-iso-b:iot:ap-southeast-10:123456789012";

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Statement {
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Action")]
    pub action: &'static str,
    #[serde(rename = "Resource")]
    pub resource: Vec<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Document {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

impl Document {
    fn new() -> Self {
        Self {
            version: VERSION,
            statement: Vec::new(),
        }
    }

    /// Compact JSON, as `JSON.stringify` writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("policy documents serialize")
    }

    /// Length as IoT and JavaScript count it (UTF-16 code units).
    fn chars(&self) -> usize {
        self.to_json().encode_utf16().count()
    }
}

/// Receive is authorized on topic names, where `+` and `#` are literal: a subscription to
/// `cmd/+/x` must be able to receive `cmd/a/x`, so wildcard levels become the policy's `*`.
pub fn receive_resource(filter: &str) -> String {
    filter
        .split('/')
        .map(|level| {
            if level == "+" || level == "#" {
                "*"
            } else {
                level
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The statements for `device` connecting as `client_id`, before packing into documents.
fn statements(
    arn_prefix: &str,
    client_id: &str,
    device: &Device,
) -> Vec<(&'static str, Vec<String>)> {
    let subscribe = &device.subscribe;
    vec![
        (
            "iot:Connect",
            vec![format!("{arn_prefix}:client/{client_id}")],
        ),
        (
            "iot:Publish",
            device
                .publish()
                .iter()
                .map(|t| format!("{arn_prefix}:topic/{t}"))
                .collect(),
        ),
        (
            "iot:Subscribe",
            subscribe
                .iter()
                .map(|f| format!("{arn_prefix}:topicfilter/{f}"))
                .collect(),
        ),
        (
            "iot:Receive",
            subscribe
                .iter()
                .map(|f| format!("{arn_prefix}:topic/{}", receive_resource(f)))
                .collect(),
        ),
    ]
}

/// The policy documents for `device` connecting as `client_id`, packed greedily into as few
/// documents of at most 2048 characters as the statement order allows.
pub fn documents(arn_prefix: &str, client_id: &str, device: &Device) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    let mut current = Document::new();
    for (action, resources) in statements(arn_prefix, client_id, device) {
        let mut open = false;
        for resource in resources {
            push(&mut current, action, &resource, open);
            if current.chars() > MAX_DOCUMENT_CHARS {
                pop(&mut current, open);
                if current.statement.is_empty() {
                    bail!(
                        "the resource `{resource}` alone exceeds IoT's {MAX_DOCUMENT_CHARS}-character policy limit"
                    );
                }
                docs.push(std::mem::replace(&mut current, Document::new()));
                push(&mut current, action, &resource, false);
                if current.chars() > MAX_DOCUMENT_CHARS {
                    bail!(
                        "the resource `{resource}` alone exceeds IoT's {MAX_DOCUMENT_CHARS}-character policy limit"
                    );
                }
            }
            open = true;
        }
    }
    if !current.statement.is_empty() {
        docs.push(current);
    }
    if docs.len() > MAX_DOCUMENTS {
        bail!(
            "its policy needs {} documents; IoT accepts at most {MAX_DOCUMENTS} of {MAX_DOCUMENT_CHARS} characters (use fewer or shorter topics)",
            docs.len()
        );
    }
    Ok(docs)
}

fn push(doc: &mut Document, action: &'static str, resource: &str, into_last: bool) {
    match doc.statement.last_mut() {
        Some(last) if into_last => last.resource.push(resource.to_string()),
        _ => doc.statement.push(Statement {
            effect: "Allow",
            action,
            resource: vec![resource.to_string()],
        }),
    }
}

fn pop(doc: &mut Document, from_last: bool) {
    if from_last {
        if let Some(last) = doc.statement.last_mut() {
            last.resource.pop();
        }
    } else {
        doc.statement.pop();
    }
}

/// Refuses a device whose policy could exceed IoT's limits in any account, region or client ID.
pub fn check_fits(device: &Device) -> Result<()> {
    let longest = device
        .client_ids()
        .into_iter()
        .max_by_key(String::len)
        .unwrap_or_default();
    documents(WORST_CASE_ARN_PREFIX, &longest, device).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(publish: Vec<String>, subscribe: Vec<String>) -> Device {
        Device {
            username: "sensor1".into(),
            password_verifier: String::new(),
            client_ids: vec![],
            publish,
            subscribe,
            previous_verifiers: vec![],
            disabled: false,
        }
    }

    const P: &str = "arn:aws:iot:us-east-1:123456789012";

    #[test]
    fn recipe_device_gets_connect_and_publish_only() {
        let docs = documents(P, "sensor1", &device(vec![], vec![])).unwrap();
        assert_eq!(
            docs[0].to_json(),
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":["arn:aws:iot:us-east-1:123456789012:client/sensor1"]},{"Effect":"Allow","Action":"iot:Publish","Resource":["arn:aws:iot:us-east-1:123456789012:topic/telemetry/sensor1"]}]}"#
        );
        assert_eq!(docs.len(), 1);
    }

    #[test]
    fn subscriptions_add_subscribe_and_receive_with_policy_wildcards() {
        let docs = documents(P, "s", &device(vec![], vec!["cmd/+/x/#".into()])).unwrap();
        let s = &docs[0].statement;
        assert_eq!(s[2].action, "iot:Subscribe");
        assert_eq!(s[2].resource, vec![format!("{P}:topicfilter/cmd/+/x/#")]);
        assert_eq!(s[3].action, "iot:Receive");
        assert_eq!(s[3].resource, vec![format!("{P}:topic/cmd/*/x/*")]);
    }

    #[test]
    fn many_topics_are_packed_into_several_documents_in_order() {
        let topics: Vec<String> = (0..40)
            .map(|i| format!("telemetry/{i:03}/{}", "x".repeat(60)))
            .collect();
        let docs = documents(P, "s", &device(topics.clone(), vec![])).unwrap();
        assert!(docs.len() > 1);
        assert!(docs.iter().all(|d| d.chars() <= MAX_DOCUMENT_CHARS));
        let published: Vec<String> = docs
            .iter()
            .flat_map(|d| d.statement.iter())
            .filter(|s| s.action == "iot:Publish")
            .flat_map(|s| s.resource.clone())
            .collect();
        let expected: Vec<String> = topics.iter().map(|t| format!("{P}:topic/{t}")).collect();
        assert_eq!(published, expected);
    }

    #[test]
    fn too_many_topics_are_refused() {
        let topics: Vec<String> = (0..200)
            .map(|i| format!("t/{i}/{}", "y".repeat(100)))
            .collect();
        let err = check_fits(&device(topics, vec![])).unwrap_err();
        assert!(err.to_string().contains("at most 10"), "{err}");
    }
}

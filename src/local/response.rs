//! The authorizer's response, checked as IoT checks it (aws-facts §2 and §8). Anything that breaks
//! the contract refuses the connection, as IoT does ("If failures occur during custom
//! authentication, AWS IoT Core terminates the connection").

use std::time::Duration;

use serde_json::Value;

use crate::config::{MAX_SESSION_SECONDS, MIN_SESSION_SECONDS};
use crate::policy::{MAX_DOCUMENT_CHARS, MAX_DOCUMENTS};

/// What an authorizer granted a connection.
#[derive(Debug)]
pub struct Grant {
    pub principal_id: String,
    /// Parsed policy documents (documents sent as JSON strings are parsed).
    pub documents: Vec<Value>,
    pub refresh_after: Duration,
    pub disconnect_after: Duration,
}

#[derive(Debug)]
pub enum Verdict {
    /// `isAuthenticated: false`; IoT ignores the rest of the response.
    Denied,
    Granted(Grant),
}

/// Validates a response; `Err` says which rule it broke.
pub fn validate(response: &Value) -> Result<Verdict, String> {
    let Some(object) = response.as_object() else {
        return Err("the response is not a JSON object".into());
    };
    match object.get("isAuthenticated") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Verdict::Denied),
        _ => return Err("`isAuthenticated` must be a boolean".into()),
    }
    Ok(Verdict::Granted(Grant {
        principal_id: principal_id(object.get("principalId"))?,
        documents: policy_documents(object.get("policyDocuments"))?,
        refresh_after: seconds(object, "refreshAfterInSeconds")?,
        disconnect_after: seconds(object, "disconnectAfterInSeconds")?,
    }))
}

fn principal_id(value: Option<&Value>) -> Result<String, String> {
    match value.and_then(Value::as_str) {
        Some(id)
            if (1..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            Ok(id.to_string())
        }
        _ => Err("`principalId` must be 1 to 128 letters and digits ([a-zA-Z0-9]{1,128})".into()),
    }
}

fn policy_documents(value: Option<&Value>) -> Result<Vec<Value>, String> {
    let Some(Value::Array(list)) = value else {
        return Err("`policyDocuments` must be a list".into());
    };
    if list.len() > MAX_DOCUMENTS {
        return Err(format!(
            "`policyDocuments` has {} documents; IoT accepts at most {MAX_DOCUMENTS}",
            list.len()
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, document)| {
            policy_document(document).map_err(|e| format!("policy document {}: {e}", i + 1))
        })
        .collect()
}

/// A document may come as an object (as the docs show) or as a JSON string (as older
/// authorizers return it); either way its text is limited to 2,048 characters.
fn policy_document(document: &Value) -> Result<Value, String> {
    let (text, parsed) = match document {
        Value::String(text) => {
            let parsed = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
            (text.clone(), parsed)
        }
        Value::Object(_) => (document.to_string(), document.clone()),
        _ => return Err("must be a JSON object or a string holding one".into()),
    };
    // IoT counts characters as JavaScript does (UTF-16 code units), like `crate::policy`.
    let chars = text.encode_utf16().count();
    if chars > MAX_DOCUMENT_CHARS {
        return Err(format!(
            "{chars} characters; IoT accepts at most {MAX_DOCUMENT_CHARS}"
        ));
    }
    Ok(parsed)
}

fn seconds(object: &serde_json::Map<String, Value>, key: &str) -> Result<Duration, String> {
    let range = u64::from(MIN_SESSION_SECONDS)..=u64::from(MAX_SESSION_SECONDS);
    match object.get(key).and_then(Value::as_u64) {
        Some(s) if range.contains(&s) => Ok(Duration::from_secs(s)),
        _ => Err(format!(
            "`{key}` must be a whole number from {MIN_SESSION_SECONDS} to {MAX_SESSION_SECONDS}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "isAuthenticated": true,
            "principalId": "sensor1",
            "policyDocuments": [{"Version": "2012-10-17", "Statement": []}],
            "refreshAfterInSeconds": 300,
            "disconnectAfterInSeconds": 86400
        })
    }

    fn with(key: &str, value: Value) -> Value {
        let mut response = good();
        response[key] = value;
        response
    }

    #[test]
    fn a_good_response_grants() {
        let Verdict::Granted(grant) = validate(&good()).unwrap() else {
            panic!("denied");
        };
        assert_eq!(grant.principal_id, "sensor1");
        assert_eq!(grant.documents.len(), 1);
        assert_eq!(grant.refresh_after, Duration::from_secs(300));
        assert_eq!(grant.disconnect_after, Duration::from_secs(86400));
    }

    #[test]
    fn documents_may_be_json_strings() {
        let response = with(
            "policyDocuments",
            json!([r#"{"Version":"2012-10-17","Statement":[]}"#]),
        );
        let Verdict::Granted(grant) = validate(&response).unwrap() else {
            panic!("denied");
        };
        assert_eq!(grant.documents[0]["Version"], "2012-10-17");
    }

    #[test]
    fn not_authenticated_ignores_the_rest() {
        assert!(matches!(
            validate(&json!({"isAuthenticated": false, "principalId": "-"})),
            Ok(Verdict::Denied)
        ));
    }

    #[test]
    fn contract_violations_are_refused() {
        let long = format!(r#"{{"Statement":[],"x":"{}"}}"#, "a".repeat(2048));
        let cases = [
            (json!([]), "not a JSON object"),
            (json!({}), "`isAuthenticated`"),
            (json!({"isAuthenticated": "true"}), "`isAuthenticated`"),
            (with("principalId", json!("sensor-1")), "`principalId`"),
            (with("principalId", json!("")), "`principalId`"),
            (with("principalId", json!("a".repeat(129))), "`principalId`"),
            (with("principalId", Value::Null), "`principalId`"),
            (with("policyDocuments", json!({})), "must be a list"),
            (
                with("policyDocuments", json!(vec![json!({"Statement": []}); 11])),
                "at most 10",
            ),
            (with("policyDocuments", json!([long])), "at most 2048"),
            (
                with("policyDocuments", json!(["{not json"])),
                "not valid JSON",
            ),
            (with("policyDocuments", json!([7])), "JSON object"),
            (
                with("refreshAfterInSeconds", json!(299)),
                "`refreshAfterInSeconds`",
            ),
            (
                with("refreshAfterInSeconds", json!(300.5)),
                "`refreshAfterInSeconds`",
            ),
            (
                with("disconnectAfterInSeconds", json!(86401)),
                "`disconnectAfterInSeconds`",
            ),
            (
                with("disconnectAfterInSeconds", Value::Null),
                "`disconnectAfterInSeconds`",
            ),
        ];
        for (response, expected) in cases {
            let err = validate(&response).unwrap_err();
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }
}

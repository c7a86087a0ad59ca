//! IoT policy evaluation, as the IoT message broker applies the documents an authorizer returns:
//! every statement of every document counts, an explicit Deny beats any Allow, and what no
//! statement allows is denied.
//!
//! Matching follows IAM, which IoT policies use (aws-facts §8): `*` (any run of characters,
//! `/` included) and `?` (one character) are the only wildcards, in Action as in Resource;
//! MQTT's `+` and `#` are plain characters. Actions compare case-insensitively, resources
//! case-sensitively. `${iot:ClientId}` is replaced by the connection's client ID in documents of
//! version 2012-10-17 (older versions have no variables).
//!
//! Everything here is pure, so the rules are table-tested without a broker.

use serde_json::Value;

/// The only policy language version with variables.
const VARIABLES_VERSION: &str = "2012-10-17";

/// The statement elements IAM knows; any other key is a typo we refuse rather than ignore.
const KNOWN_ELEMENTS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

/// The outcome of a check, kept three-way so logs can say why something was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// A Deny statement matched.
    ExplicitDeny,
    /// No statement allowed it.
    ImplicitDeny,
}

/// The compiled policy of one connection: the statements of all its documents, with variables
/// already resolved for its client ID.
#[derive(Debug, Default)]
pub struct Policy {
    statements: Vec<Statement>,
    /// Statements carry Conditions, which this gateway cannot evaluate.
    pub has_conditions: bool,
}

#[derive(Debug)]
struct Statement {
    deny: bool,
    /// Conditions are not evaluated: a conditional Allow never grants and a conditional Deny
    /// always applies, so a local run never allows what IoT might refuse.
    conditional: bool,
    actions: Patterns,
    resources: Patterns,
}

/// `Action`/`Resource` (match any) or `NotAction`/`NotResource` (match none).
#[derive(Debug)]
struct Patterns {
    negated: bool,
    patterns: Vec<Pattern>,
}

impl Patterns {
    fn matches(&self, text: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(text)) != self.negated
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `*`: any run of characters.
    Many,
    /// `?`: exactly one character.
    One,
}

/// A compiled Action or Resource value; `None` for one that can never match (an unknown
/// variable: IAM leaves an element it cannot resolve unmatched).
#[derive(Debug)]
struct Pattern(Option<Vec<Token>>);

impl Pattern {
    fn matches(&self, text: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|tokens| wildcard_match(tokens, &text.chars().collect::<Vec<_>>()))
    }
}

impl Policy {
    /// Compiles authorizer policy documents (already parsed JSON) for a connection.
    pub fn compile(documents: &[Value], client_id: &str) -> Result<Self, String> {
        let mut policy = Policy::default();
        for (i, document) in documents.iter().enumerate() {
            let statements = document_statements(document)
                .map_err(|e| format!("policy document {}: {e}", i + 1))?;
            let variables =
                document.get("Version").and_then(Value::as_str) == Some(VARIABLES_VERSION);
            for (j, s) in statements.iter().enumerate() {
                let s = compile_statement(s, variables.then_some(client_id))
                    .map_err(|e| format!("policy document {}, statement {}: {e}", i + 1, j + 1))?;
                policy.has_conditions |= s.conditional;
                policy.statements.push(s);
            }
        }
        Ok(policy)
    }

    /// May `action` (e.g. `iot:Publish`) be done on the resource ARN `resource`?
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        let action = action.to_ascii_lowercase();
        let mut decision = Decision::ImplicitDeny;
        for s in &self.statements {
            if !(s.actions.matches(&action) && s.resources.matches(resource)) {
                continue;
            }
            if s.deny {
                return Decision::ExplicitDeny;
            }
            if !s.conditional {
                decision = Decision::Allow;
            }
        }
        decision
    }
}

fn document_statements(document: &Value) -> Result<Vec<&Value>, String> {
    let Some(object) = document.as_object() else {
        return Err("not a JSON object".into());
    };
    match object.get("Statement") {
        Some(Value::Array(list)) => Ok(list.iter().collect()),
        Some(single @ Value::Object(_)) => Ok(vec![single]),
        Some(_) => Err("`Statement` must be an object or a list".into()),
        None => Err("no `Statement`".into()),
    }
}

fn compile_statement(statement: &Value, client_id: Option<&str>) -> Result<Statement, String> {
    let Some(object) = statement.as_object() else {
        return Err("not a JSON object".into());
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !KNOWN_ELEMENTS.contains(&k.as_str()))
    {
        return Err(format!("unknown element `{unknown}`"));
    }
    let deny = match object.get("Effect").and_then(Value::as_str) {
        Some("Allow") => false,
        Some("Deny") => true,
        _ => return Err("`Effect` must be \"Allow\" or \"Deny\"".into()),
    };
    // Actions are case-insensitive: compile them lowercased, compare with lowercased actions.
    let actions = patterns(statement, "Action", |v| {
        Some(literal_tokens(&v.to_ascii_lowercase()))
    })?;
    let resources = patterns(statement, "Resource", |v| resource_tokens(v, client_id))?;
    Ok(Statement {
        deny,
        conditional: object.contains_key("Condition"),
        actions,
        resources,
    })
}

/// Reads exactly one of `key` / `Not<key>`, a string or a list of strings.
fn patterns(
    statement: &Value,
    key: &str,
    compile: impl Fn(&str) -> Option<Vec<Token>>,
) -> Result<Patterns, String> {
    let not_key = format!("Not{key}");
    let (negated, value) = match (statement.get(key), statement.get(&not_key)) {
        (Some(v), None) => (false, v),
        (None, Some(v)) => (true, v),
        _ => return Err(format!("needs exactly one of `{key}` and `{not_key}`")),
    };
    let values: Vec<&str> = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(list) => list
            .iter()
            .map(|v| v.as_str().ok_or(()))
            .collect::<Result<_, _>>()
            .map_err(|()| format!("`{key}` must hold only strings"))?,
        _ => return Err(format!("`{key}` must be a string or a list of strings")),
    };
    Ok(Patterns {
        negated,
        patterns: values.into_iter().map(|v| Pattern(compile(v))).collect(),
    })
}

fn literal_tokens(text: &str) -> Vec<Token> {
    text.chars()
        .map(|c| match c {
            '*' => Token::Many,
            '?' => Token::One,
            c => Token::Char(c),
        })
        .collect()
}

/// Tokens of a Resource value with its `${...}` variables resolved. A substituted client ID is
/// literal text: a client that connects as `*` must not widen its own policy. IAM's escapes
/// `${*}`, `${?}` and `${$}` stand for the literal characters.
fn resource_tokens(value: &str, client_id: Option<&str>) -> Option<Vec<Token>> {
    let Some(client_id) = client_id else {
        return Some(literal_tokens(value));
    };
    let mut tokens = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        tokens.extend(literal_tokens(&rest[..start]));
        let end = rest[start..].find('}')? + start;
        let substitute = match &rest[start + 2..end] {
            "iot:ClientId" => client_id,
            "*" => "*",
            "?" => "?",
            "$" => "$",
            _ => return None,
        };
        tokens.extend(substitute.chars().map(Token::Char));
        rest = &rest[end + 1..];
    }
    tokens.extend(literal_tokens(rest));
    Some(tokens)
}

/// Glob matching with `*` and `?`, greedy with one backtrack point (linear in practice).
fn wildcard_match(pattern: &[Token], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Many) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::One) => (p, t) = (p + 1, t + 1),
            Some(Token::Char(c)) if *c == text[t] => (p, t) = (p + 1, t + 1),
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    (p, t) = (sp + 1, st + 1);
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|t| *t == Token::Many)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "arn:aws:iot:us-east-1:000000000000";

    fn allow(action: Value, resource: Value) -> Value {
        json!({"Effect": "Allow", "Action": action, "Resource": resource})
    }

    fn deny(action: Value, resource: Value) -> Value {
        json!({"Effect": "Deny", "Action": action, "Resource": resource})
    }

    fn doc(statements: Vec<Value>) -> Value {
        json!({"Version": "2012-10-17", "Statement": statements})
    }

    /// One document holding `statements`.
    fn one(statements: Vec<Value>) -> Vec<Value> {
        vec![doc(statements)]
    }

    /// A resource ARN in the local account.
    fn arn(resource: &str) -> Value {
        json!(format!("{P}:{resource}"))
    }

    fn decide(documents: &[Value], action: &str, resource: &str) -> Decision {
        Policy::compile(documents, "sensor1")
            .unwrap()
            .decide(action, &format!("{P}:{resource}"))
    }

    #[test]
    fn evaluation_rules() {
        use Decision::*;
        let publish = |r: &str| allow(json!("iot:Publish"), arn(r));
        let subscribe = |r: &str| allow(json!("iot:Subscribe"), arn(r));
        let connect = allow(json!("iot:Connect"), arn("client/sensor1"));
        let telemetry = publish("topic/telemetry/*");
        let secret = deny(json!("iot:Publish"), arn("topic/telemetry/secret"));
        let conditional = |effect: &str| json!({"Effect": effect, "Action": "*", "Resource": "*", "Condition": {"Bool": {"x": "true"}}});
        let not_resource =
            json!({"Effect": "Deny", "Action": "iot:Publish", "NotResource": arn("topic/ok")});
        let not_action = json!({"Effect": "Allow", "NotAction": "iot:Publish", "Resource": "*"});
        let client_topic = publish("topic/telemetry/${iot:ClientId}");
        let v2008 =
            json!({"Version": "2008-10-17", "Statement": [publish("topic/${iot:ClientId}")]});
        let single =
            json!({"Version": "2012-10-17", "Statement": allow(json!("iot:Connect"), json!("*"))});
        #[rustfmt::skip]
        let cases: Vec<(&str, Vec<Value>, &str, &str, Decision)> = vec![
            ("nothing is allowed by default", vec![], "iot:Connect", "client/sensor1", ImplicitDeny),
            ("exact allow", one(vec![connect.clone()]), "iot:Connect", "client/sensor1", Allow),
            ("allow is per action", one(vec![connect.clone()]), "iot:Publish", "client/sensor1", ImplicitDeny),
            ("allow is per resource", one(vec![connect.clone()]), "iot:Connect", "client/sensor2", ImplicitDeny),
            ("* spans levels", one(vec![telemetry.clone()]), "iot:Publish", "topic/telemetry/a/b", Allow),
            ("* may be empty", one(vec![telemetry.clone()]), "iot:Publish", "topic/telemetry/", Allow),
            ("* is anchored", one(vec![telemetry.clone()]), "iot:Publish", "topic/x/telemetry/a", ImplicitDeny),
            ("? is one character", one(vec![publish("topic/room?")]), "iot:Publish", "topic/room1", Allow),
            ("? is not zero characters", one(vec![publish("topic/room?")]), "iot:Publish", "topic/room", ImplicitDeny),
            ("? is not two characters", one(vec![publish("topic/room?")]), "iot:Publish", "topic/room12", ImplicitDeny),
            ("* in an action", one(vec![allow(json!("iot:*"), json!("*"))]), "iot:Subscribe", "topicfilter/a", Allow),
            ("? in an action", one(vec![allow(json!("iot:Re?eive"), json!("*"))]), "iot:Receive", "topic/a", Allow),
            ("actions ignore case", one(vec![allow(json!("IOT:publish"), json!("*"))]), "iot:Publish", "topic/a", Allow),
            ("resources keep case", one(vec![publish("topic/A")]), "iot:Publish", "topic/a", ImplicitDeny),
            ("+ is literal in a policy", one(vec![subscribe("topicfilter/cmd/+")]), "iot:Subscribe", "topicfilter/cmd/x", ImplicitDeny),
            ("+ matches itself", one(vec![subscribe("topicfilter/cmd/+")]), "iot:Subscribe", "topicfilter/cmd/+", Allow),
            ("# is literal in a policy", one(vec![subscribe("topicfilter/cmd/#")]), "iot:Subscribe", "topicfilter/cmd/a/b", ImplicitDeny),
            ("# matches itself", one(vec![subscribe("topicfilter/cmd/#")]), "iot:Subscribe", "topicfilter/cmd/#", Allow),
            ("deny beats allow", one(vec![telemetry.clone(), secret.clone()]), "iot:Publish", "topic/telemetry/secret", ExplicitDeny),
            ("deny beats allow across documents", vec![doc(vec![telemetry.clone()]), doc(vec![deny(json!("iot:*"), json!("*"))])], "iot:Publish", "topic/telemetry/a", ExplicitDeny),
            ("a deny elsewhere leaves the allow", one(vec![telemetry.clone(), secret.clone()]), "iot:Publish", "topic/telemetry/open", Allow),
            ("an allow in a later document", vec![doc(vec![]), doc(vec![telemetry.clone()])], "iot:Publish", "topic/telemetry/a", Allow),
            ("a list of actions", one(vec![allow(json!(["iot:Publish", "iot:Receive"]), json!("*"))]), "iot:Receive", "topic/a", Allow),
            ("a list of resources", one(vec![allow(json!("iot:Publish"), json!([arn("topic/a"), arn("topic/b")]))]), "iot:Publish", "topic/b", Allow),
            ("${iot:ClientId}", one(vec![client_topic.clone()]), "iot:Publish", "topic/telemetry/sensor1", Allow),
            ("${iot:ClientId} is this client only", one(vec![client_topic.clone()]), "iot:Publish", "topic/telemetry/sensor2", ImplicitDeny),
            ("no variables before 2012-10-17", vec![v2008], "iot:Publish", "topic/sensor1", ImplicitDeny),
            ("an unknown variable never matches", one(vec![publish("topic/${iot:Nope}")]), "iot:Publish", "topic/", ImplicitDeny),
            ("an escaped * is literal", one(vec![publish("topic/${*}")]), "iot:Publish", "topic/a", ImplicitDeny),
            ("NotAction", one(vec![not_action.clone()]), "iot:Receive", "topic/a", Allow),
            ("NotAction excludes", one(vec![not_action.clone()]), "iot:Publish", "topic/a", ImplicitDeny),
            ("NotResource", one(vec![not_resource.clone(), allow(json!("*"), json!("*"))]), "iot:Publish", "topic/other", ExplicitDeny),
            ("NotResource excludes", one(vec![not_resource.clone(), allow(json!("*"), json!("*"))]), "iot:Publish", "topic/ok", Allow),
            ("a single statement object", vec![single], "iot:Connect", "client/x", Allow),
            ("a conditional allow never grants", one(vec![conditional("Allow")]), "iot:Connect", "client/x", ImplicitDeny),
            ("a conditional deny always applies", one(vec![allow(json!("*"), json!("*")), conditional("Deny")]), "iot:Connect", "client/x", ExplicitDeny),
        ];
        for (name, documents, action, resource, expected) in cases {
            assert_eq!(decide(&documents, action, resource), expected, "{name}");
        }
    }

    #[test]
    fn a_client_id_with_wildcards_stays_literal() {
        let documents = [doc(vec![allow(
            json!("iot:Publish"),
            json!(format!("{P}:topic/t/${{iot:ClientId}}")),
        )])];
        let policy = Policy::compile(&documents, "*").unwrap();
        assert_eq!(
            policy.decide("iot:Publish", &format!("{P}:topic/t/*")),
            Decision::Allow
        );
        assert_eq!(
            policy.decide("iot:Publish", &format!("{P}:topic/t/other")),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn malformed_documents_are_refused() {
        let cases = [
            (json!("not an object"), "not a JSON object"),
            (json!({"Version": "2012-10-17"}), "no `Statement`"),
            (
                doc(vec![
                    json!({"Effect": "Maybe", "Action": "*", "Resource": "*"}),
                ]),
                "`Effect`",
            ),
            (
                doc(vec![json!({"Effect": "Allow", "Resource": "*"})]),
                "exactly one of `Action`",
            ),
            (
                doc(vec![
                    json!({"Effect": "Allow", "Action": "*", "NotAction": "*", "Resource": "*"}),
                ]),
                "exactly one of `Action`",
            ),
            (
                doc(vec![
                    json!({"Effect": "Allow", "Action": [1], "Resource": "*"}),
                ]),
                "only strings",
            ),
            (
                doc(vec![
                    json!({"Effect": "Allow", "Action": "*", "Resources": "*"}),
                ]),
                "unknown element `Resources`",
            ),
        ];
        for (document, expected) in cases {
            let err = Policy::compile(&[document], "c").unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn wildcard_matching_backtracks() {
        let m =
            |p: &str, t: &str| wildcard_match(&literal_tokens(p), &t.chars().collect::<Vec<_>>());
        assert!(m("a*b*c", "axxbyybc"));
        assert!(m("*", ""));
        assert!(m("a*?", "ab"));
        assert!(!m("a*?", "a"));
        assert!(!m("a*b", "axxbyy"));
    }
}

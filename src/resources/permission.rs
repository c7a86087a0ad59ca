//! The function's resource policy statement that lets IoT, and only for our authorizer in our
//! account, invoke the function.

use anyhow::Result;
use aws_sdk_lambda::Client;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::app::App;
use crate::aws::Clients;
use crate::error::AwsResultExt;
use crate::names::Names;
use crate::resources::check::{SETUP, check, fail, ok, skip};
use crate::resources::{
    Action, Check, Desired, Observed as All, Outcome, Reading, Removal, Resource, Step,
};

pub const PRINCIPAL: &str = "iot.amazonaws.com";
pub const ACTION: &str = "lambda:InvokeFunction";

/// Our statement as found in the function's policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub principal: Option<String>,
    pub action: Option<String>,
    pub source_arn: Option<String>,
    pub source_account: Option<String>,
}

/// Reads our statement (by its deterministic id) from the function's policy. No policy, no
/// function or no such statement all mean "absent".
pub async fn read(lambda: &Client, names: &Names) -> Result<Option<Observed>> {
    let policy = match lambda
        .get_policy()
        .function_name(&names.function)
        .send()
        .await
    {
        Ok(out) => out.policy.unwrap_or_default(),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e).aws("lambda:GetPolicy"),
    };
    Ok(find_statement(&policy, &names.statement_id))
}

/// Pure: our statement in a resource policy document.
pub fn find_statement(policy: &str, sid: &str) -> Option<Observed> {
    let doc: Value = serde_json::from_str(policy).ok()?;
    let statement = doc
        .get("Statement")?
        .as_array()?
        .iter()
        .find(|s| s.get("Sid").and_then(Value::as_str) == Some(sid))?;
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 => a[0].as_str().map(str::to_owned),
        _ => None,
    };
    let principal = statement.get("Principal").and_then(|p| match p {
        Value::Object(o) => text(o.get("Service")),
        other => text(Some(other)),
    });
    let condition = |op: &str, key: &str| {
        text(
            statement
                .get("Condition")
                .and_then(|c| c.get(op))
                .and_then(|c| c.get(key)),
        )
    };
    Some(Observed {
        principal,
        action: text(statement.get("Action")),
        source_arn: condition("ArnLike", "AWS:SourceArn")
            .or_else(|| condition("ArnEquals", "AWS:SourceArn")),
        source_account: condition("StringEquals", "AWS:SourceAccount"),
    })
}

/// Pure: what is wrong with our statement (empty: nothing).
pub fn problems(desired: &Desired, observed: Option<&Observed>) -> Vec<String> {
    let Some(o) = observed else {
        return vec!["missing".to_string()];
    };
    let mut p = Vec::new();
    let mut expect = |field: &str, got: &Option<String>, want: String| {
        if got.as_deref() != Some(want.as_str()) {
            p.push(format!(
                "{field} is {} (want {want})",
                got.as_deref().unwrap_or("unset")
            ));
        }
    };
    expect("principal", &o.principal, PRINCIPAL.to_string());
    expect("action", &o.action, ACTION.to_string());
    expect("SourceArn", &o.source_arn, desired.authorizer_arn());
    expect("SourceAccount", &o.source_account, desired.account.clone());
    p
}

/// Adds our statement, replacing a stale one (AWS rejects a duplicate statement id).
pub async fn apply(lambda: &Client, desired: &Desired, stale: bool) -> Result<()> {
    if stale {
        remove(lambda, &desired.names).await?;
    }
    lambda
        .add_permission()
        .function_name(&desired.names.function)
        .statement_id(&desired.names.statement_id)
        .action(ACTION)
        .principal(PRINCIPAL)
        .source_arn(desired.authorizer_arn())
        .source_account(&desired.account)
        .send()
        .await
        .aws("lambda:AddPermission")?;
    Ok(())
}

pub async fn remove(lambda: &Client, names: &Names) -> Result<()> {
    match lambda
        .remove_permission()
        .function_name(&names.function)
        .statement_id(&names.statement_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).aws("lambda:RemovePermission"),
    }
}

/// The invoke permission as one of the deployment's resources.
pub struct Permission;
pub static RESOURCE: Permission = Permission;

/// Our statement as setup must treat it: deleting and recreating the function drops its policy,
/// so a function about to be created (absent, or its creation Failed) has no statement whatever
/// was read before.
pub fn current(observed: &All) -> Option<&Observed> {
    observed
        .function
        .as_ref()
        .filter(|f| f.state != "Failed")
        .and(observed.permission.as_ref())
}

impl Resource for Permission {
    fn kind(&self) -> &'static str {
        "permission"
    }

    fn label(&self) -> &'static str {
        "invoke permission"
    }

    /// Only the function, and only once it is Active (its step returns then): Lambda refuses
    /// operations on a Pending function (aws-facts.md §6, §13), and the stand-in refuses
    /// AddPermission then. The authorizer's ARN it names is known before the authorizer exists.
    fn after(&self) -> &'static [&'static str] {
        &["function"]
    }

    /// Nothing: the statement is part of the function's policy and goes with the function, so
    /// it is removed alongside DeleteFunction (whichever comes second finds it gone, which is
    /// success), while the IoT chain deactivates the authorizer in the same round trip.
    fn removed_after(&self) -> &'static [&'static str] {
        &[]
    }

    fn read<'a>(
        &'a self,
        clients: &'a Clients,
        names: &'a Names,
    ) -> BoxFuture<'a, Result<Reading>> {
        Box::pin(async move {
            let found = read(&clients.lambda, names).await?;
            Ok(Box::new(move |o: &mut All| o.permission = found) as Reading)
        })
    }

    fn checks(&self, desired: &Desired, observed: &All) -> Vec<Check> {
        let n = &desired.names;
        if observed.function.is_none() {
            return vec![skip("permission.exists", "no function to hold it")];
        }
        let Some(p) = &observed.permission else {
            return vec![fail(
                "permission.exists",
                format!(
                    "statement {} not in the function's policy: IoT cannot invoke it",
                    n.statement_id
                ),
                SETUP,
            )];
        };
        let want = |got: &Option<String>, want: &str| got.as_deref() == Some(want);
        let shown = |got: &Option<String>| got.clone().unwrap_or_else(|| "unset".to_string());
        vec![
            ok("permission.exists", n.statement_id.clone()),
            check(
                "permission.principal",
                want(&p.principal, PRINCIPAL),
                PRINCIPAL,
                shown(&p.principal),
                SETUP,
            ),
            check(
                "permission.action",
                want(&p.action, ACTION),
                ACTION,
                shown(&p.action),
                SETUP,
            ),
            check(
                "permission.source_arn",
                want(&p.source_arn, &desired.authorizer_arn()),
                desired.authorizer_arn(),
                format!(
                    "{} (want {})",
                    shown(&p.source_arn),
                    desired.authorizer_arn()
                ),
                SETUP,
            ),
            check(
                "permission.source_account",
                want(&p.source_account, &desired.account),
                desired.account.clone(),
                format!("{} (want {})", shown(&p.source_account), desired.account),
                SETUP,
            ),
        ]
    }

    fn plan(&self, desired: &Desired, observed: &All) -> Outcome {
        let name = &desired.names.statement_id;
        let statement = current(observed);
        let problems = problems(desired, statement);
        match (statement, problems.is_empty()) {
            (None, _) => Outcome::new(self.kind(), name, Action::Created),
            (Some(_), true) => Outcome::new(self.kind(), name, Action::Unchanged),
            (Some(_), false) => Outcome::new(self.kind(), name, Action::Updated).with(problems),
        }
    }

    fn apply<'a>(&'a self, step: &'a Step<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let statement = current(step.observed);
            if statement.is_some() && problems(step.desired, statement).is_empty() {
                return Ok(());
            }
            apply(&step.clients.lambda, step.desired, statement.is_some()).await
        })
    }

    /// Only from a function of ours: another's policy is not ours to edit.
    fn removal(&self, names: &Names, observed: &All) -> Removal {
        let function_ours = observed.function.as_ref().is_some_and(|f| f.owned);
        if observed.permission.is_some() && function_ours {
            Removal::Delete(Outcome::new(
                self.kind(),
                &names.statement_id,
                Action::Deleted,
            ))
        } else {
            Removal::Absent
        }
    }

    fn delete<'a>(
        &'a self,
        _: &'a App,
        clients: &'a Clients,
        names: &'a Names,
        _: &'a All,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(remove(&clients.lambda, names))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"{"Version":"2012-10-17","Id":"default","Statement":[
      {"Sid":"other","Effect":"Allow","Principal":{"Service":"s3.amazonaws.com"},"Action":"lambda:InvokeFunction"},
      {"Sid":"d-iot-invoke","Effect":"Allow","Principal":{"Service":"iot.amazonaws.com"},"Action":"lambda:InvokeFunction",
       "Resource":"arn:aws:lambda:eu-west-1:111122223333:function:d-authorizer",
       "Condition":{"ArnLike":{"AWS:SourceArn":"arn:aws:iot:eu-west-1:111122223333:authorizer/d"},
                    "StringEquals":{"AWS:SourceAccount":"111122223333"}}}]}"#;

    fn desired() -> Desired {
        crate::resources::tests::desired()
    }

    #[test]
    fn our_statement_is_found_and_correct() {
        let o = find_statement(POLICY, "d-iot-invoke").unwrap();
        assert!(
            problems(&desired(), Some(&o)).is_empty(),
            "{:?}",
            problems(&desired(), Some(&o))
        );
        assert!(find_statement(POLICY, "nope").is_none());
        assert!(find_statement("not json", "d-iot-invoke").is_none());
    }

    #[test]
    fn wrong_source_arn_and_missing_account_are_reported() {
        let policy = POLICY
            .replace("authorizer/d\"", "authorizer/other\"")
            .replace(
                ",\n                    \"StringEquals\":{\"AWS:SourceAccount\":\"111122223333\"}",
                "",
            );
        let o = find_statement(&policy, "d-iot-invoke").unwrap();
        let p = problems(&desired(), Some(&o));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("SourceArn"));
        assert!(p[1].starts_with("SourceAccount is unset"));
        assert_eq!(problems(&desired(), None), vec!["missing"]);
    }
}

//! `iam-policy`: the least-privilege IAM policy an operator needs for each command, scoped to this
//! deployment's resource ARNs. A test checks every call each command makes is covered.

use std::fmt;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::config::CredentialStore;
use crate::error::{Failure, exit};
use crate::names::{Names, basic_execution_policy_arn, partition_of_region};

#[derive(Debug, Args)]
pub struct IamPolicyArgs {
    /// The command the policy is for.
    #[arg(long = "for", value_enum, default_value_t = For::All)]
    pub for_command: For,
    /// Account id to put in the ARNs [default: the caller's, from sts:GetCallerIdentity].
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// With --account: the partition of the ARNs (aws, aws-cn, aws-us-gov...) [default: the
    /// region's].
    #[arg(long, value_name = "PARTITION", requires = "account")]
    pub partition: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum For {
    Setup,
    Status,
    Teardown,
    Logs,
    /// The device commands, with `credential_store = "dynamodb"` (the package store needs none).
    Device,
    All,
}

/// Reads shared by every command (`sts:GetCallerIdentity` needs no permission).
const READ_ROLE: &[&str] = &[
    "iam:GetRole",
    "iam:ListAttachedRolePolicies",
    "iam:ListRolePolicies",
];
/// `lambda:ListTags` too: without it GetFunction leaves out the owner tag (aws-facts.md §13).
const READ_FUNCTION: &[&str] = &["lambda:GetFunction", "lambda:GetPolicy", "lambda:ListTags"];
const READ_AUTHORIZER: &[&str] = &["iot:DescribeAuthorizer", "iot:ListTagsForResource"];
const READ_ACCOUNT: &[&str] = &["iot:DescribeDefaultAuthorizer"];

/// The actions a command needs on each kind of resource.
struct Needs {
    role: Vec<&'static str>,
    function: Vec<&'static str>,
    authorizer: Vec<&'static str>,
    account: Vec<&'static str>,
    pass_role: bool,
}

fn needs(command: For, names: &Names) -> Needs {
    let mut n = Needs {
        role: READ_ROLE.to_vec(),
        function: READ_FUNCTION.to_vec(),
        authorizer: READ_AUTHORIZER.to_vec(),
        account: READ_ACCOUNT.to_vec(),
        pass_role: false,
    };
    let setup = matches!(command, For::Setup | For::All);
    let teardown = matches!(command, For::Teardown | For::All);
    if matches!(command, For::Status | For::All) {
        n.authorizer.push("iot:TestInvokeAuthorizer");
    }
    if !matches!(command, For::Teardown) {
        // Where devices connect: printed by setup, checked by status; teardown has no use for it.
        n.account.push("iot:DescribeEndpoint");
    }
    if setup {
        // Creating a resource with tags needs the tagging permission as well.
        n.role.extend([
            "iam:CreateRole",
            "iam:TagRole",
            "iam:UpdateAssumeRolePolicy",
            "iam:AttachRolePolicy",
        ]);
        n.function.extend([
            "lambda:CreateFunction",
            "lambda:TagResource",
            "lambda:UpdateFunctionCode",
            "lambda:UpdateFunctionConfiguration",
            "lambda:AddPermission",
        ]);
        n.authorizer.extend([
            "iot:CreateAuthorizer",
            "iot:TagResource",
            "iot:UpdateAuthorizer",
            "iot:SetDefaultAuthorizer",
            // To reactivate an Inactive function by invoking it through the authorizer.
            "iot:TestInvokeAuthorizer",
        ]);
        n.account.push("iot:ClearDefaultAuthorizer");
        n.pass_role = true;
    }
    if names.store == CredentialStore::Dynamodb {
        // The role's grant on the devices table: read by all, written by setup.
        n.role.push("iam:GetRolePolicy");
        if setup {
            n.role.push("iam:PutRolePolicy");
        }
    }
    if setup || teardown {
        n.role
            .extend(["iam:DetachRolePolicy", "iam:DeleteRolePolicy"]);
        n.function.push("lambda:RemovePermission");
    }
    if teardown {
        n.role.push("iam:DeleteRole");
        n.function.push("lambda:DeleteFunction");
        n.authorizer
            .extend(["iot:UpdateAuthorizer", "iot:DeleteAuthorizer"]);
        n.account.push("iot:ClearDefaultAuthorizer");
    }
    for list in [
        &mut n.role,
        &mut n.function,
        &mut n.authorizer,
        &mut n.account,
    ] {
        list.sort_unstable();
        list.dedup();
    }
    n
}

/// DynamoDB actions on the devices table, per command (none with the package store). The exact
/// emptiness check is a Scan allowed only with `Select = COUNT` ([`table_statements`]).
fn table_needs(command: For) -> Vec<&'static str> {
    let mut actions = vec![
        "dynamodb:DescribeContinuousBackups",
        "dynamodb:DescribeTable",
        "dynamodb:ListTagsOfResource",
    ];
    if matches!(command, For::Setup | For::All) {
        // CreateTable with tags needs TagResource too.
        actions.extend([
            "dynamodb:CreateTable",
            "dynamodb:TagResource",
            "dynamodb:UpdateContinuousBackups",
            "dynamodb:UpdateTable",
        ]);
    }
    if matches!(command, For::Teardown | For::All) {
        actions.push("dynamodb:DeleteTable");
    }
    actions.sort_unstable();
    actions
}

/// The statements for the devices table, scoped to its ARN. `dynamodb:Scan` is limited by the
/// `dynamodb:Select` condition key to `COUNT`: it tells whether the table holds devices without
/// revealing any (DynamoDB's condition keys, Service Authorization Reference).
fn table_statements(
    command: For,
    names: &Names,
    partition: &str,
    region: &str,
    account: &str,
) -> Vec<Value> {
    if names.store != CredentialStore::Dynamodb || command == For::Logs {
        return vec![];
    }
    let arn = names.table_arn(partition, region, account);
    let mut statements = Vec::new();
    if command != For::Device {
        statements.extend([
            json!({"Sid": "DevicesTable", "Effect": "Allow", "Action": table_needs(command), "Resource": arn}),
            json!({"Sid": "CountDevicesOnly", "Effect": "Allow", "Action": "dynamodb:Scan", "Resource": arn,
                "Condition": {"StringEquals": {"dynamodb:Select": "COUNT"}}}),
        ]);
    }
    if matches!(command, For::Status | For::All) {
        // `status --probe-user` reads the device's client IDs and topics and nothing else: one
        // GetItem whose projection names only PROBE_ATTRIBUTES. `dynamodb:Attributes` (the
        // projected names, ForAllValues) keeps out the verifiers; `dynamodb:Select` =
        // SPECIFIC_ATTRIBUTES refuses a GetItem with no projection, for which ForAllValues
        // alone would hold (Service Authorization Reference, "Actions, resources, and condition
        // keys for Amazon DynamoDB"; IAM User Guide, "Amazon DynamoDB: Allows access to specific
        // attributes").
        statements.push(json!({"Sid": "ProbeDeviceWithoutSecrets", "Effect": "Allow",
            "Action": "dynamodb:GetItem", "Resource": arn,
            "Condition": {
                "ForAllValues:StringEquals": {"dynamodb:Attributes": crate::commands::status::PROBE_ATTRIBUTES},
                "StringEquals": {"dynamodb:Select": "SPECIFIC_ATTRIBUTES"}
            }}));
    }
    if matches!(command, For::Device | For::All) {
        statements.push(json!({"Sid": "DeviceCommands", "Effect": "Allow",
            "Action": DEVICE_ACTIONS, "Resource": arn}));
    }
    statements
}

/// What the device commands call on the table (src/store/dynamodb.rs): `show`, `rotate`,
/// `disable`, `enable` read one item (GetItem) and write it back conditionally (PutItem); `add`
/// is a conditional PutItem, `remove` a conditional DeleteItem; `list` and `export` page with
/// Scan; `import` reads 100 items at a time (BatchGetItem) and writes 25 (BatchWriteItem).
const DEVICE_ACTIONS: &[&str] = &[
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Scan",
];

/// CloudWatch Logs actions on the function's log group, per command.
fn log_group_needs(command: For) -> Vec<&'static str> {
    let read = ["logs:DescribeLogGroups", "logs:ListTagsForResource"];
    let mut actions: Vec<&'static str> = match command {
        For::Logs => vec![],
        _ => read.to_vec(),
    };
    if matches!(command, For::Setup | For::All) {
        // CreateLogGroup with tags needs TagResource too.
        actions.extend([
            "logs:CreateLogGroup",
            "logs:TagResource",
            "logs:PutRetentionPolicy",
        ]);
    }
    if matches!(command, For::Teardown | For::All) {
        actions.push("logs:DeleteLogGroup");
    }
    if matches!(command, For::Logs | For::All) {
        actions.push("logs:FilterLogEvents");
    }
    actions.sort_unstable();
    actions
}

/// The statements for the log group: scoped to it, in both ARN forms IAM evaluates log-group
/// actions against (`…:log-group:NAME` and `…:log-group:NAME:*`).
fn log_group_statements(
    command: For,
    names: &Names,
    partition: &str,
    region: &str,
    account: &str,
) -> Vec<Value> {
    let arn = crate::resources::log_group::arn(names, partition, region, account);
    let mut actions = log_group_needs(command);
    let mut statements = Vec::new();
    // [silent] DescribeLogGroups lists by name prefix and is not documented as scopable to one
    // group; it only reveals names and retention, so it gets the account's log groups.
    if let Some(i) = actions.iter().position(|a| *a == "logs:DescribeLogGroups") {
        actions.remove(i);
        statements.push(
            json!({"Sid": "ListLogGroups", "Effect": "Allow", "Action": "logs:DescribeLogGroups",
            "Resource": format!("arn:{partition}:logs:{region}:{account}:log-group:*")}),
        );
    }
    statements.insert(
        0,
        json!({"Sid": "AuthorizerLogGroup", "Effect": "Allow", "Action": actions,
        "Resource": [arn.clone(), format!("{arn}:*")]}),
    );
    statements
}

/// The policy document for `command`.
pub fn document(
    command: For,
    names: &Names,
    partition: &str,
    region: &str,
    account: &str,
) -> Value {
    if command == For::Device {
        // The device commands touch the table only (the package store's edit the config file).
        return json!({"Version": "2012-10-17",
            "Statement": table_statements(command, names, partition, region, account)});
    }
    if command == For::Logs {
        // `logs` reads the log lines, and the function's logging config to explain an empty answer.
        let mut statements = log_group_statements(command, names, partition, region, account);
        statements.push(
            json!({"Sid": "AuthorizerFunction", "Effect": "Allow", "Action": ["lambda:GetFunction"],
            "Resource": names.function_arn(partition, region, account)}),
        );
        return json!({"Version": "2012-10-17", "Statement": statements});
    }
    let n = needs(command, names);
    let role_arn = names.role_arn(partition, account);
    let mut statements = vec![
        json!({"Sid": "ExecutionRole", "Effect": "Allow", "Action": n.role, "Resource": role_arn}),
        json!({"Sid": "AuthorizerFunction", "Effect": "Allow", "Action": n.function, "Resource": names.function_arn(partition, region, account)}),
        json!({"Sid": "Authorizer", "Effect": "Allow", "Action": n.authorizer, "Resource": names.authorizer_arn(partition, region, account)}),
        // The default authorizer and the endpoint are account-wide: these actions take no resource.
        json!({"Sid": "AccountWideIot", "Effect": "Allow", "Action": n.account, "Resource": "*"}),
    ];
    if n.pass_role {
        statements.push(json!({
            "Sid": "PassRoleToLambdaOnly", "Effect": "Allow", "Action": "iam:PassRole",
            "Resource": role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}
        }));
        if matches!(command, For::Setup | For::All) {
            // Attaching is limited to the one managed policy the role needs.
            statements[0] = json!({"Sid": "ExecutionRole", "Effect": "Allow", "Action": n.role.iter().filter(|a| **a != "iam:AttachRolePolicy").collect::<Vec<_>>(), "Resource": role_arn});
            statements.push(json!({
                "Sid": "AttachBasicExecutionOnly", "Effect": "Allow", "Action": "iam:AttachRolePolicy",
                "Resource": role_arn,
                "Condition": {"ArnEquals": {"iam:PolicyARN": basic_execution_policy_arn(partition)}}
            }));
        }
    }
    statements.extend(log_group_statements(
        command, names, partition, region, account,
    ));
    statements.extend(table_statements(command, names, partition, region, account));
    json!({"Version": "2012-10-17", "Statement": statements})
}

#[derive(Serialize)]
struct Printed(Value);

impl fmt::Display for Printed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}",
            serde_json::to_string_pretty(&self.0).map_err(|_| fmt::Error)?
        )
    }
}

pub async fn run(app: &App, args: IamPolicyArgs) -> Result<u8> {
    let config = app.config()?;
    let names = app.names(&config)?;
    if args.for_command == For::Device && names.store != CredentialStore::Dynamodb {
        bail!(Failure::usage(
            "the device commands need no AWS permission with credential_store = \"package\": \
             they edit the config file, and `setup` deploys it",
            "use `iam-policy --for setup` for the deploy, or set credential_store = \"dynamodb\" \
             in [deployment] to keep devices in a table"
        ));
    }
    let clients = app.clients().await?;
    // With --account no credentials are needed, so the partition comes from the region (or
    // --partition); otherwise it is the caller's, as for every other command.
    let (account, partition) = match args.account {
        Some(a) => {
            let partition = args
                .partition
                .unwrap_or_else(|| partition_of_region(&clients.region).to_string());
            (a, partition)
        }
        None => {
            let identity = crate::aws::identity(clients).await?;
            (identity.account, identity.partition)
        }
    };
    app.print(&Printed(document(
        args.for_command,
        &names,
        &partition,
        &clients.region,
        &account,
    )));
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(doc: &Value) -> Vec<String> {
        doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| match &s["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_string()).collect(),
                _ => vec![],
            })
            .collect()
    }

    #[test]
    fn status_is_read_only() {
        let doc = document(
            For::Status,
            &Names::new("d").unwrap(),
            "aws",
            "eu-west-1",
            "111122223333",
        );
        for a in actions(&doc) {
            let op = a.split(':').nth(1).unwrap();
            assert!(
                ["Get", "List", "Describe", "TestInvoke"]
                    .iter()
                    .any(|p| op.starts_with(p)),
                "{a}"
            );
        }
    }

    #[test]
    fn pass_role_is_limited_to_lambda() {
        let doc = document(
            For::Setup,
            &Names::new("d").unwrap(),
            "aws",
            "eu-west-1",
            "111122223333",
        );
        let pass = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Action"] == "iam:PassRole")
            .unwrap();
        assert_eq!(
            pass["Condition"]["StringEquals"]["iam:PassedToService"],
            "lambda.amazonaws.com"
        );
        assert_eq!(
            pass["Resource"],
            "arn:aws:iam::111122223333:role/d-authorizer-role"
        );
    }

    #[test]
    fn the_devices_table_grows_the_policies_only_with_the_dynamodb_store() {
        let package = Names::new("d").unwrap();
        let dynamodb = Names::new("d")
            .unwrap()
            .with_store(CredentialStore::Dynamodb);
        for command in [For::Setup, For::Status, For::Teardown, For::All] {
            let doc = document(command, &package, "aws", "eu-west-1", "111122223333");
            assert!(!doc.to_string().contains("dynamodb"), "{command:?}: {doc}");
            let doc = document(command, &dynamodb, "aws", "eu-west-1", "111122223333");
            let statements = doc["Statement"].as_array().unwrap();
            let table = "arn:aws:dynamodb:eu-west-1:111122223333:table/d-devices";
            for s in statements
                .iter()
                .filter(|s| s.to_string().contains("dynamodb:"))
            {
                assert_eq!(s["Resource"], table, "{command:?}: {s}");
            }
            let scan = statements
                .iter()
                .find(|s| s["Action"] == "dynamodb:Scan")
                .unwrap();
            assert_eq!(
                scan["Condition"]["StringEquals"]["dynamodb:Select"],
                "COUNT"
            );
            let all = actions(&doc);
            assert!(all.contains(&"iam:GetRolePolicy".to_string()));
            assert_eq!(
                all.contains(&"dynamodb:CreateTable".to_string()),
                matches!(command, For::Setup | For::All)
            );
            assert_eq!(
                all.contains(&"dynamodb:DeleteTable".to_string()),
                matches!(command, For::Teardown | For::All)
            );
            // Only the device commands read whole items (verifiers included); status reads
            // the non-secret attributes of one, under conditions.
            let whole_items = statements.iter().any(|s| {
                s["Condition"].is_null() && s.to_string().contains("\"dynamodb:GetItem\"")
            });
            assert_eq!(whole_items, command == For::All, "{command:?}: {doc}");
            let probe = statements
                .iter()
                .find(|s| s["Sid"] == "ProbeDeviceWithoutSecrets");
            assert_eq!(
                probe.is_some(),
                matches!(command, For::Status | For::All),
                "{command:?}"
            );
            if let Some(probe) = probe {
                let attributes =
                    &probe["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"];
                assert!(!attributes.to_string().contains("verifier"), "{probe}");
                assert!(!attributes.to_string().contains("previous"), "{probe}");
                assert_eq!(
                    probe["Condition"]["StringEquals"]["dynamodb:Select"],
                    "SPECIFIC_ATTRIBUTES"
                );
            }
        }
        let logs = document(For::Logs, &dynamodb, "aws", "eu-west-1", "111122223333");
        assert!(!logs.to_string().contains("dynamodb"));
    }

    #[test]
    fn the_device_policy_is_the_table_only() {
        let names = Names::new("d")
            .unwrap()
            .with_store(CredentialStore::Dynamodb);
        let doc = document(For::Device, &names, "aws", "eu-west-1", "111122223333");
        let statements = doc["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1, "{doc}");
        assert_eq!(
            statements[0]["Resource"],
            "arn:aws:dynamodb:eu-west-1:111122223333:table/d-devices"
        );
        assert_eq!(actions(&doc), DEVICE_ACTIONS);
        let all = actions(&document(
            For::All,
            &names,
            "aws",
            "eu-west-1",
            "111122223333",
        ));
        assert!(DEVICE_ACTIONS.iter().all(|a| all.contains(&a.to_string())));
    }

    #[test]
    fn every_arn_is_in_the_partition() {
        let doc = document(
            For::All,
            &Names::new("d").unwrap(),
            "aws-cn",
            "cn-north-1",
            "111122223333",
        );
        let text = doc.to_string();
        assert!(!text.contains("arn:aws:"), "{text}");
        assert!(
            text.contains("arn:aws-cn:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"),
            "{text}"
        );
        assert!(text.contains("arn:aws-cn:lambda:cn-north-1:111122223333:function:d-authorizer"));
    }
}

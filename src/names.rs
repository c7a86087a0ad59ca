//! Deterministic resource names and ARNs derived from one deployment name, and the tags that mark
//! what this tool owns. setup, status and teardown all find the same resources through here.

use anyhow::{Result, bail};

use crate::error::Failure;

pub const DEFAULT_NAME: &str = "iot-custom-auth";

/// Tag key recording which deployment created a resource; its value is the deployment name.
pub const OWNER_TAG: &str = "iot-custom-auth:deployment";

/// The AWS-managed policy that lets the function write its logs, and nothing more. Managed
/// policies live in each partition (`arn:aws-cn:iam::aws:policy/...` in China).
pub fn basic_execution_policy_arn(partition: &str) -> String {
    format!("arn:{partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
}

/// The partition a region belongs to, for when no credentials are at hand to ask STS
/// (`iam-policy --account`): China, GovCloud and the isolated regions have their own.
pub fn partition_of_region(region: &str) -> &'static str {
    const PREFIXES: &[(&str, &str)] = &[
        ("cn-", "aws-cn"),
        ("us-gov-", "aws-us-gov"),
        ("us-isob-", "aws-iso-b"),
        ("us-isof-", "aws-iso-f"),
        ("us-iso-", "aws-iso"),
        ("eu-isoe-", "aws-iso-e"),
        ("eusc-", "aws-eusc"),
    ];
    PREFIXES
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or("aws", |(_, partition)| partition)
}

/// The longest deployment name: the role name `<name>-authorizer-role` must fit IAM's 64.
const MAX_NAME_LEN: usize = 44;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub deployment: String,
    pub role: String,
    pub function: String,
    pub authorizer: String,
    pub statement_id: String,
    pub table: String,
}

impl Names {
    /// Validates the deployment name against the strictest of the AWS naming rules involved
    /// (Lambda function names: `[a-zA-Z0-9-_]`, IAM role names: 64 characters).
    pub fn new(deployment: &str) -> Result<Self> {
        let valid_chars = deployment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let starts_alnum = deployment
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if !valid_chars || !starts_alnum || deployment.len() > MAX_NAME_LEN {
            bail!(Failure::usage(
                format!("invalid deployment name `{deployment}`"),
                format!(
                    "use 1 to {MAX_NAME_LEN} letters, digits, `-` or `_`, starting with a letter \
                     or digit (--name or `deployment.name` in the config)"
                )
            ));
        }
        Ok(Self {
            deployment: deployment.to_string(),
            role: format!("{deployment}-authorizer-role"),
            function: format!("{deployment}-authorizer"),
            authorizer: deployment.to_string(),
            statement_id: format!("{deployment}-iot-invoke"),
            table: format!("{deployment}-devices"),
        })
    }

    pub fn authorizer_arn(&self, partition: &str, region: &str, account: &str) -> String {
        format!(
            "arn:{partition}:iot:{region}:{account}:authorizer/{}",
            self.authorizer
        )
    }

    pub fn function_arn(&self, partition: &str, region: &str, account: &str) -> String {
        format!(
            "arn:{partition}:lambda:{region}:{account}:function:{}",
            self.function
        )
    }

    pub fn role_arn(&self, partition: &str, account: &str) -> String {
        format!("arn:{partition}:iam::{account}:role/{}", self.role)
    }
}

/// True when a tag list says the resource belongs to this deployment.
pub fn owned_by<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>, deployment: &str) -> bool {
    tags.into_iter()
        .any(|(k, v)| k == OWNER_TAG && v == deployment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_the_deployment() {
        let n = Names::new("fleet-a").unwrap();
        assert_eq!(n.role, "fleet-a-authorizer-role");
        assert_eq!(n.function, "fleet-a-authorizer");
        assert_eq!(n.authorizer, "fleet-a");
        assert_eq!(n.statement_id, "fleet-a-iot-invoke");
        assert_eq!(
            n.authorizer_arn("aws", "eu-west-1", "111122223333"),
            "arn:aws:iot:eu-west-1:111122223333:authorizer/fleet-a"
        );
        assert_eq!(
            n.role_arn("aws-cn", "111122223333"),
            "arn:aws-cn:iam::111122223333:role/fleet-a-authorizer-role"
        );
        assert_eq!(
            basic_execution_policy_arn("aws-us-gov"),
            "arn:aws-us-gov:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
        );
    }

    #[test]
    fn partitions_of_regions() {
        for (region, partition) in [
            ("us-east-1", "aws"),
            ("eu-west-1", "aws"),
            ("cn-north-1", "aws-cn"),
            ("cn-northwest-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-iso-east-1", "aws-iso"),
            ("us-isob-east-1", "aws-iso-b"),
        ] {
            assert_eq!(partition_of_region(region), partition, "{region}");
        }
    }

    #[test]
    fn longest_name_fits_every_aws_limit() {
        let n = Names::new(&"a".repeat(MAX_NAME_LEN)).unwrap();
        assert!(n.role.len() <= 64);
        assert!(n.function.len() <= 64);
        assert!(n.statement_id.len() <= 100);
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "-x", "a b", "a.b", "ä", &"a".repeat(MAX_NAME_LEN + 1)] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ownership_needs_our_key_and_our_name() {
        assert!(owned_by([(OWNER_TAG, "x")], "x"));
        assert!(!owned_by([(OWNER_TAG, "y")], "x"));
        assert!(!owned_by([("owner", "x")], "x"));
    }
}

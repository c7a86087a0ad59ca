//! The one place the AWS SDK configuration is built, and the clients every command shares.

use anyhow::{Context as _, Result, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::cli::GlobalArgs;
use crate::error::{AwsResultExt, Failure};

/// Builds the SDK configuration from the global flags, falling back to the SDK's own sources
/// (AWS_REGION, AWS_PROFILE, AWS_ENDPOINT_URL[_<SERVICE>], profiles, SSO, IMDS...).
pub async fn sdk_config(global: &GlobalArgs) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = &global.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &global.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &global.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// The clients of the services the tool talks to, built once from one configuration.
#[derive(Clone, Debug)]
pub struct Clients {
    pub iam: aws_sdk_iam::Client,
    pub lambda: aws_sdk_lambda::Client,
    pub iot: aws_sdk_iot::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub logs: aws_sdk_cloudwatchlogs::Client,
    pub sts: aws_sdk_sts::Client,
    pub region: String,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Result<Self> {
        let Some(region) = config.region() else {
            bail!(Failure::usage(
                "no AWS region configured",
                "pass --region, set AWS_REGION, or set `region` in your AWS profile"
            ));
        };
        let region = region.to_string();
        validate_region(&region)?;
        Ok(Self {
            iam: aws_sdk_iam::Client::new(config),
            lambda: aws_sdk_lambda::Client::new(config),
            iot: aws_sdk_iot::Client::new(config),
            dynamodb: aws_sdk_dynamodb::Client::new(config),
            logs: aws_sdk_cloudwatchlogs::Client::new(config),
            sts: aws_sdk_sts::Client::new(config),
            region,
        })
    }
}

/// Region names look like `us-east-1`, `ap-southeast-4`, `us-gov-west-1`. Checking the shape up
/// front turns a typo into a clear message instead of a DNS failure deep in the SDK.
fn validate_region(region: &str) -> Result<()> {
    let parts: Vec<&str> = region.split('-').collect();
    let shaped = parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty();
    if !shaped {
        bail!(Failure::usage(
            format!("`{region}` is not an AWS region name"),
            "use a region such as us-east-1 or eu-west-1 (--region or AWS_REGION)"
        ));
    }
    Ok(())
}

/// Who we are talking as: the account and partition every ARN is built in.
#[derive(Clone, Debug)]
pub struct Identity {
    pub account: String,
    /// `aws`, `aws-cn`, `aws-us-gov`...: the second field of the caller's ARN.
    pub partition: String,
}

/// Resolves credentials and asks STS who they belong to. Run first by every command that talks
/// to AWS, so that missing credentials or an unreachable endpoint fail before any change.
pub async fn identity(clients: &Clients) -> Result<Identity> {
    let out = clients
        .sts
        .get_caller_identity()
        .send()
        .await
        .aws("sts:GetCallerIdentity")
        .context("checking the AWS credentials (sts:GetCallerIdentity)")?;
    let account = out
        .account()
        .context("STS returned no account id")?
        .to_string();
    let arn = out.arn().context("STS returned no caller ARN")?;
    let partition = partition_of_arn(arn)
        .with_context(|| format!("STS returned a malformed caller ARN `{arn}`"))?
        .to_string();
    Ok(Identity { account, partition })
}

/// `aws-cn` from `arn:aws-cn:sts::111122223333:assumed-role/...`.
fn partition_of_arn(arn: &str) -> Option<&str> {
    let mut fields = arn.split(':');
    (fields.next() == Some("arn"))
        .then(|| fields.next())
        .flatten()
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{partition_of_arn, validate_region};

    #[test]
    fn the_partition_is_the_callers() {
        assert_eq!(
            partition_of_arn("arn:aws-cn:sts::111122223333:assumed-role/r/s"),
            Some("aws-cn")
        );
        assert_eq!(
            partition_of_arn("arn:aws:iam::111122223333:user/u"),
            Some("aws")
        );
        assert_eq!(partition_of_arn("nonsense"), None);
        assert_eq!(partition_of_arn("arn::iam::1:user/u"), None);
    }

    #[test]
    fn region_shapes() {
        for ok in [
            "us-east-1",
            "ap-southeast-4",
            "us-gov-west-1",
            "eu-central-2",
        ] {
            assert!(validate_region(ok).is_ok(), "{ok}");
        }
        for bad in ["", "us-east", "useast1", "US-EAST-1", "us-east-1a", "mars"] {
            assert!(validate_region(bad).is_err(), "{bad}");
        }
    }
}

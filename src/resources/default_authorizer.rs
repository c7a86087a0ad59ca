//! The account's default authorizer: the one IoT calls when a device's username names none.
//! There is one per account and region, so another tool's default is never replaced silently.

use anyhow::Result;
use aws_sdk_iot::Client;

use crate::error::AwsResultExt;

/// The name of the account's default authorizer, if one is set.
pub async fn read(iot: &Client) -> Result<Option<String>> {
    match iot.describe_default_authorizer().send().await {
        Ok(out) => Ok(out
            .authorizer_description()
            .and_then(|d| d.authorizer_name())
            .map(str::to_owned)),
        // AWS answers 404 when no default is set (aws-facts.md §1).
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).aws("iot:DescribeDefaultAuthorizer"),
    }
}

/// Makes `name` the default. When another is set, it is cleared first (AWS may refuse to
/// overwrite a default, aws-facts.md §1).
pub async fn set(iot: &Client, name: &str, current: Option<&str>) -> Result<()> {
    if current.is_some_and(|c| c != name) {
        clear(iot).await?;
    }
    iot.set_default_authorizer()
        .authorizer_name(name)
        .send()
        .await
        .aws("iot:SetDefaultAuthorizer")?;
    Ok(())
}

pub async fn clear(iot: &Client) -> Result<()> {
    match iot.clear_default_authorizer().send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(e).aws("iot:ClearDefaultAuthorizer"),
    }
}

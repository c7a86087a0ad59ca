//! The account's ATS data endpoint: where devices connect (port 443, ALPN `mqtt`).

use anyhow::{Context as _, Result};
use aws_sdk_iot::Client;

use crate::error::AwsResultExt;

pub const PORT: u16 = 443;
pub const ALPN: &str = "mqtt";

/// Always `iot:Data-ATS`: the legacy `iot:Data` endpoint serves a Symantec certificate that
/// current trust stores reject.
pub async fn read(iot: &Client) -> Result<String> {
    let out = iot
        .describe_endpoint()
        .endpoint_type("iot:Data-ATS")
        .send()
        .await
        .aws("iot:DescribeEndpoint")?;
    out.endpoint_address()
        .map(str::to_owned)
        .context("DescribeEndpoint returned no address")
}

/// The MQTT username a device sends: plain when our authorizer is the default, otherwise with the
/// authorizer's name as a query (URL-encoded, and never a second `?`).
pub fn username(user: &str, authorizer: Option<&str>) -> String {
    match authorizer {
        None => user.to_string(),
        Some(name) => {
            let sep = if user.contains('?') { '&' } else { '?' };
            format!(
                "{user}{sep}x-amz-customauthorizer-name={}",
                urlencoding::encode(name)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::username;

    #[test]
    fn usernames() {
        assert_eq!(username("s1", None), "s1");
        assert_eq!(
            username("s1", Some("my auth")),
            "s1?x-amz-customauthorizer-name=my%20auth"
        );
        assert_eq!(
            username("s1?SDK=x", Some("a")),
            "s1?SDK=x&x-amz-customauthorizer-name=a"
        );
    }
}

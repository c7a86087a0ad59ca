//! Errors as the user sees them: the whole cause chain, a remedy where one is known, and the
//! exit code. AWS errors are classified by their error code, never by their `Display` text
//! (`SdkError`'s `Display` is just "service error").

use std::fmt;

use aws_sdk_iot::error::ProvideErrorMetadata;
use aws_sdk_iot::error::SdkError;

/// Process exit codes, documented in README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNHEALTHY: u8 = 3;
}

/// An error we understand: what went wrong and what to do about it.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub remedy: Option<String>,
    /// Bad input (flags, config, names): exit code 2 rather than 1.
    pub usage: bool,
}

impl Failure {
    pub fn new(message: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            remedy: Some(remedy.into()),
            usage: false,
        }
    }

    pub fn usage(message: impl Into<String>, remedy: impl Into<String>) -> Self {
        Self {
            usage: true,
            ..Self::new(message, remedy)
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Error codes AWS uses when the caller lacks an IAM permission.
const ACCESS_DENIED: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedException",
    "UnauthorizedOperation",
];

/// True for the error codes AWS uses when the caller lacks an IAM permission.
pub fn is_access_denied(code: Option<&str>) -> bool {
    code.is_some_and(|c| ACCESS_DENIED.contains(&c))
}

/// Error codes AWS uses when the credentials themselves are bad.
const BAD_CREDENTIALS: &[&str] = &[
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
];

/// Turns an SDK error into a readable error that names the AWS action that failed and, where
/// possible, how to fix it.
fn aws_error<E, R>(err: SdkError<E, R>, action: &str) -> anyhow::Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            let message = inner.message().unwrap_or("no message").to_string();
            let code = inner.code().unwrap_or("Unknown").to_string();
            if ACCESS_DENIED.contains(&code.as_str()) {
                return Failure::new(
                    format!("AWS denied {action}: {message}"),
                    format!(
                        "grant `{action}` to the identity running this command \
                         (`iot-custom-auth iam-policy` prints the whole least-privilege policy)"
                    ),
                )
                .into();
            }
            if BAD_CREDENTIALS.contains(&code.as_str()) {
                return Failure::new(
                    format!("AWS rejected the credentials ({code}): {message}"),
                    "refresh or fix your AWS credentials (aws sso login, AWS_PROFILE, \
                     AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
                )
                .into();
            }
            anyhow::anyhow!("{action} failed: {code}: {message}")
        }
        SdkError::DispatchFailure(dispatch) => {
            if let Some(cred) =
                find_source::<aws_credential_types::provider::error::CredentialsError>(&err)
            {
                // The provider chain's text lists every source it tried, one per line: useful
                // with -v, noise otherwise.
                tracing::debug!("credentials: {}", source_chain(cred));
                return Failure::new(
                    "no usable AWS credentials found (tried the environment, profiles, web \
                     identity, ECS and EC2 instance metadata)",
                    "configure credentials (aws configure, aws sso login, AWS_PROFILE, or \
                     AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); to see the whole flow without an \
                     AWS account, run `iot-custom-auth demo`",
                )
                .into();
            }
            let why = if dispatch.is_timeout() {
                "timed out".to_string()
            } else {
                source_chain(&err)
            };
            Failure::new(
                format!("could not reach AWS for {action}: {why}"),
                "check the network, the region and --endpoint-url / AWS_ENDPOINT_URL",
            )
            .into()
        }
        SdkError::TimeoutError(_) => {
            Failure::new(format!("{action} timed out"), "check the network and retry").into()
        }
        _ => anyhow::anyhow!("{action} failed: {}", source_chain(&err)),
    }
}

/// Adds `.aws("service:Action")` to SDK results.
pub trait AwsResultExt<T> {
    fn aws(self, action: &str) -> anyhow::Result<T>;
}

impl<T, E, R> AwsResultExt<T> for Result<T, SdkError<E, R>>
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    fn aws(self, action: &str) -> anyhow::Result<T> {
        self.map_err(|e| aws_error(e, action))
    }
}

fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// "a: b: c" from an error and its sources, skipping repeats (the SDK nests the same text).
fn source_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Prints an error for the user on stderr: the chain of causes, then the remedy.
pub fn report(err: &anyhow::Error) -> u8 {
    let mut chain = err.chain().map(|e| e.to_string()).collect::<Vec<_>>();
    chain.dedup();
    eprintln!("error: {}", chain.join(": "));
    let failure = err.chain().find_map(|e| e.downcast_ref::<Failure>());
    if let Some(remedy) = failure.and_then(|f| f.remedy.as_deref()) {
        eprintln!("hint: {remedy}");
    }
    if failure.is_some_and(|f| f.usage) {
        exit::USAGE
    } else {
        exit::ERROR
    }
}

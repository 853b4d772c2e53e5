//! The signing secret, read once at cold start from AWS Secrets Manager.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use secrecy::SecretString;

/// Why the secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("Secrets Manager GetSecretValue for {arn} failed: {detail}")]
    Fetch { arn: String, detail: String },
    #[error("secret {arn} has no string value (binary secrets are not supported)")]
    NotAString { arn: String },
    #[error("secret {arn} is empty")]
    Empty { arn: String },
}

/// Reads the secret's string value through `aws-config`'s default chain (environment, profile,
/// container or instance credentials; `AWS_ENDPOINT_URL` and `AWS_REGION` are honoured).
pub async fn fetch(arn: &str, timeout: Duration) -> Result<SecretString, SecretError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(timeout.min(Duration::from_secs(1)))
        .operation_timeout(timeout)
        .build();
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretError::Fetch {
            arn: arn.to_owned(),
            detail: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
        })?;
    let value = out.secret_string().ok_or_else(|| SecretError::NotAString {
        arn: arn.to_owned(),
    })?;
    let value = value.trim();
    if value.is_empty() {
        return Err(SecretError::Empty {
            arn: arn.to_owned(),
        });
    }
    Ok(SecretString::from(value.to_owned()))
}

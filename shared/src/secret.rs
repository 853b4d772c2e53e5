//! A secret from the environment or from AWS Secrets Manager.
//!
//! The reader (feature `secrets-manager`) bounds connecting and the whole call, so a service
//! whose secret cannot be read fails at start instead of hanging.

use secrecy::SecretString;

use crate::config::Env;

/// Where a secret comes from.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// Given directly in the environment.
    Plain(SecretString),
    /// Read once at start from AWS Secrets Manager.
    SecretsManager {
        /// The secret's ARN.
        arn: String,
    },
}

impl Env {
    /// Exactly one of `plain` (the secret) and `arn_var` (its Secrets Manager ARN).
    pub fn secret_source(&mut self, plain: &str, arn_var: &str) -> Option<SecretSource> {
        let value = self.secret(plain);
        let arn = self.raw(arn_var).map(|a| a.trim().to_owned());
        match (value, arn) {
            (Some(s), None) => Some(SecretSource::Plain(s)),
            (None, Some(arn)) if arn.starts_with("arn:") => {
                Some(SecretSource::SecretsManager { arn })
            }
            (None, Some(arn)) => {
                let arn = arn.chars().take(80).collect::<String>();
                self.problem(format!(
                    "{arn_var}: expected an ARN (arn:aws:secretsmanager:…), got {arn:?}"
                ));
                None
            }
            (Some(_), Some(_)) => {
                self.problem(format!("set one of {plain} and {arn_var}, not both"));
                None
            }
            (None, None) => {
                self.problem(format!(
                    "{plain} or {arn_var} is required but neither is set"
                ));
                None
            }
        }
    }
}

#[cfg(feature = "secrets-manager")]
pub use reader::{SecretError, fetch, read, sdk_config};

#[cfg(feature = "secrets-manager")]
mod reader {
    use std::time::Duration;

    use aws_config::BehaviorVersion;
    use aws_config::timeout::TimeoutConfig;
    use secrecy::SecretString;

    use super::SecretSource;

    /// Longest wait for a connection to Secrets Manager.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

    /// Why a secret could not be read.
    #[derive(Debug, thiserror::Error)]
    pub enum SecretError {
        /// Secrets Manager refused, timed out or could not be reached.
        #[error("Secrets Manager GetSecretValue for {arn} failed: {detail}")]
        Fetch { arn: String, detail: String },
        /// The secret has no usable string value.
        #[error("secret {arn} is empty or holds no string value")]
        Empty { arn: String },
    }

    /// The AWS configuration from the environment (`AWS_REGION`, credentials,
    /// `AWS_ENDPOINT_URL`, …) with connect and operation timeouts; `timeout` bounds the call.
    pub fn sdk_config(timeout: Duration) -> aws_config::ConfigLoader {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(timeout.min(CONNECT_TIMEOUT))
            .operation_timeout(timeout)
            .build();
        aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts)
    }

    /// Resolves `source`; a JSON object's first present member of `json_keys` is the secret,
    /// else the whole string is.
    pub async fn read(
        source: &SecretSource,
        timeout: Duration,
        json_keys: &[&str],
    ) -> Result<SecretString, SecretError> {
        match source {
            SecretSource::Plain(s) => Ok(s.clone()),
            SecretSource::SecretsManager { arn } => {
                let sdk = sdk_config(timeout).load().await;
                let client = aws_sdk_secretsmanager::Client::new(&sdk);
                fetch(&client, arn, json_keys).await
            }
        }
    }

    /// Reads one secret through `client` (see [`read`] for `json_keys`).
    pub async fn fetch(
        client: &aws_sdk_secretsmanager::Client,
        arn: &str,
        json_keys: &[&str],
    ) -> Result<SecretString, SecretError> {
        let out = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| SecretError::Fetch {
                arn: arn.to_owned(),
                detail: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
            })?;
        let raw = out.secret_string().unwrap_or_default().trim();
        let value = match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(map)) if !json_keys.is_empty() => json_keys
                .iter()
                .find_map(|k| map.get(*k).and_then(|v| v.as_str()))
                .unwrap_or_default()
                .trim()
                .to_owned(),
            _ => raw.to_owned(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty {
                arn: arn.to_owned(),
            });
        }
        Ok(SecretString::from(value))
    }
}

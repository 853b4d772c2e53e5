//! The Slack bot token: given directly, or read once at start from AWS Secrets Manager.

use secrecy::SecretString;

use crate::config::TokenSource;

/// Why the token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager refused or could not be reached.
    #[error("reading secret {arn} from Secrets Manager")]
    Fetch {
        arn: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The secret exists but holds no usable token.
    #[error("secret {arn} holds no token (expected a string, or JSON with SLACK_BOT_TOKEN)")]
    Empty { arn: String },
}

/// Resolves the token, loading the AWS configuration from the environment (`AWS_REGION`,
/// credentials, `AWS_ENDPOINT_URL`, …) only when it is needed.
pub async fn bot_token(source: &TokenSource) -> Result<SecretString, SecretError> {
    match source {
        TokenSource::Literal(t) => Ok(t.clone()),
        TokenSource::SecretsManager { arn } => {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            from_secrets_manager(&aws_sdk_secretsmanager::Client::new(&sdk), arn).await
        }
    }
}

/// Reads the token from one secret: its plain string, or the `SLACK_BOT_TOKEN` (or `token`)
/// member of a JSON object.
pub async fn from_secrets_manager(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<SecretString, SecretError> {
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretError::Fetch {
            arn: arn.to_owned(),
            source: aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                .to_string()
                .into(),
        })?;
    let raw = out.secret_string().unwrap_or_default().trim();
    let token = match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(map)) => ["SLACK_BOT_TOKEN", "token"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()))
            .unwrap_or_default()
            .trim()
            .to_owned(),
        _ => raw.to_owned(),
    };
    if token.is_empty() {
        return Err(SecretError::Empty {
            arn: arn.to_owned(),
        });
    }
    Ok(SecretString::from(token))
}

//! The Secrets Manager reader's bounds: an endpoint that never answers fails within the timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use airlock_shared::secret;
use aws_sdk_secretsmanager::config::{Credentials, Region};

#[tokio::test]
async fn a_silent_secrets_manager_fails_within_the_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let sdk = secret::sdk_config(Duration::from_millis(500))
        .endpoint_url(format!("http://{addr}"))
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .load()
        .await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let started = Instant::now();
    let err = secret::fetch(&client, "arn:aws:secretsmanager:us-east-1:1:secret:x", &[])
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, secret::SecretError::Fetch { .. }), "{err}");
}

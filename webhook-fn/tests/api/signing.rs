//! Signature verification, body limits and header handling.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use airlock_shared::TicketStatus;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webhook_fn::actions::MAX_BODY_BYTES;
use webhook_fn::signature::{self, SignatureError, Verifier};

use crate::helpers::*;

const SLACK_DOC_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_DOC_TS: &str = "1531420618";
const SLACK_DOC_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_DOC_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

#[test]
fn slacks_published_example_verifies() {
    assert_eq!(
        signature::sign(SLACK_DOC_SECRET, SLACK_DOC_TS, SLACK_DOC_BODY.as_bytes()),
        SLACK_DOC_SIG
    );
    let v = Verifier::new(SecretString::from(SLACK_DOC_SECRET));
    let now = SLACK_DOC_TS.parse::<i64>().unwrap();
    assert_eq!(
        v.verify(
            Some(SLACK_DOC_TS.as_bytes()),
            Some(SLACK_DOC_SIG.as_bytes()),
            SLACK_DOC_BODY.as_bytes(),
            now + 10
        ),
        Ok(())
    );
    // The same request a day later is a replay.
    assert!(matches!(
        v.verify(
            Some(SLACK_DOC_TS.as_bytes()),
            Some(SLACK_DOC_SIG.as_bytes()),
            SLACK_DOC_BODY.as_bytes(),
            now + 86_400
        ),
        Err(SignatureError::Stale { .. })
    ));
}

fn python(script: &str, args: &[String], stdin: &[u8]) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed (is slack-sdk installed? pip install slack-sdk): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The official slack-sdk signs; we verify. We sign; slack-sdk verifies.
#[tokio::test]
async fn agrees_with_the_official_slack_sdk() {
    let app = spawn_app().await;
    let script = r#"
import sys, time
from slack_sdk.signature import SignatureVerifier
secret, mode, ts = sys.argv[1], sys.argv[2], sys.argv[3]
body = sys.stdin.buffer.read().decode("utf-8")
v = SignatureVerifier(secret)
if mode == "sign":
    print(v.generate_signature(timestamp=ts, body=body))
else:
    sig = sys.argv[4]
    print(v.is_valid(body=body, timestamp=ts, signature=sig))
"#;
    let run_with = |secret: &str, mode: &str, ts: &str, sig: Option<&str>, body: &[u8]| {
        let mut args = vec![secret.to_owned(), mode.to_owned(), ts.to_owned()];
        args.extend(sig.map(str::to_owned));
        python(script, &args, body)
    };
    let run = |mode: &str, ts: &str, sig: Option<&str>, body: &[u8]| {
        run_with(SECRET, mode, ts, sig, body)
    };

    // Slack's doc example, through slack-sdk.
    let sdk_sig = run_with(
        SLACK_DOC_SECRET,
        "sign",
        SLACK_DOC_TS,
        None,
        SLACK_DOC_BODY.as_bytes(),
    );
    assert_eq!(sdk_sig, SLACK_DOC_SIG);

    for user in ["ana", "ana+bob%41 %zz", "Ünïcødé ✓"] {
        let id = app.open_ticket(&[], Duration::from_secs(60)).await;
        let body = approve_body(id, user);
        let ts = unix_now().to_string();
        let sdk_sig = run("sign", &ts, None, &body);
        assert_eq!(sdk_sig, signature::sign(SECRET, &ts, &body));
        let resp = app.post_raw(body.clone(), Some(&ts), Some(&sdk_sig)).await;
        assert_eq!(resp.status(), 200);
        let t = app.ticket(id).await;
        assert_eq!(t.status, TicketStatus::Approved);
        assert_eq!(t.decided_by_name.as_deref(), Some(user));

        // And slack-sdk accepts what we produce, and rejects a tampered one.
        let ours = signature::sign(SECRET, &ts, &body);
        assert_eq!(run("verify", &ts, Some(&ours), &body), "True");
        let mut tampered = body.clone();
        tampered.push(b'x');
        assert_eq!(run("verify", &ts, Some(&ours), &tampered), "False");
    }
}

fn flip(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[i] ^= 0x01;
    b
}

/// Every single-byte change to body, timestamp or signature is refused, and changes nothing.
#[tokio::test]
async fn every_single_byte_change_is_rejected() {
    let app = spawn_app().await;
    let mut signals = Signals::subscribe(&app.redis).await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let body = approve_body(id, "U1");
    let ts = unix_now().to_string();
    let sig = signature::sign(SECRET, &ts, &body);
    let mut tried = 0;
    for i in 0..body.len() {
        let resp = app.post_raw(flip(&body, i), Some(&ts), Some(&sig)).await;
        assert_eq!(resp.status(), 400, "body byte {i}");
        tried += 1;
    }
    for i in 0..ts.len() {
        let t = String::from_utf8(flip(ts.as_bytes(), i)).unwrap();
        let resp = app.post_raw(body.clone(), Some(&t), Some(&sig)).await;
        assert_eq!(resp.status(), 400, "timestamp byte {i}: {t}");
        tried += 1;
    }
    for i in 0..sig.len() {
        let s = String::from_utf8(flip(sig.as_bytes(), i)).unwrap();
        let resp = app.post_raw(body.clone(), Some(&ts), Some(&s)).await;
        assert_eq!(resp.status(), 400, "signature byte {i}: {s}");
        tried += 1;
    }
    // Truncated and extended signatures too.
    for s in [
        &sig[..sig.len() - 1],
        &format!("{sig}0"),
        "",
        "v0=",
        &sig[3..],
    ] {
        assert_eq!(
            app.post_raw(body.clone(), Some(&ts), Some(s))
                .await
                .status(),
            400,
            "{s:?}"
        );
    }
    assert!(tried > 1000, "only {tried} variants");
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert!(app.jobs().await.is_empty());
    assert!(signals.drain(Duration::from_millis(100)).await.is_empty());
    assert!(app.metrics().await.contains(&format!(
        "airlock_webhook_requests_total{{outcome=\"bad_signature\"}} {}",
        tried + 5
    )));

    // The untouched request still works: the rejections were about the changes.
    assert_eq!(
        app.post_raw(body, Some(&ts), Some(&sig)).await.status(),
        200
    );
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
}

#[tokio::test]
async fn stale_future_and_missing_headers_are_rejected() {
    let app = spawn_app().await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let body = approve_body(id, "U1");
    let now = unix_now();
    for offset in [-301_i64, 301, -3600, 86_400] {
        let ts = (now + offset).to_string();
        let sig = signature::sign(SECRET, &ts, &body);
        let resp = app.post_raw(body.clone(), Some(&ts), Some(&sig)).await;
        assert_eq!(resp.status(), 400, "offset {offset}");
    }
    let ts = now.to_string();
    let sig = signature::sign(SECRET, &ts, &body);
    assert_eq!(
        app.post_raw(body.clone(), None, Some(&sig)).await.status(),
        400
    );
    assert_eq!(
        app.post_raw(body.clone(), Some(&ts), None).await.status(),
        400
    );
    assert_eq!(app.post_raw(body.clone(), None, None).await.status(), 400);
    // Signed with another secret.
    let other = signature::sign("another-secret", &ts, &body);
    assert_eq!(
        app.post_raw(body.clone(), Some(&ts), Some(&other))
            .await
            .status(),
        400
    );
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    assert!(app.jobs().await.is_empty());

    // Within the window (either direction) is fine.
    let ts = (now + 250).to_string();
    let sig = signature::sign(SECRET, &ts, &body);
    assert_eq!(
        app.post_raw(body, Some(&ts), Some(&sig)).await.status(),
        200
    );
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
}

#[tokio::test]
async fn bodies_up_to_64kib_pass_and_larger_get_413() {
    let app = spawn_app().await;
    let id = app.open_ticket(&[], Duration::from_secs(600)).await;
    let mut body = approve_body(id, "U1");
    body.extend_from_slice(b"&pad=");
    // One byte over the limit, declared with Content-Length.
    let mut over = body.clone();
    over.resize(MAX_BODY_BYTES + 1, b'a');
    assert_eq!(app.post_signed(over).await.status(), 413);
    assert_eq!(app.ticket(id).await.status, TicketStatus::Pending);
    // Exactly at the limit is read, verified and acted on.
    body.resize(MAX_BODY_BYTES, b'a');
    assert_eq!(app.post_signed(body).await.status(), 200);
    assert_eq!(app.ticket(id).await.status, TicketStatus::Approved);
}

async fn raw_exchange(app: &TestApp, head: &str, body_chunks: impl FnOnce() -> Vec<u8>) -> String {
    let mut sock = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    // A write error is fine: the server may close once it has answered.
    let _ = sock.write_all(&body_chunks()).await;
    let mut buf = vec![0_u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
        .await
        .expect("the server answers without waiting for the body to end")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A body that never ends is cut off at the limit, not buffered.
#[tokio::test]
async fn endless_chunked_and_oversized_declared_bodies_get_413_without_reading_them() {
    let app = spawn_app().await;
    let ts = unix_now();
    let head = format!(
        "POST /slack/actions HTTP/1.1\r\nhost: x\r\nx-slack-request-timestamp: {ts}\r\n\
         x-slack-signature: v0=00\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    let answer = raw_exchange(&app, &head, || {
        let chunk = vec![b'a'; 8192];
        let mut out = Vec::new();
        // 80 KiB of chunks and no terminating chunk: the body never ends.
        for _ in 0..10 {
            out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(&chunk);
            out.extend_from_slice(b"\r\n");
        }
        out
    })
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // Declared 100 MiB, nothing sent: refused on the header alone.
    let head = format!(
        "POST /slack/actions HTTP/1.1\r\nhost: x\r\nx-slack-request-timestamp: {ts}\r\n\
         x-slack-signature: v0=00\r\ncontent-length: 104857600\r\n\r\n"
    );
    let answer = raw_exchange(&app, &head, Vec::new).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

/// A client that stops sending mid-body is cut off, well inside Slack's 3 s.
#[tokio::test]
async fn a_stalled_body_times_out() {
    let app = spawn_app().await;
    let head = "POST /slack/actions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n";
    let started = std::time::Instant::now();
    let answer = raw_exchange(&app, head, || b"payload=".to_vec()).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

//! A person in a browser: headless Chromium, driven over WebDriver (chromedriver), clicks Approve
//! on the emulator's page.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stack::*;

pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// W3C WebDriver's element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub(crate) struct Driver {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) process: tokio::process::Child,
}

impl Driver {
    pub(crate) async fn start() -> Self {
        let chromedriver = which("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver not found: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
        });
        let port = free_port();
        let process = tokio::process::Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            http,
            base,
            process,
        }
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["value"].clone()
    }

    async fn get(&self, path: &str) -> Value {
        let v: Value = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].clone()
    }
}

pub(crate) fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

pub(crate) struct Session<'a> {
    pub(crate) d: &'a Driver,
    pub(crate) id: String,
}

impl Session<'_> {
    pub(crate) async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .d
            .post(
                &format!("/session/{}/elements", self.id),
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v.as_array()?
            .first()?
            .get(ELEMENT)?
            .as_str()
            .map(str::to_owned)
    }

    pub(crate) async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never appeared on the page"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn click(&self, element: &str) {
        self.d
            .post(
                &format!("/session/{}/element/{element}/click", self.id),
                json!({}),
            )
            .await;
    }

    pub(crate) async fn text(&self, element: &str) -> String {
        self.d
            .get(&format!("/session/{}/element/{element}/text", self.id))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_approves_in_a_browser() {
    let s = Stack::start().await;
    let client = s.client().await;
    let peer = client.peer().clone();
    let held = tokio::spawn(async move {
        peer.call_tool(call(
            "create_refund",
            json!({"charge_id": "ch_1003", "amount": 999, "currency": "eur"}),
        ))
        .await
    });
    let msgs = s.wait_messages(1, WAIT).await;
    let ts = msgs[0]["ts"].as_str().unwrap().to_owned();

    let driver = Driver::start().await;
    let id = chromium_session(&driver).await;
    let page = Session {
        d: &driver,
        id: id.clone(),
    };
    driver
        .post(
            &format!("/session/{id}/url"),
            json!({"url": s.emulator_url()}),
        )
        .await;

    // Act as alice (an approver), then click Approve on this message.
    let alice = page
        .wait_for(&format!("#user option[value='{ALICE}']"))
        .await;
    page.click(&alice).await;
    let msg_css = format!(".msg[data-ts='{ts}']");
    let message = page.wait_for(&msg_css).await;
    let before = page.text(&message).await;
    assert!(
        before.contains("create_refund") && before.contains("999"),
        "page shows: {before}"
    );
    let approve = page
        .wait_for(&format!("{msg_css} button[data-action-id='{APPROVE}']"))
        .await;
    page.click(&approve).await;

    let r = tokio::time::timeout(WAIT, held)
        .await
        .expect("the held call completes")
        .unwrap();
    result_json(&r.expect("approved in the browser"));

    // The page updates in place: outcome and decider shown, buttons gone.
    let deadline = Instant::now() + WAIT;
    loop {
        let el = page.find(&msg_css).await;
        let text = match &el {
            Some(e) => page.text(e).await,
            None => String::new(),
        };
        let buttons = page.find(&format!("{msg_css} button")).await;
        if text.contains("Approved") && text.contains("@alice") && buttons.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed the approval: {text}\n{}",
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = driver
        .http
        .delete(format!("{}/session/{id}", driver.base))
        .send()
        .await;
    drop(driver.process);
}

/// A new headless Chromium session on `driver`; its WebDriver session id.
pub(crate) async fn chromium_session(driver: &Driver) -> String {
    let chromium = which("chromium")
        .or_else(|| which("chromium-browser"))
        .expect("chromium installed");
    let session = driver
        .post(
            "/session",
            json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"],
            }}}}),
        )
        .await;
    session["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
        .to_owned()
}

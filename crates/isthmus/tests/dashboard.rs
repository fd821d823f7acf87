//! The admin dashboard in a real browser: headless Chromium driven through chromedriver's
//! WebDriver protocol (plain HTTP + JSON, no client crate). The page must load without console
//! errors, show the configured hosts, routes, clusters (with an ejected endpoint) and
//! diagnostics, and its charts must move while traffic flows. A screenshot is saved to
//! `target/dashboard.png` (the first screen at 1366x768) and `target/dashboard-full.png`.
//!
//! Without Chromium (packages `chromium` and `chromium-driver`) the test is skipped, except in
//! CI (`CI` set), where it fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use support::*;
use tokio::time::Instant;

/// Starting a browser on a loaded 2-core machine can take a while; still bounded.
const BROWSER_WAIT: Duration = Duration::from_secs(60);
/// What the page shows after a few polls (every 1 to 2 s).
const PAGE_WAIT: Duration = Duration::from_secs(20);

fn find(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver on a free port of 127.0.0.1, killed when dropped.
struct Driver {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(chromedriver: &Path) -> Result<Driver, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", chromedriver.display()))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(BROWSER_WAIT)
            .build()
            .map_err(|e| e.to_string())?;
        let driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http,
        };
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            let status = driver.call(reqwest::Method::GET, "/status", None).await;
            if status.is_ok_and(|v| v["ready"] == true) {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One WebDriver command; its `value`, or the error it reports.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| format!("{path}: {e}"))?;
        let text = resp.text().await.map_err(|e| format!("{path}: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))?;
        match v["value"].get("error") {
            Some(e) => Err(format!("{path}: {e}: {}", v["value"]["message"])),
            None => Ok(v["value"].clone()),
        }
    }
}

struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

impl<'a> Session<'a> {
    async fn new(driver: &'a Driver, chromium: &Path) -> Result<Session<'a>, String> {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1366,768",
                         "--force-device-scale-factor=1", "--no-first-run"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let v = driver
            .call(reqwest::Method::POST, "/session", Some(caps))
            .await?;
        let id = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {v}"))?;
        Ok(Session {
            driver,
            id: id.to_string(),
        })
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value, String> {
        let body = (method != reqwest::Method::GET).then_some(body);
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
            .await
    }

    async fn script(&self, script: &str) -> Result<Value, String> {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }

    /// Runs `script` until it returns true, for at most `limit`.
    async fn wait_for(&self, what: &str, script: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if self.script(script).await? == Value::Bool(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let text = self.script("return document.body.innerText").await?;
                return Err(format!(
                    "timed out waiting for {what}; page text:\n{}",
                    text.as_str().unwrap_or("")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The browser log (console messages, script errors, failed loads) since the last call.
    async fn browser_log(&self) -> Result<Vec<Value>, String> {
        let v = self
            .cmd(reqwest::Method::POST, "/se/log", json!({"type": "browser"}))
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    async fn quit(self) {
        let _ = self
            .driver
            .call(
                reqwest::Method::DELETE,
                &format!("/session/{}", self.id),
                None,
            )
            .await;
    }
}

fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join(name)
}

/// Two hosts over two services, one endpoint of which always fails (and gets ejected), and a
/// VirtualService with a field Isthmus does not know (a warning with its line).
async fn start_gateway() -> (Gateway, Vec<Recorder>) {
    let good = recording_backend("good", |_| Answer::ok()).await;
    let bad = recording_backend("bad", |_| Answer::status(503)).await;
    let api = recording_backend("api", |s| {
        if s.path.ends_with("/fail") {
            Answer::status(500)
        } else {
            Answer::ok().after(Duration::from_millis(5))
        }
    })
    .await;
    let vs = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com, api.example.com]
  gateways: [gw]
  unknownSetting: true
  http:
  - name: api
    match: [{authority: {exact: api.example.com}}]
    route: [{destination: {host: api.internal}}]
  - name: web
    match: [{uri: {prefix: /}}]
    route: [{destination: {host: web.internal}}]
";
    let dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.internal
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 100}, http: {http2MaxRequests: 200}}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 50}
";
    let g = Gateway::start(&[
        ("gw.yaml", &gateway(&[(80, &["*"])])),
        (
            "web.yaml",
            &service(
                "web",
                "web.internal",
                &[(good.addr, "v1"), (bad.addr, "v1")],
            ),
        ),
        (
            "api.yaml",
            &service("api", "api.internal", &[(api.addr, "v1")]),
        ),
        ("vs.yaml", vs),
        ("dr.yaml", dr),
    ])
    .await;
    (g, vec![good, bad, api])
}

/// Requests to both hosts until aborted, some of which fail.
fn traffic(base: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = client();
        loop {
            for (host, path) in [
                ("shop.example.com", "/"),
                ("shop.example.com", "/cart"),
                ("api.example.com", "/items"),
                ("api.example.com", "/fail"),
                ("api.example.com", "/items"),
            ] {
                let _ = c
                    .get(format!("{base}{path}"))
                    .header("host", host)
                    .send()
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    })
}

#[tokio::test]
async fn dashboard_in_headless_chromium() {
    let chromium = find("CHROME", &["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = find("CHROMEDRIVER", &["chromedriver"]);
    let (Some(chromium), Some(chromedriver)) = (chromium, chromedriver) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the dashboard test: apt-get install chromium chromium-driver"
        );
        eprintln!("SKIPPED: chromium and chromedriver are not installed");
        return;
    };
    let (g, _backends) = start_gateway().await;
    let driver = Driver::start(&chromedriver).await.unwrap();
    let session = Session::new(&driver, &chromium).await.unwrap();
    let base = g.url(80, "").await;
    let load = traffic(base);
    let outcome = drive(&session, &g).await;
    load.abort();
    let log = session.browser_log().await;
    session.quit().await;
    let (text, screenshot) = outcome.unwrap();
    let log = log.unwrap();
    for entry in &log {
        eprintln!("browser: {entry}");
    }
    let errors: Vec<&Value> = log.iter().filter(|e| e["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    eprintln!("screenshot: {}", screenshot.display());
    for needle in [
        "shop.example.com",
        "api.example.com",
        "Port 80",
        "authority exact",
        "web.internal:80",
        "api.internal:80",
        "round_robin",
        "ejected",
        "unknownSetting",
        "vs.yaml:7",
    ] {
        assert!(text.contains(needle), "the page shows {needle:?}:\n{text}");
    }
}

/// Loads the page, waits for its content and moving charts, and saves a screenshot. Returns
/// the page text and the screenshot's path.
async fn drive(s: &Session<'_>, g: &Gateway) -> Result<(String, PathBuf), String> {
    s.cmd(
        reqwest::Method::POST,
        "/url",
        json!({"url": format!("http://{}/", g.admin)}),
    )
    .await?;
    s.wait_for(
        "the page to load",
        "return document.body.dataset.loaded === 'true'",
        BROWSER_WAIT,
    )
    .await?;
    s.wait_for(
        "hosts and routes",
        "return !!document.querySelector('[data-host=\"shop.example.com\"]') && document.body.innerText.includes('web.internal')",
        WAIT,
    )
    .await?;
    s.wait_for(
        "requests per second above 0",
        "return Number(document.getElementById('rps-now').dataset.value) > 0",
        PAGE_WAIT,
    )
    .await?;
    s.wait_for(
        "the ejected endpoint",
        "return !!document.querySelector('tr[data-health=\"ejected\"]')",
        PAGE_WAIT,
    )
    .await?;
    // A few more samples so that the charts show lines, not dots.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let inked = s
        .script(
            "const c = document.getElementById('chart-rps');
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
             return n;",
        )
        .await?;
    if inked.as_u64().unwrap_or(0) < 500 {
        return Err(format!(
            "the requests chart is nearly blank: {inked} pixels"
        ));
    }
    let path = save_screenshot(s, "dashboard.png").await?;
    // The whole page too, as a taller window shows it.
    s.cmd(
        reqwest::Method::POST,
        "/window/rect",
        json!({"width": 1366, "height": 2000}),
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    save_screenshot(s, "dashboard-full.png").await?;
    let text = s.script("return document.body.innerText").await?;
    Ok((text.as_str().unwrap_or("").to_string(), path))
}

async fn save_screenshot(s: &Session<'_>, name: &str) -> Result<PathBuf, String> {
    let png = s
        .cmd(reqwest::Method::GET, "/screenshot", Value::Null)
        .await?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap_or(""))
        .map_err(|e| e.to_string())?;
    let path = artifact(name);
    std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

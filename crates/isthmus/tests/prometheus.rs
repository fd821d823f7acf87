//! A real Prometheus server scrapes the gateway's admin port and answers the query Istio's
//! dashboards are built on. Needs the `prometheus` binary (Debian package `prometheus`); the
//! test is skipped without it, except under CI (`CI` set), where it must run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;
use tokio::time::Instant;

/// The whole test stays well under a minute.
const DEADLINE: Duration = Duration::from_secs(45);
const QUERY: &str = "sum(rate(istio_requests_total[1m])) by (response_code)";

fn prometheus_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join("prometheus"))
        .find(|p| p.is_file())
}

/// The Prometheus process, stopped when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port of 127.0.0.1 free right now (Prometheus cannot report a port 0 it picked).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(bin: &PathBuf, dir: &tempfile::TempDir, target: &str) -> (Server, String) {
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: isthmus\n  \
               metrics_path: /stats/prometheus\n  \
               static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Server(child), format!("http://{listen}"))
}

/// GETs `url` as JSON, or `None` while the server is not answering.
async fn get_json(url: &str) -> Option<serde_json::Value> {
    let resp = client().get(url).send().await.ok()?;
    serde_json::from_str(&resp.text().await.ok()?).ok()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_istio_requests() {
    let Some(bin) = prometheus_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the prometheus binary is required under CI (apt-get install prometheus)"
        );
        eprintln!("skipped: no prometheus binary on PATH");
        return;
    };
    let deadline = Instant::now() + DEADLINE;
    let b = backend("v1").await;
    let g = Gateway::start(&[
        ("gw.yaml", &gateway(&[(80, &["*"])])),
        (
            "svc.yaml",
            &service("httpbin", "httpbin.local", &[(b, "v1")]),
        ),
        (
            "vs.yaml",
            &virtual_service(
                "vs",
                "default",
                &["shop.example.com"],
                &["gw"],
                &http_routes(&[("", "httpbin.local")]),
            ),
        ),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, api) = start_prometheus(&bin, &dir, &g.admin.to_string());
    let url = format!("{}/get", g.url(80, "").await);
    let query = format!(
        "{api}/api/v1/query?query={}",
        QUERY
            .replace(' ', "%20")
            .replace('(', "%28")
            .replace(')', "%29")
            .replace('[', "%5B")
            .replace(']', "%5D")
    );
    // Traffic while Prometheus scrapes, until the 200s show up in the query's answer.
    loop {
        assert_eq!(get(&url, "shop.example.com", &[]).await.status, 200);
        if let Some(answer) = get_json(&query).await {
            let result = answer["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ok = result
                .iter()
                .find(|r| r["metric"]["response_code"] == "200");
            if let Some(r) = ok {
                let rate: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
                assert!(rate > 0.0, "{answer:#}");
                return;
            }
        }
        if Instant::now() > deadline {
            let targets = get_json(&format!("{api}/api/v1/targets")).await;
            panic!("no 200 series from Prometheus in time; targets: {targets:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

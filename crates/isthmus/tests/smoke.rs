//! The quickstart path end to end: a Gateway, a VirtualService and a ServiceEntry served to a
//! real client, over HTTP/1.1 and h2c.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use support::*;

#[tokio::test]
async fn serves_a_route_over_http1_and_h2c() {
    let b = backend("v1").await;
    let vs = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [gw]
  http:
  - route: [{destination: {host: httpbin.local}}]
";
    let g = Gateway::start(&[
        ("gw.yaml", &gateway(&[(80, &["*"])])),
        (
            "svc.yaml",
            &service("httpbin", "httpbin.local", &[(b, "v1")]),
        ),
        ("vs.yaml", vs),
    ])
    .await;
    let url = g.url(80, "/status/200").await;
    let r = get(&url, "httpbin.example.com", &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("v1"));
    assert_eq!(r.header("server"), Some("istio-envoy"));
    assert!(r.header("x-envoy-upstream-service-time").is_some());

    // Over HTTP/2 the host travels in :authority, taken from the URL.
    let addr = g.addr(80).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve("httpbin.example.com", addr)
        .build()
        .unwrap()
        .get(format!("http://httpbin.example.com:{}/get", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(h2.version(), reqwest::Version::HTTP_2);
    let h2 = Reply::from(h2).await;
    assert_eq!(h2.status, 200);
    assert_eq!(
        h2.json()["headers"]["host"],
        format!("httpbin.example.com:{}", addr.port())
    );
}

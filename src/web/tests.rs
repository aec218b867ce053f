//! The handlers, driven through the router with a real store and hostile
//! values where a domain's DNS or a server's certificate put text.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt as _;

use super::*;
use crate::model::Item;
use crate::report::{EndpointReport, EndpointVerdict, Report, Verdict};
use crate::store::{StateStore as _, Store};

const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"'><img src=x onerror=alert(2)>";

fn engine() -> Arc<Engine> {
    let mut config = Config::default();
    config.dns.nameservers = vec!["127.0.0.1:9".into()];
    config.probe.transport = crate::config::Transport::Direct;
    config.xmpp.component = "certwatch.example.org".into();
    Arc::new(Engine::new(config, Store::temporary().unwrap(), crate::clock::system()).unwrap())
}

fn hostile_report(domain: &str) -> Report {
    Report {
        domain: domain.into(),
        checked_at: "2026-12-04T10:00:00Z".into(),
        verdict: Verdict::Mismatch,
        endpoints: vec![EndpointReport {
            service: "xmpp-client".into(),
            host: format!("{SCRIPT}.{domain}"),
            port: 5222,
            address: Some("192.0.2.1".parse().unwrap()),
            tls: "starttls".into(),
            verdict: EndpointVerdict::Mismatch,
            tlsa: vec![format!("3 1 1 {IMG}"), "3 1 1 abcd".into()],
            spki_sha256: Some(format!("{IMG}ff")),
            cert_sha256: None,
            matched: Some("3 1 1 abcd".into()),
            matched_until: None,
            error: Some(format!("certificate 1 (CN={SCRIPT}) {IMG}")),
            tlsa_name: format!("_5222._tcp.{SCRIPT}."),
            tls_version: None,
            cipher: None,
            notes: vec![IMG.into()],
            vantage: vec![],
            confirmed: Some(true),
        }],
        records_to_add: vec![format!("_5222._tcp.{SCRIPT}. IN TLSA 3 1 1 {IMG}")],
        advice: vec![format!("Publish {SCRIPT} first"), IMG.into()],
        transport: "direct".into(),
        errors: vec![SCRIPT.into()],
        bogus_rrsets: vec![IMG.into()],
        evidence: vec![],
        nxdomain: false,
        resolvers: vec![],
        horizons: hostile_horizons(),
        rollover: vec![],
    }
}

/// Horizons whose names and endpoint carry markup (from DNS and certificates).
fn hostile_horizons() -> crate::horizon::Horizons {
    let now = 1_796_378_400; // 2026-12-04T10:00:00Z
    crate::horizon::Horizons {
        zone_keys: Vec::new(),
        rrsets: vec![crate::horizon::RrsetHorizon::new(
            &format!("{SCRIPT}.evil.example"),
            "TLSA",
            IMG,
            300,
            (now + 3600, now + 2 * 86_400),
        )],
        endpoints: vec![crate::horizon::EndpointHorizon {
            endpoint: format!("xmpp-client {SCRIPT}:5222 [192.0.2.1] starttls"),
            not_after: now + 86_400,
            chain_not_after: None,
            counts_for_dane: false,
            usage: None,
            selector: None,
        }],
    }
}

fn app(engine: Arc<Engine>, component: Option<&str>, metrics: bool) -> Router {
    app_behind(engine, component, metrics, vec![])
}

fn app_behind(
    engine: Arc<Engine>,
    component: Option<&str>,
    metrics: bool,
    proxies: Vec<(std::net::IpAddr, u8)>,
) -> Router {
    let settings = Settings {
        listen: "127.0.0.1:8080".parse().unwrap(),
        base_url: "https://cw.example".into(),
        proxies,
        metrics,
        component: component.map(str::to_owned),
    };
    router(Arc::new(Web::new(engine, &settings)))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = req;
    if req.extensions().get::<Peer>().is_none() {
        req.extensions_mut()
            .insert(Peer("127.0.0.1:40000".parse().unwrap()));
    }
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(app: &Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

fn post_check(domain: &str, from: &str) -> Request<Body> {
    let body = format!("domain={}", urlencode(domain));
    let mut req = Request::post("/check")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let peer: SocketAddr = from.parse().unwrap();
    req.extensions_mut().insert(Peer(peer));
    req
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn assert_no_markup_from_data(body: &str) {
    for bad in ["<script>alert", "<img src=x", "onerror=alert(2)>"] {
        assert!(
            !body.contains(bad),
            "{bad} reached the page unescaped:\n{body}"
        );
    }
}

#[tokio::test]
async fn hostile_hostnames_tlsa_and_errors_are_escaped_on_the_domain_page() {
    let engine = engine();
    let store = engine.store();
    store.monitor("evil.example").await.unwrap();
    store
        .put_last_report("evil.example", &hostile_report("evil.example"))
        .await
        .unwrap();
    let item = Item {
        id: "20261204T100000Z-mismatch-00000001".into(),
        title: format!("evil.example: {SCRIPT}"),
        content: IMG.into(),
        updated: "2026-12-04T10:00:00Z".into(),
    };
    store.put_item("evil.example", &item).await.unwrap();
    let app = app(engine, Some("certwatch.example.org"), true);
    let (status, headers, body) = get(&app, "/domain/evil.example").await;
    assert_eq!(status, StatusCode::OK);
    assert_no_markup_from_data(&body);
    // The text is all there, as text (askama writes numeric references).
    assert!(
        body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{body}"
    );
    assert!(
        body.contains("&#34;&#39;&#62;&#60;img src=x onerror=alert(2)&#62;"),
        "{body}"
    );
    assert!(body.contains("ALARM"), "the verdict sentence: {body}");
    assert!(
        body.contains("id=\"horizons\"") && body.contains("valid for only"),
        "what runs out: {body}"
    );
    assert!(body.contains("matched:"), "which record matched: {body}");
    assert!(body
        .contains("href=\"xmpp:certwatch.example.org?pubsub;action=subscribe;node=evil.example\""));
    assert!(
        body.contains("src=\"/domain/evil.example/qr.svg\""),
        "the QR code"
    );
    assert!(body.contains("https://cw.example/domain/evil.example.atom"));
    assert!(body.contains("subscribe evil.example"));
    // Strict headers on every answer.
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
    assert!(!CSP.contains("unsafe-inline"));
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");

    // The feed escapes the same values, and keeps the item's id.
    let (status, _, atom) = get(&app, "/domain/evil.example.atom").await;
    assert_eq!(status, StatusCode::OK);
    assert_no_markup_from_data(&atom);
    assert!(
        atom.contains(&format!(
            "<id>{}</id>",
            super::feed::entry_id(
                "certwatch.example.org",
                "evil.example",
                "20261204T100000Z-mismatch-00000001"
            )
        )),
        "{atom}"
    );
    assert!(atom.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\">"));

    // The JSON is exactly `check --json`'s.
    let (status, headers, json) = get(&app, "/domain/evil.example.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let want = serde_json::to_string_pretty(&hostile_report("evil.example")).unwrap() + "\n";
    assert_eq!(json, want);

    let (status, headers, qr) = get(&app, "/domain/evil.example/qr.svg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
    assert!(qr.starts_with("<svg"), "{qr}");

    let (status, headers, svg) = get(&app, "/domain/evil.example/badge.svg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300");
    assert!(
        svg.starts_with("<svg") && svg.contains("MISMATCH 2026-12-04"),
        "{svg}"
    );
}

#[tokio::test]
async fn the_front_page_lists_no_domains_and_bad_input_gets_the_chat_error() {
    let engine = engine();
    engine
        .store()
        .monitor("secret-customer.example")
        .await
        .unwrap();
    let app = app(engine, None, true);
    let (status, _, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("name=\"domain\"") && body.contains("action=\"/check\""));
    assert!(
        !body.contains("secret-customer"),
        "privacy: no domain listed"
    );

    let (status, _, body) = send(&app, post_check(&format!("a{SCRIPT}"), "127.0.0.1:1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_no_markup_from_data(&body);
    assert!(body.contains("Not a valid domain: "), "{body}");
    assert!(body.contains("name=\"domain\""), "the form again");

    // As in chat, a URL or an XMPP address gives its domain.
    let (status, headers, _) = send(&app, post_check("https://Example.ORG/x", "127.0.0.1:1")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/domain/example.org");

    let (status, _, body) = get(&app, &format!("/domain/{}", urlencode(IMG))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_no_markup_from_data(&body);
}

#[tokio::test]
async fn a_never_checked_domain_offers_a_check_and_web_alone_says_how_to_subscribe() {
    let app = app(engine(), None, true);
    let (status, _, body) = get(&app, "/domain/never.example").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("has not been checked yet") && body.contains("Check now"));
    assert!(body.contains("runs without its XMPP side"), "{body}");
    assert!(!body.contains("xmpp:"), "no subscribe link without XMPP");
    let (status, _, _) = get(&app, "/domain/never.example/qr.svg").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no QR code without XMPP");
    let (status, _, _) = get(&app, "/domain/never.example.json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, atom) = get(&app, "/domain/never.example.atom").await;
    assert_eq!(status, StatusCode::OK);
    assert!(atom.contains("<updated>1970-01-01T00:00:00Z</updated>"));
    let (status, _, _) = get(&app, "/nothing/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_check_started_from_another_site_is_refused() {
    let app = app(engine(), None, true);
    let mut req = post_check("a.example", "127.0.0.1:3");
    req.headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    let (status, _, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("own page only"), "{body}");
    let mut req = post_check("a.example", "127.0.0.1:3");
    req.headers_mut()
        .insert("sec-fetch-site", "same-origin".parse().unwrap());
    let (status, headers, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/domain/a.example");
}

#[tokio::test]
async fn one_address_over_its_limit_gets_429_while_another_is_served() {
    let app = app(engine(), None, true);
    let mut last = StatusCode::OK;
    for _ in 0..=crate::engine::COMMANDS_PER_MINUTE {
        let (status, headers, body) = send(&app, post_check("a.example", "127.0.0.1:2")).await;
        last = status;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                body.contains("at most 20 a minute and 30 an hour"),
                "{body}"
            );
            assert_eq!(headers[header::RETRY_AFTER], "60");
            break;
        }
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(headers[header::LOCATION], "/domain/a.example");
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = send(&app, post_check("a.example", "127.0.0.2:2")).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "another address is still served"
    );
    // The page follows the check in progress.
    let (_, _, body) = get(&app, "/domain/a.example").await;
    assert!(
        body.contains("http-equiv=\"refresh\"") || body.contains("Sorry"),
        "{body}"
    );
}

#[tokio::test]
async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
    let proxy = ("127.0.0.1".parse().unwrap(), 32);
    let app = app_behind(engine(), None, true, vec![proxy]);
    let from = |peer: &str, client: &str| {
        let mut req = post_check("a.example", peer);
        req.headers_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        req
    };
    let mut limited = None;
    for _ in 0..=crate::engine::COMMANDS_PER_MINUTE {
        let (status, _, body) = send(&app, from("127.0.0.1:5", "203.0.113.1")).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(body);
            break;
        }
    }
    let body = limited.expect("the forwarded client reached its limit");
    assert!(
        body.contains("(203.0.113.1)"),
        "the client, not the proxy: {body}"
    );
    // Another client behind the same proxy is its own.
    let (status, _, _) = send(&app, from("127.0.0.1:5", "203.0.113.2")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // From anyone else the header is not believed: the peer is the client.
    for _ in 0..crate::engine::COMMANDS_PER_MINUTE {
        let (status, _, _) = send(&app, from("127.0.0.9:5", "203.0.113.3")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
    }
    let (status, _, body) = send(&app, from("127.0.0.9:5", "203.0.113.4")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body.contains("(127.0.0.9)"), "{body}");
}

#[tokio::test]
async fn metrics_can_be_turned_off_and_health_says_ok() {
    let engine = engine();
    let on = app(engine.clone(), None, true);
    let (status, headers, text) = get(&on, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .contains("openmetrics"));
    assert!(
        text.contains("certwatch_checks_total{verdict=\"ok\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("certwatch_self_watch_failing{cause=\"store\"} 0"),
        "{text}"
    );
    let off = app(engine, None, false);
    let (status, _, _) = get(&off, "/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = get(&off, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let app = app(engine(), None, true);
    let body = format!("domain={}", "a".repeat(MAX_BODY * 2));
    let mut req = Request::post("/check")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    req.extensions_mut()
        .insert(Peer("127.0.0.1:3".parse().unwrap()));
    let (status, _, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

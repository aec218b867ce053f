//! The HTML pages: `/`, `POST /check`, `/domain/<domain>`, and the pages
//! that say what went wrong. Templates escape every value (askama).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::checks::{Progress, Refused};
use super::view::{alert_rows, name, AlertRow, ReportView};
use super::{Peer, Web};
use crate::admission::{QueueFull, CHECKS_QUEUED_PER_JID};
use crate::commands::CommandError;
use crate::domain::Domain;
use crate::engine::{CHECKS_PER_HOUR, COMMANDS_PER_MINUTE};
use crate::horizon::unix;
use crate::store::StateStore as _;

/// Alerts listed on a domain's page at most.
pub const ALERTS_SHOWN: usize = 20;

/// The running version, in every page's footer.
const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    version: &'a str,
    how: &'a str,
    value: &'a str,
    error: &'a str,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    version: &'a str,
    heading: &'a str,
    text: &'a str,
    form: bool,
    value: &'a str,
    error: &'a str,
}

/// How to subscribe, where the XMPP side runs.
pub struct XmppView {
    component: String,
    subscribe_uri: String,
}

#[derive(Template)]
#[template(path = "domain.html")]
struct DomainPage<'a> {
    version: &'a str,
    domain: &'a str,
    name: String,
    checking: bool,
    failure: String,
    report: Option<ReportView>,
    alerts: Vec<AlertRow>,
    monitored: bool,
    xmpp: Option<XmppView>,
    feed_url: String,
}

/// Renders a template with a status; a template that cannot render is a
/// bug, answered with a plain 500.
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "a page could not be rendered");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// A page that says what went wrong, in one line.
pub fn message(status: StatusCode, heading: &str, text: &str) -> Response {
    html(
        status,
        &MessagePage {
            version: VERSION,
            heading,
            text,
            form: false,
            value: "",
            error: "",
        },
    )
}

/// `GET /`: what CertWatch does, and the form.
pub async fn index(State(web): State<Arc<Web>>) -> Response {
    html(
        StatusCode::OK,
        &IndexPage {
            version: VERSION,
            how: how(&web),
            value: "",
            error: "",
        },
    )
}

fn how(web: &Web) -> &'static str {
    match web.engine.config().probe.transport.to_string().as_str() {
        "tor" => "over Tor, from outside your network,",
        "socks5" => "through Tor (a SOCKS5 proxy), from outside your network,",
        _ => "directly from this host",
    }
}

/// The form of `POST /check`.
#[derive(Deserialize)]
pub struct CheckForm {
    #[serde(default)]
    domain: String,
}

/// `POST /check`: starts a check and sends the browser to the domain's page.
pub async fn check(
    State(web): State<Arc<Web>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Form(form): Form<CheckForm>,
) -> Response {
    // Another site's page must not make its visitors' browsers start checks
    // (each charged to the visitor's address): browsers say where a request
    // comes from (Fetch Metadata); scripts and curl send no such header.
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return message(
            StatusCode::FORBIDDEN,
            "Not from another site",
            "A check can be started from CertWatch's own page only; open it and enter the domain there.",
        );
    }
    // As in chat: a URL or an XMPP address has its domain taken out.
    let domain = match crate::commands::given::target(&form.domain) {
        Ok(t) => t.domain,
        Err(e) => {
            let error = CommandError::BadDomain(e.to_string()).to_string();
            let value: String = form.domain.chars().take(300).collect();
            return html(
                StatusCode::BAD_REQUEST,
                &IndexPage {
                    version: VERSION,
                    how: how(&web),
                    value: &value,
                    error: &error,
                },
            );
        }
    };
    let client = web.client_ip(peer, &headers);
    let key = super::client::limit_key(client);
    if web.engine.allow_command(&key, true).is_some() {
        let text = format!(
            "Too many checks from your address ({client}): at most {COMMANDS_PER_MINUTE} a minute and {CHECKS_PER_HOUR} an hour. Stored results stay readable meanwhile."
        );
        let mut r = message(StatusCode::TOO_MANY_REQUESTS, "Too many checks", &text);
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
        return r;
    }
    // A place in the chat checks' queue, under the client's address.
    let ticket = match web.engine.queue_check(&key) {
        Ok(t) => t,
        Err(QueueFull::Mine) => {
            let text = format!(
                "Your address ({client}) already has {CHECKS_QUEUED_PER_JID} checks waiting or running, the most one client may; this one was not started. Wait for their results, then ask again."
            );
            return message(StatusCode::TOO_MANY_REQUESTS, "Too many checks", &text);
        }
        Err(full @ QueueFull::Everyone) => {
            return message(StatusCode::SERVICE_UNAVAILABLE, "Busy", &full.user_text())
        }
    };
    let url = format!("/domain/{}", domain.as_str());
    match web.checks.start(web.engine.clone(), domain, ticket) {
        Ok(()) => Redirect::to(&url).into_response(),
        Err(Refused::Busy) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "CertWatch is running as many checks as it can; try again in a minute.",
        ),
    }
}

/// `GET /domain/<domain>`, `.json` and `.atom`: one path segment, told
/// apart by its ending (no domain ends in `.json` or `.atom`: no such TLD).
pub async fn domain_any(State(web): State<Arc<Web>>, Path(segment): Path<String>) -> Response {
    if let Some(d) = segment.strip_suffix(".json") {
        return super::feed::json(&web, d);
    }
    if let Some(d) = segment.strip_suffix(".atom") {
        return super::feed::atom(&web, d);
    }
    domain_page(&web, &segment)
}

/// Parses a domain from the path, or the page that says why not.
pub fn path_domain(segment: &str) -> Result<Domain, Box<Response>> {
    Domain::parse(segment).map_err(|e| {
        let text = CommandError::BadDomain(e.to_string()).to_string();
        Box::new(message(StatusCode::BAD_REQUEST, "Not a domain", &text))
    })
}

fn domain_page(web: &Web, segment: &str) -> Response {
    let domain = match path_domain(segment) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let d = domain.as_str();
    let store = web.engine.store();
    let (report, state, alerts) = match (
        web.engine.last_report(d),
        store.domain_state(d),
        store.items(d, ALERTS_SHOWN),
    ) {
        (Ok(r), Ok(s), Ok(i)) => (r, s, i),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            tracing::warn!(error = %e, "store read failed for a page");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                &format!("CertWatch cannot read its store now: {e}"),
            );
        }
    };
    let (checking, failure) = match web.checks.progress(d) {
        Some(Progress::Running(_)) => (true, String::new()),
        Some(Progress::Failed(text, _)) => (false, text),
        None => (false, String::new()),
    };
    html(
        StatusCode::OK,
        &DomainPage {
            version: VERSION,
            domain: d,
            name: name(d),
            checking,
            failure,
            report: report
                .as_ref()
                .map(|r| ReportView::of(r, unix(web.engine.clock().now()))),
            alerts: alert_rows(&alerts),
            monitored: state.is_some(),
            xmpp: web.xmpp_view(d),
            feed_url: format!("{}/domain/{d}.atom", web.base_url),
        },
    )
}

impl XmppView {
    /// How to subscribe to `domain` at `component`.
    pub fn new(component: &str, domain: &str) -> XmppView {
        let (subscribe_uri, _) = crate::render::pubsub_uris(component, domain);
        XmppView {
            component: component.to_owned(),
            subscribe_uri,
        }
    }
}

/// `GET /domain/<domain>/qr.svg`: the PubSub subscribe URI as a QR code
/// (its own route, cached a day: making one costs fifteen pages; drawn
/// [`super::QR_AT_ONCE`] at a time, off the async workers).
pub async fn qr(State(web): State<Arc<Web>>, Path(segment): Path<String>) -> Response {
    let domain = match path_domain(&segment) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let Some(component) = web.component.as_deref() else {
        return not_found().await;
    };
    let (uri, _) = crate::render::pubsub_uris(component, domain.as_str());
    let busy = || {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "Too many QR codes asked for at once; try again in a moment.",
        )
    };
    let Ok(Ok(permit)) =
        tokio::time::timeout(super::QR_WAIT, web.qr_slots.clone().acquire_owned()).await
    else {
        return busy();
    };
    let drawn = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        super::qr::svg(&uri)
    })
    .await;
    let Ok(svg) = drawn else { return busy() };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        svg,
    )
        .into_response()
}

/// Any other path.
pub async fn not_found() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page. Start from the front page to check a domain.",
    )
}

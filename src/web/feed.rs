//! The machine-readable views of a domain: the stored report as JSON
//! (exactly `check --json`), the alerts as an Atom feed (RFC 4287, the
//! PubSub node's items with the same ids), and a status badge (SVG).

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::pages::path_domain;
use super::Web;
use crate::model::Item;
use crate::report::Verdict;
use crate::store::{StateStore as _, MAX_ITEMS};

#[derive(Template)]
#[template(path = "feed.xml")]
struct Feed<'a> {
    self_url: String,
    page_url: String,
    name: String,
    updated: &'a str,
    items: &'a [Item],
    /// The start of each entry's id: the PubSub item's XMPP URI.
    item_uri: String,
}

/// An alert's Atom id: the XMPP URI of its PubSub item (RFC 5122, XEP-0060
/// §12.22), an IRI as RFC 4287 asks, ending in the item's own id.
pub fn entry_id(component: &str, node: &str, item: &str) -> String {
    format!("xmpp:{component}?;node={node};item={item}")
}

#[derive(Template)]
#[template(path = "badge.svg")]
struct Badge<'a> {
    text: &'a str,
    colour: &'a str,
    left: usize,
    right: usize,
    width: usize,
}

fn store_failed(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "store read failed");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("cannot read the store: {e}\n"),
    )
        .into_response()
}

fn typed(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `GET /domain/<domain>.json`: the last report, as `check --json` prints it.
pub fn json(web: &Web, segment: &str) -> Response {
    let domain = match path_domain(segment) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    match web.engine.last_report(domain.as_str()) {
        Ok(Some(report)) => {
            let text = serde_json::to_string_pretty(&report).expect("report serialises");
            typed(StatusCode::OK, "application/json", text + "\n")
        }
        Ok(None) => typed(
            StatusCode::NOT_FOUND,
            "application/json",
            serde_json::json!({"error": format!("{} has not been checked", domain)}).to_string()
                + "\n",
        ),
        Err(e) => store_failed(e),
    }
}

/// `GET /domain/<domain>.atom`: the domain's alerts, newest first.
pub fn atom(web: &Web, segment: &str) -> Response {
    let domain = match path_domain(segment) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let d = domain.as_str();
    let items = match web.engine.store().items(d, MAX_ITEMS) {
        Ok(items) => items,
        Err(e) => return store_failed(e),
    };
    // A feed's `updated` is its newest entry's; without entries, the last check's.
    let last = web.engine.last_report(d).ok().flatten();
    let updated = items
        .first()
        .map(|i| i.updated.as_str())
        .or(last.as_ref().map(|r| r.checked_at.as_str()))
        .unwrap_or("1970-01-01T00:00:00Z");
    let feed = Feed {
        self_url: format!("{}/domain/{d}.atom", web.base_url),
        page_url: format!("{}/domain/{d}", web.base_url),
        name: crate::report::display_name(d),
        updated,
        items: &items,
        item_uri: entry_id(web.engine.component(), d, ""),
    };
    match feed.render() {
        Ok(body) => typed(StatusCode::OK, "application/atom+xml; charset=utf-8", body),
        Err(e) => store_failed(e),
    }
}

/// `GET /domain/<domain>/badge.svg`: the verdict and the date of the last check.
pub async fn badge(State(web): State<Arc<Web>>, Path(segment): Path<String>) -> Response {
    let domain = match path_domain(&segment) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let report = match web.engine.last_report(domain.as_str()) {
        Ok(r) => r,
        Err(e) => return store_failed(e),
    };
    let (word, colour) = match report.as_ref().map(|r| r.verdict) {
        Some(Verdict::Ok) => ("ok", "#1a7f37"),
        Some(Verdict::Mismatch) => ("MISMATCH", "#c62828"),
        Some(Verdict::Bogus) => ("BOGUS", "#c62828"),
        Some(Verdict::Insecure) => ("unsigned", "#b26a00"),
        Some(Verdict::NoTlsa) => ("no TLSA", "#b26a00"),
        Some(Verdict::Unreachable) => ("unreachable", "#6b7280"),
        None => ("not checked", "#6b7280"),
    };
    let date = report
        .as_ref()
        .map(|r| r.checked_at.get(..10).unwrap_or(&r.checked_at).to_owned());
    let text = match date {
        Some(date) => format!("{word} {date}"),
        None => word.to_owned(),
    };
    // Verdana at 11 px is about 7 px a character.
    let left = 44;
    let right = text.chars().count() * 7 + 12;
    let badge = Badge {
        text: &text,
        colour,
        left,
        right,
        width: left + right,
    };
    match badge.render() {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "image/svg+xml"),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            body,
        )
            .into_response(),
        Err(e) => store_failed(e),
    }
}

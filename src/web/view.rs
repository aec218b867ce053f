//! What the pages show, as plain strings: a report turned into the rows a
//! template prints. Every string here is data; the templates escape it.

use crate::model::Item;
use crate::report::{display_name, transport_words, EndpointReport, Report, Verdict};

/// How a verdict looks: a CSS class (its colour), an icon, a word.
pub struct Look {
    /// `good`, `warn`, `bad` or `unknown`.
    pub class: &'static str,
    /// A character that reads without colour.
    pub icon: &'static str,
    /// The verdict in one or two words.
    pub word: &'static str,
}

/// The look of a domain's verdict.
pub fn look(v: Verdict) -> Look {
    let (class, icon, word) = match v {
        Verdict::Ok => ("good", "✔", "protected"),
        Verdict::Mismatch => ("bad", "✖", "ALARM: mismatch"),
        Verdict::Bogus => ("bad", "✖", "ALARM: bogus DNSSEC"),
        Verdict::Insecure => ("warn", "!", "not protected"),
        Verdict::NoTlsa => ("warn", "!", "no TLSA records"),
        Verdict::Unreachable => ("unknown", "?", "could not check"),
    };
    Look { class, icon, word }
}

/// One TLSA record of an endpoint.
pub struct Record {
    /// The record as published (`3 1 1 ab…`).
    pub text: String,
    /// Its fields in words.
    pub meaning: String,
    /// Whether the key seen matched this record.
    pub matched: bool,
}

/// One endpoint row.
pub struct EndpointRow {
    /// xmpp-client and the like.
    pub service: String,
    /// host:port.
    pub host_port: String,
    /// The address probed, or "no address".
    pub address: String,
    /// starttls or direct.
    pub tls: String,
    /// The endpoint's verdict in words, and its class.
    pub verdict: String,
    /// `good`, `bad`, `warn` or `unknown`.
    pub class: &'static str,
    /// SHA-256 of the key seen, if any.
    pub key: String,
    /// The TLSA owner name.
    pub tlsa_name: String,
    /// The records.
    pub records: Vec<Record>,
    /// Why it failed, and what the matcher noted.
    pub notes: Vec<String>,
}

/// Everything the domain page prints about a report.
pub struct ReportView {
    /// The verdict's look.
    pub look: Look,
    /// The verdict in one sentence (the chat's words).
    pub sentence: String,
    /// When the check ran.
    pub checked_at: String,
    /// Over what the probes travelled.
    pub over: String,
    /// One row per endpoint.
    pub endpoints: Vec<EndpointRow>,
    /// Zone-file lines to add.
    pub zone_lines: String,
    /// What to do, in order.
    pub advice: Vec<String>,
    /// Failures that limited the check.
    pub errors: Vec<String>,
    /// What runs out next: signature problems, then the nearest horizons.
    pub horizons: Vec<String>,
}

/// Horizons the domain page shows.
pub const PAGE_HORIZONS: usize = 3;

/// Spells out a TLSA record's three numbers (RFC 6698 §2.1, RFC 7218 names).
pub fn tlsa_meaning(record: &str) -> String {
    let mut f = record.split_whitespace();
    let usage = match f.next() {
        Some("0") => "usage 0 (a CA, with public CA checks: PKIX-TA)",
        Some("1") => "usage 1 (the server's certificate, with public CA checks: PKIX-EE)",
        Some("2") => "usage 2 (a CA of your own: DANE-TA)",
        Some("3") => "usage 3 (the server's own key: DANE-EE)",
        _ => "unknown usage",
    };
    let selector = match f.next() {
        Some("0") => "selector 0 (whole certificate)",
        Some("1") => "selector 1 (public key only)",
        _ => "unknown selector",
    };
    let matching = match f.next() {
        Some("0") => "matching 0 (exact data)",
        Some("1") => "matching 1 (SHA-256)",
        Some("2") => "matching 2 (SHA-512)",
        _ => "unknown matching type",
    };
    format!("{usage}, {selector}, {matching}")
}

fn endpoint_row(e: &EndpointReport) -> EndpointRow {
    use crate::report::EndpointVerdict as V;
    let class = match e.verdict {
        V::Match => "good",
        V::Mismatch | V::Bogus | V::StarttlsMissing => "bad",
        V::NoTlsa | V::Insecure => "warn",
        V::Unreachable | V::NotChecked => "unknown",
    };
    EndpointRow {
        service: e.service.clone(),
        host_port: format!("{}:{}", e.host, e.port),
        address: e
            .address
            .map(|a| a.to_string())
            .unwrap_or_else(|| "no address".into()),
        tls: e.tls.clone(),
        verdict: e.verdict_word().to_owned(),
        class,
        key: e.spki_sha256.clone().unwrap_or_default(),
        tlsa_name: e.tlsa_name.clone(),
        records: e
            .tlsa
            .iter()
            .map(|r| Record {
                text: r.clone(),
                meaning: tlsa_meaning(r),
                matched: e.matched.as_deref() == Some(r.as_str()),
            })
            .collect(),
        notes: e.error.iter().chain(&e.notes).cloned().collect(),
    }
}

impl ReportView {
    /// The view of a report, its horizons counted from `now` (UNIX seconds).
    pub fn of(report: &Report, now: u64) -> ReportView {
        ReportView {
            look: look(report.verdict),
            sentence: report.summary(),
            checked_at: report.checked_at.clone(),
            over: match report.transport.as_str() {
                "tor" => "over Tor".into(),
                "socks5" => "through a SOCKS5 proxy (normally Tor)".into(),
                _ => "directly, without Tor".into(),
            },
            endpoints: report.endpoints.iter().map(endpoint_row).collect(),
            zone_lines: report.records_to_add.join("\n"),
            advice: report.advice.clone(),
            errors: report
                .errors
                .iter()
                .chain(&report.bogus_rrsets)
                .cloned()
                .collect(),
            horizons: report.horizon_lines(PAGE_HORIZONS, now),
        }
    }
}

/// One alert in the domain's history.
pub struct AlertRow {
    /// When.
    pub updated: String,
    /// Its summary line.
    pub title: String,
}

/// The alert history rows, newest first (the store gives them so).
pub fn alert_rows(items: &[Item]) -> Vec<AlertRow> {
    items
        .iter()
        .map(|i| AlertRow {
            updated: i.updated.clone(),
            title: i.title.clone(),
        })
        .collect()
}

/// The domain as people read it.
pub fn name(domain: &str) -> String {
    display_name(domain)
}

/// What the transport is called in sentences.
pub fn transport(t: &str) -> &'static str {
    transport_words(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlsa_fields_are_spelled_out() {
        assert_eq!(
            tlsa_meaning("3 1 1 abcd"),
            "usage 3 (the server's own key: DANE-EE), selector 1 (public key only), matching 1 (SHA-256)"
        );
        assert!(tlsa_meaning("9 9 9 x").starts_with("unknown usage"));
        assert!(tlsa_meaning("").contains("unknown matching"));
    }
}

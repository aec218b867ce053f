//! How a report reads for people in chat: the reply to `check`, the details
//! `status` shows, and the short lines of an alert. Pure.
//!
//! Chat is read on phones: a reply says what happened in its first line,
//! groups endpoints that saw the same thing into one line, prints each
//! record once, names no JSON field, stays within [`MAX_REPLY_LINES`] lines
//! and [`MAX_REPLY_CHARS`] characters for the lab's cases, and ends with the
//! next step. The full per-endpoint details are behind `status DOMAIN`.

use crate::report::{EndpointReport, EndpointVerdict, Report, Verdict};

/// The most lines a `check` reply aims for (a phone screen).
pub const MAX_REPLY_LINES: usize = 25;
/// The most characters a `check` reply aims for.
pub const MAX_REPLY_CHARS: usize = 1200;
/// Zone-file lines shown in a chat reply; the rest are behind `status`.
pub const MAX_RECORDS_SHOWN: usize = 6;
/// Endpoint lines in an alert; the rest are counted and behind `status`.
pub const MAX_ALERT_GROUPS: usize = 4;
/// Endpoint lines in `status`; the rest are counted.
pub const MAX_STATUS_GROUPS: usize = 16;
/// Horizons (what runs out next) in a `check` reply.
pub const CHECK_HORIZONS: usize = 2;
/// Horizons in `status`.
pub const STATUS_HORIZONS: usize = 3;

/// What a chat reply needs besides the report.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The component's JID (for the PubSub URIs).
    pub component: &'a str,
    /// A domain that is likely what the user meant, when the server said it
    /// does not serve the one checked (the parent, or a domain whose SRV
    /// records point at this host).
    pub likely_domain: Option<&'a str>,
}

/// The XEP-0060 §16 URI that subscribes to a domain's node, and the plain one
/// that only names it.
pub fn pubsub_uris(component: &str, domain: &str) -> (String, String) {
    (
        format!("xmpp:{component}?pubsub;action=subscribe;node={domain}"),
        format!("xmpp:{component}?;node={domain}"),
    )
}

/// How to print a whole TLSA zone line from one's own certificate or key,
/// for `owner` (the record's name): an openssl pipeline anyone can run on the
/// server (the second line, a shell command), and the `certwatch tlsa` form.
pub fn own_key_hint(intro: &str, owner: &str, host: &str, port: u16) -> Vec<String> {
    let owner = owner.trim_end_matches('.');
    vec![
        format!("{intro}, on the server:"),
        format!("openssl x509 -in CERT.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | awk '{{print \"{owner}. IN TLSA 3 1 1 \" $1}}'"),
        format!("(key file: openssl pkey -in KEY.pem -pubout -outform DER | sha256sum; or certwatch tlsa --cert CERT.pem --host {host} --port {port})"),
    ]
}

/// The reply to `check DOMAIN`.
pub fn check_reply(report: &Report, ctx: &Context) -> String {
    let mut out = vec![report.summary()];
    match report.verdict {
        Verdict::Ok => {
            out.extend(unreachable_line(report));
            out.extend(warnings(report));
            out.extend(runs_out(report, CHECK_HORIZONS, None));
        }
        Verdict::Mismatch => {
            out.extend(alarm_lines(report, usize::MAX));
            out.extend(report.advice.iter().take(1).cloned());
            out.extend(key_pipeline(
                report,
                "To see the key your server really has",
            ));
        }
        Verdict::Bogus => {
            out.extend(bogus_lines(report));
        }
        Verdict::Insecure => {
            out.extend(report.advice.iter().filter(|a| is_signing(a)).cloned());
            out.extend(records(
                report,
                "Then, once it is signed (unsigned, they protect nothing), add:",
            ));
            out.extend(key_pipeline(
                report,
                "Or compute them from your own certificate",
            ));
        }
        Verdict::NoTlsa => {
            out.extend(records(report, "Add these lines to the zone:"));
            out.extend(key_pipeline(
                report,
                "Or compute them from your own certificate",
            ));
            out.extend(warnings(report));
        }
        Verdict::Unreachable => {
            if !report.nxdomain {
                out.extend(problems(report));
                if report.host_unknown().is_none() {
                    out.extend(unreachable_line(report));
                }
                out.extend(
                    report
                        .advice
                        .iter()
                        .filter(|a| !is_setup_advice(a))
                        .cloned(),
                );
            }
        }
    }
    out.push(next_step(report, ctx));
    out.join("\n")
}

/// What `status DOMAIN` shows: [`details`], the [`STATUS_HORIZONS`]
/// nearest horizons counted from `now` (UNIX seconds), then the next step.
pub fn status_reply(report: &Report, component: &str, now: u64) -> String {
    let next = next_step(
        report,
        &Context {
            component,
            likely_domain: None,
        },
    );
    let mut out = vec![details(report)];
    out.extend(runs_out(report, STATUS_HORIZONS, Some(now)));
    out.push(next);
    out.join("\n")
}

/// "Runs out: ..." lines: each zone's signature problems, then the `n`
/// nearest horizons counted from `now` (the check's time when None).
fn runs_out(report: &Report, n: usize, now: Option<u64>) -> Vec<String> {
    let Some(now) = now.or(report.checked_at_unix()) else {
        return Vec::new();
    };
    report
        .horizon_lines(n, now)
        .into_iter()
        .map(|l| format!("Runs out: {l}"))
        .collect()
}

/// The full details of a report (`status`, and an alert's PubSub item):
/// the summary, when and how it was taken, one line per group of
/// endpoints, what failed validation, the problems, records and advice.
pub fn details(report: &Report) -> String {
    let mut out = vec![
        report.summary(),
        format!(
            "Checked at {} over {}.",
            report.checked_at,
            transport_words(&report.transport)
        ),
    ];
    out.extend(detail_lines(report, MAX_STATUS_GROUPS));
    out.extend(bogus_lines(report));
    if !report.nxdomain {
        out.extend(problems(report));
    }
    if !report.records_to_add.is_empty() {
        out.push("Records to add to the zone:".into());
        out.extend(report.records_to_add.iter().cloned());
    }
    out.extend(report.advice.iter().cloned());
    out.extend(
        report
            .rollover
            .iter()
            .map(|n| format!("Key rollover: {}", n.text)),
    );
    out.join("\n")
}

/// The per-endpoint lines of an alert: one per group of affected endpoints
/// (those that saw the same key, or failed the same way), at most
/// [`MAX_ALERT_GROUPS`], then how many more.
pub fn alert_lines(report: &Report, to: Verdict) -> Vec<String> {
    match to {
        Verdict::Mismatch => alarm_lines(report, MAX_ALERT_GROUPS),
        Verdict::Bogus => bogus_lines(report),
        Verdict::Ok => Vec::new(),
        Verdict::Unreachable => unreachable_line(report).into_iter().collect(),
        Verdict::Insecure | Verdict::NoTlsa => {
            let affected: Vec<&EndpointReport> = report
                .endpoints
                .iter()
                .filter(|e| {
                    matches!(
                        e.verdict,
                        EndpointVerdict::Insecure | EndpointVerdict::NoTlsa
                    )
                })
                .collect();
            group_lines(&affected, MAX_ALERT_GROUPS, |e| {
                e.verdict_word().to_string()
            })
        }
    }
}

/// The one line that says what to do next.
pub fn next_step(report: &Report, ctx: &Context) -> String {
    let d = &report.domain;
    match report.verdict {
        Verdict::Ok => {
            let (subscribe, node) = pubsub_uris(ctx.component, d);
            format!("Next: send \"subscribe {d}\" to be alerted if this changes, or subscribe in your client to {subscribe} (node {node}).")
        }
        Verdict::Mismatch => format!("Next: compare with the key on your server; send \"status {d}\" for every endpoint, and \"check {d}\" again once it is fixed."),
        Verdict::Bogus => format!("Next: fix the zone's signatures or DS record, then send \"check {d}\" again."),
        Verdict::Insecure => format!("Next: once it is signed and the records are published, send \"check {d}\" again."),
        Verdict::NoTlsa => format!("Next: publish the records, then send \"check {d}\" again once they are published."),
        Verdict::Unreachable if report.nxdomain => "Next: check the spelling, and send \"check DOMAIN\" with the domain of your XMPP addresses (the part after the @).".into(),
        Verdict::Unreachable if report.host_unknown().is_some() => match ctx.likely_domain.map(str::to_owned).or_else(|| parent(d)) {
            Some(p) => format!("Next: send \"check {p}\" if that is the domain of your XMPP addresses (the part after the @)."),
            None => "Next: send \"check DOMAIN\" with the domain of your XMPP addresses (the part after the @).".into(),
        },
        Verdict::Unreachable if !report.resolvers.is_empty() => format!("Next: send \"check {d}\" again later; CertWatch's operators are told when its own DNS keeps failing."),
        Verdict::Unreachable => format!("Next: make sure the server is up and reachable, then send \"check {d}\" again."),
    }
}

/// The parent domain, when it still has two labels.
fn parent(domain: &str) -> Option<String> {
    let (_, rest) = domain.split_once('.')?;
    rest.contains('.').then(|| rest.to_owned())
}

fn transport_words(transport: &str) -> String {
    match transport {
        "tor" => "Tor".into(),
        "socks5" => "a SOCKS5 proxy".into(),
        "direct" => "a direct connection (not Tor)".into(),
        other => other.into(),
    }
}

/// Mismatched or stripped endpoints, grouped by the key they presented.
fn alarm_lines(report: &Report, max: usize) -> Vec<String> {
    let alarming: Vec<&EndpointReport> = report
        .alarming()
        .filter(|e| e.verdict != EndpointVerdict::Bogus)
        .collect();
    // A key is confirmed when any probe confirmed it, so that every
    // endpoint that saw it shares one line.
    let confirmed: Vec<&str> = alarming
        .iter()
        .filter(|e| e.notes.iter().any(|n| n.starts_with("confirmed")))
        .filter_map(|e| e.spki_sha256.as_deref())
        .collect();
    let mut lines = group_lines(&alarming, max, |e| match (e.verdict, &e.spki_sha256) {
        (EndpointVerdict::StarttlsMissing, _) => "STARTTLS was not offered".into(),
        (_, Some(k)) => format!(
            "presented key {k}{}{}",
            if confirmed.contains(&k.as_str()) {
                " (confirmed by a second probe)"
            } else {
                ""
            },
            // Where it was seen from, when agents probe too.
            e.notes
                .iter()
                .find(|n| n.starts_with("seen only from ") || n.starts_with("seen from "))
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
        ),
        (_, None) => e.error.clone().unwrap_or_else(|| "no matching key".into()),
    });
    // The records the keys were compared with, once each.
    let mut expected: Vec<&str> = Vec::new();
    for e in &alarming {
        for t in &e.tlsa {
            if !expected.contains(&t.as_str()) {
                expected.push(t);
            }
        }
    }
    if !expected.is_empty() && max == usize::MAX {
        lines.push(format!("TLSA records published: {}", expected.join(", ")));
    }
    lines
}

/// Each RRset that failed validation and why, grouped by cause.
fn bogus_lines(report: &Report) -> Vec<String> {
    const SEP: &str = " failed DNSSEC validation";
    let mut causes: Vec<(String, Vec<String>)> = Vec::new();
    let reasons = report.bogus_rrsets.iter().cloned().chain(
        report
            .endpoints
            .iter()
            .filter(|e| e.verdict == EndpointVerdict::Bogus)
            .flat_map(|e| e.notes.iter().filter(|n| n.contains(SEP)).cloned()),
    );
    for r in reasons {
        let (what, why) = match r.split_once(SEP) {
            Some((what, why)) => (
                what.trim_start_matches("the ").to_owned(),
                why.trim_start_matches(':').trim().to_owned(),
            ),
            None => (r.clone(), String::new()),
        };
        match causes.iter_mut().find(|(w, _)| *w == why) {
            Some((_, list)) if !list.contains(&what) => list.push(what),
            Some(_) => {}
            None => causes.push((why, vec![what])),
        }
    }
    causes
        .into_iter()
        .map(|(why, what)| {
            let names = what.join(", ");
            if why.is_empty() {
                format!("Failed DNSSEC validation: {names}.")
            } else {
                format!("Failed DNSSEC validation: {names}. Cause: {why}")
            }
        })
        .collect()
}

/// One line for the endpoints that could not be reached, grouped by why.
fn unreachable_line(report: &Report) -> Option<String> {
    let down: Vec<&EndpointReport> = report
        .endpoints
        .iter()
        .filter(|e| e.verdict == EndpointVerdict::Unreachable && e.address.is_some())
        .collect();
    if down.is_empty() {
        return None;
    }
    let lines = group_lines(&down, 3, |e| {
        e.error.clone().unwrap_or_else(|| "no answer".into())
    });
    Some(format!("Not reached: {}", lines.join("; ")))
}

/// The problems of the check itself (DNS, limits), once each.
fn problems(report: &Report) -> Vec<String> {
    report
        .errors
        .iter()
        .filter(|e| !e.contains("SRV record and no address"))
        .take(3)
        .map(|e| format!("Problem: {e}"))
        .collect()
}

/// Zone-file lines, at most [`MAX_RECORDS_SHOWN`].
fn records(report: &Report, header: &str) -> Vec<String> {
    if report.records_to_add.is_empty() {
        return Vec::new();
    }
    let mut out = vec![header.to_owned()];
    out.extend(
        report
            .records_to_add
            .iter()
            .take(MAX_RECORDS_SHOWN)
            .cloned(),
    );
    let more = report
        .records_to_add
        .len()
        .saturating_sub(MAX_RECORDS_SHOWN);
    if more > 0 {
        out.push(format!(
            "({more} more lines: send \"status {}\")",
            report.domain
        ));
    }
    out
}

/// How to print a record's zone line from one's own certificate, with the
/// first record's owner name filled in.
fn key_pipeline(report: &Report, intro: &str) -> Vec<String> {
    report
        .endpoints
        .iter()
        .find(|e| e.spki_sha256.is_some() && e.verdict != EndpointVerdict::Match)
        .map(|e| own_key_hint(intro, &e.tlsa_name, &e.host, e.port))
        .unwrap_or_default()
}

/// Advice about weak record usages, kept in any reply.
fn warnings(report: &Report) -> Vec<String> {
    report
        .advice
        .iter()
        .filter(|a| a.starts_with("Records with usage") || a.starts_with("A `3 0"))
        .cloned()
        .collect()
}

fn is_signing(advice: &str) -> bool {
    advice.starts_with("First sign the zone")
        || advice.starts_with("The zone ")
        || advice.starts_with("The parent of ")
}

fn is_setup_advice(advice: &str) -> bool {
    advice.contains("SRV record")
}

/// Endpoint lines for `status`: every group, whatever its verdict.
fn detail_lines(report: &Report, max: usize) -> Vec<String> {
    let all: Vec<&EndpointReport> = report
        .endpoints
        .iter()
        .filter(|e| e.address.is_some() || e.error.is_some())
        .collect();
    group_lines(&all, max, |e| {
        let mut what = e.verdict_word().to_string();
        if let Some(k) = &e.spki_sha256 {
            what.push_str(&format!(", key {k}"));
        }
        if let Some(err) = &e.error {
            what.push_str(&format!(", {err}"));
        }
        if e.notes.iter().any(|n| n.starts_with("confirmed")) {
            what.push_str(", confirmed by a second probe");
        }
        what
    })
}

/// Groups endpoints of which `about` says the same into
/// `host:port,port, host2:port [addresses]: about` lines, at most `max`,
/// then a count of the endpoints left out.
fn group_lines(
    endpoints: &[&EndpointReport],
    max: usize,
    about: impl Fn(&EndpointReport) -> String,
) -> Vec<String> {
    struct Group {
        about: String,
        /// Each host with its ports, in order.
        hosts: Vec<(String, Vec<u16>)>,
        addresses: Vec<String>,
        count: usize,
    }
    let mut groups: Vec<Group> = Vec::new();
    for e in endpoints {
        let text = about(e);
        let g = match groups.iter_mut().position(|g| g.about == text) {
            Some(i) => &mut groups[i],
            None => {
                groups.push(Group {
                    about: text,
                    hosts: Vec::new(),
                    addresses: Vec::new(),
                    count: 0,
                });
                groups.last_mut().expect("just pushed")
            }
        };
        g.count += 1;
        match g.hosts.iter_mut().find(|(h, _)| *h == e.host) {
            Some((_, ports)) if !ports.contains(&e.port) => ports.push(e.port),
            Some(_) => {}
            None => g.hosts.push((e.host.clone(), vec![e.port])),
        }
        if let Some(a) = e.address.map(|a| a.to_string()) {
            if !g.addresses.contains(&a) {
                g.addresses.push(a);
            }
        }
    }
    let shown = groups.len().min(max);
    let mut lines: Vec<String> = groups[..shown]
        .iter()
        .map(|g| {
            let hosts = g
                .hosts
                .iter()
                .map(|(h, ports)| {
                    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                    format!("{h}:{}", ports.join(","))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let addrs = if g.addresses.is_empty() {
                String::new()
            } else {
                format!(" [{}]", g.addresses.join(", "))
            };
            format!("{hosts}{addrs}: {}", g.about)
        })
        .collect();
    let rest: usize = groups[shown..].iter().map(|g| g.count).sum();
    if rest > 0 {
        lines.push(format!("and {rest} more endpoint(s)"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports from real lab runs (`certwatch check --json` against
    /// tests/labs/dnslab.sh and a Prosody presenting the lab key); the
    /// `.chat` files beside them are what chat shows. `UPDATE_GOLDEN=1
    /// cargo test --lib render` rewrites the `.chat` files.
    const CASES: &[&str] = &[
        "ok",
        "notlsa",
        "unsigned",
        "mismatch",
        "bogus",
        "nonexistent",
        "idn",
        "wronghost",
        "unreachable",
        "dnsfail",
        "intercepted",
    ];

    fn golden(name: &str, ext: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.{ext}"))
    }

    fn lab_report(name: &str) -> Report {
        let text = std::fs::read_to_string(golden(name, "json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    const CTX: Context = Context {
        component: "certwatch.localhost",
        likely_domain: None,
    };

    #[test]
    fn lab_replies_match_their_golden_files_fit_a_phone_and_end_with_the_next_step() {
        let update = std::env::var_os("UPDATE_GOLDEN").is_some();
        for name in CASES {
            let reply = check_reply(&lab_report(name), &CTX);
            let path = golden(name, "chat");
            if update {
                std::fs::write(&path, format!("{reply}\n")).unwrap();
            }
            let want = std::fs::read_to_string(&path).unwrap();
            assert_eq!(reply, want.trim_end_matches('\n'), "{name}");
            assert!(
                reply.lines().count() <= MAX_REPLY_LINES
                    && reply.chars().count() <= MAX_REPLY_CHARS,
                "{name}: {} lines, {} chars",
                reply.lines().count(),
                reply.chars().count()
            );
            assert!(
                reply.lines().last().unwrap().starts_with("Next: "),
                "{name}"
            );
            assert!(!reply.contains("records_to_add"), "{name}");
            // Each zone line at most once.
            for r in &lab_report(name).records_to_add {
                assert!(reply.matches(r.as_str()).count() <= 1, "{name}: {r}");
            }
        }
    }

    #[test]
    fn nxdomain_says_so_in_both_forms_and_advises_nothing_else() {
        let r = lab_report("idn");
        let reply = check_reply(&r, &CTX);
        assert!(
            reply.starts_with("bücher.example (xn--bcher-kva.example) does not exist (NXDOMAIN)"),
            "{reply}"
        );
        assert_eq!(reply.lines().count(), 2, "{reply}");
        assert!(r.advice.is_empty(), "{:?}", r.advice);
    }

    #[test]
    fn a_host_name_gets_the_servers_words_and_the_likely_domain() {
        let r = lab_report("wronghost");
        let reply = check_reply(&r, &CTX);
        assert!(
            reply.contains("host-unknown (This server does not serve xmpp.good.test)"),
            "{reply}"
        );
        assert!(reply.contains("send \"check good.test\""), "{reply}");
        let known = check_reply(
            &r,
            &Context {
                likely_domain: Some("shared.test"),
                ..CTX
            },
        );
        assert!(known.contains("send \"check shared.test\""), "{known}");
    }

    #[test]
    fn dns_failures_are_said_once_naming_the_resolver_and_not_blaming_endpoints() {
        let reply = check_reply(&lab_report("dnsfail"), &CTX);
        assert!(
            reply.starts_with(
                "example.org: could not check, DNS lookups got no answer from 127.0.0.1:9"
            ),
            "{reply}"
        );
        assert_eq!(reply.matches("no DNS answer").count(), 1, "{reply}");
        assert!(reply.contains("--nameserver"), "{reply}");
        assert!(!reply.contains("endpoint could be reached"), "{reply}");
    }

    #[test]
    fn unsigned_leads_with_signing_then_the_records() {
        let reply = check_reply(&lab_report("unsigned"), &CTX);
        let sign = reply.find("First sign the zone").unwrap();
        let record = reply.find("IN TLSA").unwrap();
        assert!(sign < record, "{reply}");
        let text = lab_report("unsigned").to_text();
        assert!(
            text.find("First sign").unwrap() < text.find("IN TLSA").unwrap(),
            "{text}"
        );
        assert!(!text.contains("records_to_add"), "{text}");
    }

    #[test]
    fn bogus_names_the_rrsets_and_the_cause_once() {
        let reply = check_reply(&lab_report("bogus"), &CTX);
        assert_eq!(reply.matches("expired on 2020-02-01").count(), 1, "{reply}");
        for s in [
            "_xmpp-client",
            "_xmpps-client",
            "_xmpp-server",
            "_xmpps-server",
        ] {
            assert!(
                reply.contains(&format!("SRV RRset at {s}._tcp.expired.test")),
                "{reply}"
            );
        }
        assert!(!reply.contains(":5222"), "a made-up endpoint: {reply}");
    }

    #[test]
    fn group_lines_merge_same_host_and_finding_and_count_the_rest() {
        let mut r = lab_report("mismatch");
        let lines = alarm_lines(&r, usize::MAX);
        assert!(
            lines[0]
                .starts_with("xmpp.wrong.test:15222,15223,15269,15270 [127.0.0.1]: presented key"),
            "{lines:?}"
        );
        // Every endpoint a different key: at most MAX_ALERT_GROUPS lines and a count.
        let template = r.endpoints[0].clone();
        r.endpoints = (0..10u16)
            .map(|i| EndpointReport {
                port: 6000 + i,
                spki_sha256: Some(format!("{i:02}").repeat(32)),
                ..template.clone()
            })
            .collect();
        let lines = alert_lines(&r, Verdict::Mismatch);
        assert_eq!(lines.len(), MAX_ALERT_GROUPS + 1, "{lines:?}");
        assert_eq!(lines.last().unwrap(), "and 6 more endpoint(s)");
    }

    #[test]
    fn check_and_status_show_the_nearest_horizons_and_the_verdict_stays() {
        use crate::horizon::{EndpointHorizon, Horizons, RrsetHorizon};
        let mut r = lab_report("ok");
        let at = r.checked_at_unix().unwrap();
        let day = 86_400;
        let sig = |zone: &str, days: u64| {
            RrsetHorizon::new(zone, "DNSKEY", zone, 300, (at - day, at + days * day))
        };
        r.horizons = Horizons {
            zone_keys: Vec::new(),
            rrsets: vec![sig("good.test", 40), sig("test", 50), sig(".", 60)],
            endpoints: vec![EndpointHorizon {
                endpoint: "xmpps-client xmpp.good.test:15223 [127.0.0.1] direct".into(),
                not_after: at + 2 * day,
                chain_not_after: None,
                counts_for_dane: false,
                usage: None,
                selector: None,
            }],
        };
        let reply = check_reply(&r, &CTX);
        let runs: Vec<&str> = reply
            .lines()
            .filter(|l| l.starts_with("Runs out: "))
            .collect();
        assert_eq!(runs.len(), CHECK_HORIZONS, "{reply}");
        assert!(
            runs[0].contains("certificate of xmpps-client xmpp.good.test:15223"),
            "{reply}"
        );
        assert!(runs[0].contains("expires in 2 days"), "{reply}");
        assert!(
            runs[1].contains("signatures of good.test expire in 39 days"),
            "{reply}"
        );
        assert!(reply.starts_with("good.test: OK"), "{reply}");
        assert!(reply.lines().last().unwrap().starts_with("Next: "));
        // status, read three days after the check: counted from then.
        let status = status_reply(&r, "certwatch.localhost", at + 3 * day);
        let runs: Vec<&str> = status
            .lines()
            .filter(|l| l.starts_with("Runs out: "))
            .collect();
        assert_eq!(runs.len(), STATUS_HORIZONS, "{status}");
        assert!(runs[0].contains("expired 1 day ago"), "{status}");
        assert!(
            runs[2].contains("signatures of test expire in 46 days"),
            "{status}"
        );
        assert!(status.lines().last().unwrap().starts_with("Next: "));
    }
}

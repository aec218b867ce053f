//! Warnings: what a monitored check tells besides state changes, before
//! something breaks. Signatures or a certificate running out get one
//! warning per threshold crossed (`[monitor] warn_before` and 12 h; only
//! the nearest when several are crossed at once), then one "renewed" note
//! when the horizon moves out of the band it was warned in; a key rollover
//! done too fast gets one warning (see [`crate::rollover`]).
//!
//! A warning never changes the verdict, the state or the flapping count; it
//! is its own alert kind ([`AlertKind::Warning`], [`AlertKind::Renewed`]),
//! sent after the check's security alert when there is one. Warnings go out
//! in an alarm too: signature horizons come from validated DNSSEC data, and
//! certificate horizons count only for endpoints whose key matched a TLSA
//! record (an interceptor's certificate is not the admin's to renew).
//! The marks of what was warned live in [`DomainState::warned`], committed
//! with the deliveries, so a restart neither loses nor repeats a warning.

use std::collections::HashSet;
use std::time::Duration;

use crate::alert::{bounded, transition_with, AlertPolicy, MAX_CHAT_ALERT};
use crate::horizon::{
    due, in_words, utc_minutes, Horizon, HorizonKind, Horizons, SHORT_WINDOW, UNKNOWN_EFFECT,
    UNKNOWN_RENEWAL,
};
use crate::model::{Alert, AlertKind, DomainState, WarnMark, MAX_WARN_MARKS};
use crate::render;
use crate::report::{EndpointVerdict, Report, Verdict};
use crate::rollover;

/// What one monitored check tells: its next state, and its alerts in the
/// order they go out (the security alert first, then a warning, then a
/// renewed note).
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The domain's state to store.
    pub next: DomainState,
    /// The alerts, in order.
    pub alerts: Vec<Alert>,
    /// The report with its rollover notes judged against the domain's memory.
    pub report: Report,
}

/// One monitored check: the rollover watch over the domain's memory, the
/// state transition and its alert ([`transition_with`], untouched by
/// anything here), then the warnings and renewed notes due at `now` (UNIX
/// seconds) under `thresholds` (longest first, as [`crate::horizon::thresholds`]).
pub fn after_check(
    prev: &DomainState,
    mut report: Report,
    policy: &AlertPolicy,
    thresholds: &[Duration],
    now: u64,
) -> Outcome {
    let mut memory = prev.rollover.clone();
    let watched = rollover::watch(Some(&mut memory), &report.rollover_observed(), now);
    let keys = rollover::watch_keys(Some(&mut memory), &report.horizons.zone_keys, now);
    report.rollover = watched.notes;
    report.rollover.extend(keys.notes);
    let (mut next, change) = transition_with(prev, &report, policy);
    next.rollover = memory;
    let state = next.state.unwrap_or(report.verdict);
    let (mut warnings, renewed) = horizon_changes(prev, &mut next, &report, thresholds, now);
    warnings.extend(watched.warnings.into_iter().map(|n| n.text));
    warnings.extend(keys.warnings.into_iter().map(|n| n.text));
    let mut alerts: Vec<Alert> = change.into_iter().collect();
    if !warnings.is_empty() {
        alerts.push(render(
            AlertKind::Warning,
            prev.state,
            state,
            &report,
            &warnings,
        ));
    }
    if !renewed.is_empty() {
        alerts.push(render(
            AlertKind::Renewed,
            prev.state,
            state,
            &report,
            &renewed,
        ));
    }
    Outcome {
        next,
        alerts,
        report,
    }
}

/// A signature is overdue for re-signing once less than this part of its
/// lifetime (inception to expiry less TTL) is left. Every common signer
/// re-signs earlier by default (BIND at a quarter or more, OpenDNSSEC at
/// about a fifth, Knot at a tenth plus its propagation delay and the zone's
/// largest TTL, PowerDNS at two thirds), so a live signer's normal rhythm
/// never warns, while a stopped one is caught with a tenth of the lifetime
/// to go (3 days of 30).
const OVERDUE_PART: u64 = 10;

/// The horizons warnings may speak of:
/// - signatures of the zones the domain's own records are signed in (SRV,
///   CNAME, A/AAAA, TLSA, and those zones' DNSKEY RRsets), not those of
///   the zones above them (root, TLD: the admin cannot re-sign them, and
///   their signers keep short windows by design), nor DS RRsets, which the
///   parent signs (when they may warn: [`candidates`]);
/// - the certificates of endpoints whose key matched a TLSA record (an
///   interceptor's certificate is not the admin's to renew).
fn trusted(report: &Report) -> Horizons {
    let matched = |label: &str| {
        report
            .endpoints
            .iter()
            .any(|e| e.verdict == EndpointVerdict::Match && e.label() == label)
    };
    let own: HashSet<&str> = report
        .horizons
        .rrsets
        .iter()
        .filter(|r| crate::horizon::is_own_record(&r.rtype))
        .map(|r| r.zone.as_str())
        .collect();
    let mut h = report.horizons.clone();
    h.rrsets
        .retain(|r| own.contains(r.zone.as_str()) && r.rtype != "DS");
    h.endpoints.retain(|e| matched(&e.endpoint));
    h
}

/// The horizons of `trusted` that may warn now, nearest first, each with
/// whether it may: a signature only once re-signing is overdue
/// ([`OVERDUE_PART`]) or its lifetime is under [`SHORT_WINDOW`]. A zone
/// with no such signature is still listed (by its nearest), so that a
/// warned zone re-signed on its usual rhythm gets its renewed note.
fn candidates(trusted: &Horizons, now: u64) -> Vec<(Horizon, bool)> {
    let mut due_now = trusted.clone();
    due_now.rrsets.retain(|r| {
        let lifetime = r.expires_at.saturating_sub(r.inception);
        let left = r.expires_at.saturating_sub(now);
        lifetime < SHORT_WINDOW.as_secs() || left < lifetime / OVERDUE_PART
    });
    let mut out: Vec<(Horizon, bool)> = due_now
        .nearest(MAX_WARN_MARKS)
        .into_iter()
        .map(|h| (h, true))
        .collect();
    for h in trusted.nearest(MAX_WARN_MARKS) {
        if !out
            .iter()
            .any(|(o, _)| o.kind == h.kind && o.subject == h.subject)
        {
            out.push((h, false));
        }
    }
    out.truncate(MAX_WARN_MARKS);
    out
}

/// The lines of the warnings due and of the renewed notes, nearest first;
/// updates the marks in `next` (bounded by [`MAX_WARN_MARKS`]).
fn horizon_changes(
    prev: &DomainState,
    next: &mut DomainState,
    report: &Report,
    thresholds: &[Duration],
    now: u64,
) -> (Vec<String>, Vec<String>) {
    let (mut warnings, mut renewed) = (Vec::new(), Vec::new());
    let mut done = HashSet::new();
    // The nearest horizons only, so the marks never churn past their bound.
    for (h, may_warn) in candidates(&trusted(report), now) {
        // A certificate is one mark per host, whatever address served it.
        let key = match h.kind {
            HorizonKind::Signatures => format!("signatures {}", h.subject),
            HorizonKind::Certificate => format!("certificate {}", host_of(report, &h.subject)),
        };
        // Its nearest horizon speaks for it.
        if !done.insert(key.clone()) {
            continue;
        }
        let band = due(h.at, now, thresholds)
            .filter(|_| may_warn)
            .map(|i| thresholds[i].as_secs());
        let mark = WarnMark {
            threshold: band.unwrap_or(0),
            at: h.at,
            since: now,
        };
        let line = |warn: bool| describe(report, h.kind, &h.subject, h.at, now, warn);
        match (band, prev.warned.get(&key)) {
            (Some(_), None) => {
                warnings.push(line(true));
                next.warned.insert(key, mark);
            }
            (Some(t), Some(m)) if t < m.threshold => {
                warnings.push(line(true));
                next.warned.insert(key, mark);
            }
            // Moved out of its band (re-signed, renewed), still within a
            // farther one: said, and warned again when that is crossed.
            (Some(t), Some(m)) if t > m.threshold => {
                renewed.push(line(false));
                next.warned.insert(key, mark);
            }
            (None, Some(_)) => {
                renewed.push(line(false));
                next.warned.remove(&key);
            }
            _ => {}
        }
    }
    while next.warned.len() > MAX_WARN_MARKS {
        let oldest = next
            .warned
            .iter()
            .min_by_key(|(_, m)| m.since)
            .map(|(k, _)| k.clone());
        match oldest {
            Some(k) => next.warned.remove(&k),
            None => break,
        };
    }
    // The same certificate on several endpoints is one line.
    warnings.dedup();
    renewed.dedup();
    (warnings, renewed)
}

/// The host of the endpoint a certificate horizon names.
fn host_of(report: &Report, label: &str) -> String {
    report
        .endpoints
        .iter()
        .find(|e| e.label() == label)
        .map(|e| e.host.clone())
        .unwrap_or_else(|| label.to_owned())
}

/// One line: a warning ("signatures of live.example expire in 2 days
/// (2026-12-06 14:00 UTC): re-sign the zone") or a renewed note.
fn describe(
    report: &Report,
    kind: HorizonKind,
    subject: &str,
    at: u64,
    now: u64,
    warn: bool,
) -> String {
    let when = if at > now {
        format!("in {} ({})", in_words(at - now), utc_minutes(at))
    } else {
        format!("{} ago ({})", in_words(now - at), utc_minutes(at))
    };
    let past = at <= now;
    match kind {
        HorizonKind::Signatures if warn => format!(
            "signatures of {subject} {} {when}: re-sign the zone",
            if past { "expired" } else { "expire" }
        ),
        HorizonKind::Signatures => {
            format!("signatures of {subject} renewed: now expire {when}")
        }
        HorizonKind::Certificate => {
            let host = host_of(report, subject);
            if !warn {
                return format!("certificate of {host} renewed: now expires {when}");
            }
            let horizon = report
                .horizons
                .endpoints
                .iter()
                .find(|e| e.endpoint == subject);
            let (effect, renewal) = match horizon {
                Some(e) => (e.effect(), e.renewal()),
                None => (UNKNOWN_EFFECT, UNKNOWN_RENEWAL),
            };
            format!(
                "certificate of {host} {} {when}: {effect}; {renewal}",
                if past { "expired" } else { "expires" }
            )
        }
    }
}

/// A warning or renewed alert from its lines (nearest first).
fn render(
    kind: AlertKind,
    from: Option<Verdict>,
    state: Verdict,
    report: &Report,
    lines: &[String],
) -> Alert {
    let d = &report.domain;
    let first = &lines[0];
    // "signatures of live.example ..." names the domain; other lines get it in front.
    let mut title = if first.contains(&format!(" {d} ")) {
        first.clone()
    } else {
        format!("{d}: {first}")
    };
    if lines.len() > 1 {
        title.push_str(&format!(" (and {} more)", lines.len() - 1));
    }
    let state_line = match kind {
        AlertKind::Warning if state.is_alarm() => {
            format!("A warning beside the alarm: the domain is {state}, and its alert says why.")
        }
        AlertKind::Warning => format!("A warning, not an alarm: the domain is {state}."),
        _ => format!("The domain is {state}."),
    };
    let mut chat: Vec<String> = vec![title.clone()];
    chat.extend(lines.iter().skip(1).cloned());
    chat.push(state_line.clone());
    let last = format!(
        "Checked at {}. Details: send \"status {d}\".",
        report.checked_at
    );
    let content = format!(
        "{title}\n{}\n{state_line}\n\n{}",
        lines.join("\n"),
        render::details(report)
    );
    Alert {
        kind,
        id: format!(
            "{}-{}-{:08x}",
            report.checked_at.replace([':', '-'], ""),
            kind.as_str(),
            rand::random::<u32>()
        ),
        domain: d.clone(),
        from,
        to: state,
        title,
        content,
        chat: bounded(&chat, &last, MAX_CHAT_ALERT),
        updated: report.checked_at.clone(),
    }
}

#[cfg(test)]
mod tests;

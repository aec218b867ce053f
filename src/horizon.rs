//! Lifetime horizons: when what a verdict rests on runs out.
//!
//! Most DANE outages are not attacks: a zone's signatures expire because
//! re-signing stopped, a certificate is renewed with a new key before its
//! TLSA record is out. A check sees every piece, so the report carries, for
//! each signed RRset a verdict rests on and for each endpoint, when it runs
//! out ([`Horizons`]); the monitor turns the nearest of them into warnings
//! before they break. Nothing here changes a verdict.
//!
//! Times are UNIX seconds in memory and RFC 3339 (UTC) in JSON.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A signature validity window (inception to expiration, less the TTL)
/// shorter than this is "one missed re-signing from breaking": signers
/// re-sign well before expiry, commonly days ahead.
pub const SHORT_WINDOW: Duration = Duration::from_secs(3 * 24 * 3600);

/// Most zone-problem lines a report shows (then one "and N more zones").
pub const MAX_ZONE_PROBLEMS: usize = 3;

/// The last warning before a horizon, whatever `[monitor] warn_before` says.
pub const LAST_WARNING: Duration = Duration::from_secs(12 * 3600);

/// What is wrong with a signature's timing, beyond its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureProblem {
    /// The signature's inception is in the future. Checks no longer give
    /// it: a horizon comes only from a signature valid at the check's clock
    /// (a zone whose only signatures start later is bogus, and the check
    /// says so with the date). Kept so that reports stored by earlier
    /// versions still read.
    InceptionInFuture,
    /// The validity window is shorter than [`SHORT_WINDOW`].
    ShortValidity,
}

/// The earliest-expiring signature of one RRset a verdict rests on
/// (docs/json.md `horizons.rrsets[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RrsetHorizon {
    /// The owner name, lowercase, without the trailing dot.
    pub name: String,
    /// The record type: SRV, CNAME, A, AAAA, TLSA, DNSKEY or DS.
    #[serde(rename = "type")]
    pub rtype: String,
    /// The signer: the zone whose key made the signature.
    pub zone: String,
    /// The RRset's original TTL (as the signature gives it), in seconds.
    pub ttl: u32,
    /// The signature's inception.
    #[serde(with = "rfc3339_secs")]
    pub inception: u64,
    /// The signature's expiration.
    #[serde(with = "rfc3339_secs")]
    pub expiration: u64,
    /// When the RRset stops being safe: expiration minus TTL, since a
    /// resolver may hand out the data (and this signature) until then
    /// ([`usable_until`]).
    #[serde(with = "rfc3339_secs")]
    pub expires_at: u64,
    /// A problem with the signature's timing, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<SignatureProblem>,
}

impl RrsetHorizon {
    /// The horizon of an RRset from one signature's fields (a signature
    /// that verified, valid at the check's clock).
    pub fn new(
        name: &str,
        rtype: &str,
        zone: &str,
        ttl: u32,
        (inception, expiration): (u64, u64),
    ) -> RrsetHorizon {
        RrsetHorizon {
            name: dns_name(name),
            rtype: rtype.to_owned(),
            zone: dns_name(zone),
            ttl,
            inception,
            expiration,
            expires_at: usable_until(expiration, ttl),
            problem: signature_problem(inception, expiration, ttl),
        }
    }
}

/// When a certificate an endpoint presented runs out
/// (docs/json.md `horizons.endpoints[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointHorizon {
    /// "service host:port [address] tls", as in alerts.
    pub endpoint: String,
    /// The presented leaf certificate's notAfter.
    #[serde(with = "rfc3339_secs")]
    pub not_after: u64,
    /// Under usages 0, 1 and 2: the earliest notAfter among the
    /// certificates the match rests on (DANE-TA: from the leaf up to the
    /// matching trust anchor, RFC 7671 §5.2.2; PKIX: the leaf and the
    /// validated path's intermediates).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_rfc3339_secs"
    )]
    pub chain_not_after: Option<u64>,
    /// Whether the DANE verdict depends on these dates: under DANE-TA and
    /// the PKIX usages (0, 1, 2) the match needs valid certificates; under
    /// DANE-EE (usage 3) it does not, but clients that check the
    /// certificate against a CA still fail when it expires.
    pub counts_for_dane: bool,
    /// The usage of the TLSA record that matched (addition; absent in
    /// reports stored by earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<u8>,
    /// The selector of the TLSA record that matched: 0 pins the whole
    /// certificate, so a renewed one needs its record published first
    /// (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<u8>,
}

/// A certificate's effect when the matched record is not known (reports
/// stored by earlier versions).
pub const UNKNOWN_EFFECT: &str = "clients that check the certificate against a CA fail then";
/// Its renewal advice then.
pub const UNKNOWN_RENEWAL: &str =
    "renew it, keeping the key or publishing the new key's TLSA record first";

impl EndpointHorizon {
    /// What the certificate running out breaks, under the matched record.
    pub fn effect(&self) -> &'static str {
        match self.usage {
            Some(2) => "its DANE-TA record (2 x x) authenticates it only while it is valid, so the check fails then",
            Some(1) => "its PKIX-EE record (1 x x) needs a valid PKIX path, so the check fails then",
            Some(0) => "its PKIX-TA record (0 x x) needs a valid PKIX path, so the check fails then",
            Some(3) => "with a DANE-EE record (3 x x) this date does not affect the key check, but clients that check the certificate against a CA fail then",
            _ => UNKNOWN_EFFECT,
        }
    }

    /// How to renew the certificate without breaking the match: a record
    /// on the server's own certificate with selector 0 pins the whole
    /// certificate, which renewing always changes.
    pub fn renewal(&self) -> &'static str {
        match (self.usage, self.selector) {
            (Some(1 | 3), Some(0)) => "renew it, but publish the new certificate's TLSA record before installing it (a record with selector 0 pins the whole certificate, which renewing changes)",
            (Some(0 | 2), _) => "renew it under the same trust anchor, or publish the new anchor's TLSA record first",
            _ => UNKNOWN_RENEWAL,
        }
    }

    /// The date that matters for warnings: the chain's when the dates
    /// count (usages 0, 1, 2), the leaf's otherwise.
    pub fn expires_at(&self) -> u64 {
        match self.chain_not_after {
            Some(chain) if self.counts_for_dane => chain.min(self.not_after),
            _ => self.not_after,
        }
    }
}

/// Every horizon a check saw (docs/json.md `horizons`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizons {
    /// Per signed RRset the verdict rests on: its earliest-expiring signature.
    #[serde(default)]
    pub rrsets: Vec<RrsetHorizon>,
    /// Per endpoint that presented a certificate.
    #[serde(default)]
    pub endpoints: Vec<EndpointHorizon>,
    /// Per zone that signs the domain's own records and whose secure DS
    /// (in the parent) and DNSKEY RRsets the check fetched: which DS
    /// matches which key, for the KSK rollover notes (not in the JSON; the
    /// notes are).
    #[serde(skip)]
    pub zone_keys: Vec<ZoneKeys>,
}

/// A zone's secure DS RRset (in its parent) against its secure DNSKEY
/// RRset, as one check saw them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneKeys {
    /// The zone, lowercase, without the trailing dot.
    pub zone: String,
    /// Its DS records.
    pub ds: Vec<DsSeen>,
    /// Its SEP (KSK) DNSKEY records, revoked ones left out.
    pub keys: Vec<KeySeen>,
    /// The DS RRset's TTL from a signature over it that verifies.
    pub ds_ttl: Option<u32>,
}

/// One DS record and whether it matches a DNSKEY of its zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsSeen {
    /// The key tag it names.
    pub key_tag: u16,
    /// The key's algorithm number.
    pub algorithm: u8,
    /// The digest type number.
    pub digest_type: u8,
    /// The digest, lowercase hex.
    pub digest: String,
    /// Its digest is that of a DNSKEY the zone publishes.
    pub matches: bool,
}

impl DsSeen {
    /// Presentation form: "12345 13 2 ab…" (lowercase).
    pub fn record(&self) -> String {
        format!(
            "{} {} {} {}",
            self.key_tag, self.algorithm, self.digest_type, self.digest
        )
    }
}

/// One SEP (KSK) DNSKEY and whether a DS matches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySeen {
    /// Its key tag.
    pub key_tag: u16,
    /// Its algorithm number.
    pub algorithm: u8,
    /// A DS record of the zone matches it.
    pub matched: bool,
}

/// What kind of thing runs out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HorizonKind {
    /// DNSSEC signatures (of some RRset, or a zone's keys).
    Signatures,
    /// A certificate an endpoint presented.
    Certificate,
}

/// One horizon, whatever it is: what runs out and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Horizon {
    /// Signatures or a certificate.
    pub kind: HorizonKind,
    /// What: "the SRV of _xmpp-client._tcp.example.org (zone example.org)",
    /// or the endpoint.
    pub what: String,
    /// The zone (signatures) or the host (certificate): what one warning
    /// is about, and what the admin fixes.
    pub subject: String,
    /// When it runs out (UNIX seconds).
    pub at: u64,
}

impl Horizons {
    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.rrsets.is_empty() && self.endpoints.is_empty()
    }

    /// Every horizon, nearest first (ties in a stable order).
    pub fn all(&self) -> Vec<Horizon> {
        let mut all: Vec<Horizon> = self
            .rrsets
            .iter()
            .map(|r| Horizon {
                kind: HorizonKind::Signatures,
                what: format!("the {} of {} (zone {})", r.rtype, r.name, r.zone),
                subject: r.zone.clone(),
                at: r.expires_at,
            })
            .chain(self.endpoints.iter().map(|e| Horizon {
                kind: HorizonKind::Certificate,
                what: e.endpoint.clone(),
                subject: e.endpoint.clone(),
                at: e.expires_at(),
            }))
            .collect();
        all.sort_by(|a, b| (a.at, a.kind, &a.what).cmp(&(b.at, b.kind, &b.what)));
        all
    }

    /// The `n` nearest horizons, at most one per subject (its nearest).
    pub fn nearest(&self, n: usize) -> Vec<Horizon> {
        let mut seen = std::collections::HashSet::new();
        self.all()
            .into_iter()
            .filter(|h| seen.insert((h.kind, h.subject.clone())))
            .take(n)
            .collect()
    }

    /// The `n` [`nearest`](Horizons::nearest) horizons as lines for
    /// people, counted from `now`: what runs out, when, what to do.
    pub fn lines(&self, n: usize, now: u64) -> Vec<String> {
        self.nearest(n)
            .iter()
            .map(|h| {
                let when = if h.at > now {
                    format!("in {} ({})", in_words(h.at - now), utc_minutes(h.at))
                } else {
                    format!("{} ago ({})", in_words(now - h.at), utc_minutes(h.at))
                };
                match h.kind {
                    HorizonKind::Signatures if h.at > now => format!(
                        "signatures of {} expire {when}, counting the TTL: re-sign the zone (is its signer running?)",
                        zone_words(&h.subject)
                    ),
                    HorizonKind::Signatures => format!(
                        "signatures of {} ran out {when}, counting the TTL: resolvers may refuse its data now; re-sign the zone",
                        zone_words(&h.subject)
                    ),
                    HorizonKind::Certificate => self.certificate_line(h, &when, h.at > now),
                }
            })
            .collect()
    }

    /// The line of a certificate horizon: what runs out, what that breaks
    /// under the matched record, and how to renew without breaking it.
    fn certificate_line(&self, h: &Horizon, when: &str, ahead: bool) -> String {
        let e = self.endpoints.iter().find(|e| e.endpoint == h.what);
        let verb = if ahead { "expires" } else { "expired" };
        let what = match e {
            Some(e) if e.counts_for_dane && e.chain_not_after.is_some_and(|c| c < e.not_after) => {
                match e.usage {
                    Some(0 | 1) => "a certificate on the PKIX path of",
                    _ => "a certificate on the way to the DANE-TA trust anchor of",
                }
            }
            _ => "the certificate of",
        };
        let (effect, renewal) = match e {
            Some(e) => (e.effect(), e.renewal()),
            None => (UNKNOWN_EFFECT, UNKNOWN_RENEWAL),
        };
        format!("{what} {} {verb} {when}: {effect}; {renewal}", h.what)
    }

    /// Signatures whose timing is wrong beyond expiry, one line per zone
    /// and problem (a zone signed with a short window has it on every
    /// RRset), at most [`MAX_ZONE_PROBLEMS`] lines and one that counts the
    /// zones left out.
    pub fn zone_problems(&self) -> Vec<String> {
        let mut lines = self.all_zone_problems();
        if lines.len() > MAX_ZONE_PROBLEMS {
            let shown: std::collections::HashSet<&str> = lines[..MAX_ZONE_PROBLEMS]
                .iter()
                .map(|(zone, _)| zone.as_str())
                .collect();
            let mut more: Vec<&str> = lines
                .iter()
                .map(|(zone, _)| zone.as_str())
                .filter(|z| !shown.contains(z))
                .collect();
            more.sort_unstable();
            more.dedup();
            let more = more.len();
            lines.truncate(MAX_ZONE_PROBLEMS);
            let mut out: Vec<String> = lines.into_iter().map(|(_, l)| l).collect();
            if more > 0 {
                out.push(format!(
                    "and {more} more zone{} with signature problems",
                    if more == 1 { "" } else { "s" }
                ));
            }
            return out;
        }
        lines.into_iter().map(|(_, l)| l).collect()
    }

    /// Every (zone, line) of [`zone_problems`](Horizons::zone_problems).
    fn all_zone_problems(&self) -> Vec<(String, String)> {
        let mut seen: Vec<(&str, SignatureProblem)> = Vec::new();
        let mut out = Vec::new();
        for r in &self.rrsets {
            let Some(problem) = r.problem else { continue };
            if seen.contains(&(r.zone.as_str(), problem)) {
                continue;
            }
            seen.push((r.zone.as_str(), problem));
            let zone = zone_words(&r.zone);
            let line = match problem {
                SignatureProblem::InceptionInFuture => format!(
                    "signatures of {zone} start only at {} (the signer's clock runs ahead, or ours behind): validators reject them until then",
                    utc_minutes(r.inception)
                ),
                SignatureProblem::ShortValidity => format!(
                    "signatures of {zone} are valid for only {} counting the TTL (the {} of {}: inception to expiration less {} s): one missed re-signing breaks the zone; sign for longer",
                    in_words(r.expires_at.saturating_sub(r.inception)),
                    r.rtype,
                    r.name,
                    r.ttl
                ),
            };
            out.push((r.zone.clone(), line));
        }
        out
    }
}

/// A DNS name as horizons keep it: lowercase, without the trailing dot;
/// the root stays `.`.
fn dns_name(name: &str) -> String {
    match name.trim_end_matches('.') {
        "" => ".".to_owned(),
        n => n.to_ascii_lowercase(),
    }
}

/// A zone in words: "example.org", or "the root zone".
fn zone_words(zone: &str) -> String {
    match zone {
        "." | "" => "the root zone".to_owned(),
        z => z.to_owned(),
    }
}

/// Whether an RRset of type `rtype` is one of the domain's own records (SRV,
/// CNAME, A/AAAA, TLSA) rather than a zone's keys (DNSKEY) or a delegation
/// (DS): the zones that sign such records are the domain admin's to re-sign
/// and roll; the TLD and the root above them are not.
pub fn is_own_record(rtype: &str) -> bool {
    !matches!(rtype, "DNSKEY" | "DS")
}

/// When signed data stops being safe: the signature's expiration minus the
/// RRset's TTL, because a resolver that fetched the data just before
/// expiration may hand it out for one TTL more, and validators downstream
/// then reject it (as check_dnssec_expiration and DNSViz count it). A TTL
/// longer than the remaining validity gives a time already past.
pub fn usable_until(expiration: u64, ttl: u32) -> u64 {
    expiration.saturating_sub(u64::from(ttl))
}

/// A problem with a signature's timing, if any: a window (less the TTL)
/// shorter than [`SHORT_WINDOW`]. A signature not valid yet gives no
/// horizon at all, so it is no problem of one.
pub fn signature_problem(inception: u64, expiration: u64, ttl: u32) -> Option<SignatureProblem> {
    let window = usable_until(expiration, ttl).saturating_sub(inception);
    (window < SHORT_WINDOW.as_secs()).then_some(SignatureProblem::ShortValidity)
}

/// The warning thresholds in force: those configured, and [`LAST_WARNING`],
/// longest first, without repeats.
pub fn thresholds(configured: &[Duration]) -> Vec<Duration> {
    let mut all: Vec<Duration> = configured.iter().copied().chain([LAST_WARNING]).collect();
    all.sort_by(|a, b| b.cmp(a));
    all.dedup();
    all
}

/// Which warning is due for a horizon at `at` seen at `now`: the index in
/// `thresholds` (longest first) of the nearest threshold crossed, so that
/// a domain first seen two days before expiry gets one warning, for the
/// nearest, not one per threshold. `None` while no threshold is crossed.
/// Exactly at a threshold counts as crossed; a horizon already past counts
/// as the last.
pub fn due(at: u64, now: u64, thresholds: &[Duration]) -> Option<usize> {
    let remaining = at.saturating_sub(now);
    thresholds.iter().rposition(|t| remaining <= t.as_secs())
}

/// A span in words, rounded down to its largest unit: "2 days", "5 hours",
/// "40 minutes", "1 minute"; "less than a minute" below that.
pub fn in_words(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s >= 86_400 => (s / 86_400, "day"),
        s if s >= 3_600 => (s / 3_600, "hour"),
        s if s >= 60 => (s / 60, "minute"),
        _ => return "less than a minute".to_owned(),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A time as an admin reads it in a warning: "2026-12-06 14:00 UTC".
pub fn utc_minutes(unix: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix);
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-12-06T14:00:00Z
    format!("{} {} UTC", &s[..10], &s[11..16])
}

/// Seconds since the UNIX epoch (0 before it).
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `u64` UNIX seconds as an RFC 3339 string in JSON.
mod rfc3339_secs {
    use std::time::{Duration, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
        let t = UNIX_EPOCH + Duration::from_secs(*secs);
        s.serialize_str(&humantime::format_rfc3339_seconds(t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        let t = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
        Ok(super::unix(t))
    }
}

/// An optional [`rfc3339_secs`].
mod opt_rfc3339_secs {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(secs: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match secs {
            Some(secs) => super::rfc3339_secs::serialize(secs, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        text.map(|text| {
            humantime::parse_rfc3339(&text)
                .map(super::unix)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z

    #[test]
    fn rfc4034_expiry_less_ttl_is_when_data_stops_being_safe() {
        assert_eq!(usable_until(NOW + DAY, 3600), NOW + DAY - 3600);
        // TTL longer than what is left: already past (never an overflow).
        assert_eq!(usable_until(100, 3600), 0);
        assert!(usable_until(NOW + 600, 3600) < NOW);
        // Zero TTL: the expiration itself.
        assert_eq!(usable_until(NOW, 0), NOW);
    }

    #[test]
    fn a_short_window_is_a_problem() {
        // dnssec-signzone -e now+2d (inception an hour back): short.
        let short = signature_problem(NOW - 3600, NOW + 2 * DAY, 3600);
        assert_eq!(short, Some(SignatureProblem::ShortValidity));
        // The usual 30 days: fine.
        assert_eq!(signature_problem(NOW - 3600, NOW + 30 * DAY, 3600), None);
        // Exactly the short window (less the TTL) is not short.
        let edge = signature_problem(NOW, NOW + SHORT_WINDOW.as_secs() + 3600, 3600);
        assert_eq!(edge, None);
        let under = signature_problem(NOW, NOW + SHORT_WINDOW.as_secs() + 3599, 3600);
        assert_eq!(under, Some(SignatureProblem::ShortValidity));
        // A later inception is no problem of its own (such a signature
        // does not verify at the check's clock and gives no horizon).
        assert_eq!(signature_problem(NOW + 60, NOW + 30 * DAY, 3600), None);
    }

    #[test]
    fn the_nearest_crossed_threshold_is_due_and_only_that_one() {
        let t = thresholds(&[Duration::from_secs(3 * DAY), Duration::from_secs(14 * DAY)]);
        assert_eq!(
            t.iter().map(|d| d.as_secs() / 3600).collect::<Vec<_>>(),
            [336, 72, 12]
        );
        // Far away: nothing.
        assert_eq!(due(NOW + 15 * DAY, NOW, &t), None);
        // Exactly at 14 days: crossed.
        assert_eq!(due(NOW + 14 * DAY, NOW, &t), Some(0));
        assert_eq!(due(NOW + 14 * DAY + 1, NOW, &t), None);
        // First seen two days before: the 3-day warning, not the 14-day one too.
        assert_eq!(due(NOW + 2 * DAY, NOW, &t), Some(1));
        // Exactly 12 h, and past: the last.
        assert_eq!(due(NOW + 12 * 3600, NOW, &t), Some(2));
        assert_eq!(due(NOW - DAY, NOW, &t), Some(2));
    }

    #[test]
    fn thresholds_always_end_with_the_last_warning_once() {
        assert_eq!(thresholds(&[]), [LAST_WARNING]);
        assert_eq!(thresholds(&[LAST_WARNING, LAST_WARNING]), [LAST_WARNING]);
        let t = thresholds(&[Duration::from_secs(3600)]);
        assert_eq!(t, [LAST_WARNING, Duration::from_secs(3600)]);
    }

    #[test]
    fn spans_and_times_read_as_words() {
        assert_eq!(in_words(2 * DAY + 5), "2 days");
        assert_eq!(in_words(DAY), "1 day");
        assert_eq!(in_words(5 * 3600 + 59), "5 hours");
        assert_eq!(in_words(60), "1 minute");
        assert_eq!(in_words(59), "less than a minute");
        assert_eq!(utc_minutes(NOW), "2027-01-15 08:00 UTC");
    }

    fn rrset(name: &str, zone: &str, expiration: u64) -> RrsetHorizon {
        RrsetHorizon::new(name, "TLSA", zone, 3600, (NOW - 3600, expiration))
    }

    #[test]
    fn nearest_keeps_one_per_subject_nearest_first() {
        let h = Horizons {
            zone_keys: Vec::new(),
            rrsets: vec![
                rrset(
                    "_5222._tcp.xmpp.example.org.",
                    "Example.org.",
                    NOW + 20 * DAY,
                ),
                rrset("_5269._tcp.xmpp.example.org", "example.org", NOW + 10 * DAY),
                rrset("example.org", "org", NOW + 40 * DAY),
            ],
            endpoints: vec![EndpointHorizon {
                endpoint: "xmpp-client xmpp.example.org:5222 [127.0.0.1] starttls".into(),
                not_after: NOW + 15 * DAY,
                chain_not_after: Some(NOW + 5 * DAY),
                counts_for_dane: false,
                usage: None,
                selector: None,
            }],
        };
        let n = h.nearest(3);
        assert_eq!(n.len(), 3);
        assert_eq!(n[0].subject, "example.org");
        assert_eq!(n[0].at, NOW + 10 * DAY - 3600);
        assert_eq!(n[1].kind, HorizonKind::Certificate);
        // DANE-EE: the leaf's date, not the chain's.
        assert_eq!(n[1].at, NOW + 15 * DAY);
        assert_eq!(n[2].subject, "org");
        assert_eq!(h.rrsets[0].name, "_5222._tcp.xmpp.example.org");
    }

    #[test]
    fn under_dane_ta_the_chain_counts() {
        let mut e = EndpointHorizon {
            endpoint: "e".into(),
            not_after: NOW + 15 * DAY,
            chain_not_after: Some(NOW + 5 * DAY),
            counts_for_dane: true,
            usage: None,
            selector: None,
        };
        assert_eq!(e.expires_at(), NOW + 5 * DAY);
        e.chain_not_after = None;
        assert_eq!(e.expires_at(), NOW + 15 * DAY);
    }

    #[test]
    fn json_gives_rfc3339_and_reads_back() {
        let h = Horizons {
            zone_keys: Vec::new(),
            rrsets: vec![rrset("a.example", "example", NOW + DAY)],
            endpoints: vec![],
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["rrsets"][0]["expires_at"], "2027-01-16T07:00:00Z");
        assert_eq!(v["rrsets"][0]["type"], "TLSA");
        assert_eq!(v["rrsets"][0]["problem"], "short_validity");
        let back: Horizons = serde_json::from_value(v).unwrap();
        assert_eq!(back, h);
        assert!(
            h.zone_problems()[0].contains("valid for only 1 day"),
            "{:?}",
            h.zone_problems()
        );
        // A problem only earlier versions gave still reads.
        let mut v = serde_json::to_value(&h).unwrap();
        v["rrsets"][0]["problem"] = "inception_in_future".into();
        let old: Horizons = serde_json::from_value(v).unwrap();
        assert_eq!(
            old.rrsets[0].problem,
            Some(SignatureProblem::InceptionInFuture)
        );
    }

    #[test]
    fn lines_say_what_runs_out_when_and_what_to_do() {
        let h = Horizons {
            zone_keys: Vec::new(),
            rrsets: vec![
                RrsetHorizon::new(
                    "example.org.",
                    "DNSKEY",
                    "example.org.",
                    3600,
                    (NOW - DAY, NOW + 2 * DAY),
                ),
                RrsetHorizon::new(
                    "a.example.org",
                    "A",
                    "example.org",
                    3600,
                    (NOW - DAY, NOW + 2 * DAY),
                ),
                RrsetHorizon::new(".", "DNSKEY", ".", 3600, (NOW - DAY, NOW + 20 * DAY)),
                // Past its safe end: expiration less a TTL longer than what is left.
                RrsetHorizon::new("org", "DS", "org", 7200, (NOW - DAY, NOW + 3600)),
            ],
            endpoints: vec![
                EndpointHorizon {
                    endpoint: "xmpps-client x.example.org:5223 [192.0.2.1] direct".into(),
                    not_after: NOW + 3 * DAY,
                    chain_not_after: None,
                    counts_for_dane: false,
                    usage: Some(3),
                    selector: Some(1),
                },
                EndpointHorizon {
                    endpoint: "xmpps-server x.example.org:5270 [192.0.2.1] direct".into(),
                    not_after: NOW + 30 * DAY,
                    chain_not_after: Some(NOW + 4 * DAY),
                    counts_for_dane: true,
                    usage: Some(2),
                    selector: Some(1),
                },
            ],
        };
        let lines = h.lines(10, NOW);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert_eq!(
            lines[0],
            "signatures of org ran out 1 hour ago (2027-01-15 07:00 UTC), counting the TTL: resolvers may refuse its data now; re-sign the zone"
        );
        assert!(
            lines[1]
                .starts_with("signatures of example.org expire in 1 day (2027-01-17 07:00 UTC)"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("the certificate of xmpps-client x.example.org:5223 [192.0.2.1] direct expires in 3 days")
                && lines[2].contains("DANE-EE")
                && lines[2].contains("clients that check the certificate against a CA fail then"),
            "{lines:#?}"
        );
        assert!(
            lines[3].starts_with(
                "a certificate on the way to the DANE-TA trust anchor of xmpps-server"
            ) && lines[3].contains("in 4 days")
                && lines[3].contains("the check fails then"),
            "{lines:#?}"
        );
        assert!(
            lines[4].starts_with("signatures of the root zone expire in 19 days"),
            "{lines:#?}"
        );
        assert_eq!(h.lines(2, NOW).len(), 2);
        // One line per zone and problem, however many RRsets share it.
        let problems = h.zone_problems();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].starts_with("signatures of example.org are valid for only 2 days"),
            "{problems:#?}"
        );
        assert!(
            problems[1].starts_with("signatures of org are valid for only"),
            "{problems:#?}"
        );
    }

    #[test]
    fn rfc7671_the_certificate_line_follows_the_matched_records_usage_and_selector() {
        let line = |usage: u8, selector: u8, chain: Option<u64>| {
            let h = Horizons {
                zone_keys: Vec::new(),
                rrsets: vec![],
                endpoints: vec![EndpointHorizon {
                    endpoint: "e".into(),
                    not_after: NOW + 10 * DAY,
                    chain_not_after: chain,
                    counts_for_dane: usage != 3,
                    usage: Some(usage),
                    selector: Some(selector),
                }],
            };
            h.lines(1, NOW).remove(0)
        };
        // PKIX usages fail with the certificate, dated by the path.
        for usage in [0, 1] {
            let l = line(usage, 1, Some(NOW + 2 * DAY));
            assert!(
                l.starts_with("a certificate on the PKIX path of e expires in 2 days")
                    && l.contains("needs a valid PKIX path, so the check fails then")
                    && !l.contains("does not affect the key check"),
                "{l}"
            );
        }
        let l = line(1, 1, Some(NOW + 10 * DAY));
        assert!(
            l.starts_with("the certificate of e expires in 10 days"),
            "{l}"
        );
        // Selector 0 on the server's own certificate: publish first.
        for usage in [1, 3] {
            let l = line(usage, 0, None);
            assert!(
                l.contains("publish the new certificate's TLSA record before installing it")
                    && !l.contains("keeping the key"),
                "{l}"
            );
        }
        let l = line(3, 1, None);
        assert!(
            l.contains("with a DANE-EE record (3 x x) this date does not affect the key check")
                && l.contains("keeping the key or publishing the new key's TLSA record first"),
            "{l}"
        );
        let l = line(2, 0, Some(NOW + 10 * DAY));
        assert!(
            l.contains("DANE-TA record (2 x x)") && l.contains("under the same trust anchor"),
            "{l}"
        );
        // A horizon stored by an earlier version (no usage): no DANE claim.
        let old = Horizons {
            zone_keys: Vec::new(),
            rrsets: vec![],
            endpoints: vec![EndpointHorizon {
                endpoint: "e".into(),
                not_after: NOW + DAY,
                chain_not_after: None,
                counts_for_dane: false,
                usage: None,
                selector: None,
            }],
        };
        let l = old.lines(1, NOW).remove(0);
        assert!(!l.contains("DANE-EE") && l.contains("against a CA"), "{l}");
    }

    #[test]
    fn zone_problem_lines_are_bounded() {
        let zones = 40;
        let h = Horizons {
            zone_keys: Vec::new(),
            rrsets: (0..zones)
                .flat_map(|i| {
                    let zone = format!("z{i:02}.example");
                    [
                        rrset(&format!("a.{zone}"), &zone, NOW + DAY),
                        rrset(&format!("b.{zone}"), &zone, NOW + DAY),
                    ]
                })
                .collect(),
            endpoints: vec![],
        };
        let lines = h.zone_problems();
        assert_eq!(lines.len(), MAX_ZONE_PROBLEMS + 1, "{lines:#?}");
        assert!(
            lines[0].starts_with("signatures of z00.example"),
            "{lines:#?}"
        );
        assert_eq!(
            lines[MAX_ZONE_PROBLEMS],
            format!(
                "and {} more zones with signature problems",
                zones - MAX_ZONE_PROBLEMS
            )
        );
        // At the bound: no count line.
        let few = Horizons {
            zone_keys: Vec::new(),
            rrsets: h.rrsets[..2 * MAX_ZONE_PROBLEMS].to_vec(),
            endpoints: vec![],
        };
        assert_eq!(few.zone_problems().len(), MAX_ZONE_PROBLEMS);
    }
}

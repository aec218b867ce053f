//! The result of a check: verdicts, the JSON of docs/json.md, exit codes, text.

use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::horizon::{unix, Horizons};
use crate::rollover::{Observed, RolloverNote};

/// How many horizons the text report (`check`) shows.
pub const TEXT_HORIZONS: usize = 5;

/// The verdict for one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointVerdict {
    /// The presented key matched a TLSA record.
    Match,
    /// The presented key matched none of the TLSA records.
    Mismatch,
    /// Secure, but no usable TLSA records.
    NoTlsa,
    /// DANE does not apply: the zone (or the SRV/address/TLSA chain) is unsigned.
    Insecure,
    /// DNSSEC validation failed on the way.
    Bogus,
    /// TLSA requires TLS but the server did not offer STARTTLS.
    StarttlsMissing,
    /// No connection or no TLS handshake.
    Unreachable,
    /// Not checked: our own Tor client or SOCKS5 proxy could not carry the
    /// probe, so nothing is known about the server (addition).
    NotChecked,
}

/// The verdict for the whole domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Protected.
    Ok,
    /// Some endpoint presented a key no record matches (or dropped STARTTLS).
    Mismatch,
    /// DNSSEC validation failed.
    Bogus,
    /// The zone is not signed.
    Insecure,
    /// Signed, but TLSA records are missing or unusable.
    NoTlsa,
    /// Nothing could be checked.
    Unreachable,
}

impl Verdict {
    /// The exit status of `check` (docs/cli.md).
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Ok => 0,
            Verdict::Mismatch | Verdict::Bogus => 1,
            Verdict::Insecure | Verdict::NoTlsa => 2,
            Verdict::Unreachable => 3,
        }
    }

    /// The verdict as written in JSON and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Mismatch => "mismatch",
            Verdict::Bogus => "bogus",
            Verdict::Insecure => "insecure",
            Verdict::NoTlsa => "no_tlsa",
            Verdict::Unreachable => "unreachable",
        }
    }

    /// Whether this is an alarm (exit 1).
    pub fn is_alarm(self) -> bool {
        self.exit_code() == 1
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One probe that saw a key: how it travelled, and the key (docs/json.md `vantage`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vantage {
    /// tor, socks5 or direct.
    pub transport: String,
    /// Over Tor, the exit relay's RSA identity fingerprint (40 lowercase hex
    /// digits); absent for socks5 (the proxy does not say) and direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// SHA-256 of the SPKI of the leaf this probe was presented.
    pub spki_sha256: String,
    /// The agent (`[[vantage]] name`) that made the probe; absent for the
    /// coordinator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// One endpoint in the report (docs/json.md `endpoints[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointReport {
    /// xmpp-client, xmpps-client, xmpp-server or xmpps-server.
    pub service: String,
    /// The SRV target.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The address probed (null when the host has none).
    pub address: Option<IpAddr>,
    /// starttls or direct.
    pub tls: String,
    /// The endpoint's verdict.
    pub verdict: EndpointVerdict,
    /// The TLSA records in presentation form.
    pub tlsa: Vec<String>,
    /// SHA-256 of the presented leaf's SPKI, when a handshake happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spki_sha256: Option<String>,
    /// SHA-256 of the presented leaf certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// The record that matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    /// Not in JSON (the check's horizons carry it): when the match stops
    /// holding, the earliest notAfter among the certificates it rests on
    /// under usages 0, 1 and 2 (`dane::MatchOutcome::Matched`); None under
    /// DANE-EE and without a match.
    #[serde(skip)]
    pub matched_until: Option<u64>,
    /// Why it was unreachable (or what failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The TLSA owner name (an addition to the contract).
    pub tlsa_name: String,
    /// The TLS version negotiated (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// The cipher suite negotiated (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// Details from the matcher or DNS (addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Each probe that saw a key, in order (addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vantage: Vec<Vantage>,
    /// On a mismatch: whether a second probe (over Tor, through a different
    /// exit relay) saw a non-matching key too; false when it could not be made (addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
}

impl EndpointReport {
    /// "service host:port [address] tls", as alerts, evidence and horizons name it.
    pub fn label(&self) -> String {
        format!(
            "{} {}:{} [{}] {}",
            self.service,
            self.host,
            self.port,
            self.address.map(|a| a.to_string()).unwrap_or_default(),
            self.tls
        )
    }

    /// Whether this endpoint is in alarm (mismatch, STARTTLS missing, bogus).
    pub fn is_alarm(&self) -> bool {
        matches!(
            self.verdict,
            EndpointVerdict::Mismatch | EndpointVerdict::StarttlsMissing | EndpointVerdict::Bogus
        )
    }

    /// A mismatch whose confirming probe could not be made.
    pub fn is_unconfirmed_mismatch(&self) -> bool {
        self.verdict == EndpointVerdict::Mismatch && self.confirmed == Some(false)
    }
}

/// The result of one check (docs/json.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The domain, lowercase ASCII.
    pub domain: String,
    /// RFC 3339 UTC time of the check.
    pub checked_at: String,
    /// The overall verdict.
    pub verdict: Verdict,
    /// Every endpoint.
    pub endpoints: Vec<EndpointReport>,
    /// Zone-file lines to publish.
    pub records_to_add: Vec<String>,
    /// What to do, one sentence each.
    pub advice: Vec<String>,
    /// How the probes travelled (addition): tor, socks5 or direct.
    pub transport: String,
    /// Resolver or transport failures that limited the check (addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// RRsets that failed DNSSEC validation without an endpoint to show it
    /// (a forged or broken SRV answer or denial), each an alarm (addition).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bogus_rrsets: Vec<String>,
    /// What each endpoint in mismatch presented, for forensics: kept with
    /// the alert it raises (not in the JSON, not in the stored report).
    #[serde(skip)]
    pub evidence: Vec<Evidence>,
    /// The domain does not exist: NXDOMAIN for its SRV and address names
    /// (addition).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nxdomain: bool,
    /// The resolvers asked, when lookups got no answer from them
    /// (addition): the check could not see the domain's DNS at all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolvers: Vec<String>,
    /// When the signatures and certificates this check rests on run out
    /// (addition; docs/json.md `horizons`).
    #[serde(default, skip_serializing_if = "Horizons::is_empty")]
    pub horizons: Horizons,
    /// Key rollover notes: pre-published records, records no longer used,
    /// a new key presented too early, a single record (addition;
    /// docs/json.md `rollover`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollover: Vec<RolloverNote>,
}

/// A domain as people read it: `bücher.example (xn--bcher-kva.example)` for
/// an internationalised name, the name alone otherwise.
pub fn display_name(domain: &str) -> String {
    if !(domain.starts_with("xn--") || domain.contains(".xn--")) {
        return domain.to_owned();
    }
    match idna::domain_to_unicode(domain) {
        (unicode, Ok(())) if unicode != domain => format!("{unicode} ({domain})"),
        _ => domain.to_owned(),
    }
}

/// Endpoints a stored report keeps (those in alarm first).
pub const STORED_ENDPOINTS: usize = 64;
/// TLSA records a stored endpoint keeps.
pub const STORED_TLSA: usize = 8;
/// Error and advice lines a stored report keeps, each.
pub const STORED_LINES: usize = 32;
/// Signature horizons (and, apart, certificate horizons) a stored report
/// keeps, the nearest first.
pub const STORED_HORIZONS: usize = 32;

impl Report {
    /// The report as the store keeps it at every check: bounded whatever the
    /// domain publishes (at most [`STORED_ENDPOINTS`] endpoints, alarming ones
    /// first, [`STORED_TLSA`] records each, [`STORED_LINES`] errors and
    /// advice lines), saying what was left out, so a hostile domain cannot
    /// make each of its checks rewrite megabytes. The verdict is unchanged.
    pub fn bounded_for_store(&self) -> Report {
        let mut r = self.clone();
        r.evidence.clear();
        if r.endpoints.len() > STORED_ENDPOINTS {
            let total = r.endpoints.len();
            // Stable: alarming endpoints first, then the rest in order.
            r.endpoints.sort_by_key(|e| {
                !matches!(
                    e.verdict,
                    EndpointVerdict::Mismatch
                        | EndpointVerdict::Bogus
                        | EndpointVerdict::StarttlsMissing
                )
            });
            r.endpoints.truncate(STORED_ENDPOINTS);
            r.errors.push(format!(
                "{} of the {total} endpoints are not kept in the stored result",
                total - STORED_ENDPOINTS
            ));
        }
        for e in &mut r.endpoints {
            if e.tlsa.len() > STORED_TLSA {
                let n = e.tlsa.len() - STORED_TLSA;
                e.tlsa.truncate(STORED_TLSA);
                e.notes.push(format!("{n} more TLSA records not kept"));
            }
            e.notes.truncate(STORED_LINES);
        }
        // The nearest horizons (and every signature problem first) are
        // what warnings and pages use.
        let h = &mut r.horizons;
        h.rrsets
            .sort_by_key(|x| (x.problem.is_none(), x.expires_at));
        h.rrsets.truncate(STORED_HORIZONS);
        h.endpoints.sort_by_key(|e| e.expires_at());
        h.endpoints.truncate(STORED_HORIZONS);
        r.errors.truncate(STORED_LINES);
        r.advice.truncate(STORED_LINES);
        r.records_to_add.truncate(STORED_LINES);
        r
    }
}

/// What one endpoint in mismatch presented: enough for an admin to show
/// what the interceptor served (the chain as PEM), from where it was seen,
/// and when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// "service host:port [address] tls".
    pub endpoint: String,
    /// When the probe was made (RFC 3339).
    pub seen_at: String,
    /// tor, socks5 or direct.
    pub transport: String,
    /// The Tor exit relay the probe left from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// The SPKI SHA-256 of the leaf presented.
    pub spki_sha256: String,
    /// The certificates as presented, leaf first, PEM (bounded).
    pub chain_pem: String,
}

/// How the error of an endpoint no vantage could probe begins.
pub const NO_VANTAGE: &str = "no vantage could probe it";

/// The most PEM text one endpoint's evidence keeps.
pub const MAX_EVIDENCE_PEM: usize = 64 * 1024;

impl Report {
    /// The overall verdict from the endpoints: alarm outranks the rest.
    pub fn overall(endpoints: &[EndpointReport], dns_failed: bool, bogus: bool) -> Verdict {
        let any = |v: EndpointVerdict| endpoints.iter().any(|e| e.verdict == v);
        if any(EndpointVerdict::Mismatch) || any(EndpointVerdict::StarttlsMissing) {
            Verdict::Mismatch
        } else if bogus || any(EndpointVerdict::Bogus) {
            Verdict::Bogus
        } else if dns_failed {
            Verdict::Unreachable
        } else if any(EndpointVerdict::Insecure) {
            Verdict::Insecure
        } else if any(EndpointVerdict::NoTlsa) {
            Verdict::NoTlsa
        } else if any(EndpointVerdict::NotChecked) {
            // Our transport failed on an endpoint that needed a probe: the
            // others matching does not make the domain ok.
            Verdict::Unreachable
        } else if any(EndpointVerdict::Match) {
            Verdict::Ok
        } else {
            Verdict::Unreachable
        }
    }

    /// The endpoints that raised the alarm.
    pub fn alarming(&self) -> impl Iterator<Item = &EndpointReport> {
        self.endpoints.iter().filter(|e| e.is_alarm())
    }

    /// Each TLSA name as this check saw it, for the rollover watch: its
    /// records, the keys that matched there, whether an endpoint there is
    /// in alarm, and the RRset's TTL when the horizons give it.
    pub fn rollover_observed(&self) -> Vec<Observed> {
        let mut out: Vec<Observed> = Vec::new();
        for e in &self.endpoints {
            let name = e.tlsa_name.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            let i = match out.iter().position(|o| o.name == name) {
                Some(i) => i,
                None => {
                    let ttl = self
                        .horizons
                        .rrsets
                        .iter()
                        .find(|r| r.rtype == "TLSA" && r.name == name)
                        .map(|r| r.ttl);
                    out.push(Observed {
                        name,
                        ttl,
                        ..Observed::default()
                    });
                    out.len() - 1
                }
            };
            let o = &mut out[i];
            for r in &e.tlsa {
                let r = r.to_ascii_lowercase();
                if !o.records.contains(&r) {
                    o.records.push(r);
                }
            }
            o.alarm |= e.is_alarm();
            if let (EndpointVerdict::Match, Some(k)) = (e.verdict, &e.spki_sha256) {
                let k = k.to_ascii_lowercase();
                if !o.presented.contains(&k) {
                    o.presented.push(k);
                }
            }
        }
        out
    }

    /// Mismatching endpoints whose confirming probe could not be made.
    pub fn unconfirmed(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| e.is_unconfirmed_mismatch())
            .count()
    }

    /// Endpoints the check did not probe (its deadline passed, or the
    /// domain publishes more than a check probes).
    pub fn not_probed(&self) -> usize {
        self.endpoints
            .iter()
            .filter(|e| {
                e.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("not probed"))
            })
            .count()
    }

    /// Whether some endpoint was not checked because no vantage could
    /// probe it (the agents offline or failing, `probe.local = false`).
    pub fn no_vantage(&self) -> bool {
        self.endpoints.iter().any(|e| {
            e.verdict == EndpointVerdict::NotChecked
                && e.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with(NO_VANTAGE))
        })
    }

    /// Whether our own transport failed on some endpoint (`not_checked`).
    pub fn transport_failed(&self) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.verdict == EndpointVerdict::NotChecked)
    }

    /// What the servers said when every one that answered refused the
    /// domain with `host-unknown` (e.g. `host-unknown (This server does not
    /// serve x)`): the user likely checked a host name, not a domain.
    pub fn host_unknown(&self) -> Option<String> {
        let mut said = self
            .endpoints
            .iter()
            .filter_map(|e| e.error.as_deref()?.strip_prefix("stream error: "))
            .filter(|e| e.starts_with("host-unknown"));
        let first = said.next()?;
        let answered_otherwise = self
            .endpoints
            .iter()
            .any(|e| e.spki_sha256.is_some() || e.verdict != EndpointVerdict::Unreachable);
        (!answered_otherwise).then(|| first.to_owned())
    }

    /// A one-line summary, for chat and alert titles.
    pub fn summary(&self) -> String {
        let d = &display_name(&self.domain);
        match self.verdict {
            Verdict::Ok => {
                let n = self
                    .endpoints
                    .iter()
                    .filter(|e| e.verdict == EndpointVerdict::Match)
                    .count();
                let skipped = self.not_probed();
                if skipped > 0 {
                    format!("{d}: OK, {n} endpoint(s) presented a key matching their DNSSEC-signed TLSA records; {skipped} endpoint(s) were not probed")
                } else {
                    format!("{d}: OK, {n} endpoint(s) presented a key matching their DNSSEC-signed TLSA records")
                }
            }
            Verdict::Mismatch => {
                let (n, starttls) = self.alarming().fold((0, 0), |(n, s), e| {
                    (
                        n + 1,
                        s + usize::from(e.verdict == EndpointVerdict::StarttlsMissing),
                    )
                });
                let unconfirmed = self.unconfirmed();
                if starttls > 0 && starttls == n {
                    format!("{d}: ALARM, STARTTLS was not offered where TLSA requires TLS (possible downgrade attack)")
                } else if unconfirmed > 0 {
                    format!("{d}: ALARM, {n} endpoint(s) presented a key that matches none of the TLSA records (possible interception); {unconfirmed} of them not confirmed: the second probe{} could not be made", if self.transport == "tor" { " through a different Tor exit" } else { "" })
                } else {
                    format!("{d}: ALARM, {n} endpoint(s) presented a key that matches none of the TLSA records (possible interception)")
                }
            }
            Verdict::Bogus => format!("{d}: ALARM, DNSSEC validation failed (bogus answers)"),
            Verdict::Insecure => format!("{d}: not protected, the zone is not DNSSEC-signed"),
            Verdict::NoTlsa => {
                format!("{d}: not protected, DNSSEC is on but TLSA records are missing")
            }
            Verdict::Unreachable if self.no_vantage() => format!(
                "{d}: could not check, {NO_VANTAGE} (our agents are offline or failing; nothing is known about the server)"
            ),
            Verdict::Unreachable if self.transport_failed() => format!(
                "{d}: could not check, our {} failed (nothing is known about the server)",
                transport_words(&self.transport)
            ),
            Verdict::Unreachable if self.nxdomain => format!("{d} does not exist (NXDOMAIN)"),
            Verdict::Unreachable if !self.resolvers.is_empty() => format!(
                "{d}: could not check, DNS lookups got no answer from {}",
                self.resolvers.join(", ")
            ),
            Verdict::Unreachable => match self.host_unknown() {
                Some(said) => {
                    format!("{d}: could not check, the server answered {said}")
                }
                None => format!("{d}: could not check, no endpoint could be reached"),
            },
        }
    }

    /// When the check ran, in UNIX seconds (None if `checked_at` does not parse).
    pub fn checked_at_unix(&self) -> Option<u64> {
        humantime::parse_rfc3339(&self.checked_at).ok().map(unix)
    }

    /// What runs out: the signature problems of each zone, then the `n`
    /// nearest horizons, counted from `now` (docs/json.md `horizons`).
    pub fn horizon_lines(&self, n: usize, now: u64) -> Vec<String> {
        let mut lines = self.horizons.zone_problems();
        lines.extend(self.horizons.lines(n, now));
        lines
    }

    /// The human-readable report (`check` without `--json`).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.summary());
        out.push('\n');
        out.push_str(&format!(
            "checked at {} over {}\n",
            self.checked_at, self.transport
        ));
        for e in &self.endpoints {
            e.push_text(&mut out);
        }
        let now = self
            .checked_at_unix()
            .unwrap_or_else(|| unix(SystemTime::now()));
        let horizons = self.horizon_lines(TEXT_HORIZONS, now);
        if !horizons.is_empty() {
            out.push_str("\nRuns out (nearest first; warnings, not part of the verdict):\n");
            for h in horizons {
                out.push_str(&format!("  - {h}\n"));
            }
        }
        self.push_problems_text(&mut out);
        self.push_advice_text(&mut out);
        if !self.rollover.is_empty() {
            out.push_str("\nKey rollover:\n");
            for n in &self.rollover {
                out.push_str(&format!("  - {}\n", n.text));
            }
        }
        out
    }

    /// Which problems of the check as a whole (bogus DNSSEC answers, errors
    /// outside any endpoint) get a section of the text report.
    fn push_problems_text(&self, out: &mut String) {
        if !self.bogus_rrsets.is_empty() {
            out.push_str("\nDNSSEC validation failed:\n");
            for b in &self.bogus_rrsets {
                out.push_str(&format!("  {b}\n"));
            }
        }
        if !self.errors.is_empty() {
            out.push_str("\nProblems during the check:\n");
            for e in &self.errors {
                out.push_str(&format!("  - {e}\n"));
            }
        }
    }

    /// In which order the text report tells what to do: signing the zone
    /// first, then the records to add, then the rest of the advice.
    fn push_advice_text(&self, out: &mut String) {
        // Signing comes first: TLSA records are useless in an unsigned zone.
        let (signing, rest): (Vec<&String>, Vec<&String>) = self.advice.iter().partition(|a| {
            a.starts_with("First sign the zone")
                || a.starts_with("The zone ")
                || a.starts_with("The parent of ")
        });
        if !signing.is_empty() {
            out.push_str("\nFirst sign the zone:\n");
            for a in &signing {
                out.push_str(&format!("  - {a}\n"));
            }
        }
        if !self.records_to_add.is_empty() {
            if signing.is_empty() {
                out.push_str("\nRecords to add to the zone:\n");
            } else {
                out.push_str(
                    "\nThen add these records (once the zone is signed; useless before):\n",
                );
            }
            for r in &self.records_to_add {
                out.push_str(&format!("  {r}\n"));
            }
        }
        if !rest.is_empty() {
            out.push_str("\nAdvice:\n");
            for a in rest {
                out.push_str(&format!("  - {a}\n"));
            }
        }
    }
}

impl EndpointReport {
    /// The verdict as words for people.
    pub fn verdict_word(&self) -> &'static str {
        verdict_text(self.verdict)
    }

    /// Which lines of the text report describe this endpoint: its heading
    /// and verdict, the records, the key seen (and from where), whether a
    /// mismatch was confirmed, then its error and notes.
    fn push_text(&self, out: &mut String) {
        let addr = self
            .address
            .map(|a| a.to_string())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "\n{} {}:{} [{}] ({}): {}\n",
            self.service,
            self.host,
            self.port,
            addr,
            self.tls,
            verdict_text(self.verdict)
        ));
        for t in &self.tlsa {
            out.push_str(&format!("  TLSA      {t}\n"));
        }
        if let Some(spki) = &self.spki_sha256 {
            out.push_str(&format!("  key seen  SPKI sha256 {spki}\n"));
        }
        if let Some(m) = &self.matched {
            out.push_str(&format!("  matched   {m}\n"));
        }
        for v in &self.vantage {
            let through = match &v.exit {
                Some(exit) => format!("{} exit {exit}", v.transport),
                None => v.transport.clone(),
            };
            out.push_str(&format!(
                "  seen via  {through}: SPKI sha256 {}\n",
                v.spki_sha256
            ));
        }
        match (self.verdict, self.confirmed) {
            (EndpointVerdict::Mismatch, Some(true)) => {
                out.push_str("  confirmed by a second probe\n")
            }
            (EndpointVerdict::Mismatch, Some(false)) => {
                out.push_str("  NOT CONFIRMED: the second probe could not be made\n")
            }
            _ => {}
        }
        if let Some(err) = &self.error {
            out.push_str(&format!("  error     {err}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("  note      {n}\n"));
        }
    }
}

fn verdict_text(v: EndpointVerdict) -> &'static str {
    match v {
        EndpointVerdict::Match => "match",
        EndpointVerdict::Mismatch => "MISMATCH",
        EndpointVerdict::NoTlsa => "no TLSA records",
        EndpointVerdict::Insecure => "insecure (not DNSSEC-signed)",
        EndpointVerdict::Bogus => "BOGUS DNSSEC",
        EndpointVerdict::StarttlsMissing => "STARTTLS MISSING",
        EndpointVerdict::Unreachable => "unreachable",
        EndpointVerdict::NotChecked => "not checked (our transport failed)",
    }
}

/// What we call our own transport in sentences.
pub fn transport_words(transport: &str) -> &'static str {
    match transport {
        "tor" => "Tor client",
        "socks5" => "SOCKS5 proxy",
        _ => "network connection",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(verdict: EndpointVerdict) -> EndpointReport {
        EndpointReport {
            service: "xmpp-client".into(),
            host: "xmpp.example.org".into(),
            port: 5222,
            address: Some("192.0.2.1".parse().unwrap()),
            tls: "starttls".into(),
            verdict,
            tlsa: vec![],
            spki_sha256: None,
            cert_sha256: None,
            matched: None,
            matched_until: None,
            error: None,
            tlsa_name: "_5222._tcp.xmpp.example.org".into(),
            tls_version: None,
            cipher: None,
            notes: vec![],
            vantage: vec![],
            confirmed: None,
        }
    }

    #[test]
    fn the_stored_report_is_bounded_and_keeps_the_alarms() {
        let mut r = Report {
            domain: "example.org".into(),
            checked_at: "2026-11-22T12:00:00Z".into(),
            verdict: Verdict::Mismatch,
            endpoints: vec![ep(EndpointVerdict::Match)],
            records_to_add: vec![],
            advice: vec![],
            transport: "tor".into(),
            errors: vec![],
            bogus_rrsets: vec![],
            evidence: vec![],
            nxdomain: false,
            resolvers: vec![],
            horizons: Default::default(),
            rollover: vec![],
        };
        let n = STORED_ENDPOINTS * 4;
        r.endpoints = (0..n)
            .map(|i| {
                let mut e = r.endpoints[0].clone();
                e.port = i as u16;
                e.tlsa = (0..40).map(|j| format!("3 1 1 {j:064x}")).collect();
                if i == n - 1 {
                    e.verdict = EndpointVerdict::Mismatch;
                }
                e
            })
            .collect();
        r.errors = vec!["e".into(); 500];
        // Horizons: the nearest kept, signature problems first.
        let now = 1_800_000_000;
        r.horizons.rrsets = (0..100u64)
            .map(|i| {
                let name = format!("_{i}._tcp.example.org");
                let start = if i == 99 { now + 60 } else { now - 3600 };
                let until = now + 40 * 86_400 - i * 3600;
                crate::horizon::RrsetHorizon::new(&name, "TLSA", "example.org", 300, (start, until))
            })
            .collect();
        let stored = r.bounded_for_store();
        let kept = &stored.horizons.rrsets;
        assert_eq!(kept.len(), STORED_HORIZONS);
        assert_eq!(kept[0].name, "_99._tcp.example.org", "the problem first");
        assert_eq!(kept[1].name, "_98._tcp.example.org", "then the nearest");
        assert!(kept
            .windows(2)
            .skip(1)
            .all(|w| w[0].expires_at <= w[1].expires_at));
        assert_eq!(stored.verdict, r.verdict);
        assert_eq!(stored.endpoints.len(), STORED_ENDPOINTS);
        assert_eq!(
            stored.endpoints[0].verdict,
            EndpointVerdict::Mismatch,
            "alarms kept first"
        );
        assert!(stored.endpoints.iter().all(|e| e.tlsa.len() == STORED_TLSA));
        assert!(stored.errors.len() <= STORED_LINES);
        let size = serde_json::to_vec(&stored).unwrap().len();
        assert!(size < 200 * 1024, "{size} bytes");
        assert!(serde_json::to_vec(&r).unwrap().len() > 4 * size);
    }

    #[test]
    fn contract_exit_codes_and_alarm_outranks() {
        use EndpointVerdict as E;
        let table: &[(&[E], bool, Verdict, i32)] = &[
            (&[E::Match], false, Verdict::Ok, 0),
            (&[E::Match, E::Unreachable], false, Verdict::Ok, 0),
            (&[E::Match, E::Mismatch], false, Verdict::Mismatch, 1),
            (
                &[E::Unreachable, E::StarttlsMissing],
                false,
                Verdict::Mismatch,
                1,
            ),
            (&[E::Insecure, E::Bogus], false, Verdict::Bogus, 1),
            (&[E::Mismatch, E::Bogus], false, Verdict::Mismatch, 1),
            (&[E::Insecure, E::Insecure], false, Verdict::Insecure, 2),
            (&[E::NoTlsa, E::Match], false, Verdict::NoTlsa, 2),
            (&[E::Unreachable], false, Verdict::Unreachable, 3),
            (&[], false, Verdict::Unreachable, 3),
            (&[E::Match], true, Verdict::Unreachable, 3),
            (&[E::Mismatch], true, Verdict::Mismatch, 1),
            // Our transport failed on one endpoint: could not check, even
            // when the others matched; an alarm or a DNS finding still stands.
            (&[E::Match, E::NotChecked], false, Verdict::Unreachable, 3),
            (&[E::NotChecked], false, Verdict::Unreachable, 3),
            (&[E::Mismatch, E::NotChecked], false, Verdict::Mismatch, 1),
            (
                &[E::StarttlsMissing, E::NotChecked],
                false,
                Verdict::Mismatch,
                1,
            ),
            (&[E::Bogus, E::NotChecked], false, Verdict::Bogus, 1),
            (&[E::NoTlsa, E::NotChecked], false, Verdict::NoTlsa, 2),
        ];
        for (verdicts, dns_failed, want, code) in table {
            let eps: Vec<_> = verdicts.iter().map(|v| ep(*v)).collect();
            let got = Report::overall(&eps, *dns_failed, false);
            assert_eq!(got, *want, "{verdicts:?}");
            assert_eq!(got.exit_code(), *code);
        }
    }

    #[test]
    fn a_bogus_rrset_without_endpoint_is_an_alarm_that_a_mismatch_outranks() {
        use EndpointVerdict as E;
        let eps = |vs: &[E]| vs.iter().map(|v| ep(*v)).collect::<Vec<_>>();
        assert_eq!(
            Report::overall(&eps(&[E::Match]), false, true),
            Verdict::Bogus
        );
        assert_eq!(Report::overall(&[], true, true), Verdict::Bogus);
        assert_eq!(
            Report::overall(&eps(&[E::Mismatch]), false, true),
            Verdict::Mismatch
        );
    }

    #[test]
    fn our_transport_failing_says_so_not_unreachable() {
        let mut report = Report {
            domain: "example.org".into(),
            checked_at: "2026-11-22T12:00:00Z".into(),
            verdict: Verdict::Unreachable,
            endpoints: vec![ep(EndpointVerdict::NotChecked), ep(EndpointVerdict::Match)],
            records_to_add: vec![],
            advice: vec![],
            transport: "tor".into(),
            errors: vec![],
            bogus_rrsets: vec![],
            evidence: vec![],
            nxdomain: false,
            resolvers: vec![],
            horizons: Default::default(),
            rollover: vec![],
        };
        let s = report.summary();
        assert!(s.contains("our Tor client failed"), "{s}");
        assert!(!s.contains("reached"), "{s}");
        report.transport = "socks5".into();
        assert!(report.summary().contains("our SOCKS5 proxy failed"));
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(v["endpoints"][0]["verdict"], "not_checked");
        assert!(report
            .to_text()
            .contains("not checked (our transport failed)"));
        report.endpoints[0].verdict = EndpointVerdict::Unreachable;
        assert!(report.summary().contains("no endpoint could be reached"));
    }

    #[test]
    fn vantage_names_the_exit_only_when_there_is_one() {
        let mut e = ep(EndpointVerdict::Mismatch);
        e.confirmed = Some(true);
        e.vantage = vec![
            Vantage {
                transport: "tor".into(),
                exit: Some("ab".repeat(20)),
                spki_sha256: "01".repeat(32),
                agent: None,
            },
            Vantage {
                transport: "socks5".into(),
                exit: None,
                spki_sha256: "01".repeat(32),
                agent: None,
            },
        ];
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["confirmed"], true);
        assert_eq!(v["vantage"][0]["transport"], "tor");
        assert_eq!(v["vantage"][0]["exit"], "ab".repeat(20));
        assert!(v["vantage"][1].get("exit").is_none());
        let back: EndpointReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        // Not a mismatch, nothing probed twice: neither field appears.
        let plain = serde_json::to_value(ep(EndpointVerdict::Match)).unwrap();
        assert!(plain.get("vantage").is_none() && plain.get("confirmed").is_none());
    }

    #[test]
    fn json_uses_contract_names() {
        let mut e = ep(EndpointVerdict::StarttlsMissing);
        e.error = Some("connection refused".into());
        let report = Report {
            domain: "example.org".into(),
            checked_at: "2026-11-22T12:00:00Z".into(),
            verdict: Verdict::NoTlsa,
            endpoints: vec![e],
            records_to_add: vec![],
            advice: vec![],
            transport: "tor".into(),
            errors: vec![],
            bogus_rrsets: vec![],
            evidence: vec![],
            nxdomain: false,
            resolvers: vec![],
            horizons: Default::default(),
            rollover: vec![],
        };
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(v["verdict"], "no_tlsa");
        assert_eq!(v["endpoints"][0]["verdict"], "starttls_missing");
        assert_eq!(v["endpoints"][0]["address"], "192.0.2.1");
        assert_eq!(v["endpoints"][0]["error"], "connection refused");
        assert!(v["endpoints"][0].get("matched").is_none());
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, report);
    }
}

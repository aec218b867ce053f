//! What the admin should do: zone-file lines to add and one-sentence advice. Pure.

use std::collections::BTreeSet;

use crate::dane::Tlsa;
use crate::report::{EndpointReport, EndpointVerdict};
use crate::vocab::Service;

/// What DNS says about a zone that should be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneFacts {
    /// The name whose lookup was insecure.
    pub name: String,
    /// Its zone apex, when found.
    pub zone: Option<String>,
    /// The zone publishes DNSKEY records.
    pub has_dnskey: bool,
    /// The parent publishes a DS for it.
    pub has_ds: bool,
}

/// Everything advice is computed from.
pub struct AdviceInput<'a> {
    /// The domain checked.
    pub domain: &'a str,
    /// The judged endpoints.
    pub endpoints: &'a [EndpointReport],
    /// Facts about zones that need signing.
    pub zones: &'a [ZoneFacts],
    /// Services that had no SRV records and used the fallback.
    pub fallbacks: &'a [Service],
    /// Some lookups got no usable answer.
    pub dns_failed: bool,
    /// The domain does not exist (NXDOMAIN): nothing to advise.
    pub nxdomain: bool,
    /// How the probes travelled: tor, socks5 or direct.
    pub transport: &'a str,
}

/// The zone-file lines to publish for endpoints without (secure) TLSA, from the key seen.
pub fn records_to_add(endpoints: &[EndpointReport]) -> Vec<String> {
    let mut lines = BTreeSet::new();
    for e in endpoints {
        let wants = matches!(
            e.verdict,
            EndpointVerdict::NoTlsa | EndpointVerdict::Insecure
        );
        // Never suggest the key of a mismatch: it may be the attacker's.
        if let (true, Some(spki)) = (wants, &e.spki_sha256) {
            lines.insert(zone_line(&e.tlsa_name, &format!("3 1 1 {spki}")));
        }
    }
    lines.into_iter().collect()
}

/// One TLSA line in zone-file syntax.
pub fn zone_line(owner: &str, record: &str) -> String {
    format!("{}. IN TLSA {record}", owner.trim_end_matches('.'))
}

/// The advice sentences.
pub fn advise(input: &AdviceInput) -> Vec<String> {
    if input.nxdomain {
        // Nothing to publish or fix: the name is not there at all.
        return Vec::new();
    }
    let eps = input.endpoints;
    let mut out = alarm_advice(eps);
    out.extend(input.zones.iter().map(zone_advice));
    out.extend(publishing_advice(eps));
    out.extend(usage_advice(eps));
    out.extend(fallback_advice(input));
    out.extend(unreachable_advice(input));
    out
}

/// Which alarms (mismatch, STARTTLS missing, bogus DNSSEC) need a sentence
/// on what they may mean and what to check.
fn alarm_advice(eps: &[EndpointReport]) -> Vec<String> {
    let mut out = Vec::new();
    let has = |v: EndpointVerdict| eps.iter().any(|e| e.verdict == v);
    if has(EndpointVerdict::Mismatch) {
        out.push("An endpoint presented a key that matches none of its TLSA records. If you did not just change the key, treat this as an interception: compare it with the key on the server itself. If you did change it, publish the new key's record next to the old one and wait for the TTL before switching.".into());
    }
    if has(EndpointVerdict::StarttlsMissing) {
        out.push("The server did not offer STARTTLS although TLSA records require TLS: something between the server and the network may be stripping it, or STARTTLS is disabled in the server's configuration.".into());
    }
    if has(EndpointVerdict::Bogus) {
        out.push("DNSSEC validation failed: expired signatures, a DS that matches no DNSKEY, or a broken signer. Re-sign the zone and check the DS at the registrar (e.g. `delv` or DNSViz); until then validating clients cannot reach this domain safely.".into());
    }
    out
}

/// Whether endpoints lack (secure) TLSA records, and so need the advice on
/// publishing them: where the key came from, adding without replacing,
/// keeping the key across renewals.
fn publishing_advice(eps: &[EndpointReport]) -> Vec<String> {
    let mut out = Vec::new();
    let has = |v: EndpointVerdict| eps.iter().any(|e| e.verdict == v);
    if !(has(EndpointVerdict::NoTlsa) || has(EndpointVerdict::Insecure)) {
        return out;
    }
    if eps.iter().any(|e| {
        e.spki_sha256.is_some()
            && matches!(
                e.verdict,
                EndpointVerdict::NoTlsa | EndpointVerdict::Insecure
            )
    }) {
        out.push("The TLSA records to add were computed from the key seen over the network; compute them from your own certificate on the server to be sure: `openssl x509 -in CERT.pem -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum` prints the hash for `3 1 1` (or `certwatch tlsa --cert CERT.pem --host HOST --port PORT` prints the whole line).".into());
    }
    out.push("TLSA records are additive: when one host serves several domains, add each line once next to any existing records; never replace records other domains rely on.".into());
    out.push("Keep the key across renewals (certbot `--reuse-key`) so the 3 1 1 record stays valid, and before a planned key change publish a second 3 1 1 record for the next key (current + next), then remove the old one after the switch.".into());
    out
}

/// Which published record kinds (usage and selector) are weaker than
/// `3 1 1`: one sentence per kind, however many records have it.
fn usage_advice(eps: &[EndpointReport]) -> Vec<String> {
    let mut out = Vec::new();
    let mut usage_warned = BTreeSet::new();
    for e in eps {
        for t in &e.tlsa {
            let Ok(rec) = Tlsa::parse(t) else { continue };
            let key = (rec.usage, rec.selector);
            if !usage_warned.insert(key) {
                continue;
            }
            match (rec.usage, rec.selector) {
                (0 | 1, _) => out.push(format!("Records with usage {} (PKIX-TA/PKIX-EE) still accept any certificate a public CA issues for the name: a CA-issued interception certificate, as in the jabber.ru case, can pass. Prefer 3 1 1.", rec.usage)),
                (2, _) => out.push("Records with usage 2 (DANE-TA) trust every certificate the pinned CA issues; if that is a public CA, an attacker who obtains a certificate from it passes. Prefer 3 1 1 pinned to your own key.".into()),
                (3, 0) => out.push("A `3 0 x` record pins the whole certificate and breaks at every renewal; use `3 1 1` (the public key) with certbot `--reuse-key`.".into()),
                _ => {}
            }
        }
    }
    out
}

/// Which services fell back to the domain itself for want of SRV records.
fn fallback_advice(input: &AdviceInput) -> Vec<String> {
    let eps = input.endpoints;
    // A server that refused the domain (host-unknown) says it is no XMPP
    // domain at all: advice on its SRV records would mislead.
    let wrong_host = host_unknown(eps).is_some();
    // Only services that fell back to an endpoint: a service with neither
    // SRV nor address is simply not offered.
    let fell_back = input.fallbacks.iter().filter(|s| {
        !wrong_host
            && eps
                .iter()
                .any(|e| e.service == s.as_str() && e.host == input.domain)
    });
    fell_back
        .map(|s| format!(
            "{} has no _{}._tcp SRV record, so clients fall back to {}:{}; publish SRV records (RFC 6120 §3.2, XEP-0368) so DANE follows the SRV target (RFC 7673).",
            input.domain,
            s.as_str(),
            input.domain,
            s.fallback_port().unwrap_or(0)
        ))
        .collect()
}

/// Why nothing could be reached, when no endpoint was: the domain may be a
/// host name (the server said `host-unknown`), or the server is down; a DNS
/// failure already says why on its own.
fn unreachable_advice(input: &AdviceInput) -> Option<String> {
    let eps = input.endpoints;
    if eps.is_empty()
        || !eps
            .iter()
            .all(|e| e.verdict == EndpointVerdict::Unreachable)
    {
        return None;
    }
    match host_unknown(eps) {
        Some((e, said)) => {
            let guess = input
                .domain
                .split_once('.')
                .map(|(_, p)| p)
                .filter(|p| p.contains('.'))
                .map(|p| format!(" (perhaps {p})"))
                .unwrap_or_default();
            Some(format!(
                "The server at {}:{} answered {said}: it does not serve {} as an XMPP domain. That name may be a server's host name: check the domain of the XMPP addresses instead, the part after the @{guess}.",
                e.host, e.port, input.domain
            ))
        }
        None if input.dns_failed => None,
        None => Some(format!(
            "No endpoint could be reached; check that the server is up and reachable from the Internet{}.",
            if input.transport == "tor" { " (including over Tor exits)" } else { "" }
        )),
    }
}

/// The first endpoint whose server refused the domain with `host-unknown`, and what it said.
fn host_unknown(eps: &[EndpointReport]) -> Option<(&EndpointReport, &str)> {
    eps.iter().find_map(|e| {
        let said = e.error.as_deref()?.strip_prefix("stream error: ")?;
        said.starts_with("host-unknown").then_some((e, said))
    })
}

fn zone_advice(z: &ZoneFacts) -> String {
    let zone = z.zone.as_deref().unwrap_or(&z.name);
    match (z.has_dnskey, z.has_ds) {
        (true, false) => format!("The zone {zone} is signed (it has DNSKEY records) but its parent has no DS record for it, so nothing validates: publish the DS record at your registrar (`dnssec-dsfromkey` or your DNS host shows it)."),
        (false, true) => format!("The parent of {zone} publishes a DS record but the zone is served unsigned: sign it again or remove the DS, or validating resolvers will reject it."),
        _ if z.zone.is_some() => format!("First sign the zone {zone} (BIND `dnssec-policy default;`, Knot `dnssec-signing: on`, `pdnsutil secure-zone` or your DNS host's switch), then publish its DS at your registrar."),
        _ => format!("First sign the zone holding {zone} (BIND `dnssec-policy default;`, Knot `dnssec-signing: on`, `pdnsutil secure-zone` or your DNS host's switch), then publish its DS at your registrar."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(verdict: EndpointVerdict, spki: Option<&str>, tlsa: &[&str]) -> EndpointReport {
        EndpointReport {
            service: "xmpp-client".into(),
            host: "xmpp.example.org".into(),
            port: 5222,
            address: None,
            tls: "starttls".into(),
            verdict,
            tlsa: tlsa.iter().map(|s| s.to_string()).collect(),
            spki_sha256: spki.map(Into::into),
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
    fn records_are_exact_zone_lines_deduplicated_and_never_from_a_mismatch() {
        let a = "ab".repeat(32);
        let eps = vec![
            ep(EndpointVerdict::NoTlsa, Some(&a), &[]),
            ep(EndpointVerdict::NoTlsa, Some(&a), &[]),
            ep(EndpointVerdict::Mismatch, Some(&"cd".repeat(32)), &[]),
            ep(EndpointVerdict::NoTlsa, None, &[]),
        ];
        assert_eq!(
            records_to_add(&eps),
            vec![format!("_5222._tcp.xmpp.example.org. IN TLSA 3 1 1 {a}")]
        );
    }

    #[test]
    fn advice_covers_reuse_key_rollover_and_additivity() {
        let eps = vec![ep(EndpointVerdict::NoTlsa, Some(&"ab".repeat(32)), &[])];
        let text = advise(&AdviceInput {
            domain: "example.org",
            endpoints: &eps,
            zones: &[],
            fallbacks: &[],
            dns_failed: false,
            nxdomain: false,
            transport: "tor",
        })
        .join("\n");
        assert!(text.contains("--reuse-key"));
        assert!(text.contains("current + next"));
        assert!(text.contains("additive"));
        assert!(text.contains("certwatch tlsa --cert"));
        assert!(!text.contains("records_to_add"), "{text}");
    }

    #[test]
    fn zone_advice_names_the_zone_and_the_missing_piece() {
        let facts = |dnskey, ds| ZoneFacts {
            name: "_xmpp-client._tcp.example.org".into(),
            zone: Some("example.org".into()),
            has_dnskey: dnskey,
            has_ds: ds,
        };
        assert!(zone_advice(&facts(false, false)).contains("example.org"));
        assert!(zone_advice(&facts(false, false)).starts_with("First sign the zone example.org"));
        assert!(zone_advice(&facts(true, false)).contains("no DS record"));
        assert!(zone_advice(&facts(false, true)).contains("served unsigned"));
    }

    #[test]
    fn warnings_for_weak_usages_and_full_cert_pins() {
        let hex = "ab".repeat(32);
        for (rec, needle) in [
            (format!("1 1 1 {hex}"), "PKIX"),
            (format!("2 1 1 {hex}"), "DANE-TA"),
            (format!("3 0 1 {hex}"), "breaks at every renewal"),
        ] {
            let eps = vec![ep(EndpointVerdict::Match, None, &[&rec])];
            let text = advise(&AdviceInput {
                domain: "example.org",
                endpoints: &eps,
                zones: &[],
                fallbacks: &[],
                dns_failed: false,
                nxdomain: false,
                transport: "tor",
            })
            .join("\n");
            assert!(text.contains(needle), "{rec}: {text}");
        }
    }

    #[test]
    fn fallback_advises_srv_only_where_it_led_to_an_endpoint() {
        let mut fallback = ep(EndpointVerdict::Unreachable, None, &[]);
        fallback.host = "example.org".into();
        let none = advise(&AdviceInput {
            domain: "example.org",
            endpoints: &[],
            zones: &[],
            fallbacks: &[Service::XmppClient],
            dns_failed: false,
            nxdomain: false,
            transport: "tor",
        });
        assert!(none.is_empty(), "not offered is not a fallback: {none:?}");
        let text = advise(&AdviceInput {
            domain: "example.org",
            endpoints: &[fallback],
            zones: &[],
            fallbacks: &[Service::XmppClient],
            dns_failed: false,
            nxdomain: false,
            transport: "tor",
        })
        .join("\n");
        assert!(text.contains("no _xmpp-client._tcp SRV record"), "{text}");
        assert!(text.contains("example.org:5222"));
    }
}

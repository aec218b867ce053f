//! The horizons of a check: when the signatures and certificates its
//! verdict rests on run out ([`crate::horizon`]), from what discovery, the
//! probes and the judge observed. They change no verdict.

use crate::dane::{self, Tlsa};
use crate::dns::discovery::{Endpoint, TlsaState};
use crate::dns::Signature;
use crate::horizon::{EndpointHorizon, Horizons, RrsetHorizon};
use crate::judge::Probed;
use crate::report::{EndpointReport, EndpointVerdict};

/// The horizons of a check, from discovery's signatures (verified ones)
/// and each endpoint's probe and verdict (the three lists side by side).
pub(super) fn horizons(
    signatures: &[Signature],
    endpoints: &[Endpoint],
    probed: &[Probed],
    reports: &[EndpointReport],
) -> Horizons {
    Horizons {
        rrsets: signature_horizons(signatures),
        endpoints: endpoints
            .iter()
            .zip(probed)
            .zip(reports)
            .filter_map(|((e, p), r)| endpoint_horizon(e, p, r))
            .collect(),
        zone_keys: Vec::new(),
    }
}

/// One horizon per signed RRset, in discovery's order.
fn signature_horizons(signatures: &[Signature]) -> Vec<RrsetHorizon> {
    signatures
        .iter()
        .map(|s| {
            RrsetHorizon::new(
                &s.name,
                &s.rtype,
                &s.signer,
                s.original_ttl,
                (s.inception, s.expiration),
            )
        })
        .collect()
}

/// The certificate horizon of an endpoint whose chain a TLSA record
/// authenticated (verdict match): its leaf's notAfter, the record's usage
/// and selector, and under usages 0, 1 and 2 the date the judge found the
/// match rests on. A chain nobody authenticated (a mismatch: perhaps an
/// interceptor's) has none: its dates are not the admin's to act on.
fn endpoint_horizon(
    endpoint: &Endpoint,
    probed: &Probed,
    report: &EndpointReport,
) -> Option<EndpointHorizon> {
    let record = matched_record(endpoint, report)?;
    let Probed::Observed(obs) = probed else {
        return None;
    };
    let not_after = dane::not_after(obs.chain.first()?)?;
    let counts = record.usage != 3;
    Some(EndpointHorizon {
        endpoint: report.label(),
        not_after,
        chain_not_after: report.matched_until.filter(|_| counts),
        counts_for_dane: counts,
        usage: Some(record.usage),
        selector: Some(record.selector),
    })
}

/// The TLSA record that authenticated the endpoint's chain, if one did.
fn matched_record<'a>(endpoint: &'a Endpoint, report: &EndpointReport) -> Option<&'a Tlsa> {
    if report.verdict != EndpointVerdict::Match {
        return None;
    }
    let matched = report.matched.as_deref()?;
    match &endpoint.tlsa {
        TlsaState::Present { records } => records.iter().find(|r| r.to_string() == matched),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::judge;
    use crate::probe::tls::TlsObservation;
    use crate::vocab::Service;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use x509_parser::time::ASN1Time;

    const DAY: u64 = 86_400;
    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    fn params(names: &[&str], not_after: u64) -> CertificateParams {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.not_before = ASN1Time::from_timestamp((NOW - 30 * DAY) as i64)
            .unwrap()
            .to_datetime();
        p.not_after = ASN1Time::from_timestamp(not_after as i64)
            .unwrap()
            .to_datetime();
        p
    }

    /// A leaf for xmpp.example.org (until `leaf_until`) issued by a CA
    /// (until `ca_until`): (chain, CA SPKI SHA-256, leaf SPKI SHA-256).
    fn chain(leaf_until: u64, ca_until: u64) -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = params(&[], ca_until);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let ca_spki = dane::spki_sha256(ca_cert.der()).unwrap().to_vec();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params(&["xmpp.example.org"], leaf_until)
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let leaf_spki = dane::spki_sha256(leaf.der()).unwrap().to_vec();
        (
            vec![leaf.der().to_vec(), ca_cert.der().to_vec()],
            ca_spki,
            leaf_spki,
        )
    }

    fn endpoint(records: Vec<Tlsa>) -> Endpoint {
        Endpoint {
            service: Service::XmppsClient,
            host: "xmpp.example.org".into(),
            port: 5223,
            address: Some("192.0.2.1".parse().unwrap()),
            tlsa_name: "_5223._tcp.xmpp.example.org".into(),
            reference_names: vec!["example.org".into(), "xmpp.example.org".into()],
            tlsa: TlsaState::Present { records },
            error: None,
            fallback: false,
        }
    }

    fn observed(chain: Vec<Vec<u8>>) -> Probed {
        Probed::Observed(TlsObservation {
            chain,
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            alpn: None,
        })
    }

    fn record(usage: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector: 1,
            matching: 1,
            data,
        }
    }

    fn horizon_of(records: Vec<Tlsa>, chain: Vec<Vec<u8>>) -> Option<EndpointHorizon> {
        let e = endpoint(records);
        let p = observed(chain);
        let r = judge(&e, &p, at(NOW));
        horizons(&[], &[e], &[p], &[r]).endpoints.pop()
    }

    #[test]
    fn rfc7671_under_dane_ee_the_leaf_date_is_reported_but_does_not_count() {
        let (chain, _, leaf) = chain(NOW + 2 * DAY, NOW + 10 * DAY);
        let h = horizon_of(vec![record(3, leaf)], chain).unwrap();
        assert_eq!(h.not_after, NOW + 2 * DAY);
        assert_eq!(h.chain_not_after, None);
        assert!(!h.counts_for_dane);
        assert_eq!(
            h.endpoint,
            "xmpps-client xmpp.example.org:5223 [192.0.2.1] direct"
        );
    }

    #[test]
    fn rfc7671_under_dane_ta_the_earliest_date_up_to_the_anchor_counts() {
        // The CA runs out before the leaf: the chain's date is the CA's.
        let (chain, ca, _) = chain(NOW + 20 * DAY, NOW + 5 * DAY);
        let h = horizon_of(vec![record(2, ca)], chain).unwrap();
        assert_eq!(h.not_after, NOW + 20 * DAY);
        assert_eq!(h.chain_not_after, Some(NOW + 5 * DAY));
        assert!(h.counts_for_dane);
        assert_eq!(h.expires_at(), NOW + 5 * DAY);
    }

    #[test]
    fn a_chain_nobody_authenticated_has_no_horizon() {
        // An interceptor's chain, or a mismatch of any kind: its expired
        // leaf must not be shown as the admin's to renew.
        let (expired, _, leaf) = chain(NOW - 3 * DAY, NOW + 5 * DAY);
        let h = horizon_of(vec![record(2, vec![7; 32])], expired.clone());
        assert_eq!(h, None);
        let (other, _, _) = chain(NOW + 30 * DAY, NOW + 60 * DAY);
        assert_eq!(horizon_of(vec![record(3, leaf.clone())], other), None);
        // The same chain under a record it matches: a horizon.
        assert!(horizon_of(vec![record(3, leaf)], expired).is_some());
        // No TLSA records at all: no match, no horizon.
        let (certs, _, _) = chain(NOW + 3 * DAY, NOW + 5 * DAY);
        let e = Endpoint {
            tlsa: TlsaState::Absent,
            ..endpoint(vec![])
        };
        let p = observed(certs);
        let r = judge(&e, &p, at(NOW));
        assert!(horizons(&[], &[e], &[p], &[r]).endpoints.is_empty());
    }

    #[test]
    fn without_a_parsed_chain_there_is_no_horizon() {
        // No chain (not probed, or an unreadable leaf): no horizon.
        let e = endpoint(vec![]);
        let r = judge(&e, &Probed::Skipped, at(NOW));
        assert!(
            horizons(&[], std::slice::from_ref(&e), &[Probed::Skipped], &[r])
                .endpoints
                .is_empty()
        );
        let garbage = observed(vec![vec![0x30, 0x03, 1, 2, 3]]);
        let r = judge(&e, &garbage, at(NOW));
        assert!(horizons(&[], &[e], &[garbage], &[r]).endpoints.is_empty());
    }

    #[test]
    fn rfc6698_under_pkix_usages_the_date_counts_and_the_record_is_carried() {
        // The judge found a PKIX-EE match resting on a path until NOW + 4 days
        // (webpki roots cannot be faked here: the report is built as the
        // judge builds it, see the matcher's tests for the dates).
        let (certs, _, leaf) = chain(NOW + 20 * DAY, NOW + 4 * DAY);
        let e = endpoint(vec![Tlsa {
            selector: 0,
            ..record(1, leaf)
        }]);
        let p = observed(certs);
        let mut r = judge(&e, &p, at(NOW));
        r.verdict = EndpointVerdict::Match;
        r.matched = match &e.tlsa {
            TlsaState::Present { records } => Some(records[0].to_string()),
            _ => None,
        };
        r.matched_until = Some(NOW + 4 * DAY);
        let h = horizons(&[], &[e], &[p], &[r]).endpoints.pop().unwrap();
        assert!(h.counts_for_dane);
        assert_eq!((h.usage, h.selector), (Some(1), Some(0)));
        assert_eq!(h.chain_not_after, Some(NOW + 4 * DAY));
        assert_eq!(h.expires_at(), NOW + 4 * DAY);
    }

    #[test]
    fn signatures_become_rrset_horizons_judged_at_the_checks_clock() {
        let sig = Signature {
            name: "_5222._tcp.xmpp.example.org".into(),
            rtype: "TLSA".into(),
            signer: "example.org".into(),
            original_ttl: 3600,
            inception: NOW - 60,
            expiration: NOW + 2 * DAY,
        };
        let h = horizons(&[sig], &[], &[], &[]);
        let r = &h.rrsets[0];
        assert_eq!(r.expires_at, NOW + 2 * DAY - 3600);
        assert_eq!(r.zone, "example.org");
        assert_eq!(
            r.problem,
            Some(crate::horizon::SignatureProblem::ShortValidity)
        );
    }
}

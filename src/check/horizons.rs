//! The horizons of a check: when the signatures and certificates its
//! verdict rests on run out ([`crate::horizon`]), from what discovery and
//! the probes observed, judged at the check's clock. They change no verdict.

use std::time::SystemTime;

use crate::dane::{self, MatchContext, Tlsa};
use crate::dns::discovery::{Endpoint, TlsaState};
use crate::dns::Signature;
use crate::horizon::{EndpointHorizon, Horizons, RrsetHorizon};
use crate::judge::Probed;
use crate::report::{EndpointReport, EndpointVerdict};

/// The horizons of a check, from discovery's signatures and each endpoint's
/// probe and verdict (the three lists side by side). The DANE-TA path
/// search verifies certificate signatures (bounded as in matching): run
/// it off the async threads.
pub(super) fn horizons(
    signatures: &[Signature],
    endpoints: &[Endpoint],
    probed: &[Probed],
    reports: &[EndpointReport],
    now: SystemTime,
) -> Horizons {
    Horizons {
        rrsets: signature_horizons(signatures),
        endpoints: endpoints
            .iter()
            .zip(probed)
            .zip(reports)
            .filter_map(|((e, p), r)| endpoint_horizon(e, p, r, now))
            .collect(),
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

/// The certificate horizon of an endpoint that presented a chain whose
/// leaf parses: the leaf's notAfter and, when a DANE-TA record matched,
/// the earliest notAfter on the path from the leaf to that anchor.
fn endpoint_horizon(
    endpoint: &Endpoint,
    probed: &Probed,
    report: &EndpointReport,
    now: SystemTime,
) -> Option<EndpointHorizon> {
    let Probed::Observed(obs) = probed else {
        return None;
    };
    let not_after = dane::not_after(obs.chain.first()?)?;
    let ta = matched_record(endpoint, report).filter(|r| r.usage == 2);
    let chain_not_after = ta.and_then(|record| {
        let ctx = MatchContext {
            chain: &obs.chain,
            reference_names: &endpoint.reference_names,
            now,
            pkix_roots: None,
        };
        let path = dane::trust_anchor_path(record, &ctx)?;
        path.iter()
            .filter_map(|&i| dane::not_after(&obs.chain[i]))
            .min()
    });
    Some(EndpointHorizon {
        endpoint: report.label(),
        not_after,
        chain_not_after,
        counts_for_dane: ta.is_some(),
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

    fn at(secs: u64) -> SystemTime {
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
        horizons(&[], &[e], &[p], &[r], at(NOW)).endpoints.pop()
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
    fn a_chain_that_matched_nothing_still_has_its_leaf_date_and_no_chain_date() {
        let (chain, _, _) = chain(NOW + 3 * DAY, NOW + 5 * DAY);
        // A DANE-TA record naming another CA: a mismatch.
        let h = horizon_of(vec![record(2, vec![7; 32])], chain).unwrap();
        assert_eq!((h.not_after, h.chain_not_after), (NOW + 3 * DAY, None));
        assert!(!h.counts_for_dane);
        // No chain (not probed, or an unreadable leaf): no horizon.
        let e = endpoint(vec![]);
        let r = judge(&e, &Probed::Skipped, at(NOW));
        assert!(horizons(
            &[],
            std::slice::from_ref(&e),
            &[Probed::Skipped],
            &[r],
            at(NOW)
        )
        .endpoints
        .is_empty());
        let garbage = observed(vec![vec![0x30, 0x03, 1, 2, 3]]);
        let r = judge(&e, &garbage, at(NOW));
        assert!(horizons(&[], &[e], &[garbage], &[r], at(NOW))
            .endpoints
            .is_empty());
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
        let h = horizons(&[sig], &[], &[], &[], at(NOW));
        let r = &h.rrsets[0];
        assert_eq!(r.expires_at, NOW + 2 * DAY - 3600);
        assert_eq!(r.zone, "example.org");
        assert_eq!(
            r.problem,
            Some(crate::horizon::SignatureProblem::ShortValidity)
        );
    }
}

//! Turns what DNS and one probe observed into an endpoint verdict. Pure.

use std::time::SystemTime;

use crate::dane::{self, MatchContext, MatchOutcome};
use crate::dns::discovery::{Endpoint, TlsaState};
use crate::probe::tls::TlsObservation;
use crate::probe::ProbeError;
use crate::report::{EndpointReport, EndpointVerdict};

/// What a probe of one endpoint gave, if one was made.
#[derive(Clone, Debug)]
pub enum Probed {
    /// Not probed (no address, or DNS already decided).
    Skipped,
    /// A handshake happened.
    Observed(TlsObservation),
    /// The probe failed.
    Failed(ProbeError),
    /// Not probed by policy (an address not globally reachable, port 0): why.
    Refused(String),
    /// The check did not probe it (its deadline passed, or the domain
    /// publishes more endpoints than a check probes): why.
    NotProbed(String),
}

/// The verdict for one endpoint.
pub fn judge(endpoint: &Endpoint, probed: &Probed, now: SystemTime) -> EndpointReport {
    let mut report = frame(endpoint);
    record_handshake(&mut report, probed);
    if let Probed::Refused(why) = probed {
        report.error.get_or_insert_with(|| why.clone());
    }
    let failure = match probed {
        Probed::Failed(e) => Some(e.to_string()),
        Probed::NotProbed(why) => Some(why.clone()),
        _ => None,
    };
    report.verdict = verdict_from_dns(&mut report, endpoint, probed, now);
    if let Some(e) = failure {
        report.error.get_or_insert_with(|| e.clone());
        if report.verdict == EndpointVerdict::NoTlsa || report.verdict == EndpointVerdict::Insecure
        {
            // Still a finding about DNS; the failed probe only means no key to suggest.
            report.notes.push(format!("probe failed: {e}"));
        }
    }
    report
}

/// The report's frame: what DNS said about the endpoint, before any verdict
/// (which starts as `Unreachable`, the answer when nothing else decides).
fn frame(endpoint: &Endpoint) -> EndpointReport {
    EndpointReport {
        service: endpoint.service.as_str().into(),
        host: endpoint.host.clone(),
        port: endpoint.port,
        address: endpoint.address,
        tls: match endpoint.service.tls() {
            crate::vocab::TlsMode::StartTls => "starttls".into(),
            crate::vocab::TlsMode::Direct => "direct".into(),
        },
        verdict: EndpointVerdict::Unreachable,
        tlsa: Vec::new(),
        spki_sha256: None,
        cert_sha256: None,
        matched: None,
        matched_until: None,
        error: endpoint.error.clone(),
        tlsa_name: endpoint.tlsa_name.clone(),
        tls_version: None,
        cipher: None,
        notes: Vec::new(),
        vantage: Vec::new(),
        confirmed: None,
    }
}

/// Which handshake facts (version, cipher, leaf digests) the report shows;
/// a leaf whose key cannot be read is a note, not an abort.
fn record_handshake(report: &mut EndpointReport, probed: &Probed) {
    let Probed::Observed(obs) = probed else {
        return;
    };
    report.tls_version = Some(obs.version.clone());
    report.cipher = Some(obs.cipher.clone());
    if let Some(leaf) = obs.chain.first() {
        report.cert_sha256 = Some(hex::encode(dane::cert_sha256(leaf)));
        match dane::spki_sha256(leaf) {
            Ok(d) => report.spki_sha256 = Some(hex::encode(d)),
            Err(e) => report
                .notes
                .push(format!("the presented certificate is malformed: {e}")),
        }
    }
}

/// Which verdict the endpoint's TLSA state gives, asking the probe only
/// when records are published or the endpoint is a fallback.
fn verdict_from_dns(
    report: &mut EndpointReport,
    endpoint: &Endpoint,
    probed: &Probed,
    now: SystemTime,
) -> EndpointVerdict {
    match &endpoint.tlsa {
        TlsaState::Bogus { reason } => {
            report.notes.push(reason.clone());
            EndpointVerdict::Bogus
        }
        TlsaState::Failed(f) => {
            report.error.get_or_insert_with(|| f.to_string());
            EndpointVerdict::Unreachable
        }
        TlsaState::NotApplicable { reason, .. } => {
            report.notes.push(format!("DANE does not apply: {reason}"));
            EndpointVerdict::Insecure
        }
        TlsaState::InsecureRecords { records } => {
            report.tlsa = records.iter().map(|r| r.to_string()).collect();
            report.notes.push(format!(
                "the TLSA records at {} are not DNSSEC-secure (for example a CNAME into an unsigned zone), so they protect nothing",
                endpoint.tlsa_name
            ));
            EndpointVerdict::Insecure
        }
        // A fallback endpoint our own transport could not reach: unknown.
        TlsaState::Absent if endpoint.fallback && ours(probed) => EndpointVerdict::NotChecked,
        // A fallback endpoint nobody answers on is a service not offered, not a gap in TLSA.
        TlsaState::Absent
            if endpoint.fallback && matches!(probed, Probed::Failed(_) | Probed::Refused(_)) =>
        {
            EndpointVerdict::Unreachable
        }
        TlsaState::Absent => EndpointVerdict::NoTlsa,
        TlsaState::Present { records } => {
            report.tlsa = records.iter().map(|r| r.to_string()).collect();
            verdict_against_records(report, endpoint, records, probed, now)
        }
    }
}

/// Which verdict a probe gives when secure TLSA records are published: the
/// matcher's if a chain was seen, otherwise whose failure kept us from one.
fn verdict_against_records(
    report: &mut EndpointReport,
    endpoint: &Endpoint,
    records: &[dane::Tlsa],
    probed: &Probed,
    now: SystemTime,
) -> EndpointVerdict {
    match probed {
        Probed::Observed(obs) => {
            let ctx = MatchContext {
                chain: &obs.chain,
                reference_names: &endpoint.reference_names,
                now,
                pkix_roots: None,
            };
            verdict_from_match(report, dane::match_chain(records, &ctx))
        }
        // Not offered, or offered and then refused with <failure/>: either
        // way this server will not do the TLS its records require.
        Probed::Failed(e) if e.is_starttls_missing() => {
            report.error = Some(e.to_string());
            EndpointVerdict::StarttlsMissing
        }
        // The server (or whoever answers for it) sent a chain too large
        // for the handshake, or one the probe's OpenSSL cannot parse. It cannot be checked against the records, and
        // an interceptor could send one on purpose: calling that
        // unreachable would let it keep the monitor quiet (and count as
        // our failure). So it is an alarm, with the reason in `error`.
        Probed::Failed(e) if e.is_chain_unusable() => {
            report.error = Some(e.to_string());
            EndpointVerdict::Mismatch
        }
        // Our Tor or proxy failed: nothing is known about the
        // server, so it is not called unreachable.
        Probed::Failed(_) if ours(probed) => EndpointVerdict::NotChecked,
        Probed::Failed(_) | Probed::Skipped | Probed::Refused(_) | Probed::NotProbed(_) => {
            EndpointVerdict::Unreachable
        }
    }
}

/// Which verdict the matcher's outcome gives; every outcome but a match is
/// an alarm or a DNS finding, never silence.
fn verdict_from_match(report: &mut EndpointReport, outcome: MatchOutcome) -> EndpointVerdict {
    match outcome {
        MatchOutcome::Matched {
            record,
            valid_until,
        } => {
            report.matched = Some(record.to_string());
            report.matched_until = valid_until;
            EndpointVerdict::Match
        }
        MatchOutcome::NoMatch { notes } => {
            report.notes.extend(notes);
            EndpointVerdict::Mismatch
        }
        MatchOutcome::NoUsableRecords { notes } => {
            report.notes.extend(notes);
            report
                .notes
                .push("no TLSA record is usable (RFC 7671 §4.1)".into());
            EndpointVerdict::NoTlsa
        }
        MatchOutcome::SearchExhausted { notes } => {
            // An alarm, not silence: see MatchOutcome::SearchExhausted.
            report.notes.extend(notes);
            EndpointVerdict::Mismatch
        }
        MatchOutcome::MalformedChain { error } => {
            report.notes.push(format!(
                "the server presented a certificate that cannot be parsed: {error}"
            ));
            EndpointVerdict::Mismatch
        }
    }
}

/// Whether the probe failed on our side (our Tor client or proxy), not the server's.
fn ours(probed: &Probed) -> bool {
    use crate::error::HasKind;
    matches!(probed, Probed::Failed(e) if e.is_ours())
}

/// The report for an endpoint whose judging did not finish (the matcher
/// panicked, or its thread was lost): a finding, never a crash and never `ok`.
/// With records published and a chain in hand, a chain we could not judge is
/// treated like one that does not match, so that whatever makes the matcher
/// fail cannot be used to keep the monitor quiet.
pub fn judging_failed(
    endpoint: &Endpoint,
    probed: &Probed,
    now: SystemTime,
    why: &str,
) -> EndpointReport {
    // Skipped: builds the report's frame without running the matcher again.
    let mut report = judge(endpoint, &Probed::Skipped, now);
    let error = format!("internal error: judging the presented chain failed ({why})");
    if matches!(endpoint.tlsa, TlsaState::Present { .. }) && matches!(probed, Probed::Observed(_)) {
        report.verdict = EndpointVerdict::Mismatch;
        report
            .notes
            .push("the chain could not be judged, so it counts as not matching".into());
    }
    report.error = Some(error);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dane::Tlsa;
    use crate::probe::ProbeFailure;
    use crate::vocab::Service;

    fn cert() -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["xmpp.example.org".into()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn endpoint(tlsa: TlsaState) -> Endpoint {
        Endpoint {
            service: Service::XmppClient,
            host: "xmpp.example.org".into(),
            port: 5222,
            address: Some("192.0.2.1".parse().unwrap()),
            tlsa_name: "_5222._tcp.xmpp.example.org".into(),
            reference_names: vec!["example.org".into(), "xmpp.example.org".into()],
            tlsa,
            error: None,
            fallback: false,
        }
    }

    fn observed(der: &[u8]) -> Probed {
        Probed::Observed(TlsObservation {
            chain: vec![der.to_vec()],
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            alpn: None,
        })
    }

    #[test]
    fn verdict_table() {
        let der = cert();
        let other = cert();
        let good = dane::record_for(&der, 3, 1, 1).unwrap();
        let bad = dane::record_for(&other, 3, 1, 1).unwrap();
        let present = |r: &Tlsa| TlsaState::Present {
            records: vec![r.clone()],
        };
        let no_starttls = Probed::Failed(ProbeError::Session(ProbeFailure::StartTlsMissing));
        let starttls_refused = Probed::Failed(ProbeError::Session(ProbeFailure::StartTlsRefused));
        let too_large = Probed::Failed(ProbeError::Session(ProbeFailure::ChainTooLarge {
            detail: "received corrupt message of type HandshakePayloadTooLarge".into(),
        }));
        let unparsable = Probed::Failed(ProbeError::Session(ProbeFailure::ChainUnparsable {
            detail: "error:0A00000D:SSL routines:tls_process_server_certificate:ASN1 lib".into(),
        }));
        let refused = Probed::Failed(ProbeError::Connect(
            crate::probe::transport::ConnectFailure::Remote("connection refused".into()),
        ));
        let our_tor = Probed::Failed(ProbeError::Connect(
            crate::probe::transport::ConnectFailure::Transport(
                "our Tor client failed: tor operation timed out".into(),
            ),
        ));
        let our_io = Probed::Failed(ProbeError::Session(ProbeFailure::Io { detail: "x".into() }));
        let table = vec![
            // Our Tor (or proxy) failed: the server is not called unreachable.
            (present(&good), our_tor.clone(), EndpointVerdict::NotChecked),
            (present(&good), our_io, EndpointVerdict::NotChecked),
            // Without TLSA the DNS finding stands; the probe only gave no key.
            (TlsaState::Absent, our_tor, EndpointVerdict::NoTlsa),
            (present(&good), observed(&der), EndpointVerdict::Match),
            (present(&bad), observed(&der), EndpointVerdict::Mismatch),
            (
                present(&good),
                no_starttls.clone(),
                EndpointVerdict::StarttlsMissing,
            ),
            (
                present(&good),
                refused.clone(),
                EndpointVerdict::Unreachable,
            ),
            // <failure/> in answer to <starttls/>: as good as not offered.
            (
                present(&good),
                starttls_refused.clone(),
                EndpointVerdict::StarttlsMissing,
            ),
            (TlsaState::Absent, starttls_refused, EndpointVerdict::NoTlsa),
            // A chain too large to receive cannot be checked: an alarm, never silence.
            (present(&good), too_large.clone(), EndpointVerdict::Mismatch),
            (TlsaState::Absent, too_large, EndpointVerdict::NoTlsa),
            // So is one the probe's OpenSSL cannot parse (garbage appended
            // to the chain): never "unreachable".
            (
                present(&good),
                unparsable.clone(),
                EndpointVerdict::Mismatch,
            ),
            (TlsaState::Absent, unparsable, EndpointVerdict::NoTlsa),
            (TlsaState::Absent, observed(&der), EndpointVerdict::NoTlsa),
            (TlsaState::Absent, no_starttls, EndpointVerdict::NoTlsa),
            (
                TlsaState::Bogus { reason: "x".into() },
                Probed::Skipped,
                EndpointVerdict::Bogus,
            ),
            (
                TlsaState::InsecureRecords {
                    records: vec![good.clone()],
                },
                observed(&der),
                EndpointVerdict::Insecure,
            ),
            (
                present(&good),
                observed(b"garbage"),
                EndpointVerdict::Mismatch,
            ),
            // Not probed by policy: nothing seen, never a match.
            (
                present(&good),
                Probed::Refused("not probed".into()),
                EndpointVerdict::Unreachable,
            ),
        ];
        for (state, probed, want) in table {
            let r = judge(&endpoint(state.clone()), &probed, SystemTime::now());
            assert_eq!(r.verdict, want, "{state:?} / {probed:?}");
        }
    }

    #[test]
    fn a_fallback_our_tor_could_not_reach_is_not_checked() {
        let mut e = endpoint(TlsaState::Absent);
        e.fallback = true;
        let ours = Probed::Failed(ProbeError::Connect(
            crate::probe::transport::ConnectFailure::Transport("our socks5 proxy failed".into()),
        ));
        let r = judge(&e, &ours, SystemTime::now());
        assert_eq!(r.verdict, EndpointVerdict::NotChecked);
        assert!(r.error.unwrap().contains("our socks5 proxy"));
        let refused = Probed::Failed(ProbeError::Connect(
            crate::probe::transport::ConnectFailure::Remote("connection refused".into()),
        ));
        assert_eq!(
            judge(&e, &refused, SystemTime::now()).verdict,
            EndpointVerdict::Unreachable
        );
    }

    #[test]
    fn errors_name_the_reason() {
        let der = cert();
        let good = dane::record_for(&der, 3, 1, 1).unwrap();
        let present = endpoint(TlsaState::Present {
            records: vec![good],
        });
        let too_large = Probed::Failed(ProbeError::Session(ProbeFailure::ChainTooLarge {
            detail: "x".into(),
        }));
        let r = judge(&present, &too_large, SystemTime::now());
        let error = r.error.unwrap();
        assert!(
            error.contains("certificate chain is too large to check"),
            "{error}"
        );
        let r = judging_failed(&present, &observed(&der), SystemTime::now(), "panicked");
        assert_eq!(r.verdict, EndpointVerdict::Mismatch);
        assert!(r.error.unwrap().contains("internal error"));
        // Nothing observed, so nothing misjudged: the frame's own verdict stands.
        let r = judging_failed(&present, &Probed::Skipped, SystemTime::now(), "panicked");
        assert_eq!(r.verdict, EndpointVerdict::Unreachable);
    }

    #[test]
    fn match_reports_digests_and_record() {
        let der = cert();
        let good = dane::record_for(&der, 3, 1, 1).unwrap();
        let r = judge(
            &endpoint(TlsaState::Present {
                records: vec![good.clone()],
            }),
            &observed(&der),
            SystemTime::now(),
        );
        assert_eq!(r.matched.as_deref(), Some(good.to_string().as_str()));
        assert_eq!(
            r.spki_sha256.as_deref(),
            Some(hex::encode(&good.data).as_str())
        );
        assert_eq!(r.cert_sha256.unwrap().len(), 64);
        assert_eq!(r.tlsa, vec![good.to_string()]);
    }
}

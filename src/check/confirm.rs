//! Judging every endpoint off the runtime, and confirming a mismatch
//! through a second probe from another exit.

use super::vantages::SEEN_ONLY_FROM;
use super::*;

impl Checker {
    /// Judges every endpoint, confirms each mismatch through another exit,
    /// and notes where few Tor exits allow a port.
    pub(super) async fn judge_all(
        &self,
        domain: &Domain,
        endpoints: &[Endpoint],
        probed: &[Probed],
        (exits, origins): (&[Option<ExitRelay>], &[Origin]),
        deadline: tokio::time::Instant,
    ) -> Vec<EndpointReport> {
        let now = self.clock.now();
        let mut reports = Vec::with_capacity(endpoints.len());
        let mut exit_counts: Vec<((bool, u16), Option<ExitCount>)> = Vec::new();
        for (((endpoint, p), exit), origin) in endpoints.iter().zip(probed).zip(exits).zip(origins)
        {
            let mut report = judge_off_runtime(endpoint, p, now).await;
            add_vantage(&mut report, exit.as_ref(), origin);
            if report.verdict == EndpointVerdict::Mismatch && self.confirm_mismatch {
                let first = (exit.clone(), origin);
                report = self
                    .confirm(domain, endpoint, report, first, now, deadline)
                    .await;
            }
            self.suspects.update(endpoint, &report, origin);
            if let (Some(ip), Probed::Observed(_) | Probed::Failed(_)) = (endpoint.address, p) {
                let addr = SocketAddr::new(ip, endpoint.port);
                let key = (addr.is_ipv6(), addr.port());
                let count = match exit_counts.iter().find(|(k, _)| *k == key) {
                    Some((_, c)) => *c,
                    None => {
                        let c = self.prober.exit_count(addr);
                        exit_counts.push((key, c));
                        c
                    }
                };
                if let Some(note) = count.and_then(|c| c.few_note(addr)) {
                    report.notes.push(note);
                } else if count.is_none()
                    && self.prober.transport() == "socks5"
                    && addr.port() == 5269
                    && matches!(p, Probed::Failed(_))
                {
                    // The proxy shows no directory: say what is known of 5269.
                    report.notes.push(
                        "many Tor exits do not allow port 5269 (Tor's reduced exit policy allows 5222-5223 but not 5269), so over Tor this may be the exits' policy rather than the server".into(),
                    );
                }
            }
            reports.push(report);
        }
        reports
    }

    /// A second probe, over Tor through an exit that is neither the first
    /// probe's nor of its family; the mismatch is confirmed only when that
    /// probe too sees a key no record matches. When it cannot be made the
    /// mismatch stands, marked not confirmed.
    async fn confirm(
        &self,
        domain: &Domain,
        endpoint: &Endpoint,
        first: EndpointReport,
        (first_exit, origin): (Option<ExitRelay>, &Origin),
        now: SystemTime,
        deadline: tokio::time::Instant,
    ) -> EndpointReport {
        let Some(address) = endpoint.address else {
            return first;
        };
        let target = target(domain, endpoint, address);
        let mut first = first;
        let others = self.probe_others(origin, endpoint, &target, deadline).await;
        match self
            .seen_by_others(&mut first, endpoint, origin, others, now)
            .await
        {
            Some(true) => return first,
            Some(false) => {}
            // Nobody else saw anything: the same vantage looks again.
            None => {}
        }
        let over_tor = origin.transport == "tor";
        if over_tor && first_exit.is_none() {
            // Nothing to steer away from: a second probe could be the same exit.
            return unconfirmed(first, "the first probe's Tor exit is not known");
        }
        let avoid: Vec<ExitRelay> = first_exit.into_iter().collect();
        // Like the first probe, retried once: one failed circuit (common on
        // Tor) must not leave a real interception unconfirmed.
        let (second, exit, again_origin) = match self
            .probe_at(origin.name(), endpoint, &target, deadline, &avoid)
            .await
        {
            Ok(sight) => sight,
            Err(e) => (
                Probed::NotProbed(format!("not probed: {e}")),
                None,
                origin.clone(),
            ),
        };
        let mut again = judge_off_runtime(endpoint, &second, now).await;
        let only_here = first.notes.iter().any(|n| n.starts_with(SPARED));
        let how = match (&exit, over_tor) {
            (Some(e), _) => format!("through a different Tor exit ({e})"),
            (None, true) => "over a fresh circuit".to_owned(),
            (None, false) if origin.transport == "socks5" => {
                "over a fresh circuit of the proxy (which does not say which exit it used)"
                    .to_owned()
            }
            (None, false) => "over a second connection".to_owned(),
        };
        let how = match &origin.agent {
            Some(agent) => format!("{how} from vantage {agent}"),
            None => how,
        };
        match again.verdict {
            EndpointVerdict::Mismatch => {
                add_vantage_to(&mut first, &again, exit.as_ref(), &again_origin);
                first.confirmed = Some(true);
                first
                    .notes
                    .push(format!("confirmed by a second probe {how}"));
                if only_here {
                    first.notes.retain(|n| !n.starts_with(SPARED));
                    first.notes.push(format!(
                        "{SEEN_ONLY_FROM}{}: an interceptor that spares other networks, or that vantage's own path is intercepted",
                        origin.name()
                    ));
                }
                if again.spki_sha256 != first.spki_sha256 {
                    first.notes.push(format!(
                        "the second probe saw yet another key: {}",
                        again.spki_sha256.unwrap_or_default()
                    ));
                }
                first
            }
            EndpointVerdict::Match => {
                add_vantage(&mut again, exit.as_ref(), &again_origin);
                again.vantage.splice(0..0, first.vantage.iter().cloned());
                again.notes.push(format!(
                    "a first probe saw a non-matching key (SPKI sha256 {}), not seen again by a second probe {how}",
                    first.spki_sha256.unwrap_or_default()
                ));
                again
            }
            _ => {
                let why = match &second {
                    Probed::Observed(_) => format!(
                        "the second probe {how} got no key to judge ({})",
                        again
                            .notes
                            .first()
                            .cloned()
                            .unwrap_or_else(|| again.verdict_word().into())
                    ),
                    _ => format!(
                        "the second probe failed ({})",
                        again.error.unwrap_or_default()
                    ),
                };
                unconfirmed(first, &why)
            }
        }
    }

    /// What the other vantages saw of a mismatch `first` saw: Some(true)
    /// when another saw a key no record matches too (confirmed, `first`
    /// says from how many networks); Some(false) when the others saw the
    /// matching key (the first vantage must look again); None when no
    /// other vantage saw a key.
    async fn seen_by_others(
        &self,
        first: &mut EndpointReport,
        endpoint: &Endpoint,
        origin: &Origin,
        others: Vec<Sight>,
        now: SystemTime,
    ) -> Option<bool> {
        let mut bad = vec![origin.name().to_owned()];
        let mut good = Vec::new();
        for (p, exit, o) in others {
            let judged = judge_off_runtime(endpoint, &p, now).await;
            let name = o.name().to_owned();
            match judged.verdict {
                EndpointVerdict::Mismatch => bad.push(name),
                EndpointVerdict::Match => good.push(name),
                _ => continue,
            }
            add_vantage_to(first, &judged, exit.as_ref(), &o);
        }
        if bad.len() >= 2 {
            first.confirmed = Some(true);
            first.notes.push(format!(
                "confirmed by a second probe from another vantage ({})",
                bad[1..].join(", ")
            ));
            let mut seen = format!("seen from {} networks ({})", bad.len(), bad.join(", "));
            if !good.is_empty() {
                seen.push_str(&format!("; not from {}", good.join(", ")));
            }
            first.notes.push(seen);
            return Some(true);
        }
        if good.is_empty() {
            return None;
        }
        first.notes.push(format!("{SPARED}{}", good.join(", ")));
        Some(false)
    }
}

/// The note on a mismatch that other vantages saw the matching key, until
/// the first vantage looked again.
const SPARED: &str = "the matching key was seen from ";

/// A vantage entry.
fn vantage_of(spki: String, exit: Option<&ExitRelay>, origin: &Origin) -> Vantage {
    Vantage {
        transport: origin.transport.clone(),
        exit: exit.map(|e| e.rsa.clone()),
        spki_sha256: spki,
        agent: origin.agent.clone(),
    }
}

/// Records the probe behind `report` as a vantage, when it saw a key.
fn add_vantage(report: &mut EndpointReport, exit: Option<&ExitRelay>, origin: &Origin) {
    if let Some(spki) = &report.spki_sha256 {
        report.vantage.push(vantage_of(spki.clone(), exit, origin));
    }
}

/// Adds the vantage of a second probe (judged as `again`) to `first`.
fn add_vantage_to(
    first: &mut EndpointReport,
    again: &EndpointReport,
    exit: Option<&ExitRelay>,
    origin: &Origin,
) {
    if let Some(spki) = &again.spki_sha256 {
        first.vantage.push(vantage_of(spki.clone(), exit, origin));
    }
}

/// [`judge`] on tokio's blocking pool: matching a chain verifies signatures,
/// which is CPU work that must not hold up the runtime's threads (chat
/// replies, other checks). The matcher bounds that work itself
/// (`dane::MAX_SIGNATURE_CHECKS`); this keeps even the bounded work off the
/// async threads. A panic in the matcher becomes a finding in the report
/// ([`judging_failed`]), not a crash of the check.
pub(super) async fn judge_off_runtime(
    endpoint: &Endpoint,
    probed: &Probed,
    now: SystemTime,
) -> EndpointReport {
    judge_blocking(judge, endpoint, probed, now).await
}

/// Runs `judging` on the blocking pool; a panic becomes [`judging_failed`].
pub(super) async fn judge_blocking<F>(
    judging: F,
    endpoint: &Endpoint,
    probed: &Probed,
    now: SystemTime,
) -> EndpointReport
where
    F: FnOnce(&Endpoint, &Probed, SystemTime) -> EndpointReport + Send + 'static,
{
    let (e, p) = (endpoint.clone(), probed.clone());
    match tokio::task::spawn_blocking(move || judging(&e, &p, now)).await {
        Ok(report) => report,
        Err(join) => {
            let why = if join.is_panic() {
                "the matcher panicked"
            } else {
                "the judging task was cancelled"
            };
            tracing::error!(host = %endpoint.host, port = endpoint.port, error = %join, "{why}");
            judging_failed(endpoint, probed, now, why)
        }
    }
}

/// A mismatch whose confirming probe could not be made: it stands, marked so.
pub(super) fn unconfirmed(mut first: EndpointReport, why: &str) -> EndpointReport {
    first.confirmed = Some(false);
    first.notes.push(format!("not confirmed: {why}"));
    first
}

/// What the endpoints in mismatch presented, as evidence for the alert.
pub(super) fn evidence(
    report: &Report,
    probed: &[Probed],
    exits: &[Option<ExitRelay>],
    seen_at: &str,
) -> Vec<crate::report::Evidence> {
    report
        .endpoints
        .iter()
        .zip(probed)
        .zip(exits)
        .filter(|((e, _), _)| e.verdict == EndpointVerdict::Mismatch)
        .filter_map(|((e, p), exit)| match p {
            Probed::Observed(obs) => Some((e, obs, exit)),
            _ => None,
        })
        .map(|(e, obs, exit)| {
            let mut chain_pem = String::new();
            for der in &obs.chain {
                let block = pem::encode(&pem::Pem::new("CERTIFICATE", der.clone()));
                if chain_pem.len() + block.len() > crate::report::MAX_EVIDENCE_PEM {
                    chain_pem.push_str("(the rest of the chain is not kept: too large)\n");
                    break;
                }
                chain_pem.push_str(&block);
            }
            crate::report::Evidence {
                endpoint: e.label(),
                seen_at: seen_at.to_owned(),
                transport: report.transport.clone(),
                exit: exit.as_ref().map(|x| x.rsa.clone()),
                spki_sha256: e.spki_sha256.clone().unwrap_or_default(),
                chain_pem,
            }
        })
        .collect()
}

//! A check: discovery, a probe of every endpoint, judging, advice.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use futures::stream::{self, StreamExt};
use hickory_resolver::proto::rr::RecordType;
use tracing::Instrument;

use crate::advice::{self, AdviceInput, ZoneFacts};
use crate::clock::SharedClock;
use crate::dns::discovery::{self, Endpoint, TlsaState};
use crate::dns::Resolver;
use crate::domain::Domain;
use crate::error::HasKind;
use crate::judge::{judge, judging_failed, Probed};
use crate::netpolicy;
use crate::probe::{Prober, Target};
use crate::report::{EndpointReport, EndpointVerdict, Report};
use crate::vocab::ServiceSet;

/// Most probes of one check in flight at once.
pub const PROBE_CONCURRENCY: usize = 8;

/// What went wrong on our side during a check: the operator's concern, not the domain's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// DNS lookups that got no usable answer.
    pub dns_failures: usize,
    /// Probes that failed because of Tor or the proxy.
    pub transport_failures: usize,
    /// Probes attempted.
    pub probes: usize,
}

/// Runs checks with one resolver and one prober.
#[derive(Clone)]
pub struct Checker {
    resolver: Resolver,
    prober: Prober,
    clock: SharedClock,
    /// Confirm a mismatch over a fresh circuit before reporting it.
    pub confirm_mismatch: bool,
    /// Also probe addresses that are not globally reachable.
    pub allow_private: bool,
}

impl Checker {
    /// A checker.
    pub fn new(resolver: Resolver, prober: Prober, clock: SharedClock) -> Checker {
        Checker {
            resolver,
            prober,
            clock,
            confirm_mismatch: true,
            allow_private: false,
        }
    }

    /// The same checker with another resolver (fresh caches).
    pub fn with_resolver(&self, resolver: Resolver) -> Checker {
        Checker {
            resolver,
            ..self.clone()
        }
    }

    /// Checks one domain.
    pub async fn check(&self, domain: &Domain, services: ServiceSet) -> (Report, Health) {
        let span = tracing::info_span!("check", domain = %domain);
        self.check_inner(domain, services).instrument(span).await
    }

    async fn check_inner(&self, domain: &Domain, services: ServiceSet) -> (Report, Health) {
        let checked_at = self.clock.now_rfc3339();
        let found = discovery::discover(&self.resolver, domain, &services.services()).await;
        // A lookup that got no answer is news about the domain when our
        // resolver answers for the root; only when it does not is it ours.
        let unanswered = found.failures.iter().filter(|f| f.is_ours()).count();
        let resolver_works = unanswered == 0 || self.resolver.canary().await;
        let mut health = Health {
            dns_failures: if resolver_works { 0 } else { unanswered },
            ..Health::default()
        };
        let endpoints = Arc::new(found.endpoints.clone());
        let probes: Vec<(usize, Probed)> = stream::iter(0..endpoints.len())
            .map(|i| {
                let endpoints = endpoints.clone();
                async move { (i, self.probe_endpoint(domain, &endpoints[i]).await) }
            })
            .buffer_unordered(PROBE_CONCURRENCY)
            .collect()
            .await;
        let mut probed = vec![Probed::Skipped; endpoints.len()];
        for (i, p) in probes {
            probed[i] = p;
        }
        let now = self.clock.now();
        let mut reports = Vec::with_capacity(endpoints.len());
        for (endpoint, p) in endpoints.iter().zip(&probed) {
            if matches!(p, Probed::Observed(_) | Probed::Failed(_)) {
                health.probes += 1;
            }
            if let Probed::Failed(e) = p {
                if !e.is_remote() {
                    health.transport_failures += 1;
                }
            }
            let mut report = judge_off_runtime(endpoint, p, now).await;
            if report.verdict == EndpointVerdict::Mismatch && self.confirm_mismatch {
                report = self.confirm(domain, endpoint, report, now).await;
            }
            reports.push(report);
        }
        let mut errors: Vec<String> = found.failures.iter().map(|f| f.to_string()).collect();
        if unanswered > 0 && resolver_works {
            errors.push(format!(
                "our resolver answers for the root zone, so the {unanswered} failed lookup(s) of {domain} are its own DNS failing (or being blocked)"
            ));
        }
        errors.extend(found.notes.iter().cloned());
        for (e, p) in endpoints.iter().zip(&probed) {
            if let Probed::Failed(err) = p {
                if !err.is_remote() {
                    errors.push(format!("{}:{}: {err}", e.host, e.port));
                }
            }
            if let Probed::Refused(why) = p {
                let line = format!("{}:{}: {why}", e.host, e.port);
                if !errors.contains(&line) {
                    errors.push(line);
                }
            }
        }
        let dns_failed = !found.failures.is_empty();
        let verdict = Report::overall(&reports, dns_failed, !found.bogus.is_empty());
        let zones = self.zone_facts(&endpoints).await;
        let advice = advice::advise(&AdviceInput {
            domain: domain.as_str(),
            endpoints: &reports,
            zones: &zones,
            fallbacks: &found.fallbacks,
            dns_failed,
        });
        let report = Report {
            domain: domain.to_string(),
            checked_at,
            verdict,
            records_to_add: advice::records_to_add(&reports),
            endpoints: reports,
            advice,
            transport: self.prober.transport().into(),
            errors,
            bogus_rrsets: found.bogus.clone(),
        };
        tracing::info!(verdict = %report.verdict, endpoints = report.endpoints.len(), "checked");
        (report, health)
    }

    async fn probe_endpoint(&self, domain: &Domain, endpoint: &Endpoint) -> Probed {
        let Some(address) = endpoint.address else {
            return Probed::Skipped;
        };
        if matches!(
            endpoint.tlsa,
            TlsaState::Bogus { .. } | TlsaState::Failed(_)
        ) {
            return Probed::Skipped;
        }
        let target = target(domain, endpoint, address);
        if let Some(why) = netpolicy::refusal(target.addr, self.allow_private) {
            return Probed::Refused(why);
        }
        match self.prober.probe(&target).await {
            Ok(obs) => Probed::Observed(obs),
            Err(e) => Probed::Failed(e),
        }
    }

    /// A second probe over a fresh circuit; only a repeated mismatch stands.
    async fn confirm(
        &self,
        domain: &Domain,
        endpoint: &Endpoint,
        first: crate::report::EndpointReport,
        now: SystemTime,
    ) -> crate::report::EndpointReport {
        let Some(address) = endpoint.address else {
            return first;
        };
        let second = match self
            .prober
            .probe_once(&target(domain, endpoint, address))
            .await
        {
            Ok(obs) => Probed::Observed(obs),
            Err(e) => Probed::Failed(e),
        };
        let mut again = judge_off_runtime(endpoint, &second, now).await;
        match again.verdict {
            EndpointVerdict::Mismatch => {
                let mut first = first;
                first
                    .notes
                    .push("confirmed by a second probe over a fresh circuit".into());
                if again.spki_sha256 != first.spki_sha256 {
                    first.notes.push(format!(
                        "the second probe saw yet another key: {}",
                        again.spki_sha256.unwrap_or_default()
                    ));
                }
                first
            }
            EndpointVerdict::Match => {
                again.notes.push(format!(
                    "a first probe saw a non-matching key (SPKI sha256 {}), not seen again over a fresh circuit",
                    first.spki_sha256.unwrap_or_default()
                ));
                again
            }
            _ => {
                let mut first = first;
                first.notes.push(format!(
                    "not confirmed: the second probe failed ({})",
                    again.error.unwrap_or_default()
                ));
                first
            }
        }
    }

    /// What DNS says about each zone that needs signing.
    async fn zone_facts(&self, endpoints: &[Endpoint]) -> Vec<ZoneFacts> {
        let names: BTreeSet<String> = endpoints
            .iter()
            .filter_map(|e| match &e.tlsa {
                TlsaState::NotApplicable { name, .. } => Some(name.clone()),
                _ => None,
            })
            .collect();
        let mut facts = Vec::new();
        let mut zones_seen = BTreeSet::new();
        for name in names {
            let zone = self.resolver.zone_of(&name).await.ok().flatten();
            if let Some(z) = &zone {
                if !zones_seen.insert(z.clone()) {
                    continue;
                }
            }
            let apex = zone.clone().unwrap_or_else(|| name.clone());
            let has = |r: Result<crate::dns::Answer<()>, _>| {
                r.map(|a| !a.records.is_empty()).unwrap_or(false)
            };
            let has_dnskey = has(self.resolver.exists(&apex, RecordType::DNSKEY).await);
            let has_ds = has(self.resolver.exists(&apex, RecordType::DS).await);
            facts.push(ZoneFacts {
                name,
                zone,
                has_dnskey,
                has_ds,
            });
        }
        facts
    }
}

/// [`judge`] on tokio's blocking pool: matching a chain verifies signatures,
/// which is CPU work that must not hold up the runtime's threads (chat
/// replies, other checks). The matcher bounds that work itself
/// (`dane::MAX_SIGNATURE_CHECKS`); this keeps even the bounded work off the
/// async threads. A panic in the matcher becomes a finding in the report
/// ([`judging_failed`]), not a crash of the check.
async fn judge_off_runtime(
    endpoint: &Endpoint,
    probed: &Probed,
    now: SystemTime,
) -> EndpointReport {
    judge_blocking(judge, endpoint, probed, now).await
}

/// Runs `judging` on the blocking pool; a panic becomes [`judging_failed`].
async fn judge_blocking<F>(
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

fn target(domain: &Domain, endpoint: &Endpoint, address: std::net::IpAddr) -> Target {
    Target {
        addr: SocketAddr::new(address, endpoint.port),
        domain: domain.to_string(),
        role: endpoint.service.role(),
        tls: endpoint.service.tls(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dane;
    use crate::probe::tls::TlsObservation;
    use crate::vocab::Service;

    fn endpoint_and_chain() -> (Endpoint, Probed) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["xmpp.example.org".into()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let endpoint = Endpoint {
            service: Service::XmppClient,
            host: "xmpp.example.org".into(),
            port: 5222,
            address: Some("192.0.2.1".parse().unwrap()),
            tlsa_name: "_5222._tcp.xmpp.example.org".into(),
            reference_names: vec!["example.org".into()],
            tlsa: TlsaState::Present {
                records: vec![dane::record_for(&der, 3, 1, 1).unwrap()],
            },
            error: None,
            fallback: false,
        };
        let probed = Probed::Observed(TlsObservation {
            chain: vec![der],
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            alpn: None,
        });
        (endpoint, probed)
    }

    #[tokio::test]
    async fn judging_runs_off_the_runtime_threads() {
        let (endpoint, probed) = endpoint_and_chain();
        let runtime_thread = std::thread::current().id();
        let report = judge_blocking(
            move |e, p, now| {
                assert_ne!(std::thread::current().id(), runtime_thread);
                judge(e, p, now)
            },
            &endpoint,
            &probed,
            SystemTime::now(),
        )
        .await;
        assert_eq!(report.verdict, EndpointVerdict::Match);
    }

    #[tokio::test]
    async fn a_panicking_matcher_is_a_finding_not_a_crash() {
        let (endpoint, probed) = endpoint_and_chain();
        let report = judge_blocking(
            |_, _, _| panic!("matcher bug"),
            &endpoint,
            &probed,
            SystemTime::now(),
        )
        .await;
        // A chain we could not judge is not let through as ok, nor as silence.
        assert_eq!(report.verdict, EndpointVerdict::Mismatch);
        let error = report.error.unwrap();
        assert!(error.contains("the matcher panicked"), "{error}");
    }
}

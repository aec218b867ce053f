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
use crate::judge::{judge, Probed};
use crate::probe::{ProbeError, Prober, Target};
use crate::report::{EndpointVerdict, Report};
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
}

impl Checker {
    /// A checker.
    pub fn new(resolver: Resolver, prober: Prober, clock: SharedClock) -> Checker {
        Checker {
            resolver,
            prober,
            clock,
            confirm_mismatch: true,
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
        // All probes of this check, the confirming ones included, end by here.
        let deadline = tokio::time::Instant::now() + self.prober.check_budget();
        let (chosen, left_out) = choose(&endpoints, self.prober.max_endpoints());
        let probes: Vec<(usize, Probed)> = stream::iter(chosen)
            .map(|i| {
                let endpoints = endpoints.clone();
                async move {
                    let p = self.probe_endpoint(domain, &endpoints[i], deadline).await;
                    (i, p)
                }
            })
            .buffer_unordered(PROBE_CONCURRENCY)
            .collect()
            .await;
        let mut probed = vec![Probed::Skipped; endpoints.len()];
        for (i, p) in probes {
            probed[i] = p;
        }
        let probeable = endpoints.iter().filter(|e| probeable(e)).count();
        for &i in &left_out {
            probed[i] = Probed::NotProbed(format!(
                "not probed: the domain publishes {probeable} endpoints, more than the {} a check probes",
                self.prober.max_endpoints()
            ));
        }
        let now = self.clock.now();
        let mut reports = Vec::with_capacity(endpoints.len());
        for (endpoint, p) in endpoints.iter().zip(&probed) {
            if !matches!(p, Probed::Skipped | Probed::NotProbed(_)) {
                health.probes += 1;
            }
            if let Probed::Failed(e) = p {
                if !e.is_remote() {
                    health.transport_failures += 1;
                }
            }
            let mut report = judge(endpoint, p, now);
            if report.verdict == EndpointVerdict::Mismatch && self.confirm_mismatch {
                report = self.confirm(domain, endpoint, report, now, deadline).await;
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
        if !left_out.is_empty() {
            errors.push(format!(
                "{domain} publishes {probeable} endpoints; a check probes {} of them, taken in turn from each service and host, so {} were not probed (a mismatch on one of them would go unseen)",
                self.prober.max_endpoints(),
                left_out.len()
            ));
        }
        let cut_off = probed
            .iter()
            .filter(|p| matches!(p, Probed::NotProbed(_)))
            .count()
            - left_out.len();
        if cut_off > 0 {
            errors.push(format!(
                "{cut_off} endpoint(s) were not probed: {} (slow servers, or many probes queued for one address)",
                self.prober.deadline_passed()
            ));
        }
        for (e, p) in endpoints.iter().zip(&probed) {
            if let Probed::Failed(err) = p {
                if !err.is_remote() {
                    errors.push(format!("{}:{}: {err}", e.host, e.port));
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

    async fn probe_endpoint(
        &self,
        domain: &Domain,
        endpoint: &Endpoint,
        deadline: tokio::time::Instant,
    ) -> Probed {
        let Some(address) = endpoint.address.filter(|_| probeable(endpoint)) else {
            return Probed::Skipped;
        };
        let target = target(domain, endpoint, address);
        probed(self.prober.probe(&target, deadline).await)
    }

    /// A second probe over a fresh circuit; only a repeated mismatch stands.
    async fn confirm(
        &self,
        domain: &Domain,
        endpoint: &Endpoint,
        first: crate::report::EndpointReport,
        now: SystemTime,
        deadline: tokio::time::Instant,
    ) -> crate::report::EndpointReport {
        let Some(address) = endpoint.address else {
            return first;
        };
        let second = probed(
            self.prober
                .probe_once(&target(domain, endpoint, address), deadline)
                .await,
        );
        let mut again = judge(endpoint, &second, now);
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

fn probed(result: Result<crate::probe::tls::TlsObservation, ProbeError>) -> Probed {
    match result {
        Ok(obs) => Probed::Observed(obs),
        Err(ProbeError::NotProbed(why)) => Probed::NotProbed(format!("not probed: {why}")),
        Err(e) => Probed::Failed(e),
    }
}

/// Whether a probe of this endpoint can tell anything: it has an address and
/// DNS has not already decided its verdict.
fn probeable(endpoint: &Endpoint) -> bool {
    endpoint.address.is_some()
        && !matches!(
            endpoint.tlsa,
            TlsaState::Bogus { .. } | TlsaState::Failed(_)
        )
}

/// Which endpoints to probe when there are more than `max`: in turn from
/// each service, within a service in turn from each host, within a host in
/// turn from each address, so no service or host can crowd out the others.
/// Returns the indices chosen and those left out (probeable ones only).
fn choose(endpoints: &[Endpoint], max: usize) -> (Vec<usize>, Vec<usize>) {
    let mut services: Vec<(crate::vocab::Service, Vec<(&str, Vec<usize>)>)> = Vec::new();
    for (i, e) in endpoints.iter().enumerate().filter(|(_, e)| probeable(e)) {
        let s = match services.iter_mut().position(|(s, _)| *s == e.service) {
            Some(s) => s,
            None => {
                services.push((e.service, Vec::new()));
                services.len() - 1
            }
        };
        let hosts = &mut services[s].1;
        match hosts.iter_mut().find(|(h, _)| *h == e.host) {
            Some((_, list)) => list.push(i),
            None => hosts.push((&e.host, vec![i])),
        }
    }
    let per_service: Vec<Vec<usize>> = services
        .into_iter()
        .map(|(_, hosts)| round_robin(hosts.into_iter().map(|(_, l)| l).collect()))
        .collect();
    let mut order = round_robin(per_service);
    let left_out = order.split_off(order.len().min(max));
    (order, left_out)
}

/// The first of each list, then the second of each, and so on.
fn round_robin(lists: Vec<Vec<usize>>) -> Vec<usize> {
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|k| lists.iter().filter_map(move |l| l.get(k).copied()))
        .collect()
}

fn target(domain: &Domain, endpoint: &Endpoint, address: std::net::IpAddr) -> Target {
    Target {
        addr: SocketAddr::new(address, endpoint.port),
        domain: domain.to_string(),
        role: endpoint.service.role(),
        tls: endpoint.service.tls(),
    }
}

//! A check: discovery, a probe of every endpoint, judging, advice.

//!
//! The rooms: [`select`] picks the endpoints a check probes, [`probing`]
//! probes them and counts what failed on our side, [`confirm`] judges
//! each one off the runtime and confirms a mismatch through another exit.

mod confirm;
mod horizons;
mod probing;
mod select;
mod vantages;

use confirm::evidence;
use probing::{no_vantage, ours_when_tor_is_stuck, probed, tally, transport_advice, Probes};
use select::{choose, probeable, target};
use vantages::{Origin, Sight};

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
use crate::probe::transport::{ConnectFailure, ExitCount, ExitRelay, TorState};
use crate::probe::{Gate, ProbeError, ProbeFailure, Prober, Seen, Target};
use crate::report::{EndpointReport, EndpointVerdict, Report, Vantage};
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
    /// What our transport said when it failed (the first such probe), if it did.
    pub transport_error: Option<String>,
    /// How long each probe made took (the first probe of each endpoint).
    pub probe_durations: Vec<Duration>,
}

impl Health {
    /// Whether the check failed on our side: a lookup our resolver could not
    /// answer, or a probe our Tor client or proxy could not carry.
    pub fn ours(&self) -> bool {
        self.dns_failures > 0 || self.transport_failures > 0
    }

    /// Whether a check with this verdict says nothing about the domain:
    /// our own part (resolver, Tor or proxy, the vantages) failed and
    /// nothing else decided it. Such a check changes no domain's state and
    /// alerts no subscriber; the operators are told (selfwatch).
    pub fn says_nothing(&self, verdict: crate::report::Verdict) -> bool {
        verdict == crate::report::Verdict::Unreachable && self.ours()
    }
}

/// Runs checks with one resolver and one prober.

#[derive(Clone)]
pub struct Checker {
    resolver: Resolver,
    prober: Prober,
    clock: SharedClock,
    /// Confirm a mismatch by a second probe (over Tor through a different
    /// exit relay) before it counts as confirmed.
    pub confirm_mismatch: bool,
    /// Also probe addresses that are not globally reachable.
    pub allow_private: bool,
    /// The longest random wait between a check's DNS lookups and its probes
    /// (zero: none). The monitor sets it so the lookups of a domain, which
    /// an interceptor on its DNS path may see, do not announce a probe
    /// seconds later; no permit is held while waiting.
    pub probe_delay: Duration,
    /// The agents to probe through, besides (or instead of) our own place.
    pub vantages: Option<Arc<dyn crate::vantage::Vantages>>,
    /// Whether our own place probes too (`probe.local`).
    pub local: bool,
    /// Endpoints seen intercepted from one vantage only (shared by clones).
    suspects: vantages::Suspects,
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
            probe_delay: Duration::ZERO,
            vantages: None,
            local: true,
            suspects: Default::default(),
        }
    }

    /// The same checker with another resolver (fresh caches).
    pub fn with_resolver(&self, resolver: Resolver) -> Checker {
        Checker {
            resolver,
            ..self.clone()
        }
    }

    /// The same checker asking the domain's own records afresh (see
    /// [`Resolver::uncached`]): for checks a person asked for right now.
    pub fn uncached(&self) -> Result<Checker, crate::dns::ResolverSetupError> {
        Ok(self.with_resolver(self.resolver.uncached()?))
    }

    /// What our Tor client says of itself (None for the other transports).
    pub fn tor_state(&self) -> Option<crate::probe::transport::TorState> {
        self.prober.tor_state()
    }

    /// Checks one domain.
    pub async fn check(&self, domain: &Domain, services: ServiceSet) -> (Report, Health) {
        let span = tracing::info_span!("check", domain = %domain);
        self.check_inner(domain, services).instrument(span).await
    }

    /// Checks one domain, holding `gate`'s permit (taken by the caller)
    /// only while the check works: probes waiting for their address's
    /// spacing slot give it back meanwhile.
    pub async fn check_gated(
        &self,
        domain: &Domain,
        services: ServiceSet,
        gate: Arc<Gate>,
    ) -> (Report, Health) {
        let gated = Checker {
            prober: self.prober.clone().with_gate(Some(gate)),
            ..self.clone()
        };
        gated.check(domain, services).await
    }

    async fn check_inner(&self, domain: &Domain, services: ServiceSet) -> (Report, Health) {
        let checked_at = self.clock.now_rfc3339();
        let mut g = self.gather(domain, services).await;
        let reports = self
            .judge_all(
                domain,
                &g.endpoints,
                &g.probed,
                (&g.exits, &g.origins),
                g.deadline,
            )
            .await;
        let horizons = self.horizons(&g, &reports);
        let mut report = self.report(domain, checked_at, &g, reports).await;
        report.horizons = horizons;
        report.horizons.zone_keys = g.found.zone_keys.clone();
        report.evidence = evidence(&report, &g.probed, &g.exits, &self.clock.now_rfc3339());
        // Without memory: what one check can say of the records (the
        // monitor judges them again against what it saw before).
        let now = crate::horizon::unix(self.clock.now());
        report.rollover = crate::rollover::watch(None, &report.rollover_observed(), now).notes;
        let keys = crate::rollover::watch_keys(None, &report.horizons.zone_keys, now);
        report.rollover.extend(keys.notes);
        tracing::info!(verdict = %report.verdict, endpoints = report.endpoints.len(), "checked");
        (report, std::mem::take(&mut g.health))
    }

    /// Discovery, then a probe of every chosen endpoint, with what failed
    /// on our side counted.
    async fn gather(&self, domain: &Domain, services: ServiceSet) -> Gathered {
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
        if !endpoints.is_empty() {
            self.wait_before_probes().await;
        }
        let Probes {
            probed,
            exits,
            origins,
            left_out,
            deadline,
            probeable,
            durations,
        } = self.probe_all(domain, endpoints.clone()).await;
        health.probe_durations = durations;
        let tor = self.prober.tor_state();
        let probed = ours_when_tor_is_stuck(probed, tor.as_ref());
        tally(&probed, &mut health);
        Gathered {
            found,
            unanswered,
            resolver_works,
            health,
            endpoints,
            probed,
            exits,
            origins,
            left_out,
            deadline,
            probeable,
            tor,
        }
    }

    /// The report's `errors`: DNS failures and whose they are, endpoints
    /// left out or cut off, our transport failing, probe failures that are
    /// not the server's.
    fn error_lines(&self, domain: &Domain, g: &Gathered) -> Vec<String> {
        let mut errors = crate::dns::summarise(&g.found.failures, self.resolver.servers());
        if g.unanswered > 0 && g.resolver_works {
            errors.push(format!(
                "our resolver answers for the root zone, so the {} failed lookup(s) of {domain} are its own DNS failing (or being blocked)",
                g.unanswered
            ));
        }
        errors.extend(g.found.notes.iter().cloned());
        if !g.left_out.is_empty() {
            errors.push(format!(
                "{domain} publishes {} endpoints; a check probes {} of them, taken in turn from each service and host, so {} were not probed (a mismatch on one of them would go unseen)",
                g.probeable,
                self.prober.max_endpoints(),
                g.left_out.len()
            ));
        }
        let cut_off = g
            .probed
            .iter()
            .filter(|p| matches!(p, Probed::NotProbed(_)))
            .count()
            - g.left_out.len();
        if cut_off > 0 {
            errors.push(format!(
                "{cut_off} endpoint(s) were not probed: {} (slow servers, or many probes queued for one address)",
                self.prober.deadline_passed()
            ));
        }
        let no_vantage = g.probed.iter().filter(|p| no_vantage(p)).count();
        if no_vantage > 0 {
            errors.push(format!(
                "{no_vantage} endpoint(s) were not checked: {} (our agents are offline or failing; `probe.local = false`): nothing is known about those servers, so this check could not be completed; a monitor keeps the last state and tells its operators",
                crate::report::NO_VANTAGE
            ));
        }
        if g.health.transport_failures > no_vantage {
            errors.push(transport_advice(
                self.prober.transport(),
                g.health.transport_failures - no_vantage,
                g.health.probes,
                g.tor.as_ref(),
            ));
        }
        for (e, p) in g.endpoints.iter().zip(&g.probed) {
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
        errors
    }

    /// The report from the judged endpoints: the verdict, what to publish
    /// and do, and which resolvers saw nothing.
    async fn report(
        &self,
        domain: &Domain,
        checked_at: String,
        g: &Gathered,
        reports: Vec<EndpointReport>,
    ) -> Report {
        let found = &g.found;
        let mut errors = self.error_lines(domain, g);
        let dns_failed = !found.failures.is_empty();
        let verdict = Report::overall(&reports, dns_failed, !found.bogus.is_empty());
        let zones = self.zone_facts(&g.endpoints).await;
        // The domain does not exist: NXDOMAIN and nothing else found.
        let nxdomain = found.nxdomain
            && found.endpoints.is_empty()
            && found.bogus.is_empty()
            && found.failures.is_empty();
        if nxdomain {
            // "no SRV and no address" for each service says it again, worse.
            errors.retain(|e| !found.notes.contains(e));
        }
        let advice = advice::advise(&AdviceInput {
            domain: domain.as_str(),
            endpoints: &reports,
            zones: &zones,
            fallbacks: &found.fallbacks,
            dns_failed,
            nxdomain,
            transport: self.prober.transport(),
        });
        // Lookups that no resolver answered: the check saw none of the domain's DNS.
        let resolvers = if g.unanswered > 0 && !g.resolver_works {
            self.resolver.servers().to_vec()
        } else {
            Vec::new()
        };
        Report {
            domain: domain.to_string(),
            checked_at,
            verdict,
            records_to_add: advice::records_to_add(&reports),
            endpoints: reports,
            advice,
            transport: self.prober.transport().into(),
            errors,
            bogus_rrsets: found.bogus.clone(),
            evidence: Vec::new(),
            nxdomain,
            resolvers,
            horizons: Default::default(),
            rollover: vec![],
        }
    }

    /// When what the verdict rests on runs out: discovery's verified
    /// signatures, and the dates the judge found each match rests on.
    fn horizons(&self, g: &Gathered, reports: &[EndpointReport]) -> crate::horizon::Horizons {
        horizons::horizons(&g.found.signatures, &g.endpoints, &g.probed, reports)
    }

    /// A random wait of up to `probe_delay`, holding no permit meanwhile.
    async fn wait_before_probes(&self) {
        if self.probe_delay.is_zero() {
            return;
        }
        let wait = rand::random_range(Duration::ZERO..=self.probe_delay);
        tracing::debug!(wait = ?wait, "waiting between the lookups and the probes");
        self.prober.release().await;
        tokio::time::sleep(wait).await;
        self.prober.hold().await;
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

/// What discovery and the probes of one check found, before judging.
struct Gathered {
    found: discovery::Discovery,
    /// Lookups our resolver got no answer to.
    unanswered: usize,
    /// Whether the resolver answered its canary (the root zone's DNSKEY).
    resolver_works: bool,
    health: Health,
    endpoints: Arc<Vec<Endpoint>>,
    probed: Vec<Probed>,
    exits: Vec<Option<ExitRelay>>,
    origins: Vec<Origin>,
    left_out: Vec<usize>,
    deadline: tokio::time::Instant,
    probeable: usize,
    /// What arti said of itself after the probes (Tor only).
    tor: Option<TorState>,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vantage_tests;

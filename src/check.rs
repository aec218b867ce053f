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
use crate::probe::{Gate, ProbeError, Prober, Target};
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
        let Probes {
            probed,
            left_out,
            deadline,
            probeable,
        } = self.probe_all(domain, endpoints.clone()).await;
        let now = self.clock.now();
        let mut reports = Vec::with_capacity(endpoints.len());
        tally(&probed, &mut health);
        for (endpoint, p) in endpoints.iter().zip(&probed) {
            let mut report = judge_off_runtime(endpoint, p, now).await;
            if report.verdict == EndpointVerdict::Mismatch && self.confirm_mismatch {
                report = self.confirm(domain, endpoint, report, now, deadline).await;
            }
            reports.push(report);
        }
        let mut errors = crate::dns::summarise(&found.failures, self.resolver.servers());
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
        let resolvers = if unanswered > 0 && !resolver_works {
            self.resolver.servers().to_vec()
        } else {
            Vec::new()
        };
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
            nxdomain,
            resolvers,
        };
        tracing::info!(verdict = %report.verdict, endpoints = report.endpoints.len(), "checked");
        (report, health)
    }

    /// Probes the chosen endpoints, all by the check's deadline.
    async fn probe_all(&self, domain: &Domain, endpoints: Arc<Vec<Endpoint>>) -> Probes {
        // All probes of this check, the confirming ones included, end by here.
        let deadline = tokio::time::Instant::now() + self.prober.check_budget();
        let (chosen, left_out) = choose(&endpoints, self.prober.max_endpoints());
        // From here each probe holds the permit for itself while it works.
        self.prober.release().await;
        let probes: Vec<(usize, Probed)> = stream::iter(chosen)
            .map(|i| {
                let endpoints = endpoints.clone();
                async move {
                    if !self.prober.hold().await {
                        return (i, Probed::NotProbed("not probed: shutting down".into()));
                    }
                    // Boxed: keeps the check's future shallow for the compiler.
                    let p = Box::pin(self.probe_endpoint(domain, &endpoints[i], deadline)).await;
                    self.prober.release().await;
                    (i, p)
                }
            })
            .buffer_unordered(PROBE_CONCURRENCY)
            .collect()
            .await;
        self.prober.hold().await;
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
        Probes {
            probed,
            left_out,
            deadline,
            probeable,
        }
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
        if let Some(why) = netpolicy::refusal(target.addr, self.allow_private) {
            return Probed::Refused(why);
        }
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
        let mut again = judge_off_runtime(endpoint, &second, now).await;
        match again.verdict {
            EndpointVerdict::Mismatch => {
                let mut first = first;
                first.notes.push(if self.prober.transport() == "tor" {
                    "confirmed by a second probe over a fresh circuit".into()
                } else {
                    "confirmed by a second probe".into()
                });
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
                    "a first probe saw a non-matching key (SPKI sha256 {}), not seen again {}",
                    first.spki_sha256.unwrap_or_default(),
                    if self.prober.transport() == "tor" {
                        "over a fresh circuit"
                    } else {
                        "by a second probe"
                    }
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

/// What the probing phase of a check gave.
struct Probes {
    /// Per endpoint, in discovery order.
    probed: Vec<Probed>,
    /// Probeable endpoints over the cap, not probed.
    left_out: Vec<usize>,
    /// When the check's probes must end.
    deadline: tokio::time::Instant,
    /// How many endpoints could be probed.
    probeable: usize,
}

/// Counts the probes made and those the transport failed; endpoints not
/// probed count as neither.
fn tally(probed: &[Probed], health: &mut Health) {
    for p in probed {
        match p {
            Probed::Skipped | Probed::NotProbed(_) | Probed::Refused(_) => {}
            Probed::Observed(_) => health.probes += 1,
            Probed::Failed(e) => {
                health.probes += 1;
                if !e.is_remote() {
                    health.transport_failures += 1;
                }
            }
        }
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

/// A service's hosts, each with its endpoints' indices, in discovery order.
type Hosts<'a> = Vec<(&'a str, Vec<usize>)>;

/// Which endpoints to probe when there are more than `max`: in turn from
/// each service, within a service in turn from each host, within a host in
/// turn from each address, so no service or host can crowd out the others.
/// Returns the indices chosen and those left out (probeable ones only).
fn choose(endpoints: &[Endpoint], max: usize) -> (Vec<usize>, Vec<usize>) {
    let mut services: Vec<(crate::vocab::Service, Hosts)> = Vec::new();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;
    use tokio::time::Instant;

    use super::*;
    use crate::dane;
    use crate::dns::ResolverSettings;
    use crate::probe::tls::TlsObservation;
    use crate::probe::transport::Connector;
    use crate::probe::Spacing;
    use crate::vocab::Service;

    const SERVICES: [Service; 4] = [
        Service::XmppClient,
        Service::XmppsClient,
        Service::XmppServer,
        Service::XmppsServer,
    ];

    fn checker(prober: Prober) -> Checker {
        let resolver = Resolver::new(&ResolverSettings {
            nameservers: vec!["127.0.0.1:9".parse().unwrap()],
            trust_anchor: None,
            timeout: None,
            clock: None,
        })
        .unwrap();
        let mut checker = Checker::new(resolver, prober, crate::clock::system());
        // The stalling servers listen on loopback.
        checker.allow_private = true;
        checker
    }

    fn endpoint(service: Service, host: usize, addr: SocketAddr) -> Endpoint {
        Endpoint {
            service,
            host: format!("h{host}.example.org"),
            port: addr.port(),
            address: Some(addr.ip()),
            tlsa_name: format!("_{}._tcp.h{host}.example.org", addr.port()),
            reference_names: vec![],
            tlsa: TlsaState::Absent,
            error: None,
            fallback: false,
        }
    }

    /// A server that accepts every connection and never says a word.
    async fn stalling_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        addr
    }

    /// An address where nothing listens: every connection is refused at once.
    async fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    fn not_probed(p: &Probed) -> Option<&str> {
        match p {
            Probed::NotProbed(why) => Some(why),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hundred_stalling_servers_end_within_the_check_deadline() {
        let addr = stalling_server().await;
        let timeout = Duration::from_secs(60);
        let prober = Prober::new(Connector::Direct, timeout, None).with_max_endpoints(512);
        let budget = prober.check_budget();
        assert_eq!(budget, 4 * timeout);
        let c = checker(prober);
        let endpoints: Vec<Endpoint> = (0..100)
            .map(|i| endpoint(SERVICES[i % 4], i / 4, addr))
            .collect();
        let t0 = Instant::now();
        let out = c
            .probe_all(&Domain::parse("example.org").unwrap(), Arc::new(endpoints))
            .await;
        assert!(
            Instant::now() - t0 <= budget,
            "took {:?}",
            Instant::now() - t0
        );
        assert!(out.left_out.is_empty());
        let cut: Vec<&str> = out.probed.iter().filter_map(not_probed).collect();
        assert!(!cut.is_empty(), "the stalls outlast the budget");
        assert!(
            cut.iter()
                .all(|w| *w == "not probed: the check's deadline of 4m passed"),
            "{cut:?}"
        );
        // Stalled servers are the servers' business, cut-off ones nobody's:
        // none of it is Tor failing.
        let mut health = Health::default();
        tally(&out.probed, &mut health);
        assert_eq!(health.transport_failures, 0);
        assert_eq!(health.probes, 100 - cut.len());
        let reports: Vec<_> = Arc::new(
            (0..100)
                .map(|i| endpoint(SERVICES[i % 4], i / 4, addr))
                .collect::<Vec<_>>(),
        )
        .iter()
        .zip(&out.probed)
        .map(|(e, p)| judge(e, p, SystemTime::now()))
        .collect();
        let shown = reports
            .iter()
            .filter(|r| {
                r.error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("not probed"))
            })
            .count();
        assert_eq!(shown, cut.len(), "every cut-off endpoint says so");
        assert_ne!(
            Report::overall(&reports, false, false),
            crate::report::Verdict::Ok
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_max_endpoints_are_probed_taken_in_turn() {
        let addr = closed_port().await;
        let prober =
            Prober::new(Connector::Direct, Duration::from_secs(60), None).with_max_endpoints(32);
        let c = checker(prober);
        // The most discovery yields: 4 services × 16 targets × 8 addresses.
        let mut endpoints = Vec::new();
        for s in SERVICES {
            for h in 0..16 {
                for a in 0..8u8 {
                    let mut e = endpoint(s, h, addr);
                    e.tlsa_name = format!("{}-{a}", e.tlsa_name);
                    endpoints.push(e);
                }
            }
        }
        let (chosen, left_out) = choose(&endpoints, 32);
        assert_eq!(chosen.len(), 32);
        assert_eq!(left_out.len(), 480);
        for s in SERVICES {
            let hosts: BTreeSet<&str> = chosen
                .iter()
                .filter(|&&i| endpoints[i].service == s)
                .map(|&i| endpoints[i].host.as_str())
                .collect();
            assert_eq!(hosts.len(), 8, "8 per service, each from another host");
        }
        let out = c
            .probe_all(&Domain::parse("example.org").unwrap(), Arc::new(endpoints))
            .await;
        let refused = out
            .probed
            .iter()
            .filter(|p| matches!(p, Probed::Failed(e) if e.is_remote()))
            .count();
        assert_eq!(refused, 32, "exactly max_endpoints probed");
        let cut: Vec<&str> = out.probed.iter().filter_map(not_probed).collect();
        assert_eq!(cut.len(), 480);
        assert!(cut.iter().all(|w| *w
            == "not probed: the domain publishes 512 endpoints, more than the 32 a check probes"));
        let mut health = Health::default();
        tally(&out.probed, &mut health);
        assert_eq!((health.probes, health.transport_failures), (32, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn spacing_delays_probes_and_never_fails_them() {
        let addr = closed_port().await;
        let spacing = Arc::new(Spacing::new(
            Duration::from_secs(10),
            Duration::from_secs(600),
        ));
        let prober = Prober::new(Connector::Direct, Duration::from_secs(60), None)
            .with_spacing(spacing.clone());
        let c = checker(prober);
        let domain = Domain::parse("example.org").unwrap();
        let three: Vec<Endpoint> = (0..3).map(|i| endpoint(SERVICES[i], 0, addr)).collect();
        let t0 = Instant::now();
        let out = c.probe_all(&domain, Arc::new(three.clone())).await;
        // Three endpoints × two attempts, one slot every 10 s.
        assert_eq!(Instant::now() - t0, Duration::from_secs(50));
        assert!(out
            .probed
            .iter()
            .all(|p| matches!(p, Probed::Failed(e) if e.is_remote())));
        // With a 5 s timeout the budget is 20 s: the slots after it are not
        // taken, and those probes are "not probed", not a transport failure.
        let prober =
            Prober::new(Connector::Direct, Duration::from_secs(5), None).with_spacing(spacing);
        let c = checker(prober);
        let t0 = Instant::now();
        let out = c.probe_all(&domain, Arc::new(three)).await;
        assert!(Instant::now() - t0 <= Duration::from_secs(20));
        let cut = out.probed.iter().filter_map(not_probed).count();
        assert!(cut > 0);
        let mut health = Health::default();
        tally(&out.probed, &mut health);
        assert_eq!(health.transport_failures, 0);
        assert_eq!(health.probes + cut, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_spacing_gives_the_monitor_permit_back() {
        let addr = closed_port().await;
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let gate = Arc::new(Gate::new(permits.clone()));
        assert!(
            gate.enter().await,
            "the monitor takes the permit for the check"
        );
        let spacing = Arc::new(Spacing::new(
            Duration::from_secs(10),
            Duration::from_secs(600),
        ));
        let prober = Prober::new(Connector::Direct, Duration::from_secs(60), None)
            .with_spacing(spacing)
            .with_gate(Some(gate.clone()));
        let c = checker(prober);
        let two: Vec<Endpoint> = (0..2).map(|i| endpoint(SERVICES[i], 0, addr)).collect();
        let run = tokio::spawn(async move {
            let out = c
                .probe_all(&Domain::parse("example.org").unwrap(), Arc::new(two))
                .await;
            out.probed
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            permits.available_permits(),
            1,
            "both probes wait for their slot: the permit is free for other checks"
        );
        let probed = run.await.unwrap();
        assert!(probed
            .iter()
            .all(|p| matches!(p, Probed::Failed(e) if e.is_remote())));
        assert!(gate.holds().await, "the check holds it again for the rest");
        gate.leave().await;
        assert_eq!(permits.available_permits(), 1);
    }

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

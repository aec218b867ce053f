//! A check: discovery, a probe of every endpoint, judging, advice.

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

/// What the endpoints in mismatch presented, as evidence for the alert.
fn evidence(
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
                endpoint: format!(
                    "{} {}:{} [{}] {}",
                    e.service,
                    e.host,
                    e.port,
                    e.address.map(|a| a.to_string()).unwrap_or_default(),
                    e.tls
                ),
                seen_at: seen_at.to_owned(),
                transport: report.transport.clone(),
                exit: exit.as_ref().map(|x| x.rsa.clone()),
                spki_sha256: e.spki_sha256.clone().unwrap_or_default(),
                chain_pem,
            }
        })
        .collect()
}

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
}

impl Health {
    /// Whether the check failed on our side: a lookup our resolver could not
    /// answer, or a probe our Tor client or proxy could not carry.
    pub fn ours(&self) -> bool {
        self.dns_failures > 0 || self.transport_failures > 0
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
        }
    }

    /// The same checker with another resolver (fresh caches).
    pub fn with_resolver(&self, resolver: Resolver) -> Checker {
        Checker {
            resolver,
            ..self.clone()
        }
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
            left_out,
            deadline,
            probeable,
        } = self.probe_all(domain, endpoints.clone()).await;
        let tor = self.prober.tor_state();
        let probed = ours_when_tor_is_stuck(probed, tor.as_ref());
        tally(&probed, &mut health);
        let reports = self
            .judge_all(domain, &endpoints, &probed, &exits, deadline)
            .await;
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
        if health.transport_failures > 0 {
            errors.push(transport_advice(
                self.prober.transport(),
                health.transport_failures,
                health.probes,
                tor.as_ref(),
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
            evidence: Vec::new(),
            nxdomain,
            resolvers,
        };
        let mut report = report;
        report.evidence = evidence(&report, &probed, &exits, &self.clock.now_rfc3339());
        tracing::info!(verdict = %report.verdict, endpoints = report.endpoints.len(), "checked");
        (report, health)
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

    /// Judges every endpoint, confirms each mismatch through another exit,
    /// and notes where few Tor exits allow a port.
    async fn judge_all(
        &self,
        domain: &Domain,
        endpoints: &[Endpoint],
        probed: &[Probed],
        exits: &[Option<ExitRelay>],
        deadline: tokio::time::Instant,
    ) -> Vec<EndpointReport> {
        let now = self.clock.now();
        let mut reports = Vec::with_capacity(endpoints.len());
        let mut exit_counts: Vec<((bool, u16), Option<ExitCount>)> = Vec::new();
        for ((endpoint, p), exit) in endpoints.iter().zip(probed).zip(exits) {
            let mut report = judge_off_runtime(endpoint, p, now).await;
            self.add_vantage(&mut report, exit.as_ref());
            if report.verdict == EndpointVerdict::Mismatch && self.confirm_mismatch {
                report = self
                    .confirm(domain, endpoint, report, exit.clone(), now, deadline)
                    .await;
            }
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

    /// Probes the chosen endpoints, all by the check's deadline.
    async fn probe_all(&self, domain: &Domain, endpoints: Arc<Vec<Endpoint>>) -> Probes {
        // All probes of this check, the confirming ones included, end by here.
        let deadline = tokio::time::Instant::now() + self.prober.check_budget();
        let (chosen, left_out) = choose(&endpoints, self.prober.max_endpoints());
        // From here each probe holds the permit for itself while it works.
        self.prober.release().await;
        let probes: Vec<(usize, (Probed, Option<ExitRelay>))> = stream::iter(chosen)
            .map(|i| {
                let endpoints = endpoints.clone();
                async move {
                    if !self.prober.hold().await {
                        let p = Probed::NotProbed("not probed: shutting down".into());
                        return (i, (p, None));
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
        let mut exits = vec![None; endpoints.len()];
        for (i, (p, exit)) in probes {
            probed[i] = p;
            exits[i] = exit;
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
            exits,
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
    ) -> (Probed, Option<ExitRelay>) {
        let Some(address) = endpoint.address.filter(|_| probeable(endpoint)) else {
            return (Probed::Skipped, None);
        };
        let target = target(domain, endpoint, address);
        if let Some(why) = netpolicy::refusal(target.addr, self.allow_private) {
            return (Probed::Refused(why), None);
        }
        probed(self.prober.probe(&target, deadline, &[]).await)
    }

    /// Records the probe behind `report` as a vantage, when it saw a key.
    fn add_vantage(&self, report: &mut EndpointReport, exit: Option<&ExitRelay>) {
        if let Some(spki) = &report.spki_sha256 {
            report.vantage.push(Vantage {
                transport: self.prober.transport().into(),
                exit: exit.map(|e| e.rsa.clone()),
                spki_sha256: spki.clone(),
            });
        }
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
        first_exit: Option<ExitRelay>,
        now: SystemTime,
        deadline: tokio::time::Instant,
    ) -> EndpointReport {
        let Some(address) = endpoint.address else {
            return first;
        };
        let over_tor = self.prober.transport() == "tor";
        if over_tor && first_exit.is_none() {
            // Nothing to steer away from: a second probe could be the same exit.
            return unconfirmed(first, "the first probe's Tor exit is not known");
        }
        let avoid: Vec<ExitRelay> = first_exit.into_iter().collect();
        // Like the first probe, retried once: one failed circuit (common on
        // Tor) must not leave a real interception unconfirmed.
        let (second, exit) = probed(
            self.prober
                .probe(&target(domain, endpoint, address), deadline, &avoid)
                .await,
        );
        let mut again = judge_off_runtime(endpoint, &second, now).await;
        let how = match (&exit, over_tor) {
            (Some(e), _) => format!("through a different Tor exit ({e})"),
            (None, true) => "over a fresh circuit".to_owned(),
            (None, false) if self.prober.transport() == "socks5" => {
                "over a fresh circuit of the proxy (which does not say which exit it used)"
                    .to_owned()
            }
            (None, false) => "over a second connection".to_owned(),
        };
        match again.verdict {
            EndpointVerdict::Mismatch => {
                let mut first = first;
                self.add_vantage_to(&mut first, &again, exit.as_ref());
                first.confirmed = Some(true);
                first
                    .notes
                    .push(format!("confirmed by a second probe {how}"));
                if again.spki_sha256 != first.spki_sha256 {
                    first.notes.push(format!(
                        "the second probe saw yet another key: {}",
                        again.spki_sha256.unwrap_or_default()
                    ));
                }
                first
            }
            EndpointVerdict::Match => {
                self.add_vantage(&mut again, exit.as_ref());
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

    /// Adds the vantage of a second probe (judged as `again`) to `first`.
    fn add_vantage_to(
        &self,
        first: &mut EndpointReport,
        again: &EndpointReport,
        exit: Option<&ExitRelay>,
    ) {
        if let Some(spki) = &again.spki_sha256 {
            first.vantage.push(Vantage {
                transport: self.prober.transport().into(),
                exit: exit.map(|e| e.rsa.clone()),
                spki_sha256: spki.clone(),
            });
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

/// A mismatch whose confirming probe could not be made: it stands, marked so.
fn unconfirmed(mut first: EndpointReport, why: &str) -> EndpointReport {
    first.confirmed = Some(false);
    first.notes.push(format!("not confirmed: {why}"));
    first
}

/// What the probing phase of a check gave.
struct Probes {
    /// Per endpoint, in discovery order.
    probed: Vec<Probed>,
    /// Per endpoint, the Tor exit its probe went through.
    exits: Vec<Option<ExitRelay>>,
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
                    health.transport_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// When arti says after the probes that it is stuck, a stream that broke or
/// went silent after it was opened is no news about the server: it becomes
/// our failure. What a server or exit said (a refusal reported by the exit,
/// STARTTLS missing, a chain too large, a stream error) stays theirs, and a
/// connection that timed out was already judged with arti's state then.
fn ours_when_tor_is_stuck(probed: Vec<Probed>, tor: Option<&TorState>) -> Vec<Probed> {
    let Some(state) = tor.filter(|s| !s.healthy()) else {
        return probed;
    };
    probed
        .into_iter()
        .map(|p| match p {
            Probed::Failed(
                ref e @ ProbeError::Session(
                    ProbeFailure::Closed { .. } | ProbeFailure::Timeout { .. },
                ),
            ) => Probed::Failed(ProbeError::Connect(ConnectFailure::Transport(format!(
                "{e}, while our Tor client is stuck ({})",
                state.describe()
            )))),
            other => other,
        })
        .collect()
}

/// The line of a report that says our transport failed, and what to try.
fn transport_advice(
    transport: &str,
    failed: usize,
    probes: usize,
    tor: Option<&TorState>,
) -> String {
    let what = crate::report::transport_words(transport);
    let head = format!(
        "our own {what} failed on {failed} of {probes} probe(s): nothing is known about those endpoints (not the servers' doing), so this check could not be completed"
    );
    match (transport, tor) {
        ("tor", Some(state)) => format!(
            "{head}; {}. Try: check that this host can reach the Tor network (firewall, proxy, clock), look at the log for arti's messages, and repeat the check; a monitor keeps the last state and tells its operators",
            state.describe()
        ),
        ("socks5", _) => format!(
            "{head}. Try: check that the SOCKS5 proxy is running and can build circuits (for a system tor: `systemctl status tor`, its log), then repeat the check"
        ),
        _ => head,
    }
}

fn probed(result: Result<Seen, ProbeError>) -> (Probed, Option<ExitRelay>) {
    match result {
        Ok(seen) => (Probed::Observed(seen.observation), seen.exit),
        Err(ProbeError::NotProbed(why)) => (Probed::NotProbed(format!("not probed: {why}")), None),
        Err(e) => (Probed::Failed(e), None),
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

    #[tokio::test(start_paused = true)]
    async fn the_wait_between_lookups_and_probes_is_random_and_holds_no_permit() {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let gate = Arc::new(Gate::new(permits.clone()));
        assert!(gate.enter().await);
        let prober = Prober::new(Connector::Direct, Duration::from_secs(60), None)
            .with_gate(Some(gate.clone()));
        let mut c = checker(prober);
        c.probe_delay = Duration::from_secs(600);
        let mut waits = BTreeSet::new();
        for _ in 0..8 {
            let t0 = tokio::time::Instant::now();
            let c2 = c.clone();
            let run = tokio::spawn(async move { c2.wait_before_probes().await });
            tokio::task::yield_now().await;
            assert_eq!(permits.available_permits(), 1, "no permit while waiting");
            run.await.unwrap();
            let waited = t0.elapsed();
            assert!(waited <= Duration::from_secs(600), "{waited:?}");
            assert!(gate.holds().await, "held again for the probes");
            waits.insert(waited.as_millis());
        }
        assert!(waits.len() > 1, "the wait is random: {waits:?}");
        c.probe_delay = Duration::ZERO;
        let t0 = tokio::time::Instant::now();
        c.wait_before_probes().await;
        assert_eq!(t0.elapsed(), Duration::ZERO);
        gate.leave().await;
    }

    #[tokio::test]
    async fn a_dead_socks5_proxy_is_our_failure_and_checks_nothing() {
        let proxy = closed_port().await;
        let server = stalling_server().await;
        let prober = Prober::new(
            Connector::Socks5(proxy, Default::default()),
            Duration::from_secs(5),
            None,
        );
        let c = checker(prober);
        let (mut e, _) = endpoint_and_chain();
        e.address = Some(server.ip());
        e.port = server.port();
        let out = c
            .probe_all(
                &Domain::parse("example.org").unwrap(),
                Arc::new(vec![e.clone()]),
            )
            .await;
        let mut health = Health::default();
        tally(&out.probed, &mut health);
        assert_eq!((health.probes, health.transport_failures), (1, 1));
        assert!(health.ours());
        let error = health.transport_error.clone().unwrap();
        assert!(error.contains("our socks5 proxy"), "{error}");
        let report = judge(&e, &out.probed[0], SystemTime::now());
        assert_eq!(report.verdict, EndpointVerdict::NotChecked);
        assert_eq!(
            Report::overall(&[report], false, false),
            crate::report::Verdict::Unreachable
        );
        let advice = transport_advice("socks5", 1, 1, None);
        assert!(
            advice.contains("our own SOCKS5 proxy failed on 1 of 1"),
            "{advice}"
        );
        assert!(advice.contains("Try:"), "{advice}");
    }

    #[test]
    fn a_stream_that_broke_while_arti_is_stuck_is_ours() {
        let closed = Probed::Failed(ProbeError::Session(ProbeFailure::Closed { stage: "TLS" }));
        let refused = Probed::Failed(ProbeError::Connect(ConnectFailure::Remote(
            "connection refused (seen by the Tor exit)".into(),
        )));
        let no_starttls = Probed::Failed(ProbeError::Session(ProbeFailure::StartTlsMissing));
        let all = vec![closed, refused, no_starttls];
        let healthy = TorState {
            ready: true,
            blocked: None,
        };
        let stuck = TorState {
            ready: false,
            blocked: Some("We seem to be offline".into()),
        };
        let count = |p: &[Probed]| {
            let mut h = Health::default();
            tally(p, &mut h);
            h.transport_failures
        };
        assert_eq!(count(&ours_when_tor_is_stuck(all.clone(), None)), 0);
        assert_eq!(
            count(&ours_when_tor_is_stuck(all.clone(), Some(&healthy))),
            0
        );
        let relabelled = ours_when_tor_is_stuck(all, Some(&stuck));
        // Only the broken stream: the exit's report and a missing STARTTLS
        // are what the server did.
        assert_eq!(count(&relabelled), 1);
        assert!(matches!(&relabelled[2], Probed::Failed(e) if e.is_starttls_missing()));
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

    /// A key pair and its self-signed certificate (DER).
    fn key_and_cert() -> (Vec<u8>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["example.org".into()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        (der, key.serialize_der())
    }

    /// A direct-TLS server that presents, connection by connection, the
    /// certificates in `script` (None: close at once), then refuses.
    async fn scripted_tls_server(script: Vec<Option<(Vec<u8>, Vec<u8>)>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for step in script {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let Some((cert, key)) = step else {
                    drop(sock);
                    continue;
                };
                let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.into()],
                    rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
                )
                .unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(sock).await {
                        let mut buf = [0u8; 16];
                        let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                    }
                });
            }
            // The listener goes: later connections are refused.
        });
        addr
    }

    /// Probes one direct-TLS endpoint whose TLSA names `tlsa_key`, and
    /// judges and confirms it as a check does.
    async fn probe_and_confirm(addr: SocketAddr, tlsa_key: &[u8]) -> EndpointReport {
        let prober = Prober::new(Connector::Direct, Duration::from_secs(10), None);
        let c = checker(prober);
        let mut e = endpoint(Service::XmppsClient, 0, addr);
        e.tlsa = TlsaState::Present {
            records: vec![dane::record_for(tlsa_key, 3, 1, 1).unwrap()],
        };
        let domain = Domain::parse("example.org").unwrap();
        let endpoints = Arc::new(vec![e]);
        let out = c.probe_all(&domain, endpoints.clone()).await;
        let mut reports = c
            .judge_all(&domain, &endpoints, &out.probed, &out.exits, out.deadline)
            .await;
        reports.pop().unwrap()
    }

    #[tokio::test]
    async fn a_mismatch_seen_twice_is_confirmed_with_both_vantages() {
        let (published, _) = key_and_cert();
        let attacker = key_and_cert();
        let addr = scripted_tls_server(vec![Some(attacker.clone()), Some(attacker.clone())]).await;
        let r = probe_and_confirm(addr, &published).await;
        assert_eq!(r.verdict, EndpointVerdict::Mismatch);
        assert_eq!(r.confirmed, Some(true));
        assert_eq!(r.vantage.len(), 2, "{:?}", r.vantage);
        let spki = hex::encode(dane::spki_sha256(&attacker.0).unwrap());
        for v in &r.vantage {
            assert_eq!(v.transport, "direct");
            assert_eq!(v.exit, None, "direct has no exit");
            assert_eq!(v.spki_sha256, spki);
        }
    }

    #[tokio::test]
    async fn a_mismatch_whose_second_probe_fails_stands_not_confirmed() {
        let (published, _) = key_and_cert();
        let attacker = key_and_cert();
        // The interceptor shows its key once, then drops the confirming probe.
        let addr = scripted_tls_server(vec![Some(attacker), None]).await;
        let r = probe_and_confirm(addr, &published).await;
        assert_eq!(r.verdict, EndpointVerdict::Mismatch, "still an alarm");
        assert_eq!(r.confirmed, Some(false));
        assert!(r.is_unconfirmed_mismatch());
        assert_eq!(r.vantage.len(), 1);
        assert!(
            r.notes
                .iter()
                .any(|n| n.starts_with("not confirmed: the second probe failed")),
            "{:?}",
            r.notes
        );
        let report = Report {
            domain: "example.org".into(),
            checked_at: String::new(),
            verdict: Report::overall(std::slice::from_ref(&r), false, false),
            endpoints: vec![r],
            records_to_add: vec![],
            advice: vec![],
            transport: "tor".into(),
            errors: vec![],
            bogus_rrsets: vec![],
            evidence: vec![],
            nxdomain: false,
            resolvers: vec![],
        };
        assert_eq!(report.verdict.exit_code(), 1);
        assert!(
            report.summary().contains("1 of them not confirmed"),
            "{}",
            report.summary()
        );
        assert!(report.to_text().contains("NOT CONFIRMED"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["endpoints"][0]["confirmed"], false);
    }

    #[tokio::test]
    async fn a_mismatch_not_seen_again_gives_way_to_the_match() {
        let good = key_and_cert();
        let attacker = key_and_cert();
        let addr = scripted_tls_server(vec![Some(attacker), Some(good.clone())]).await;
        let r = probe_and_confirm(addr, &good.0).await;
        assert_eq!(r.verdict, EndpointVerdict::Match);
        assert_eq!(r.confirmed, None);
        assert_eq!(r.vantage.len(), 2, "both probes are listed");
        assert_ne!(r.vantage[0].spki_sha256, r.vantage[1].spki_sha256);
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

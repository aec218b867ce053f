//! Probing the chosen endpoints of a check, all by its deadline, and
//! counting the probes our own transport failed.

use super::*;

impl Checker {
    /// Probes the chosen endpoints, all by the check's deadline.
    pub(super) async fn probe_all(&self, domain: &Domain, endpoints: Arc<Vec<Endpoint>>) -> Probes {
        // All probes of this check, the confirming ones included, end by here.
        let deadline = tokio::time::Instant::now() + self.prober.check_budget();
        let (chosen, left_out) = choose(&endpoints, self.prober.max_endpoints());
        // From here each probe holds the permit for itself while it works.
        self.prober.release().await;
        let probes: Vec<ProbeOutcome> = stream::iter(chosen)
            .map(|i| {
                let endpoints = endpoints.clone();
                async move {
                    if !self.prober.hold().await {
                        let p = Probed::NotProbed("not probed: shutting down".into());
                        return (i, (p, None, Origin::default()), None);
                    }
                    let started = tokio::time::Instant::now();
                    // Boxed: keeps the check's future shallow for the compiler.
                    let p = Box::pin(self.probe_endpoint(domain, &endpoints[i], deadline)).await;
                    self.prober.release().await;
                    // Only a probe that was made has a duration worth counting.
                    let made = matches!(p.0, Probed::Observed(_) | Probed::Failed(_));
                    (i, p, made.then(|| started.elapsed()))
                }
            })
            .buffer_unordered(PROBE_CONCURRENCY)
            .collect()
            .await;
        self.prober.hold().await;
        let mut probed = vec![Probed::Skipped; endpoints.len()];
        let mut exits = vec![None; endpoints.len()];
        let mut origins = vec![Origin::default(); endpoints.len()];
        let mut durations = Vec::new();
        for (i, (p, exit, origin), took) in probes {
            probed[i] = p;
            exits[i] = exit;
            origins[i] = origin;
            durations.extend(took);
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
            origins,
            left_out,
            deadline,
            probeable,
            durations,
        }
    }

    pub(super) async fn probe_endpoint(
        &self,
        domain: &Domain,
        endpoint: &Endpoint,
        deadline: tokio::time::Instant,
    ) -> Sight {
        let Some(address) = endpoint.address.filter(|_| probeable(endpoint)) else {
            return (Probed::Skipped, None, Origin::default());
        };
        let target = target(domain, endpoint, address);
        if let Some(why) = netpolicy::refusal(target.addr, self.allow_private) {
            return (Probed::Refused(why), None, Origin::default());
        }
        self.probe_spread(endpoint, &target, deadline).await
    }
}

/// One endpoint's probe: its index, what it saw and through which exit,
/// and how long it took when it was made.
type ProbeOutcome = (usize, Sight, Option<Duration>);

/// What the probing phase of a check gave.
pub(super) struct Probes {
    /// Per endpoint, in discovery order.
    pub(super) probed: Vec<Probed>,
    /// Per endpoint, the Tor exit its probe went through.
    pub(super) exits: Vec<Option<ExitRelay>>,
    /// Per endpoint, the vantage its probe was made from.
    pub(super) origins: Vec<Origin>,
    /// Probeable endpoints over the cap, not probed.
    pub(super) left_out: Vec<usize>,
    /// When the check's probes must end.
    pub(super) deadline: tokio::time::Instant,
    /// How many endpoints could be probed.
    pub(super) probeable: usize,
    /// How long each probe made took.
    pub(super) durations: Vec<Duration>,
}

/// Counts the probes made and those the transport failed; endpoints not
/// probed count as neither.
pub(super) fn tally(probed: &[Probed], health: &mut Health) {
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

/// Whether no vantage could make this probe (our agents offline or failing).
pub(super) fn no_vantage(p: &Probed) -> bool {
    matches!(
        p,
        Probed::Failed(ProbeError::Connect(ConnectFailure::NoVantage(_)))
    )
}

/// When arti says after the probes that it is stuck, a stream that broke or
/// went silent after it was opened is no news about the server: it becomes
/// our failure. What a server or exit said (a refusal reported by the exit,
/// STARTTLS missing, a chain too large, a stream error) stays theirs, and a
/// connection that timed out was already judged with arti's state then.
pub(super) fn ours_when_tor_is_stuck(probed: Vec<Probed>, tor: Option<&TorState>) -> Vec<Probed> {
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
pub(super) fn transport_advice(
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

pub(super) fn probed(result: Result<Seen, ProbeError>) -> (Probed, Option<ExitRelay>) {
    match result {
        Ok(seen) => (Probed::Observed(seen.observation), seen.exit),
        Err(ProbeError::NotProbed(why)) => (Probed::NotProbed(format!("not probed: {why}")), None),
        Err(e) => (Probed::Failed(e), None),
    }
}

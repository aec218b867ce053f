//! The schedule: every monitored domain is checked every interval plus jitter,
//! a few at a time; state changes become alerts in the outbox.

use crate::store::StateStore as _;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::alert::transition;
use crate::domain::Domain;
use crate::engine::Engine;
use crate::probe::Gate;
use crate::report::Verdict;
use crate::store::StoreError;

/// Checks run at once by the monitor.
pub const MONITOR_CONCURRENCY: usize = 16;
/// The longest the monitor sleeps before looking at the store again.
const IDLE: Duration = Duration::from_secs(60);
/// How soon a domain with an unconfirmed mismatch is checked again (or at
/// its interval, when that is sooner).
pub const RECHECK_SOON: Duration = Duration::from_secs(120);
/// How many checks in a row may hold back an unconfirmed mismatch: after
/// that it is taken as it is (an alert that says "not confirmed"), so an
/// interceptor that also blocks every second probe cannot keep us quiet.
pub const MAX_RECHECKS: u32 = 3;

/// When a scheduled check wants its domain checked again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// At the next interval.
    Interval,
    /// Within minutes ([`RECHECK_SOON`], or the interval if shorter): a
    /// mismatch could not be confirmed.
    Soon,
}

/// When each domain is next due. Time is tokio's, so tests can move it.
#[derive(Debug)]
pub struct Schedule {
    due: HashMap<String, Instant>,
    running: HashMap<String, ()>,
    interval: Duration,
    jitter: Duration,
}

impl Schedule {
    /// An empty schedule.
    pub fn new(interval: Duration, jitter: Duration) -> Schedule {
        Schedule {
            due: HashMap::new(),
            running: HashMap::new(),
            interval,
            jitter,
        }
    }

    fn jitter(&self) -> Duration {
        if self.jitter.is_zero() {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::random_range(0..=self.jitter.as_millis() as u64))
    }

    /// Adds new domains and drops removed ones. A new domain that was checked
    /// before (`age` since then) is due when its interval ends; a fresh one now.
    pub fn sync(&mut self, monitored: &[(String, Option<Duration>)], now: Instant) {
        let keep: std::collections::HashSet<&str> =
            monitored.iter().map(|(d, _)| d.as_str()).collect();
        self.due.retain(|d, _| keep.contains(d.as_str()));
        for (domain, age) in monitored {
            if self.due.contains_key(domain) || self.running.contains_key(domain) {
                continue;
            }
            let at = match age {
                None => now,
                // After a restart, spread the overdue ones over the jitter window.
                Some(age) => now + self.interval.saturating_sub(*age) + self.jitter(),
            };
            self.due.insert(domain.clone(), at);
        }
    }

    /// Takes the domains due at `now`, marking them running.
    pub fn take_due(&mut self, now: Instant) -> Vec<String> {
        let mut ready: Vec<(Instant, String)> = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(d, at)| (*at, d.clone()))
            .collect();
        ready.sort();
        for (_, d) in &ready {
            self.due.remove(d);
            self.running.insert(d.clone(), ());
        }
        ready.into_iter().map(|(_, d)| d).collect()
    }

    /// A check finished: the domain is next due an interval (plus jitter) later.
    pub fn done(&mut self, domain: &str, now: Instant) {
        self.running.remove(domain);
        let at = now + self.interval + self.jitter();
        self.due.insert(domain.to_owned(), at);
    }

    /// A check finished and wants the domain again after `delay` (not the
    /// interval), but never later than the interval would have.
    pub fn done_in(&mut self, domain: &str, now: Instant, delay: Duration) {
        self.running.remove(domain);
        self.due
            .insert(domain.to_owned(), now + delay.min(self.interval));
    }

    /// When the next domain is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().min().copied()
    }
}

/// Runs the monitor until the task is dropped.
pub async fn run(engine: Arc<Engine>) {
    let cfg = engine.config().monitor.clone();
    let mut schedule = Schedule::new(cfg.interval, cfg.jitter);
    let permits = Arc::new(Semaphore::new(MONITOR_CONCURRENCY));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Next)>();
    // Checks in a row that held back an unconfirmed mismatch, per domain.
    let mut rechecks: HashMap<String, u32> = HashMap::new();
    loop {
        let now = Instant::now();
        match monitored_with_age(&engine) {
            Ok(list) => {
                schedule.sync(&list, now);
                if !rechecks.is_empty() {
                    rechecks.retain(|d, _| list.iter().any(|(m, _)| m == d));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read monitored domains"),
        }
        for domain in schedule.take_due(now) {
            let engine = engine.clone();
            let permits = permits.clone();
            let done = done_tx.clone();
            let held = rechecks.get(&domain).copied().unwrap_or(0);
            tokio::spawn(async move {
                // The permit is held while the check works, not while its
                // probes wait for their address's spacing slot.
                let gate = Arc::new(Gate::new(permits));
                let mut next = Next::Interval;
                if gate.enter().await {
                    next = check_domain_gated(&engine, &domain, Some(gate.clone()), held).await;
                    gate.leave().await;
                }
                let _ = done.send((domain, next));
            });
        }
        let wake = schedule.next_due().unwrap_or(now + IDLE).min(now + IDLE);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = engine.monitor_woken() => {}
            Some(first) = done_rx.recv() => {
                let mut finished = vec![first];
                while let Ok(d) = done_rx.try_recv() {
                    finished.push(d);
                }
                for (domain, next) in finished {
                    reschedule(&mut schedule, &mut rechecks, &domain, next, Instant::now());
                }
            }
        }
    }
}

/// Puts a finished domain back on the schedule: soon after an unconfirmed
/// mismatch (counting the checks in a row that did so), else at its interval.
fn reschedule(
    schedule: &mut Schedule,
    rechecks: &mut HashMap<String, u32>,
    domain: &str,
    next: Next,
    now: Instant,
) {
    match next {
        Next::Soon => {
            *rechecks.entry(domain.to_owned()).or_insert(0) += 1;
            schedule.done_in(domain, now, RECHECK_SOON);
        }
        Next::Interval => {
            rechecks.remove(domain);
            schedule.done(domain, now);
        }
    }
}

fn monitored_with_age(engine: &Engine) -> Result<Vec<(String, Option<Duration>)>, StoreError> {
    let store = engine.store();
    let domains = store.monitored()?;
    let now = engine.clock().now();
    Ok(domains
        .into_iter()
        .map(|d| {
            let age = store
                .domain_state(&d)
                .ok()
                .flatten()
                .and_then(|s| s.last_report)
                .and_then(|r| humantime::parse_rfc3339(&r.checked_at).ok())
                .and_then(|t| now.duration_since(t).ok());
            (d, age)
        })
        .collect())
}

/// One scheduled check: state transition, alert into the outbox atomically.
/// (The schedule's answer, [`Next`], is dropped: see [`check_domain_gated`].)
pub async fn check_domain(engine: &Engine, domain: &str) {
    check_domain_gated(engine, domain, None, 0).await;
}

/// One scheduled check whose probes give `gate`'s permit back while they
/// wait. `held` is how many checks in a row before this one held back an
/// unconfirmed mismatch. Returns when the domain should be checked again.
pub async fn check_domain_gated(
    engine: &Engine,
    domain: &str,
    gate: Option<Arc<Gate>>,
    held: u32,
) -> Next {
    let Ok(parsed) = Domain::parse(domain) else {
        tracing::warn!(domain, "stored domain is not valid; skipped");
        return Next::Interval;
    };
    // Boxed: one deep future either way, which keeps the compiler's layout work small.
    let checked = match gate {
        Some(gate) => Box::pin(engine.run_check_gated(&parsed, gate)).await,
        None => Box::pin(engine.run_check(&parsed)).await,
    };
    let (report, health) = match checked {
        Ok(r) => r,
        Err(e) => {
            engine.note_health(&Default::default(), Some(&e)).await;
            return Next::Interval;
        }
    };
    engine.note_health(&health, None).await;
    let ours = report.verdict == Verdict::Unreachable
        && (health.dns_failures > 0
            || (health.probes > 0 && health.transport_failures == health.probes));
    if ours {
        // Tor or DNS failed on our side: nothing is known about the domain.
        return Next::Interval;
    }
    if hold_back(&report, held) {
        // A mismatch seen through one exit only may be that exit's doing:
        // no state change and no alert until a second exit has looked.
        tracing::info!(domain, held, "mismatch not confirmed; checking again soon");
        return Next::Soon;
    }
    let store = engine.store();
    let prev = match store.domain_state(domain) {
        Ok(Some(s)) => s,
        Ok(None) => return Next::Interval,
        Err(e) => {
            tracing::warn!(domain, error = %e, "cannot read state");
            return Next::Interval;
        }
    };
    let (next, alert) = transition(&prev, &report);
    let result = match &alert {
        Some(a) => {
            let chat = store.subscribers(domain).unwrap_or_default();
            let pubsub = store.pubsub_subscribers(domain).unwrap_or_default();
            tracing::info!(domain, from = ?a.from, to = %a.to, "state changed");
            store.commit_check(
                domain,
                &next,
                Some(&a.item()),
                &a.deliveries(&chat, &pubsub),
            )
        }
        None => store.commit_check(domain, &next, None, &[]),
    };
    match result {
        // An alert is durable before anyone is told (notify-then-mark); any
        // other check rides on sled's periodic flush, so a crash loses at
        // most that check's record (redone at the next check), never an
        // alert.
        Ok(_) if alert.is_some() => {
            if let Err(e) = store.flush().await {
                tracing::warn!(error = %e, "cannot flush the store");
            }
            engine.wake_outbox();
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(domain, error = %e, "cannot store the check"),
    }
    Next::Interval
}

/// Whether this check's report is held back: its only alarms are
/// unconfirmed mismatches, and fewer than [`MAX_RECHECKS`] checks in a row
/// held it back. Any other alarm (a confirmed mismatch, STARTTLS missing,
/// bogus DNSSEC) goes ahead at once.
fn hold_back(report: &crate::report::Report, held: u32) -> bool {
    held < MAX_RECHECKS
        && report.unconfirmed() > 0
        && report.bogus_rrsets.is_empty()
        && report.alarming().all(|e| e.is_unconfirmed_mismatch())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{EndpointReport, EndpointVerdict, Report};

    const H: Duration = Duration::from_secs(3600);
    const J: Duration = Duration::from_secs(600);

    #[tokio::test(start_paused = true)]
    async fn new_domains_are_due_at_once_then_every_interval_with_jitter() {
        let mut s = Schedule::new(H, J);
        let t0 = Instant::now();
        s.sync(&[("a.org".into(), None)], t0);
        assert_eq!(s.take_due(t0), vec!["a.org"]);
        assert!(s.take_due(t0).is_empty(), "running, not due twice");
        s.sync(&[("a.org".into(), None)], t0);
        assert!(
            s.take_due(t0).is_empty(),
            "a running domain is not re-added"
        );
        s.done("a.org", t0);
        let next = s.next_due().unwrap();
        assert!(next >= t0 + H && next <= t0 + H + J, "{:?}", next - t0);
        tokio::time::advance(H - Duration::from_secs(1)).await;
        assert!(s.take_due(Instant::now()).is_empty());
        tokio::time::advance(J + Duration::from_secs(2)).await;
        assert_eq!(s.take_due(Instant::now()), vec!["a.org"]);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_domains_are_dropped_and_restarts_spread_load() {
        let mut s = Schedule::new(H, J);
        let t0 = Instant::now();
        let many: Vec<(String, Option<Duration>)> = (0..200)
            .map(|i| (format!("d{i}.org"), Some(2 * H)))
            .collect();
        s.sync(&many, t0);
        // Overdue domains after a restart are spread over the jitter window.
        let at_once = s.take_due(t0).len();
        assert!(at_once < 20, "{at_once} due at once");
        tokio::time::advance(J).await;
        assert_eq!(at_once + s.take_due(Instant::now()).len(), 200);
        s.sync(&[], Instant::now());
        assert!(s.next_due().is_none());
    }

    fn report(endpoints: &[(EndpointVerdict, Option<bool>)]) -> Report {
        let endpoints: Vec<EndpointReport> = endpoints
            .iter()
            .map(|(verdict, confirmed)| EndpointReport {
                service: "xmpp-client".into(),
                host: "xmpp.example.org".into(),
                port: 5222,
                address: None,
                tls: "starttls".into(),
                verdict: *verdict,
                tlsa: vec![],
                spki_sha256: None,
                cert_sha256: None,
                matched: None,
                error: None,
                tlsa_name: "_5222._tcp.xmpp.example.org".into(),
                tls_version: None,
                cipher: None,
                notes: vec![],
                vantage: vec![],
                confirmed: *confirmed,
            })
            .collect();
        Report {
            domain: "example.org".into(),
            checked_at: String::new(),
            verdict: Report::overall(&endpoints, false, false),
            endpoints,
            records_to_add: vec![],
            advice: vec![],
            transport: "tor".into(),
            errors: vec![],
            bogus_rrsets: vec![],
        }
    }

    #[test]
    fn only_an_unconfirmed_mismatch_alone_is_held_back_and_not_for_ever() {
        use EndpointVerdict as E;
        let unconfirmed = (E::Mismatch, Some(false));
        let confirmed = (E::Mismatch, Some(true));
        type Endpoints = Vec<(E, Option<bool>)>;
        let table: Vec<(Endpoints, u32, bool)> = vec![
            (vec![unconfirmed, (E::Match, None)], 0, true),
            (vec![unconfirmed], MAX_RECHECKS - 1, true),
            // After MAX_RECHECKS in a row it goes ahead ("not confirmed"):
            // an interceptor that also drops every second probe is still reported.
            (vec![unconfirmed], MAX_RECHECKS, false),
            (vec![confirmed], 0, false),
            // Another alarm needs no confirmation: no delay for it.
            (vec![unconfirmed, confirmed], 0, false),
            (vec![unconfirmed, (E::StarttlsMissing, None)], 0, false),
            (vec![(E::Match, None)], 0, false),
            (vec![(E::Unreachable, None)], 0, false),
        ];
        for (eps, held, want) in table {
            assert_eq!(hold_back(&report(&eps), held), want, "{eps:?} held {held}");
        }
        let mut bogus = report(&[unconfirmed]);
        bogus.bogus_rrsets.push("the SRV RRset failed".into());
        assert!(!hold_back(&bogus, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_mismatch_is_checked_again_within_minutes() {
        let mut s = Schedule::new(H, Duration::ZERO);
        let mut rechecks = HashMap::new();
        let t0 = Instant::now();
        s.sync(&[("a.org".into(), None)], t0);
        assert_eq!(s.take_due(t0), vec!["a.org"]);
        reschedule(&mut s, &mut rechecks, "a.org", Next::Soon, t0);
        assert_eq!(s.next_due(), Some(t0 + RECHECK_SOON));
        assert!(RECHECK_SOON <= Duration::from_secs(300));
        assert_eq!(rechecks["a.org"], 1);
        tokio::time::advance(RECHECK_SOON).await;
        let t1 = Instant::now();
        assert_eq!(s.take_due(t1), vec!["a.org"]);
        reschedule(&mut s, &mut rechecks, "a.org", Next::Soon, t1);
        assert_eq!(rechecks["a.org"], 2);
        // Settled (confirmed, or gone): back to the interval, count reset.
        tokio::time::advance(RECHECK_SOON).await;
        let t2 = Instant::now();
        assert_eq!(s.take_due(t2), vec!["a.org"]);
        reschedule(&mut s, &mut rechecks, "a.org", Next::Interval, t2);
        assert!(!rechecks.contains_key("a.org"));
        assert_eq!(s.next_due(), Some(t2 + H));
        // A monitor that checks more often than that re-checks at its interval.
        let short = Duration::from_secs(2);
        let mut s = Schedule::new(short, Duration::ZERO);
        s.sync(&[("b.org".into(), None)], t2);
        assert_eq!(s.take_due(t2), vec!["b.org"]);
        reschedule(&mut s, &mut rechecks, "b.org", Next::Soon, t2);
        assert_eq!(s.next_due(), Some(t2 + short));
    }

    #[tokio::test(start_paused = true)]
    async fn recently_checked_domain_waits_for_its_interval() {
        let mut s = Schedule::new(H, Duration::ZERO);
        let t0 = Instant::now();
        s.sync(&[("a.org".into(), Some(Duration::from_secs(600)))], t0);
        assert_eq!(s.next_due(), Some(t0 + H - Duration::from_secs(600)));
    }
}

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

    /// Makes a known, not running domain due at `now` (it was just
    /// subscribed to again: its old turn may be an interval away).
    pub fn due_now(&mut self, domain: &str, now: Instant) {
        if let Some(at) = self.due.get_mut(domain) {
            *at = now.min(*at);
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
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
    loop {
        let now = Instant::now();
        match monitored_with_age(&engine) {
            Ok(list) => schedule.sync(&list, now),
            Err(e) => tracing::warn!(error = %e, "cannot read monitored domains"),
        }
        for domain in engine.take_check_soon() {
            schedule.due_now(&domain, now);
        }
        for domain in schedule.take_due(now) {
            let engine = engine.clone();
            let permits = permits.clone();
            let done = done_tx.clone();
            tokio::spawn(async move {
                // The permit is held while the check works, not while its
                // probes wait for their address's spacing slot.
                let gate = Arc::new(Gate::new(permits));
                if gate.enter().await {
                    check_domain_gated(&engine, &domain, Some(gate.clone())).await;
                    gate.leave().await;
                }
                let _ = done.send(domain);
            });
        }
        let wake = schedule.next_due().unwrap_or(now + IDLE).min(now + IDLE);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = engine.monitor_woken() => {}
            Some(domain) = done_rx.recv() => {
                schedule.done(&domain, Instant::now());
                while let Ok(d) = done_rx.try_recv() {
                    schedule.done(&d, Instant::now());
                }
            }
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
pub async fn check_domain(engine: &Engine, domain: &str) {
    check_domain_gated(engine, domain, None).await
}

/// One scheduled check whose probes give `gate`'s permit back while they wait.
async fn check_domain_gated(engine: &Engine, domain: &str, gate: Option<Arc<Gate>>) {
    let Ok(parsed) = Domain::parse(domain) else {
        tracing::warn!(domain, "stored domain is not valid; skipped");
        return;
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
            return;
        }
    };
    engine.note_health(&health, None).await;
    let ours = report.verdict == Verdict::Unreachable
        && (health.dns_failures > 0
            || (health.probes > 0 && health.transport_failures == health.probes));
    if ours {
        // Tor or DNS failed on our side: nothing is known about the domain.
        return;
    }
    let store = engine.store();
    let prev = match store.domain_state(domain) {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(domain, error = %e, "cannot read state");
            return;
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test(start_paused = true)]
    async fn a_domain_subscribed_again_is_due_at_once_not_at_its_old_turn() {
        let mut s = Schedule::new(H, J);
        let t0 = Instant::now();
        s.sync(&[("a.org".into(), None)], t0);
        assert_eq!(s.take_due(t0), vec!["a.org"]);
        s.done("a.org", t0);
        // Unsubscribed and subscribed again before the monitor looked:
        // the schedule still holds its old turn, an interval away.
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        s.sync(&[("a.org".into(), None)], now);
        assert!(s.take_due(now).is_empty(), "the old turn");
        s.due_now("a.org", now);
        assert_eq!(s.take_due(now), vec!["a.org"]);
        // Unknown or running domains are left alone.
        s.due_now("b.org", now);
        s.due_now("a.org", now);
        assert!(s.take_due(now).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn recently_checked_domain_waits_for_its_interval() {
        let mut s = Schedule::new(H, Duration::ZERO);
        let t0 = Instant::now();
        s.sync(&[("a.org".into(), Some(Duration::from_secs(600)))], t0);
        assert_eq!(s.next_due(), Some(t0 + H - Duration::from_secs(600)));
    }
}

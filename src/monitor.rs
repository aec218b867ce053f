//! The schedule: every monitored domain is checked every interval plus
//! jitter, a few at a time; state changes become alerts in the outbox.
//!
//! The schedule lives in memory: each domain's next due time, in order, so a
//! finished check costs a few ordered-set operations, whatever the number of
//! domains. The set of domains is read again only when the store says it
//! changed (its membership generation); the one fact kept for a restart is
//! each domain's last check time (the store's `checked` tree), never decoded
//! from its report. Domains that are new, or overdue after a restart, are
//! spread evenly over one interval, so 100,000 new domains are no herd. A
//! check that panics is logged, counted as a failure on our side and
//! scheduled again; a panic of the loop itself restarts it.

use crate::store::StateStore as _;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::alert::AlertPolicy;
use crate::model::AlertKind;
use crate::warning::{after_check, Outcome};

use crate::check::Health;
use crate::domain::Domain;
use crate::engine::{Engine, Error};
use crate::probe::Gate;
use crate::store::StoreError;

/// Checks working at once in the monitor.
pub const MONITOR_CONCURRENCY: usize = 16;
/// Checks started and not finished at most, those whose probes only wait
/// (for their address's spacing slot or the circuit budget) included.
pub const MAX_IN_FLIGHT: usize = MONITOR_CONCURRENCY * 8;
/// The longest the monitor sleeps before looking again.
const IDLE: Duration = Duration::from_secs(60);
/// The pause before a panicked monitor loop starts again.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// A due time that cannot be represented is this far away instead.
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Where one domain stands in the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Waiting; due then.
    Due(Instant),
    /// Its check is running.
    Running,
}

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
    /// (due, domain) for every waiting domain, soonest first.
    queue: BTreeSet<(Instant, String)>,
    slots: HashMap<String, Slot>,
    interval: Duration,
    jitter: Duration,
    /// Entries touched so far: what a test counts to see the cost of an operation.
    work: u64,
}

fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

impl Schedule {
    /// An empty schedule.
    pub fn new(interval: Duration, jitter: Duration) -> Schedule {
        Schedule {
            queue: BTreeSet::new(),
            slots: HashMap::new(),
            interval,
            jitter,
            work: 0,
        }
    }

    fn jitter(&self) -> Duration {
        let max = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::random_range(0..=max))
    }

    fn put(&mut self, domain: String, at: Instant) {
        self.work += 1;
        if let Some(Slot::Due(old)) = self.slots.insert(domain.clone(), Slot::Due(at)) {
            self.queue.remove(&(old, domain.clone()));
        }
        self.queue.insert((at, domain));
    }

    fn remove(&mut self, domain: &str) {
        self.work += 1;
        if let Some(Slot::Due(at)) = self.slots.remove(domain) {
            self.queue.remove(&(at, domain.to_owned()));
        }
    }

    /// Makes the schedule hold exactly `monitored` (O(n): for when the set
    /// changed). A domain new to the schedule that was checked `age(domain)`
    /// ago is due when its interval ends; those never checked (new ones
    /// first) and those overdue (longest first) are spread evenly, one
    /// interval ÷ the number of domains apart, beginning now.
    pub fn sync(
        &mut self,
        monitored: &[String],
        now: Instant,
        mut age: impl FnMut(&str) -> Option<Duration>,
    ) {
        let keep: HashSet<&str> = monitored.iter().map(String::as_str).collect();
        let gone: Vec<String> = self
            .slots
            .keys()
            .filter(|d| !keep.contains(d.as_str()))
            .cloned()
            .collect();
        for d in &gone {
            self.remove(d);
        }
        let mut fresh = Vec::new();
        let mut overdue = Vec::new();
        for d in monitored {
            if self.slots.contains_key(d) {
                continue;
            }
            match age(d) {
                None => fresh.push(d),
                Some(a) if a >= self.interval => overdue.push((a, d)),
                Some(a) => self.put(d.clone(), after(now, self.interval - a)),
            }
        }
        overdue.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let n = u128::try_from(monitored.len().max(1)).unwrap_or(u128::MAX);
        let step = self.interval.as_nanos() / n;
        let late = overdue.into_iter().map(|(_, d)| d);
        for (i, d) in fresh.into_iter().chain(late).enumerate() {
            let offset = step.saturating_mul(i as u128);
            let offset = Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
            self.put(d.clone(), after(now, offset));
        }
    }

    /// Makes a known, waiting domain due at `now` (it was just subscribed
    /// to again: its old turn may be an interval away). Unknown and running
    /// domains are left alone.
    pub fn due_now(&mut self, domain: &str, now: Instant) {
        if let Some(Slot::Due(at)) = self.slots.get(domain).copied() {
            if at > now {
                self.put(domain.to_owned(), now);
            }
        }
    }

    /// Takes up to `max` domains due at `now`, soonest first, marking them
    /// running; each with the time it was due.
    pub fn take_due(&mut self, now: Instant, max: usize) -> Vec<(String, Instant)> {
        let mut ready = Vec::new();
        while ready.len() < max {
            match self.queue.first() {
                Some((at, _)) if *at <= now => {}
                _ => break,
            }
            let Some((at, domain)) = self.queue.pop_first() else {
                break;
            };
            self.work += 1;
            self.slots.insert(domain.clone(), Slot::Running);
            ready.push((domain, at));
        }
        ready
    }

    /// A check finished: the domain is next due an interval (plus jitter) later.
    pub fn done(&mut self, domain: &str, now: Instant) {
        let at = after(now, self.interval.saturating_add(self.jitter()));
        self.finish(domain, at);
    }

    /// A check finished and wants the domain checked again `delay` from now
    /// (e.g. to confirm something soon), but never later than the interval
    /// would have.
    pub fn done_in(&mut self, domain: &str, now: Instant, delay: Duration) {
        self.finish(domain, after(now, delay.min(self.interval)));
    }

    fn finish(&mut self, domain: &str, at: Instant) {
        // A domain removed while it ran stays removed; one removed and added
        // again meanwhile keeps its new due time.
        if self.slots.get(domain) == Some(&Slot::Running) {
            self.put(domain.to_owned(), at);
        }
    }

    /// When the next domain is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// How many domains the schedule holds (waiting or running).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Entries touched so far (to see what an operation costs).
    pub fn work(&self) -> u64 {
        self.work
    }
}

/// Told how late each scheduled check started against its due time.
pub type LagObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// What the monitor loop works on: the engine, or a stand-in in tests.
trait Host: Send + Sync + 'static {
    /// (interval, jitter).
    fn timing(&self) -> (Duration, Duration);
    /// Changes whenever the set of monitored domains changes.
    fn generation(&self) -> u64;
    /// Every monitored domain.
    fn members(&self) -> Result<Vec<String>, StoreError>;
    /// How long ago the monitor last checked a domain.
    fn age(&self, domain: &str) -> Option<Duration>;
    /// Resolves when someone wakes the monitor.
    fn woken(&self) -> BoxFuture<'_, ()>;
    /// One check, working while it holds `gate`; Some(delay) to be checked
    /// again that soon rather than an interval later.
    fn check(
        self: Arc<Self>,
        domain: String,
        gate: Arc<Gate>,
        held: u32,
    ) -> BoxFuture<'static, Option<Duration>>;
    /// A check of `domain` panicked with `message`.
    fn panicked(self: Arc<Self>, domain: String, message: String) -> BoxFuture<'static, ()>;
    /// Domains someone asked to be checked at once (re-subscribed), emptied.
    fn take_check_soon(&self) -> Vec<String> {
        Vec::new()
    }
}

impl Host for Engine {
    fn take_check_soon(&self) -> Vec<String> {
        Engine::take_check_soon(self)
    }
    fn timing(&self) -> (Duration, Duration) {
        let m = &self.config().monitor;
        (m.interval, m.jitter)
    }
    fn generation(&self) -> u64 {
        self.store().membership_generation()
    }
    fn members(&self) -> Result<Vec<String>, StoreError> {
        self.store().monitored()
    }
    fn age(&self, domain: &str) -> Option<Duration> {
        let at = self.store().last_checked(domain).ok().flatten()?;
        // A check "in the future" (the clock went back) counts as just now.
        Some(self.clock().now().duration_since(at).unwrap_or_default())
    }
    fn woken(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.monitor_woken())
    }
    fn check(
        self: Arc<Self>,
        domain: String,
        gate: Arc<Gate>,
        held: u32,
    ) -> BoxFuture<'static, Option<Duration>> {
        Box::pin(async move {
            match check_domain_gated(&self, &domain, Some(gate), held).await {
                Next::Soon => Some(RECHECK_SOON.min(self.config().monitor.interval)),
                Next::Interval => None,
            }
        })
    }
    fn panicked(self: Arc<Self>, _domain: String, message: String) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            self.note_health(&Health::default(), Some(&Error::Panicked(message)))
                .await
        })
    }
}

/// How often the subscribers of an alert are read before the check is
/// given up as not recorded.
const RECIPIENT_READS: u32 = 3;

/// A domain's chat and PubSub subscribers, read again on failure.
async fn read_recipients(
    store: &crate::store::Store,
    domain: &str,
) -> Result<(Vec<String>, Vec<String>), StoreError> {
    read_again(domain, || {
        store
            .subscribers(domain)
            .and_then(|chat| Ok((chat, store.pubsub_subscribers(domain)?)))
    })
    .await
}

/// Runs `read` up to [`RECIPIENT_READS`] times, a little longer apart each
/// time, until it succeeds; the last failure when it never does.
async fn read_again<T>(
    domain: &str,
    mut read: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match read() {
            Ok(r) => return Ok(r),
            Err(e) if tries >= RECIPIENT_READS => return Err(e),
            Err(e) => {
                tracing::warn!(domain, error = %e, tries, "cannot read the subscribers; trying again");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(tries))).await;
            }
        }
    }
}

/// Runs the monitor until the task is dropped.
pub async fn run(engine: Arc<Engine>) {
    supervise(engine, None).await
}

/// [`run`], telling `observer` how late each check started (for benchmarks).
pub async fn run_observed(engine: Arc<Engine>, observer: LagObserver) {
    supervise(engine, Some(observer)).await
}

/// Aborts the task when dropped, so aborting the supervisor ends the loop.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs the loop, and runs it again after a panic.
async fn supervise<H: Host>(host: Arc<H>, observer: Option<LagObserver>) {
    loop {
        let mut task = AbortOnDrop(tokio::spawn(run_loop(host.clone(), observer.clone())));
        match (&mut task.0).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                let message = panic_message(e.into_panic().as_ref());
                tracing::error!(panic = %message, "the monitor loop panicked; it starts again");
                tokio::time::sleep(RESTART_DELAY).await;
            }
            Err(_) => return,
        }
    }
}

async fn run_loop<H: Host>(host: Arc<H>, observer: Option<LagObserver>) {
    let (interval, jitter) = host.timing();
    let mut schedule = Schedule::new(interval, jitter);
    let permits = Arc::new(Semaphore::new(MONITOR_CONCURRENCY));
    let mut tasks: JoinSet<Option<Duration>> = JoinSet::new();
    let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
    // The generation last read; the store's starts above 0.
    let mut seen = 0;
    // Checks in a row that held back an unconfirmed mismatch, per domain.
    let mut rechecks: HashMap<String, u32> = HashMap::new();
    loop {
        let now = Instant::now();
        let generation = host.generation();
        if generation != seen {
            match host.members() {
                Ok(list) => {
                    schedule.sync(&list, now, |d| host.age(d));
                    seen = generation;
                    if !rechecks.is_empty() {
                        let members: std::collections::HashSet<&String> = list.iter().collect();
                        rechecks.retain(|d, _| members.contains(d));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read monitored domains"),
            }
        }
        for domain in host.take_check_soon() {
            schedule.due_now(&domain, now);
        }
        let room = MAX_IN_FLIGHT.saturating_sub(tasks.len());
        for (domain, due) in schedule.take_due(now, room) {
            let host = host.clone();
            let permits = permits.clone();
            let observer = observer.clone();
            let name = domain.clone();
            let held = rechecks.get(&domain).copied().unwrap_or(0);
            let handle = tasks.spawn(async move {
                // The permit is held while the check works, not while its
                // probes wait for their address's spacing slot or a circuit.
                let gate = Arc::new(Gate::new(permits));
                if !gate.enter().await {
                    return None;
                }
                if let Some(observe) = &observer {
                    observe(Instant::now().saturating_duration_since(due));
                }
                let again = host.check(name, gate.clone(), held).await;
                gate.leave().await;
                again
            });
            running.insert(handle.id(), domain);
        }
        let wake = match schedule.next_due() {
            Some(at) if tasks.len() < MAX_IN_FLIGHT => at.min(now + IDLE),
            _ => now + IDLE,
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = host.woken() => {}
            Some(joined) = tasks.join_next_with_id() => {
                finished(&host, &mut schedule, &mut running, &mut rechecks, joined).await;
                while let Some(joined) = tasks.try_join_next_with_id() {
                    finished(&host, &mut schedule, &mut running, &mut rechecks, joined).await;
                }
            }
        }
    }
}

/// Schedules a finished check's domain again; a panicked one counts as a
/// failure on our side (the operators hear of it if it persists).
async fn finished<H: Host>(
    host: &Arc<H>,
    schedule: &mut Schedule,
    running: &mut HashMap<tokio::task::Id, String>,
    rechecks: &mut HashMap<String, u32>,
    joined: Result<(tokio::task::Id, Option<Duration>), tokio::task::JoinError>,
) {
    let now = Instant::now();
    let (id, again) = match joined {
        Ok((id, again)) => (id, again),
        Err(e) => {
            let id = e.id();
            if e.is_panic() {
                let message = panic_message(e.into_panic().as_ref());
                let domain = running.get(&id).cloned().unwrap_or_default();
                tracing::error!(domain, panic = %message, "a check panicked; counted as a failure on our side, checked again next interval");
                host.clone().panicked(domain, message).await;
            }
            (id, None)
        }
    };
    let Some(domain) = running.remove(&id) else {
        return;
    };
    // Soon after an unconfirmed mismatch (counting the checks in a row
    // that held one back), else at the interval.
    match again {
        Some(delay) => {
            *rechecks.entry(domain.clone()).or_insert(0) += 1;
            schedule.done_in(&domain, now, delay);
        }
        None => {
            rechecks.remove(&domain);
            schedule.done(&domain, now);
        }
    }
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
    // Tor, the proxy or DNS failed on our side, even for one probe, and
    // nothing else decided the verdict: nothing is known about the domain,
    // so its state (and its subscribers) are left alone. An alarm or a DNS
    // finding seen meanwhile still counts.
    if health.says_nothing(report.verdict) {
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
            engine.note_store(Err(&e));
            return Next::Interval;
        }
    };
    let policy = AlertPolicy {
        recovery_checks: engine.config().monitor.recovery_checks,
    };
    let thresholds = crate::horizon::thresholds(&engine.config().monitor.warn_before);
    let now = crate::horizon::unix(engine.clock().now());
    // The state change and its alert first, then any warning: never one in
    // place of the other.
    let Outcome {
        next,
        alerts,
        report,
    } = after_check(&prev, report, &policy, &thresholds, now);
    let result = if alerts.is_empty() {
        store.commit_check(domain, &next, &[], &[]).await
    } else {
        // An alert is never committed without its recipients: a read
        // that fails is tried again, then the check is not recorded (the
        // state stays as it was, so the next check raises the alert).
        let recipients = match read_recipients(store, domain).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(domain, error = %e, "cannot read the subscribers; the alert waits for the next check");
                engine.note_store(Err(&e));
                return Next::Soon;
            }
        };
        for a in &alerts {
            match a.kind {
                AlertKind::Change => {
                    tracing::info!(domain, from = ?a.from, to = %a.to, "state changed")
                }
                kind => tracing::info!(domain, kind = kind.as_str(), title = %a.title, "warning"),
            }
        }
        let items: Vec<_> = alerts.iter().map(|a| a.item()).collect();
        let deliveries: Vec<_> = alerts
            .iter()
            .flat_map(|a| a.deliveries(&recipients.0, &recipients.1))
            .collect();
        store.commit_check(domain, &next, &items, &deliveries).await
    };
    engine.note_store(result.as_ref().map(|_| ()));
    match result {
        // Every commit is flushed before it is answered (the store's group
        // commit), so an alert is durable before anyone is told
        // (notify-then-mark).
        Ok(written) => {
            tracing::debug!(domain, verdict = %report.verdict, written, "check recorded");
            if written {
                // For the schedule after a restart.
                if let Err(e) = store.note_checked(domain, engine.clock().now()).await {
                    tracing::warn!(domain, error = %e, "cannot store the check time");
                }
            }
            // The evidence of an alert that was committed, once: not of a
            // check given up (it comes again with the re-check) nor of a
            // domain nobody follows any more.
            let change = alerts.iter().find(|a| a.kind == AlertKind::Change);
            match change {
                Some(a) if written && !report.evidence.is_empty() => {
                    let record = crate::store::EvidenceRecord {
                        alert_id: a.id.clone(),
                        title: a.title.clone(),
                        items: report.evidence.clone(),
                    };
                    if let Err(e) = store.put_evidence(domain, &record).await {
                        tracing::warn!(domain, error = %e, "cannot keep the evidence");
                    }
                }
                _ => {}
            }
            if !alerts.is_empty() {
                crate::crashpoint::reached(crate::crashpoint::AFTER_COMMIT);
                engine.wake_outbox();
            }
        }
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
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::sync::Notify;

    const H: Duration = Duration::from_secs(3600);
    const J: Duration = Duration::from_secs(600);

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}.org")).collect()
    }

    fn never(_: &str) -> Option<Duration> {
        None
    }

    fn taken(v: Vec<(String, Instant)>) -> Vec<String> {
        v.into_iter().map(|(d, _)| d).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn new_domains_are_due_at_once_then_every_interval_with_jitter() {
        let mut s = Schedule::new(H, J);
        let t0 = Instant::now();
        s.sync(&["a.org".into()], t0, never);
        assert_eq!(taken(s.take_due(t0, 10)), vec!["a.org"]);
        assert!(s.take_due(t0, 10).is_empty(), "running, not due twice");
        s.sync(&["a.org".into()], t0, never);
        assert!(
            s.take_due(t0, 10).is_empty(),
            "a running domain is not re-added"
        );
        s.done("a.org", t0);
        let next = s.next_due().unwrap();
        assert!(next >= t0 + H && next <= t0 + H + J, "{:?}", next - t0);
        tokio::time::advance(H - Duration::from_secs(1)).await;
        assert!(s.take_due(Instant::now(), 10).is_empty());
        tokio::time::advance(J + Duration::from_secs(2)).await;
        let due = s.take_due(Instant::now(), 10);
        assert_eq!(due, vec![("a.org".to_string(), next)], "with its due time");
    }

    #[tokio::test(start_paused = true)]
    async fn done_in_brings_a_domain_back_soon() {
        let mut s = Schedule::new(H, J);
        let t0 = Instant::now();
        s.sync(&["a.org".into()], t0, never);
        s.take_due(t0, 1);
        s.done_in("a.org", t0, Duration::from_secs(120));
        assert_eq!(s.next_due(), Some(t0 + Duration::from_secs(120)));
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
                matched_until: None,
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
            evidence: vec![],
            nxdomain: false,
            resolvers: vec![],
            horizons: Default::default(),
            rollover: vec![],
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
    async fn a_domain_subscribed_again_is_due_at_once_not_at_its_old_turn() {
        let mut s = Schedule::new(H, J);
        let t0 = Instant::now();
        s.sync(&["a.org".to_string()], t0, never);
        assert_eq!(taken(s.take_due(t0, 10)), vec!["a.org"]);
        s.done("a.org", t0);
        // Unsubscribed and subscribed again before the monitor looked:
        // the schedule still holds its old turn, an interval away.
        tokio::time::advance(Duration::from_secs(5)).await;
        let now = Instant::now();
        s.sync(&["a.org".to_string()], now, never);
        assert!(s.take_due(now, 10).is_empty(), "the old turn");
        s.due_now("a.org", now);
        assert_eq!(taken(s.take_due(now, 10)), vec!["a.org"]);
        // Unknown or running domains are left alone.
        s.due_now("b.org", now);
        s.due_now("a.org", now);
        assert!(s.take_due(now, 10).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_mismatch_is_checked_again_within_minutes() {
        let mut s = Schedule::new(H, Duration::ZERO);
        let t0 = Instant::now();
        s.sync(&["a.org".to_string()], t0, never);
        assert_eq!(taken(s.take_due(t0, 10)), vec!["a.org"]);
        s.done_in("a.org", t0, RECHECK_SOON);
        assert_eq!(s.next_due(), Some(t0 + RECHECK_SOON));
        assert!(RECHECK_SOON <= Duration::from_secs(300));
        tokio::time::advance(RECHECK_SOON).await;
        let t1 = Instant::now();
        assert_eq!(taken(s.take_due(t1, 10)), vec!["a.org"]);
        // Settled (confirmed, or gone): back to the interval.
        s.done("a.org", t1);
        assert_eq!(s.next_due(), Some(t1 + H));
        // A monitor that checks more often than that re-checks at its interval.
        let short = Duration::from_secs(2);
        let mut s = Schedule::new(short, Duration::ZERO);
        s.sync(&["b.org".to_string()], t1, never);
        assert_eq!(taken(s.take_due(t1, 10)), vec!["b.org"]);
        s.done_in("b.org", t1, RECHECK_SOON);
        assert_eq!(s.next_due(), Some(t1 + short));
    }

    #[tokio::test(start_paused = true)]
    async fn many_new_domains_are_spread_evenly_over_one_interval() {
        let mut s = Schedule::new(H, J);
        let t0 = Instant::now();
        s.sync(&names(6000), t0, never);
        // Six ten-minute windows of the first hour take a sixth each.
        let mut counts = Vec::new();
        for w in 1..=6 {
            let end = t0 + J * w - Duration::from_nanos(1);
            counts.push(s.take_due(end, usize::MAX).len());
        }
        assert_eq!(counts, vec![1000; 6], "{counts:?}");
        assert!(s.next_due().is_none(), "all within one interval");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_restart_the_overdue_are_spread_and_the_rest_keep_their_time() {
        let mut s = Schedule::new(H, Duration::ZERO);
        let t0 = Instant::now();
        let mut all = names(100);
        all.push("recent.org".into());
        s.sync(&all, t0, |d| {
            Some(if d == "recent.org" {
                Duration::from_secs(600)
            } else {
                2 * H
            })
        });
        let first_minute = s.take_due(t0 + Duration::from_secs(59), usize::MAX);
        assert!(first_minute.len() <= 2, "{} at once", first_minute.len());
        let rest = s.take_due(t0 + H - Duration::from_secs(1), usize::MAX);
        assert_eq!(
            first_minute.len() + rest.len(),
            101,
            "all within the interval"
        );
        assert!(s.next_due().is_none());
        let recent = rest.iter().find(|(d, _)| d == "recent.org").unwrap();
        assert_eq!(recent.1, t0 + H - Duration::from_secs(600), "its own time");
    }

    #[tokio::test(start_paused = true)]
    async fn removed_domains_are_dropped_even_while_running() {
        let mut s = Schedule::new(H, J);
        let t0 = Instant::now();
        s.sync(&names(3), t0, never);
        let first = taken(s.take_due(t0, 1));
        assert_eq!(first, vec!["d0.org"]);
        s.sync(&["d2.org".into()], t0, never);
        assert_eq!(s.len(), 1);
        s.done("d0.org", t0);
        assert_eq!(s.len(), 1, "a removed domain is not put back by its check");
        let later = taken(s.take_due(t0 + 2 * H, 10));
        assert_eq!(later, vec!["d2.org"]);
        s.sync(&[], t0, never);
        assert!(s.is_empty() && s.next_due().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_check_costs_the_same_with_ten_or_twenty_thousand_domains() {
        let cost = |n: usize| {
            let mut s = Schedule::new(H, J);
            let t0 = Instant::now();
            s.sync(&names(n), t0, never);
            let before = s.work();
            for round in 0..1000u32 {
                let now = t0 + H * 3 * round;
                for (d, _) in s.take_due(now, 1) {
                    s.done(&d, now);
                }
            }
            s.work() - before
        };
        let small = cost(10);
        let big = cost(20_000);
        assert_eq!(small, big, "work per completion does not grow with the set");
        assert_eq!(big, 2000, "one take and one re-insert per completion");
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_durations_do_not_panic_the_schedule() {
        let mut s = Schedule::new(Duration::MAX, Duration::MAX);
        let t0 = Instant::now();
        s.sync(&names(3), t0, |d| {
            (d == "d2.org").then_some(Duration::from_secs(1))
        });
        let first = s.take_due(t0, 10);
        assert_eq!(taken(first), vec!["d0.org"]);
        s.done("d0.org", t0);
        s.done_in("d1.org", t0, Duration::MAX);
        assert!(s.next_due().unwrap() > t0 + Duration::from_secs(3600 * 24 * 365));
    }

    /// A stand-in for the engine that counts what the loop asks of it.
    struct Fake {
        interval: Duration,
        generation: AtomicU64,
        members: Mutex<Vec<String>>,
        member_reads: AtomicUsize,
        /// members() panics this many times first.
        member_panics: AtomicUsize,
        starts: Mutex<Vec<(String, Instant)>>,
        panicked: Mutex<Vec<String>>,
        /// Checks of this domain panic.
        boom: &'static str,
        wake: Notify,
    }

    impl Fake {
        fn new(domains: Vec<String>) -> Arc<Fake> {
            Arc::new(Fake {
                interval: H,
                generation: AtomicU64::new(1),
                members: Mutex::new(domains),
                member_reads: AtomicUsize::new(0),
                member_panics: AtomicUsize::new(0),
                starts: Mutex::new(Vec::new()),
                panicked: Mutex::new(Vec::new()),
                boom: "boom.test",
                wake: Notify::new(),
            })
        }
        fn set_members(&self, domains: Vec<String>) {
            *self.members.lock().unwrap() = domains;
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.wake.notify_one();
        }
        fn checks_of(&self, domain: &str) -> usize {
            let starts = self.starts.lock().unwrap();
            starts.iter().filter(|(d, _)| d == domain).count()
        }
    }

    impl Host for Fake {
        fn timing(&self) -> (Duration, Duration) {
            (self.interval, Duration::ZERO)
        }
        fn generation(&self) -> u64 {
            self.generation.load(Ordering::SeqCst)
        }
        fn members(&self) -> Result<Vec<String>, StoreError> {
            self.member_reads.fetch_add(1, Ordering::SeqCst);
            let left = self.member_panics.load(Ordering::SeqCst);
            if left > 0 {
                self.member_panics.store(left - 1, Ordering::SeqCst);
                panic!("injected panic in the monitor loop");
            }
            Ok(self.members.lock().unwrap().clone())
        }
        fn age(&self, _: &str) -> Option<Duration> {
            None
        }
        fn woken(&self) -> BoxFuture<'_, ()> {
            Box::pin(self.wake.notified())
        }
        fn check(
            self: Arc<Self>,
            domain: String,
            _gate: Arc<Gate>,
            _held: u32,
        ) -> BoxFuture<'static, Option<Duration>> {
            Box::pin(async move {
                self.starts
                    .lock()
                    .unwrap()
                    .push((domain.clone(), Instant::now()));
                tokio::time::sleep(Duration::from_secs(1)).await;
                if domain == self.boom {
                    panic!("injected panic in a check");
                }
                None
            })
        }
        fn panicked(self: Arc<Self>, domain: String, _: String) -> BoxFuture<'static, ()> {
            Box::pin(async move { self.panicked.lock().unwrap().push(domain) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_checks_everyone_each_interval_evenly_without_rereading_the_set() {
        let fake = Fake::new(names(120));
        let t0 = Instant::now();
        let monitor = tokio::spawn(supervise(fake.clone(), None));
        tokio::time::sleep(3 * H + Duration::from_secs(60)).await;
        for d in names(120) {
            let n = fake.checks_of(&d);
            assert!((3..=4).contains(&n), "{d} checked {n} times");
        }
        // The first hour's starts: one every 30 s, so each ten minutes has 20.
        let starts = fake.starts.lock().unwrap().clone();
        let mut windows = [0usize; 6];
        for (_, at) in starts.iter().filter(|(_, at)| *at < t0 + H) {
            windows[((*at - t0).as_secs() / 600) as usize] += 1;
        }
        assert_eq!(windows, [20; 6]);
        assert!(starts.len() > 360);
        assert_eq!(
            fake.member_reads.load(Ordering::SeqCst),
            1,
            "no scan of the set per completed check"
        );
        // A new domain: the set is read once more and the newcomer checked at once.
        let mut more = names(120);
        more.push("new.org".into());
        fake.set_members(more);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(fake.checks_of("new.org"), 1);
        assert_eq!(fake.member_reads.load(Ordering::SeqCst), 2);
        // A removed domain is checked no more.
        fake.set_members(vec!["new.org".into()]);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = fake.checks_of("d0.org");
        tokio::time::sleep(2 * H).await;
        assert_eq!(fake.checks_of("d0.org"), before);
        assert_eq!(fake.checks_of("new.org"), 3);
        monitor.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_check_is_survived_and_scheduled_again() {
        let fake = Fake::new(vec!["boom.test".into(), "fine.test".into()]);
        let monitor = tokio::spawn(supervise(fake.clone(), None));
        // boom.test is due at 0, fine.test half an interval later.
        tokio::time::sleep(2 * H + Duration::from_secs(1900)).await;
        assert_eq!(
            fake.checks_of("boom.test"),
            3,
            "checked again each interval"
        );
        assert_eq!(fake.checks_of("fine.test"), 3, "others unaffected");
        assert_eq!(
            *fake.panicked.lock().unwrap(),
            vec!["boom.test"; 3],
            "each panic counted as our failure"
        );
        assert_eq!(
            fake.member_reads.load(Ordering::SeqCst),
            1,
            "the loop itself did not restart"
        );
        monitor.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_restarts_and_aborting_the_monitor_stops_it() {
        let fake = Fake::new(vec!["fine.test".into()]);
        fake.member_panics.store(2, Ordering::SeqCst);
        let monitor = tokio::spawn(supervise(fake.clone(), None));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            fake.member_reads.load(Ordering::SeqCst),
            3,
            "two panics, then a run"
        );
        assert_eq!(fake.checks_of("fine.test"), 1);
        monitor.abort();
        let _ = monitor.await;
        tokio::time::sleep(3 * H).await;
        assert_eq!(
            fake.checks_of("fine.test"),
            1,
            "the inner loop ended with it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lag_is_reported_for_each_started_check() {
        let fake = Fake::new(names(10));
        let lags = Arc::new(Mutex::new(Vec::new()));
        let seen = lags.clone();
        let observer: LagObserver = Arc::new(move |lag| seen.lock().unwrap().push(lag));
        let monitor = tokio::spawn(supervise(fake.clone(), Some(observer)));
        tokio::time::sleep(Duration::from_secs(3590)).await;
        assert_eq!(lags.lock().unwrap().len(), 10);
        monitor.abort();
    }

    fn engine() -> Arc<Engine> {
        let mut config = crate::config::Config::default();
        config.xmpp.admins = vec!["op@localhost".into()];
        config.dns.nameservers = vec!["127.0.0.1:9".into()];
        let store = crate::store::Store::temporary().unwrap();
        Arc::new(Engine::new(config, store, crate::clock::system()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_read_of_the_recipients_is_tried_again_then_given_up() {
        let broken = || StoreError::Corrupt {
            key: "subs".into(),
            detail: "unreadable".into(),
        };
        let mut calls = 0;
        let got = read_again("a.org", || {
            calls += 1;
            if calls < RECIPIENT_READS {
                Err(broken())
            } else {
                Ok(vec!["alice@x".to_string()])
            }
        })
        .await;
        assert_eq!(got.unwrap(), vec!["alice@x"], "the last try read them");
        assert_eq!(calls, RECIPIENT_READS);
        let mut calls = 0;
        let got: Result<(), _> = read_again("a.org", || {
            calls += 1;
            Err(broken())
        })
        .await;
        assert!(got.is_err(), "never an empty list in place of the readers");
        assert_eq!(calls, RECIPIENT_READS, "bounded");
    }

    #[tokio::test]
    async fn the_engine_counts_a_panicked_check_as_our_failure() {
        let engine = engine();
        for _ in 0..crate::engine::ADMIN_AFTER {
            engine.clone().panicked("a.org".into(), "boom".into()).await;
        }
        engine.store().flush().await.unwrap();
        let pending = engine.store().pending().unwrap();
        assert_eq!(pending.len(), 1, "the operator is told, no subscriber");
        assert!(pending[0].1.content.contains("a check panicked: boom"));
    }

    #[tokio::test]
    async fn the_engine_reads_the_age_from_the_checked_tree() {
        let engine = engine();
        let store = engine.store();
        store.subscribe("a.org", "alice@localhost").await.unwrap();
        assert_eq!(engine.age("a.org"), None, "never checked");
        let ten_min_ago = engine.clock().now() - Duration::from_secs(600);
        store.note_checked("a.org", ten_min_ago).await.unwrap();
        let age = engine.age("a.org").unwrap();
        assert!(age >= Duration::from_secs(600) && age < Duration::from_secs(660));
    }
}

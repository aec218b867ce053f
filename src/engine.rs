//! The running service's shared core: store, checker, limits, wake-ups.

use crate::store::StateStore as _;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::check::{Checker, Health};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::Domain;
use crate::error::{ErrorKind, HasKind};
use crate::model::{Delivery, Sink};
use crate::probe::transport::TorDirs;
use crate::probe::Spacing;
use crate::report::Report;
use crate::selfwatch::{Cause, Notice, Outcome, SelfWatch};
use crate::setup::{self, SetupError};
use crate::store::{Store, StoreError};
use crate::vocab::ServiceSet;

/// Commands one JID may send per minute.
pub const COMMANDS_PER_MINUTE: usize = 20;
/// IQ requests (disco, PubSub) one JID may send per minute.
pub const IQS_PER_MINUTE: usize = 60;
/// Hint replies (unknown command, too many commands) one JID gets per minute.
pub const HINTS_PER_MINUTE: usize = 3;
/// Chat commands other than `check` being answered at once, over all JIDs;
/// past it the sender is told to send it again (a `check` waits in the
/// bounded queue of [`crate::admission`] instead, holding none of these).
pub const COMMANDS_IN_FLIGHT: usize = 64;
/// IQ requests being answered at once, over all JIDs; past it a request is
/// answered `<resource-constraint/>` (type `wait`), never queued.
pub const IQS_IN_FLIGHT: usize = 64;
pub use crate::model::PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT;
/// Fresh checks one JID may ask for per hour.
pub const CHECKS_PER_HOUR: usize = 30;
/// Domains one JID may subscribe to.
pub const DOMAINS_PER_JID: usize = 50;
/// Domains monitored in all.
pub const MAX_DOMAINS: usize = 20_000;
/// Chat checks running at once.
pub const CHAT_CHECKS: usize = 4;
/// Failing checks (Tor or DNS on our side) before the operators are told.
pub const ADMIN_AFTER: u32 = 3;
/// The most JIDs the rate limiter remembers (older ones are forgotten).
const LIMITER_JIDS: usize = 10_000;
/// Results of chat checks of unmonitored domains kept for `status` (in
/// memory, newest last; a restart forgets them).
pub const RECENT_RESULTS: usize = 256;

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transport or the resolver could not be built.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The service is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A check panicked (a bug in CertWatch); the message is the panic's.
    #[error("a check panicked: {0}")]
    Panicked(String),
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Setup(e) => e.kind(),
            Error::Store(_) => ErrorKind::Store,
            Error::ShuttingDown => ErrorKind::Shutdown,
            Error::Panicked(_) => ErrorKind::Bug,
        }
    }
}

/// The longest random wait between a monitored check's lookups and probes.
pub const MAX_PROBE_DELAY: std::time::Duration = std::time::Duration::from_secs(300);

/// Shared by the component, the commands, the monitor and the deliverer.
pub struct Engine {
    store: Store,
    config: Config,
    tor_dirs: TorDirs,
    /// The checker and when its resolver (with hickory's caches) was built.
    checker: tokio::sync::Mutex<Option<(Checker, Instant)>>,
    /// The agents checks probe through (set once by the XMPP front).
    vantages: std::sync::OnceLock<std::sync::Arc<dyn crate::vantage::Vantages>>,
    /// How many times the resolver was rebuilt (its caches dropped).
    resolver_renewals: std::sync::atomic::AtomicU64,
    monitor_wake: Notify,
    outbox_wake: Notify,
    /// Wakes the sender of the in-memory operator messages, which never
    /// waits on the store (the deliverer may be stuck in it).
    urgent_wake: Notify,
    chat_checks: Semaphore,
    /// Chat checks waiting for a slot or running, bounded per JID and in all.
    checks_queued: crate::admission::CheckQueue,
    limiter: Mutex<Limiter>,
    /// One subscription (limits checked, then written) at a time.
    subscribing: tokio::sync::Mutex<()>,
    spacing: std::sync::Arc<Spacing>,
    /// Shared by every checker the engine builds, so a rebuilt one gets no fresh burst.
    circuits: std::sync::Arc<crate::probe::CircuitBudget>,
    clock: SharedClock,
    /// Chat checks of domains nobody monitors, for `status`.
    recent: Mutex<VecDeque<Report>>,
    /// Domains that just started being monitored: checked at once.
    check_soon: Mutex<Vec<String>>,
    /// The operator self-watch, per cause; every update is made under
    /// this lock (and stored before it is released), so concurrent checks
    /// neither lose a failure nor tell the operators twice.
    self_watch: Mutex<SelfWatch>,
    /// Operator messages that could not be queued in the store (it is what
    /// failed): sent from memory, lost on a restart.
    urgent: Mutex<VecDeque<Delivery>>,
    /// Numbers the in-memory operator notices (their delivery ids).
    urgent_seq: std::sync::atomic::AtomicU64,
    /// Counters every finished check bumps (served by the web front).
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The probe profiles, built (and checked) at start-up.
    profiles: crate::probe::Profiles,
}

/// Whether the transport has started (for the operators).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportNow {
    /// Not yet: it starts at the first check.
    NotStarted,
    /// Starting now (over Tor: bootstrapping).
    Starting,
    /// Started; over Tor, what arti says of itself.
    Running(Option<crate::probe::transport::TorState>),
}

/// Operator messages kept in memory when the store cannot take them.
pub const URGENT_QUEUE: usize = 64;
/// Where the self-watch is stored.
const SELF_WATCH_KEY: &str = "self_watch";

/// How long one resolver (and hickory's response and DNSSEC validation
/// caches inside it) serves checks. Hickory's validation cache is keyed by
/// record contents and only evicts when full (a million entries), so
/// re-signed zones would otherwise grow it for weeks; a fresh resolver each
/// hour bounds it by what one hour of checks adds.
pub const RESOLVER_MAX_AGE: Duration = Duration::from_secs(3600);

/// The least time between two probes of one address:port.
pub const PROBE_GAP: Duration = Duration::from_secs(2);

impl Engine {
    /// Builds the engine; the transport starts lazily at the first check.
    pub fn new(config: Config, store: Store, clock: SharedClock) -> Result<Engine, SetupError> {
        // A bad DNS setting fails here, at start-up; the checker builds its
        // own resolver on first use so that no first-hour cache outlives a
        // renewal.
        setup::resolver(&config, &clock)?;
        // So is a probe profile that cannot be used here.
        let profiles = setup::profiles(&config)?;
        let base = PathBuf::from(format!("{}-arti", config.store.path));
        let circuits = std::sync::Arc::new(setup::circuit_budget(&config));
        let self_watch = match store.meta::<SelfWatch>(SELF_WATCH_KEY) {
            Ok(w) => w.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the stored self-watch; starting afresh");
                SelfWatch::default()
            }
        };
        Ok(Engine {
            store,
            tor_dirs: TorDirs {
                state: base.join("state"),
                cache: base.join("cache"),
            },
            config,
            checker: tokio::sync::Mutex::new(None),
            vantages: std::sync::OnceLock::new(),
            resolver_renewals: Default::default(),
            monitor_wake: Notify::new(),
            outbox_wake: Notify::new(),
            urgent_wake: Notify::new(),
            chat_checks: Semaphore::new(CHAT_CHECKS),
            checks_queued: Default::default(),
            limiter: Mutex::new(Limiter::default()),
            subscribing: tokio::sync::Mutex::new(()),
            spacing: std::sync::Arc::new(Spacing::new(PROBE_GAP, Duration::from_secs(600))),
            circuits,
            clock,
            recent: Mutex::new(VecDeque::new()),
            check_soon: Mutex::new(Vec::new()),
            self_watch: Mutex::new(self_watch),
            urgent: Mutex::new(VecDeque::new()),
            urgent_seq: Default::default(),
            metrics: Default::default(),
            profiles,
        })
    }

    /// Changes the least time between two probes of one address:port (before the first check).
    pub fn set_probe_gap(&mut self, gap: Duration) {
        self.spacing = std::sync::Arc::new(Spacing::new(gap, Duration::from_secs(600)));
    }

    /// Fresh circuits asked for so far (one per probe over Tor or SOCKS5).
    pub fn circuits_taken(&self) -> u64 {
        self.circuits.taken()
    }

    /// The service's counters and gauges.
    pub fn metrics(&self) -> &std::sync::Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The wall clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The component's JID.
    pub fn component(&self) -> &str {
        &self.config.xmpp.component
    }

    /// The checker, starting the transport on first use (and again after a failure).
    async fn checker(&self) -> Result<Checker, Error> {
        let mut slot = self.checker.lock().await;
        if let Some((checker, since)) = slot.as_mut() {
            if since.elapsed() >= RESOLVER_MAX_AGE {
                match setup::resolver(&self.config, &self.clock) {
                    Ok(fresh) => {
                        *checker = checker.with_resolver(fresh);
                        *since = Instant::now();
                        self.resolver_renewals
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!("DNS resolver renewed (caches dropped)");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew the DNS resolver"),
                }
            }
            return Ok(self.with_vantages(checker.clone()));
        }
        let connector = setup::connector(&self.config, Some(&self.tor_dirs)).await?;
        let prober = setup::prober(&self.config, connector, self.profiles.clone())
            .with_spacing(self.spacing.clone())
            .with_circuit_budget(self.circuits.clone());
        let resolver = setup::resolver(&self.config, &self.clock)?;
        let mut checker = Checker::new(resolver, prober, self.clock.clone());
        checker.allow_private = self.config.probe.allow_private;
        checker.local = self.config.probe.local;
        *slot = Some((checker.clone(), Instant::now()));
        Ok(self.with_vantages(checker))
    }

    /// The checker with the agents, once the XMPP front has them.
    fn with_vantages(&self, mut checker: Checker) -> Checker {
        checker.vantages = self.vantages.get().cloned();
        checker
    }

    /// For the operators' `health`: each agent's state, last contact and success rate.
    pub fn vantage_lines(&self) -> Vec<(String, String, String, String)> {
        self.vantages
            .get()
            .map(|v| v.describe())
            .unwrap_or_default()
    }

    /// The agents to probe through (`[[vantage]]`); set once.
    pub fn set_vantages(&self, vantages: std::sync::Arc<dyn crate::vantage::Vantages>) {
        let _ = self.vantages.set(vantages);
    }

    /// A full check, as the monitor runs it.
    pub async fn run_check(&self, domain: &Domain) -> Result<(Report, Health), Error> {
        let checker = self.checker().await?;
        let started = Instant::now();
        let done = checker.check(domain, ServiceSet::All).await;
        self.metrics
            .check_done(&done.0, started.elapsed(), &done.1.probe_durations);
        Ok(done)
    }

    /// A full check holding `gate`'s permit only while it works (the monitor's).
    pub async fn run_check_gated(
        &self,
        domain: &Domain,
        gate: std::sync::Arc<crate::probe::Gate>,
    ) -> Result<(Report, Health), Error> {
        let mut checker = self.checker().await?;
        // Lookups and probes apart by a random wait within the jitter
        // (at most MAX_PROBE_DELAY), so a domain's DNS queries do not
        // announce our probes to whoever watches its DNS.
        checker.probe_delay = self.config.monitor.jitter.min(MAX_PROBE_DELAY);
        let started = Instant::now();
        let done = checker.check_gated(domain, ServiceSet::All, gate).await;
        self.metrics
            .check_done(&done.0, started.elapsed(), &done.1.probe_durations);
        Ok(done)
    }

    /// A check asked for by chat: bounded in number, stored if the domain is monitored.
    pub async fn check_now(&self, domain: &Domain) -> Result<Report, Error> {
        self.check_now_services(domain, ServiceSet::All).await
    }

    /// [`Engine::check_now`] of some services only; a check of fewer than
    /// all is the reply only, never the domain's last result.
    pub async fn check_now_services(
        &self,
        domain: &Domain,
        services: ServiceSet,
    ) -> Result<Report, Error> {
        let _permit = self
            .chat_checks
            .acquire()
            .await
            .map_err(|_| Error::ShuttingDown)?;
        // Asked by a person, perhaps right after a fix: the domain's own
        // records afresh, not from the monitor's cache.
        let checker = self.checker().await?.uncached().map_err(|e| {
            Error::Setup(SetupError::Config(crate::config::ConfigError::Invalid(
                e.to_string(),
            )))
        })?;
        let started = Instant::now();
        let (report, health) = checker.check(domain, services).await;
        self.metrics
            .check_done(&report, started.elapsed(), &health.probe_durations);
        self.note_health(&health, None).await;
        // Our own Tor or DNS failing says nothing about the domain: such a
        // report is the reply, never the domain's last result (as in the monitor).
        let ours = health.says_nothing(report.verdict);
        if !ours && services == ServiceSet::All {
            let kept = self.keep_result(&report.bounded_for_store()).await;
            if let Err(Error::Store(e)) = &kept {
                self.note_store(Err(e));
            }
            kept?;
        }
        Ok(report)
    }

    /// Keeps a chat check's report for `status`: as a monitored domain's
    /// last report (its alert state is the monitor's alone and stays as
    /// it is), else among the [`RECENT_RESULTS`] recent ones.
    pub async fn keep_result(&self, report: &Report) -> Result<(), Error> {
        if self.store.domain_state(&report.domain)?.is_some() {
            self.store.put_last_report(&report.domain, report).await?;
            return Ok(());
        }
        let mut recent = self.recent.lock().expect("recent lock");
        recent.retain(|r| r.domain != report.domain);
        recent.push_back(report.clone());
        while recent.len() > RECENT_RESULTS {
            recent.pop_front();
        }
        Ok(())
    }

    /// The last result for `domain`, whoever asked for it: the newer of the
    /// stored last report and a recent chat check. `list` and `status` both
    /// read this, so they always agree.
    pub fn last_report(&self, domain: &str) -> Result<Option<Report>, StoreError> {
        let stored = self.store.domain_state(domain)?.and_then(|s| s.last_report);
        let recent = self
            .recent
            .lock()
            .expect("recent lock")
            .iter()
            .rev()
            .find(|r| r.domain == domain)
            .cloned();
        Ok(match (stored, recent) {
            (Some(a), Some(b)) => Some(if b.checked_at > a.checked_at { b } else { a }),
            (a, b) => a.or(b),
        })
    }

    /// A domain whose last report has an endpoint on `host` (its SRV records
    /// point there): what a user who typed the host likely meant. The scan
    /// of the monitored domains runs on a blocking thread, never on the
    /// runtime's workers (which read the stanzas).
    pub async fn domain_served_by(&self, host: &str) -> Result<Option<String>, StoreError> {
        // The recent chat results, as (domain, when, hosts): what the scan
        // needs of them, without cloning whole reports.
        let recent: Vec<(String, String, Vec<String>)> = self
            .recent
            .lock()
            .expect("recent lock")
            .iter()
            .map(|r| {
                let hosts = r.endpoints.iter().map(|e| e.host.clone()).collect();
                (r.domain.clone(), r.checked_at.clone(), hosts)
            })
            .collect();
        let store = self.store.clone();
        let host = host.to_owned();
        tokio::task::spawn_blocking(move || served_by(&store, &recent, &host))
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "the scan for a served host failed");
                Ok(None)
            })
    }

    /// Asks the monitor to check `domain` at once (it just started being
    /// monitored, e.g. subscribed to again after everyone left it).
    pub fn check_soon(&self, domain: &str) {
        let mut soon = self.check_soon.lock().expect("check_soon lock");
        if !soon.iter().any(|d| d == domain) && soon.len() < MAX_DOMAINS {
            soon.push(domain.to_owned());
        }
        drop(soon);
        self.wake_monitor();
    }

    /// The domains to check at once, emptying the list.
    pub fn take_check_soon(&self) -> Vec<String> {
        std::mem::take(&mut *self.check_soon.lock().expect("check_soon lock"))
    }

    /// Records what a check showed about our own parts (DNS resolver,
    /// transport, code), each counted on its own, and tells the operators
    /// once per part that keeps failing and once when it works again.
    pub async fn note_health(&self, health: &Health, setup_error: Option<&Error>) {
        self.note_causes(&observations(health, setup_error));
    }

    /// Records whether the store could take a check's result.
    pub fn note_store(&self, result: Result<(), &StoreError>) {
        let outcome = match result {
            Ok(()) => Outcome::Worked,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        self.note_causes(&[(Cause::Store, outcome)]);
    }

    /// Whether the transport has started, and what our Tor client says of
    /// itself (for the operators' `health`).
    pub fn transport_now(&self) -> TransportNow {
        // The lock is held while the transport starts (Tor bootstraps).
        let Ok(slot) = self.checker.try_lock() else {
            return TransportNow::Starting;
        };
        match slot.as_ref() {
            None => TransportNow::NotStarted,
            Some((checker, _)) => TransportNow::Running(checker.tor_state()),
        }
    }

    /// The causes failing now (for the operators and the tests).
    pub fn self_watch(&self) -> SelfWatch {
        self.self_watch.lock().expect("self-watch lock").clone()
    }

    fn note_causes(&self, seen: &[(Cause, Outcome)]) {
        let now = self.clock.now_rfc3339();
        let mut watch = self.self_watch.lock().expect("self-watch lock");
        let before = watch.clone();
        let notices: Vec<Notice> = seen
            .iter()
            .filter_map(|(cause, outcome)| watch.note(*cause, outcome.clone(), &now, ADMIN_AFTER))
            .collect();
        for (cause, s) in watch.failing() {
            if seen
                .iter()
                .any(|(c, o)| *c == cause && matches!(o, Outcome::Failed(_)))
            {
                tracing::warn!(
                    cause = cause.key(),
                    failures = s.failures,
                    error = ?s.last_error,
                    "check failed on our side"
                );
            }
        }
        // Queued while the lock is held, so a recovery is never queued
        // before the alert it ends.
        for notice in &notices {
            self.tell_operators(notice, &now);
        }
        if *watch != before {
            // Queued under the lock, so the stored order is the order of
            // the updates.
            if let Err(e) = self.store.put_meta_now(SELF_WATCH_KEY, &*watch) {
                tracing::warn!(error = %e, "cannot store the self-watch");
            }
        }
    }

    /// Queues `notice` for every operator: in the store, or in memory when
    /// the store is what fails (or cannot take it).
    fn tell_operators(&self, notice: &Notice, now: &str) {
        let (cause, text) = self.notice_text(notice);
        tracing::warn!(cause = cause.key(), "{text}");
        let kind = if matches!(notice, Notice::Failing { .. }) {
            "alert"
        } else {
            "recovered"
        };
        let deliveries = self.operator_deliveries(
            &format!("operator-{}-{kind}-{now}", cause.key()),
            &text,
            now,
        );
        if deliveries.is_empty() {
            return;
        }
        let queued = if cause == Cause::Store {
            Err("the store is what fails".to_owned())
        } else {
            self.store
                .enqueue_now(&deliveries)
                .map_err(|e| e.to_string())
        };
        if let Err(why) = queued {
            tracing::warn!(error = %why, "operator message kept in memory");
            self.push_urgent(deliveries);
        }
        self.wake_outbox();
    }

    /// One chat message of `text` to every operator (`xmpp.admins`), all
    /// under `alert_id`, dated `now`.
    pub fn operator_deliveries(&self, alert_id: &str, text: &str, now: &str) -> Vec<Delivery> {
        self.config
            .xmpp
            .admins
            .iter()
            .map(|admin| Delivery {
                alert_id: alert_id.to_owned(),
                sink: Sink::Chat(admin.clone()),
                title: text.to_owned(),
                content: text.to_owned(),
                updated: now.to_owned(),
                attempts: 0,
            })
            .collect()
    }

    fn push_urgent(&self, deliveries: Vec<Delivery>) {
        let mut urgent = self.urgent.lock().unwrap_or_else(|e| e.into_inner());
        for d in deliveries {
            if urgent.len() >= URGENT_QUEUE {
                urgent.pop_front();
            }
            urgent.push_back(d);
        }
    }

    /// Queues `text` for every operator in memory only, past the store (for
    /// the watchdog, when the store may be what is stuck); sent by the front
    /// if the runtime still runs.
    pub fn tell_operators_urgently(&self, text: &str) {
        let now = self.clock.now_rfc3339();
        // Unique even for two notices in the same second.
        let seq = self
            .urgent_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("operator-watchdog-{now}-{seq}");
        let deliveries = self.operator_deliveries(&id, text, &now);
        self.push_urgent(deliveries);
        self.wake_outbox();
    }

    /// Operator messages waiting in memory (see [`Engine::note_store`]),
    /// taken from the queue; [`Engine::keep_urgent`] puts back what could
    /// not be sent.
    pub fn take_urgent(&self) -> Vec<Delivery> {
        self.urgent.lock().expect("urgent lock").drain(..).collect()
    }

    /// Puts operator messages back at the front of the in-memory queue.
    pub fn keep_urgent(&self, unsent: Vec<Delivery>) {
        let mut urgent = self.urgent.lock().expect("urgent lock");
        for d in unsent.into_iter().rev() {
            urgent.push_front(d);
        }
        urgent.truncate(URGENT_QUEUE);
    }

    /// The cause and the operators' message for `notice`.
    fn notice_text(&self, notice: &Notice) -> (Cause, String) {
        match notice {
            Notice::Failing {
                cause,
                since,
                failures,
                last_error,
            } => {
                let (what, effect, tail) = match cause {
                    Cause::Dns | Cause::Transport => (
                        self.part_words(*cause),
                        "so domains cannot be checked",
                        "Subscribers are not alerted for this, and no domain is called unreachable for it; you are told again when it works.",
                    ),
                    Cause::Store => (
                        self.part_words(*cause),
                        "so check results and alerts cannot be recorded",
                        "Checks go on; a state change seen meanwhile is alerted at the first check after the store works again. This message is kept in memory only; you are told again when it works.",
                    ),
                    Cause::Internal => (
                        self.part_words(*cause),
                        "so those domains go unchecked",
                        "This is a bug in CertWatch: please report it with the log. You are told again when checks complete.",
                    ),
                };
                (
                    *cause,
                    format!(
                        "CertWatch operator alert: {what} has been failing since {since} ({failures} checks in a row), {effect}. Last error: {last_error}. {tail}"
                    ),
                )
            }
            Notice::Recovered { cause, since } => (
                *cause,
                format!(
                    "CertWatch operator notice: {} is back, checks work again (failing since {since}).",
                    self.part_words(*cause)
                ),
            ),
        }
    }

    /// What the operators' messages call one of our parts.
    fn part_words(&self, cause: Cause) -> String {
        match cause {
            Cause::Dns => format!(
                "our DNS resolver ({})",
                self.config
                    .nameservers()
                    .ok()
                    .filter(|n| !n.is_empty())
                    .map(|n| n
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_else(|| "the system's".into())
            ),
            Cause::Transport if self.config.vantage.is_empty() => {
                format!("our {}", self.transport_words())
            }
            // With agents, the failure may be theirs as much as ours.
            Cause::Transport if !self.config.probe.local => {
                "probing through our vantage agents".into()
            }
            Cause::Transport => format!(
                "probing (our {} and our vantage agents)",
                self.transport_words()
            ),
            Cause::Store => format!("our store ({})", self.config.store.path),
            Cause::Internal => "checking (a check panicked)".into(),
        }
    }

    /// What the operator messages call our transport.
    fn transport_words(&self) -> &'static str {
        crate::report::transport_words(&self.config.probe.transport.to_string())
    }

    /// Whether `jid` may subscribe to one more domain; Some(reason) when not.
    /// Chat and PubSub subscriptions count alike (PubSub ones of any of the
    /// bare JID's resources).
    pub fn may_subscribe(&self, jid: &str, domain: &str) -> Result<Option<String>, StoreError> {
        let mut mine = self.store.subscriptions_of(jid)?;
        mine.extend(
            self.store
                .pubsub_subscriptions_of(jid, usize::MAX)?
                .into_iter()
                .map(|(node, _)| node),
        );
        mine.sort();
        mine.dedup();
        if mine.iter().any(|d| d == domain) {
            return Ok(None);
        }
        if mine.len() >= DOMAINS_PER_JID {
            return Ok(Some(format!(
                "You already follow {DOMAINS_PER_JID} domains, the most one account may; unsubscribe from one first."
            )));
        }
        let monitored = self.store.monitored()?;
        if monitored.len() >= MAX_DOMAINS && !monitored.iter().any(|d| d == domain) {
            return Ok(Some(
                "This CertWatch monitors as many domains as it can; try again later.".into(),
            ));
        }
        Ok(None)
    }

    /// Subscribes `jid` (bare) to `domain` by chat if its limits allow:
    /// Ok(Ok(fresh)), or Ok(Err(refusal)). The limits and the write are one
    /// step, so parallel requests cannot pass a limit together.
    pub async fn subscribe_chat(
        &self,
        jid: &str,
        domain: &str,
    ) -> Result<Result<bool, String>, StoreError> {
        let (fresh, durable) = {
            let _one = self.subscribing.lock().await;
            if let Some(refusal) = self.may_subscribe(jid, domain)? {
                return Ok(Err(refusal));
            }
            self.store.subscribe_staged(domain, jid).await?
        };
        // Flushed outside the lock: subscribes at once share flushes.
        durable.flushed().await?;
        Ok(Ok(fresh))
    }

    /// Subscribes `jid` (full or bare; its bare JID's limits apply) to the
    /// PubSub node of `domain`, like [`Engine::subscribe_chat`].
    pub async fn subscribe_pubsub(
        &self,
        jid: &str,
        domain: &str,
    ) -> Result<Result<bool, String>, StoreError> {
        let (fresh, durable) = {
            let _one = self.subscribing.lock().await;
            let bare = jid.split('/').next().unwrap_or(jid);
            // Each subscription costs one event per alert: every (node, JID)
            // pair counts, each full JID of the account on its own.
            let mine = self
                .store
                .pubsub_subscriptions_of(bare, PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT + 1)?;
            let again = mine.iter().any(|(n, j)| n == domain && j == jid);
            if !again && mine.len() >= PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT {
                return Ok(Err(format!(
                    "your account already has {PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT} PubSub subscriptions (each node and each full JID counts), the most one account may; unsubscribe one first"
                )));
            }
            if let Some(refusal) = self.may_subscribe(bare, domain)? {
                return Ok(Err(refusal));
            }
            self.store.pubsub_subscribe_staged(domain, jid).await?
        };
        durable.flushed().await?;
        Ok(Ok(fresh))
    }

    /// Counts an IQ request from `jid` (bare); false when over
    /// [`IQS_PER_MINUTE`].
    pub fn allow_iq(&self, jid: &str) -> bool {
        let mut l = self.limiter.lock().expect("limiter lock");
        l.iqs
            .admit(jid, Instant::now(), Duration::from_secs(60), IQS_PER_MINUTE)
    }

    /// Whether `jid` may get one more "unknown command" or "too many
    /// commands" reply ([`HINTS_PER_MINUTE`]); then silence, so two bots
    /// answering each other cannot start a storm.
    pub fn allow_hint(&self, jid: &str) -> bool {
        let mut l = self.limiter.lock().expect("limiter lock");
        l.hints.admit(
            jid,
            Instant::now(),
            Duration::from_secs(60),
            HINTS_PER_MINUTE,
        )
    }

    /// Counts a command from `jid`; Some(reason) when over its rate.
    pub fn allow_command(&self, jid: &str, is_check: bool) -> Option<String> {
        let mut l = self.limiter.lock().expect("limiter lock");
        l.allow(jid, is_check, Instant::now())
    }

    /// Counts a fresh check asked for by `jid` ([`CHECKS_PER_HOUR`]);
    /// Some(reason) when over it. The command itself is counted apart.
    pub fn allow_check(&self, jid: &str) -> Option<String> {
        let mut l = self.limiter.lock().expect("limiter lock");
        l.allow_check(jid, Instant::now())
    }

    /// Chat checks waiting or running now.
    pub fn checks_queued(&self) -> usize {
        self.checks_queued.len()
    }

    /// A place in the chat checks' queue for `jid` (see [`crate::admission`]),
    /// held until the check's reply is written.
    pub fn queue_check(
        &self,
        jid: &str,
    ) -> Result<crate::admission::Ticket, crate::admission::QueueFull> {
        self.checks_queued.enter(jid)
    }

    /// Makes the monitor look for new domains now.
    pub fn wake_monitor(&self) {
        self.monitor_wake.notify_one();
    }

    /// Waits for a monitor wake-up.
    pub async fn monitor_woken(&self) {
        self.monitor_wake.notified().await
    }

    /// Makes the deliverer look at the outbox now.
    pub fn wake_outbox(&self) {
        self.outbox_wake.notify_one();
        self.urgent_wake.notify_one();
    }

    /// Waits for an outbox wake-up.
    /// Waits until operator messages may be waiting in memory.
    pub async fn urgent_woken(&self) {
        self.urgent_wake.notified().await
    }

    /// Waits until deliveries may be waiting.
    pub async fn outbox_woken(&self) {
        self.outbox_wake.notified().await
    }
}

/// The first monitored domain (other than `host`) whose last result, the
/// newer of the stored one and a recent chat check's, has an endpoint on
/// `host`. Scans the store: call it on a blocking thread.
fn served_by(
    store: &Store,
    recent: &[(String, String, Vec<String>)],
    host: &str,
) -> Result<Option<String>, StoreError> {
    for d in store.monitored()?.into_iter().take(MAX_DOMAINS) {
        if d == host {
            continue;
        }
        let stored = store.domain_state(&d)?.and_then(|s| s.last_report);
        let newer_recent = recent
            .iter()
            .rev()
            .find(|(rd, _, _)| *rd == d)
            .filter(|(_, at, _)| stored.as_ref().is_none_or(|r| *at > r.checked_at));
        let served = match newer_recent {
            Some((_, _, hosts)) => hosts.iter().any(|h| h == host),
            None => stored.is_some_and(|r| r.endpoints.iter().any(|e| e.host == host)),
        };
        if served {
            return Ok(Some(d));
        }
    }
    Ok(None)
}

/// What one check (or its failure to start) showed about each of our parts.
fn observations(health: &Health, setup_error: Option<&Error>) -> Vec<(Cause, Outcome)> {
    match setup_error {
        Some(Error::Setup(SetupError::Transport(e))) => {
            vec![(Cause::Transport, Outcome::Failed(e.to_string()))]
        }
        // The resolver is the part built from the config at check time.
        Some(Error::Setup(SetupError::Config(e))) => {
            vec![(Cause::Dns, Outcome::Failed(e.to_string()))]
        }
        Some(Error::Store(e)) => vec![(Cause::Store, Outcome::Failed(e.to_string()))],
        Some(Error::Panicked(m)) => vec![(
            Cause::Internal,
            Outcome::Failed(format!("a check panicked: {m}")),
        )],
        Some(Error::ShuttingDown) => vec![],
        None => {
            // The check ran to its end: no panic, and our resolver answered
            // unless its canary said otherwise.
            let mut seen = vec![(Cause::Internal, Outcome::Worked)];
            seen.push((
                Cause::Dns,
                if health.dns_failures > 0 {
                    Outcome::Failed(format!(
                        "{} DNS lookups got no answer, and neither did the root zone",
                        health.dns_failures
                    ))
                } else {
                    Outcome::Worked
                },
            ));
            // Without probes the check says nothing about the transport.
            if health.transport_failures > 0 {
                seen.push((
                    Cause::Transport,
                    Outcome::Failed(format!(
                        "{} of {} probes could not be carried by our transport ({})",
                        health.transport_failures,
                        health.probes,
                        health.transport_error.as_deref().unwrap_or("no detail")
                    )),
                ));
            } else if health.probes > 0 {
                seen.push((Cause::Transport, Outcome::Worked));
            }
            seen
        }
    }
}

/// Sliding-window rate limits per JID.
#[derive(Default)]
struct Limiter {
    commands: Windows,
    checks: Windows,
    iqs: Windows,
    hints: Windows,
}

impl Limiter {
    fn allow(&mut self, jid: &str, is_check: bool, now: Instant) -> Option<String> {
        if !self
            .commands
            .admit(jid, now, Duration::from_secs(60), COMMANDS_PER_MINUTE)
        {
            return Some("Too many commands; wait a minute.".into());
        }
        if is_check {
            return self.allow_check(jid, now);
        }
        None
    }

    fn allow_check(&mut self, jid: &str, now: Instant) -> Option<String> {
        if !self
            .checks
            .admit(jid, now, Duration::from_secs(3600), CHECKS_PER_HOUR)
        {
            return Some(format!(
                "You asked for {CHECKS_PER_HOUR} checks this hour, the most allowed; \"status DOMAIN\" shows stored results."
            ));
        }
        None
    }
}

/// One sliding window per JID. Past [`LIMITER_JIDS`] JIDs, the ones heard
/// from longest ago are forgotten (an eighth at a time), never everyone, so
/// rotating through fresh JIDs cannot reset the limits of an active one.
#[derive(Default)]
struct Windows {
    /// Per JID: the admitted times in the window, and when it was last heard
    /// from (refused or not).
    map: HashMap<String, (VecDeque<Instant>, Instant)>,
}

impl Windows {
    fn admit(&mut self, jid: &str, now: Instant, span: Duration, max: usize) -> bool {
        if self.map.len() >= LIMITER_JIDS && !self.map.contains_key(jid) {
            self.evict_oldest();
        }
        let (q, heard) = self
            .map
            .entry(jid.to_owned())
            .or_insert_with(|| (VecDeque::new(), now));
        *heard = now;
        while q.front().is_some_and(|t| now.duration_since(*t) >= span) {
            q.pop_front();
        }
        if q.len() >= max {
            return false;
        }
        q.push_back(now);
        true
    }

    fn evict_oldest(&mut self) {
        let mut last: Vec<(Instant, String)> = self
            .map
            .iter()
            .map(|(j, (_, heard))| (*heard, j.clone()))
            .collect();
        last.sort();
        for (_, j) in last.into_iter().take(LIMITER_JIDS / 8 + 1) {
            self.map.remove(&j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outbox once every write queued so far has been applied.
    async fn queued(engine: &Engine) -> Vec<(u64, Delivery)> {
        engine.store().flush().await.unwrap();
        engine.store().pending().unwrap()
    }
    use crate::probe::transport::TransportSetupError;

    fn engine_with_admins(admins: &[&str]) -> Engine {
        let mut config = Config::default();
        config.xmpp.admins = admins.iter().map(|s| s.to_string()).collect();
        config.dns.nameservers = vec!["127.0.0.1:9".into()];
        Engine::new(config, Store::temporary().unwrap(), crate::clock::system()).unwrap()
    }

    #[test]
    fn with_agents_a_probing_failure_is_not_called_our_tor_clients() {
        let mut engine = engine_with_admins(&["op@localhost"]);
        assert_eq!(engine.part_words(Cause::Transport), "our Tor client");
        engine.config.vantage = vec![crate::config::VantageConfig {
            name: "a".into(),
            jid: "a@localhost".into(),
            weight: 1,
        }];
        let both = engine.part_words(Cause::Transport);
        assert!(
            both.contains("our Tor client and our vantage agents"),
            "{both}"
        );
        engine.config.probe.local = false;
        let agents = engine.part_words(Cause::Transport);
        assert_eq!(agents, "probing through our vantage agents");
    }

    #[tokio::test(start_paused = true)]
    async fn the_resolver_and_its_caches_are_renewed_every_hour() {
        let mut engine = engine_with_admins(&[]);
        engine.config.probe.transport = crate::config::Transport::Direct;
        let renewals = |e: &Engine| {
            e.resolver_renewals
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        engine.checker().await.unwrap();
        tokio::time::advance(RESOLVER_MAX_AGE - Duration::from_secs(1)).await;
        engine.checker().await.unwrap();
        assert_eq!(renewals(&engine), 0, "not before an hour");
        tokio::time::advance(Duration::from_secs(1)).await;
        engine.checker().await.unwrap();
        engine.checker().await.unwrap();
        assert_eq!(renewals(&engine), 1, "once when the hour is up");
        tokio::time::advance(RESOLVER_MAX_AGE).await;
        engine.checker().await.unwrap();
        assert_eq!(renewals(&engine), 2, "and every hour after");
    }

    #[tokio::test]
    async fn operators_are_told_once_when_tor_keeps_failing_and_once_on_recovery() {
        let engine = engine_with_admins(&["op1@localhost", "op2@localhost"]);
        let failing = Health {
            dns_failures: 0,
            transport_failures: 4,
            probes: 4,
            transport_error: Some("our Tor client failed: tor operation timed out".into()),
            probe_durations: Vec::new(),
        };
        for _ in 0..(ADMIN_AFTER - 1) {
            engine.note_health(&failing, None).await;
        }
        assert!(
            queued(&engine).await.is_empty(),
            "not after {} failures",
            ADMIN_AFTER - 1
        );
        engine.note_health(&failing, None).await;
        let pending = queued(&engine).await;
        assert_eq!(pending.len(), 2, "one message per operator");
        assert!(pending[0].1.content.contains("failing"));
        for _ in 0..5 {
            engine.note_health(&failing, None).await;
        }
        assert_eq!(queued(&engine).await.len(), 2, "no repeats");
        // A check that went through the transport again.
        let fine = Health {
            probes: 4,
            ..Health::default()
        };
        engine.note_health(&fine, None).await;
        let pending = queued(&engine).await;
        assert_eq!(pending.len(), 4);
        assert!(pending[3].1.content.contains("work again"));
        engine.note_health(&fine, None).await;
        assert_eq!(queued(&engine).await.len(), 4);
    }

    #[tokio::test]
    async fn one_probe_our_tor_failed_counts_and_remote_failures_do_not() {
        let engine = engine_with_admins(&["op@localhost"]);
        // Every probe reached a server, which refused: nothing wrong with us.
        let remote = Health {
            probes: 4,
            ..Health::default()
        };
        for _ in 0..10 {
            engine.note_health(&remote, None).await;
        }
        assert!(queued(&engine).await.is_empty());
        // One probe of four ran into our broken Tor, the others got through
        // (or were refused by servers): the check could not be completed.
        let partial = Health {
            dns_failures: 0,
            transport_failures: 1,
            probes: 4,
            transport_error: Some("our Tor client failed: circuit collapsed".into()),
            probe_durations: Vec::new(),
        };
        for _ in 0..ADMIN_AFTER {
            engine.note_health(&partial, None).await;
        }
        let pending = queued(&engine).await;
        assert_eq!(pending.len(), 1, "one operator alert");
        assert!(
            pending[0].1.content.contains("circuit collapsed"),
            "{}",
            pending[0].1.content
        );
        engine.note_health(&remote, None).await;
        let pending = queued(&engine).await;
        assert_eq!(pending.len(), 2);
        assert!(pending[1].1.content.contains("work again"));
        // Tor could not even start: that counts.
        for _ in 0..ADMIN_AFTER {
            engine
                .note_health(
                    &Health::default(),
                    Some(&Error::Setup(SetupError::Transport(
                        TransportSetupError::Bootstrap("not done after 3m".into()),
                    ))),
                )
                .await;
        }
        let pending = queued(&engine).await;
        assert_eq!(pending.len(), 3);
        assert!(pending[2].1.content.contains("cannot bootstrap Tor"));
    }

    fn tor_failing() -> Health {
        Health {
            dns_failures: 0,
            transport_failures: 2,
            probes: 2,
            transport_error: Some("our Tor client failed: no circuit".into()),
            probe_durations: Vec::new(),
        }
    }

    fn contents(engine: &Engine) -> Vec<String> {
        // The owner is a thread of its own: waiting here blocks only the test.
        futures::executor::block_on(engine.store().flush()).unwrap();
        let pending = engine.store().pending().unwrap();
        pending.into_iter().map(|(_, d)| d.content).collect()
    }

    #[tokio::test]
    async fn dns_and_tor_are_counted_apart() {
        let engine = engine_with_admins(&["op@localhost"]);
        // Our resolver fails (no probes could follow) while other checks'
        // probes go through Tor: Tor working does not end the DNS count.
        let dns_failing = Health {
            dns_failures: 4,
            ..Health::default()
        };
        let tor_fine = Health {
            probes: 3,
            ..Health::default()
        };
        for _ in 0..ADMIN_AFTER {
            engine.note_health(&dns_failing, None).await;
            engine.note_health(&tor_fine, None).await;
        }
        // tor_fine did DNS lookups that were answered: DNS counted as working.
        assert!(contents(&engine).is_empty(), "{:?}", contents(&engine));
        for _ in 0..ADMIN_AFTER {
            engine.note_health(&dns_failing, None).await;
        }
        let told = contents(&engine);
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(
            told[0].contains("our DNS resolver (127.0.0.1:9)"),
            "{}",
            told[0]
        );
        assert!(!told[0].contains("Tor"), "{}", told[0]);
        // Now Tor fails as well (in checks whose DNS also fails): its own
        // alert, DNS still counted.
        let both_failing = Health {
            dns_failures: 1,
            ..tor_failing()
        };
        for _ in 0..ADMIN_AFTER {
            engine.note_health(&both_failing, None).await;
        }
        let told = contents(&engine);
        assert_eq!(told.len(), 2, "{told:?}");
        assert!(
            told[1].contains("our Tor client has been failing"),
            "{}",
            told[1]
        );
        assert!(told[1].contains("no circuit"), "{}", told[1]);
        // A check whose probes went through ends Tor's outage only.
        let w = engine.self_watch();
        assert!(w.dns.alerted && w.transport.alerted);
        let probes_ok_dns_failing = Health {
            dns_failures: 1,
            probes: 2,
            ..Health::default()
        };
        engine.note_health(&probes_ok_dns_failing, None).await;
        let told = contents(&engine);
        assert_eq!(told.len(), 3, "{told:?}");
        assert!(told[2].contains("our Tor client is back"), "{}", told[2]);
        assert!(engine.self_watch().dns.alerted);
        engine.note_health(&tor_fine, None).await;
        let told = contents(&engine);
        assert_eq!(told.len(), 4, "{told:?}");
        assert!(
            told[3].contains("our DNS resolver (127.0.0.1:9) is back"),
            "{}",
            told[3]
        );
        assert_eq!(engine.self_watch(), SelfWatch::default());
    }

    #[test]
    fn concurrent_checks_lose_no_failure_and_alert_once() {
        // Checks finish on many threads at once: each failure is counted
        // and the operators are told exactly once. A read-modify-write
        // without a lock loses counts here and can alert twice.
        let engine = std::sync::Arc::new(engine_with_admins(&["op1@localhost", "op2@localhost"]));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .build()
            .unwrap();
        const N: usize = 200;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
        rt.block_on(async {
            let tasks: Vec<_> = (0..N)
                .map(|_| {
                    let engine = engine.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        barrier.wait().await;
                        engine.note_health(&tor_failing(), None).await;
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        assert_eq!(engine.self_watch().transport.failures, N as u32);
        assert_eq!(contents(&engine).len(), 2, "one alert per operator");
        // And it was stored as it is in memory.
        futures::executor::block_on(engine.store().flush()).unwrap();
        let stored: SelfWatch = engine.store().meta(SELF_WATCH_KEY).unwrap().unwrap();
        assert_eq!(stored, engine.self_watch());
    }

    #[tokio::test]
    async fn a_failing_store_is_told_from_memory() {
        let engine = engine_with_admins(&["op@localhost"]);
        let broken = StoreError::Corrupt {
            key: "domain/x".into(),
            detail: "unexpected end".into(),
        };
        for _ in 0..ADMIN_AFTER {
            engine.note_store(Err(&broken));
        }
        // Not through the store it is about.
        assert!(contents(&engine).is_empty());
        let urgent = engine.take_urgent();
        assert_eq!(urgent.len(), 1, "{urgent:?}");
        assert!(
            urgent[0].content.contains("our store ("),
            "{}",
            urgent[0].content
        );
        assert!(urgent[0].content.contains("unexpected end"));
        assert!(engine.take_urgent().is_empty(), "taken once");
        // Put back when the link could not carry it, then sent.
        engine.keep_urgent(urgent);
        engine.note_store(Ok(()));
        let urgent = engine.take_urgent();
        assert_eq!(urgent.len(), 2);
        assert!(urgent[0].content.contains("operator alert"));
        assert!(urgent[1].content.contains("work again"));
        // Tor's and DNS's counts were never touched.
        assert_eq!(engine.self_watch(), SelfWatch::default());
    }

    #[tokio::test]
    async fn checks_that_panic_are_their_own_cause() {
        let engine = engine_with_admins(&["op@localhost"]);
        for _ in 0..ADMIN_AFTER {
            engine
                .note_health(
                    &Health::default(),
                    Some(&Error::Panicked("index out of bounds".into())),
                )
                .await;
        }
        let told = contents(&engine);
        assert_eq!(told.len(), 1);
        assert!(told[0].contains("a check panicked"), "{}", told[0]);
        assert!(told[0].contains("index out of bounds"), "{}", told[0]);
        assert_eq!(engine.self_watch().transport, Default::default());
        assert_eq!(engine.self_watch().dns, Default::default());
        // Any check that runs to its end ends it.
        engine.note_health(&Health::default(), None).await;
        assert_eq!(contents(&engine).len(), 2);
    }

    #[tokio::test]
    async fn the_self_watch_outlives_a_restart() {
        let dir = std::env::temp_dir().join(format!("certwatch-selfwatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.display().to_string();
        let make = || {
            let mut config = Config::default();
            config.xmpp.admins = vec!["op@localhost".into()];
            config.dns.nameservers = vec!["127.0.0.1:9".into()];
            config.store.path = path.clone();
            // sled's own threads may hold the last run's file lock for a
            // moment after its last handle is gone (a restart is a new
            // process, which never meets this).
            let mut tries = 0;
            let store = loop {
                match Store::open(std::path::Path::new(&path)) {
                    Ok(store) => break store,
                    Err(e) if tries < 50 => {
                        tries += 1;
                        eprintln!("store still locked ({e}); trying again");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    Err(e) => panic!("{e}"),
                }
            };
            Engine::new(config, store, crate::clock::system()).unwrap()
        };
        {
            let engine = make();
            for _ in 0..ADMIN_AFTER {
                engine.note_health(&tor_failing(), None).await;
            }
            assert_eq!(contents(&engine).len(), 1);
        }
        let engine = make();
        assert!(
            engine.self_watch().transport.alerted,
            "told, and remembered"
        );
        engine.note_health(&tor_failing(), None).await;
        assert_eq!(contents(&engine).len(), 1, "not told again after a restart");
        engine
            .note_health(
                &Health {
                    probes: 1,
                    ..Health::default()
                },
                None,
            )
            .await;
        assert!(contents(&engine).last().unwrap().contains("work again"));
        drop(engine);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn report(domain: &str, at: &str, verdict: crate::report::Verdict) -> Report {
        Report {
            domain: domain.into(),
            checked_at: at.into(),
            verdict,
            endpoints: vec![],
            records_to_add: vec![],
            advice: vec![],
            transport: "direct".into(),
            errors: vec![],
            bogus_rrsets: vec![],
            nxdomain: false,
            resolvers: vec![],
            horizons: Default::default(),
            rollover: vec![],
            evidence: vec![],
        }
    }

    #[tokio::test]
    async fn chat_results_are_the_last_result_but_never_the_alert_state() {
        use crate::report::Verdict;
        let engine = engine_with_admins(&[]);
        // Unmonitored: kept among the recent results, bounded.
        engine
            .keep_result(&report("a.org", "2026-01-01T00:00:00Z", Verdict::Ok))
            .await
            .unwrap();
        assert_eq!(
            engine.last_report("a.org").unwrap().unwrap().verdict,
            Verdict::Ok
        );
        for i in 0..RECENT_RESULTS + 5 {
            engine
                .keep_result(&report(
                    &format!("d{i}.org"),
                    "2026-01-01T00:00:00Z",
                    Verdict::Ok,
                ))
                .await
                .unwrap();
        }
        assert!(engine.last_report("a.org").unwrap().is_none(), "bounded");
        assert_eq!(engine.recent.lock().unwrap().len(), RECENT_RESULTS);
        // Monitored, alert state mismatch: a chat check that saw ok is the
        // last result, and the alert state stays mismatch.
        let store = engine.store();
        store.monitor("m.org").await.unwrap();
        let mut state = crate::model::DomainState {
            state: Some(Verdict::Mismatch),
            ..Default::default()
        };
        state.last_report = Some(report("m.org", "2026-01-01T00:00:00Z", Verdict::Mismatch));
        store.commit_check("m.org", &state, &[], &[]).await.unwrap();
        engine
            .keep_result(&report("m.org", "2026-01-01T00:05:00Z", Verdict::Ok))
            .await
            .unwrap();
        let stored = store.domain_state("m.org").unwrap().unwrap();
        assert_eq!(stored.state, Some(Verdict::Mismatch));
        assert_eq!(stored.last_report.unwrap().verdict, Verdict::Ok);
        assert_eq!(
            engine.last_report("m.org").unwrap().unwrap().checked_at,
            "2026-01-01T00:05:00Z"
        );
    }

    #[tokio::test]
    async fn pubsub_subscriptions_count_each_full_jid_up_to_the_accounts_bound() {
        let engine = engine_with_admins(&[]);
        for i in 0..PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT {
            let jid = format!("many@x/r{i}");
            let r = engine.subscribe_pubsub(&jid, "one.example").await;
            assert_eq!(r.unwrap(), Ok(true), "{i}");
        }
        // One node, one domain: the domain limit would let it pass.
        let over = engine
            .subscribe_pubsub("many@x/r-extra", "one.example")
            .await
            .unwrap();
        let why = over.unwrap_err();
        assert!(why.contains("50 PubSub subscriptions"), "{why}");
        // Subscribing again what one has is no new subscription.
        assert_eq!(
            engine
                .subscribe_pubsub("many@x/r0", "one.example")
                .await
                .unwrap(),
            Ok(false)
        );
        // Other accounts are not affected.
        assert_eq!(
            engine
                .subscribe_pubsub("other@x/r", "one.example")
                .await
                .unwrap(),
            Ok(true)
        );
        let stored = engine.store().pubsub_subscribers("one.example").unwrap();
        assert_eq!(stored.len(), PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT + 1);
    }

    #[tokio::test]
    async fn the_served_by_scan_runs_off_the_runtime_and_finds_the_domain() {
        use crate::report::Verdict;
        let engine = engine_with_admins(&[]);
        let mut r = report("d.example", "2026-01-01T00:00:00Z", Verdict::Ok);
        let ep: crate::report::EndpointReport = serde_json::from_value(serde_json::json!({
            "service": "xmpp-client", "host": "xmpp.d.example", "port": 5222,
            "address": "192.0.2.1", "tls": "starttls", "verdict": "match",
            "tlsa": [], "tlsa_name": "_5222._tcp.xmpp.d.example"
        }))
        .unwrap();
        r.endpoints.push(ep);
        engine.store().monitor("d.example").await.unwrap();
        engine.keep_result(&r).await.unwrap();
        assert_eq!(
            engine.domain_served_by("xmpp.d.example").await.unwrap(),
            Some("d.example".into())
        );
        assert_eq!(
            engine.domain_served_by("elsewhere.example").await.unwrap(),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_per_jid_with_moving_time() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..COMMANDS_PER_MINUTE {
            assert!(l.allow("a@x", false, t0).is_none());
        }
        assert!(l.allow("a@x", false, t0).is_some());
        assert!(
            l.allow("b@x", false, t0).is_none(),
            "other JIDs are not affected"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(l.allow("a@x", false, Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn rotating_jids_does_not_reset_an_active_one() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..COMMANDS_PER_MINUTE {
            assert!(l.allow("busy@x", false, t0).is_none());
        }
        // Thousands of fresh JIDs, one a millisecond, within the minute.
        let mut t = t0;
        for i in 0..(LIMITER_JIDS * 2) {
            t = t0 + Duration::from_millis(i as u64);
            l.allow(&format!("j{i}@x"), false, t);
            if i % 1000 == 0 {
                // busy@x keeps talking (and stays refused): it stays known.
                assert!(l.allow("busy@x", false, t).is_some(), "{i}");
            }
        }
        assert!(l.commands.map.len() <= LIMITER_JIDS, "bounded");
        assert!(l.allow("busy@x", false, t).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn check_limit_is_hourly() {
        let mut l = Limiter::default();
        let mut t = Instant::now();
        for _ in 0..CHECKS_PER_HOUR {
            assert!(l.allow("a@x", true, t).is_none());
            t += Duration::from_secs(61);
        }
        assert!(l.allow("a@x", true, t).is_some());
        assert!(
            l.allow("a@x", false, t).is_none(),
            "other commands still work"
        );
    }
}

//! The one owner of the store's writes: a thread that takes write jobs from
//! a bounded queue, applies them in order, and makes each batch durable with
//! one synchronous flush (group commit) before anyone hears back.
//!
//! sled 0.34 deadlocks when transactions and `flush_async` run on several
//! threads at once (its transactions take a global write lock that its own
//! flushing readers wait behind; spacejam/sled#1308 and #1412, fixed on
//! sled's main branch and never released). Here no two writes, and no write
//! and a flush, ever run at once: readers elsewhere only take sled's read
//! side, briefly, and never wait on anything while holding it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::trees::Trees;
use super::StoreError;

/// How many write jobs may wait for the owner; a writer past it waits for
/// room (async callers) or is refused (callers that cannot wait).
pub const QUEUE: usize = 4096;
/// The most jobs one flush makes durable.
pub const BATCH: usize = 512;

/// What the owner calls back once the batch holding a job is flushed.
type Completion = Box<dyn FnOnce(Result<(), sled::Error>) + Send>;
/// A write: applied on the owner thread, answered after the flush.
type Job = Box<dyn FnOnce(&Trees) -> Completion + Send>;

/// What the owner is doing, for the watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for work.
    Idle,
    /// Applying the writes of a batch.
    Applying,
    /// In sled's flush.
    Flushing,
    /// The debug stall point holds it (tests only).
    Stalled,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Applying,
            2 => Phase::Flushing,
            3 => Phase::Stalled,
            _ => Phase::Idle,
        }
    }

    /// What the watchdog's log and alert call it.
    pub fn words(self) -> &'static str {
        match self {
            Phase::Idle => "waiting for work",
            Phase::Applying => "applying a batch of writes",
            Phase::Flushing => "flushing a batch to disk (sled's flush)",
            Phase::Stalled => "held at the debug stall point",
        }
    }
}

/// The owner's progress, read by the watchdog and the health check.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    /// Jobs sent and not yet applied.
    waiting: AtomicUsize,
    phase: AtomicU8,
    /// Milliseconds since `started` when the phase last changed.
    phase_since_ms: AtomicU64,
    /// Batches made durable so far.
    batches: AtomicU64,
    /// Jobs made durable so far.
    jobs: AtomicU64,
    /// Flushes that failed.
    failed_flushes: AtomicU64,
}

/// A snapshot of [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Jobs sent and not yet applied.
    pub waiting: usize,
    /// What the owner is doing.
    pub phase: Phase,
    /// For how long it has been doing it.
    pub phase_for: Duration,
    /// Batches made durable so far.
    pub batches: u64,
    /// Jobs made durable so far.
    pub jobs: u64,
    /// Flushes that failed so far.
    pub failed_flushes: u64,
}

impl Snapshot {
    /// Whether the owner has held one batch for `limit` (applying it,
    /// flushing it, or held at the stall point). An idle owner with writes
    /// waiting is judged over time by [`IdleWatch`], since the age of its
    /// idle phase says nothing about how long those writes have waited.
    pub fn stalled(&self, limit: Duration) -> bool {
        self.phase_for >= limit
            && matches!(
                self.phase,
                Phase::Applying | Phase::Flushing | Phase::Stalled
            )
    }
}

/// Follows an idle owner with writes waiting across the watchdog's looks:
/// stalled only when writes have waited the whole `limit` with no batch done
/// meanwhile (a write sent just now to a long idle owner is not a stall).
#[derive(Debug, Default)]
pub struct IdleWatch {
    since: Option<(u64, std::time::Instant)>,
}

impl IdleWatch {
    /// Looks at `snap` taken at `now`; how long writes have waited with no
    /// progress, if they have.
    pub fn look(&mut self, snap: &Snapshot, now: std::time::Instant) -> Option<Duration> {
        if snap.phase != Phase::Idle || snap.waiting == 0 {
            self.since = None;
            return None;
        }
        match self.since {
            Some((batches, at)) if batches == snap.batches => Some(now.duration_since(at)),
            _ => {
                self.since = Some((snap.batches, now));
                Some(Duration::ZERO)
            }
        }
    }
}

impl Progress {
    fn new() -> Progress {
        Progress {
            started: Instant::now(),
            waiting: AtomicUsize::new(0),
            phase: AtomicU8::new(Phase::Idle as u8),
            phase_since_ms: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
            failed_flushes: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
        self.phase_since_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    /// What the owner is doing now.
    pub fn snapshot(&self) -> Snapshot {
        let since = self.phase_since_ms.load(Ordering::SeqCst);
        Snapshot {
            waiting: self.waiting.load(Ordering::SeqCst),
            phase: Phase::from_u8(self.phase.load(Ordering::SeqCst)),
            phase_for: Duration::from_millis(self.now_ms().saturating_sub(since)),
            batches: self.batches.load(Ordering::SeqCst),
            jobs: self.jobs.load(Ordering::SeqCst),
            failed_flushes: self.failed_flushes.load(Ordering::SeqCst),
        }
    }
}

/// The sending side: cloned into every [`super::Store`] handle. When the
/// last handle goes, the queue closes and the thread's last flush is waited
/// for, so the database is closed (and its lock free) once it returns.
#[derive(Clone)]
pub(super) struct Owner {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: mpsc::Sender<Job>,
    progress: Arc<Progress>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue: replace the sender with a closed one.
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.jobs, closed));
        let thread = self.thread.get_mut().map(Option::take).ok().flatten();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::warn!("the store's thread panicked");
            }
        }
    }
}

impl Owner {
    /// Starts the owner thread over `trees`.
    pub(super) fn start(trees: Arc<Trees>) -> Result<Owner, StoreError> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let progress = Arc::new(Progress::new());
        let p = progress.clone();
        let thread = std::thread::Builder::new()
            .name("certwatch-store".into())
            .spawn(move || run(&trees, queue, &p))
            .map_err(|e| StoreError::Owner(format!("cannot start the store's thread: {e}")))?;
        Ok(Owner {
            inner: Arc::new(Inner {
                jobs,
                progress,
                thread: std::sync::Mutex::new(Some(thread)),
            }),
        })
    }

    pub(super) fn progress(&self) -> &Arc<Progress> {
        &self.inner.progress
    }

    /// Runs `write` on the owner thread and answers once it is durable.
    pub(super) async fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting::new(&self.inner.progress.waiting);
        if self.inner.jobs.send(job(write, tx)).await.is_err() {
            return Err(StoreError::Owner("the store's thread has ended".into()));
        }
        waiting.queued();
        rx.await
            .map_err(|_| StoreError::Owner("a write panicked in the store's thread".into()))?
    }

    /// Runs `write` on the owner thread and answers as soon as it is
    /// applied (visible to readers), with a [`Durable`] that resolves once
    /// it is flushed: a caller can release a lock before the flush, so
    /// writes made under it still share flushes.
    pub(super) async fn write_staged<T, F>(&self, write: F) -> Result<(T, Durable), StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Trees) -> Result<T, StoreError> + Send + 'static,
    {
        let (applied_tx, applied) = oneshot::channel();
        let (durable_tx, durable) = oneshot::channel();
        let staged = move |trees: &Trees| {
            let result = write(trees);
            let ok = result.is_ok();
            let _ = applied_tx.send(result);
            // Only a write that was applied has anything to make durable.
            if ok {
                Ok(())
            } else {
                Err(StoreError::Owner("not applied".into()))
            }
        };
        let waiting = Waiting::new(&self.inner.progress.waiting);
        if self.inner.jobs.send(job(staged, durable_tx)).await.is_err() {
            return Err(StoreError::Owner("the store's thread has ended".into()));
        }
        waiting.queued();
        let value = applied
            .await
            .map_err(|_| StoreError::Owner("a write panicked in the store's thread".into()))??;
        Ok((value, Durable(durable)))
    }

    /// Queues `write` without waiting for it (for callers holding a lock or
    /// outside the runtime); what it returns is logged on failure. Refused,
    /// not waited for, when the queue is full.
    pub(super) fn submit<F>(&self, what: &'static str, write: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Trees) -> Result<(), StoreError> + Send + 'static,
    {
        // Nobody awaits the answer: a failure is logged here.
        let (tx, _) = oneshot::channel::<Result<(), StoreError>>();
        let logged = move |trees: &Trees| {
            let result = write(trees);
            if let Err(e) = &result {
                tracing::warn!(error = %e, "cannot store {what}");
            }
            result
        };
        self.inner.progress.waiting.fetch_add(1, Ordering::SeqCst);
        match self.inner.jobs.try_send(job(logged, tx)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.inner.progress.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(StoreError::Owner(match e {
                    mpsc::error::TrySendError::Full(_) => {
                        format!("cannot queue {what}: {QUEUE} writes are already waiting")
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        format!("cannot queue {what}: the store's thread has ended")
                    }
                }))
            }
        }
    }
}

/// Counts a write as waiting from before its send until the owner takes it;
/// a send that never completes (its future dropped, the queue closed)
/// uncounts it, so the watchdog never waits for a write that is not there.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    queued: bool,
}

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::SeqCst);
        Waiting {
            count,
            queued: false,
        }
    }

    /// The write is in the queue: the owner uncounts it when it takes it.
    fn queued(mut self) {
        self.queued = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.queued {
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Resolves once a staged write is on disk.
#[must_use = "a staged write is not durable until this resolves"]
pub struct Durable(oneshot::Receiver<Result<(), StoreError>>);

impl Durable {
    /// Waits for the flush of the batch holding the write.
    pub async fn flushed(self) -> Result<(), StoreError> {
        self.0
            .await
            .map_err(|_| StoreError::Owner("the store's thread has ended".into()))?
    }
}

fn job<T, F>(write: F, reply: oneshot::Sender<Result<T, StoreError>>) -> Job
where
    T: Send + 'static,
    F: FnOnce(&Trees) -> Result<T, StoreError> + Send + 'static,
{
    Box::new(move |trees: &Trees| {
        let result = write(trees);
        Box::new(move |flushed: Result<(), sled::Error>| {
            let result = match flushed {
                Ok(()) => result,
                Err(e) => result.and(Err(StoreError::Sled(e))),
            };
            if let Err(e) = &result {
                tracing::debug!(error = %e, "a store write failed");
            }
            // The asker may have gone (a dropped reply, a fire-and-forget
            // write): the write stands all the same.
            let _ = reply.send(result);
        }) as Completion
    })
}

/// The owner thread: batches, applies, flushes, answers; until every
/// handle is gone, then one last flush.
fn run(trees: &Trees, mut queue: mpsc::Receiver<Job>, progress: &Progress) {
    while let Some(first) = queue.blocking_recv() {
        progress.enter(Phase::Applying);
        let mut done = Vec::with_capacity(16);
        let mut next = Some(first);
        while let Some(job) = next.take() {
            progress.waiting.fetch_sub(1, Ordering::SeqCst);
            // A panicking write drops its reply (the asker gets an error)
            // and leaves the others of the batch alone.
            if let Ok(c) = std::panic::catch_unwind(AssertUnwindSafe(|| job(trees))) {
                done.push(c);
            }
            if done.len() < BATCH {
                next = queue.try_recv().ok();
            }
        }
        stall_point(progress);
        progress.enter(Phase::Flushing);
        let flushed = trees.db.flush().map(|_| ());
        if let Err(e) = &flushed {
            progress.failed_flushes.fetch_add(1, Ordering::SeqCst);
            tracing::warn!(error = %e, "the store could not flush a batch of writes");
        }
        progress.jobs.fetch_add(done.len() as u64, Ordering::SeqCst);
        progress.batches.fetch_add(1, Ordering::SeqCst);
        progress.enter(Phase::Idle);
        for c in done {
            c(flushed.clone());
        }
    }
    if let Err(e) = trees.db.flush() {
        tracing::warn!(error = %e, "the store's last flush failed");
    }
}

/// Debug builds only: `CERTWATCH_STALL_AT=store` holds the owner here for
/// good, as a wedged disk or a sled deadlock would (the watchdog test).
fn stall_point(progress: &Progress) {
    if cfg!(debug_assertions)
        && std::env::var(crate::crashpoint::STALL_VAR).is_ok_and(|v| v == "store")
    {
        progress.enter(Phase::Stalled);
        tracing::warn!("store stall point reached: the store's thread stops here");
        loop {
            std::thread::park();
        }
    }
}

//! Durable state in sled.
//!
//! Key layout (all keys UTF-8, `\0` separates parts; values are JSON):
//!
//! | tree          | key                    | value                      |
//! |---------------|------------------------|----------------------------|
//! | `domains`     | domain                 | [`DomainState`]            |
//! | `subs`        | domain `\0` bare JID   | empty (chat subscription)  |
//! | `subs_by_jid` | bare JID `\0` domain   | empty (the reverse index)  |
//! | `outbox`      | u64 big-endian seq     | [`Delivery`] not yet sent  |
//! | `dead_letters` | u64 big-endian seq    | [`Delivery`] given up after [`MAX_DELIVERY_ATTEMPTS`](crate::model::MAX_DELIVERY_ATTEMPTS) tries |
//! | `ps_subs`     | node `\0` JID          | empty (PubSub subscriber)  |
//! | `ps_by_jid`   | bare JID `\0` node `\0` JID | empty (the reverse index) |
//! | `ps_items`    | node `\0` u64 BE seq   | [`Item`]                   |
//! | `evidence`    | domain `\0` u64 BE seq | [`EvidenceRecord`] of an alert (newest [`MAX_EVIDENCE`] per domain) |
//! | `meta`        | name                   | JSON of the bot's own state |
//! | `checked`     | domain                 | u64 BE ms since the epoch of its last monitor check |
//!
//! The rest of the program goes through the [`StateStore`] trait. Reads go
//! straight to sled from any thread; every write goes to one owner thread
//! ([`owner`]) through a bounded queue, is applied there in order, and is
//! answered only after the batch holding it was flushed (group commit), so
//! a user told "subscribed" is on disk, and no two sled transactions or
//! flushes ever run at once (sled 0.34 deadlocks when they do). A domain is
//! monitored while it has an entry in `domains`; every change to that set
//! bumps an in-memory generation, so the monitor re-reads the set only when
//! it changed. `checked` holds the one fact the schedule needs to survive a
//! restart, apart from the state (which holds the last report). A state change
//! and the deliveries it causes are written in one transaction, so a crash
//! can neither lose an alert nor let a re-check raise it twice.

mod owner;
mod trees;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::transaction::TransactionError;

use owner::Owner;
pub use owner::{Durable, IdleWatch, Phase, Progress, Snapshot};
use trees::Trees;

use crate::error::{ErrorKind, HasKind};
use crate::model::{Delivery, DomainState, Item};
use crate::report::Report;

/// How many alerts' evidence is kept per domain.
pub const MAX_EVIDENCE: usize = 10;

/// The evidence of one alert: which alert, and what each endpoint presented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    /// The alert's id.
    pub alert_id: String,
    /// The alert's title.
    pub title: String,
    /// One entry per endpoint in mismatch.
    pub items: Vec<crate::report::Evidence>,
}

/// How many undeliverable deliveries are kept for the operator to look at.
pub const MAX_DEAD_LETTERS: usize = 1000;

/// How many PubSub items are kept per node.
pub const MAX_ITEMS: usize = 50;

/// Storage failed: the operator's problem.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value did not decode.
    #[error("store: corrupt value under {key}: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        detail: String,
    },
    /// The owner thread could not take or finish a write.
    #[error("store: {0}")]
    Owner(String),
}

impl HasKind for StoreError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Store
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Sled(e),
        }
    }
}

/// The state the service keeps, as the rest of the program sees it:
/// monitored domains, subscriptions both ways (chat and PubSub), last
/// reports, the outbox and its marks, PubSub items, the bot's own state.
///
/// Reads answer at once. Writes are async: each resolves once the write is
/// applied and flushed to disk by the store's owner thread.
pub trait StateStore {
    /// Starts monitoring a domain if it is not yet; returns whether it is new.
    fn monitor(&self, domain: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Every monitored domain.
    fn monitored(&self) -> Result<Vec<String>, StoreError>;
    /// The state of one domain, if monitored.
    fn domain_state(&self, domain: &str) -> Result<Option<DomainState>, StoreError>;
    /// Stores the last report of a monitored domain (e.g. from a chat `check`).
    fn put_last_report(
        &self,
        domain: &str,
        report: &Report,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Adds a chat subscription; returns false if it already existed.
    fn subscribe(
        &self,
        domain: &str,
        jid: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes a chat subscription; returns whether there was one.
    fn unsubscribe(
        &self,
        domain: &str,
        jid: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The bare JIDs subscribed to a domain by chat.
    fn subscribers(&self, domain: &str) -> Result<Vec<String>, StoreError>;
    /// The domains a JID is subscribed to by chat.
    fn subscriptions_of(&self, jid: &str) -> Result<Vec<String>, StoreError>;
    /// Deliveries not yet sent, oldest first.
    fn pending(&self) -> Result<Vec<(u64, Delivery)>, StoreError>;
    /// Marks a delivery sent, durably.
    fn mark_sent(&self, id: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Counts one more try of a pending delivery, durably, before it is made;
    /// returns the delivery as now stored (None if it is no longer pending).
    fn note_attempt(
        &self,
        id: u64,
    ) -> impl Future<Output = Result<Option<Delivery>, StoreError>> + Send;
    /// Moves a pending delivery to the dead letters (the newest
    /// [`MAX_DEAD_LETTERS`] are kept), durably.
    fn dead_letter(&self, id: u64) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The dead letters, oldest first.
    fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError>;
    /// Makes every write so far durable.
    fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes a domain's new state, the PubSub items (in the order given)
    /// and the deliveries it causes, atomically. Does nothing if the domain
    /// stopped being monitored.
    fn commit_check(
        &self,
        domain: &str,
        state: &DomainState,
        items: &[Item],
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Queues deliveries that belong to no domain state (operator alerts).
    fn enqueue(
        &self,
        deliveries: &[Delivery],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A named piece of the bot's own state.
    fn meta<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, StoreError>;
    /// Stores a named piece of the bot's own state.
    fn put_meta<T: Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Adds a PubSub subscriber to a node (and monitors the domain).
    fn pubsub_subscribe(
        &self,
        node: &str,
        jid: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Removes a PubSub subscriber; returns whether it was subscribed.
    fn pubsub_unsubscribe(
        &self,
        node: &str,
        jid: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// The JIDs subscribed to a node.
    fn pubsub_subscribers(&self, node: &str) -> Result<Vec<String>, StoreError>;
    /// The (node, jid) PubSub subscriptions whose JID's bare form is `bare`, at most `max`.
    fn pubsub_subscriptions_of(
        &self,
        bare: &str,
        max: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Keeps what an alert's endpoints presented (the newest
    /// [`MAX_EVIDENCE`] alerts' worth per domain).
    fn put_evidence(
        &self,
        domain: &str,
        record: &EvidenceRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The evidence kept for a domain, newest first.
    fn evidence(&self, domain: &str) -> Result<Vec<EvidenceRecord>, StoreError>;
    /// Publishes an item on a node (idempotent per item id), keeping the newest [`MAX_ITEMS`].
    fn put_item(
        &self,
        node: &str,
        item: &Item,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// A number that changes whenever a domain starts or stops being monitored.
    fn membership_generation(&self) -> u64;
    /// When the monitor last checked a domain (None if never, or not monitored).
    fn last_checked(&self, domain: &str) -> Result<Option<std::time::SystemTime>, StoreError>;
    /// Records when the monitor checked a domain (nothing if it is not monitored).
    fn note_checked(
        &self,
        domain: &str,
        at: std::time::SystemTime,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The newest `max` items of a node, newest first.
    fn items(&self, node: &str, max: usize) -> Result<Vec<Item>, StoreError>;
}

/// How long an open waits for the database's file lock: sled's own I/O
/// threads can hold it for a moment after the last handle of the same
/// process is gone. Another process holding it is refused after this.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs `open` until it gets the database's lock, or [`LOCK_WAIT`] passes.
fn open_locked(open: impl Fn() -> sled::Result<sled::Db>) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match open() {
            Err(sled::Error::Io(e))
                if started.elapsed() < LOCK_WAIT
                    && (e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("could not acquire lock")) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// A handle on the sled database: cheap to clone, shared by every part.
#[derive(Clone)]
pub struct Store {
    trees: Arc<Trees>,
    owner: Owner,
}

impl Store {
    /// Opens (or creates) the database directory, with sled's default
    /// page cache (1 GiB at most).
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::from_db(open_locked(|| {
            sled::Config::new().path(path).flush_every_ms(None).open()
        })?)
    }

    /// Opens (or creates) the database directory, keeping at most
    /// `cache_bytes` of it in memory (sled's page cache; the rest is read
    /// from disk when needed).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        Store::from_db(open_locked(|| {
            sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                // The owner flushes every batch; sled's own periodic flusher
                // would be a second flush running beside it.
                .flush_every_ms(None)
                .open()
        })?)
    }

    /// A throwaway database, for tests and benchmarks.
    pub fn temporary() -> Result<Store, StoreError> {
        Store::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        let trees = Arc::new(Trees::from_db(db)?);
        let owner = Owner::start(trees.clone())?;
        Ok(Store { trees, owner })
    }

    /// Approximate size on disk, for benchmarks.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.trees.size_on_disk()
    }

    /// The owner thread's progress (for the watchdog and health checks).
    pub fn progress(&self) -> Arc<Progress> {
        self.owner.progress().clone()
    }

    /// Adds a chat subscription and answers once it is applied (whether it
    /// is new), with the flush still to wait for.
    pub async fn subscribe_staged(
        &self,
        domain: &str,
        jid: &str,
    ) -> Result<(bool, Durable), StoreError> {
        let (domain, jid) = (domain.to_owned(), jid.to_owned());
        self.owner
            .write_staged(move |t| t.subscribe(&domain, &jid))
            .await
    }

    /// Adds a PubSub subscription, like [`Store::subscribe_staged`].
    pub async fn pubsub_subscribe_staged(
        &self,
        node: &str,
        jid: &str,
    ) -> Result<(bool, Durable), StoreError> {
        let (node, jid) = (node.to_owned(), jid.to_owned());
        self.owner
            .write_staged(move |t| t.pubsub_subscribe(&node, &jid))
            .await
    }

    /// Queues a named piece of the bot's own state without waiting (for
    /// callers holding a lock); refused when the write queue is full.
    pub fn put_meta_now<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        let (name, value) = (name.to_owned(), trees::encode(value));
        self.owner
            .submit("the bot's own state", move |t| t.put_meta(&name, value))
    }

    /// Queues deliveries without waiting (for callers holding a lock);
    /// refused when the write queue is full.
    pub fn enqueue_now(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let deliveries = deliveries.to_vec();
        self.owner
            .submit("operator messages", move |t| t.enqueue(&deliveries))
    }
}

impl StateStore for Store {
    async fn monitor(&self, domain: &str) -> Result<bool, StoreError> {
        let domain = domain.to_owned();
        self.owner.write(move |t| t.monitor(&domain)).await
    }
    fn monitored(&self) -> Result<Vec<String>, StoreError> {
        self.trees.monitored()
    }
    fn domain_state(&self, domain: &str) -> Result<Option<DomainState>, StoreError> {
        self.trees.domain_state(domain)
    }
    /// Replaces only the last report: a scheduled check committing at the
    /// same time keeps its alert state.
    async fn put_last_report(&self, domain: &str, report: &Report) -> Result<(), StoreError> {
        let (domain, report) = (domain.to_owned(), report.clone());
        self.owner
            .write(move |t| t.put_last_report(&domain, &report))
            .await
    }
    async fn subscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError> {
        let (domain, jid) = (domain.to_owned(), jid.to_owned());
        self.owner.write(move |t| t.subscribe(&domain, &jid)).await
    }
    async fn unsubscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError> {
        let (domain, jid) = (domain.to_owned(), jid.to_owned());
        self.owner
            .write(move |t| t.unsubscribe(&domain, &jid))
            .await
    }
    fn subscribers(&self, domain: &str) -> Result<Vec<String>, StoreError> {
        self.trees.subscribers(domain)
    }
    fn subscriptions_of(&self, jid: &str) -> Result<Vec<String>, StoreError> {
        self.trees.subscriptions_of(jid)
    }
    fn pending(&self) -> Result<Vec<(u64, Delivery)>, StoreError> {
        self.trees.pending()
    }
    async fn mark_sent(&self, id: u64) -> Result<(), StoreError> {
        self.owner.write(move |t| t.mark_sent(id)).await
    }
    async fn note_attempt(&self, id: u64) -> Result<Option<Delivery>, StoreError> {
        self.owner.write(move |t| t.note_attempt(id)).await
    }
    async fn dead_letter(&self, id: u64) -> Result<(), StoreError> {
        self.owner.write(move |t| t.dead_letter(id)).await
    }
    fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError> {
        self.trees.dead_letters()
    }
    /// Resolves once every write queued before it is durable.
    async fn flush(&self) -> Result<(), StoreError> {
        self.owner.write(|_| Ok(())).await
    }
    async fn commit_check(
        &self,
        domain: &str,
        state: &DomainState,
        items: &[Item],
        deliveries: &[Delivery],
    ) -> Result<bool, StoreError> {
        let (domain, state) = (domain.to_owned(), state.clone());
        let (items, deliveries) = (items.to_vec(), deliveries.to_vec());
        self.owner
            .write(move |t| t.commit_check(&domain, &state, &items, &deliveries))
            .await
    }
    async fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let deliveries = deliveries.to_vec();
        self.owner.write(move |t| t.enqueue(&deliveries)).await
    }
    fn meta<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, StoreError> {
        self.trees.meta(name)
    }
    fn put_meta<T: Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let (name, value) = (name.to_owned(), trees::encode(value));
        let owner = self.owner.clone();
        async move { owner.write(move |t| t.put_meta(&name, value)).await }
    }
    async fn pubsub_subscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError> {
        let (node, jid) = (node.to_owned(), jid.to_owned());
        self.owner
            .write(move |t| t.pubsub_subscribe(&node, &jid))
            .await
    }
    async fn pubsub_unsubscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError> {
        let (node, jid) = (node.to_owned(), jid.to_owned());
        self.owner
            .write(move |t| t.pubsub_unsubscribe(&node, &jid))
            .await
    }
    fn pubsub_subscribers(&self, node: &str) -> Result<Vec<String>, StoreError> {
        self.trees.pubsub_subscribers(node)
    }
    fn pubsub_subscriptions_of(
        &self,
        bare: &str,
        max: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.trees.pubsub_subscriptions_of(bare, max)
    }
    async fn put_evidence(&self, domain: &str, record: &EvidenceRecord) -> Result<(), StoreError> {
        let (domain, record) = (domain.to_owned(), record.clone());
        self.owner
            .write(move |t| t.put_evidence(&domain, &record))
            .await
    }
    fn evidence(&self, domain: &str) -> Result<Vec<EvidenceRecord>, StoreError> {
        self.trees.evidence(domain)
    }
    async fn put_item(&self, node: &str, item: &Item) -> Result<bool, StoreError> {
        let (node, item) = (node.to_owned(), item.clone());
        self.owner.write(move |t| t.put_item(&node, &item)).await
    }
    fn membership_generation(&self) -> u64 {
        self.trees.membership_generation()
    }
    fn last_checked(&self, domain: &str) -> Result<Option<std::time::SystemTime>, StoreError> {
        self.trees.last_checked(domain)
    }
    async fn note_checked(
        &self,
        domain: &str,
        at: std::time::SystemTime,
    ) -> Result<(), StoreError> {
        let domain = domain.to_owned();
        self.owner.write(move |t| t.note_checked(&domain, at)).await
    }
    fn items(&self, node: &str, max: usize) -> Result<Vec<Item>, StoreError> {
        self.trees.items(node, max)
    }
}

#[cfg(test)]
mod tests;

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
//! The rest of the program goes through the [`StateStore`] trait. A domain is
//! monitored while it has an entry in `domains`; every change to that set
//! bumps an in-memory generation, so the monitor re-reads the set only when
//! it changed. `checked` holds the one fact the schedule needs to survive a
//! restart, apart from the state (which holds the last report). A state change
//! and the deliveries it causes are written in one transaction, so a crash
//! can neither lose an alert nor let a re-check raise it twice. Writes that a
//! user was told about are flushed before the reply.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

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
pub trait StateStore {
    /// Starts monitoring a domain if it is not yet; returns whether it is new.
    fn monitor(&self, domain: &str) -> Result<bool, StoreError>;
    /// Every monitored domain.
    fn monitored(&self) -> Result<Vec<String>, StoreError>;
    /// The state of one domain, if monitored.
    fn domain_state(&self, domain: &str) -> Result<Option<DomainState>, StoreError>;
    /// Stores the last report of a monitored domain (e.g. from a chat `check`).
    fn put_last_report(&self, domain: &str, report: &Report) -> Result<(), StoreError>;
    /// Adds a chat subscription; returns false if it already existed.
    fn subscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError>;
    /// Removes a chat subscription; returns whether there was one.
    fn unsubscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError>;
    /// The bare JIDs subscribed to a domain by chat.
    fn subscribers(&self, domain: &str) -> Result<Vec<String>, StoreError>;
    /// The domains a JID is subscribed to by chat.
    fn subscriptions_of(&self, jid: &str) -> Result<Vec<String>, StoreError>;
    /// Deliveries not yet sent, oldest first.
    fn pending(&self) -> Result<Vec<(u64, Delivery)>, StoreError>;
    /// Marks a delivery sent, durably.
    fn mark_sent(
        &self,
        id: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
    /// Counts one more try of a pending delivery, durably, before it is made;
    /// returns the delivery as now stored (None if it is no longer pending).
    fn note_attempt(
        &self,
        id: u64,
    ) -> impl std::future::Future<Output = Result<Option<Delivery>, StoreError>> + Send;
    /// Moves a pending delivery to the dead letters (the newest
    /// [`MAX_DEAD_LETTERS`] are kept), durably.
    fn dead_letter(
        &self,
        id: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
    /// The dead letters, oldest first.
    fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError>;
    /// Makes every write so far durable.
    fn flush(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
    /// Writes a domain's new state, the PubSub item and the deliveries it
    /// causes, atomically. Does nothing if the domain stopped being monitored.
    fn commit_check(
        &self,
        domain: &str,
        state: &DomainState,
        item: Option<&Item>,
        deliveries: &[Delivery],
    ) -> Result<bool, StoreError>;
    /// Queues deliveries that belong to no domain state (operator alerts).
    fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError>;
    /// A named piece of the bot's own state.
    fn meta<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, StoreError>;
    /// Stores a named piece of the bot's own state.
    fn put_meta<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError>;
    /// Adds a PubSub subscriber to a node (and monitors the domain).
    fn pubsub_subscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError>;
    /// Removes a PubSub subscriber; returns whether it was subscribed.
    fn pubsub_unsubscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError>;
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
    fn put_evidence(&self, domain: &str, record: &EvidenceRecord) -> Result<(), StoreError>;
    /// The evidence kept for a domain, newest first.
    fn evidence(&self, domain: &str) -> Result<Vec<EvidenceRecord>, StoreError>;
    /// Publishes an item on a node (idempotent per item id), keeping the newest [`MAX_ITEMS`].
    fn put_item(&self, node: &str, item: &Item) -> Result<bool, StoreError>;
    /// A number that changes whenever a domain starts or stops being monitored.
    fn membership_generation(&self) -> u64;
    /// When the monitor last checked a domain (None if never, or not monitored).
    fn last_checked(&self, domain: &str) -> Result<Option<std::time::SystemTime>, StoreError>;
    /// Records when the monitor checked a domain (nothing if it is not monitored).
    fn note_checked(&self, domain: &str, at: std::time::SystemTime) -> Result<(), StoreError>;
    /// The newest `max` items of a node, newest first.
    fn items(&self, node: &str, max: usize) -> Result<Vec<Item>, StoreError>;
}

/// The sled database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    domains: sled::Tree,
    subs: sled::Tree,
    subs_by_jid: sled::Tree,
    outbox: sled::Tree,
    dead: sled::Tree,
    ps_subs: sled::Tree,
    ps_by_jid: sled::Tree,
    evidence: sled::Tree,
    /// Held by every change of who follows what, so that one user's
    /// unsubscribe cannot forget a domain another user is subscribing to.
    membership: Arc<Mutex<()>>,
    ps_items: sled::Tree,
    meta: sled::Tree,
    checked: sled::Tree,
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn prefix(a: &str) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.push(0);
    k
}

/// The second parts of the keys `a \0 …` in `tree`: e.g. a domain's subscribers.
fn second_parts(tree: &sled::Tree, a: &str) -> Result<Vec<String>, StoreError> {
    tree.scan_prefix(prefix(a))
        .keys()
        .map(|k| Ok(second_part(&k?)))
        .collect()
}

fn second_part(key: &[u8]) -> String {
    let pos = key.iter().position(|b| *b == 0).map_or(0, |p| p + 1);
    String::from_utf8_lossy(&key[pos..]).into_owned()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain data serialises")
}

impl Store {
    /// Opens (or creates) the database directory.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::from_db(sled::open(path)?)
    }

    /// A throwaway database, for tests and benchmarks.
    pub fn temporary() -> Result<Store, StoreError> {
        Store::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        Ok(Store {
            domains: db.open_tree("domains")?,
            subs: db.open_tree("subs")?,
            subs_by_jid: db.open_tree("subs_by_jid")?,
            outbox: db.open_tree("outbox")?,
            dead: db.open_tree("dead_letters")?,
            ps_subs: db.open_tree("ps_subs")?,
            ps_items: db.open_tree("ps_items")?,
            ps_by_jid: db.open_tree("ps_by_jid")?,
            evidence: db.open_tree("evidence")?,
            meta: db.open_tree("meta")?,
            membership: Arc::new(Mutex::new(())),
            checked: db.open_tree("checked")?,
            // Starts above 0, so a monitor that has seen nothing reads the set.
            generation: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
            db,
        })
        .and_then(Store::index_pubsub)
    }

    /// Builds the PubSub reverse index of a store written before it existed.
    fn index_pubsub(self) -> Result<Store, StoreError> {
        if self.ps_by_jid.is_empty() && !self.ps_subs.is_empty() {
            for k in self.ps_subs.iter().keys() {
                let k = k?;
                let key = String::from_utf8_lossy(&k).into_owned();
                if let Some((node, jid)) = key.split_once('\0') {
                    self.ps_by_jid
                        .insert(ps_reverse(jid, node), b"".as_slice())?;
                }
            }
        }
        Ok(self)
    }

    fn lock_membership(&self) -> std::sync::MutexGuard<'_, ()> {
        self.membership.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops monitoring a domain nobody follows any more.
    fn forget_if_unfollowed(&self, domain: &str) -> Result<(), StoreError> {
        if self.subscribers(domain)?.is_empty()
            && self.pubsub_subscribers(domain)?.is_empty()
            && self.domains.remove(domain)?.is_some()
        {
            self.checked.remove(domain)?;
            self.membership_changed();
            let keys: Vec<_> = self
                .evidence
                .scan_prefix(prefix(domain))
                .keys()
                .collect::<Result<_, _>>()?;
            for k in keys {
                self.evidence.remove(k)?;
            }
        }
        Ok(())
    }

    fn trim_items(&self, node: &str) -> Result<(), StoreError> {
        let keys: Vec<_> = self
            .ps_items
            .scan_prefix(prefix(node))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys.iter().take(keys.len().saturating_sub(MAX_ITEMS)) {
            self.ps_items.remove(k)?;
        }
        Ok(())
    }

    fn membership_changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Approximate size on disk, for benchmarks.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

impl StateStore for Store {
    fn monitor(&self, domain: &str) -> Result<bool, StoreError> {
        let fresh = encode(&DomainState::default());
        let previous = self
            .domains
            .compare_and_swap(domain, None as Option<&[u8]>, Some(fresh))?;
        if previous.is_ok() {
            self.membership_changed();
        }
        Ok(previous.is_ok())
    }
    fn monitored(&self) -> Result<Vec<String>, StoreError> {
        self.domains
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }
    fn domain_state(&self, domain: &str) -> Result<Option<DomainState>, StoreError> {
        match self.domains.get(domain)? {
            Some(v) => Ok(Some(decode(domain.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }
    /// Replaces only the last report, atomically: a scheduled check
    /// committing at the same time keeps its alert state.
    fn put_last_report(&self, domain: &str, report: &Report) -> Result<(), StoreError> {
        // Compare-and-swap, so a state the monitor commits meanwhile is
        // never overwritten with the one read here.
        loop {
            let Some(old) = self.domains.get(domain)? else {
                return Ok(());
            };
            let mut state: DomainState = decode(domain.as_bytes(), &old)?;
            state.last_report = Some(report.clone());
            if self
                .domains
                .compare_and_swap(domain, Some(old), Some(encode(&state)))?
                .is_ok()
            {
                return Ok(());
            }
        }
    }
    fn subscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError> {
        let _held = self.lock_membership();
        self.monitor(domain)?;
        let fresh = (&self.subs, &self.subs_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.insert(key2(domain, jid), b"".as_slice())?;
            by_jid.insert(key2(jid, domain), b"".as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_none())
        })?;
        Ok(fresh)
    }
    fn unsubscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError> {
        let _held = self.lock_membership();
        let existed = (&self.subs, &self.subs_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.remove(key2(domain, jid))?;
            by_jid.remove(key2(jid, domain))?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_some())
        })?;
        self.forget_if_unfollowed(domain)?;
        Ok(existed)
    }
    fn subscribers(&self, domain: &str) -> Result<Vec<String>, StoreError> {
        second_parts(&self.subs, domain)
    }
    fn subscriptions_of(&self, jid: &str) -> Result<Vec<String>, StoreError> {
        second_parts(&self.subs_by_jid, jid)
    }
    fn pending(&self) -> Result<Vec<(u64, Delivery)>, StoreError> {
        self.outbox
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let mut id = [0u8; 8];
                id.copy_from_slice(&k[..8.min(k.len())]);
                Ok((u64::from_be_bytes(id), decode(&k, &v)?))
            })
            .collect()
    }
    async fn mark_sent(&self, id: u64) -> Result<(), StoreError> {
        self.outbox.remove(id.to_be_bytes())?;
        self.flush().await
    }
    async fn note_attempt(&self, id: u64) -> Result<Option<Delivery>, StoreError> {
        let key = id.to_be_bytes();
        let Some(v) = self.outbox.get(key)? else {
            return Ok(None);
        };
        let mut d: Delivery = decode(&key, &v)?;
        d.attempts = d.attempts.saturating_add(1);
        // Compare-and-swap: a concurrent mark_sent wins.
        if self
            .outbox
            .compare_and_swap(key, Some(v), Some(encode(&d)))?
            .is_err()
        {
            return Ok(None);
        }
        self.flush().await?;
        Ok(Some(d))
    }
    async fn dead_letter(&self, id: u64) -> Result<(), StoreError> {
        let key = id.to_be_bytes();
        (&self.outbox, &self.dead).transaction(|(outbox, dead)| {
            if let Some(v) = outbox.remove(&key)? {
                dead.insert(&key, v)?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        while self.dead.len() > MAX_DEAD_LETTERS {
            let Some((k, _)) = self.dead.first()? else {
                break;
            };
            self.dead.remove(k)?;
        }
        self.flush().await
    }
    fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError> {
        self.dead
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }
    /// Makes every write so far durable.
    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Writes a domain's new state, the PubSub item and the deliveries it
    /// causes, atomically. Does nothing if the domain stopped being monitored.
    fn commit_check(
        &self,
        domain: &str,
        state: &DomainState,
        item: Option<&Item>,
        deliveries: &[Delivery],
    ) -> Result<bool, StoreError> {
        let ids: Vec<u64> = deliveries
            .iter()
            .map(|_| self.db.generate_id())
            .collect::<Result<_, _>>()?;
        let item_key = key2_bytes(domain, &self.db.generate_id()?.to_be_bytes());
        let value = encode(state);
        let written = (&self.domains, &self.outbox, &self.ps_items).transaction(
            |(domains, outbox, items)| {
                if domains.get(domain)?.is_none() {
                    return Ok(false);
                }
                domains.insert(domain.as_bytes(), value.clone())?;
                if let Some(item) = item {
                    items.insert(item_key.clone(), encode(item))?;
                }
                for (id, d) in ids.iter().zip(deliveries) {
                    outbox.insert(&id.to_be_bytes(), encode(d))?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(true)
            },
        )?;
        if written && item.is_some() {
            self.trim_items(domain)?;
        }
        Ok(written)
    }

    /// Queues deliveries that belong to no domain state (operator alerts).
    fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        for d in deliveries {
            let id = self.db.generate_id()?;
            self.outbox.insert(id.to_be_bytes(), encode(d))?;
        }
        Ok(())
    }

    /// A named piece of the bot's own state.
    fn meta<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, StoreError> {
        match self.meta.get(name)? {
            Some(v) => Ok(Some(decode(name.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Stores a named piece of the bot's own state.
    fn put_meta<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StoreError> {
        self.meta.insert(name, encode(value))?;
        Ok(())
    }

    /// Adds a PubSub subscriber to a node (and monitors the domain).
    fn pubsub_subscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError> {
        let _held = self.lock_membership();
        self.monitor(node)?;
        let fresh = (&self.ps_subs, &self.ps_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.insert(key2(node, jid), b"".as_slice())?;
            by_jid.insert(ps_reverse(jid, node), b"".as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_none())
        })?;
        Ok(fresh)
    }

    /// Removes a PubSub subscriber; returns whether it was subscribed.
    fn pubsub_unsubscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError> {
        let _held = self.lock_membership();
        let existed = (&self.ps_subs, &self.ps_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.remove(key2(node, jid))?;
            by_jid.remove(ps_reverse(jid, node))?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_some())
        })?;
        self.forget_if_unfollowed(node)?;
        Ok(existed)
    }

    fn put_evidence(&self, domain: &str, record: &EvidenceRecord) -> Result<(), StoreError> {
        let seq = self.db.generate_id()?;
        self.evidence
            .insert(key2_bytes(domain, &seq.to_be_bytes()), encode(record))?;
        let keys: Vec<_> = self
            .evidence
            .scan_prefix(prefix(domain))
            .keys()
            .collect::<Result<_, _>>()?;
        for k in keys.iter().take(keys.len().saturating_sub(MAX_EVIDENCE)) {
            self.evidence.remove(k)?;
        }
        Ok(())
    }

    fn evidence(&self, domain: &str) -> Result<Vec<EvidenceRecord>, StoreError> {
        self.evidence
            .scan_prefix(prefix(domain))
            .rev()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// The JIDs subscribed to a node.
    fn pubsub_subscribers(&self, node: &str) -> Result<Vec<String>, StoreError> {
        second_parts(&self.ps_subs, node)
    }

    fn pubsub_subscriptions_of(
        &self,
        bare: &str,
        max: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        // The reverse index: bare JID \0 node \0 JID, one scan of one prefix.
        second_parts(&self.ps_by_jid, bare)?
            .into_iter()
            .take(max)
            .map(|rest| match rest.split_once('\0') {
                Some((node, jid)) => Ok((node.to_owned(), jid.to_owned())),
                None => Err(StoreError::Corrupt {
                    key: format!("ps_by_jid {bare}"),
                    detail: "no JID after the node".into(),
                }),
            })
            .collect()
    }

    /// Publishes an item on a node (idempotent per item id), keeping the newest [`MAX_ITEMS`].
    fn put_item(&self, node: &str, item: &Item) -> Result<bool, StoreError> {
        if self
            .items(node, usize::MAX)?
            .iter()
            .any(|i| i.id == item.id)
        {
            return Ok(false);
        }
        let seq = self.db.generate_id()?;
        self.ps_items
            .insert(key2_bytes(node, &seq.to_be_bytes()), encode(item))?;
        self.trim_items(node)?;
        Ok(true)
    }

    fn membership_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn last_checked(&self, domain: &str) -> Result<Option<std::time::SystemTime>, StoreError> {
        let Some(v) = self.checked.get(domain)? else {
            return Ok(None);
        };
        let ms: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            key: domain.to_owned(),
            detail: format!("{} bytes where a time of 8 was expected", v.len()),
        })?;
        Ok(std::time::UNIX_EPOCH
            .checked_add(std::time::Duration::from_millis(u64::from_be_bytes(ms))))
    }

    fn note_checked(&self, domain: &str, at: std::time::SystemTime) -> Result<(), StoreError> {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        (&self.domains, &self.checked).transaction(|(domains, checked)| {
            // A domain unsubscribed during its check gets no entry back.
            if domains.get(domain)?.is_some() {
                checked.insert(domain.as_bytes(), &ms.to_be_bytes())?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        })?;
        Ok(())
    }

    /// The newest `max` items of a node, newest first.
    fn items(&self, node: &str, max: usize) -> Result<Vec<Item>, StoreError> {
        self.ps_items
            .scan_prefix(prefix(node))
            .rev()
            .take(max)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }
}

/// `ps_by_jid` key: bare JID `\0` node `\0` full JID, so one scan of the
/// bare JID finds every node any of its resources follows.
fn ps_reverse(jid: &str, node: &str) -> Vec<u8> {
    let bare = jid.split('/').next().unwrap_or(jid);
    let mut k = key2(bare, node);
    k.push(0);
    k.extend_from_slice(jid.as_bytes());
    k
}

fn key2_bytes(a: &str, b: &[u8]) -> Vec<u8> {
    let mut k = prefix(a);
    k.extend_from_slice(b);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sink;
    use crate::report::Verdict;

    #[test]
    fn subscriptions_both_ways_and_monitoring_follows_them() {
        let s = Store::temporary().unwrap();
        assert!(s.subscribe("example.org", "alice@localhost").unwrap());
        assert!(!s.subscribe("example.org", "alice@localhost").unwrap());
        s.subscribe("example.org", "bob@localhost").unwrap();
        s.subscribe("example.net", "alice@localhost").unwrap();
        assert_eq!(
            s.subscribers("example.org").unwrap(),
            vec!["alice@localhost", "bob@localhost"]
        );
        assert_eq!(
            s.subscriptions_of("alice@localhost").unwrap(),
            vec!["example.net", "example.org"]
        );
        assert_eq!(s.monitored().unwrap(), vec!["example.net", "example.org"]);
        assert!(s.unsubscribe("example.net", "alice@localhost").unwrap());
        assert!(!s.unsubscribe("example.net", "alice@localhost").unwrap());
        assert_eq!(s.monitored().unwrap(), vec!["example.org"]);
        // A prefix of another domain must not leak into its scan.
        s.subscribe("example.org.uk", "carol@localhost").unwrap();
        assert_eq!(s.subscribers("example.org").unwrap().len(), 2);
    }

    #[test]
    fn pubsub_subscriptions_of_one_bare_jid_only() {
        let s = Store::temporary().unwrap();
        s.pubsub_subscribe("a.org", "alice@x").unwrap();
        s.pubsub_subscribe("b.org", "alice@x/phone").unwrap();
        s.pubsub_subscribe("a.org", "alice@xy").unwrap();
        s.pubsub_subscribe("c.org", "bob@x").unwrap();
        assert_eq!(
            s.pubsub_subscriptions_of("alice@x", 10).unwrap(),
            vec![
                ("a.org".to_string(), "alice@x".to_string()),
                ("b.org".to_string(), "alice@x/phone".to_string())
            ]
        );
        assert_eq!(s.pubsub_subscriptions_of("alice@x", 1).unwrap().len(), 1);
        assert!(s.pubsub_subscriptions_of("carol@x", 10).unwrap().is_empty());
    }

    #[test]
    fn pubsub_subscriber_keeps_domain_monitored() {
        let s = Store::temporary().unwrap();
        s.subscribe("example.org", "alice@localhost").unwrap();
        s.pubsub_subscribe("example.org", "bob@localhost/res")
            .unwrap();
        s.unsubscribe("example.org", "alice@localhost").unwrap();
        assert_eq!(s.monitored().unwrap(), vec!["example.org"]);
        s.pubsub_unsubscribe("example.org", "bob@localhost/res")
            .unwrap();
        assert!(s.monitored().unwrap().is_empty());
    }

    #[test]
    fn a_subscribe_racing_an_unsubscribe_never_leaves_a_follower_unmonitored() {
        let s = Store::temporary().unwrap();
        let mut lost = 0;
        for i in 0..300 {
            let d = format!("d{i}.example");
            s.subscribe(&d, "bob@x").unwrap();
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let (s1, s2) = (s.clone(), s.clone());
            let (b1, b2) = (barrier.clone(), barrier.clone());
            let (d1, d2) = (d.clone(), d.clone());
            let chat = std::thread::spawn(move || {
                b1.wait();
                if i % 2 == 0 {
                    s1.subscribe(&d1, "alice@x").unwrap();
                } else {
                    s1.pubsub_subscribe(&d1, "alice@x/r").unwrap();
                }
            });
            let gone = std::thread::spawn(move || {
                b2.wait();
                s2.unsubscribe(&d2, "bob@x").unwrap();
            });
            chat.join().unwrap();
            gone.join().unwrap();
            if s.domain_state(&d).unwrap().is_none() {
                lost += 1;
            }
        }
        assert_eq!(lost, 0, "followed domains left unmonitored");
    }

    #[test]
    fn put_last_report_never_overwrites_a_committed_state() {
        let s = Store::temporary().unwrap();
        s.subscribe("example.org", "alice@x").unwrap();
        let report = Report {
            domain: "example.org".into(),
            checked_at: "2026-12-03T00:00:00Z".into(),
            verdict: Verdict::Ok,
            endpoints: vec![],
            records_to_add: vec![],
            advice: vec![],
            transport: "direct".into(),
            errors: vec![],
            bogus_rrsets: vec![],
            evidence: vec![],
            nxdomain: false,
            resolvers: vec![],
        };
        let writer = {
            let s = s.clone();
            std::thread::spawn(move || {
                for n in 1..=2000u32 {
                    let state = DomainState {
                        unreachable_streak: n,
                        ..DomainState::default()
                    };
                    s.commit_check("example.org", &state, None, &[]).unwrap();
                }
            })
        };
        while !writer.is_finished() {
            s.put_last_report("example.org", &report).unwrap();
        }
        writer.join().unwrap();
        s.put_last_report("example.org", &report).unwrap();
        let state = s.domain_state("example.org").unwrap().unwrap();
        assert_eq!(
            state.unreachable_streak, 2000,
            "a committed state was overwritten"
        );
        assert!(state.last_report.is_some());
    }

    #[test]
    fn evidence_is_kept_newest_first_bounded_and_forgotten_with_the_domain() {
        let s = Store::temporary().unwrap();
        s.subscribe("example.org", "alice@x").unwrap();
        s.subscribe("example.org.uk", "alice@x").unwrap();
        let record = |n: usize| EvidenceRecord {
            alert_id: format!("a{n}"),
            title: "t".into(),
            items: vec![crate::report::Evidence {
                chain_pem: "-----BEGIN CERTIFICATE-----".into(),
                ..Default::default()
            }],
        };
        for n in 0..(MAX_EVIDENCE + 3) {
            s.put_evidence("example.org", &record(n)).unwrap();
        }
        s.put_evidence("example.org.uk", &record(99)).unwrap();
        let kept = s.evidence("example.org").unwrap();
        assert_eq!(kept.len(), MAX_EVIDENCE);
        assert_eq!(
            kept[0].alert_id,
            format!("a{}", MAX_EVIDENCE + 2),
            "newest first"
        );
        s.unsubscribe("example.org", "alice@x").unwrap();
        assert!(s.evidence("example.org").unwrap().is_empty());
        assert_eq!(
            s.evidence("example.org.uk").unwrap().len(),
            1,
            "not a prefix match"
        );
    }

    #[tokio::test]
    async fn attempts_are_counted_and_dead_letters_leave_the_queue() {
        let s = Store::temporary().unwrap();
        let d = |id: &str| Delivery {
            alert_id: id.into(),
            sink: Sink::Chat("alice@localhost".into()),
            title: "t".into(),
            content: "c".into(),
            updated: "2026-12-03T00:00:00Z".into(),
            attempts: 0,
        };
        s.enqueue(&[d("stuck"), d("next")]).unwrap();
        let pending = s.pending().unwrap();
        let (stuck, next) = (pending[0].0, pending[1].0);
        for n in 1..=3 {
            let got = s.note_attempt(stuck).await.unwrap().unwrap();
            assert_eq!(got.attempts, n);
        }
        assert_eq!(
            s.pending().unwrap()[0].1.attempts,
            3,
            "stored, not only returned"
        );
        s.dead_letter(stuck).await.unwrap();
        let left: Vec<String> = s
            .pending()
            .unwrap()
            .into_iter()
            .map(|(_, d)| d.alert_id)
            .collect();
        assert_eq!(left, vec!["next"], "the queue goes on behind it");
        let dead = s.dead_letters().unwrap();
        assert_eq!(
            (dead.len(), dead[0].alert_id.as_str(), dead[0].attempts),
            (1, "stuck", 3)
        );
        // Gone from the queue: no more attempts, no second dead letter.
        assert!(s.note_attempt(stuck).await.unwrap().is_none());
        s.dead_letter(stuck).await.unwrap();
        assert_eq!(s.dead_letters().unwrap().len(), 1);
        s.mark_sent(next).await.unwrap();
        assert!(s.note_attempt(next).await.unwrap().is_none());
        // Bounded.
        for i in 0..(MAX_DEAD_LETTERS + 3) {
            s.enqueue(&[d(&format!("d{i}"))]).unwrap();
            let id = s.pending().unwrap()[0].0;
            s.dead_letter(id).await.unwrap();
        }
        let dead = s.dead_letters().unwrap();
        assert_eq!(dead.len(), MAX_DEAD_LETTERS);
        assert_eq!(
            dead.last().unwrap().alert_id,
            format!("d{}", MAX_DEAD_LETTERS + 2)
        );
    }

    #[test]
    fn commit_check_writes_state_and_outbox_together() {
        let s = Store::temporary().unwrap();
        let d = Delivery {
            alert_id: "a1".into(),
            sink: Sink::Chat("alice@localhost".into()),
            title: "t".into(),
            content: "c".into(),
            updated: "2026-11-22T12:00:00Z".into(),
            attempts: 0,
        };
        let state = DomainState {
            state: Some(Verdict::Mismatch),
            ..DomainState::default()
        };
        let item = Item {
            id: "a1".into(),
            title: "t".into(),
            content: "c".into(),
            updated: "u".into(),
        };
        // Not monitored: nothing is written.
        assert!(!s
            .commit_check("example.org", &state, Some(&item), std::slice::from_ref(&d))
            .unwrap());
        assert!(s.pending().unwrap().is_empty());
        assert!(s.items("example.org", 10).unwrap().is_empty());
        s.monitor("example.org").unwrap();
        assert!(s
            .commit_check("example.org", &state, Some(&item), std::slice::from_ref(&d))
            .unwrap());
        assert_eq!(s.items("example.org", 10).unwrap(), vec![item]);
        let pending = s.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1, d);
        assert_eq!(
            s.domain_state("example.org").unwrap().unwrap().state,
            Some(Verdict::Mismatch)
        );
    }

    #[test]
    fn items_are_idempotent_newest_first_and_bounded() {
        let s = Store::temporary().unwrap();
        for i in 0..(MAX_ITEMS + 5) {
            let item = Item {
                id: format!("i{i}"),
                title: "t".into(),
                content: "c".into(),
                updated: "u".into(),
            };
            assert!(s.put_item("example.org", &item).unwrap());
            assert!(!s.put_item("example.org", &item).unwrap());
        }
        let items = s.items("example.org", usize::MAX).unwrap();
        assert_eq!(items.len(), MAX_ITEMS);
        assert_eq!(items[0].id, format!("i{}", MAX_ITEMS + 4));
        assert!(s.items("example.net", 10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.subscribe("example.org", "alice@localhost").unwrap();
            s.flush().await.unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.subscriptions_of("alice@localhost").unwrap(),
            vec!["example.org"]
        );
    }

    #[test]
    fn membership_changes_bump_the_generation_and_checked_times_follow_it() {
        let s = Store::temporary().unwrap();
        let g0 = s.membership_generation();
        s.subscribe("example.org", "alice@localhost").unwrap();
        let g1 = s.membership_generation();
        assert_ne!(g0, g1, "a new domain");
        s.subscribe("example.org", "bob@localhost").unwrap();
        assert_eq!(
            s.membership_generation(),
            g1,
            "a new subscriber of a known domain"
        );
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        s.note_checked("example.org", at).unwrap();
        assert_eq!(s.last_checked("example.org").unwrap(), Some(at));
        s.note_checked("other.org", at).unwrap();
        assert_eq!(s.last_checked("other.org").unwrap(), None, "not monitored");
        s.unsubscribe("example.org", "alice@localhost").unwrap();
        assert_eq!(s.membership_generation(), g1, "still followed by bob");
        s.unsubscribe("example.org", "bob@localhost").unwrap();
        assert_ne!(s.membership_generation(), g1, "no longer monitored");
        assert_eq!(
            s.last_checked("example.org").unwrap(),
            None,
            "forgotten with it"
        );
        let g2 = s.membership_generation();
        s.pubsub_subscribe("example.net", "carol@localhost")
            .unwrap();
        assert_ne!(s.membership_generation(), g2, "PubSub counts too");
    }
}

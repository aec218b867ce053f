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
//! | `ps_subs`     | node `\0` JID          | empty (PubSub subscriber)  |
//! | `ps_items`    | node `\0` u64 BE seq   | [`Item`]                   |
//! | `meta`        | name                   | JSON of the bot's own state |
//!
//! The rest of the program goes through the [`StateStore`] trait. A domain is
//! monitored while it has an entry in `domains`. A state change
//! and the deliveries it causes are written in one transaction, so a crash
//! can neither lose an alert nor let a re-check raise it twice. Writes that a
//! user was told about are flushed before the reply.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::error::{ErrorKind, HasKind};
use crate::model::{Delivery, DomainState, Item};
use crate::report::Report;

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
    /// Publishes an item on a node (idempotent per item id), keeping the newest [`MAX_ITEMS`].
    fn put_item(&self, node: &str, item: &Item) -> Result<bool, StoreError>;
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
    ps_subs: sled::Tree,
    ps_items: sled::Tree,
    meta: sled::Tree,
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
            ps_subs: db.open_tree("ps_subs")?,
            ps_items: db.open_tree("ps_items")?,
            meta: db.open_tree("meta")?,
            db,
        })
    }

    /// Stops monitoring a domain nobody follows any more.
    fn forget_if_unfollowed(&self, domain: &str) -> Result<(), StoreError> {
        if self.subscribers(domain)?.is_empty() && self.pubsub_subscribers(domain)?.is_empty() {
            self.domains.remove(domain)?;
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
        self.domains.fetch_and_update(domain, |old| {
            // Not monitored: stays absent. Unreadable: left as it is.
            let old = old?;
            match serde_json::from_slice::<DomainState>(old) {
                Ok(mut state) => {
                    state.last_report = Some(report.clone());
                    Some(encode(&state))
                }
                Err(_) => Some(old.to_vec()),
            }
        })?;
        Ok(())
    }
    fn subscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError> {
        self.monitor(domain)?;
        let fresh = (&self.subs, &self.subs_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.insert(key2(domain, jid), b"".as_slice())?;
            by_jid.insert(key2(jid, domain), b"".as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_none())
        })?;
        Ok(fresh)
    }
    fn unsubscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError> {
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
        self.monitor(node)?;
        Ok(self
            .ps_subs
            .insert(key2(node, jid), b"".as_slice())?
            .is_none())
    }

    /// Removes a PubSub subscriber; returns whether it was subscribed.
    fn pubsub_unsubscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError> {
        let existed = self.ps_subs.remove(key2(node, jid))?.is_some();
        self.forget_if_unfollowed(node)?;
        Ok(existed)
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
        let mut out = Vec::new();
        for key in self.ps_subs.iter().keys() {
            let key = key?;
            let Some(pos) = key.iter().position(|b| *b == 0) else {
                continue;
            };
            let node = String::from_utf8_lossy(&key[..pos]).into_owned();
            let jid = second_part(&key);
            if jid.split('/').next() == Some(bare) {
                out.push((node, jid));
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
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
    fn commit_check_writes_state_and_outbox_together() {
        let s = Store::temporary().unwrap();
        let d = Delivery {
            alert_id: "a1".into(),
            sink: Sink::Chat("alice@localhost".into()),
            title: "t".into(),
            content: "c".into(),
            updated: "2026-11-22T12:00:00Z".into(),
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
}

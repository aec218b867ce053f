//! The sled trees and every operation on them, synchronous. Reads run on
//! any thread; writes run only on the owner thread ([`super::owner`]), one
//! at a time, so no two sled transactions or flushes ever run at once.

use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::{EvidenceRecord, StoreError, MAX_DEAD_LETTERS, MAX_EVIDENCE, MAX_ITEMS};
use crate::model::{Delivery, DomainState, Item};
use crate::report::Report;

/// The sled trees. Only the owner thread writes through these; anyone reads.
pub(super) struct Trees {
    pub(super) db: sled::Db,
    domains: sled::Tree,
    subs: sled::Tree,
    subs_by_jid: sled::Tree,
    outbox: sled::Tree,
    dead: sled::Tree,
    ps_subs: sled::Tree,
    ps_by_jid: sled::Tree,
    evidence: sled::Tree,
    ps_items: sled::Tree,
    meta: sled::Tree,
    checked: sled::Tree,
    generation: std::sync::atomic::AtomicU64,
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

pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain data serialises")
}

impl Trees {
    pub(super) fn from_db(db: sled::Db) -> Result<Trees, StoreError> {
        Ok(Trees {
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
            checked: db.open_tree("checked")?,
            // Starts above 0, so a monitor that has seen nothing reads the set.
            generation: std::sync::atomic::AtomicU64::new(1),
            db,
        })
        .and_then(Trees::index_pubsub)
    }

    /// Builds the PubSub reverse index of a store written before it existed.
    pub(super) fn index_pubsub(self) -> Result<Trees, StoreError> {
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

    /// Stops monitoring a domain nobody follows any more.
    pub(super) fn forget_if_unfollowed(&self, domain: &str) -> Result<(), StoreError> {
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

    pub(super) fn trim_items(&self, node: &str) -> Result<(), StoreError> {
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

    pub(super) fn membership_changed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Approximate size on disk, for benchmarks.
    pub(super) fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

impl Trees {
    pub(super) fn monitor(&self, domain: &str) -> Result<bool, StoreError> {
        let fresh = encode(&DomainState::default());
        let previous = self
            .domains
            .compare_and_swap(domain, None as Option<&[u8]>, Some(fresh))?;
        if previous.is_ok() {
            self.membership_changed();
        }
        Ok(previous.is_ok())
    }
    pub(super) fn monitored(&self) -> Result<Vec<String>, StoreError> {
        self.domains
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }
    pub(super) fn domain_state(&self, domain: &str) -> Result<Option<DomainState>, StoreError> {
        match self.domains.get(domain)? {
            Some(v) => Ok(Some(decode(domain.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }
    /// Replaces only the last report, atomically: a scheduled check
    /// committing at the same time keeps its alert state.
    pub(super) fn put_last_report(&self, domain: &str, report: &Report) -> Result<(), StoreError> {
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
    pub(super) fn subscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError> {
        self.monitor(domain)?;
        let fresh = (&self.subs, &self.subs_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.insert(key2(domain, jid), b"".as_slice())?;
            by_jid.insert(key2(jid, domain), b"".as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_none())
        })?;
        Ok(fresh)
    }
    pub(super) fn unsubscribe(&self, domain: &str, jid: &str) -> Result<bool, StoreError> {
        let existed = (&self.subs, &self.subs_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.remove(key2(domain, jid))?;
            by_jid.remove(key2(jid, domain))?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_some())
        })?;
        self.forget_if_unfollowed(domain)?;
        Ok(existed)
    }
    pub(super) fn subscribers(&self, domain: &str) -> Result<Vec<String>, StoreError> {
        second_parts(&self.subs, domain)
    }
    pub(super) fn subscriptions_of(&self, jid: &str) -> Result<Vec<String>, StoreError> {
        second_parts(&self.subs_by_jid, jid)
    }
    pub(super) fn pending(&self) -> Result<Vec<(u64, Delivery)>, StoreError> {
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
    pub(super) fn mark_sent(&self, id: u64) -> Result<(), StoreError> {
        self.outbox.remove(id.to_be_bytes())?;
        Ok(())
    }
    pub(super) fn note_attempt(&self, id: u64) -> Result<Option<Delivery>, StoreError> {
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
        Ok(Some(d))
    }
    pub(super) fn dead_letter(&self, id: u64) -> Result<(), StoreError> {
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
        Ok(())
    }
    pub(super) fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError> {
        self.dead
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }
    /// Writes a domain's new state, the PubSub item and the deliveries it
    /// causes, atomically. Does nothing if the domain stopped being monitored.
    pub(super) fn commit_check(
        &self,
        domain: &str,
        state: &DomainState,
        items: &[Item],
        deliveries: &[Delivery],
    ) -> Result<bool, StoreError> {
        let ids: Vec<u64> = deliveries
            .iter()
            .map(|_| self.db.generate_id())
            .collect::<Result<_, _>>()?;
        // Item keys in order: the node lists them in the order they went out.
        let item_keys: Vec<Vec<u8>> = items
            .iter()
            .map(|_| Ok(key2_bytes(domain, &self.db.generate_id()?.to_be_bytes())))
            .collect::<Result<_, StoreError>>()?;
        let value = encode(state);
        let written = (&self.domains, &self.outbox, &self.ps_items).transaction(
            |(domains, outbox, ps_items)| {
                if domains.get(domain)?.is_none() {
                    return Ok(false);
                }
                domains.insert(domain.as_bytes(), value.clone())?;
                for (key, item) in item_keys.iter().zip(items) {
                    ps_items.insert(key.clone(), encode(item))?;
                }
                for (id, d) in ids.iter().zip(deliveries) {
                    outbox.insert(&id.to_be_bytes(), encode(d))?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(true)
            },
        )?;
        if written && !items.is_empty() {
            self.trim_items(domain)?;
        }
        Ok(written)
    }

    /// Queues deliveries that belong to no domain state (operator alerts).
    pub(super) fn enqueue(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        for d in deliveries {
            let id = self.db.generate_id()?;
            self.outbox.insert(id.to_be_bytes(), encode(d))?;
        }
        Ok(())
    }

    /// A named piece of the bot's own state.
    pub(super) fn meta<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.meta.get(name)? {
            Some(v) => Ok(Some(decode(name.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Stores a named piece of the bot's own state.
    pub(super) fn put_meta(&self, name: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.meta.insert(name, value)?;
        Ok(())
    }

    /// Adds a PubSub subscriber to a node (and monitors the domain).
    pub(super) fn pubsub_subscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError> {
        self.monitor(node)?;
        let fresh = (&self.ps_subs, &self.ps_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.insert(key2(node, jid), b"".as_slice())?;
            by_jid.insert(ps_reverse(jid, node), b"".as_slice())?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_none())
        })?;
        Ok(fresh)
    }

    /// Removes a PubSub subscriber; returns whether it was subscribed.
    pub(super) fn pubsub_unsubscribe(&self, node: &str, jid: &str) -> Result<bool, StoreError> {
        let existed = (&self.ps_subs, &self.ps_by_jid).transaction(|(subs, by_jid)| {
            let old = subs.remove(key2(node, jid))?;
            by_jid.remove(ps_reverse(jid, node))?;
            Ok::<_, ConflictableTransactionError<StoreError>>(old.is_some())
        })?;
        self.forget_if_unfollowed(node)?;
        Ok(existed)
    }

    pub(super) fn put_evidence(
        &self,
        domain: &str,
        record: &EvidenceRecord,
    ) -> Result<(), StoreError> {
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

    pub(super) fn evidence(&self, domain: &str) -> Result<Vec<EvidenceRecord>, StoreError> {
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
    pub(super) fn pubsub_subscribers(&self, node: &str) -> Result<Vec<String>, StoreError> {
        second_parts(&self.ps_subs, node)
    }

    pub(super) fn pubsub_subscriptions_of(
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
    pub(super) fn put_item(&self, node: &str, item: &Item) -> Result<bool, StoreError> {
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

    pub(super) fn membership_generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(super) fn last_checked(
        &self,
        domain: &str,
    ) -> Result<Option<std::time::SystemTime>, StoreError> {
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

    pub(super) fn note_checked(
        &self,
        domain: &str,
        at: std::time::SystemTime,
    ) -> Result<(), StoreError> {
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
    pub(super) fn items(&self, node: &str, max: usize) -> Result<Vec<Item>, StoreError> {
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

//! Rollover watch: the TLSA records of each name compared, over time, with
//! the keys its endpoints present, to tell a half-done key rollover before
//! it breaks.
//!
//! Only `3 1 1` records (DANE-EE, SPKI, SHA-256) are classed: their digest
//! is the presented key's, so "which key does this record pin" needs no
//! guess. A name is looked at only when every endpoint there that presented
//! a key matched a record: a name with a mismatch is an alarm and stays one
//! (an interceptor's key is never "the next key", it matches no record), and
//! a record that matches no key never makes anything ok, it is only noted.
//!
//! With memory (the monitor keeps a [`RolloverMemory`] per domain):
//! - a record matching no key seen yet: "pre-published next key: good";
//! - a record of a key the server presented before and no longer does,
//!   while another record matches: "no longer used: remove it after its
//!   TTL (safe after ...)", one TTL after we first saw it unused;
//! - a key presented for the first time whose record we first saw less
//!   than its TTL ago: a warning, resolvers may still give the old RRset;
//! - a name whose only record is one `3 1 1`: advice (the two-record recipe).
//!
//! Without memory (a one-off `check`) only the first and the last: a
//! record matching no presented key while another matches is "pre-published
//! next key, or an old key's leftover", and no publication time is known.
//!
//! Times are UNIX seconds; "first seen" is when CertWatch first saw a
//! record, not when it was published (that was at most one interval before).
//!
//! The same for a zone's keys (a KSK rollover: DS records in the parent
//! against the zone's KSKs) is [`watch_keys`]; its notes join the same list.

use serde::{Deserialize, Serialize};

use crate::horizon::{in_words, utc_minutes};

mod ksk;
pub use ksk::{watch_keys, SeenDs, MAX_DS};

/// TLSA records a domain's memory keeps at most.
pub const MAX_RECORDS: usize = 16;
/// Keys (SPKI digests) a domain's memory keeps at most.
pub const MAX_KEYS: usize = 16;

/// One TLSA name as one check saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The TLSA owner name, lowercase, without the trailing dot.
    pub name: String,
    /// The records there, in presentation form, lowercase.
    pub records: Vec<String>,
    /// SHA-256 digests of the SPKIs that endpoints there presented and
    /// that matched a record.
    pub presented: Vec<String>,
    /// An endpoint there is in alarm (mismatch, STARTTLS missing, bogus).
    pub alarm: bool,
    /// The TLSA RRset's TTL, when the check knows it.
    pub ttl: Option<u32>,
}

/// A TLSA record as the memory keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenRecord {
    /// Its owner name.
    pub name: String,
    /// The record, presentation form, lowercase.
    pub record: String,
    /// When CertWatch first saw it published.
    pub first_seen: u64,
    /// When CertWatch first saw it no longer matching the key presented
    /// while another record did (its key was used before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_since: Option<u64>,
    /// Whether a warning went out for its key presented too early.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warned: bool,
}

/// A key (SPKI SHA-256) an endpoint presented that matched a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenKey {
    /// The digest, lowercase hex.
    pub spki: String,
    /// When it was last presented.
    pub last_seen: u64,
}

/// What one domain's rollover watch remembers (stored, bounded).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloverMemory {
    /// TLSA records seen, at most [`MAX_RECORDS`].
    #[serde(default)]
    pub records: Vec<SeenRecord>,
    /// Keys presented that matched, at most [`MAX_KEYS`].
    #[serde(default)]
    pub keys: Vec<SeenKey>,
    /// DS records seen in the parents of the zones checked, at most
    /// [`MAX_DS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ds: Vec<SeenDs>,
}

impl RolloverMemory {
    /// Whether nothing is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.keys.is_empty() && self.ds.is_empty()
    }
}

/// What a rollover note says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloverKind {
    /// A record for a key not presented (yet): the next key, published ahead.
    PrePublished,
    /// The record of a key the server no longer presents.
    NoLongerUsed,
    /// A new key presented before its record's TTL passed since it was
    /// first seen (a warning).
    TooEarly,
    /// The name's only record is one `3 1 1`: advice.
    SingleRecord,
    /// A DS in the parent for a key the zone does not publish, while
    /// another DS matches: the next KSK pre-published, or a leftover.
    DsPrePublished,
    /// A KSK (SEP DNSKEY) no DS matches, while another key is matched:
    /// the next KSK waiting for its DS.
    KskWithoutDs,
    /// The zone's keys switched to a key whose DS was first seen less than
    /// the DS RRset's TTL ago (a warning).
    DsTooEarly,
}

/// One rollover note (docs/json.md `rollover[]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloverNote {
    /// What it says.
    pub kind: RolloverKind,
    /// The TLSA owner name (the zone, for the DS and KSK kinds).
    pub name: String,
    /// The record it is about, in presentation form (for a KSK: its key
    /// tag and algorithm).
    pub record: String,
    /// When CertWatch first saw the record (RFC 3339), when it knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// no_longer_used: when removing it is safe (RFC 3339); too_early:
    /// when every resolver has the new RRset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub safe_after: Option<String>,
    /// The TLSA RRset's TTL in seconds, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// The note in words.
    pub text: String,
}

/// What one check's rollover watch found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watched {
    /// Every note, for the report.
    pub notes: Vec<RolloverNote>,
    /// The notes to send as warnings now (each once).
    pub warnings: Vec<RolloverNote>,
}

/// The digest a `3 1 1` record pins, lowercase.
fn ee_spki(record: &str) -> Option<String> {
    let mut f = record.split_whitespace();
    let (u, s, m, hex) = (f.next()?, f.next()?, f.next()?, f.next()?);
    (u == "3" && s == "1" && m == "1" && f.next().is_none() && hex.len() == 64)
        .then(|| hex.to_ascii_lowercase())
}

/// The last second of year 9999: later times are shown as that (a clock or
/// TTL that absurd must not panic the formatting).
const LAST_TIME: u64 = 253_402_300_799;

/// "2026-12-05 10:00 UTC", for any time.
fn minutes(unix: u64) -> String {
    utc_minutes(unix.min(LAST_TIME))
}

fn rfc3339(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.min(LAST_TIME));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A record shortened for a sentence: "3 1 1 ab12cd34…".
fn short(record: &str) -> String {
    match ee_spki(record) {
        Some(hex) => format!("3 1 1 {}…", &hex[..12]),
        None => record.to_owned(),
    }
}

fn ttl_words(ttl: Option<u32>) -> String {
    match ttl {
        Some(t) if t < 60 => format!("TTL {t} s"),
        Some(t) => format!("TTL {}", in_words(u64::from(t))),
        None => "TTL unknown".into(),
    }
}

/// The rollover notes of one check, and the warnings due; `memory` (the
/// domain's, when monitored) is read and updated. `now` is the check's time.
pub fn watch(mut memory: Option<&mut RolloverMemory>, observed: &[Observed], now: u64) -> Watched {
    let mut out = Watched::default();
    for o in observed
        .iter()
        .filter(|o| !o.alarm && !o.presented.is_empty())
    {
        let known_name = memory
            .as_deref()
            .is_some_and(|m| m.records.iter().any(|r| r.name == o.name));
        let ee: Vec<(String, String)> = o
            .records
            .iter()
            .filter_map(|r| Some((r.clone(), ee_spki(r)?)))
            .collect();
        let in_use = ee.iter().any(|(_, k)| o.presented.contains(k));
        if in_use {
            for (record, key) in &ee {
                let note = match memory.as_deref_mut() {
                    Some(m) => judge_remembered(m, o, record, key, known_name, now),
                    None => judge_once(o, record, key),
                };
                if let Some((note, warn)) = note {
                    if warn {
                        out.warnings.push(note.clone());
                    }
                    out.notes.push(note);
                }
            }
            if o.records.len() == 1 && ee.len() == 1 {
                out.notes.push(single_record(o, &ee[0].0));
            }
        }
        if let Some(m) = memory.as_deref_mut() {
            remember(m, o, now);
        }
    }
    if let Some(m) = memory {
        prune(m, observed);
    }
    out
}

/// One-off: a record for a key not presented, while another matches.
fn judge_once(o: &Observed, record: &str, key: &str) -> Option<(RolloverNote, bool)> {
    if o.presented.iter().any(|p| p == key) {
        return None;
    }
    Some((
        RolloverNote {
            kind: RolloverKind::PrePublished,
            name: o.name.clone(),
            record: record.to_owned(),
            first_seen: None,
            safe_after: None,
            ttl: o.ttl,
            text: format!(
                "{} at {} matches no key presented now while another record matches: a pre-published next key (good: a certificate with that key works at once), or an old key's record left behind; one check cannot tell which, nor when it was published",
                short(record),
                o.name
            ),
        },
        false,
    ))
}

/// With memory: pre-published, no longer used, or a new key too early.
fn judge_remembered(
    m: &mut RolloverMemory,
    o: &Observed,
    record: &str,
    key: &str,
    known_name: bool,
    now: u64,
) -> Option<(RolloverNote, bool)> {
    let key_known = m.keys.iter().any(|k| k.spki == key);
    let presented = o.presented.iter().any(|p| p == key);
    let seen = m
        .records
        .iter_mut()
        .find(|r| r.name == o.name && r.record == record);
    let (first_seen, seen) = match seen {
        Some(r) => (r.first_seen, Some(r)),
        None => (now, None),
    };
    let ttl = o.ttl.map(u64::from);
    let note = |kind, safe_after: Option<u64>, text: String| RolloverNote {
        kind,
        name: o.name.clone(),
        record: record.to_owned(),
        first_seen: Some(rfc3339(first_seen)),
        safe_after: safe_after.map(rfc3339),
        ttl: o.ttl,
        text,
    };
    if presented {
        // A key presented for the first time at a name we watched before:
        // a switch. Too early while the record is younger than its TTL
        // (a record first seen only now was published with the switch).
        let until = first_seen.saturating_add(ttl.unwrap_or(0));
        let young = now < until || (first_seen == now && ttl.is_none());
        let warned = seen.as_ref().is_some_and(|r| r.warned);
        if !known_name || key_known || !young || warned {
            return None;
        }
        if let Some(r) = seen {
            r.warned = true;
        }
        let age = if first_seen == now {
            "first seen only now (published with the switch, or at most one check interval before)"
                .to_owned()
        } else {
            format!("first seen {} ago", in_words(now - first_seen))
        };
        let text = format!(
            "{} now presents a new key whose record {} was {age}, {}: some resolvers still give the old RRset without it, and DANE clients behind them fail until {}",
            o.name,
            short(record),
            ttl_words(o.ttl),
            if ttl.is_some() { minutes(until) } else { "its TTL has passed".into() }
        );
        let safe = ttl.map(|_| until);
        return Some((note(RolloverKind::TooEarly, safe, text), true));
    }
    if key_known {
        let since = match seen {
            Some(r) => *r.unused_since.get_or_insert(now),
            None => now,
        };
        let safe = ttl.map(|t| since.saturating_add(t));
        let when = match safe {
            Some(s) if s <= now => "safe now".to_owned(),
            Some(s) => format!("safe after {}", minutes(s)),
            None => "its TTL is unknown".to_owned(),
        };
        let text = format!(
            "{} at {}: no longer used (the server switched to the next key): remove it after its TTL ({when})",
            short(record),
            o.name
        );
        return Some((note(RolloverKind::NoLongerUsed, safe, text), false));
    }
    let text = format!(
        "{} at {}: pre-published next key: good (first seen {}; a certificate with that key works once the TTL has passed since publication)",
        short(record),
        o.name,
        minutes(first_seen)
    );
    Some((note(RolloverKind::PrePublished, None, text), false))
}

/// Advice for a name whose only record is one `3 1 1`.
fn single_record(o: &Observed, record: &str) -> RolloverNote {
    RolloverNote {
        kind: RolloverKind::SingleRecord,
        name: o.name.clone(),
        record: record.to_owned(),
        first_seen: None,
        safe_after: None,
        ttl: o.ttl,
        text: format!(
            "{} has a single 3 1 1 record: a certificate renewed with a new key breaks DANE until a new record is published and cached copies expire. Keep the key on renewal (certbot --reuse-key), or publish the next key's record beside the current one now (two records: current + next) and switch to it only after the TTL",
            o.name
        ),
    }
}

/// Adds what this check saw: its records (first seen now when new), the
/// keys that matched; forgets the records no longer published there.
fn remember(m: &mut RolloverMemory, o: &Observed, now: u64) {
    let key_known = |k: &str| m.keys.iter().any(|s| s.spki == k);
    let old_keys: Vec<bool> = o
        .records
        .iter()
        .map(|r| ee_spki(r).is_some_and(|k| key_known(&k)))
        .collect();
    m.records
        .retain(|r| r.name != o.name || o.records.contains(&r.record));
    for (record, old_key) in o.records.iter().zip(old_keys) {
        let in_use = ee_spki(record).is_some_and(|k| o.presented.contains(&k));
        match m
            .records
            .iter_mut()
            .find(|r| r.name == o.name && &r.record == record)
        {
            Some(r) if in_use => r.unused_since = None,
            Some(_) => {}
            None => m.records.push(SeenRecord {
                name: o.name.clone(),
                record: record.clone(),
                first_seen: now,
                // An old key's record published again is unused from now.
                unused_since: (old_key && !in_use && !o.presented.is_empty()).then_some(now),
                warned: false,
            }),
        }
    }
    for key in &o.presented {
        match m.keys.iter_mut().find(|k| &k.spki == key) {
            Some(k) => k.last_seen = now,
            None => m.keys.push(SeenKey {
                spki: key.clone(),
                last_seen: now,
            }),
        }
    }
}

/// Keeps the memory within its bounds: records of names this check did not
/// see go first, then the oldest; keys least recently presented first.
fn prune(m: &mut RolloverMemory, observed: &[Observed]) {
    while m.records.len() > MAX_RECORDS {
        let seen_now = |r: &SeenRecord| observed.iter().any(|o| o.name == r.name);
        let victim = m
            .records
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| (seen_now(r), r.first_seen))
            .map(|(i, _)| i)
            .unwrap_or(0);
        m.records.remove(victim);
    }
    while m.keys.len() > MAX_KEYS {
        let victim = m
            .keys
            .iter()
            .enumerate()
            .min_by_key(|(_, k)| k.last_seen)
            .map(|(i, _)| i)
            .unwrap_or(0);
        m.keys.remove(victim);
    }
}

#[cfg(test)]
mod tests;

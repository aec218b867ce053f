//! The KSK rollover analog of the TLSA notes: a zone's DS RRset in its
//! parent against its DNSKEY RRset ([`ZoneKeys`], both from secure answers:
//! an on-path attacker cannot add a DS, the parent signs it, nor a key,
//! the zone signs its DNSKEY RRset).
//!
//! A zone is looked at only when a DS there matches a key (otherwise the
//! zone does not validate, and that is the validator's finding):
//! - a DS matching no key of the zone: the next KSK pre-published at the
//!   parent, or a retired key's leftover;
//! - a SEP (KSK) key no DS matches: the next KSK waiting for its DS;
//! - with memory (monitored domains): every DS that matches a key now was
//!   first seen after the zone's older DS, less than the DS RRset's TTL
//!   ago: the zone switched keys too early (a warning, once per DS), as
//!   resolvers may still hold the old DS RRset, which matches no key now.
//!
//! Notes only: never an alarm, never a change of verdict.

use serde::{Deserialize, Serialize};

use super::{minutes, rfc3339, ttl_words, RolloverKind, RolloverMemory, RolloverNote, Watched};
use crate::horizon::{in_words, DsSeen, KeySeen, ZoneKeys};

/// DS records a domain's memory keeps at most.
pub const MAX_DS: usize = 16;

/// A DS record as the memory keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenDs {
    /// The zone it delegates to.
    pub zone: String,
    /// The record, presentation form, lowercase.
    pub record: String,
    /// When CertWatch first saw it in the parent.
    pub first_seen: u64,
    /// Whether a warning went out for keys switched to it too early.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warned: bool,
}

/// The KSK rollover notes of one check, and the warnings due; `memory`
/// (the domain's, when monitored) is read and updated.
pub fn watch_keys(
    mut memory: Option<&mut RolloverMemory>,
    zones: &[ZoneKeys],
    now: u64,
) -> Watched {
    let mut out = Watched::default();
    for z in zones {
        if z.ds.iter().any(|d| d.matches) {
            for d in z.ds.iter().filter(|d| !d.matches) {
                let first = memory
                    .as_deref()
                    .map(|m| first_seen(m, z, d).unwrap_or(now));
                out.notes.push(ds_pre_published(z, d, first, now));
            }
            for k in z.keys.iter().filter(|k| !k.matched) {
                out.notes.push(ksk_without_ds(z, k));
            }
            if let Some(note) = memory.as_deref_mut().and_then(|m| too_early(m, z, now)) {
                out.warnings.push(note.clone());
                out.notes.push(note);
            }
        }
        if let Some(m) = memory.as_deref_mut() {
            remember(m, z, now);
        }
    }
    if let Some(m) = memory {
        prune(m, zones);
    }
    out
}

fn first_seen(m: &RolloverMemory, z: &ZoneKeys, d: &DsSeen) -> Option<u64> {
    let record = d.record();
    m.ds.iter()
        .find(|s| s.zone == z.zone && s.record == record)
        .map(|s| s.first_seen)
}

/// "12345 13 2 ab12cd34ef56…".
fn short(d: &DsSeen) -> String {
    let digest = d.digest.get(..12).unwrap_or(&d.digest);
    format!("{} {} {} {digest}…", d.key_tag, d.algorithm, d.digest_type)
}

fn note(kind: RolloverKind, z: &ZoneKeys, record: String, text: String) -> RolloverNote {
    RolloverNote {
        kind,
        name: z.zone.clone(),
        record,
        first_seen: None,
        safe_after: None,
        ttl: z.ds_ttl,
        text,
    }
}

/// A DS for a key the zone does not publish, while another DS matches.
fn ds_pre_published(z: &ZoneKeys, d: &DsSeen, first: Option<u64>, now: u64) -> RolloverNote {
    let seen = match first {
        Some(t) => format!(" (first seen {})", minutes(t)),
        None => String::new(),
    };
    let mut n = note(
        RolloverKind::DsPrePublished,
        z,
        d.record(),
        format!(
            "the DS {} of {} in its parent is for a key the zone does not publish{seen}: a pre-published next KSK (good), or the leftover of a retired key (remove it from the parent)",
            short(d),
            z.zone
        ),
    );
    n.first_seen = first.map(|t| rfc3339(t.min(now)));
    n
}

/// A KSK no DS matches, while another key is matched.
fn ksk_without_ds(z: &ZoneKeys, k: &KeySeen) -> RolloverNote {
    note(
        RolloverKind::KskWithoutDs,
        z,
        format!("key tag {} algorithm {}", k.key_tag, k.algorithm),
        format!(
            "the KSK with key tag {} (algorithm {}) of {} is a key with no DS at the parent yet: a next KSK waiting for its DS (submit it to the parent when the rollover is due)",
            k.key_tag, k.algorithm, z.zone
        ),
    )
}

/// The zone's keys now rest only on DS records first seen after its older
/// ones, less than the DS TTL ago: a warning, once per DS.
fn too_early(m: &mut RolloverMemory, z: &ZoneKeys, now: u64) -> Option<RolloverNote> {
    let zone_first =
        m.ds.iter()
            .filter(|s| s.zone == z.zone)
            .map(|s| s.first_seen)
            .min()?;
    let ttl = z.ds_ttl.map(u64::from);
    let first = |d: &DsSeen| first_seen(m, z, d).unwrap_or(now);
    let young = |d: &DsSeen| {
        let f = first(d);
        f > zone_first && (now < f.saturating_add(ttl.unwrap_or(0)) || (f == now && ttl.is_none()))
    };
    let matching: Vec<&DsSeen> = z.ds.iter().filter(|d| d.matches).collect();
    if matching.is_empty() || !matching.iter().all(|d| young(d)) {
        return None;
    }
    let warned = |d: &&DsSeen| {
        let record = d.record();
        m.ds.iter()
            .any(|s| s.zone == z.zone && s.record == record && s.warned)
    };
    if matching.iter().any(warned) {
        return None;
    }
    let newest = *matching.iter().max_by_key(|d| first(d))?;
    let since = first(newest);
    let until = since.saturating_add(ttl.unwrap_or(0));
    for d in &matching {
        mark_warned(m, z, d, now);
    }
    let age = match since == now {
        true => {
            "first seen only now (published with the switch, or at most one check interval before)"
                .to_owned()
        }
        false => format!("published {} ago", in_words(now - since)),
    };
    let text = format!(
        "{} switched its keys to the KSK whose DS {} was {age}, {}: some resolvers still have the old DS, which matches no key of {} now, and fail to validate it until {}",
        z.zone,
        short(newest),
        ttl_words(z.ds_ttl),
        z.zone,
        match ttl {
            Some(_) => minutes(until),
            None => "its TTL has passed".into(),
        }
    );
    let mut n = note(RolloverKind::DsTooEarly, z, newest.record(), text);
    n.first_seen = Some(rfc3339(since));
    n.safe_after = ttl.map(|_| rfc3339(until));
    Some(n)
}

fn mark_warned(m: &mut RolloverMemory, z: &ZoneKeys, d: &DsSeen, now: u64) {
    let record = d.record();
    match m
        .ds
        .iter_mut()
        .find(|s| s.zone == z.zone && s.record == record)
    {
        Some(s) => s.warned = true,
        None => m.ds.push(SeenDs {
            zone: z.zone.clone(),
            record,
            first_seen: now,
            warned: true,
        }),
    }
}

/// Adds this check's DS records (first seen now when new); forgets those
/// no longer published for the zone.
fn remember(m: &mut RolloverMemory, z: &ZoneKeys, now: u64) {
    let records: Vec<String> = z.ds.iter().map(DsSeen::record).collect();
    m.ds.retain(|s| s.zone != z.zone || records.contains(&s.record));
    for record in records {
        if !m.ds.iter().any(|s| s.zone == z.zone && s.record == record) {
            m.ds.push(SeenDs {
                zone: z.zone.clone(),
                record,
                first_seen: now,
                warned: false,
            });
        }
    }
}

/// Keeps the memory within [`MAX_DS`]: DS records of zones this check did
/// not see go first, then the oldest.
fn prune(m: &mut RolloverMemory, zones: &[ZoneKeys]) {
    while m.ds.len() > MAX_DS {
        let seen_now = |s: &SeenDs| zones.iter().any(|z| z.zone == s.zone);
        let victim =
            m.ds.iter()
                .enumerate()
                .min_by_key(|(_, s)| (seen_now(s), s.first_seen))
                .map(|(i, _)| i)
                .unwrap_or(0);
        m.ds.remove(victim);
    }
}

#[cfg(test)]
#[path = "ksk_tests.rs"]
mod tests;

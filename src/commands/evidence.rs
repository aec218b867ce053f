//! `evidence DOMAIN`: what the endpoints presented at the last mismatch alert.

use super::{Access, Answer, Kind, Spec, DOMAIN};
use crate::domain::Domain;
use crate::engine::Engine;
use crate::store::{StateStore as _, StoreError};

/// `evidence`.
pub const SPEC: Spec = Spec {
    kind: Kind::Evidence,
    name: "evidence",
    title: "Evidence of the last mismatch",
    help: "what the endpoints presented at the last mismatch alert (certificate chains, PEM)",
    fields: &[DOMAIN],
    access: Access::Anyone,
};

/// The evidence kept with the newest mismatch alert: per endpoint, when and
/// from where it was seen, the key, and the chain as presented (PEM).
pub(super) fn run(engine: &Engine, domain: &Domain) -> Result<Answer, StoreError> {
    let kept = engine.store().evidence(domain.as_str())?;
    let Some(last) = kept.first() else {
        return Ok(Answer::done(format!(
            "No evidence kept for {domain}: it is kept when a mismatch is alerted."
        ))
        .about(domain));
    };
    let mut out = vec![format!(
        "Evidence for alert {} ({} kept in all): {}",
        last.alert_id,
        kept.len(),
        last.title
    )];
    for e in &last.items {
        let exit = e
            .exit
            .as_deref()
            .map(|x| format!(", exit relay {x}"))
            .unwrap_or_default();
        out.push(format!(
            "{} seen at {} over {}{exit}; key (SPKI sha256) {}\n{}",
            e.endpoint, e.seen_at, e.transport, e.spki_sha256, e.chain_pem
        ));
    }
    Ok(Answer::done(out.join("\n")).about(domain))
}

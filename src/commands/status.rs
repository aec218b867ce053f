//! `status DOMAIN`: the last result, whoever asked for it, without probing.

use super::{Access, Answer, Kind, Spec, DOMAIN};
use crate::domain::Domain;
use crate::engine::Engine;
use crate::render;
use crate::store::{StateStore as _, StoreError};

/// `status`.
pub const SPEC: Spec = Spec {
    kind: Kind::Status,
    name: "status",
    title: "A domain's last result",
    help: "the last result (whoever asked for it) in full, without probing",
    fields: &[DOMAIN],
    access: Access::Anyone,
};

pub(super) fn run(engine: &Engine, domain: &Domain, jid: &str) -> Result<Answer, StoreError> {
    let Some(report) = engine.last_report(domain.as_str())? else {
        let mine = super::list::followed_names(engine, jid)?;
        let text = match super::given::closest(domain.as_str(), &mine) {
            Some(likely) => format!(
                "No stored result for {domain}. Did you mean {likely}? Send \"status {likely}\", or \"check {domain}\" to check {domain} now."
            ),
            None => format!(
                "No stored result for {domain}. Send \"check {domain}\" to check it now."
            ),
        };
        return Ok(Answer::done(text).about(domain));
    };
    let now = crate::horizon::unix(engine.clock().now());
    let mut reply = render::status_reply(&report, engine.component(), now);
    if let Some(last) = engine.store().evidence(domain.as_str())?.first() {
        let when = last
            .items
            .first()
            .map(|e| e.seen_at.as_str())
            .unwrap_or("?");
        reply.push_str(&format!(
            "\nEvidence of the last mismatch ({when}): send \"evidence {domain}\" for the certificate chains presented."
        ));
    }
    Ok(Answer {
        report: Some(report),
        ..Answer::done(reply).about(domain)
    })
}

//! `test-alert` (operators): an alert to oneself, through the outbox like
//! any other, to see that alerts reach one.

use super::{Access, Answer, Kind, Spec};
use crate::engine::Engine;
use crate::model::{Delivery, Sink};
use crate::store::{StateStore as _, StoreError};

/// `test-alert`.
pub const SPEC: Spec = Spec {
    kind: Kind::TestAlert,
    name: "test-alert",
    title: "Send a test alert to yourself",
    help: "queue a test alert to yourself, delivered like any alert",
    fields: &[],
    access: Access::Operator,
};

pub(super) async fn run(engine: &Engine, jid: &str) -> Result<Answer, StoreError> {
    let now = engine.clock().now_rfc3339();
    let text = format!(
        "CertWatch test alert ({now}): alerts reach you. Nothing is wrong; an operator asked for this."
    );
    engine
        .store()
        .enqueue(&[Delivery {
            alert_id: format!("operator-test-{now}"),
            sink: Sink::Chat(jid.to_owned()),
            title: text.clone(),
            content: text,
            updated: now.clone(),
            attempts: 0,
        }])
        .await?;
    engine.wake_outbox();
    Ok(Answer::done(format!(
        "A test alert to {jid} is queued; it arrives as a chat message like any alert."
    )))
}

//! `check DOMAIN`: a check now, and what to fix.

use super::{Access, Answer, Field, FieldKind, Input, Kind, Spec, DOMAIN};
use crate::engine::{Engine, Error};
use crate::render;
use crate::vocab::ServiceSet;

/// `check`.
pub const SPEC: Spec = Spec {
    kind: Kind::Check,
    name: "check",
    title: "Check a domain now",
    help: "check a domain now and tell what to fix",
    fields: &[
        DOMAIN,
        Field {
            var: "service",
            label: "Services to check",
            kind: FieldKind::Service,
            required: false,
        },
    ],
    access: Access::Anyone,
};

pub(super) async fn run(engine: &Engine, input: &Input) -> Result<Answer, Error> {
    let domain = input.domain();
    let report = if input.service == ServiceSet::All {
        engine.check_now(domain).await?
    } else {
        engine.check_now_services(domain, input.service).await?
    };
    // Someone typed a server's host name: a monitored domain whose SRV
    // records point there is the likelier meaning than the parent.
    let likely = if report.host_unknown().is_some() {
        engine.domain_served_by(domain.as_str()).await?
    } else {
        None
    };
    let text = render::check_reply(
        &report,
        &render::Context {
            component: engine.component(),
            likely_domain: likely.as_deref(),
        },
    );
    Ok(Answer {
        report: Some(report),
        ..Answer::done(text).about(domain)
    })
}

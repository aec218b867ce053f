//! The operators' routes: `GET /metrics` and `GET /healthz`, and the timer
//! that copies what the store holds into the gauges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Web;
use crate::engine::Engine;
use crate::selfwatch::Cause;
use crate::store::StateStore as _;

/// How often the store-held gauges (domains, subscriptions, outbox) are
/// refreshed: a store scan per period, never per scrape.
pub const GAUGES_EVERY: Duration = Duration::from_secs(30);
/// How long one `/healthz` answer is reused (it writes to the store).
const HEALTH_FOR: Duration = Duration::from_secs(5);

/// `GET /metrics`: the Prometheus (OpenMetrics) text exposition.
pub async fn metrics(State(web): State<Arc<Web>>) -> Response {
    if !web.metrics_on {
        return super::pages::not_found().await;
    }
    let m = web.engine.metrics();
    m.set_circuits(web.engine.circuits_taken());
    let watch = web.engine.self_watch();
    for cause in Cause::ALL {
        let s = watch.get(cause);
        m.set_self_watch(cause.key(), s.alerted, s.failures);
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

/// `GET /healthz`: 200 "ok" while the store takes writes and no part of
/// the engine is failing; 503 and one line saying why otherwise.
pub async fn healthz(State(web): State<Arc<Web>>) -> Response {
    let cached = web.health.lock().expect("health lock").clone();
    let verdict = match cached {
        Some((at, v)) if at.elapsed() < HEALTH_FOR => v,
        _ => {
            let v = health(&web.engine).await;
            *web.health.lock().expect("health lock") = Some((Instant::now(), v.clone()));
            v
        }
    };
    match verdict {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn health(engine: &Engine) -> Result<(), String> {
    let now = engine.clock().now_rfc3339();
    engine
        .store()
        .put_meta("web_health", &now)
        .await
        .map_err(|e| {
            // The detail (paths, addresses) is for the log, not for anyone
            // who can reach /healthz.
            tracing::warn!(error = %e, "healthz: the store does not take writes");
            "the store does not take writes".to_owned()
        })?;
    let watch = engine.self_watch();
    if let Some((cause, s)) = watch.failing().find(|(_, s)| s.alerted) {
        return Err(format!(
            "{} failing since {} (the operators were told; details in the log)",
            cause.key(),
            s.failing_since.as_deref().unwrap_or("?"),
        ));
    }
    Ok(())
}

/// Copies the store's counts into the gauges now and every [`GAUGES_EVERY`].
pub async fn refresh_gauges(engine: Arc<Engine>) {
    loop {
        let e = engine.clone();
        match tokio::task::spawn_blocking(move || refresh_once(&e)).await {
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot count for the metrics"),
            Err(e) => tracing::warn!(error = %e, "counting for the metrics failed"),
            Ok(Ok(())) => {}
        }
        tokio::time::sleep(GAUGES_EVERY).await;
    }
}

/// Copies the store's counts into the gauges once (a scan of the store).
pub fn refresh_once(engine: &Engine) -> Result<(), crate::store::StoreError> {
    let store = engine.store();
    let m = engine.metrics();
    let domains = store.monitored()?;
    let (mut chat, mut pubsub) = (0usize, 0usize);
    for d in &domains {
        chat += store.subscribers(d)?.len();
        pubsub += store.pubsub_subscribers(d)?.len();
    }
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    m.domains.set(gauge(domains.len()));
    m.subscriptions
        .get_or_create(&vec![("kind", "chat".into())])
        .set(gauge(chat));
    m.subscriptions
        .get_or_create(&vec![("kind", "pubsub".into())])
        .set(gauge(pubsub));
    m.outbox_depth.set(gauge(store.pending()?.len()));
    m.dead_letters.set(gauge(store.dead_letters()?.len()));
    Ok(())
}

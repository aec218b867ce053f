//! The web front (docs/web.md): a second door to the same engine. It reads
//! results and starts checks; it never changes subscriptions (that needs an
//! XMPP identity).
//!
//! One handler per route, state through `State`, askama templates that
//! escape every value. Connections, header sizes, bodies and slow clients
//! are bounded here, before any handler runs.

pub mod checks;
pub mod client;
pub mod feed;
pub mod ops;
pub mod pages;
pub mod qr;
pub mod view;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tower::ServiceExt as _;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::{Config, ConfigError};
use crate::engine::Engine;

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 512;
/// The most a request body may hold (the form has one short field).
pub const MAX_BODY: usize = 8 * 1024;
/// The most the request line and headers may hold (hyper's buffer).
pub const MAX_HEADERS: usize = 16 * 1024;
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The Content-Security-Policy of every answer: our own stylesheet and
/// script only, no inline script, no framing, forms post only to us.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The peer address of a connection (a request extension).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What the handlers share.
pub struct Web {
    engine: Arc<Engine>,
    /// The public URL, without a trailing slash.
    base_url: String,
    /// The component's JID, when the XMPP side runs.
    component: Option<String>,
    proxies: Vec<(IpAddr, u8)>,
    checks: Arc<checks::Checks>,
    metrics_on: bool,
    health: Mutex<Option<(Instant, Result<(), String>)>>,
    /// QR codes drawn at once: one costs about a millisecond of CPU, so
    /// requests for random domains could otherwise take every core.
    qr_slots: Arc<tokio::sync::Semaphore>,
}

/// QR codes drawn at once (the rest wait up to [`QR_WAIT`], then get 503).
pub const QR_AT_ONCE: usize = 1;
/// How long a QR code request waits for its turn.
pub const QR_WAIT: Duration = Duration::from_secs(5);

/// How the web front runs, read from `[web]`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The public URL, without a trailing slash.
    pub base_url: String,
    /// Whose `X-Forwarded-For` is believed.
    pub proxies: Vec<(IpAddr, u8)>,
    /// Serve `/metrics`.
    pub metrics: bool,
    /// The component's JID, when the XMPP side runs.
    pub component: Option<String>,
}

impl Settings {
    /// Reads `[web]`; None when the web front is off.
    pub fn from_config(config: &Config, with_xmpp: bool) -> Result<Option<Settings>, ConfigError> {
        if !config.web.enabled() {
            return Ok(None);
        }
        Ok(Some(Settings {
            listen: config.web.listen_addr()?,
            base_url: config.web.base_url(),
            proxies: config.web.proxies()?,
            metrics: config.web.metrics,
            component: with_xmpp.then(|| config.xmpp.component.clone()),
        }))
    }
}

impl Web {
    /// The shared state of the handlers.
    pub fn new(engine: Arc<Engine>, settings: &Settings) -> Web {
        Web {
            engine,
            base_url: settings.base_url.clone(),
            component: settings.component.clone(),
            proxies: settings.proxies.clone(),
            checks: Default::default(),
            metrics_on: settings.metrics,
            health: Mutex::new(None),
            qr_slots: Arc::new(tokio::sync::Semaphore::new(QR_AT_ONCE)),
        }
    }

    fn client_ip(&self, peer: Peer, headers: &HeaderMap) -> IpAddr {
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        client::client_ip(peer.0.ip(), &forwarded, &self.proxies)
    }

    fn xmpp_view(&self, domain: &str) -> Option<pages::XmppView> {
        self.component
            .as_deref()
            .map(|c| pages::XmppView::new(c, domain))
    }
}

/// Every route, with the response headers and the bounds.
pub fn router(web: Arc<Web>) -> Router {
    let h = |name, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    Router::new()
        .route("/", get(pages::index))
        .route("/check", post(pages::check))
        .route("/domain/{domain}", get(pages::domain_any))
        .route("/domain/{domain}/badge.svg", get(feed::badge))
        .route("/domain/{domain}/qr.svg", get(pages::qr))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/style.css", get(style))
        .route("/copy.js", get(script))
        .fallback(pages::not_found)
        .with_state(web)
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(h(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(h(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(h(header::REFERRER_POLICY, "no-referrer"))
        .layer(h(header::X_FRAME_OPTIONS, "DENY"))
        .layer(h(header::CACHE_CONTROL, "no-store"))
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/style.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/copy.js"),
    )
}

/// Serves the web front on `listener` until `shutdown` completes.
pub async fn run(
    engine: Arc<Engine>,
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let web = Arc::new(Web::new(engine.clone(), &settings));
    let app = router(web);
    let gauges = settings
        .metrics
        .then(|| tokio::spawn(ops::refresh_gauges(engine)));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tracing::info!(listen = %settings.listen, url = %settings.base_url, "web front listening");
    let accept = async {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: pause, never spin.
                    tracing::warn!(error = %e, "web front cannot accept");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let app = app.clone();
            tokio::spawn(async move {
                serve_connection(tcp, peer, app).await;
                drop(permit);
            });
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = shutdown => {}
    }
    if let Some(g) = gauges {
        g.abort();
    }
}

async fn serve_connection(tcp: tokio::net::TcpStream, peer: SocketAddr, app: Router) {
    let service = app.map_request(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        req
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let io = hyper_util::rt::TokioIo::new(tcp);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADERS)
        .serve_connection(io, service);
    // A connection lives at most as long as a few requests may take.
    match tokio::time::timeout(REQUEST_TIMEOUT * 4, conn).await {
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "web connection ended"),
        Err(_) => tracing::debug!(%peer, "web connection timed out"),
        Ok(Ok(())) => {}
    }
}

#[cfg(test)]
mod tests;

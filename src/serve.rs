//! `certwatch serve`: opens the store, builds the engine, and runs the
//! monitor, the XMPP front and the web front until SIGINT or SIGTERM.
//! Without an `[xmpp]` section but with `[web]`, the web front runs alone.

use std::path::Path;
use std::sync::Arc;

use crate::clock;
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::error::{ErrorKind, HasKind};
use crate::setup::SetupError;
use crate::store::{StateStore as _, Store, StoreError};
use crate::web;
use crate::xmpp;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A part of the core could not be built from the configuration.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Another process holds the store's lock.
    #[error(
        "store {path} is in use: another certwatch is running on it (stop it first, or give this one its own store.path)"
    )]
    StoreInUse {
        /// The store's path.
        path: String,
    },
    /// The web front's address could not be bound.
    #[error("cannot listen on web.listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The watchdog's threads could not start.
    #[error("cannot start the watchdog: {0}")]
    Watchdog(String),
    /// The store could not be opened.
    #[error("cannot open store {path}: {source}")]
    Store {
        /// The store's path.
        path: String,
        /// Why.
        source: StoreError,
    },
}

impl HasKind for ServeError {
    fn kind(&self) -> ErrorKind {
        match self {
            ServeError::Config(_) => ErrorKind::Config,
            ServeError::Setup(e) => e.kind(),
            ServeError::Store { .. } | ServeError::StoreInUse { .. } => ErrorKind::Store,
            ServeError::Listen { .. } => ErrorKind::Config,
            ServeError::Watchdog(_) => ErrorKind::Bug,
        }
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    // `[web]` without `[xmpp]`: the web front alone (no chat, no PubSub).
    let web_alone = config.web.enabled() && !config.has_xmpp;
    let front = match web_alone {
        true => None,
        false => Some(xmpp::Settings::from_config(&config)?),
    };
    let web_settings = web::Settings::from_config(&config, front.is_some())?;
    let listener = match &web_settings {
        Some(w) => Some(
            tokio::net::TcpListener::bind(w.listen)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: w.listen,
                    source,
                })?,
        ),
        None => None,
    };
    let path = config.store.path.clone();
    let cache = config.store.cache_mib << 20;
    let store =
        Store::open_with_cache(Path::new(&path), cache).map_err(|source| match &source {
            // sled words a held lock as "could not acquire lock on …: WouldBlock".
            StoreError::Sled(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                ServeError::StoreInUse { path: path.clone() }
            }
            _ => ServeError::Store {
                path: path.clone(),
                source,
            },
        })?;
    let engine = Arc::new(Engine::new(config, store, clock::system())?);
    crate::watchdog::start(engine.clone()).map_err(|e| ServeError::Watchdog(e.to_string()))?;
    let lag_metrics = engine.metrics().clone();
    let monitor = tokio::spawn(crate::monitor::run_observed(
        engine.clone(),
        Arc::new(move |lag: std::time::Duration| {
            lag_metrics.scheduler_lag.set(lag.as_secs_f64());
        }),
    ));
    let web_front = async {
        match (web_settings, listener) {
            (Some(w), Some(l)) => web::run(engine.clone(), w, l, std::future::pending()).await,
            _ => std::future::pending().await,
        }
    };
    let xmpp_front = async {
        match front {
            Some(front) => xmpp::run(engine.clone(), front, shutdown_signal()).await,
            None => {
                tracing::info!("no [xmpp] section: the web front runs alone");
                shutdown_signal().await
            }
        }
    };
    // The XMPP front ends at the signal (after closing its stream); the
    // web front is dropped with it.
    tokio::select! {
        _ = xmpp_front => {}
        _ = web_front => {}
    }
    monitor.abort();
    if let Err(e) = engine.store().flush().await {
        tracing::warn!(error = %e, "cannot flush the store");
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

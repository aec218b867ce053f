//! `certwatch serve`: opens the store, builds the engine, and runs the
//! monitor and the XMPP front until SIGINT or SIGTERM.

use std::path::Path;
use std::sync::Arc;

use crate::clock;
use crate::config::{Config, ConfigError};
use crate::engine::Engine;
use crate::error::{ErrorKind, HasKind};
use crate::setup::SetupError;
use crate::store::{StateStore as _, Store, StoreError};
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
            ServeError::Watchdog(_) => ErrorKind::Bug,
        }
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let front = xmpp::Settings::from_config(&config)?;
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
    let monitor = tokio::spawn(crate::monitor::run(engine.clone()));
    xmpp::run(engine.clone(), front, shutdown_signal()).await;
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

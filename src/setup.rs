//! Building the service core's parts from the configuration: the resolver,
//! the transport and the checker. The command line and `serve` both come
//! here; nothing here knows about exit codes.

use std::path::PathBuf;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::{resolve_socket, Config, ConfigError};
use crate::dns::{Resolver, ResolverSettings};
use crate::error::{ErrorKind, HasKind};
use crate::probe::transport::{
    BootstrapWatch, Connector, ProgressFn, TorDirs, TransportSetupError,
};
use crate::probe::{Prober, Profiles};

/// How long the embedded Tor client may take to bootstrap.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);
/// How long arti may say it is blocked (offline, filtered, ...) before we give up.
pub const BOOTSTRAP_BLOCKED_LIMIT: Duration = Duration::from_secs(30);
/// How long the bootstrap may make no progress at all before we give up.
pub const BOOTSTRAP_STALL_LIMIT: Duration = Duration::from_secs(60);

/// Why a part could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport could not start (Tor did not bootstrap, or its config is bad).
    #[error(transparent)]
    Transport(#[from] TransportSetupError),
}

impl HasKind for SetupError {
    fn kind(&self) -> ErrorKind {
        match self {
            SetupError::Config(_) => ErrorKind::Config,
            SetupError::Transport(e) if e.is_config() => ErrorKind::Config,
            SetupError::Transport(_) => ErrorKind::Tor,
        }
    }
}

/// The resolver the configuration asks for.
pub fn resolver(config: &Config, clock: &SharedClock) -> Result<Resolver, SetupError> {
    let settings = ResolverSettings {
        nameservers: config.nameservers()?,
        trust_anchor: non_empty_path(&config.dns.trust_anchor),
        timeout: None,
        clock: Some(clock.clone()),
    };
    Resolver::new(&settings).map_err(|e| SetupError::Config(ConfigError::Invalid(e.to_string())))
}

/// Starts the configured transport (Tor bootstraps here).
pub async fn connector(config: &Config, dirs: Option<&TorDirs>) -> Result<Connector, SetupError> {
    connector_with_progress(config, dirs, None).await
}

/// Starts the configured transport, telling `progress` each new Tor bootstrap status.
pub async fn connector_with_progress(
    config: &Config,
    dirs: Option<&TorDirs>,
    progress: Option<ProgressFn>,
) -> Result<Connector, SetupError> {
    let socks5 = resolve_socket(&config.probe.socks5, "probe.socks5").ok();
    let arti = non_empty_path(&config.probe.arti_config);
    let watch = BootstrapWatch {
        timeout: BOOTSTRAP_TIMEOUT,
        blocked_limit: BOOTSTRAP_BLOCKED_LIMIT,
        stall_limit: BOOTSTRAP_STALL_LIMIT,
        progress,
    };
    if let Some(source) = config.probe_bind()? {
        return Ok(Connector::DirectFrom(source));
    }
    Ok(Connector::start(
        config.probe.transport,
        socks5,
        arti.as_deref(),
        dirs,
        watch,
        config.probe.timeout,
    )
    .await?)
}

/// The probe profiles `probe.s2s_profile` and `probe.c2s_profile` name,
/// built now: one that cannot be used here is a configuration error naming
/// its key, never a silent fallback to another.
pub fn profiles(config: &Config) -> Result<Profiles, SetupError> {
    let profiles = Profiles::new(config.probe.s2s_profile, config.probe.c2s_profile)
        .map_err(|e| SetupError::Config(ConfigError::Invalid(e.to_string())))?;
    tracing::debug!(
        s2s = config.probe.s2s_profile.as_str(),
        c2s = config.probe.c2s_profile.as_str(),
        openssl = openssl::version::version(),
        "probe profiles"
    );
    Ok(profiles)
}

/// A prober over a started transport, bounded by `probe.timeout`, speaking
/// as `profiles` say.
pub fn prober(config: &Config, connector: Connector, profiles: Profiles) -> Prober {
    // The prober leaves `from` out when probing that very domain: a server
    // refuses a stream "from" a host it serves itself.
    Prober::new(connector, config.probe.timeout, config.s2s_from())
        .with_max_endpoints(config.probe.max_endpoints)
        .with_circuit_budget(std::sync::Arc::new(circuit_budget(config)))
        .with_profiles(profiles)
}

/// The circuit budget `[probe]` asks for.
pub fn circuit_budget(config: &Config) -> crate::probe::CircuitBudget {
    crate::probe::CircuitBudget::new(config.probe.circuits_per_second, config.probe.circuit_burst)
}

fn non_empty_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

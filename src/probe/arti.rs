//! The embedded Tor client (arti): its configuration from the operator's
//! file, a watched bootstrap, and streams over fresh circuits through exits
//! that allow the target's address family.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::{
    DataStream, ErrorKind, HasKind, StreamPrefs, TorAddr, TorClient, TorClientConfig,
};
use tor_linkspec::HasRelayIds;
use tor_netdir::{FamilyRules, SubnetConfig};
use tor_proto::client::stream::ClientStreamCtrl;
use tor_rtcompat::PreferredRuntime;

use super::exits::{exit_acceptable, ExitCount, ExitTries};
use super::fault::{arti_attempt, Attempt, Fault, TorState};
use super::stream::{Carried, ConnectFailure, Connected, ExitRelay};

/// The embedded Tor client and the family rules its path selection uses.
#[derive(Clone)]
pub struct Tor {
    pub(super) client: Arc<TorClient<PreferredRuntime>>,
    pub(super) subnets: SubnetConfig,
    pub(super) carried: Carried,
}

/// Where arti keeps its state when the operator's file says nothing.
#[derive(Clone, Debug)]
pub struct TorDirs {
    /// arti's persistent state.
    pub state: PathBuf,
    /// arti's directory cache.
    pub cache: PathBuf,
}

/// Why the transport could not be started: Tor unavailable (exit 3) or bad config (78).
#[derive(Debug, thiserror::Error)]
pub enum TransportSetupError {
    /// The arti configuration file is unusable.
    #[error("arti configuration {path}: {detail}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// arti could not bootstrap.
    #[error("cannot bootstrap Tor, our own Tor client (not any server's doing): {0}; try: check that this host can reach the Tor network (firewall, proxy, clock) and read arti's messages in the log")]
    Bootstrap(String),
}

impl TransportSetupError {
    /// Whether this is the operator's configuration at fault (exit 78) rather than the network.
    pub fn is_config(&self) -> bool {
        matches!(self, TransportSetupError::Config { .. })
    }
}

/// The operator's ways out when Tor cannot bootstrap, appended to the error.
pub const BOOTSTRAP_HINT: &str = "check this machine's network connection; or use a system tor \
     (--transport socks5 --socks5 HOST:PORT, or transport = \"socks5\" in [probe]); or \
     --transport direct, which connects from this machine's own address, so the servers \
     and anyone on the path see who is checking (and an interceptor could spare those probes)";

/// Told each new Tor bootstrap status line.
pub type ProgressFn = Box<dyn Fn(&str) + Send + Sync>;

/// How a Tor bootstrap is watched: who hears of progress, and when to give up.
pub struct BootstrapWatch {
    /// Give up after this long in any case.
    pub timeout: Duration,
    /// Give up when arti has said it is blocked (offline, filtered, clock
    /// skewed, ...) for this long without a break.
    pub blocked_limit: Duration,
    /// Give up when the bootstrap fraction has not grown for this long.
    pub stall_limit: Duration,
    /// Told each new status line, e.g. `40%: connecting successfully; ...`.
    pub progress: Option<ProgressFn>,
}

/// Bootstraps `client`, following arti's bootstrap events.
pub(super) async fn bootstrap_watched(
    client: &TorClient<PreferredRuntime>,
    watch: &BootstrapWatch,
) -> Result<(), TransportSetupError> {
    use futures::StreamExt as _;
    let started = tokio::time::Instant::now();
    let mut events = client.bootstrap_events();
    let boot = client.bootstrap();
    tokio::pin!(boot);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut best = 0.0f32;
    let mut progressed = started;
    let mut blocked_since: Option<tokio::time::Instant> = None;
    let mut last_line = String::new();
    loop {
        tokio::select! {
            done = &mut boot => {
                return done.map_err(|e| TransportSetupError::Bootstrap(format!("{e}; {BOOTSTRAP_HINT}")));
            }
            Some(status) = events.next() => {
                let now = tokio::time::Instant::now();
                if status.as_frac() > best + 0.001 {
                    best = status.as_frac();
                    progressed = now;
                }
                match status.blocked() {
                    Some(_) => { blocked_since.get_or_insert(now); }
                    None => blocked_since = None,
                }
                let line = status.to_string();
                if line != last_line {
                    tracing::debug!(status = %line, "tor bootstrap");
                    if let Some(progress) = &watch.progress {
                        progress(&line);
                    }
                    last_line = line;
                }
            }
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let last = if last_line.is_empty() {
            "no status from arti".to_string()
        } else {
            format!("last status: {last_line}")
        };
        let failure = if now - started >= watch.timeout {
            Some(format!(
                "not done after {} ({last})",
                humantime::format_duration(watch.timeout)
            ))
        } else if blocked_since.is_some_and(|t| now - t >= watch.blocked_limit) {
            Some(format!(
                "blocked for {} ({last})",
                humantime::format_duration(watch.blocked_limit)
            ))
        } else if now - progressed >= watch.stall_limit {
            Some(format!(
                "no progress for {} ({last})",
                humantime::format_duration(watch.stall_limit)
            ))
        } else {
            None
        };
        if let Some(f) = failure {
            return Err(TransportSetupError::Bootstrap(format!(
                "{f}; {BOOTSTRAP_HINT}"
            )));
        }
    }
}

/// Fits arti's circuit and stream budgets inside one connect timeout, so that
/// arti says why it failed before our own timeout fires: half of it to get a
/// circuit (`circuit_timing.request_timeout`), a quarter (at most arti's
/// default 10 s) to open the stream on it (`stream_timeouts.connect_timeout`).
pub fn arti_budgets(connect_timeout: Duration) -> (Duration, Duration) {
    let circuit = connect_timeout / 2;
    let stream = (connect_timeout / 4).min(Duration::from_secs(10));
    (circuit, stream)
}

/// The failure for an arti error, with its fault.
fn arti_failure(e: &arti_client::Error, fault: Fault, state: &TorState) -> ConnectFailure {
    let kind = e.kind();
    match fault {
        Fault::Server if kind == ErrorKind::RemoteConnectionRefused => {
            ConnectFailure::Remote("connection refused (seen by the Tor exit)".into())
        }
        Fault::Server => ConnectFailure::Remote(format!("{kind} (seen by the Tor exit)")),
        // Not the server's doing, but not our Tor broken either.
        Fault::Exit => {
            ConnectFailure::Remote(format!("{kind}: the Tor exit declined, not the server"))
        }
        Fault::Ours => ConnectFailure::Transport(format!(
            "our Tor client failed: {} ({})",
            e.to_string().trim_start_matches("tor: "),
            state.describe()
        )),
    }
}

impl Tor {
    /// Streams over fresh circuits until one leaves through an acceptable
    /// exit, at most [`EXIT_TRIES`] of them.
    pub(super) async fn connect(
        &self,
        addr: SocketAddr,
        avoid: &[ExitRelay],
    ) -> Result<Connected, ConnectFailure> {
        // The address came from our own validated DNS: that is the point.
        let target = TorAddr::dangerously_from(addr)
            .map_err(|e| ConnectFailure::Transport(e.to_string()))?;
        let mut tries = ExitTries::default();
        while tries.may_retry() {
            let mut prefs = StreamPrefs::new();
            prefs.new_isolation_group();
            // An exit chosen by the target's own family's policy.
            if addr.is_ipv6() {
                prefs.ipv6_only();
            } else {
                prefs.ipv4_only();
            }
            match self.client.connect_with_prefs(target.clone(), &prefs).await {
                Ok(stream) => {
                    self.carried.mark();
                    let exit = exit_of(&stream);
                    if exit_acceptable(exit.as_ref(), avoid, |a, b| self.related(a, b)) {
                        return Ok(Connected {
                            stream: Box::pin(stream),
                            exit,
                        });
                    }
                    tracing::debug!(%addr, exit = ?exit, "stream came out at an exit to avoid; trying another circuit");
                    tries.avoided += 1;
                }
                Err(e) => {
                    // Whose fault, from arti's error kind and its own state.
                    let state = self.state();
                    match arti_attempt(e.kind(), &state) {
                        Attempt::OtherExit => {
                            tracing::debug!(%addr, error = %e, "an exit refused by its policy; trying another");
                            tries.refused += 1;
                        }
                        // No path at all: the exits' policies, when the
                        // directory shows none allows the port; else ours.
                        Attempt::NoExit => {
                            return Err(match self.exit_count(addr) {
                                Some(c) if c.allowing == 0 => ConnectFailure::ExitRefused(format!(
                                    "no Tor exit would carry a connection to {addr}: refused by the exit policy of all {} exits in the directory",
                                    c.exits
                                )),
                                _ => ConnectFailure::Transport(format!(
                                    "our Tor client failed: tor: {e} ({})",
                                    state.describe()
                                )),
                            });
                        }
                        Attempt::Done(fault) => {
                            if fault != Fault::Ours {
                                self.carried.mark();
                            }
                            return Err(arti_failure(&e, fault, &state));
                        }
                    }
                }
            }
        }
        Err(tries.failure(addr, self.exit_count(addr)))
    }

    /// What arti says of itself now.
    fn state(&self) -> TorState {
        let status = self.client.bootstrap_status();
        TorState {
            ready: status.ready_for_traffic(),
            blocked: status.blocked().map(|b| b.to_string()),
        }
    }

    /// Whether two exits count as one: declared family, or the same subnet
    /// under the path rules arti builds circuits with.
    fn related(&self, a: &ExitRelay, b: &ExitRelay) -> bool {
        let Some(netdir) = self.netdir() else {
            return false;
        };
        let find = |x: &ExitRelay| {
            let id = tor_llcrypto::pk::rsa::RsaIdentity::from_hex(&x.rsa)?;
            netdir.by_id(&id)
        };
        match (find(a), find(b)) {
            (Some(ra), Some(rb)) => {
                ra.low_level_details()
                    .in_same_family(&rb, FamilyRules::all_family_info())
                    || ra.low_level_details().in_same_subnet(&rb, &self.subnets)
            }
            _ => false,
        }
    }

    fn netdir(&self) -> Option<Arc<tor_netdir::NetDir>> {
        self.client.dirmgr().ok()?.timely_netdir().ok()
    }

    pub(super) fn exit_count(&self, addr: SocketAddr) -> Option<ExitCount> {
        let netdir = self.netdir()?;
        let (mut allowing, mut exits) = (0, 0);
        for relay in netdir.relays() {
            let d = relay.low_level_details();
            if !d.policies_allow_some_port() {
                continue;
            }
            exits += 1;
            let allows = if addr.is_ipv6() {
                d.supports_exit_port_ipv6(addr.port())
            } else {
                d.supports_exit_port_ipv4(addr.port())
            };
            allowing += usize::from(allows);
        }
        Some(ExitCount { allowing, exits })
    }
}

/// The exit relay of a Tor stream: the last hop of its circuit.
fn exit_of(stream: &DataStream) -> Option<ExitRelay> {
    let tunnel = stream.client_stream_ctrl()?.tunnel()?;
    let last = tunnel.last_hop_info().ok()??;
    let rsa = last.rsa_identity()?;
    Some(ExitRelay {
        rsa: hex::encode(rsa.as_bytes()),
        ed25519: last.ed_identity().map(|e| e.to_string()),
    })
}

/// Reads the operator's arti TOML over the defaults and fills in storage dirs.
pub(super) fn arti_config_from(
    file: Option<&Path>,
    dirs: Option<&TorDirs>,
    connect_timeout: Option<Duration>,
) -> Result<(TorClientConfig, SubnetConfig), TransportSetupError> {
    let path_str = file.map(|p| p.display().to_string()).unwrap_or_default();
    let err = |detail: String| TransportSetupError::Config {
        path: path_str.clone(),
        detail,
    };
    let (mut builder, has_storage, subnets) = match file {
        Some(path) => {
            let text = crate::config::read_bounded(path, crate::config::INPUT_LIMIT)
                .map_err(|e| err(e.to_string()))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
            let has_storage = table.contains_key("storage");
            let subnets = subnet_rules(&table);
            let builder: TorClientConfigBuilder =
                toml::from_str(&text).map_err(|e| err(e.to_string()))?;
            (builder, has_storage, subnets)
        }
        None => (
            TorClientConfigBuilder::default(),
            false,
            subnet_rules(&toml::Table::new()),
        ),
    };
    if let (Some(dirs), false) = (dirs, has_storage) {
        builder
            .storage()
            .cache_dir(CfgPath::new_literal(&dirs.cache))
            .state_dir(CfgPath::new_literal(&dirs.state));
    }
    if let Some(timeout) = connect_timeout {
        let (circuit, stream) = arti_budgets(timeout);
        builder.circuit_timing().request_timeout(circuit);
        builder.stream_timeouts().connect_timeout(stream);
    }
    let config = builder.build().map_err(|e| err(e.to_string()))?;
    Ok((config, subnets))
}

/// The subnet prefixes arti's path rules treat as one family (arti's
/// defaults, /16 and /32, unless the file's `[path_rules]` says otherwise),
/// so a confirming probe avoids what arti itself would not put in one circuit.
fn subnet_rules(table: &toml::Table) -> SubnetConfig {
    let rules = table.get("path_rules").and_then(|v| v.as_table());
    let prefix = |key: &str, default: u8| {
        rules
            .and_then(|r| r.get(key))
            .and_then(|v| v.as_integer())
            .and_then(|v| u8::try_from(v).ok())
            .unwrap_or(default)
    };
    SubnetConfig::new(
        prefix("ipv4_subnet_family_prefix", 16),
        prefix("ipv6_subnet_family_prefix", 32),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_family_rules_follow_the_arti_file() {
        let a: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let defaults = subnet_rules(&toml::Table::new());
        assert!(defaults.addrs_in_same_subnet(&a, &b), "arti's /16 default");
        let lab: toml::Table = toml::from_str(
            "[path_rules]\nipv4_subnet_family_prefix = 33\nipv6_subnet_family_prefix = 129\n",
        )
        .unwrap();
        assert!(!subnet_rules(&lab).addrs_in_same_subnet(&a, &b));
    }

    #[test]
    fn arti_gets_its_say_before_our_timeout() {
        for secs in [4, 8, 60, 600] {
            let t = Duration::from_secs(secs);
            let (circuit, stream) = arti_budgets(t);
            assert!(circuit + stream < t, "{secs}s: {circuit:?} + {stream:?}");
            assert!(!circuit.is_zero() && !stream.is_zero());
        }
        assert_eq!(
            arti_budgets(Duration::from_secs(60)).1,
            Duration::from_secs(10)
        );
        let config = arti_config_from(None, None, Some(Duration::from_secs(8))).unwrap();
        let dbg = format!("{config:?}");
        assert!(dbg.contains("request_timeout: 4s"), "{dbg}");
        assert!(dbg.contains("connect_timeout: 2s"), "{dbg}");
    }

    #[test]
    fn arti_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arti.toml");
        std::fs::write(&path, "[tor_network\n").unwrap();
        let err = arti_config_from(Some(&path), None, None).unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("arti.toml"), "{err}");
    }
}

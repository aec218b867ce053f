//! How a probe reaches a server: embedded Tor (arti), a SOCKS5 proxy, or direct TCP.
//!
//! Every connection asks for a fresh circuit, so a machine in the middle
//! cannot link our probes together or recognise them. Over Tor a stream
//! leaves through an exit that allows the target's address family (arti's
//! `ipv4_only`/`ipv6_only`), an exit's policy refusal is retried through
//! another exit, and the exit relay of each stream is known, so that a
//! confirming probe can be sent through a different one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::{
    DataStream, ErrorKind, HasKind, StreamPrefs, TorAddr, TorClient, TorClientConfig,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tor_linkspec::HasRelayIds;
use tor_netdir::{FamilyRules, SubnetConfig};
use tor_proto::client::stream::ClientStreamCtrl;
use tor_rtcompat::PreferredRuntime;

pub use super::fault::{arti_attempt, arti_fault, Attempt, Fault, TorState};
use crate::config::Transport;
use crate::error::{ErrorKind as Kind, HasKind as Whose};

/// Any byte stream a probe can run over.
pub trait ProbeStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ProbeStream for T {}

/// A boxed probe stream.
pub type BoxStream = Pin<Box<dyn ProbeStream>>;

/// Why a connection was not made, classified by whose problem it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    /// The server (or the network in front of it) refused or failed: a finding about the domain.
    #[error("{0}")]
    Remote(String),
    /// Tor or the proxy could not carry the connection: the operator's problem.
    #[error("{0}")]
    Transport(String),
    /// Every Tor exit tried refused the connection by its exit policy (or
    /// none in the directory allows it). Neither the server's fault nor our
    /// Tor failing: the network's exits will not go there. Counted as not
    /// ours, so it never tells the operator that Tor is broken.
    #[error("{0}")]
    ExitRefused(String),
    /// A stream could only be had through exits the probe had to avoid
    /// (the exit, or a relay of the family, that saw the first key): a
    /// confirming probe that cannot be made.
    #[error("{0}")]
    NoOtherExit(String),
}

impl Whose for ConnectFailure {
    fn kind(&self) -> Kind {
        match self {
            ConnectFailure::Remote(_) | ConnectFailure::ExitRefused(_) => Kind::Remote,
            ConnectFailure::Transport(_) | ConnectFailure::NoOtherExit(_) => Kind::Tor,
        }
    }
}

/// The relay a Tor stream left the network through.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExitRelay {
    /// The RSA identity fingerprint: 40 lowercase hex digits.
    pub rsa: String,
    /// The Ed25519 identity (base64), when the circuit knows it.
    pub ed25519: Option<String>,
}

impl std::fmt::Display for ExitRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rsa)
    }
}

/// An open stream and, over Tor, the exit relay carrying it.
pub struct Connected {
    /// The byte stream.
    pub stream: BoxStream,
    /// The exit relay (Tor only: a SOCKS5 proxy does not say, direct has none).
    pub exit: Option<ExitRelay>,
}

/// How many streams (each over a fresh circuit) one Tor connection may try
/// to get one through an acceptable exit: an exit that refuses by its policy,
/// or one that must be avoided, costs one try.
pub const EXIT_TRIES: u32 = 8;

/// What the tries of one Tor connection came to, when none gave a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitTries {
    /// Exits that refused the stream by their exit policy.
    pub refused: u32,
    /// Streams opened through an exit the probe had to avoid (then dropped).
    pub avoided: u32,
}

impl ExitTries {
    /// Whether another try may be made.
    pub fn may_retry(&self) -> bool {
        self.refused + self.avoided < EXIT_TRIES
    }

    /// The failure once the tries are used up: a refusal by every exit
    /// tried is the exits' doing, only avoided exits a confirmation that
    /// cannot be made.
    pub fn failure(&self, addr: SocketAddr, exits: Option<ExitCount>) -> ConnectFailure {
        let family = family_name(addr);
        let count = exits
            .map(|c| {
                format!(
                    "; the directory lists {} of {} exits as allowing {family} to port {}",
                    c.allowing,
                    c.exits,
                    addr.port()
                )
            })
            .unwrap_or_default();
        if self.avoided == 0 {
            ConnectFailure::ExitRefused(format!(
                "no Tor exit would carry a connection to {addr}: refused by the exit policy ({} circuits tried{count})",
                self.refused
            ))
        } else {
            ConnectFailure::NoOtherExit(format!(
                "no other Tor exit would carry a connection to {addr}: {} circuit(s) came out at an exit to avoid, {} at an exit that refused by its policy{count}",
                self.avoided, self.refused
            ))
        }
    }
}

/// When the transport last carried a connection to some server (or heard an
/// exit's report about one): proof that it worked then.
#[derive(Clone, Debug, Default)]
pub struct Carried(Arc<Mutex<Option<tokio::time::Instant>>>);

impl Carried {
    fn mark(&self) {
        *self.0.lock().expect("carried lock") = Some(tokio::time::Instant::now());
    }

    /// Whether it carried one within `window`.
    fn within(&self, window: Duration) -> bool {
        self.0
            .lock()
            .expect("carried lock")
            .is_some_and(|t| t.elapsed() <= window)
    }
}

/// How many exits of the current directory allow a port for one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCount {
    /// Relays whose exit policy allows the port for the family.
    pub allowing: usize,
    /// Relays whose exit policy allows some port at all.
    pub exits: usize,
}

impl ExitCount {
    /// A note for the report when few exits allow the port (under a third of
    /// all exits): probes and confirmations have few exits to go through.
    pub fn few_note(&self, addr: SocketAddr) -> Option<String> {
        if self.exits == 0 || self.allowing * 3 >= self.exits {
            return None;
        }
        let hint = if addr.port() == 5269 {
            " (Tor's reduced exit policy, used by many exits, does not allow 5269)"
        } else {
            ""
        };
        Some(format!(
            "only {} of {} Tor exits allow {} connections to port {}{hint}: few exits can probe this endpoint, so it is more often unreachable over Tor and a mismatch has fewer exits to be confirmed through",
            self.allowing,
            self.exits,
            family_name(addr),
            addr.port()
        ))
    }
}

fn family_name(addr: SocketAddr) -> &'static str {
    if addr.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Whether a stream through `exit` may be used by a probe that must avoid
/// `avoid`: not one of them, nor (as `related` says) of their family. An
/// exit that cannot be named is acceptable only when there is nothing to avoid.
pub fn exit_acceptable(
    exit: Option<&ExitRelay>,
    avoid: &[ExitRelay],
    related: impl Fn(&ExitRelay, &ExitRelay) -> bool,
) -> bool {
    match exit {
        None => avoid.is_empty(),
        Some(exit) => avoid.iter().all(|a| {
            a.rsa != exit.rsa
                && a.ed25519
                    .as_ref()
                    .is_none_or(|e| Some(e) != exit.ed25519.as_ref())
                && !related(a, exit)
        }),
    }
}

/// The embedded Tor client and the family rules its path selection uses.
#[derive(Clone)]
pub struct Tor {
    client: Arc<TorClient<PreferredRuntime>>,
    subnets: SubnetConfig,
    carried: Carried,
}

/// The connector chosen by configuration.
#[derive(Clone)]
pub enum Connector {
    /// Embedded arti client.
    Tor(Tor),
    /// A SOCKS5 proxy (tor's SocksPort): credentials vary per probe for a fresh circuit.
    Socks5(SocketAddr, Carried),
    /// Plain TCP.
    Direct,
}

/// How long a connection the transport carried vouches for it, when a later
/// one times out without telling why (a multiple of the probe timeout).
const CARRIED_VOUCHES: u32 = 4;

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
async fn bootstrap_watched(
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

impl TransportSetupError {
    /// Whether this is the operator's configuration at fault (exit 78) rather than the network.
    pub fn is_config(&self) -> bool {
        matches!(self, TransportSetupError::Config { .. })
    }
}

impl Connector {
    /// Builds the connector for a transport; Tor is bootstrapped within
    /// `watch.timeout`, and given up earlier when it is stuck (see
    /// [`BootstrapWatch`]); its circuit and stream budgets are fitted
    /// inside `connect_timeout` (see [`arti_budgets`]).
    pub async fn start(
        transport: Transport,
        socks5: Option<SocketAddr>,
        arti_config: Option<&Path>,
        dirs: Option<&TorDirs>,
        watch: BootstrapWatch,
        connect_timeout: Duration,
    ) -> Result<Connector, TransportSetupError> {
        match transport {
            Transport::Direct => Ok(Connector::Direct),
            Transport::Socks5 => Ok(Connector::Socks5(
                socks5.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9050))),
                Carried::default(),
            )),
            Transport::Tor => {
                let (config, subnets) = arti_config_from(arti_config, dirs, Some(connect_timeout))?;
                let client = TorClient::builder()
                    .config(config)
                    .create_unbootstrapped()
                    .map_err(|e| TransportSetupError::Bootstrap(e.to_string()))?;
                bootstrap_watched(&client, &watch).await?;
                Ok(Connector::Tor(Tor {
                    client,
                    subnets,
                    carried: Carried::default(),
                }))
            }
        }
    }

    /// The transport's name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Connector::Tor(..) => "tor",
            Connector::Socks5(..) => "socks5",
            Connector::Direct => "direct",
        }
    }

    /// What arti says of itself now (None for the other transports).
    pub fn tor_state(&self) -> Option<TorState> {
        match self {
            Connector::Tor(tor) => {
                let status = tor.client.bootstrap_status();
                Some(TorState {
                    ready: status.ready_for_traffic(),
                    blocked: status.blocked().map(|b| b.to_string()),
                })
            }
            _ => None,
        }
    }

    /// Opens a stream to `addr` over a fresh circuit, within `timeout`;
    /// over Tor through an exit that is none of `avoid` nor of their family.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        avoid: &[ExitRelay],
    ) -> Result<Connected, ConnectFailure> {
        let attempt = async {
            match self {
                Connector::Direct => {
                    let stream = TcpStream::connect(addr)
                        .await
                        .map_err(|e| ConnectFailure::Remote(io_message(&e)))?;
                    let _ = stream.set_nodelay(true);
                    Ok(Connected {
                        stream: Box::pin(stream),
                        exit: None,
                    })
                }
                Connector::Socks5(proxy, carried) => {
                    let stream =
                        socks5_connect(*proxy, addr, carried, timeout * CARRIED_VOUCHES).await?;
                    Ok(Connected {
                        stream: Box::pin(stream),
                        exit: None,
                    })
                }
                Connector::Tor(tor) => tor.connect(addr, avoid).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(self.timed_out(timeout)),
        }
    }

    /// Whose doing it is that no connection was made within `timeout`. Direct:
    /// the server's. Over Tor arti's own budgets end first (see
    /// [`arti_budgets`]), so reaching ours means arti is stuck, unless arti is
    /// healthy and carried a stream lately. Through a proxy we cannot see
    /// inside: it is the server's only if the proxy carried a connection lately.
    fn timed_out(&self, timeout: Duration) -> ConnectFailure {
        let after = humantime::format_duration(timeout);
        let window = timeout * CARRIED_VOUCHES;
        match self {
            Connector::Direct => {
                ConnectFailure::Remote(format!("connection timed out after {after}"))
            }
            Connector::Tor(tor) => {
                let carried = &tor.carried;
                let state = self.tor_state().unwrap_or_default();
                if state.healthy() && carried.within(window) {
                    ConnectFailure::Remote(format!(
                        "no connection within {after} (through tor; tor carries other probes)"
                    ))
                } else {
                    ConnectFailure::Transport(format!(
                        "our Tor client gave no stream within {after}, and {}",
                        if state.healthy() {
                            "carried none lately".to_string()
                        } else {
                            state.describe()
                        }
                    ))
                }
            }
            Connector::Socks5(proxy, carried) => {
                if carried.within(window) {
                    ConnectFailure::Remote(format!(
                        "no connection within {after} (through the socks5 proxy, which carries other probes)"
                    ))
                } else {
                    ConnectFailure::Transport(format!(
                        "our socks5 proxy {proxy} gave no connection within {after} and carried none lately"
                    ))
                }
            }
        }
    }

    /// Over Tor: how many exits of the current directory allow `addr`'s
    /// port for its address family. None for other transports, or when
    /// arti has no usable directory.
    pub fn exit_count(&self, addr: SocketAddr) -> Option<ExitCount> {
        match self {
            Connector::Tor(tor) => tor.exit_count(addr),
            _ => None,
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
    async fn connect(
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

    fn exit_count(&self, addr: SocketAddr) -> Option<ExitCount> {
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

fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

/// Reads the operator's arti TOML over the defaults and fills in storage dirs.
fn arti_config_from(
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

/// RFC 1928 CONNECT to an IP through a SOCKS5 proxy, with random RFC 1929
/// credentials so tor (IsolateSOCKSAuth) builds a fresh circuit.
async fn socks5_connect(
    proxy: SocketAddr,
    target: SocketAddr,
    carried: &Carried,
    vouch_window: Duration,
) -> Result<TcpStream, ConnectFailure> {
    let transport = |what: &str, e: std::io::Error| {
        ConnectFailure::Transport(format!(
            "our socks5 proxy {proxy} failed: {what}: {}",
            io_message(&e)
        ))
    };
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| transport("connect", e))?;
    let _ = s.set_nodelay(true);
    s.write_all(&[5, 1, 2])
        .await
        .map_err(|e| transport("write", e))?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply)
        .await
        .map_err(|e| transport("read", e))?;
    if reply != [5, 2] {
        return Err(ConnectFailure::Transport(format!(
            "socks5 proxy {proxy} does not accept username authentication (reply {reply:?})"
        )));
    }
    let user = format!("certwatch-{:016x}", rand::random::<u64>());
    let mut auth = vec![1, user.len() as u8];
    auth.extend_from_slice(user.as_bytes());
    auth.push(1);
    auth.push(b'x');
    s.write_all(&auth)
        .await
        .map_err(|e| transport("write", e))?;
    s.read_exact(&mut reply)
        .await
        .map_err(|e| transport("read", e))?;
    if reply[1] != 0 {
        return Err(ConnectFailure::Transport(format!(
            "socks5 proxy {proxy} refused the credentials"
        )));
    }
    let mut req = vec![5, 1, 0];
    match target {
        SocketAddr::V4(a) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
        }
    }
    req.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&req).await.map_err(|e| transport("write", e))?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .map_err(|e| transport("read", e))?;
    if head[0] != 5 {
        return Err(ConnectFailure::Transport(format!(
            "socks5 proxy {proxy} is not speaking SOCKS5"
        )));
    }
    match head[1] {
        0 => carried.mark(),
        code => {
            let failure = socks_reply(code, carried.within(vouch_window));
            if failure.is_remote() && !matches!(code, 1 | 6) {
                // The proxy reached far enough to hear about the server.
                carried.mark();
            }
            return Err(failure);
        }
    }
    // The bound address is of no interest, but it must be consumed.
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len)
                .await
                .map_err(|e| transport("read", e))?;
            usize::from(len[0]) + 2
        }
        other => {
            return Err(ConnectFailure::Transport(format!(
                "socks5 proxy {proxy} sent address type {other}"
            )))
        }
    };
    let mut skip = vec![0u8; rest];
    s.read_exact(&mut skip)
        .await
        .map_err(|e| transport("read", e))?;
    Ok(s)
}

/// RFC 1928 §6 reply codes; tor maps stream end reasons onto them. The
/// proxy's report that the network or host is unreachable or refused the
/// connection is the server's; a refusal by the proxy's own rules, or any
/// code it should not send, is ours. Two codes are ambiguous with tor: a
/// general failure (1) is how tor answers when it cannot attach the stream
/// to any circuit, but also what it was seen to answer for a connection the
/// server refused; "TTL expired" (6) is its answer both when the exit timed
/// out and when its own SocksTimeout passed without a circuit. Those two are
/// the server's only if the proxy `vouched` for itself by carrying another
/// connection lately, ours otherwise.
fn socks_reply(code: u8, vouched: bool) -> ConnectFailure {
    match code {
        3 => ConnectFailure::Remote("network unreachable (seen by the proxy)".into()),
        4 => ConnectFailure::Remote("host unreachable (seen by the proxy)".into()),
        5 => ConnectFailure::Remote("connection refused (seen by the proxy)".into()),
        6 if vouched => ConnectFailure::Remote(
            "connection timed out (seen by the proxy, which carries other connections)".into(),
        ),
        1 if vouched => ConnectFailure::Remote(
            "the proxy reports a general failure (it carries other connections, so taken as the server refusing)"
                .into(),
        ),
        6 => ConnectFailure::Transport(
            "our socks5 proxy reports a timeout and carried no other connection lately (for tor: no circuit in time)"
                .into(),
        ),
        1 => ConnectFailure::Transport(
            "our socks5 proxy reports a general failure and carried no other connection lately (for tor: no circuit could be used)"
                .into(),
        ),
        // tor answers END_REASON_EXITPOLICY with "not allowed by ruleset".
        2 => ConnectFailure::ExitRefused(
            "no Tor exit would carry this connection: refused by the exit policy (seen by the proxy)"
                .into(),
        ),
        other => ConnectFailure::Transport(format!(
            "our socks5 proxy failed (reply code {other})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A scripted SOCKS5 proxy that answers CONNECT with `code` and checks the request.
    async fn fake_proxy(code: u8) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut greet = [0u8; 3];
            s.read_exact(&mut greet).await.unwrap();
            s.write_all(&[5, 2]).await.unwrap();
            let mut head = [0u8; 2];
            s.read_exact(&mut head).await.unwrap();
            let mut user = vec![0u8; head[1] as usize];
            s.read_exact(&mut user).await.unwrap();
            let mut plen = [0u8; 1];
            s.read_exact(&mut plen).await.unwrap();
            let mut pass = vec![0u8; plen[0] as usize];
            s.read_exact(&mut pass).await.unwrap();
            s.write_all(&[1, 0]).await.unwrap();
            let mut req = [0u8; 10];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(&[5, code, 0, 1, 127, 0, 0, 1, 0, 0])
                .await
                .unwrap();
            let mut seen = user;
            seen.extend_from_slice(&req);
            seen
        });
        (addr, task)
    }

    #[tokio::test]
    async fn socks5_connect_sends_ip_and_port_with_fresh_credentials() {
        let (proxy, task) = fake_proxy(0).await;
        let target: SocketAddr = "127.0.0.9:5222".parse().unwrap();
        socks5_connect(proxy, target, &Carried::default(), Duration::from_secs(60))
            .await
            .unwrap();
        let seen = task.await.unwrap();
        assert!(seen.starts_with(b"certwatch-"));
        let req = &seen[seen.len() - 10..];
        assert_eq!(req, &[5, 1, 0, 1, 127, 0, 0, 9, 0x14, 0x66]);
    }

    #[tokio::test]
    async fn socks5_refusal_is_remote_and_general_failure_is_transport() {
        let (proxy, _task) = fake_proxy(5).await;
        let err = socks5_connect(
            proxy,
            "127.0.0.1:1".parse().unwrap(),
            &Carried::default(),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(err.is_remote(), "{err}");
        let (proxy, _task) = fake_proxy(1).await;
        let err = socks5_connect(
            proxy,
            "127.0.0.1:1".parse().unwrap(),
            &Carried::default(),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(!err.is_remote(), "{err}");
        // "Not allowed by ruleset": tor's answer to an exit policy refusal.
        let (proxy, _task) = fake_proxy(2).await;
        let err = socks5_connect(
            proxy,
            "127.0.0.1:1".parse().unwrap(),
            &Carried::default(),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ConnectFailure::ExitRefused(_)), "{err}");
        assert!(!err.is_ours(), "{err}");
    }

    #[tokio::test]
    async fn socks5_proxy_down_is_transport() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = socks5_connect(
            addr,
            "127.0.0.1:1".parse().unwrap(),
            &Carried::default(),
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(!err.is_remote(), "{err}");
    }

    fn relay(rsa: char, ed: Option<&str>) -> ExitRelay {
        ExitRelay {
            rsa: rsa.to_string().repeat(40),
            ed25519: ed.map(str::to_owned),
        }
    }

    #[test]
    fn exit_tries_are_bounded_and_end_as_the_exits_refusal_or_no_other_exit() {
        let addr: SocketAddr = "[2001:db8::1]:5269".parse().unwrap();
        let mut tries = ExitTries::default();
        let mut n = 0;
        while tries.may_retry() {
            tries.refused += 1;
            n += 1;
        }
        assert_eq!(n, EXIT_TRIES);
        let refused = tries.failure(
            addr,
            Some(ExitCount {
                allowing: 2,
                exits: 9,
            }),
        );
        assert!(matches!(refused, ConnectFailure::ExitRefused(_)));
        // Neither the server's fault nor our Tor failing.
        assert!(!refused.is_ours());
        let text = refused.to_string();
        assert!(
            text.starts_with("no Tor exit would carry a connection to [2001:db8::1]:5269: refused by the exit policy"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "({EXIT_TRIES} circuits tried; the directory lists 2 of 9 exits as allowing IPv6 to port 5269)"
            )),
            "{text}"
        );
        // Only exits to avoid came up: the confirming probe cannot be made.
        let avoided = ExitTries {
            refused: 1,
            avoided: EXIT_TRIES - 1,
        };
        assert!(!avoided.may_retry());
        let f = avoided.failure(addr, None);
        assert!(matches!(f, ConnectFailure::NoOtherExit(_)), "{f}");
        assert!(f.to_string().starts_with("no other Tor exit"), "{f}");
    }

    #[test]
    fn an_exit_to_avoid_is_neither_the_same_relay_nor_of_its_family() {
        let a = relay('a', Some("edA"));
        let b = relay('b', Some("edB"));
        let (c_same_ed, c_no_ed) = (relay('c', Some("edA")), relay('c', None));
        let unrelated = |_: &ExitRelay, _: &ExitRelay| false;
        let table: Vec<(Option<&ExitRelay>, Vec<ExitRelay>, bool)> = vec![
            (Some(&a), vec![], true),
            (Some(&b), vec![a.clone()], true),
            (Some(&a), vec![a.clone()], false),
            (Some(&a), vec![b.clone(), a.clone()], false),
            // The same Ed25519 identity under another RSA key is the same relay.
            (Some(&c_same_ed), vec![a.clone()], false),
            (Some(&c_no_ed), vec![a.clone()], true),
            // An exit that cannot be named cannot be shown to differ.
            (None, vec![], true),
            (None, vec![a.clone()], false),
        ];
        for (exit, avoid, want) in table {
            assert_eq!(
                exit_acceptable(exit, &avoid, unrelated),
                want,
                "{exit:?} / {avoid:?}"
            );
        }
        // A relay of the same family (or subnet) counts as the same.
        assert!(!exit_acceptable(
            Some(&b),
            std::slice::from_ref(&a),
            |_, _| true
        ));
    }

    #[test]
    fn few_exits_for_a_port_are_told() {
        let s2s: SocketAddr = "192.0.2.1:5269".parse().unwrap();
        let few = ExitCount {
            allowing: 300,
            exits: 1200,
        }
        .few_note(s2s)
        .unwrap();
        assert!(
            few.starts_with("only 300 of 1200 Tor exits allow IPv4 connections to port 5269"),
            "{few}"
        );
        assert!(few.contains("reduced exit policy"), "{few}");
        let c2s: SocketAddr = "[2001:db8::1]:5222".parse().unwrap();
        let many = ExitCount {
            allowing: 900,
            exits: 1200,
        };
        assert_eq!(many.few_note(c2s), None);
        let none = ExitCount {
            allowing: 0,
            exits: 0,
        };
        assert_eq!(none.few_note(c2s), None);
        let v6 = ExitCount {
            allowing: 1,
            exits: 10,
        }
        .few_note(c2s)
        .unwrap();
        assert!(v6.contains("IPv6 connections to port 5222"), "{v6}");
        assert!(!v6.contains("reduced exit policy"), "{v6}");
    }

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
    fn socks5_reply_codes_say_whose_fault() {
        // (code, whose without, and with, another connection carried lately)
        for (code, alone, vouched) in [
            (1, false, true),
            // "Not allowed by ruleset": tor's answer to an exit policy refusal,
            // the exits' doing (not ours, not the server's).
            (2, true, true),
            (3, true, true),
            (4, true, true),
            (5, true, true),
            (6, false, true),
            (7, false, false),
            (8, false, false),
            (0xff, false, false),
        ] {
            for (v, remote) in [(false, alone), (true, vouched)] {
                let f = socks_reply(code, v);
                assert_eq!(f.is_remote(), remote, "code {code} vouched {v}: {f}");
                if !remote {
                    assert!(f.to_string().contains("our socks5 proxy"), "{f}");
                }
            }
        }
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

    #[tokio::test(start_paused = true)]
    async fn a_silent_proxy_is_ours_unless_it_carried_a_connection_lately() {
        // A proxy that accepts and never answers the greeting.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let carried = Carried::default();
        let c = Connector::Socks5(proxy, carried.clone());
        let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let t = Duration::from_secs(5);
        let err = c.connect(target, t, &[]).await.err().unwrap();
        assert!(!err.is_remote(), "{err}");
        assert!(err.to_string().contains("our socks5 proxy"), "{err}");
        // It carried one a moment ago: the silence is the server's.
        carried.mark();
        let err = c.connect(target, t, &[]).await.err().unwrap();
        assert!(err.is_remote(), "{err}");
        // Long ago no longer vouches for it.
        tokio::time::advance(t * (CARRIED_VOUCHES + 1)).await;
        let err = c.connect(target, t, &[]).await.err().unwrap();
        assert!(!err.is_remote(), "{err}");
    }

    #[tokio::test]
    async fn a_proxy_reply_about_the_host_vouches_for_the_proxy() {
        let carried = Carried::default();
        let (proxy, _task) = fake_proxy(5).await;
        socks5_connect(
            proxy,
            "127.0.0.1:1".parse().unwrap(),
            &carried,
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(carried.within(Duration::from_secs(60)));
        let carried = Carried::default();
        let (proxy, _task) = fake_proxy(1).await;
        socks5_connect(
            proxy,
            "127.0.0.1:1".parse().unwrap(),
            &carried,
            Duration::from_secs(60),
        )
        .await
        .unwrap_err();
        assert!(!carried.within(Duration::from_secs(60)));
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

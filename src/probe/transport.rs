//! How a probe reaches a server: embedded Tor (arti), a SOCKS5 proxy, or direct TCP.
//!
//! Every connection asks for a fresh circuit, so a machine in the middle
//! cannot link our probes together or recognise them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::{ErrorKind, HasKind, StreamPrefs, TorAddr, TorClient, TorClientConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tor_rtcompat::PreferredRuntime;

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
}

impl Whose for ConnectFailure {
    fn kind(&self) -> Kind {
        match self {
            ConnectFailure::Remote(_) => Kind::Remote,
            ConnectFailure::Transport(_) => Kind::Tor,
        }
    }
}

/// The connector chosen by configuration.
#[derive(Clone)]
pub enum Connector {
    /// Embedded arti client.
    Tor(Arc<TorClient<PreferredRuntime>>),
    /// A SOCKS5 proxy (tor's SocksPort): credentials vary per probe for a fresh circuit.
    Socks5(SocketAddr),
    /// Plain TCP.
    Direct,
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
    #[error("cannot bootstrap Tor: {0}")]
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
    /// `watch.timeout`, and given up earlier when it is stuck (see [`BootstrapWatch`]).
    pub async fn start(
        transport: Transport,
        socks5: Option<SocketAddr>,
        arti_config: Option<&Path>,
        dirs: Option<&TorDirs>,
        watch: BootstrapWatch,
    ) -> Result<Connector, TransportSetupError> {
        match transport {
            Transport::Direct => Ok(Connector::Direct),
            Transport::Socks5 => {
                Ok(Connector::Socks5(socks5.unwrap_or_else(|| {
                    SocketAddr::from(([127, 0, 0, 1], 9050))
                })))
            }
            Transport::Tor => {
                let config = arti_config_from(arti_config, dirs)?;
                let client = TorClient::builder()
                    .config(config)
                    .create_unbootstrapped()
                    .map_err(|e| TransportSetupError::Bootstrap(e.to_string()))?;
                bootstrap_watched(&client, &watch).await?;
                Ok(Connector::Tor(client))
            }
        }
    }

    /// The transport's name, for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Connector::Tor(_) => "tor",
            Connector::Socks5(_) => "socks5",
            Connector::Direct => "direct",
        }
    }

    /// Opens a stream to `addr` over a fresh circuit, within `timeout`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<BoxStream, ConnectFailure> {
        let attempt = async {
            match self {
                Connector::Direct => {
                    let stream = TcpStream::connect(addr)
                        .await
                        .map_err(|e| ConnectFailure::Remote(io_message(&e)))?;
                    let _ = stream.set_nodelay(true);
                    Ok(Box::pin(stream) as BoxStream)
                }
                Connector::Socks5(proxy) => {
                    let stream = socks5_connect(*proxy, addr).await?;
                    Ok(Box::pin(stream) as BoxStream)
                }
                Connector::Tor(client) => {
                    let mut prefs = StreamPrefs::new();
                    prefs.new_isolation_group();
                    // The address came from our own validated DNS: that is the point.
                    let target = TorAddr::dangerously_from(addr)
                        .map_err(|e| ConnectFailure::Transport(e.to_string()))?;
                    let stream = client
                        .connect_with_prefs(target, &prefs)
                        .await
                        .map_err(|e| classify_arti(&e))?;
                    Ok(Box::pin(stream) as BoxStream)
                }
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(match self {
                Connector::Direct => ConnectFailure::Remote(format!(
                    "connection timed out after {}",
                    humantime::format_duration(timeout)
                )),
                // Over Tor we cannot tell a slow circuit from a dead server.
                _ => ConnectFailure::Remote(format!(
                    "no connection within {} (through {})",
                    humantime::format_duration(timeout),
                    self.name()
                )),
            }),
        }
    }
}

fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}

fn classify_arti(e: &arti_client::Error) -> ConnectFailure {
    use ErrorKind::*;
    match e.kind() {
        RemoteConnectionRefused => {
            ConnectFailure::Remote("connection refused (seen by the Tor exit)".into())
        }
        RemoteNetworkFailed | RemoteHostNotFound | RemoteNetworkTimeout | ExitTimeout
        | RemoteStreamClosed | RemoteStreamReset | RemoteStreamError => {
            ConnectFailure::Remote(format!("{e} (seen by the Tor exit)"))
        }
        _ => ConnectFailure::Transport(format!("tor: {e}")),
    }
}

/// Reads the operator's arti TOML over the defaults and fills in storage dirs.
fn arti_config_from(
    file: Option<&Path>,
    dirs: Option<&TorDirs>,
) -> Result<TorClientConfig, TransportSetupError> {
    let path_str = file.map(|p| p.display().to_string()).unwrap_or_default();
    let err = |detail: String| TransportSetupError::Config {
        path: path_str.clone(),
        detail,
    };
    let (mut builder, has_storage) = match file {
        Some(path) => {
            let text = crate::config::read_bounded(path, crate::config::INPUT_LIMIT)
                .map_err(|e| err(e.to_string()))?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
            let has_storage = table.contains_key("storage");
            let builder: TorClientConfigBuilder =
                toml::from_str(&text).map_err(|e| err(e.to_string()))?;
            (builder, has_storage)
        }
        None => (TorClientConfigBuilder::default(), false),
    };
    if let (Some(dirs), false) = (dirs, has_storage) {
        builder
            .storage()
            .cache_dir(CfgPath::new_literal(&dirs.cache))
            .state_dir(CfgPath::new_literal(&dirs.state));
    }
    builder.build().map_err(|e| err(e.to_string()))
}

/// RFC 1928 CONNECT to an IP through a SOCKS5 proxy, with random RFC 1929
/// credentials so tor (IsolateSOCKSAuth) builds a fresh circuit.
async fn socks5_connect(
    proxy: SocketAddr,
    target: SocketAddr,
) -> Result<TcpStream, ConnectFailure> {
    let transport = |what: &str, e: std::io::Error| {
        ConnectFailure::Transport(format!("socks5 proxy {proxy}: {what}: {}", io_message(&e)))
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
        0 => {}
        code => return Err(socks_reply(code)),
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

/// RFC 1928 §6 reply codes; tor maps stream end reasons onto them.
fn socks_reply(code: u8) -> ConnectFailure {
    match code {
        3 => ConnectFailure::Remote("network unreachable (seen by the proxy)".into()),
        4 => ConnectFailure::Remote("host unreachable (seen by the proxy)".into()),
        5 => ConnectFailure::Remote("connection refused (seen by the proxy)".into()),
        6 => ConnectFailure::Remote("connection timed out (seen by the proxy)".into()),
        2 => ConnectFailure::Transport("the proxy's exit policy forbids this connection".into()),
        other => ConnectFailure::Transport(format!("socks5 proxy failure (reply code {other})")),
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
        socks5_connect(proxy, target).await.unwrap();
        let seen = task.await.unwrap();
        assert!(seen.starts_with(b"certwatch-"));
        let req = &seen[seen.len() - 10..];
        assert_eq!(req, &[5, 1, 0, 1, 127, 0, 0, 9, 0x14, 0x66]);
    }

    #[tokio::test]
    async fn socks5_refusal_is_remote_and_general_failure_is_transport() {
        let (proxy, _task) = fake_proxy(5).await;
        let err = socks5_connect(proxy, "127.0.0.1:1".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.is_remote(), "{err}");
        let (proxy, _task) = fake_proxy(1).await;
        let err = socks5_connect(proxy, "127.0.0.1:1".parse().unwrap())
            .await
            .unwrap_err();
        assert!(!err.is_remote(), "{err}");
    }

    #[tokio::test]
    async fn socks5_proxy_down_is_transport() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = socks5_connect(addr, "127.0.0.1:1".parse().unwrap())
            .await
            .unwrap_err();
        assert!(!err.is_remote(), "{err}");
    }

    #[test]
    fn arti_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arti.toml");
        std::fs::write(&path, "[tor_network\n").unwrap();
        let err = arti_config_from(Some(&path), None).unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("arti.toml"), "{err}");
    }
}

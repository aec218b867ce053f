//! How a probe reaches a server: embedded Tor (arti), a SOCKS5 proxy, or direct TCP.
//!
//! Every connection asks for a fresh circuit, so a machine in the middle
//! cannot link our probes together or recognise them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arti_client::config::{CfgPath, TorClientConfigBuilder};
use arti_client::{ErrorKind, HasKind, StreamPrefs, TorAddr, TorClient, TorClientConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tor_rtcompat::PreferredRuntime;

pub use super::fault::{arti_fault, Fault, TorState};
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

/// The connector chosen by configuration.
#[derive(Clone)]
pub enum Connector {
    /// Embedded arti client.
    Tor(Arc<TorClient<PreferredRuntime>>, Carried),
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

impl TransportSetupError {
    /// Whether this is the operator's configuration at fault (exit 78) rather than the network.
    pub fn is_config(&self) -> bool {
        matches!(self, TransportSetupError::Config { .. })
    }
}

impl Connector {
    /// Builds the connector for a transport; Tor is bootstrapped within
    /// `bootstrap_timeout`, and its circuit and stream budgets are fitted
    /// inside `connect_timeout` (see [`arti_budgets`]).
    pub async fn start(
        transport: Transport,
        socks5: Option<SocketAddr>,
        arti_config: Option<&Path>,
        dirs: Option<&TorDirs>,
        bootstrap_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Connector, TransportSetupError> {
        match transport {
            Transport::Direct => Ok(Connector::Direct),
            Transport::Socks5 => Ok(Connector::Socks5(
                socks5.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9050))),
                Carried::default(),
            )),
            Transport::Tor => {
                let config = arti_config_from(arti_config, dirs, Some(connect_timeout))?;
                let client = TorClient::builder()
                    .config(config)
                    .create_unbootstrapped()
                    .map_err(|e| TransportSetupError::Bootstrap(e.to_string()))?;
                match tokio::time::timeout(bootstrap_timeout, client.bootstrap()).await {
                    Ok(Ok(())) => Ok(Connector::Tor(client, Carried::default())),
                    Ok(Err(e)) => Err(TransportSetupError::Bootstrap(format!(
                        "{e} ({})",
                        client.bootstrap_status()
                    ))),
                    // arti's own words, e.g. "Stuck at 0%: We seem to be offline".
                    Err(_) => Err(TransportSetupError::Bootstrap(format!(
                        "not done after {} ({})",
                        humantime::format_duration(bootstrap_timeout),
                        client.bootstrap_status()
                    ))),
                }
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
            Connector::Tor(client, _) => {
                let status = client.bootstrap_status();
                Some(TorState {
                    ready: status.ready_for_traffic(),
                    blocked: status.blocked().map(|b| b.to_string()),
                })
            }
            _ => None,
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
                Connector::Socks5(proxy, carried) => {
                    let stream =
                        socks5_connect(*proxy, addr, carried, timeout * CARRIED_VOUCHES).await?;
                    Ok(Box::pin(stream) as BoxStream)
                }
                Connector::Tor(client, carried) => {
                    let mut prefs = StreamPrefs::new();
                    prefs.new_isolation_group();
                    // The address came from our own validated DNS: that is the point.
                    let target = TorAddr::dangerously_from(addr)
                        .map_err(|e| ConnectFailure::Transport(e.to_string()))?;
                    match client.connect_with_prefs(target, &prefs).await {
                        Ok(stream) => {
                            carried.mark();
                            Ok(Box::pin(stream) as BoxStream)
                        }
                        Err(e) => {
                            let state = self.tor_state().unwrap_or_default();
                            let fault = arti_fault(e.kind(), &state);
                            if fault != Fault::Ours {
                                carried.mark();
                            }
                            Err(arti_failure(&e, fault, &state))
                        }
                    }
                }
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
            Connector::Tor(_, carried) => {
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
) -> Result<TorClientConfig, TransportSetupError> {
    let path_str = file.map(|p| p.display().to_string()).unwrap_or_default();
    let err = |detail: String| TransportSetupError::Config {
        path: path_str.clone(),
        detail,
    };
    let (mut builder, has_storage) = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            if text.len() > 1 << 20 {
                return Err(err("larger than 1 MiB".into()));
            }
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
    if let Some(timeout) = connect_timeout {
        let (circuit, stream) = arti_budgets(timeout);
        builder.circuit_timing().request_timeout(circuit);
        builder.stream_timeouts().connect_timeout(stream);
    }
    builder.build().map_err(|e| err(e.to_string()))
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
        2 => ConnectFailure::Transport(
            "our socks5 proxy refuses this connection by its rules (or its exit's policy)".into(),
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

    #[test]
    fn socks5_reply_codes_say_whose_fault() {
        // (code, whose without, and with, another connection carried lately)
        for (code, alone, vouched) in [
            (1, false, true),
            (2, false, false),
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
        let err = c.connect(target, t).await.err().unwrap();
        assert!(!err.is_remote(), "{err}");
        assert!(err.to_string().contains("our socks5 proxy"), "{err}");
        // It carried one a moment ago: the silence is the server's.
        carried.mark();
        let err = c.connect(target, t).await.err().unwrap();
        assert!(err.is_remote(), "{err}");
        // Long ago no longer vouches for it.
        tokio::time::advance(t * (CARRIED_VOUCHES + 1)).await;
        let err = c.connect(target, t).await.err().unwrap();
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

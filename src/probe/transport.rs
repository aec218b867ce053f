//! How a probe reaches a server: embedded Tor (arti), a SOCKS5 proxy, or direct TCP.
//!
//! Every connection asks for a fresh circuit, so a machine in the middle
//! cannot link our probes together or recognise them. Over Tor a stream
//! leaves through an exit that allows the target's address family (arti's
//! `ipv4_only`/`ipv6_only`), an exit's policy refusal is retried through
//! another exit, and the exit relay of each stream is known, so that a
//! confirming probe can be sent through a different one.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use arti_client::TorClient;
use tokio::net::TcpStream;

pub use super::arti::{
    arti_budgets, BootstrapWatch, ProgressFn, Tor, TorDirs, TransportSetupError, BOOTSTRAP_HINT,
};
use super::arti::{arti_config_from, bootstrap_watched};
pub use super::exits::{exit_acceptable, ExitCount, ExitTries, EXIT_TRIES};
pub use super::fault::{arti_attempt, arti_fault, Attempt, Fault, TorState};
use super::socks5::socks5_connect;
use super::stream::{io_message, CARRIED_VOUCHES};
pub use super::stream::{BoxStream, Carried, ConnectFailure, Connected, ExitRelay, ProbeStream};
use crate::config::Transport;

/// The connector chosen by configuration.
#[derive(Clone)]
pub enum Connector {
    /// Embedded arti client.
    Tor(Tor),
    /// A SOCKS5 proxy (tor's SocksPort): credentials vary per probe for a fresh circuit.
    Socks5(SocketAddr, Carried),
    /// Plain TCP.
    Direct,
    /// Plain TCP from this source address (`probe.bind`).
    DirectFrom(std::net::IpAddr),
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
            Connector::Direct | Connector::DirectFrom(_) => "direct",
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
                Connector::Direct | Connector::DirectFrom(_) => {
                    let stream = self
                        .direct(addr)
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

    /// A plain TCP connection, from `probe.bind` when set.
    async fn direct(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let Connector::DirectFrom(source) = self else {
            return TcpStream::connect(addr).await;
        };
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(*source, 0))?;
        socket.connect(addr).await
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
            Connector::Direct | Connector::DirectFrom(_) => {
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

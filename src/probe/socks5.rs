//! The SOCKS5 transport (RFC 1928, RFC 1929): a proxy such as a system
//! tor's SocksPort, given fresh credentials for every probe so that tor
//! (IsolateSOCKSAuth) builds a fresh circuit.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::{io_message, Carried, ConnectFailure};
use crate::error::HasKind as _;

/// RFC 1928 CONNECT to an IP through a SOCKS5 proxy, with random RFC 1929
/// credentials so tor (IsolateSOCKSAuth) builds a fresh circuit.
pub(super) async fn socks5_connect(
    proxy: SocketAddr,
    target: SocketAddr,
    carried: &Carried,
    vouch_window: Duration,
) -> Result<TcpStream, ConnectFailure> {
    let mut s = TcpStream::connect(proxy)
        .await
        .map_err(|e| proxy_io(proxy, "connect", e))?;
    let _ = s.set_nodelay(true);
    authenticate(&mut s, proxy).await?;
    s.write_all(&connect_request(target))
        .await
        .map_err(|e| proxy_io(proxy, "write", e))?;
    read_connect_reply(&mut s, proxy, carried, vouch_window).await?;
    Ok(s)
}

/// An I/O failure talking to the proxy: always ours, never the server's.
fn proxy_io(proxy: SocketAddr, what: &str, e: std::io::Error) -> ConnectFailure {
    ConnectFailure::Transport(format!(
        "our socks5 proxy {proxy} failed: {what}: {}",
        io_message(&e)
    ))
}

/// Whether the proxy takes username authentication (RFC 1929) and our
/// fresh, random credentials: the only method offered, since tor isolates
/// circuits by them.
async fn authenticate(s: &mut TcpStream, proxy: SocketAddr) -> Result<(), ConnectFailure> {
    s.write_all(&[5, 1, 2])
        .await
        .map_err(|e| proxy_io(proxy, "write", e))?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply)
        .await
        .map_err(|e| proxy_io(proxy, "read", e))?;
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
        .map_err(|e| proxy_io(proxy, "write", e))?;
    s.read_exact(&mut reply)
        .await
        .map_err(|e| proxy_io(proxy, "read", e))?;
    if reply[1] != 0 {
        return Err(ConnectFailure::Transport(format!(
            "socks5 proxy {proxy} refused the credentials"
        )));
    }
    Ok(())
}

/// The CONNECT request for an IP address and port (RFC 1928 §4): always an
/// address, never a name, so the proxy connects where our validated DNS said.
fn connect_request(target: SocketAddr) -> Vec<u8> {
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
    req
}

/// Whether the proxy connected, and if not whose failure it was (see
/// [`socks_reply`]); a success or a report about the server counts as the
/// proxy carrying a connection. Consumes the reply up to the stream's data.
async fn read_connect_reply(
    s: &mut TcpStream,
    proxy: SocketAddr,
    carried: &Carried,
    vouch_window: Duration,
) -> Result<(), ConnectFailure> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .await
        .map_err(|e| proxy_io(proxy, "read", e))?;
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
    skip_bound_address(s, proxy, head[3]).await
}

/// Reads past the reply's bound address (of type `atyp`): of no interest,
/// but it must be consumed before the stream carries the server's bytes.
async fn skip_bound_address(
    s: &mut TcpStream,
    proxy: SocketAddr,
    atyp: u8,
) -> Result<(), ConnectFailure> {
    let rest = match atyp {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len)
                .await
                .map_err(|e| proxy_io(proxy, "read", e))?;
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
        .map_err(|e| proxy_io(proxy, "read", e))?;
    Ok(())
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
    use crate::probe::stream::CARRIED_VOUCHES;
    use crate::probe::transport::Connector;
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
}

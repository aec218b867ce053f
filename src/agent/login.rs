//! The agent's client login: TCP, STARTTLS with a verified certificate,
//! SASL (tokio-xmpp's), resource binding. Written on tokio-xmpp's XML
//! streams rather than its `Client`, because this crate's build of
//! xmpp-parsers speaks the component namespace (docs/agents.md); every
//! stanza here is a plain element in `jabber:client`.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::probe::tls::{ChainPolicy, ChainVerifier};
use futures::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};

/// The client namespace.
pub const CLIENT_NS: &str = "jabber:client";
const TLS_NS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const BIND_NS: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// The whole login may take this long at most.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A logged-in session's stream of plain elements.
pub type Session = XmlStream<BufStream<TlsStream<TcpStream>>, Element>;

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The connection or the stream broke.
    #[error("connection to {addr}: {detail}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// What happened.
        detail: String,
    },
    /// The server would not do what a login needs.
    #[error("login refused: {0}")]
    Refused(String),
    /// The trust file is unusable.
    #[error("agent.trust_file {path}: {detail}")]
    Trust {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// How to log in.
pub struct Login<'a> {
    /// Where the server listens.
    pub addr: SocketAddr,
    /// The account.
    pub jid: &'a str,
    /// Its password.
    pub password: &'a str,
    /// The name the server's certificate must carry.
    pub tls_name: &'a str,
    /// The TLS client configuration (trust roots).
    pub tls: Arc<rustls::ClientConfig>,
}

/// The TLS configuration for the login: the certificates of `trust_file`
/// when given, else the web's roots. Never without verification.
pub fn tls_config(trust_file: &str) -> Result<Arc<rustls::ClientConfig>, LoginError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    if trust_file.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        let trust = |detail: String| LoginError::Trust {
            path: trust_file.to_owned(),
            detail,
        };
        let text = crate::config::read_bounded(Path::new(trust_file), crate::config::INPUT_LIMIT)
            .map_err(|e| trust(e.to_string()))?;
        let blocks = pem::parse_many(text.as_bytes()).map_err(|e| trust(e.to_string()))?;
        for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
            pinned.push(block.contents().to_vec());
            // A self-signed server certificate is no CA: it is pinned only.
            let _ = roots.add(block.contents().to_vec().into());
        }
        if pinned.is_empty() {
            return Err(trust("holds no certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoginError::Refused(e.to_string()))?;
    if pinned.is_empty() {
        return Ok(Arc::new(
            builder.with_root_certificates(roots).with_no_client_auth(),
        ));
    }
    // The file's certificates are taken as they are; a CA among them also
    // verifies other chains (with the name checked).
    let otherwise = if roots.is_empty() {
        None
    } else {
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| LoginError::Refused(e.to_string()))?;
        Some(webpki)
    };
    let verifier = ChainVerifier::new(
        ChainPolicy::Pinned {
            certs: pinned,
            otherwise,
        },
        provider.signature_verification_algorithms,
    );
    Ok(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    ))
}

fn timeouts() -> Timeouts {
    Timeouts {
        read_timeout: Duration::from_secs(60),
        response_timeout: Duration::from_secs(30),
    }
}

/// Logs in and binds a resource; returns the session and the full JID.
pub async fn login(l: &Login<'_>) -> Result<(Session, String), LoginError> {
    match tokio::time::timeout(LOGIN_TIMEOUT, login_inner(l)).await {
        Ok(r) => r,
        Err(_) => Err(LoginError::Io {
            addr: l.addr,
            detail: format!("no login within {LOGIN_TIMEOUT:?}"),
        }),
    }
}

async fn login_inner(l: &Login<'_>) -> Result<(Session, String), LoginError> {
    let io = |e: &dyn std::fmt::Display| LoginError::Io {
        addr: l.addr,
        detail: e.to_string(),
    };
    let (user, domain) = l.jid.split_once('@').ok_or_else(|| io(&"jid has no @"))?;
    let header = || StreamHeader {
        to: Some(Cow::Owned(domain.to_owned())),
        from: None,
        id: None,
    };
    let tcp = TcpStream::connect(l.addr).await.map_err(|e| io(&e))?;
    let _ = tcp.set_nodelay(true);
    let pending = initiate_stream(BufStream::new(tcp), CLIENT_NS, header(), timeouts())
        .await
        .map_err(|e| io(&e))?;
    let (features, mut plain) = pending
        .recv_features::<Element>()
        .await
        .map_err(|e| io(&e))?;
    if !features.can_starttls() {
        return Err(LoginError::Refused(
            "the server offers no STARTTLS: the agent never logs in without TLS".into(),
        ));
    }
    plain
        .send(&Element::builder("starttls", TLS_NS).build())
        .await
        .map_err(|e| io(&e))?;
    match plain.next().await {
        Some(Ok(el)) if el.is("proceed", TLS_NS) => {}
        other => {
            return Err(LoginError::Refused(format!(
                "STARTTLS not accepted: {other:?}"
            )))
        }
    }
    let tcp = plain.into_inner().into_inner();
    let name = ServerName::try_from(l.tls_name.to_owned())
        .map_err(|e| LoginError::Refused(format!("tls name {:?}: {e}", l.tls_name)))?;
    let tls = tokio_rustls::TlsConnector::from(l.tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| io(&format!("TLS: {e}")))?;
    let pending = initiate_stream(BufStream::new(tls), CLIENT_NS, header(), timeouts())
        .await
        .map_err(|e| io(&e))?;
    let (features, stream) = pending.recv_features().await.map_err(|e| io(&e))?;
    let creds = sasl::common::Credentials::default()
        .with_username(user)
        .with_password(l.password);
    let authed = tokio_xmpp::client_login(stream, features.sasl_mechanisms, creds)
        .await
        .map_err(|e| LoginError::Refused(e.to_string()))?;
    let pending = authed.send_header(header()).await.map_err(|e| io(&e))?;
    let (_, mut session) = pending
        .recv_features::<Element>()
        .await
        .map_err(|e| io(&e))?;
    let full = bind(&mut session).await.map_err(LoginError::Refused)?;
    Ok((session, full))
}

/// Binds a resource chosen by the server (RFC 6120 §7.6).
async fn bind(session: &mut Session) -> Result<String, String> {
    let iq = Element::builder("iq", CLIENT_NS)
        .attr(super::ncname("type"), "set")
        .attr(super::ncname("id"), "bind-1")
        .append(Element::builder("bind", BIND_NS).build())
        .build();
    session.send(&iq).await.map_err(|e| e.to_string())?;
    loop {
        match session.next().await {
            Some(Ok(el)) if el.is("iq", CLIENT_NS) && el.attr("id") == Some("bind-1") => {
                let jid = el
                    .get_child("bind", BIND_NS)
                    .and_then(|b| b.get_child("jid", BIND_NS))
                    .map(Element::text);
                return match (el.attr("type"), jid) {
                    (Some("result"), Some(jid)) => Ok(jid),
                    _ => Err(format!("resource binding refused: {}", String::from(&el))),
                };
            }
            Some(Ok(_)) | Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(format!("while binding: {e:?}")),
            None => return Err("stream closed while binding".into()),
        }
    }
}

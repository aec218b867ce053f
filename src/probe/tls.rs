//! The TLS handshake of a probe: accept whatever chain the server presents and
//! write it down exactly as presented. Judging it is someone else's job.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{
    ring, verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms,
};
use rustls::{ClientConfig, DigitallySignedStruct, ProtocolVersion, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::failure::ProbeFailure;
use super::profile::Tls;

/// Stage name reported for failures during the handshake (over any TLS stack).
pub(super) const STAGE: &str = "tls handshake";

/// How long a polite close may take at most: the observation is already in
/// hand, so a peer that will not take our close_notify must not delay it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long the stream restart inside TLS may take at most (see [`Restart`]).
const RESTART_GRACE: Duration = Duration::from_secs(5);

/// What an XMPP client or server does once TLS is up (RFC 6120 §5.4.3.3,
/// XEP-0368): open a new stream inside it. The probe reads the server's
/// header and stream features, then closes the stream (`</stream:stream>`)
/// and TLS (close_notify), like a client that changed its mind, rather than
/// cutting the connection right after the handshake. The observation is
/// already taken: nothing the server does here changes it, and the whole
/// exchange is bounded by [`RESTART_GRACE`] and the probe's deadline.
pub(crate) struct Restart<'a> {
    /// Our stream header, as sent before TLS.
    pub header: &'a str,
    /// c2s or s2s: which stream namespace the server must answer with.
    pub role: crate::vocab::Role,
    /// Bounds on what is read.
    pub limits: &'a super::xml::Limits,
}

/// What the TLS handshake showed; judged by nobody here.
#[derive(Clone, Debug)]
pub struct TlsObservation {
    /// The certificates as presented (DER), leaf first, in the server's order.
    pub chain: Vec<Vec<u8>>,
    /// The negotiated protocol version, e.g. "TLSv1.3".
    pub version: String,
    /// The negotiated cipher suite, e.g. "TLS13_AES_128_GCM_SHA256".
    pub cipher: String,
    /// The ALPN protocol the server selected, if any.
    pub alpn: Option<String>,
}

/// Which chains a [`ChainVerifier`] accepts.
#[derive(Debug)]
pub enum ChainPolicy {
    /// Any chain, so that a wrong, expired or self-signed chain is still
    /// observed rather than lost to a verification error (a probe). The
    /// chain itself is kept by rustls (`peer_certificates`), per
    /// connection, so one shared config can serve concurrent probes.
    Any,
    /// Exactly these DER certificates as the server's own leaf (a
    /// self-signed or private server; its name is not checked then), else,
    /// when given, the usual chain and name verification.
    Pinned {
        /// The certificates accepted as they are.
        certs: Vec<Vec<u8>>,
        /// The verifier for every other chain; None: refuse them.
        otherwise: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    },
}

/// A verifier that accepts chains by its [`ChainPolicy`] and always checks
/// the handshake's signature: it proves the server holds the key of the
/// leaf, so a recorded key is one actually in use.
#[derive(Debug)]
pub struct ChainVerifier {
    policy: ChainPolicy,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ChainVerifier {
    /// A verifier with `policy`, checking signatures with `algorithms`.
    pub fn new(policy: ChainPolicy, algorithms: WebPkiSupportedAlgorithms) -> ChainVerifier {
        ChainVerifier { policy, algorithms }
    }
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.policy {
            ChainPolicy::Any => Ok(ServerCertVerified::assertion()),
            ChainPolicy::Pinned { certs, .. }
                if certs.iter().any(|c| c.as_slice() == end_entity.as_ref()) =>
            {
                Ok(ServerCertVerified::assertion())
            }
            ChainPolicy::Pinned {
                otherwise: Some(webpki),
                ..
            } => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            ChainPolicy::Pinned {
                otherwise: None, ..
            } => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls ClientConfig whose verifier accepts any chain and records it (handshake signatures are still checked with ring's algorithms).
pub fn recording_config(alpn: Option<&[u8]>) -> Arc<ClientConfig> {
    // An explicit provider, because the process-wide default may be unset or
    // be another backend chosen by some other dependency.
    let provider = Arc::new(ring::default_provider());
    let verifier = Arc::new(ChainVerifier::new(
        ChainPolicy::Any,
        provider.signature_verification_algorithms,
    ));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // A resumed session presents no certificate: rustls would report the
    // chain remembered from an earlier probe, not the one on the wire now.
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    config.alpn_protocols = alpn.map(|p| vec![p.to_vec()]).unwrap_or_default();
    Arc::new(config)
}

/// Runs a TLS handshake over `stream` with the TLS stack of a profile and
/// records the presented chain; then (with `restart`) opens a new stream
/// inside TLS up to its features, and closes politely. `sni` None sends no
/// SNI over OpenSSL; rustls always sends one (an empty name is refused).
pub(super) async fn handshake_as<S: AsyncRead + AsyncWrite + Unpin>(
    stack: &Tls,
    stream: S,
    sni: Option<&str>,
    alpn: Option<&[u8]>,
    deadline: Instant,
    restart: Option<Restart<'_>>,
) -> Result<TlsObservation, ProbeFailure> {
    match stack {
        Tls::OpenSsl(ctx) => {
            let tls = super::tls_openssl::connect(ctx, stream, sni, alpn, deadline).await?;
            let observation = super::tls_openssl::observe(&tls)?;
            finish(tls, observation, sni, deadline, restart).await
        }
        Tls::Rustls => {
            let sni = sni.unwrap_or_default();
            let name = ServerName::try_from(sni.to_owned()).map_err(|_| ProbeFailure::Io {
                detail: format!("not a usable TLS server name: {sni:?}"),
            })?;
            let connector = TlsConnector::from(recording_config(alpn));
            let tls = match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await
            {
                Err(_) => return Err(ProbeFailure::Timeout { stage: STAGE }),
                Ok(Err(e)) => return Err(handshake_failure(e)),
                Ok(Ok(tls)) => tls,
            };
            let observation = observe(&tls)?;
            finish(tls, observation, Some(sni), deadline, restart).await
        }
    }
}

/// The stream restart inside TLS (if asked for) and the polite close, the
/// same over every TLS stack.
async fn finish<T: AsyncRead + AsyncWrite + Unpin>(
    mut tls: T,
    observation: TlsObservation,
    sni: Option<&str>,
    deadline: Instant,
    restart: Option<Restart<'_>>,
) -> Result<TlsObservation, ProbeFailure> {
    let sni = sni.unwrap_or_default();
    if let Some(r) = restart {
        let by = deadline.min(Instant::now() + RESTART_GRACE);
        match tokio::time::timeout_at(by, restart_stream(&mut tls, &r, by)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(sni, error = %e, "stream restart inside TLS failed"),
            Err(_) => tracing::debug!(sni, "stream restart inside TLS did not complete in time"),
        }
    }
    // Courtesy only: the result stands whether or not the close completes.
    let close_by = deadline.min(Instant::now() + CLOSE_GRACE);
    if let Err(e) = tokio::time::timeout_at(close_by, tls.shutdown()).await {
        tracing::debug!(sni, error = %e, "TLS close did not complete in time");
    }
    Ok(observation)
}

/// Our header inside TLS, the server's header and features, our `</stream:stream>`.
async fn restart_stream<S: AsyncRead + AsyncWrite + Unpin>(
    tls: &mut S,
    r: &Restart<'_>,
    by: Instant,
) -> Result<(), ProbeFailure> {
    let mut xml = super::xml::Xml::new(tls, r.limits, by);
    xml.send(r.header.as_bytes(), "stream header inside TLS")
        .await?;
    xml.read_stream_header(r.role).await?;
    // Whatever comes first (features, or a stream error): then we close.
    let _ = xml.next_top("features inside TLS").await?;
    xml.send(b"</stream:stream>", "stream close").await
}

/// Reads what the completed handshake negotiated.
fn observe<S>(tls: &TlsStream<S>) -> Result<TlsObservation, ProbeFailure> {
    let (_, conn) = tls.get_ref();
    let chain: Vec<Vec<u8>> = conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    // rustls refuses an empty Certificate message, so this is a guard for a
    // future rustls, not an expected path.
    if chain.is_empty() {
        return Err(ProbeFailure::Tls {
            detail: "handshake completed without a certificate".into(),
        });
    }
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| {
            let suite = s.suite();
            suite
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{suite:?}"))
        })
        .unwrap_or_default();
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    Ok(TlsObservation {
        chain,
        version,
        cipher,
        alpn,
    })
}

/// Sorts a failed handshake into the server's doing (TLS, closed) or ours.
fn handshake_failure(e: io::Error) -> ProbeFailure {
    use rustls::InvalidMessage::{CertificatePayloadTooLarge, HandshakePayloadTooLarge};
    if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        // rustls caps a handshake message (the Certificate message among them)
        // and each certificate at 64 KiB. Only the server's Certificate message
        // grows that large in practice, so it is told apart from other TLS
        // failures: the judge treats it as a finding, not as unreachable.
        if let rustls::Error::InvalidMessage(
            CertificatePayloadTooLarge | HandshakePayloadTooLarge,
        ) = tls
        {
            return ProbeFailure::ChainTooLarge {
                detail: tls.to_string(),
            };
        }
        return ProbeFailure::Tls {
            detail: tls.to_string(),
        };
    }
    ProbeFailure::from_io(e, STAGE)
}

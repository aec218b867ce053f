//! The vocabulary that DNS, probes and judging share: the four XMPP
//! services and how each is spoken to. Plain values, no I/O.

use serde::Serialize;

/// One of the four XMPP SRV services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Service {
    /// `_xmpp-client._tcp`: c2s with STARTTLS.
    #[serde(rename = "xmpp-client")]
    XmppClient,
    /// `_xmpps-client._tcp`: c2s with direct TLS (XEP-0368).
    #[serde(rename = "xmpps-client")]
    XmppsClient,
    /// `_xmpp-server._tcp`: s2s with STARTTLS.
    #[serde(rename = "xmpp-server")]
    XmppServer,
    /// `_xmpps-server._tcp`: s2s with direct TLS.
    #[serde(rename = "xmpps-server")]
    XmppsServer,
}

impl Service {
    /// All four, in report order.
    pub const ALL: [Service; 4] = [
        Service::XmppClient,
        Service::XmppsClient,
        Service::XmppServer,
        Service::XmppsServer,
    ];

    /// The service name as in SRV and in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::XmppClient => "xmpp-client",
            Service::XmppsClient => "xmpps-client",
            Service::XmppServer => "xmpp-server",
            Service::XmppsServer => "xmpps-server",
        }
    }

    /// STARTTLS or direct TLS.
    pub fn tls(self) -> TlsMode {
        match self {
            Service::XmppClient | Service::XmppServer => TlsMode::StartTls,
            Service::XmppsClient | Service::XmppsServer => TlsMode::Direct,
        }
    }

    /// Client-to-server or server-to-server.
    pub fn role(self) -> Role {
        match self {
            Service::XmppClient | Service::XmppsClient => Role::Client,
            Service::XmppServer | Service::XmppsServer => Role::Server,
        }
    }

    /// The port used when no SRV is published (RFC 6120 §3.2.2); direct TLS has none.
    pub fn fallback_port(self) -> Option<u16> {
        match self {
            Service::XmppClient => Some(5222),
            Service::XmppServer => Some(5269),
            _ => None,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which services a check covers (`--service`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ServiceSet {
    /// c2s only.
    Client,
    /// s2s only.
    Server,
    /// Both.
    #[default]
    All,
}

impl ServiceSet {
    /// The services in this set.
    pub fn services(self) -> Vec<Service> {
        Service::ALL
            .into_iter()
            .filter(|s| match self {
                ServiceSet::All => true,
                ServiceSet::Client => s.role() == Role::Client,
                ServiceSet::Server => s.role() == Role::Server,
            })
            .collect()
    }
}

/// Which kind of stream is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A client-to-server stream (`jabber:client`).
    Client,
    /// A server-to-server stream (`jabber:server`).
    Server,
}

impl Role {
    /// The stream's content namespace.
    pub fn namespace(self) -> &'static str {
        match self {
            Role::Client => "jabber:client",
            Role::Server => "jabber:server",
        }
    }

    /// The ALPN protocol id of XEP-0368.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Role::Client => b"xmpp-client",
            Role::Server => b"xmpp-server",
        }
    }
}

/// How TLS is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext stream, then `<starttls/>` (RFC 6120 §5).
    StartTls,
    /// TLS from the first byte (XEP-0368).
    Direct,
}

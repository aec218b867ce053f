//! Probe profiles: which XMPP software a probe speaks as. An interceptor
//! that spares connections by their ClientHello (JA3/JA4) or stream header
//! must then spare the real software too. Each profile is the TLS library
//! of that software with its settings (the system OpenSSL, as Debian's
//! Prosody and Profanity use it), and that software's stream header, byte
//! for byte. The settings were measured against the real programs
//! (tests/profiles.rs; README "How alike our probes look").

use std::sync::Arc;

use openssl::error::ErrorStack;
use openssl::ssl::{
    SslContext, SslContextBuilder, SslMethod, SslOptions, SslSessionCacheMode, SslVerifyMode,
    SslVersion,
};
use rand::seq::SliceRandom;

use super::xml::{NS_STREAMS, NS_TLS};
use crate::config::ProfileName;
use crate::vocab::{Role, TlsMode};

/// The probe profiles of both roles, built once at start-up.
#[derive(Clone)]
pub struct Profiles {
    s2s: Arc<Profile>,
    c2s: Arc<Profile>,
}

/// A profile that cannot be used here; names the configuration key.
#[derive(Debug, thiserror::Error)]
#[error("probe.{key} = {name:?} cannot be used: {detail}")]
pub struct ProfileError {
    /// `s2s_profile` or `c2s_profile`.
    pub key: &'static str,
    /// The profile's name.
    pub name: &'static str,
    /// Why not.
    pub detail: String,
}

impl Profiles {
    /// Builds both profiles; a profile of the wrong role, one whose TLS
    /// library refuses its settings, or one that cannot complete a
    /// handshake here (TLS 1.3 and 1.2, in process), is an error naming its key.
    pub fn new(s2s: ProfileName, c2s: ProfileName) -> Result<Profiles, ProfileError> {
        let build = |name: ProfileName, role: Role, key: &'static str| {
            if !speaks(name, role) {
                return Err(ProfileError {
                    key,
                    name: name.as_str(),
                    detail: format!(
                        "{} does not open {} streams",
                        name.as_str(),
                        match role {
                            Role::Server => "server-to-server",
                            Role::Client => "client-to-server",
                        }
                    ),
                });
            }
            let refused = |detail: String| ProfileError {
                key,
                name: name.as_str(),
                detail,
            };
            let profile = Profile::build(name)
                .map_err(|e| refused(format!("the system OpenSSL refused its settings: {e}")))?;
            if let Tls::OpenSsl(ctx) = &profile.tls {
                super::profile_check::handshakes(ctx).map_err(|e| {
                    refused(format!("the system OpenSSL cannot handshake with it: {e}"))
                })?;
            }
            Ok(profile)
        };
        Ok(Profiles {
            s2s: Arc::new(build(s2s, Role::Server, "s2s_profile")?),
            c2s: Arc::new(build(c2s, Role::Client, "c2s_profile")?),
        })
    }

    /// rustls for both roles (cannot fail): CertWatch's own handshake.
    pub fn rustls() -> Profiles {
        let p = Arc::new(Profile {
            name: ProfileName::Rustls,
            tls: Tls::Rustls,
            order: prosody_order(),
        });
        Profiles {
            s2s: p.clone(),
            c2s: p,
        }
    }

    /// The profile of `role`'s probes.
    pub fn of(&self, role: Role) -> &Profile {
        match role {
            Role::Server => &self.s2s,
            Role::Client => &self.c2s,
        }
    }
}

/// Whether the software `name` imitates opens streams of `role`
/// (server-to-server for [`Role::Server`]).
fn speaks(name: ProfileName, role: Role) -> bool {
    matches!(
        (name, role),
        (ProfileName::Prosody, Role::Server)
            | (ProfileName::Profanity, Role::Client)
            | (ProfileName::Rustls, _)
    )
}

/// One profile: a TLS stack with its settings, and a way of writing XML.
pub struct Profile {
    name: ProfileName,
    tls: Tls,
    /// The order of Prosody's stream attributes, drawn once when the
    /// profile is built (used by `prosody` only).
    order: [&'static str; 8],
}

/// The TLS stack a profile handshakes with.
pub(super) enum Tls {
    /// rustls with CertWatch's recording config.
    Rustls,
    /// The system OpenSSL with the imitated software's settings.
    OpenSsl(SslContext),
}

/// Prosody 0.12's default TLS settings on Debian 12 (core/certmanager.lua:
/// Mozilla "intermediate" plus its default options), as LuaSec applies them.
const PROSODY_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
    ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
    ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
    DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";
const PROSODY_SUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
const PROSODY_GROUPS: &str = "X25519:P-256:P-384";

impl Profile {
    /// Builds the named profile's TLS context.
    pub fn build(name: ProfileName) -> Result<Profile, ErrorStack> {
        let tls = match name {
            ProfileName::Rustls => Tls::Rustls,
            ProfileName::Prosody => Tls::OpenSsl(prosody_context()?),
            ProfileName::Profanity => Tls::OpenSsl(profanity_context()?),
        };
        Ok(Profile {
            name,
            tls,
            order: prosody_order(),
        })
    }

    /// A profile over a given OpenSSL context (tests of local failures).
    #[cfg(test)]
    pub(super) fn with_context(name: ProfileName, ctx: SslContext) -> Profile {
        Profile {
            name,
            tls: Tls::OpenSsl(ctx),
            order: prosody_order(),
        }
    }

    /// The profile's name.
    pub fn name(&self) -> ProfileName {
        self.name
    }

    pub(super) fn tls(&self) -> &Tls {
        &self.tls
    }

    /// Whether the ClientHello names the server (SNI). Prosody names it only
    /// on direct TLS; rustls always does; libstrophe always does.
    pub(super) fn sends_sni(&self, mode: TlsMode) -> bool {
        !(self.name == ProfileName::Prosody && mode == TlsMode::StartTls)
    }

    /// The ALPN protocol offered, if any.
    pub(super) fn alpn(&self, role: Role, mode: TlsMode) -> Option<&'static [u8]> {
        match (self.name, mode) {
            // Prosody's s2sout context carries "xmpp-server" on both ways in.
            (ProfileName::Prosody, _) => Some(b"xmpp-server"),
            (ProfileName::Profanity, _) => None,
            (ProfileName::Rustls, TlsMode::Direct) => Some(role.alpn()),
            (ProfileName::Rustls, TlsMode::StartTls) => None,
        }
    }

    /// The opening stream header (RFC 6120 §4.7), as the imitated software
    /// writes it. `from` is used by s2s profiles only.
    pub(super) fn header(&self, domain: &str, role: Role, from: Option<&str>) -> String {
        match self.name {
            ProfileName::Rustls => rustls_header(domain, role, from),
            ProfileName::Prosody => prosody_header(&self.order, domain, role, from),
            ProfileName::Profanity => format!(
                "<?xml version=\"1.0\"?><stream:stream to=\"{}\" xml:lang=\"en\" version=\"1.0\" \
                 xmlns=\"{}\" xmlns:stream=\"{NS_STREAMS}\">",
                escape(domain),
                role.namespace()
            ),
        }
    }

    /// The `<starttls/>` request, quoted as the imitated software quotes it.
    pub(super) fn starttls(&self) -> String {
        match self.name {
            ProfileName::Profanity => format!("<starttls xmlns=\"{NS_TLS}\"/>"),
            _ => format!("<starttls xmlns='{NS_TLS}'/>"),
        }
    }
}

/// Settings every OpenSSL profile shares: no verification (we observe, never
/// trust: the chain is judged against DANE later) and no session cache, so a
/// probe never resumes and always sees the chain on the wire.
fn observe_only(b: &mut SslContextBuilder) {
    b.set_verify(SslVerifyMode::NONE);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
}

fn prosody_context() -> Result<SslContext, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    b.set_options(
        SslOptions::NO_TICKET
            | SslOptions::NO_COMPRESSION
            | SslOptions::SINGLE_DH_USE
            | SslOptions::SINGLE_ECDH_USE
            | SslOptions::NO_RENEGOTIATION
            | SslOptions::CIPHER_SERVER_PREFERENCE,
    );
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_cipher_list(PROSODY_CIPHERS)?;
    b.set_ciphersuites(PROSODY_SUITES)?;
    b.set_groups_list(PROSODY_GROUPS)?;
    observe_only(&mut b);
    Ok(b.build())
}

/// libstrophe 0.12's context (src/tls_openssl.c): OpenSSL's defaults with
/// SSL_OP_ALL and neither SSLv2, SSLv3 nor TLS 1.0.
fn profanity_context() -> Result<SslContext, ErrorStack> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
    b.set_options(
        SslOptions::ALL | SslOptions::NO_SSLV2 | SslOptions::NO_SSLV3 | SslOptions::NO_TLSV1,
    );
    observe_only(&mut b);
    Ok(b.build())
}

/// CertWatch's own header, kept with the rustls profile.
fn rustls_header(domain: &str, role: Role, from: Option<&str>) -> String {
    let mut h = format!(
        "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='{}' xmlns:stream='{NS_STREAMS}'",
        escape(domain),
        role.namespace()
    );
    if role == Role::Server {
        if let Some(from) = from {
            h.push_str(&format!(" from='{}'", escape(from)));
        }
        // Real s2s initiators declare dialback (XEP-0220), and a probe that
        // looks like one gets the answer a real peer would; an unused
        // declaration is harmless.
        h.push_str(" xmlns:db='jabber:server:dialback'");
    }
    h.push('>');
    h
}

/// The attributes of Prosody's s2s header.
const PROSODY_ATTRIBUTES: [&str; 8] = [
    "xml:lang",
    "xmlns",
    "xmlns:stream",
    "version",
    "to",
    "id",
    "xmlns:db",
    "from",
];

/// An order of Prosody's attributes. Prosody writes them in the order of a
/// Lua table, which Lua's hash seed makes different for each Prosody
/// process but keeps for the process's lifetime; so the profile draws one
/// order when it is built, for the life of this process, and an order that
/// changed from one connection to the next marks nothing.
fn prosody_order() -> [&'static str; 8] {
    let mut order = PROSODY_ATTRIBUTES;
    order.shuffle(&mut rand::rng());
    order
}

/// Prosody's s2s header: its attributes (an empty `id` among them), single
/// quotes, no spaces beyond one before each attribute, in `order`. Without
/// `from` (probing our own domain, or `s2s_from = "none"`) the attribute is
/// left out, which real Prosody never does: documented as a tell.
fn prosody_header(
    order: &[&'static str; 8],
    domain: &str,
    role: Role,
    from: Option<&str>,
) -> String {
    let mut h = String::from("<?xml version='1.0'?><stream:stream");
    for k in order {
        let v = match *k {
            "xml:lang" => "en".to_owned(),
            "xmlns" => role.namespace().to_owned(),
            "xmlns:stream" => NS_STREAMS.to_owned(),
            "version" => "1.0".to_owned(),
            "to" => escape(domain),
            "xmlns:db" => "jabber:server:dialback".to_owned(),
            "from" => match from {
                Some(from) => escape(from),
                None => continue,
            },
            _ => String::new(), // id: empty, as Prosody sends it
        };
        h.push_str(&format!(" {k}='{v}'"));
    }
    h.push('>');
    h
}

/// Escapes a string for an attribute in either quote style.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_builds_with_the_system_openssl() {
        let p = Profiles::new(ProfileName::Prosody, ProfileName::Profanity).unwrap();
        assert_eq!(p.of(Role::Server).name(), ProfileName::Prosody);
        assert_eq!(p.of(Role::Client).name(), ProfileName::Profanity);
        let r = Profiles::new(ProfileName::Rustls, ProfileName::Rustls).unwrap();
        assert_eq!(r.of(Role::Client).name(), ProfileName::Rustls);
    }

    #[test]
    fn a_profile_of_the_wrong_role_names_its_key() {
        let e = Profiles::new(ProfileName::Profanity, ProfileName::Profanity)
            .err()
            .unwrap();
        assert_eq!(e.key, "s2s_profile");
        assert!(
            e.to_string()
                .starts_with("probe.s2s_profile = \"profanity\""),
            "{e}"
        );
        let e = Profiles::new(ProfileName::Prosody, ProfileName::Prosody)
            .err()
            .unwrap();
        assert_eq!(e.key, "c2s_profile");
    }

    #[test]
    fn prosody_headers_keep_one_order_per_profile_and_vary_between_processes() {
        let mut orders = std::collections::HashSet::new();
        for _ in 0..20 {
            // A profile per "process": one order for all its probes.
            let p = Profile::build(ProfileName::Prosody).unwrap();
            let h = p.header("a'b.example", Role::Server, Some("x.example"));
            let attrs = h
                .strip_prefix("<?xml version='1.0'?><stream:stream")
                .expect("declaration and element");
            for attr in [
                " xml:lang='en'",
                " xmlns='jabber:server'",
                " xmlns:stream='http://etherx.jabber.org/streams'",
                " version='1.0'",
                " to='a&apos;b.example'",
                " id=''",
                " xmlns:db='jabber:server:dialback'",
                " from='x.example'",
            ] {
                assert_eq!(attrs.matches(attr).count(), 1, "{attr} in {h}");
            }
            assert_eq!(attrs.matches('=').count(), 8, "{h}");
            for _ in 0..10 {
                let again = p.header("a'b.example", Role::Server, Some("x.example"));
                assert_eq!(again, h, "one order for the profile's lifetime");
            }
            let own = p.header("x.example", Role::Server, None);
            assert!(!own.contains("from="), "{own}");
            assert_eq!(own, p.header("x.example", Role::Server, None));
            orders.insert(h);
        }
        assert!(orders.len() > 1, "the order is drawn, not fixed");
    }

    #[test]
    fn profanity_headers_are_libstrophes() {
        let p = Profile::build(ProfileName::Profanity).unwrap();
        assert_eq!(
            p.header("example.org", Role::Client, None),
            "<?xml version=\"1.0\"?><stream:stream to=\"example.org\" xml:lang=\"en\" \
             version=\"1.0\" xmlns=\"jabber:client\" \
             xmlns:stream=\"http://etherx.jabber.org/streams\">"
        );
        assert_eq!(
            p.starttls(),
            "<starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"/>"
        );
        assert!(p.sends_sni(TlsMode::StartTls));
        assert_eq!(p.alpn(Role::Client, TlsMode::StartTls), None);
    }
}

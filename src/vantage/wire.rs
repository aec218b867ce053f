//! The job protocol between a coordinator and its agents (docs/agents.md):
//! one `<probe/>` in an IQ set, answered by `<seen/>` or `<failed/>` in the
//! IQ result. Every element, attribute and size is bounded; anything else
//! is refused with an error that names what was wrong.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine as _;
use xmpp_parsers::minidom::rxml::NcName;
use xmpp_parsers::minidom::Element;

use crate::probe::tls::TlsObservation;
use crate::probe::Target;
use crate::vocab::{Service, TlsMode};

/// The protocol's namespace; a new version gets a new one (2: answers
/// name their job's endpoint, see [`answer_element_for`]).
pub const NS: &str = "urn:certwatch:agent:2";
/// The most certificates a chain may carry: the leaf and as many after it
/// as matching considers. An agent sends no more (it cuts a longer chain,
/// see [`super::answer_of`]), so no server can make its answer malformed.
pub const MAX_CERTS: usize = 1 + crate::dane::MAX_CHAIN_BEYOND_LEAF;
/// The most DER bytes of one whole chain (rustls's Certificate message limit).
pub const MAX_CHAIN_BYTES: usize = 64 * 1024;
/// The largest `<seen/>` a legal chain makes, serialised (base64 grows the
/// DER by 4/3; tags and attributes add a little). XMPP servers must carry
/// an IQ this large from the agent: Prosody's `c2s_stanza_size_limit`
/// (256 KiB by default) and ejabberd's `max_stanza_size` (262144 in its
/// example configuration) do.
pub const MAX_ANSWER_BYTES: usize = MAX_CHAIN_BYTES * 4 / 3 + 16 * 1024;
// Under Prosody's c2s_stanza_size_limit and ejabberd's example max_stanza_size.
const _: () = assert!(MAX_ANSWER_BYTES < 256 * 1024);
/// The most characters of any attribute value or failure text.
pub const MAX_TEXT: usize = 512;
/// The most exits a job asks to avoid.
pub const MAX_AVOID: usize = 8;
/// The longest probe timeout a job may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// One probe asked of an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// The SRV service: says c2s or s2s, STARTTLS or direct TLS.
    pub service: Service,
    /// The XMPP domain: the stream's `to` and the TLS SNI.
    pub domain: String,
    /// The SRV target (for the agent's log).
    pub host: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// The whole probe's bound.
    pub timeout: Duration,
    /// Tor exits (RSA fingerprints) the probe must not leave through.
    pub avoid: Vec<String>,
}

impl Job {
    /// The probe target.
    pub fn target(&self) -> Target {
        Target {
            addr: self.addr,
            domain: self.domain.clone(),
            role: self.service.role(),
            tls: self.service.tls(),
        }
    }
}

/// What an agent answers: what it saw, or why it saw nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The handshake's observation.
    Seen(Sighting),
    /// No observation.
    Failed(Failure),
}

/// One probe's observation, as an agent reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// tor, socks5 or direct: how the agent reached the server.
    pub transport: String,
    /// The Tor exit's RSA fingerprint, over Tor.
    pub exit: Option<String>,
    /// The chain as presented, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// e.g. TLSv1.3.
    pub version: String,
    /// The cipher suite.
    pub cipher: String,
    /// How long the probe took, in milliseconds.
    pub millis: u64,
}

impl Sighting {
    /// The observation the judge reads.
    pub fn observation(&self) -> TlsObservation {
        TlsObservation {
            chain: self.chain.clone(),
            version: self.version.clone(),
            cipher: self.cipher.clone(),
            alpn: None,
        }
    }
}

/// Whose a failed probe is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whose {
    /// The server (or the network in front of it): a finding.
    Server,
    /// The agent's own transport (its Tor, proxy or network).
    Transport,
    /// The agent runs as many jobs as it may.
    Busy,
    /// The agent did not make the probe (its deadline, its address policy).
    NotProbed,
}

impl Whose {
    fn as_str(self) -> &'static str {
        match self {
            Whose::Server => "server",
            Whose::Transport => "transport",
            Whose::Busy => "busy",
            Whose::NotProbed => "not-probed",
        }
    }
}

/// A failed probe, as an agent reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Whose it is.
    pub whose: Whose,
    /// For the server's: `starttls-missing`, `starttls-refused`,
    /// `chain-too-large`, `chain-unparsable`, `exit-refused` or `other`.
    pub reason: String,
    /// What happened, for people.
    pub text: String,
}

/// Why a job or an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not an element of this protocol.
    #[error("not a {0} element of {NS}")]
    Foreign(&'static str),
    /// An attribute is missing.
    #[error("missing attribute {0}")]
    Missing(&'static str),
    /// A value is malformed or out of bounds.
    #[error("bad {what}: {why}")]
    Bad {
        /// The attribute or element.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

fn bad(what: &'static str, why: impl Into<String>) -> WireError {
    WireError::Bad {
        what,
        why: why.into(),
    }
}

fn name(n: &str) -> NcName {
    NcName::try_from(n).expect("attribute names here are static and valid")
}

/// An attribute, bounded, free of control characters.
fn attr<'a>(el: &'a Element, key: &'static str) -> Result<&'a str, WireError> {
    let v = el.attr(key).ok_or(WireError::Missing(key))?;
    if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
        return Err(bad(
            key,
            format!("longer than {MAX_TEXT} bytes or not printable"),
        ));
    }
    Ok(v)
}

fn opt_attr<'a>(el: &'a Element, key: &'static str) -> Result<Option<&'a str>, WireError> {
    match el.attr(key) {
        None => Ok(None),
        Some(_) => attr(el, key).map(Some),
    }
}

fn service(s: &str) -> Result<Service, WireError> {
    Service::ALL
        .into_iter()
        .find(|v| v.as_str() == s)
        .ok_or_else(|| bad("service", format!("unknown service {s:?}")))
}

fn tls_word(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::StartTls => "starttls",
        TlsMode::Direct => "direct",
    }
}

fn is_fingerprint(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The `<probe/>` of a job.
pub fn job_element(job: &Job) -> Element {
    let mut b = Element::builder("probe", NS)
        .attr(name("service"), job.service.as_str())
        .attr(name("tls"), tls_word(job.service.tls()))
        .attr(name("domain"), job.domain.as_str())
        .attr(name("sni"), job.domain.as_str())
        .attr(name("host"), job.host.as_str())
        .attr(name("address"), job.addr.ip().to_string())
        .attr(name("port"), job.addr.port().to_string())
        .attr(name("timeout"), job.timeout.as_millis().to_string());
    for exit in job.avoid.iter().take(MAX_AVOID) {
        b = b.append(
            Element::builder("avoid", NS)
                .attr(name("exit"), exit.as_str())
                .build(),
        );
    }
    b.build()
}

/// Reads a `<probe/>`.
pub fn parse_job(el: &Element) -> Result<Job, WireError> {
    if !el.is("probe", NS) {
        return Err(WireError::Foreign("probe"));
    }
    let service = service(attr(el, "service")?)?;
    if attr(el, "tls")? != tls_word(service.tls()) {
        return Err(bad("tls", format!("does not fit the service {service}")));
    }
    let domain = attr(el, "domain")?.to_ascii_lowercase();
    if domain.is_empty() || domain.len() > 253 || !domain.is_ascii() || domain.contains(' ') {
        return Err(bad("domain", "not an ASCII domain"));
    }
    if !attr(el, "sni")?.eq_ignore_ascii_case(&domain) {
        return Err(bad("sni", "this version sends the domain as SNI"));
    }
    let host = attr(el, "host")?.to_owned();
    let ip: IpAddr = attr(el, "address")?
        .parse()
        .map_err(|_| bad("address", "not an IP address"))?;
    let port: u16 = attr(el, "port")?
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("port", "not a port number"))?;
    let millis: u64 = attr(el, "timeout")?
        .parse()
        .map_err(|_| bad("timeout", "not a number of milliseconds"))?;
    let timeout = Duration::from_millis(millis);
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(bad("timeout", format!("must be 1 ms to {MAX_TIMEOUT:?}")));
    }
    let mut avoid = Vec::new();
    for child in el.children() {
        if !child.is("avoid", NS) || avoid.len() == MAX_AVOID {
            return Err(bad(
                "probe",
                format!("at most {MAX_AVOID} <avoid/> children and nothing else"),
            ));
        }
        let exit = attr(child, "exit")?;
        if !is_fingerprint(exit) {
            return Err(bad("exit", "not a 40-digit relay fingerprint"));
        }
        avoid.push(exit.to_ascii_lowercase());
    }
    Ok(Job {
        service,
        domain,
        host,
        addr: SocketAddr::new(ip, port),
        timeout,
        avoid,
    })
}

/// The `<seen/>` or `<failed/>` of an answer.
pub fn answer_element(answer: &Answer) -> Element {
    match answer {
        Answer::Seen(s) => {
            let mut b = Element::builder("seen", NS)
                .attr(name("transport"), s.transport.as_str())
                .attr(name("version"), s.version.as_str())
                .attr(name("cipher"), s.cipher.as_str())
                .attr(name("ms"), s.millis.to_string());
            if let Some(exit) = &s.exit {
                b = b.attr(name("exit"), exit.as_str());
            }
            for der in &s.chain {
                let text = base64::engine::general_purpose::STANDARD.encode(der);
                b = b.append(Element::builder("cert", NS).append(text).build());
            }
            b.build()
        }
        Answer::Failed(f) => Element::builder("failed", NS)
            .attr(name("whose"), f.whose.as_str())
            .attr(name("reason"), f.reason.as_str())
            .append(clip(&f.text))
            .build(),
    }
}

/// The attributes by which an answer names its job's endpoint.
const ECHOED: [&str; 5] = ["service", "domain", "host", "address", "port"];

fn echo_values(job: &Job) -> [String; 5] {
    [
        job.service.as_str().to_owned(),
        job.domain.clone(),
        job.host.clone(),
        job.addr.ip().to_string(),
        job.addr.port().to_string(),
    ]
}

/// The answer to `job`: its `<seen/>` or `<failed/>`, naming the job's
/// endpoint (service, domain, host, address, port), so that an answer can
/// never be taken for another job's.
pub fn answer_element_for(job: &Job, answer: &Answer) -> Element {
    let mut el = answer_element(answer);
    for (key, value) in ECHOED.into_iter().zip(echo_values(job)) {
        el.set_attr(
            xmpp_parsers::minidom::rxml::Namespace::NONE,
            name(key),
            value,
        );
    }
    el
}

/// Reads an agent's answer to `job`: refused unless it names the job's
/// endpoint.
pub fn parse_answer_to(el: &Element, job: &Job) -> Result<Answer, WireError> {
    for (key, want) in ECHOED.into_iter().zip(echo_values(job)) {
        let got = attr(el, key)?;
        let same = match key {
            "address" => got.parse::<IpAddr>().ok() == Some(job.addr.ip()),
            _ => got.eq_ignore_ascii_case(&want),
        };
        if !same {
            return Err(bad(key, format!("{got:?} is not the job's ({want:?})")));
        }
    }
    parse_answer(el)
}

/// Cuts a text to [`MAX_TEXT`] bytes (at a character boundary), without control characters.
pub fn clip(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_TEXT {
            break;
        }
        out.push(c);
    }
    out
}

/// Reads an agent's answer.
pub fn parse_answer(el: &Element) -> Result<Answer, WireError> {
    if el.is("failed", NS) {
        return parse_failure(el).map(Answer::Failed);
    }
    if !el.is("seen", NS) {
        return Err(WireError::Foreign("seen or failed"));
    }
    let transport = attr(el, "transport")?;
    if !["tor", "socks5", "direct"].contains(&transport) {
        return Err(bad("transport", format!("unknown transport {transport:?}")));
    }
    let exit = opt_attr(el, "exit")?;
    if exit.is_some_and(|e| !is_fingerprint(e)) {
        return Err(bad("exit", "not a 40-digit relay fingerprint"));
    }
    let millis = attr(el, "ms")?
        .parse()
        .map_err(|_| bad("ms", "not a number"))?;
    let mut chain = Vec::new();
    let mut total = 0;
    for child in el.children() {
        if !child.is("cert", NS) || chain.len() == MAX_CERTS || child.children().next().is_some() {
            return Err(bad(
                "seen",
                format!("at most {MAX_CERTS} <cert/> children and nothing else"),
            ));
        }
        let text = child.text();
        if text.len() > MAX_CHAIN_BYTES * 4 / 3 + 4 {
            return Err(bad("cert", "larger than a chain may be"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| bad("cert", e.to_string()))?;
        total += der.len();
        if der.is_empty() || total > MAX_CHAIN_BYTES {
            return Err(bad(
                "cert",
                format!("empty, or the chain is over {MAX_CHAIN_BYTES} bytes"),
            ));
        }
        chain.push(der);
    }
    if chain.is_empty() {
        return Err(bad("seen", "no certificate"));
    }
    Ok(Answer::Seen(Sighting {
        transport: transport.to_owned(),
        exit: exit.map(str::to_ascii_lowercase),
        chain,
        version: attr(el, "version")?.to_owned(),
        cipher: attr(el, "cipher")?.to_owned(),
        millis,
    }))
}

fn parse_failure(el: &Element) -> Result<Failure, WireError> {
    let whose = match attr(el, "whose")? {
        "server" => Whose::Server,
        "transport" => Whose::Transport,
        "busy" => Whose::Busy,
        "not-probed" => Whose::NotProbed,
        other => return Err(bad("whose", format!("unknown {other:?}"))),
    };
    let reason = attr(el, "reason")?;
    if !REASONS.contains(&reason) {
        return Err(bad("reason", format!("unknown {reason:?}")));
    }
    if el.children().next().is_some() {
        return Err(bad("failed", "has child elements"));
    }
    let text = el.text();
    if text.len() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(bad(
            "failed",
            format!("text longer than {MAX_TEXT} bytes or not printable"),
        ));
    }
    Ok(Failure {
        whose,
        reason: reason.to_owned(),
        text,
    })
}

/// The reasons a `<failed/>` may give.
pub const REASONS: [&str; 6] = [
    "starttls-missing",
    "starttls-refused",
    "chain-too-large",
    "chain-unparsable",
    "exit-refused",
    "other",
];

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;

//! The XMPP part of a probe: open a stream, ask for STARTTLS (RFC 6120 §5)
//! or start TLS at once (XEP-0368), and hand the very next byte to TLS.
//!
//! The peer is assumed hostile. Everything read before TLS goes through a
//! small XML scanner that reads one byte at a time, so nothing after the
//! `<proceed/>` is ever taken off the stream, and that counts every byte and
//! every level of nesting against [`Limits`]. Each read and write is bounded
//! by [`Limits::io_timeout`] and the whole negotiation by
//! [`Limits::total_timeout`].

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::probe::tls::{handshake_until, TlsObservation};

/// The streams namespace (RFC 6120 §4.8.1).
const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// The STARTTLS namespace (RFC 6120 §5.4).
const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// The namespace of stream error conditions (RFC 6120 §4.9.3).
const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// The predeclared `xml:` prefix (Namespaces in XML §3).
const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// How much of a peer-supplied string goes into an error: enough to read,
/// too little to flood a log or a report.
const MAX_DETAIL: usize = 200;

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
    fn namespace(self) -> &'static str {
        match self {
            Role::Client => "jabber:client",
            Role::Server => "jabber:server",
        }
    }

    /// The ALPN protocol id of XEP-0368.
    fn alpn(self) -> &'static [u8] {
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

/// Bounds on one negotiation, so a hostile peer can cost only so much.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest wait for any one read or write, and for the TLS handshake.
    pub io_timeout: Duration,
    /// Longest the whole negotiation may take, handshake included.
    pub total_timeout: Duration,
    /// Most bytes read before TLS starts.
    pub max_pre_tls_bytes: usize,
    /// Deepest XML nesting accepted, counting the stream element as 1.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            io_timeout: Duration::from_secs(20),
            total_timeout: Duration::from_secs(60),
            max_pre_tls_bytes: 64 * 1024,
            max_depth: 16,
        }
    }
}

/// Why a probe did not produce an observation; each says whose problem it is.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The stream features did not offer `<starttls/>`.
    #[error("the server did not offer STARTTLS")]
    StartTlsMissing,
    /// The server answered `<starttls/>` with `<failure/>`.
    #[error("the server refused STARTTLS")]
    StartTlsRefused,
    /// The server sent `<stream:error>`.
    #[error("stream error: {condition}{}", text_suffix(.text))]
    StreamError {
        /// The defined condition, e.g. `host-unknown`.
        condition: String,
        /// The human-readable text, if the server sent one.
        text: Option<String>,
    },
    /// The server spoke something that is not the XMPP stream protocol.
    #[error("protocol violation: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The server sent more than the allowed bytes before TLS.
    #[error("more than {limit} bytes before TLS")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The server did not answer in time.
    #[error("timed out waiting for {stage}")]
    Timeout {
        /// What we were waiting for.
        stage: &'static str,
    },
    /// The server closed the connection or the stream.
    #[error("connection closed during {stage}")]
    Closed {
        /// What we were waiting for.
        stage: &'static str,
    },
    /// The TLS handshake failed: an alert, a malformed message, or no TLS at all.
    #[error("TLS handshake failed: {detail}")]
    Tls {
        /// rustls's description.
        detail: String,
    },
    /// A local or transport failure that says nothing about the server.
    #[error("I/O error: {detail}")]
    Io {
        /// What failed.
        detail: String,
    },
}

/// Formats the optional text of a stream error.
fn text_suffix(text: &Option<String>) -> String {
    text.as_deref()
        .map(|t| format!(" ({t})"))
        .unwrap_or_default()
}

impl ProbeFailure {
    /// Whether the server caused this: true for all but `Io`, which is only ever
    /// built for local or transport errors (a reset, broken pipe or EOF caused by
    /// the peer is `Closed` instead). A `Timeout` counts as the server's even
    /// though a slow transport can cause one: the limits are meant to be generous.
    pub fn is_remote(&self) -> bool {
        !matches!(self, ProbeFailure::Io { .. })
    }

    /// Sorts an I/O error into the peer's doing (`Closed`, `Timeout`) or ours (`Io`).
    pub(crate) fn from_io(e: io::Error, stage: &'static str) -> ProbeFailure {
        use io::ErrorKind::*;
        match e.kind() {
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => {
                ProbeFailure::Closed { stage }
            }
            TimedOut => ProbeFailure::Timeout { stage },
            _ => ProbeFailure::Io {
                detail: clip(&e.to_string()),
            },
        }
    }

    /// A protocol violation with a description.
    fn protocol(detail: impl Into<String>) -> ProbeFailure {
        ProbeFailure::Protocol {
            detail: detail.into(),
        }
    }
}

/// Negotiate TLS the way an XMPP client/server would and observe the presented chain.
///
/// `domain` is both the stream's `to` and the SNI; `from` is sent only for
/// [`Role::Server`] (a client's `from` would be its JID, which we do not have).
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    domain: &str,
    role: Role,
    from: Option<&str>,
    mode: TlsMode,
    limits: &Limits,
) -> Result<TlsObservation, ProbeFailure> {
    let deadline = Instant::now() + limits.total_timeout;
    match mode {
        TlsMode::Direct => {
            let until = deadline.min(Instant::now() + limits.io_timeout);
            handshake_until(stream, domain, Some(role.alpn()), until).await
        }
        TlsMode::StartTls => {
            let mut xml = Xml::new(stream, limits, deadline);
            starttls(&mut xml, domain, role, from).await?;
            let stream = xml.into_inner();
            let until = deadline.min(Instant::now() + limits.io_timeout);
            handshake_until(stream, domain, None, until).await
        }
    }
}

/// RFC 6120 §5.4.2 up to and including `<proceed/>`.
async fn starttls<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut Xml<S>,
    domain: &str,
    role: Role,
    from: Option<&str>,
) -> Result<(), ProbeFailure> {
    let header = stream_header(domain, role, from);
    xml.send(header.as_bytes(), "stream header").await?;
    xml.read_stream_header(role).await?;

    let stage = "features";
    let features = xml.next_top(stage).await?;
    match (features.ns.as_str(), features.local.as_str()) {
        (NS_STREAMS, "features") if features.starttls => {}
        (NS_STREAMS, "features") => return Err(ProbeFailure::StartTlsMissing),
        _ => return Err(features.unexpected(stage)),
    }

    let stage = "proceed";
    xml.send(format!("<starttls xmlns='{NS_TLS}'/>").as_bytes(), stage)
        .await?;
    let answer = xml.next_top(stage).await?;
    match (answer.ns.as_str(), answer.local.as_str()) {
        (NS_TLS, "proceed") => Ok(()),
        (NS_TLS, "failure") => Err(ProbeFailure::StartTlsRefused),
        _ => Err(answer.unexpected(stage)),
    }
}

/// Our opening stream header (RFC 6120 §4.7).
fn stream_header(domain: &str, role: Role, from: Option<&str>) -> String {
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

/// Escapes a string for a single-quoted attribute.
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

/// Shortens a peer-supplied string and drops control characters, so it is safe to log.
fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL)
        .collect();
    if s.chars()
        .filter(|c| !c.is_control())
        .nth(MAX_DETAIL)
        .is_some()
    {
        out.push('…');
    }
    out
}

/// Bounds one I/O operation by the per-operation and the overall deadline.
async fn bounded<T>(
    io_timeout: Duration,
    deadline: Instant,
    stage: &'static str,
    op: impl Future<Output = io::Result<T>>,
) -> Result<T, ProbeFailure> {
    let until = deadline.min(Instant::now() + io_timeout);
    match tokio::time::timeout_at(until, op).await {
        Err(_) => Err(ProbeFailure::Timeout { stage }),
        Ok(Err(e)) => Err(ProbeFailure::from_io(e, stage)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// A lexical unit of the pre-TLS XML.
#[derive(Debug)]
enum Token {
    /// `<?...?>`; only the XML declaration is allowed, and only first.
    Pi,
    /// A start tag, `empty` when self-closing.
    Start {
        name: String,
        attrs: Vec<(String, String)>,
        empty: bool,
    },
    /// An end tag.
    End { name: String },
    /// Character data, entities decoded.
    Text(String),
}

/// The byte-at-a-time reader and tokenizer.
struct Lexer<S> {
    io: S,
    read: usize,
    limit: usize,
    io_timeout: Duration,
    deadline: Instant,
    /// A `<` ended the last text token and is already consumed.
    pending_lt: bool,
}

/// XML whitespace (XML 1.0 §2.3 `S`).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Bytes that end a name: whitespace or markup.
fn ends_name(b: u8) -> bool {
    is_space(b) || matches!(b, b'/' | b'>' | b'=' | b'<' | b'\'' | b'"' | b'&')
}

impl<S: AsyncRead + AsyncWrite + Unpin> Lexer<S> {
    /// One byte off the stream; never more, so TLS gets the next one.
    async fn byte(&mut self, stage: &'static str) -> Result<u8, ProbeFailure> {
        if self.read >= self.limit {
            return Err(ProbeFailure::TooLarge { limit: self.limit });
        }
        let mut b = [0u8; 1];
        let n = bounded(self.io_timeout, self.deadline, stage, self.io.read(&mut b)).await?;
        if n == 0 {
            return Err(ProbeFailure::Closed { stage });
        }
        self.read += 1;
        Ok(b[0])
    }

    /// The next token. Where only whitespace may appear (`blank_only`), any
    /// other byte fails at once rather than after a run of garbage.
    async fn token(
        &mut self,
        stage: &'static str,
        blank_only: bool,
    ) -> Result<Token, ProbeFailure> {
        let first = if std::mem::take(&mut self.pending_lt) {
            b'<'
        } else {
            self.byte(stage).await?
        };
        if first != b'<' {
            if blank_only {
                return self.blanks(first, stage).await;
            }
            return self.text(first, stage).await;
        }
        match self.byte(stage).await? {
            b'?' => {
                self.skip_until(b"?>", stage).await?;
                Ok(Token::Pi)
            }
            b'!' => self.cdata(stage).await,
            b'/' => {
                let (name, end) = self.name(None, stage).await?;
                let end = self.skip_space(end, stage).await?;
                if end != b'>' {
                    return Err(ProbeFailure::protocol("malformed end tag"));
                }
                Ok(Token::End { name })
            }
            b => self.start_tag(b, stage).await,
        }
    }

    /// Whitespace up to the next `<`, starting with `first`.
    async fn blanks(&mut self, first: u8, stage: &'static str) -> Result<Token, ProbeFailure> {
        let mut b = first;
        while b != b'<' {
            if !is_space(b) {
                return Err(ProbeFailure::protocol(format!(
                    "not XMPP: unexpected byte 0x{b:02x} outside any element"
                )));
            }
            b = self.byte(stage).await?;
        }
        self.pending_lt = true;
        Ok(Token::Text(String::new()))
    }

    /// Character data up to the next `<`.
    async fn text(&mut self, first: u8, stage: &'static str) -> Result<Token, ProbeFailure> {
        let mut raw = vec![first];
        loop {
            let b = self.byte(stage).await?;
            if b == b'<' {
                self.pending_lt = true;
                break;
            }
            raw.push(b);
        }
        Ok(Token::Text(decode(utf8(raw)?)?))
    }

    /// `<![CDATA[...]]>`; comments and DTDs are forbidden by RFC 6120 §11.1.
    async fn cdata(&mut self, stage: &'static str) -> Result<Token, ProbeFailure> {
        for &want in b"[CDATA[" {
            if self.byte(stage).await? != want {
                return Err(ProbeFailure::protocol(
                    "comment or DTD in the stream (RFC 6120 §11.1)",
                ));
            }
        }
        let mut raw = Vec::new();
        loop {
            raw.push(self.byte(stage).await?);
            if raw.ends_with(b"]]>") {
                raw.truncate(raw.len() - 3);
                return Ok(Token::Text(utf8(raw)?));
            }
        }
    }

    /// Consumes bytes through `end`.
    async fn skip_until(&mut self, end: &[u8], stage: &'static str) -> Result<(), ProbeFailure> {
        let mut seen = 0;
        loop {
            let b = self.byte(stage).await?;
            // Only "?>" is used, whose first byte does not recur in it, so a
            // mismatch can restart the match at this byte.
            seen = if b == end[seen] {
                seen + 1
            } else {
                usize::from(b == end[0])
            };
            if seen == end.len() {
                return Ok(());
            }
        }
    }

    /// Skips whitespace starting at `b`; returns the first other byte.
    async fn skip_space(&mut self, mut b: u8, stage: &'static str) -> Result<u8, ProbeFailure> {
        while is_space(b) {
            b = self.byte(stage).await?;
        }
        Ok(b)
    }

    /// A name, starting with `first` if already read; returns it and the byte after it.
    async fn name(
        &mut self,
        first: Option<u8>,
        stage: &'static str,
    ) -> Result<(String, u8), ProbeFailure> {
        let mut raw = Vec::new();
        let mut b = match first {
            Some(b) => b,
            None => self.byte(stage).await?,
        };
        while !ends_name(b) {
            raw.push(b);
            b = self.byte(stage).await?;
        }
        if raw.is_empty() {
            return Err(ProbeFailure::protocol("not XML: empty or malformed name"));
        }
        Ok((utf8(raw)?, b))
    }

    /// The rest of a start tag whose name begins with `first`.
    async fn start_tag(&mut self, first: u8, stage: &'static str) -> Result<Token, ProbeFailure> {
        let (name, mut b) = self.name(Some(first), stage).await?;
        let mut attrs = Vec::new();
        loop {
            b = self.skip_space(b, stage).await?;
            match b {
                b'>' => {
                    return Ok(Token::Start {
                        name,
                        attrs,
                        empty: false,
                    })
                }
                b'/' => {
                    if self.byte(stage).await? != b'>' {
                        return Err(ProbeFailure::protocol("malformed empty-element tag"));
                    }
                    return Ok(Token::Start {
                        name,
                        attrs,
                        empty: true,
                    });
                }
                _ => {}
            }
            let (key, after) = self.name(Some(b), stage).await?;
            if self.skip_space(after, stage).await? != b'=' {
                return Err(ProbeFailure::protocol("malformed attribute"));
            }
            let quote = self.byte(stage).await?;
            let quote = self.skip_space(quote, stage).await?;
            if quote != b'\'' && quote != b'"' {
                return Err(ProbeFailure::protocol("unquoted attribute value"));
            }
            let mut raw = Vec::new();
            loop {
                match self.byte(stage).await? {
                    q if q == quote => break,
                    b'<' => return Err(ProbeFailure::protocol("'<' in attribute value")),
                    v => raw.push(v),
                }
            }
            attrs.push((key, decode(utf8(raw)?)?));
            b = self.byte(stage).await?;
        }
    }
}

/// Bytes as UTF-8, or a protocol violation.
fn utf8(raw: Vec<u8>) -> Result<String, ProbeFailure> {
    String::from_utf8(raw).map_err(|_| ProbeFailure::protocol("not XML: invalid UTF-8"))
}

/// Replaces the predefined and numeric entity references (the only ones
/// RFC 6120 §11.1 allows).
fn decode(s: String) -> Result<String, ProbeFailure> {
    if !s.contains('&') {
        return Ok(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after
            .find(';')
            .ok_or_else(|| ProbeFailure::protocol("unterminated entity reference"))?;
        let entity = &after[..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "apos" => '\'',
            "quot" => '"',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or_else(|| {
                    ProbeFailure::protocol(format!("unknown entity &{};", clip(entity)))
                })?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An open element: its qualified name and the prefixes it declared.
struct Open {
    qname: String,
    decls: Vec<(String, String)>,
}

/// A top-level element (a child of `<stream:stream>`), reduced to what a
/// probe needs so that a long one costs no memory beyond its tag names.
#[derive(Debug, Default)]
struct Top {
    ns: String,
    local: String,
    /// Has a `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>` child.
    starttls: bool,
    /// The first stream error condition child.
    condition: Option<String>,
    /// The stream error `<text/>`, clipped.
    text: Option<String>,
}

impl Top {
    /// The failure for this element turning up where it did.
    fn unexpected(self, stage: &'static str) -> ProbeFailure {
        if self.ns == NS_STREAMS && self.local == "error" {
            return ProbeFailure::StreamError {
                // RFC 6120 §4.9.3.21: the catch-all when none was given.
                condition: self
                    .condition
                    .unwrap_or_else(|| "undefined-condition".into()),
                text: self.text.as_deref().map(clip),
            };
        }
        ProbeFailure::protocol(format!(
            "unexpected <{}/> in namespace '{}' while waiting for {stage}",
            clip(&self.local),
            clip(&self.ns)
        ))
    }
}

/// A namespace-aware element reader over the lexer, tracking depth.
struct Xml<S> {
    lex: Lexer<S>,
    open: Vec<Open>,
    max_depth: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Xml<S> {
    fn new(io: S, limits: &Limits, deadline: Instant) -> Self {
        Xml {
            lex: Lexer {
                io,
                read: 0,
                limit: limits.max_pre_tls_bytes,
                io_timeout: limits.io_timeout,
                deadline,
                pending_lt: false,
            },
            open: Vec::new(),
            max_depth: limits.max_depth,
        }
    }

    /// The stream, positioned right after the last `>` read.
    fn into_inner(self) -> S {
        debug_assert!(!self.lex.pending_lt, "a byte meant for TLS was consumed");
        self.lex.io
    }

    /// Writes and flushes `bytes`.
    async fn send(&mut self, bytes: &[u8], stage: &'static str) -> Result<(), ProbeFailure> {
        let (t, d) = (self.lex.io_timeout, self.lex.deadline);
        bounded(t, d, stage, self.lex.io.write_all(bytes)).await?;
        bounded(t, d, stage, self.lex.io.flush()).await
    }

    /// Opens an element: records its declarations, checks depth, resolves its name.
    fn push(
        &mut self,
        qname: String,
        attrs: &[(String, String)],
    ) -> Result<(String, String), ProbeFailure> {
        if self.open.len() >= self.max_depth {
            return Err(ProbeFailure::protocol(format!(
                "XML nested deeper than {} levels",
                self.max_depth
            )));
        }
        let decls = attrs
            .iter()
            .filter_map(|(k, v)| {
                if k == "xmlns" {
                    Some((String::new(), v.clone()))
                } else {
                    k.strip_prefix("xmlns:").map(|p| (p.to_owned(), v.clone()))
                }
            })
            .collect();
        self.open.push(Open { qname, decls });
        let qname = &self.open.last().expect("just pushed").qname;
        let (prefix, local) = qname.split_once(':').unwrap_or(("", qname));
        let ns = self.resolve(prefix)?;
        Ok((ns, local.to_owned()))
    }

    /// The namespace bound to `prefix` in the current scope.
    fn resolve(&self, prefix: &str) -> Result<String, ProbeFailure> {
        if prefix == "xml" {
            return Ok(NS_XML.to_owned());
        }
        for open in self.open.iter().rev() {
            if let Some((_, uri)) = open.decls.iter().rev().find(|(p, _)| p == prefix) {
                return Ok(uri.clone());
            }
        }
        if prefix.is_empty() {
            return Ok(String::new());
        }
        Err(ProbeFailure::protocol(format!(
            "undeclared namespace prefix '{}'",
            clip(prefix)
        )))
    }

    /// Closes the innermost element, which must be `name`.
    fn pop(&mut self, name: &str) -> Result<(), ProbeFailure> {
        match self.open.pop() {
            Some(open) if open.qname == name => Ok(()),
            _ => Err(ProbeFailure::protocol(format!(
                "mismatched end tag </{}>",
                clip(name)
            ))),
        }
    }

    /// Reads the server's stream header, tolerating an XML declaration before it.
    async fn read_stream_header(&mut self, role: Role) -> Result<(), ProbeFailure> {
        let stage = "stream header";
        let mut seen_pi = false;
        loop {
            match self.lex.token(stage, true).await? {
                Token::Pi if !seen_pi => seen_pi = true,
                Token::Pi => {
                    return Err(ProbeFailure::protocol(
                        "processing instruction in the stream (RFC 6120 §11.1)",
                    ))
                }
                Token::Text(_) => {}
                Token::End { name } => {
                    return Err(ProbeFailure::protocol(format!(
                        "end tag </{}> before the stream header",
                        clip(&name)
                    )))
                }
                Token::Start { name, attrs, empty } => {
                    let (ns, local) = self.push(name, &attrs)?;
                    if ns != NS_STREAMS || local != "stream" {
                        return Err(ProbeFailure::protocol(format!(
                            "expected a stream header, got <{}/> in namespace '{}'",
                            clip(&local),
                            clip(&ns)
                        )));
                    }
                    if empty {
                        return Err(ProbeFailure::Closed { stage });
                    }
                    let content_ns = self.resolve("")?;
                    if !content_ns.is_empty() && content_ns != role.namespace() {
                        return Err(ProbeFailure::protocol(format!(
                            "stream content namespace '{}', expected '{}'",
                            clip(&content_ns),
                            role.namespace()
                        )));
                    }
                    // RFC 6120 §4.7.5: no version means a pre-1.0 stream,
                    // which has no stream features and so no STARTTLS.
                    let version = attrs.iter().find(|(k, _)| k == "version");
                    let major = version
                        .and_then(|(_, v)| v.split('.').next())
                        .and_then(|m| m.trim().parse::<u32>().ok())
                        .unwrap_or(0);
                    if major < 1 {
                        return Err(ProbeFailure::StartTlsMissing);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Reads the next complete child of the stream element, skipping
    /// whitespace keepalives; stops right after its final `>`.
    async fn next_top(&mut self, stage: &'static str) -> Result<Top, ProbeFailure> {
        debug_assert_eq!(self.open.len(), 1, "inside the stream element");
        let (name, attrs, empty) = loop {
            match self.lex.token(stage, true).await? {
                Token::Text(_) => {}
                Token::Pi => {
                    return Err(ProbeFailure::protocol(
                        "processing instruction in the stream (RFC 6120 §11.1)",
                    ))
                }
                Token::End { name } => {
                    self.pop(&name)?;
                    return Err(ProbeFailure::Closed { stage });
                }
                Token::Start { name, attrs, empty } => break (name, attrs, empty),
            }
        };
        let (ns, local) = self.push(name.clone(), &attrs)?;
        let mut top = Top {
            ns,
            local,
            ..Top::default()
        };
        if empty {
            return self.pop(&name).map(|()| top);
        }
        // Depth 2 is `top` itself; its children are depth 3.
        let mut in_text = false;
        loop {
            match self.lex.token(stage, false).await? {
                Token::Start { name, attrs, empty } => {
                    let (ns, local) = self.push(name.clone(), &attrs)?;
                    if self.open.len() == 3 {
                        match (ns.as_str(), local.as_str()) {
                            (NS_TLS, "starttls") => top.starttls = true,
                            (NS_STREAM_ERRORS, "text") => in_text = !empty,
                            (NS_STREAM_ERRORS, _) if top.condition.is_none() => {
                                top.condition = Some(clip(&local))
                            }
                            _ => {}
                        }
                    }
                    if empty {
                        self.pop(&name)?;
                    }
                }
                Token::End { name } => {
                    self.pop(&name)?;
                    in_text = false;
                    if self.open.len() == 1 {
                        return Ok(top);
                    }
                }
                Token::Text(t) => {
                    if in_text && self.open.len() == 3 {
                        // Kept only up to what clip() will show, so a long
                        // text costs no memory.
                        let kept = top.text.get_or_insert_with(String::new);
                        let room = (MAX_DETAIL + 1).saturating_sub(kept.chars().count());
                        kept.extend(t.chars().take(room));
                    }
                }
                Token::Pi => {
                    return Err(ProbeFailure::protocol(
                        "processing instruction in the stream (RFC 6120 §11.1)",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each test runs its own hostile or well-behaved server on 127.0.0.1:0.

    use std::net::SocketAddr;
    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use rustls::crypto::ring;
    use rustls::ServerConfig;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tokio_rustls::TlsAcceptor;

    use super::*;

    const DOMAIN: &str = "example.org";
    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='example.org' version='1.0'>";
    const FEATURES: &str = "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>\
        <required/></starttls></stream:features>";
    const PROCEED: &str = "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
    const STARTTLS: &[u8] = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";

    /// A server's certificate chain and key.
    struct Identity {
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    }

    fn self_signed() -> Identity {
        let ck = rcgen::generate_simple_self_signed(vec![DOMAIN.to_owned()]).unwrap();
        Identity {
            chain: vec![ck.cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into(),
        }
    }

    fn leaf_and_ca() -> Identity {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "CertWatch Test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![DOMAIN.to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &*ca)
            .unwrap();
        Identity {
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        }
    }

    fn acceptor(
        id: &Identity,
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
    ) -> TlsAcceptor {
        let mut cfg = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(id.chain.clone(), id.key.clone_key())
            .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsAcceptor::from(Arc::new(cfg))
    }

    /// Serves exactly one connection with `f`.
    async fn serve<F, Fut, T>(f: F) -> (SocketAddr, JoinHandle<T>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            f(stream).await
        });
        (addr, handle)
    }

    /// Probes `addr`; the outer timeout only guards against a hung test.
    async fn probe(
        addr: SocketAddr,
        role: Role,
        from: Option<&str>,
        mode: TlsMode,
        limits: &Limits,
    ) -> Result<TlsObservation, ProbeFailure> {
        let stream = TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(30),
            negotiate(stream, DOMAIN, role, from, mode, limits),
        )
        .await
        .expect("negotiate must return on its own")
    }

    /// For servers that answer: generous, so a loaded machine cannot turn
    /// a pass into a timeout.
    fn roomy() -> Limits {
        Limits {
            io_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(20),
            ..Limits::default()
        }
    }

    /// For scripts, some of which stall on purpose.
    fn short() -> Limits {
        Limits {
            io_timeout: Duration::from_millis(500),
            total_timeout: Duration::from_secs(5),
            ..Limits::default()
        }
    }

    /// Reads byte by byte through `needle` (so a following TLS accept sees
    /// every byte); stops at EOF.
    async fn read_until<R: AsyncRead + Unpin>(r: &mut R, needle: &[u8]) -> String {
        let mut buf = Vec::new();
        while !buf.ends_with(needle) {
            let mut b = [0u8; 1];
            if r.read(&mut b).await.unwrap_or(0) == 0 {
                break;
            }
            buf.push(b[0]);
            assert!(buf.len() < 16 * 1024, "client sent too much");
        }
        String::from_utf8(buf).unwrap()
    }

    /// Keeps the connection open until the client goes away.
    async fn hold<R: AsyncRead + Unpin>(r: &mut R) {
        let mut sink = [0u8; 512];
        let wait = async { while r.read(&mut sink).await.unwrap_or(0) > 0 {} };
        let _ = tokio::time::timeout(Duration::from_secs(30), wait).await;
    }

    /// Reads the client's stream header (it ends with the first `'>`).
    async fn client_header<R: AsyncRead + Unpin>(r: &mut R) -> String {
        read_until(r, b"'>").await
    }

    /// A STARTTLS server speaking one dialect, then TLS with `id`.
    async fn starttls_server(
        mut s: TcpStream,
        before: String,
        proceed: &'static str,
        tls: TlsAcceptor,
    ) -> String {
        let header = client_header(&mut s).await;
        s.write_all(before.as_bytes()).await.unwrap();
        let asked = read_until(&mut s, b"/>").await;
        assert_eq!(asked.as_bytes(), STARTTLS);
        s.write_all(proceed.as_bytes()).await.unwrap();
        let mut tls = tls.accept(s).await.expect("server-side handshake");
        hold(&mut tls).await;
        header
    }

    #[tokio::test]
    async fn starttls_records_chain_across_dialects() {
        let s2 = "http://etherx.jabber.org/streams";
        let dialects: Vec<(&str, String, &'static str)> = vec![
            ("usual", format!("{HEADER}{FEATURES}"), PROCEED),
            (
                "no declaration, other prefix, double quotes, explicit end tags",
                format!(
                    "<s:stream xmlns=\"jabber:client\" xmlns:s=\"{s2}\" version=\"1.0\">\
                     <s:features><starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"></starttls></s:features>"
                ),
                "<proceed xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"></proceed>",
            ),
            (
                "features in default namespace, keepalives, unknown children",
                format!(
                    "{HEADER}\n \n<features xmlns='{s2}'>\
                     <mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>\
                     <mechanism>SCRAM-SHA-1</mechanism></mechanisms>\
                     <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='a&amp;b' ver='x'/>\
                     <![CDATA[ <not-a-tag/> ]]>\
                     <tls:starttls xmlns:tls='urn:ietf:params:xml:ns:xmpp-tls'/></features>\n"
                ),
                PROCEED,
            ),
        ];
        for (name, before, proceed) in dialects {
            let id = self_signed();
            let leaf = id.chain[0].to_vec();
            let tls = acceptor(&id, rustls::ALL_VERSIONS, &[]);
            let (addr, server) = serve(move |s| starttls_server(s, before, proceed, tls)).await;
            let obs = probe(addr, Role::Client, None, TlsMode::StartTls, &roomy())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(obs.chain, vec![leaf], "{name}");
            assert_eq!(obs.version, "TLSv1.3", "{name}");
            assert!(!obs.cipher.is_empty(), "{name}");
            assert_eq!(obs.alpn, None, "{name}: STARTTLS offers no ALPN");
            let header = server.await.unwrap();
            assert!(header.contains("to='example.org'"), "{name}: {header}");
            assert!(header.contains("xmlns='jabber:client'"), "{name}: {header}");
            assert!(!header.contains("from="), "{name}: {header}");
        }
    }

    #[tokio::test]
    async fn s2s_starttls_sends_from() {
        let id = self_signed();
        let leaf = id.chain[0].to_vec();
        let tls = acceptor(&id, rustls::ALL_VERSIONS, &[]);
        let before = format!(
            "{}{FEATURES}",
            HEADER.replace("jabber:client", "jabber:server")
        );
        let (addr, server) = serve(move |s| starttls_server(s, before, PROCEED, tls)).await;
        let obs = probe(
            addr,
            Role::Server,
            Some("certwatch.example.net"),
            TlsMode::StartTls,
            &roomy(),
        )
        .await
        .unwrap();
        assert_eq!(obs.chain, vec![leaf]);
        let header = server.await.unwrap();
        assert!(header.contains("from='certwatch.example.net'"), "{header}");
        assert!(header.contains("to='example.org'"), "{header}");
        assert!(header.contains("xmlns='jabber:server'"), "{header}");
        assert!(
            header.contains("xmlns:db='jabber:server:dialback'"),
            "{header}"
        );
    }

    #[tokio::test]
    async fn direct_tls_records_alpn_version_and_chain() {
        let tls12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        let cases = [
            (
                Role::Client,
                rustls::ALL_VERSIONS,
                "xmpp-client",
                "TLSv1.3",
                false,
            ),
            (
                Role::Server,
                rustls::ALL_VERSIONS,
                "xmpp-server",
                "TLSv1.3",
                false,
            ),
            (Role::Client, tls12, "xmpp-client", "TLSv1.2", false),
            (
                Role::Client,
                rustls::ALL_VERSIONS,
                "xmpp-client",
                "TLSv1.3",
                true,
            ),
        ];
        for (role, versions, alpn, version, two) in cases {
            let id = if two { leaf_and_ca() } else { self_signed() };
            let chain: Vec<Vec<u8>> = id.chain.iter().map(|c| c.to_vec()).collect();
            let tls = acceptor(&id, versions, &[b"xmpp-client", b"xmpp-server"]);
            let (addr, server) = serve(move |s| async move {
                let mut tls = tls.accept(s).await.expect("server-side handshake");
                hold(&mut tls).await;
            })
            .await;
            let obs = probe(addr, role, None, TlsMode::Direct, &roomy())
                .await
                .unwrap();
            assert_eq!(obs.chain, chain, "{role:?} {version}: chain as presented");
            assert_eq!(obs.alpn.as_deref(), Some(alpn));
            assert_eq!(obs.version, version);
            assert!(!obs.cipher.is_empty());
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn starttls_records_leaf_and_ca_in_order() {
        let id = leaf_and_ca();
        let chain: Vec<Vec<u8>> = id.chain.iter().map(|c| c.to_vec()).collect();
        let tls = acceptor(&id, rustls::ALL_VERSIONS, &[]);
        let before = format!("{HEADER}{FEATURES}");
        let (addr, server) = serve(move |s| starttls_server(s, before, PROCEED, tls)).await;
        let obs = probe(addr, Role::Client, None, TlsMode::StartTls, &roomy())
            .await
            .unwrap();
        assert_eq!(obs.chain.len(), 2);
        assert_eq!(obs.chain, chain);
        server.await.unwrap();
    }

    /// What a scripted plaintext server does after its script.
    #[derive(Clone, Copy)]
    enum Then {
        Hold,
        Close,
    }

    /// A plaintext server: reads our header, sends `before`, and if `after`
    /// is given waits for `<starttls/>` and sends `after`; `expect` judges
    /// the failure.
    struct Script {
        name: &'static str,
        before: String,
        after: Option<&'static str>,
        then: Then,
        expect: fn(&ProbeFailure) -> bool,
    }

    async fn run_script(mut s: TcpStream, before: String, after: Option<&str>, then: Then) {
        client_header(&mut s).await;
        let _ = s.write_all(before.as_bytes()).await;
        if let Some(after) = after {
            read_until(&mut s, b"/>").await;
            let _ = s.write_all(after.as_bytes()).await;
        }
        if let Then::Hold = then {
            hold(&mut s).await;
        }
    }

    #[tokio::test]
    async fn hostile_plaintext_servers_fail_cleanly() {
        use ProbeFailure as F;
        let deep = format!("{HEADER}<stream:features>{}", "<a>".repeat(100));
        let scripts = vec![
            Script {
                name: "features without starttls",
                before: format!(
                    "{HEADER}<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
                     <mechanism>PLAIN</mechanism></mechanisms></stream:features>"
                ),
                after: None,
                then: Then::Hold,
                expect: |f| *f == F::StartTlsMissing,
            },
            Script {
                name: "starttls in the wrong namespace",
                before: format!("{HEADER}<stream:features><starttls/></stream:features>"),
                after: None,
                then: Then::Hold,
                expect: |f| *f == F::StartTlsMissing,
            },
            Script {
                name: "pre-1.0 stream without version",
                before: HEADER.replace(" version='1.0'", ""),
                after: None,
                then: Then::Hold,
                expect: |f| *f == F::StartTlsMissing,
            },
            Script {
                name: "failure instead of proceed",
                before: format!("{HEADER}{FEATURES}"),
                after: Some("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>"),
                then: Then::Close,
                expect: |f| *f == F::StartTlsRefused,
            },
            Script {
                name: "stream error instead of features",
                before: format!(
                    "{HEADER}<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                     <text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>no such \
                     host &amp; no \"luck\"</text></stream:error></stream:stream>"
                ),
                after: None,
                then: Then::Close,
                expect: |f| {
                    *f == F::StreamError {
                        condition: "host-unknown".into(),
                        text: Some("no such host & no \"luck\"".into()),
                    }
                },
            },
            Script {
                name: "stream error instead of proceed",
                before: format!("{HEADER}{FEATURES}"),
                after: Some(
                    "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                     </stream:error>",
                ),
                then: Then::Hold,
                expect: |f| {
                    *f == F::StreamError {
                        condition: "policy-violation".into(),
                        text: None,
                    }
                },
            },
            Script {
                name: "HTTP server",
                before: "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".into(),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { .. }),
            },
            Script {
                name: "binary garbage",
                before: "\u{16}\u{3}\u{1}\0\u{5}hello".into(),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { .. }),
            },
            Script {
                name: "markup garbage",
                before: "<<<>>>".into(),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { .. }),
            },
            Script {
                name: "wrong stream namespace",
                before: HEADER.replace("http://etherx.jabber.org/streams", "urn:other"),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { .. }),
            },
            Script {
                name: "s2s namespace on a c2s stream",
                before: format!("{}{FEATURES}", HEADER.replace("jabber:client", "jabber:server")),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { .. }),
            },
            Script {
                name: "undeclared prefix",
                before: format!("{HEADER}<x:features/>"),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { detail } if detail.contains("prefix")),
            },
            Script {
                name: "mismatched end tag",
                before: format!("{HEADER}<stream:features><a></b>"),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { detail } if detail.contains("mismatched")),
            },
            Script {
                name: "unknown entity",
                before: format!("{HEADER}<stream:features><a>&foo;</a></stream:features>"),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { .. }),
            },
            Script {
                name: "comment",
                before: format!("{HEADER}<!-- hi --><stream:features/>"),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { .. }),
            },
            Script {
                name: "message instead of features",
                before: format!("{HEADER}<message to='a@b'><body>hi</body></message>"),
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { detail } if detail.contains("message")),
            },
            Script {
                name: "features again instead of proceed",
                before: format!("{HEADER}{FEATURES}"),
                after: Some(FEATURES),
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { .. }),
            },
            Script {
                name: "nested too deep",
                before: deep,
                after: None,
                then: Then::Hold,
                expect: |f| matches!(f, F::Protocol { detail } if detail.contains("deeper")),
            },
            Script {
                name: "closes immediately",
                before: String::new(),
                after: None,
                then: Then::Close,
                expect: |f| *f == F::Closed { stage: "stream header" },
            },
            Script {
                name: "closes after the header",
                before: HEADER.into(),
                after: None,
                then: Then::Close,
                expect: |f| *f == F::Closed { stage: "features" },
            },
            Script {
                name: "ends the stream after the header",
                before: format!("{HEADER}</stream:stream>"),
                after: None,
                then: Then::Hold,
                expect: |f| *f == F::Closed { stage: "features" },
            },
            Script {
                name: "closes instead of proceed",
                before: format!("{HEADER}{FEATURES}"),
                after: Some(""),
                then: Then::Close,
                expect: |f| *f == F::Closed { stage: "proceed" },
            },
            Script {
                name: "stalls after the header",
                before: HEADER.into(),
                after: None,
                then: Then::Hold,
                expect: |f| *f == F::Timeout { stage: "features" },
            },
            Script {
                name: "stalls inside the features",
                before: format!("{HEADER}<stream:features><starttls xmlns="),
                after: None,
                then: Then::Hold,
                expect: |f| *f == F::Timeout { stage: "features" },
            },
            Script {
                name: "stalls instead of proceed",
                before: format!("{HEADER}{FEATURES}"),
                after: Some(""),
                then: Then::Hold,
                expect: |f| *f == F::Timeout { stage: "proceed" },
            },
        ];
        for Script {
            name,
            before,
            after,
            then,
            expect,
        } in scripts
        {
            let (addr, server) = serve(move |s| run_script(s, before, after, then)).await;
            let got = probe(addr, Role::Client, None, TlsMode::StartTls, &short()).await;
            match got {
                Err(f) => {
                    assert!(expect(&f), "{name}: unexpected failure {f:?}");
                    assert!(f.is_remote(), "{name}: {f:?} is the server's doing");
                }
                Ok(obs) => panic!("{name}: unexpectedly observed {obs:?}"),
            }
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn endless_features_hit_the_byte_limit() {
        let (addr, server) = serve(|mut s| async move {
            client_header(&mut s).await;
            s.write_all(HEADER.as_bytes()).await.unwrap();
            s.write_all(b"<stream:features>").await.unwrap();
            let chunk = "<x xmlns='urn:example:junk'><y>junk</y></x>".repeat(100);
            // Bounded so the server stops even if the client never does.
            for _ in 0..10_000 {
                if s.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
            }
            panic!("the client kept reading");
        })
        .await;
        let limits = Limits {
            io_timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let got = probe(addr, Role::Client, None, TlsMode::StartTls, &limits).await;
        assert_eq!(
            got.unwrap_err(),
            ProbeFailure::TooLarge { limit: 64 * 1024 }
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn direct_tls_answered_with_plaintext_xml_is_tls_failure() {
        let (addr, server) = serve(|mut s| async move {
            let mut hello = [0u8; 5];
            let _ = s.read_exact(&mut hello).await;
            let _ = s.write_all(format!("{HEADER}{FEATURES}").as_bytes()).await;
            hold(&mut s).await;
        })
        .await;
        let got = probe(addr, Role::Client, None, TlsMode::Direct, &roomy()).await;
        assert!(matches!(got, Err(ProbeFailure::Tls { .. })), "{got:?}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn servers_that_reject_the_client_hello() {
        // handshake_failure alert: content type 21, TLS 1.2 record, fatal (2), 40.
        const ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];
        for send_alert in [true, false] {
            let (addr, server) = serve(move |mut s| async move {
                let mut record = [0u8; 5];
                s.read_exact(&mut record).await.unwrap();
                assert_eq!(record[0], 0x16, "a TLS handshake record");
                if send_alert {
                    s.write_all(ALERT).await.unwrap();
                    hold(&mut s).await;
                }
            })
            .await;
            let got = probe(addr, Role::Client, None, TlsMode::Direct, &roomy()).await;
            match got {
                Err(ProbeFailure::Tls { detail }) => {
                    assert!(send_alert, "closing is Closed, not Tls: {detail}");
                    assert!(detail.contains("HandshakeFailure"), "{detail}");
                }
                Err(ProbeFailure::Closed { stage }) => {
                    assert!(!send_alert, "an alert is a Tls failure");
                    assert_eq!(stage, "tls handshake");
                }
                other => panic!("alert={send_alert}: {other:?}"),
            }
            server.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dribbling_server_hits_the_total_timeout() {
        // In memory, so paused time advances deterministically.
        let (client, mut server) = tokio::io::duplex(1024);
        let server = tokio::spawn(async move {
            client_header(&mut server).await;
            server.write_all(HEADER.as_bytes()).await.unwrap();
            // One keepalive byte well inside io_timeout, forever (bounded).
            for _ in 0..100_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if server.write_all(b" ").await.is_err() {
                    return;
                }
            }
        });
        let limits = Limits {
            io_timeout: Duration::from_millis(300),
            total_timeout: Duration::from_secs(3),
            ..Limits::default()
        };
        let got = negotiate(
            client,
            DOMAIN,
            Role::Client,
            None,
            TlsMode::StartTls,
            &limits,
        )
        .await;
        assert_eq!(
            got.unwrap_err(),
            ProbeFailure::Timeout { stage: "features" }
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn nothing_after_proceed_is_consumed() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        // Everything is already waiting, so a reader that buffered would take the tail.
        server
            .write_all(format!("{HEADER}{FEATURES}{PROCEED}TAIL").as_bytes())
            .await
            .unwrap();
        let mut xml = Xml::new(
            client,
            &Limits::default(),
            Instant::now() + Duration::from_secs(5),
        );
        starttls(&mut xml, DOMAIN, Role::Client, None)
            .await
            .unwrap();
        let mut client = xml.into_inner();
        drop(server);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"TAIL");
    }

    #[test]
    fn header_escapes_and_declares() {
        let h = stream_header("a'b&c", Role::Server, Some("x<y"));
        assert!(
            h.starts_with("<?xml version='1.0'?><stream:stream to='a&apos;b&amp;c' version='1.0'")
        );
        assert!(
            h.contains(" xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'")
        );
        assert!(h.contains(" from='x&lt;y'"));
        let c = stream_header("example.org", Role::Client, Some("ignored.example"));
        assert!(!c.contains("from="), "a client stream carries no from: {c}");
        assert!(
            c.ends_with("xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        );
    }

    #[test]
    fn entities_decode() {
        assert_eq!(
            decode("a&lt;&gt;&amp;&apos;&quot;&#65;&#x42;z".into()).unwrap(),
            "a<>&'\"ABz"
        );
        assert!(decode("&nbsp;".into()).is_err());
        assert!(decode("&#xD800;".into()).is_err());
        assert!(decode("a & b".into()).is_err());
    }

    #[test]
    fn details_are_clipped_and_cleaned() {
        assert_eq!(clip("a\u{1b}[31mb\n"), "a[31mb");
        let long = clip(&"x".repeat(10_000));
        assert_eq!(long.chars().count(), MAX_DETAIL + 1);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn only_local_io_is_not_remote() {
        let local = ProbeFailure::from_io(io::Error::other("circuit collapsed"), "features");
        assert!(matches!(local, ProbeFailure::Io { .. }));
        assert!(!local.is_remote());
        let reset = ProbeFailure::from_io(io::ErrorKind::ConnectionReset.into(), "features");
        assert_eq!(reset, ProbeFailure::Closed { stage: "features" });
        assert!(reset.is_remote());
        assert!(ProbeFailure::Timeout { stage: "x" }.is_remote());
        assert_eq!(
            ProbeFailure::StreamError {
                condition: "host-unknown".into(),
                text: Some("nope".into())
            }
            .to_string(),
            "stream error: host-unknown (nope)"
        );
    }

    #[test]
    fn negotiate_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let (client, _server) = tokio::io::duplex(16);
        let limits = Limits::default();
        let fut = negotiate(
            client,
            DOMAIN,
            Role::Client,
            None,
            TlsMode::StartTls,
            &limits,
        );
        assert_send(&fut);
    }
}

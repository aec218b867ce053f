//! The pre-TLS XML of an XMPP stream, read by a bounded scanner.
//!
//! The peer is assumed hostile. The scanner reads one byte at a time, so
//! nothing after the `<proceed/>` is ever taken off the stream (TLS gets the
//! very next byte), and it counts every byte and every level of nesting
//! against the [`Limits`] it is given. Each read and
//! write is bounded by the per-operation timeout and the overall deadline.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::failure::{clip, ProbeFailure, MAX_DETAIL};
use super::lexer::{bounded, Lexer, Token};
use crate::vocab::Role;

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

/// The streams namespace (RFC 6120 §4.8.1).
pub(super) const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// The STARTTLS namespace (RFC 6120 §5.4).
pub(super) const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// The namespace of stream error conditions (RFC 6120 §4.9.3).
pub(super) const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// The predeclared `xml:` prefix (Namespaces in XML §3).
pub(super) const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// An open element: its qualified name and the prefixes it declared.
struct Open {
    qname: String,
    decls: Vec<(String, String)>,
}

/// A top-level element (a child of `<stream:stream>`), reduced to what a
/// probe needs so that a long one costs no memory beyond its tag names.
#[derive(Debug, Default)]
pub(super) struct Top {
    pub(super) ns: String,
    pub(super) local: String,
    /// Has a `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>` child.
    pub(super) starttls: bool,
    /// The first stream error condition child.
    condition: Option<String>,
    /// The stream error `<text/>`, clipped.
    text: Option<String>,
}

impl Top {
    /// The failure for this element turning up where it did.
    pub(super) fn unexpected(self, stage: &'static str) -> ProbeFailure {
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
pub(super) struct Xml<S> {
    lex: Lexer<S>,
    open: Vec<Open>,
    max_depth: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Xml<S> {
    pub(super) fn new(io: S, limits: &Limits, deadline: Instant) -> Self {
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
    pub(super) fn into_inner(self) -> S {
        debug_assert!(!self.lex.pending_lt, "a byte meant for TLS was consumed");
        self.lex.io
    }

    /// Writes and flushes `bytes`.
    pub(super) async fn send(
        &mut self,
        bytes: &[u8],
        stage: &'static str,
    ) -> Result<(), ProbeFailure> {
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
    pub(super) async fn read_stream_header(&mut self, role: Role) -> Result<(), ProbeFailure> {
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
    pub(super) async fn next_top(&mut self, stage: &'static str) -> Result<Top, ProbeFailure> {
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

//! The byte-at-a-time tokenizer under [`xml`](super::xml). It never reads a
//! byte more than the token it returns needs, so TLS gets the very next one,
//! and it counts every byte against its limit.

use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::failure::{clip, ProbeFailure};

/// Bounds one I/O operation by the per-operation and the overall deadline.
pub(super) async fn bounded<T>(
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
pub(super) enum Token {
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
pub(super) struct Lexer<S> {
    pub(super) io: S,
    pub(super) read: usize,
    pub(super) limit: usize,
    pub(super) io_timeout: Duration,
    pub(super) deadline: Instant,
    /// A `<` ended the last text token and is already consumed.
    pub(super) pending_lt: bool,
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
    pub(super) async fn byte(&mut self, stage: &'static str) -> Result<u8, ProbeFailure> {
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
    pub(super) async fn token(
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
pub(super) fn decode(s: String) -> Result<String, ProbeFailure> {
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

//! Why the server refused the component: tokio-xmpp reports any refusal as
//! "component authentication failure", so the link keeps the first bytes the
//! server sent and reads the stream error (condition and text) from them.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_xmpp::minidom::Element;

/// How much of the start of a stream is kept: the server's header and a
/// stream error fit in far less.
const KEEP: usize = 8 << 10;

/// The first bytes read on a link, shared with whoever set it up.
#[derive(Clone, Debug, Default)]
pub struct Recording(Arc<Mutex<Vec<u8>>>, Arc<AtomicBool>);

impl Recording {
    /// Forgets what was kept (a new connection starts).
    pub fn clear(&self) {
        self.0.lock().expect("recording lock").clear();
        self.1.store(false, Ordering::Relaxed);
    }

    /// Forgets what was kept and keeps nothing more (the link is up).
    pub fn stop(&self) {
        self.1.store(true, Ordering::Relaxed);
        self.0.lock().expect("recording lock").clear();
    }

    /// The server's stream error in what was kept, if it sent one.
    pub fn stream_error(&self) -> Option<StreamRefusal> {
        let bytes = self.0.lock().expect("recording lock").clone();
        parse_stream_error(&String::from_utf8_lossy(&bytes))
    }

    fn keep(&self, data: &[u8]) {
        if self.1.load(Ordering::Relaxed) {
            return;
        }
        let mut kept = self.0.lock().expect("recording lock");
        let room = KEEP.saturating_sub(kept.len());
        kept.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// A stream that copies the first [`KEEP`] bytes it reads into a [`Recording`].
pub struct Recorded<S> {
    inner: S,
    recording: Recording,
}

impl<S> Recorded<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, recording: Recording) -> Self {
        Recorded { inner, recording }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let fresh = &buf.filled()[before..];
            self.recording.keep(fresh);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A `<stream:error>` the server sent: its defined condition and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRefusal {
    /// The condition element's name, e.g. `host-unknown`.
    pub condition: String,
    /// The server's `<text>`, if any.
    pub text: Option<String>,
}

impl StreamRefusal {
    /// What the operator should look at, for the conditions servers send
    /// when refusing a component.
    pub fn hint(&self, component: &str) -> String {
        match self.condition.as_str() {
            "host-unknown" | "improper-addressing" | "host-gone" => format!(
                "the server has no component named {component}: xmpp.component is likely wrong \
                 (it must equal the name in the server's Component line or ejabberd_service hosts)"
            ),
            // Prosody says host-unknown for a wrong name; ejabberd 23 says
            // not-authorized for both, so the name stays a suspect.
            "not-authorized" => format!(
                "xmpp.secret (or secret_file) is likely wrong: it must equal the server's \
                 component_secret or ejabberd_service password; on ejabberd, which answers \
                 not-authorized for an unknown name too, also check that xmpp.component \
                 ({component}) is the name configured there"
            ),
            "conflict" => format!("another process is already connected as {component}"),
            _ => "see the server's log for the reason".into(),
        }
    }
}

impl std::fmt::Display for StreamRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.condition)?;
        if let Some(t) = &self.text {
            write!(f, " ({t})")?;
        }
        Ok(())
    }
}

const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
const NS_XMPP_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// Finds `<stream:error>…</stream:error>` in the start of a stream.
fn parse_stream_error(text: &str) -> Option<StreamRefusal> {
    let start = text.find("<stream:error")?;
    let end = text[start..].find("</stream:error>")? + start + "</stream:error>".len();
    // The `stream` prefix is declared on the stream header, not in the fragment.
    let fragment = text[start..end].replacen(
        "<stream:error",
        &format!("<stream:error xmlns:stream='{NS_STREAMS}'"),
        1,
    );
    let element: Element = fragment.parse().ok()?;
    let condition = element
        .children()
        .find(|c| c.ns() == NS_XMPP_STREAMS && c.name() != "text")?
        .name()
        .to_owned();
    let text = element
        .children()
        .find(|c| c.name() == "text")
        .map(|t| t.text())
        .filter(|t| !t.is_empty());
    Some(StreamRefusal { condition, text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_errors_of_prosody_and_ejabberd_are_read() {
        let prosody = "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='x' from='wrong.localhost'><stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>This server does not serve wrong.localhost</text></stream:error></stream:stream>";
        let r = parse_stream_error(prosody).unwrap();
        assert_eq!(r.condition, "host-unknown");
        assert_eq!(
            r.text.as_deref(),
            Some("This server does not serve wrong.localhost")
        );
        assert!(r.hint("wrong.localhost").contains("xmpp.component"));
        let ejabberd = "<stream:stream id='1' xmlns:stream='http://etherx.jabber.org/streams'><stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>";
        let r = parse_stream_error(ejabberd).unwrap();
        assert_eq!(r.condition, "not-authorized");
        assert_eq!(r.text, None);
        assert!(r.hint("c.localhost").contains("xmpp.secret"));
        assert!(parse_stream_error("<stream:stream><handshake/>").is_none());
    }

    #[test]
    fn only_the_start_of_a_stream_is_kept() {
        let rec = Recording::default();
        rec.keep(&vec![b'x'; KEEP + 100]);
        rec.keep(b"more");
        assert_eq!(rec.0.lock().unwrap().len(), KEEP);
        rec.clear();
        assert!(rec.0.lock().unwrap().is_empty());
        rec.stop();
        rec.keep(b"<stream:error>");
        assert!(rec.0.lock().unwrap().is_empty());
    }
}

//! Whose problem a failure is. Every error type of the service core says it
//! through [`HasKind`], so the decision "tell the subscribers, tell the
//! operators, or tell the user" travels with the error instead of being
//! guessed afterwards (in the manner of arti's `tor_error::ErrorKind`).

/// Whose problem a failure is, and so who should hear about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The domain's: its server or its DNS refused, failed or misbehaved. A
    /// finding about the domain, for its subscribers.
    Remote,
    /// Our DNS resolver (or the path to it) gave no usable answer.
    Resolver,
    /// Our Tor client, or the SOCKS5 proxy, could not carry the probe.
    Tor,
    /// Our own storage failed.
    Store,
    /// The user's input is not acceptable (a bad domain, a bad command).
    Input,
    /// The operator's configuration is unusable.
    Config,
    /// The service is shutting down.
    Shutdown,
    /// A bug in CertWatch itself (a check panicked): ours, never the domain's.
    Bug,
}

impl ErrorKind {
    /// Whether the fault lies with this service or its operator rather than
    /// with the domain or the user: never a reason to alert subscribers.
    pub fn is_ours(self) -> bool {
        matches!(
            self,
            ErrorKind::Resolver
                | ErrorKind::Tor
                | ErrorKind::Store
                | ErrorKind::Config
                | ErrorKind::Shutdown
                | ErrorKind::Bug
        )
    }
}

/// An error that knows whose problem it is.
pub trait HasKind {
    /// The kind.
    fn kind(&self) -> ErrorKind;

    /// A fact about the domain (its server or DNS), not about us.
    fn is_remote(&self) -> bool {
        self.kind() == ErrorKind::Remote
    }

    /// Our own failure (resolver, Tor, store, configuration).
    fn is_ours(&self) -> bool {
        self.kind().is_ours()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_kinds_are_ours() {
        use ErrorKind::*;
        for (kind, ours) in [
            (Remote, false),
            (Input, false),
            (Resolver, true),
            (Tor, true),
            (Store, true),
            (Config, true),
            (Shutdown, true),
            (Bug, true),
        ] {
            assert_eq!(kind.is_ours(), ours, "{kind:?}");
        }
    }
}

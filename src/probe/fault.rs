//! Whose fault a connection that Tor could not make is: arti's error kind
//! read next to what arti says of its own state. Pure, tested as a table.

use arti_client::ErrorKind;

/// Whose doing a failed connection through Tor (or a SOCKS5 proxy) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Our Tor client, the Tor network it depends on, or our proxy: nothing
    /// is learnt about the server, and the operators are told.
    Ours,
    /// The server, or the network in front of it, as reported by the exit.
    Server,
    /// The exit relay itself declined (its exit policy, or too busy): neither
    /// the server's doing nor our Tor broken.
    Exit,
}

/// What arti says of itself, the facts next to an error's kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TorState {
    /// `BootstrapStatus::ready_for_traffic()`: a usable directory and working connections.
    pub ready: bool,
    /// `BootstrapStatus::blocked()`: why arti thinks it is stuck, if it does.
    pub blocked: Option<String>,
}

impl TorState {
    /// Whether arti believes it can carry traffic now.
    pub fn healthy(&self) -> bool {
        self.ready && self.blocked.is_none()
    }

    /// arti's state in words.
    pub fn describe(&self) -> String {
        match (&self.blocked, self.ready) {
            (Some(b), _) => format!("arti reports it is stuck: {b}"),
            (None, false) => "arti reports it is not ready for traffic".into(),
            (None, true) => "arti reports it is ready".into(),
        }
    }
}

/// Whose doing a failed arti connection is, from arti's `ErrorKind` and
/// arti's own state. Only the exit's report about the server (refused, reset,
/// its timeout, no route) is the server's; a circuit that could not be built,
/// a directory that is unusable, a relay that broke the protocol or a circuit
/// that collapsed is ours. arti's own stream timeout (`RemoteNetworkTimeout`:
/// a circuit was built but the exit did not answer in time) is the server's
/// only while arti says it is healthy.
pub fn arti_fault(kind: ErrorKind, tor: &TorState) -> Fault {
    use ErrorKind::*;
    match kind {
        RemoteConnectionRefused
        | ExitTimeout
        | RemoteNetworkFailed
        | RemoteHostNotFound
        | RemoteHostResolutionFailed
        | RemoteStreamClosed
        | RemoteStreamReset
        | RemoteStreamError
        | RemoteProtocolViolation => Fault::Server,
        RemoteNetworkTimeout if tor.healthy() => Fault::Server,
        ExitPolicyRejected | RelayTooBusy => Fault::Exit,
        // TorAccessFailed, TorNetworkTimeout, CircuitCollapse, CircuitRefused,
        // LocalNetworkError, BootstrapRequired, DirectoryExpired,
        // TorDirectoryUnusable, NoPath, NoExit, ClockSkew, TransientFailure,
        // TorProtocolViolation, ForbiddenStreamTarget, Internal, ... and any
        // kind arti adds later: our side.
        _ => Fault::Ours,
    }
}

/// What to do after one failed arti stream attempt: the one place arti's
/// error kinds are read ([`arti_fault`] says whose fault the rest are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The exit refused by its exit policy: try another exit.
    OtherExit,
    /// arti found no path or no exit for the stream (maybe no exit allows
    /// the port: the directory tells).
    NoExit,
    /// Final: the failure is this party's.
    Done(Fault),
}

/// Sorts an arti error kind, given arti's own state.
pub fn arti_attempt(kind: ErrorKind, tor: &TorState) -> Attempt {
    match kind {
        ErrorKind::ExitPolicyRejected => Attempt::OtherExit,
        ErrorKind::NoExit | ErrorKind::NoPath => Attempt::NoExit,
        kind => Attempt::Done(arti_fault(kind, tor)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whose_fault_an_arti_error_is() {
        use ErrorKind as K;
        let healthy = TorState {
            ready: true,
            blocked: None,
        };
        let stuck = TorState {
            ready: false,
            blocked: Some("Can't reach the Tor network (unable to connect to the internet)".into()),
        };
        let not_ready = TorState {
            ready: false,
            blocked: None,
        };
        let table: &[(K, Fault, Fault)] = &[
            // (kind, arti healthy, arti stuck)
            // The exit's report about the server: the server's, whatever arti says.
            (K::RemoteConnectionRefused, Fault::Server, Fault::Server),
            (K::ExitTimeout, Fault::Server, Fault::Server),
            (K::RemoteNetworkFailed, Fault::Server, Fault::Server),
            (K::RemoteStreamClosed, Fault::Server, Fault::Server),
            (K::RemoteStreamReset, Fault::Server, Fault::Server),
            (K::RemoteStreamError, Fault::Server, Fault::Server),
            (K::RemoteHostNotFound, Fault::Server, Fault::Server),
            (K::RemoteHostResolutionFailed, Fault::Server, Fault::Server),
            (K::RemoteProtocolViolation, Fault::Server, Fault::Server),
            // A circuit was built and arti's stream timeout ran out: the
            // server's only while arti is healthy.
            (K::RemoteNetworkTimeout, Fault::Server, Fault::Ours),
            // The exit declined: not the server, and not our Tor broken.
            (K::ExitPolicyRejected, Fault::Exit, Fault::Exit),
            (K::RelayTooBusy, Fault::Exit, Fault::Exit),
            // No circuit, no directory, a broken relay: ours.
            (K::TorAccessFailed, Fault::Ours, Fault::Ours),
            (K::TorNetworkTimeout, Fault::Ours, Fault::Ours),
            (K::CircuitCollapse, Fault::Ours, Fault::Ours),
            (K::CircuitRefused, Fault::Ours, Fault::Ours),
            (K::LocalNetworkError, Fault::Ours, Fault::Ours),
            (K::BootstrapRequired, Fault::Ours, Fault::Ours),
            (K::DirectoryExpired, Fault::Ours, Fault::Ours),
            (K::TorDirectoryUnusable, Fault::Ours, Fault::Ours),
            (K::NoPath, Fault::Ours, Fault::Ours),
            (K::NoExit, Fault::Ours, Fault::Ours),
            (K::ClockSkew, Fault::Ours, Fault::Ours),
            (K::TransientFailure, Fault::Ours, Fault::Ours),
            (K::TorProtocolViolation, Fault::Ours, Fault::Ours),
            (K::ForbiddenStreamTarget, Fault::Ours, Fault::Ours),
            (K::ArtiShuttingDown, Fault::Ours, Fault::Ours),
            (K::Internal, Fault::Ours, Fault::Ours),
            (K::Other, Fault::Ours, Fault::Ours),
        ];
        for &(kind, when_healthy, when_stuck) in table {
            // The attempt follows the same table: retried, no exit, or final.
            match kind {
                K::ExitPolicyRejected => {
                    assert_eq!(arti_attempt(kind, &healthy), Attempt::OtherExit)
                }
                K::NoExit | K::NoPath => assert_eq!(arti_attempt(kind, &stuck), Attempt::NoExit),
                _ => {
                    assert_eq!(arti_attempt(kind, &healthy), Attempt::Done(when_healthy));
                    assert_eq!(arti_attempt(kind, &stuck), Attempt::Done(when_stuck));
                }
            }
            assert_eq!(arti_fault(kind, &healthy), when_healthy, "{kind:?} healthy");
            assert_eq!(arti_fault(kind, &stuck), when_stuck, "{kind:?} stuck");
            assert_eq!(
                arti_fault(kind, &not_ready),
                when_stuck,
                "{kind:?} not ready"
            );
        }
    }
}

//! TEMPORARY STUB until the real module lands.
#![allow(missing_docs, unused)]
use crate::probe::tls::TlsObservation;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    StartTls,
    Direct,
}
#[derive(Clone, Debug)]
pub struct Limits {
    pub io_timeout: Duration,
    pub total_timeout: Duration,
    pub max_pre_tls_bytes: usize,
    pub max_depth: usize,
}
impl Default for Limits {
    fn default() -> Self {
        Limits {
            io_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
            max_pre_tls_bytes: 1,
            max_depth: 1,
        }
    }
}
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    #[error("x")]
    StartTlsMissing,
    #[error("y")]
    Io { detail: String },
}
impl ProbeFailure {
    pub fn is_remote(&self) -> bool {
        true
    }
}
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    domain: &str,
    role: Role,
    from: Option<&str>,
    mode: TlsMode,
    limits: &Limits,
) -> Result<TlsObservation, ProbeFailure> {
    Err(ProbeFailure::StartTlsMissing)
}

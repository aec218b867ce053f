//! TEMPORARY STUB until the real module lands.
#![allow(missing_docs, unused)]
use std::time::SystemTime;
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct E;
impl Tlsa {
    pub fn parse(s: &str) -> Result<Tlsa, E> {
        Err(E)
    }
}
impl std::fmt::Display for Tlsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.usage,
            self.selector,
            self.matching,
            hex::encode(&self.data)
        )
    }
}
pub fn spki_sha256(c: &[u8]) -> Result<[u8; 32], E> {
    Err(E)
}
pub fn cert_sha256(c: &[u8]) -> [u8; 32] {
    [0; 32]
}
pub fn record_for(c: &[u8], u: u8, s: u8, m: u8) -> Result<Tlsa, E> {
    Err(E)
}
pub fn spki_from_key_pem(p: &str) -> Result<Vec<u8>, E> {
    Err(E)
}
pub fn spki_from_cert_pem(p: &str) -> Result<(Vec<u8>, Vec<u8>), E> {
    Err(E)
}
pub fn association_from_spki(s: &[u8], m: u8) -> Vec<u8> {
    vec![]
}
pub struct MatchContext<'a> {
    pub chain: &'a [Vec<u8>],
    pub reference_names: &'a [String],
    pub now: SystemTime,
    pub pkix_roots: Option<&'a [rustls_pki_types::TrustAnchor<'static>]>,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutcome {
    Matched { record: Tlsa },
    NoMatch { notes: Vec<String> },
    NoUsableRecords { notes: Vec<String> },
    MalformedChain { error: String },
}
pub fn match_chain(r: &[Tlsa], c: &MatchContext) -> MatchOutcome {
    MatchOutcome::MalformedChain {
        error: String::new(),
    }
}

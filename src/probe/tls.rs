//! TEMPORARY STUB until the real module lands.
#[derive(Clone, Debug)]
pub struct TlsObservation {
    pub chain: Vec<Vec<u8>>,
    pub version: String,
    pub cipher: String,
    pub alpn: Option<String>,
}

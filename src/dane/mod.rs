//! DANE: TLSA records (RFC 6698) and matching a presented certificate chain
//! against them under the operational rules of RFC 7671, as XMPP uses them
//! (RFC 7673). Pure: the time and the PKIX trust anchors come in through
//! [`MatchContext`], so every verdict can be reproduced in a test.

use std::fmt;

use sha2::{Digest, Sha256, Sha512};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

mod keyfile;
mod matching;
#[cfg(test)]
mod tests;

pub use keyfile::{spki_from_cert_pem, spki_from_key_pem, KeyFileError};
pub use matching::{
    match_chain, match_chain_counted, MatchContext, MatchCost, MatchOutcome, MAX_CHAIN_BEYOND_LEAF,
    MAX_SIGNATURE_CHECKS,
};

/// A TLSA record (RFC 6698 §2.1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlsa {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE (RFC 7218).
    pub usage: u8,
    /// Selector: 0 the whole certificate, 1 its SubjectPublicKeyInfo.
    pub selector: u8,
    /// Matching type: 0 the selected bytes themselves, 1 SHA-256, 2 SHA-512.
    pub matching: u8,
    /// Certificate association data.
    pub data: Vec<u8>,
}

/// Why a TLSA record in presentation format could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlsaParseError {
    /// Fewer than the four fields (usage, selector, matching type, data); holds the count.
    #[error("a TLSA record has 4 fields (usage selector matching-type data), found {0}")]
    TooFewFields(usize),
    /// A numeric field (named first) holds something other than 0-255 (second).
    #[error("the {0} field must be a number from 0 to 255, found {1:?}")]
    NotANumber(&'static str, String),
    /// The data has an odd number of hex digits (the count).
    #[error("the association data has an odd number of hex digits ({0})")]
    OddHex(usize),
    /// The data holds a non-hex character (first) at a digit position (second, from 0).
    #[error("the association data has {0:?} at digit {1}, which is not hex")]
    BadHex(char, usize),
}

/// Why a record cannot be used; RFC 7671 §4.1 says to ignore such records.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// A usage RFC 7218 does not define.
    #[error("certificate usage {0} is not defined (0-3 are)")]
    Usage(u8),
    /// A selector RFC 7218 does not define.
    #[error("selector {0} is not defined (0 and 1 are)")]
    Selector(u8),
    /// A matching type RFC 7218 does not define.
    #[error("matching type {0} is not defined (0-2 are)")]
    Matching(u8),
    /// A digest that can never match: (matching type, length it needs, length it has).
    #[error("a matching type {0} digest is {1} bytes, this one is {2}")]
    DigestLength(u8, usize, usize),
    /// Matching type 0 with no data, which can never match.
    #[error("the association data is empty")]
    Empty,
}

/// Why a certificate, or the parameters asked of it, could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The bytes are not an X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Der(String),
    /// The certificate is followed by more bytes.
    #[error("{0} bytes follow the certificate's DER encoding")]
    TrailingData(usize),
    /// The usage, selector or matching type asked for is not defined.
    #[error("cannot build that record: {0}")]
    Parameters(#[from] Unusable),
}

impl Tlsa {
    /// Reads the presentation format `3 1 1 ab12…`; the hex may contain whitespace.
    pub fn parse(s: &str) -> Result<Tlsa, TlsaParseError> {
        let mut fields = s.split_whitespace();
        let mut number = |name: &'static str, found: usize| {
            let value = fields.next().ok_or(TlsaParseError::TooFewFields(found))?;
            let bad = || TlsaParseError::NotANumber(name, value.into());
            value.parse::<u8>().map_err(|_| bad())
        };
        let (usage, selector) = (number("usage", 0)?, number("selector", 1)?);
        let matching = number("matching type", 2)?;
        let hex: String = fields.collect();
        if hex.is_empty() {
            return Err(TlsaParseError::TooFewFields(3));
        }
        if let Some(i) = hex.chars().position(|c| !c.is_ascii_hexdigit()) {
            let c = hex.chars().nth(i).unwrap_or('?');
            return Err(TlsaParseError::BadHex(c, i));
        }
        let data = hex::decode(&hex).map_err(|_| TlsaParseError::OddHex(hex.len()))?;
        Ok(Tlsa {
            usage,
            selector,
            matching,
            data,
        })
    }

    /// Whether the record can be used at all (RFC 7671 §4.1, RFC 7218 registries).
    pub fn usable(&self) -> Result<(), Unusable> {
        if self.usage > 3 {
            return Err(Unusable::Usage(self.usage));
        }
        if self.selector > 1 {
            return Err(Unusable::Selector(self.selector));
        }
        let expected = match self.matching {
            0 if self.data.is_empty() => return Err(Unusable::Empty),
            0 => return Ok(()),
            1 => 32,
            2 => 64,
            m => return Err(Unusable::Matching(m)),
        };
        match self.data.len() {
            n if n == expected => Ok(()),
            n => Err(Unusable::DigestLength(self.matching, expected, n)),
        }
    }

    /// Short form for notes: full records can be kilobytes of hex.
    fn short(&self) -> String {
        let hex = hex::encode(&self.data);
        let cut = if hex.len() > 16 { "…" } else { "" };
        let head = hex.get(..16).unwrap_or(&hex);
        format!(
            "{} {} {} {head}{cut}",
            self.usage, self.selector, self.matching
        )
    }
}

impl fmt::Display for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = hex::encode(&self.data);
        write!(
            f,
            "{} {} {} {hex}",
            self.usage, self.selector, self.matching
        )
    }
}

/// SHA-256 of a certificate's SubjectPublicKeyInfo: the data of a `3 1 1` record.
pub fn spki_sha256(cert_der: &[u8]) -> Result<[u8; 32], CertError> {
    Ok(Sha256::digest(parse_cert(cert_der)?.public_key().raw).into())
}

/// SHA-256 of a certificate's DER bytes: the data of a `3 0 1` record.
pub fn cert_sha256(cert_der: &[u8]) -> [u8; 32] {
    Sha256::digest(cert_der).into()
}

/// The record data for a (selector, matching) pair of a certificate.
pub fn association(cert_der: &[u8], selector: u8, matching: u8) -> Result<Vec<u8>, CertError> {
    let cert = parse_cert(cert_der)?;
    let selected = select(&cert, selector).ok_or(Unusable::Selector(selector))?;
    Ok(digest(selected, matching).ok_or(Unusable::Matching(matching))?)
}

/// Builds a TLSA record for a certificate, e.g. the `3 1 1` line to advise publishing.
pub fn record_for(
    cert_der: &[u8],
    usage: u8,
    selector: u8,
    matching: u8,
) -> Result<Tlsa, CertError> {
    if usage > 3 {
        return Err(Unusable::Usage(usage).into());
    }
    Ok(Tlsa {
        usage,
        selector,
        matching,
        data: association(cert_der, selector, matching)?,
    })
}

/// The selector-1 record data for an SPKI; empty for a matching type outside 0-2.
pub fn association_from_spki(spki_der: &[u8], matching: u8) -> Vec<u8> {
    // Empty never equals valid record data, so callers passing a constant need no Result.
    digest(spki_der, matching).unwrap_or_default()
}

/// A certificate's notAfter in UNIX seconds (0 before the epoch); None
/// when it does not parse.
pub fn not_after(der: &[u8]) -> Option<u64> {
    parse_cert(der).ok().map(|c| matching::not_after(&c))
}

pub(super) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CertError::Der(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CertError::TrailingData(rest.len()));
    }
    Ok(cert)
}

pub(super) fn select<'a>(cert: &'a X509Certificate<'_>, selector: u8) -> Option<&'a [u8]> {
    match selector {
        0 => Some(cert.as_raw()),
        1 => Some(cert.public_key().raw),
        _ => None,
    }
}

pub(super) fn digest(data: &[u8], matching: u8) -> Option<Vec<u8>> {
    match matching {
        0 => Some(data.to_vec()),
        1 => Some(Sha256::digest(data).to_vec()),
        2 => Some(Sha512::digest(data).to_vec()),
        _ => None,
    }
}

//! The public key from the PEM files an operator has, so the record to publish
//! can be computed from the key on disk rather than from what the network showed.
//!
//! Supported: PKCS#8 `PRIVATE KEY` (RSA, ECDSA P-256/P-384/P-521, Ed25519),
//! PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY` (any named curve, as long as
//! the file carries the public point, which OpenSSL always writes), and a bare
//! `PUBLIC KEY`. Encrypted keys are refused with advice to decrypt them.

use rcgen::PublicKeyData;
use rustls_pki_types::pem::{PemObject, SectionKind};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{parse_cert, CertError};

/// Why no public key or certificate could be read from a PEM file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The text is not well-formed PEM.
    #[error("not valid PEM: {0}")]
    Pem(String),
    /// No section holds a key.
    #[error("no PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY or PUBLIC KEY section found")]
    NoKey,
    /// The key is encrypted with a passphrase.
    #[error(
        "the private key is encrypted; decrypt a copy first (openssl pkey -in KEY -out PLAIN.pem)"
    )]
    Encrypted,
    /// A key section whose contents cannot be read.
    #[error("cannot read the {kind} key: {reason}")]
    BadKey {
        /// The PEM label, e.g. `EC PRIVATE KEY`.
        kind: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// No section holds a certificate.
    #[error("no CERTIFICATE section found")]
    NoCertificate,
    /// No certificate, but a key: the wrong option was used.
    #[error("no CERTIFICATE section found, but a {0} key: for a key file, use --key")]
    KeyNotCertificate(&'static str),
    /// The first certificate cannot be parsed.
    #[error("the first certificate: {0}")]
    Cert(#[from] CertError),
}

/// DER of OID 1.2.840.113549.1.1.1 (rsaEncryption).
const RSA_ENCRYPTION: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// DER of OID 1.2.840.10045.2.1 (id-ecPublicKey).
const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const SEQUENCE: u8 = 0x30;

/// SPKI DER from the first key in a PEM file: PKCS#8, PKCS#1 RSA, SEC1 EC or a public key.
pub fn spki_from_key_pem(pem: &str) -> Result<Vec<u8>, KeyFileError> {
    // Both PKCS#8 `ENCRYPTED PRIVATE KEY` and legacy `Proc-Type: 4,ENCRYPTED` say so.
    if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(KeyFileError::Encrypted);
    }
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        let (kind, der) = section.map_err(|e| KeyFileError::Pem(e.to_string()))?;
        let (label, spki) = match kind {
            SectionKind::PrivateKey => ("PKCS#8", pkcs8_spki(&der)),
            SectionKind::RsaPrivateKey => ("RSA", rsa_spki(&der)),
            SectionKind::EcPrivateKey => ("EC", sec1_spki(&der, None)),
            SectionKind::PublicKey => ("public", Ok(der)),
            // Certificates and `EC PARAMETERS` often share the file with the key.
            _ => continue,
        };
        let spki = spki.map_err(|reason| KeyFileError::BadKey {
            kind: label,
            reason,
        })?;
        // Whatever was assembled by hand must still read back as an SPKI.
        return match SubjectPublicKeyInfo::from_der(&spki) {
            Ok(([], _)) => Ok(spki),
            _ => Err(KeyFileError::BadKey {
                kind: label,
                reason: "the public key it yields is not a valid SubjectPublicKeyInfo".into(),
            }),
        };
    }
    Err(KeyFileError::NoKey)
}

/// The SPKI and DER of the first certificate in a PEM file (the leaf of a fullchain.pem).
pub fn spki_from_cert_pem(pem: &str) -> Result<(Vec<u8>, Vec<u8>), KeyFileError> {
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()) {
        let (kind, der) = section.map_err(|e| KeyFileError::Pem(e.to_string()))?;
        if kind == SectionKind::Certificate {
            let spki = parse_cert(&der)?.public_key().raw.to_vec();
            return Ok((spki, der));
        }
    }
    // The admin pointed --cert at the key (privkey.pem): say which option.
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes()).flatten() {
        let label = match section.0 {
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                "private"
            }
            SectionKind::PublicKey => "public",
            _ => continue,
        };
        return Err(KeyFileError::KeyNotCertificate(label));
    }
    if pem.contains("ENCRYPTED PRIVATE KEY") || pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(KeyFileError::KeyNotCertificate("private"));
    }
    Err(KeyFileError::NoCertificate)
}

fn pkcs8_spki(der: &[u8]) -> Result<Vec<u8>, String> {
    let ring_error = match rcgen::KeyPair::try_from(der) {
        Ok(key) => return Ok(key.subject_public_key_info()),
        Err(e) => e,
    };
    // ring reads only some sizes and curves; RSA and EC keys carry their public half anyway.
    let info = elements(der, "PrivateKeyInfo")?;
    let (Some(algorithm), Some(private)) = (info.get(1), info.get(2)) else {
        return Err("PrivateKeyInfo is too short".into());
    };
    let algorithm = elements(algorithm.raw, "AlgorithmIdentifier")?;
    match algorithm.first().map(|oid| oid.raw) {
        Some(RSA_ENCRYPTION) => rsa_spki(private.content),
        Some(EC_PUBLIC_KEY) => sec1_spki(private.content, algorithm.get(1).map(|c| c.raw)),
        _ => Err(format!("unsupported key type ({ring_error})")),
    }
}

/// RFC 8017 A.1.2: the public key is the modulus and exponent of the private one.
fn rsa_spki(pkcs1: &[u8]) -> Result<Vec<u8>, String> {
    let key = elements(pkcs1, "RSAPrivateKey")?;
    let (Some(n), Some(e)) = (key.get(1), key.get(2)) else {
        return Err("RSAPrivateKey is too short".into());
    };
    let public = tlv(SEQUENCE, &[n.raw, e.raw].concat());
    let algorithm = tlv(SEQUENCE, &[RSA_ENCRYPTION, &[0x05, 0x00]].concat());
    Ok(spki(&algorithm, &public))
}

/// RFC 5915: take the curve from `[0]` (or the PKCS#8 wrapper) and the point from `[1]`.
fn sec1_spki(sec1: &[u8], curve: Option<&[u8]>) -> Result<Vec<u8>, String> {
    let key = elements(sec1, "ECPrivateKey")?;
    let tagged = |tag: u8| {
        key.iter()
            .find(|t| t.tag == tag)
            .and_then(|t| read_tlv(t.content))
            .map(|(inner, _)| inner)
    };
    let curve = tagged(0xa0)
        .map(|c| c.raw)
        .or(curve)
        .ok_or("it names no curve")?;
    let point =
        tagged(0xa1).ok_or("it does not carry its public key; re-export it with openssl pkey")?;
    let algorithm = tlv(SEQUENCE, &[EC_PUBLIC_KEY, curve].concat());
    Ok(tlv(SEQUENCE, &[algorithm.as_slice(), point.raw].concat()))
}

fn spki(algorithm: &[u8], public_key: &[u8]) -> Vec<u8> {
    let bits = tlv(0x03, &[&[0u8][..], public_key].concat());
    tlv(SEQUENCE, &[algorithm, bits.as_slice()].concat())
}

/// One DER element.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    raw: &'a [u8],
}

fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        (len, &rest[n..])
    };
    let content = rest.get(..len)?;
    let header = input.len() - rest.len();
    Some((
        Tlv {
            tag,
            content,
            raw: &input[..header + len],
        },
        &rest[len..],
    ))
}

/// The elements of a DER SEQUENCE that must span all of `der`.
fn elements<'a>(der: &'a [u8], what: &str) -> Result<Vec<Tlv<'a>>, String> {
    let bad = || format!("{what} is not valid DER");
    let (outer, rest) = read_tlv(der).ok_or_else(bad)?;
    if outer.tag != SEQUENCE || !rest.is_empty() {
        return Err(bad());
    }
    let mut out = Vec::new();
    let mut input = outer.content;
    while !input.is_empty() {
        let (element, rest) = read_tlv(input).ok_or_else(bad)?;
        out.push(element);
        input = rest;
    }
    Ok(out)
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len().to_be_bytes();
    let skip = len.iter().take_while(|&&b| b == 0).count();
    match content.len() {
        0..=0x7f => out.push(content.len() as u8),
        _ => {
            out.push(0x80 | (len.len() - skip) as u8);
            out.extend_from_slice(&len[skip..]);
        }
    }
    out.extend_from_slice(content);
    out
}

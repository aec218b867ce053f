//! A domain as the user types it, validated and normalised to lowercase ASCII.

use std::fmt;

/// The longest name DNS can carry, without the trailing dot (RFC 1035 §2.3.4).
const MAX_NAME: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// What we accept from a user before even trying IDNA: bounds the work.
const MAX_INPUT: usize = 1024;

/// A valid DNS domain in lowercase ASCII (punycode for IDNs), no trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

/// Why a string is not a domain we can check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Nothing was given.
    #[error("no domain given")]
    Empty,
    /// Longer than DNS allows.
    #[error("domain is too long ({len} characters, at most {MAX_NAME})")]
    TooLong {
        /// Its length in ASCII form.
        len: usize,
    },
    /// One label is longer than 63 octets.
    #[error("label {label:?} is too long ({len} characters, at most {MAX_LABEL})")]
    LabelTooLong {
        /// The label.
        label: String,
        /// Its length.
        len: usize,
    },
    /// Empty label (`a..b`), or a leading dot.
    #[error("{0:?} has an empty label")]
    EmptyLabel(String),
    /// A character not allowed in a host name.
    #[error("{0:?} has a character not allowed in a domain (only letters, digits and hyphens)")]
    BadCharacter(String),
    /// A label that starts or ends with a hyphen.
    #[error("label {0:?} starts or ends with a hyphen")]
    Hyphen(String),
    /// IDNA processing failed.
    #[error("{0:?} is not a valid internationalised domain name")]
    Idna(String),
    /// A bare IP address, which has no DNS to check.
    #[error("{0} is an IP address; give the XMPP domain instead")]
    IpAddress(String),
    /// A single label like `localhost`.
    #[error("{0:?} has a single label; give a full domain like example.org")]
    SingleLabel(String),
}

impl Domain {
    /// Validates user input: IDNA to lowercase ASCII, length and label rules.
    pub fn parse(input: &str) -> Result<Domain, DomainError> {
        let trimmed = input.trim();
        let trimmed = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if trimmed.is_empty() {
            return Err(DomainError::Empty);
        }
        if trimmed.len() > MAX_INPUT {
            return Err(DomainError::TooLong { len: trimmed.len() });
        }
        if trimmed.parse::<std::net::IpAddr>().is_ok() {
            return Err(DomainError::IpAddress(trimmed.to_owned()));
        }
        let ascii = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            idna::domain_to_ascii_strict(trimmed)
                .map_err(|_| DomainError::Idna(trimmed.to_owned()))?
        };
        if ascii.len() > MAX_NAME {
            return Err(DomainError::TooLong { len: ascii.len() });
        }
        for label in ascii.split('.') {
            if label.is_empty() {
                return Err(DomainError::EmptyLabel(trimmed.to_owned()));
            }
            if label.len() > MAX_LABEL {
                return Err(DomainError::LabelTooLong {
                    label: label.to_owned(),
                    len: label.len(),
                });
            }
            // Underscores are for service labels, never for a user's XMPP domain.
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(DomainError::BadCharacter(trimmed.to_owned()));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(DomainError::Hyphen(label.to_owned()));
            }
        }
        if !ascii.contains('.') {
            return Err(DomainError::SingleLabel(ascii));
        }
        if ascii.starts_with("xn--") || ascii.contains(".xn--") {
            // A punycode label must decode, or it is not a domain anyone registered.
            let (_, result) = idna::domain_to_unicode(&ascii);
            result.map_err(|_| DomainError::Idna(trimmed.to_owned()))?;
        }
        Ok(Domain(ascii))
    }

    /// The lowercase ASCII form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_domains_normalise() {
        let cases = [
            ("example.org", "example.org"),
            ("Example.ORG.", "example.org"),
            ("  jabber.ru ", "jabber.ru"),
            ("bücher.example", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("a-b.c0.example", "a-b.c0.example"),
        ];
        for (input, want) in cases {
            assert_eq!(Domain::parse(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn invalid_domains_are_rejected_with_a_reason() {
        let long_label = format!("{}.org", "a".repeat(64));
        let long_name = format!("{}org", "abcdefghi.".repeat(26));
        type Check = fn(&DomainError) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            ("", |e| matches!(e, DomainError::Empty)),
            (".", |e| matches!(e, DomainError::Empty)),
            (
                "a..b",
                |e| matches!(e, DomainError::EmptyLabel(s) if s == "a..b"),
            ),
            (&long_label, |e| {
                matches!(e, DomainError::LabelTooLong { .. })
            }),
            (&long_name, |e| matches!(e, DomainError::TooLong { .. })),
            ("exa mple.org", |e| {
                matches!(e, DomainError::BadCharacter(_))
            }),
            ("user@example.org", |e| {
                matches!(e, DomainError::BadCharacter(_))
            }),
            ("_xmpp.example.org", |e| {
                matches!(e, DomainError::BadCharacter(_))
            }),
            ("-a.example.org", |e| matches!(e, DomainError::Hyphen(_))),
            ("192.0.2.1", |e| matches!(e, DomainError::IpAddress(_))),
            ("localhost", |e| matches!(e, DomainError::SingleLabel(_))),
            ("xn--zz.example", |e| matches!(e, DomainError::Idna(_))),
            ("\u{202e}evil.org", |e| matches!(e, DomainError::Idna(_))),
        ];
        for (input, check) in cases {
            let err = Domain::parse(input).unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn huge_input_is_rejected_cheaply() {
        let input = "a".repeat(1_000_000);
        assert!(matches!(
            Domain::parse(&input),
            Err(DomainError::TooLong { .. })
        ));
    }
}

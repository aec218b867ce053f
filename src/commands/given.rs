//! What people type instead of what they mean: a URL or an XMPP address
//! where a domain goes (the domain is taken out, and the answer says so),
//! and a misspelt command name ("did you mean").

use super::{Access, SPECS};
use crate::domain::Domain;

/// A domain field's value: the domain, and the text it was taken out of
/// when that was not a domain itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The domain.
    pub domain: Domain,
    /// What was typed, when the domain was taken out of it (a URL, a JID).
    pub given: Option<String>,
}

impl From<Domain> for Target {
    fn from(domain: Domain) -> Target {
        Target {
            domain,
            given: None,
        }
    }
}

/// The domain in `raw`: `raw` itself when it is one, else the host of a
/// URL (`https://host:443/path`, `xmpp:user@host?message`) or the domain
/// of an XMPP address (`user@host/resource`). The error is the one for
/// `raw` as typed.
pub fn target(raw: &str) -> Result<Target, crate::domain::DomainError> {
    let error = match Domain::parse(raw) {
        Ok(domain) => return Ok(domain.into()),
        Err(e) => e,
    };
    match host_in(raw).map(Domain::parse) {
        Some(Ok(domain)) => Ok(Target {
            domain,
            // Quoted back in the answer: one line, bounded.
            given: Some(
                raw.trim()
                    .chars()
                    .take(100)
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect(),
            ),
        }),
        _ => Err(error),
    }
}

/// The host part of a URL or an XMPP address, if `raw` looks like one.
fn host_in(raw: &str) -> Option<&str> {
    let s = raw.trim();
    let (rest, url) = match (s.strip_prefix("xmpp:"), s.find("://")) {
        (Some(rest), _) => (rest, true),
        (None, Some(i)) => (&s[i + 3..], true),
        (None, None) => (s, false),
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => host,
        None if url => authority,
        None => return None,
    };
    // A port after the host (`host:5222`), not an IPv6 address.
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    (!host.is_empty() && host != s).then_some(host)
}

/// The line an answer starts with when the domain was taken out of
/// something else.
pub fn taken_note(t: &Target) -> Option<String> {
    let given = t.given.as_ref()?;
    let what = if given.contains("://") || given.starts_with("xmpp:") {
        "the host in"
    } else {
        "the domain of the address"
    };
    Some(format!("Using {}, {what} \"{given}\".", t.domain))
}

/// The public command whose name is closest to `verb`, if one is close
/// enough to be a typo (one edit for short names, two for longer ones).
pub fn did_you_mean(verb: &str) -> Option<&'static str> {
    if verb.is_empty() || verb.len() > 20 {
        return None;
    }
    SPECS
        .iter()
        .filter(|s| s.access == Access::Anyone)
        .map(|s| (distance(verb, s.name), s.name))
        .filter(|(d, name)| *d <= if name.len() <= 4 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

/// The one of `candidates` (the domains the caller follows) that `domain`
/// is likely a typo of: at most two edits away, and not `domain` itself.
/// Only the caller's own domains are offered, so this tells nobody which
/// domains others follow.
pub fn closest<'a>(domain: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .filter(|c| c.as_str() != domain)
        .map(|c| (distance(domain, c), c.as_str()))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance with adjacent transpositions (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses_give_their_domain_and_say_so() {
        let cases = [
            ("https://Example.ORG/", "example.org"),
            ("https://example.org:443/path?q=1#x", "example.org"),
            ("xmpp:alice@example.org?message", "example.org"),
            ("xmpp:example.org", "example.org"),
            ("alice@example.org", "example.org"),
            ("alice@example.org/phone", "example.org"),
            ("http://user:pw@example.org:8080", "example.org"),
            ("alice@bücher.example", "xn--bcher-kva.example"),
        ];
        for (raw, want) in cases {
            let t = target(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(t.domain.as_str(), want, "{raw}");
            assert_eq!(t.given.as_deref(), Some(raw), "{raw}");
            assert!(taken_note(&t)
                .unwrap()
                .starts_with(&format!("Using {want}, ")));
        }
        let odd = target("https://example.org/\nCertWatch: ALARM").unwrap();
        assert!(!taken_note(&odd).unwrap().contains('\n'));
        let plain = target("example.org").unwrap();
        assert_eq!(
            (plain.given, taken_note(&target("example.org").unwrap())),
            (None, None)
        );
        assert_eq!(
            taken_note(&target("alice@example.org").unwrap()).unwrap(),
            "Using example.org, the domain of the address \"alice@example.org\"."
        );
        // Still refused when nothing inside is a domain, with the error
        // about what was typed.
        for bad in [
            "https://192.0.2.1/",
            "alice@",
            "a..b",
            "https:///x",
            "user@[::1]",
        ] {
            let e = target(bad).unwrap_err().to_string();
            assert!(!e.is_empty(), "{bad}");
        }
        assert!(target("not_a_domain")
            .unwrap_err()
            .to_string()
            .contains("not_a_domain"));
    }

    #[test]
    fn a_misspelt_domain_is_matched_among_ones_own() {
        let mine = vec!["example.org".to_string(), "jabber.example".to_string()];
        assert_eq!(closest("exmaple.org", &mine), Some("example.org"));
        assert_eq!(closest("jaber.example", &mine), Some("jabber.example"));
        assert_eq!(closest("example.org", &mine), None);
        assert_eq!(closest("other.net", &mine), None);
        assert_eq!(closest("x.org", &[]), None);
    }

    #[test]
    fn typos_of_public_commands_are_recognised() {
        for (typo, want) in [
            ("chek", Some("check")),
            ("cehck", Some("check")),
            ("subscibe", Some("subscribe")),
            ("unsubscibe", Some("unsubscribe")),
            ("lsit", Some("list")),
            ("stauts", Some("status")),
            ("evidense", Some("evidence")),
            ("hello", None),
            ("healt", None),
            ("", None),
        ] {
            assert_eq!(did_you_mean(typo), want, "{typo}");
        }
    }
}

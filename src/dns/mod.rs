//! DNS lookups with DNSSEC validated in-process, normalised into [`Answer`]s.
//!
//! Every answer, positive or negative, carries one [`Security`] value
//! computed by hickory's own validator from our trust anchor; an upstream AD
//! bit is never trusted. This module gathers observations and judges nothing.

mod answer;
mod cd;
mod diagnose;
pub mod discovery;
mod keyzone;
pub mod signatures;
mod verify;

use self::answer::{negative, positive};
use self::cd::CdProvider;
pub use self::signatures::{Signature, SignedRrset};

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::proto::dnssec::{Proof, TrustAnchors};
use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::clock::SharedClock;
use crate::dane::Tlsa;
use crate::error::{ErrorKind, HasKind};

/// The DNSSEC status of an answer (RFC 4035 §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Validation failed: an attack or a broken zone.
    Bogus,
    /// Could not be determined.
    Indeterminate,
    /// Provably unsigned (no DS on the way down).
    Insecure,
    /// Validated from the trust anchor.
    Secure,
}

impl Security {
    fn from_proof(proof: Proof) -> Security {
        match proof {
            Proof::Secure => Security::Secure,
            Proof::Insecure => Security::Insecure,
            Proof::Bogus => Security::Bogus,
            Proof::Indeterminate => Security::Indeterminate,
        }
    }

    /// The weaker of two statuses: a chain is only as secure as its worst link.
    pub fn and(self, other: Security) -> Security {
        self.min(other)
    }
}

impl std::fmt::Display for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Security::Bogus => "bogus",
            Security::Indeterminate => "indeterminate",
            Security::Insecure => "insecure",
            Security::Secure => "secure",
        })
    }
}

/// The records of one RRset with the proof that qualifies them.
#[must_use = "an answer's security must be looked at"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    /// The records of the asked type (empty for a negative answer).
    pub records: Vec<T>,
    /// DNSSEC status of the whole answer, CNAME links included.
    pub security: Security,
    /// The names of the CNAME chain that was followed, if any.
    pub cnames: Vec<String>,
    /// The name does not exist at all (NXDOMAIN), rather than lacking this type.
    pub nxdomain: bool,
    /// Why validation failed, in the admin's words, when `security` is bogus.
    pub bogus_reason: Option<String>,
    /// When `security` is secure: each RRset used (CNAME links, records)
    /// with its RRSIGs, unverified ([`Resolver::signatures`] verifies).
    pub signed: Vec<SignedRrset>,
}

impl<T> Answer<T> {
    fn negative(security: Security, nxdomain: bool) -> Self {
        Answer {
            records: Vec::new(),
            security,
            cnames: Vec::new(),
            nxdomain,
            bogus_reason: None,
            signed: Vec::new(),
        }
    }
}

/// An SRV record (RFC 2782).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    /// Lower is preferred.
    pub priority: u16,
    /// Load share among equal priorities.
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The target host, lowercase, without the trailing dot; `.` means "not offered".
    pub target: String,
}

/// A lookup that produced no answer to judge: the operator's problem, or the resolver's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DnsFailure {
    /// The upstream resolver answered SERVFAIL: a validating upstream refuses bogus data this way.
    #[error("the resolver refused the answer for {name} (SERVFAIL): if it validates DNSSEC, the zone is likely bogus")]
    ServFail {
        /// The name asked.
        name: String,
    },
    /// REFUSED or another error code.
    #[error("the resolver answered {code} for {name}")]
    Rcode {
        /// The name asked.
        name: String,
        /// The response code.
        code: String,
    },
    /// No resolver answered in time, or none could be reached.
    #[error("no DNS answer for {name}: {detail}")]
    Unavailable {
        /// The name asked.
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// A CNAME chain longer than we follow: the domain's DNS is unusual, not bogus.
    #[error("the CNAME chain from {name} is longer than {limit} links; not followed to its end")]
    ChainTooLong {
        /// Where the chain starts.
        name: String,
        /// How many links we follow.
        limit: usize,
    },
    /// The name itself is not valid for DNS.
    #[error("bad DNS name {name}: {detail}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        detail: String,
    },
}

/// A lookup without an answer counts as our resolver's problem until the
/// checker's canary (the root zone through the same resolver) says the
/// resolver works; a chain too long to follow is the domain's; a name that is
/// not valid is the user's.
/// The failures of one check in few words: lookups that got no answer are
/// said once, naming the resolvers asked and how to ask others; the rest
/// once each.
pub fn summarise(failures: &[DnsFailure], servers: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut unanswered: Vec<(&str, Vec<&str>)> = Vec::new();
    for f in failures {
        match f {
            DnsFailure::Unavailable { name, detail } => {
                match unanswered.iter_mut().find(|(d, _)| d == detail) {
                    Some((_, names)) if !names.contains(&name.as_str()) => names.push(name),
                    Some(_) => {}
                    None => unanswered.push((detail, vec![name])),
                }
            }
            other => {
                let line = other.to_string();
                if !out.contains(&line) {
                    out.push(line);
                }
            }
        }
    }
    for (detail, names) in unanswered {
        let what = match names.len() {
            1 => names[0].to_owned(),
            n => format!("{} and {} other name(s)", names[0], n - 1),
        };
        out.insert(
            0,
            format!(
                "no DNS answer from {} for {what}: {detail}; check that resolver, or ask another with --nameserver IP:PORT ([dns] nameservers in the config)",
                servers.join(", ")
            ),
        );
    }
    out
}

impl HasKind for DnsFailure {
    fn kind(&self) -> ErrorKind {
        match self {
            DnsFailure::BadName { .. } => ErrorKind::Input,
            DnsFailure::ChainTooLong { .. } => ErrorKind::Remote,
            _ => ErrorKind::Resolver,
        }
    }
}

/// Which resolvers and keys to use.
#[derive(Clone, Debug, Default)]
pub struct ResolverSettings {
    /// Explicit resolvers; empty means the system's.
    pub nameservers: Vec<SocketAddr>,
    /// A file of DNSKEY records; None means the built-in IANA root keys.
    pub trust_anchor: Option<std::path::PathBuf>,
    /// Per-query timeout.
    pub timeout: Option<Duration>,
    /// The clock signatures are judged against when explaining a bogus
    /// answer; None means the system's.
    pub clock: Option<SharedClock>,
}

/// Why a resolver could not be built: a configuration error (exit 78).
#[derive(Debug, thiserror::Error)]
pub enum ResolverSetupError {
    /// The trust anchor file did not parse.
    #[error("cannot read trust anchor {path}: {detail}")]
    TrustAnchor {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The system resolver configuration could not be read.
    #[error("cannot read the system resolver configuration: {0}")]
    System(String),
    /// hickory refused the configuration.
    #[error("cannot build the resolver: {0}")]
    Build(String),
}

/// A validating stub resolver. Its queries carry CD=1 (see [`cd`]), so a
/// validating upstream hands us bogus data instead of SERVFAIL and the
/// verdict is the same through every resolver path.
#[derive(Clone)]
pub struct Resolver {
    inner: hickory_resolver::Resolver<CdProvider>,
    /// The validator's DNSKEY and DS answers, one fetch per zone.
    keys: Arc<cd::KeyCache>,
    /// Not validating, not caching: explains a bogus answer, and is the canary.
    raw: diagnose::Raw,
    clock: SharedClock,
    /// The resolvers asked, as people write them (for messages).
    servers: Vec<String>,
    /// What it was built from, for [`Resolver::uncached`].
    settings: ResolverSettings,
    anchors: Arc<TrustAnchors>,
}

impl Resolver {
    /// Builds a resolver that validates DNSSEC itself from the given trust anchor.
    pub fn new(settings: &ResolverSettings) -> Result<Resolver, ResolverSetupError> {
        let anchors = match &settings.trust_anchor {
            Some(path) => load_trust_anchor(path)?,
            None => TrustAnchors::default(),
        };
        let anchors = Arc::new(anchors);
        let keys = Arc::<cd::KeyCache>::default();
        let inner = builder(settings, Some(keys.clone()))?
            .with_trust_anchor(anchors.clone())
            .build()
            .map_err(|e| ResolverSetupError::Build(e.to_string()))?;
        let raw = builder(settings, None)?
            .build()
            .map_err(|e| ResolverSetupError::Build(e.to_string()))?;
        let servers = if settings.nameservers.is_empty() {
            match hickory_resolver::system_conf::read_system_conf() {
                Ok((config, _)) if !config.name_servers().is_empty() => {
                    let mut ips: Vec<String> = config
                        .name_servers()
                        .iter()
                        .map(|s| s.ip.to_string())
                        .collect();
                    ips.dedup();
                    ips
                }
                _ => vec!["the system's resolvers".into()],
            }
        } else {
            settings.nameservers.iter().map(|a| a.to_string()).collect()
        };
        Ok(Resolver {
            inner,
            keys,
            raw,
            clock: settings.clock.clone().unwrap_or_else(crate::clock::system),
            servers,
            settings: settings.clone(),
            anchors,
        })
    }

    /// The same resolver without its answer cache: the domain's own records
    /// (SRV, addresses, TLSA) are asked afresh, so an admin who just changed
    /// one sees the change. The DNSSEC chain's DNSKEY and DS answers stay
    /// shared (cached for their TTL, 30 s to 5 min).
    pub fn uncached(&self) -> Result<Resolver, ResolverSetupError> {
        let mut fresh = builder(&self.settings, Some(self.keys.clone()))?;
        fresh.options_mut().cache_size = 0;
        let inner = fresh
            .with_trust_anchor(self.anchors.clone())
            .build()
            .map_err(|e| ResolverSetupError::Build(e.to_string()))?;
        Ok(Resolver {
            inner,
            ..self.clone()
        })
    }

    /// The resolvers this one asks (addresses, or the system's).
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The validator's DNSKEY and DS queries so far: how many it made, how
    /// many went upstream, and how many distinct (name, type) pairs they were
    /// for (the last two are equal when each was fetched once).
    pub fn key_fetches(&self) -> (usize, usize, usize) {
        (self.keys.asks(), self.keys.fetches(), self.keys.distinct())
    }

    /// SRV records at `name`.
    pub async fn srv(&self, name: &str) -> Result<Answer<Srv>, DnsFailure> {
        self.lookup(name, RecordType::SRV, |data| match data {
            RData::SRV(srv) => Some(Srv {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: name_to_string(&srv.target),
            }),
            _ => None,
        })
        .await
    }

    /// A and AAAA records of `host`, with the weaker security of the two lookups.
    pub async fn addresses(&self, host: &str) -> Result<Answer<IpAddr>, DnsFailure> {
        let (v4, v6) = tokio::join!(
            self.lookup(host, RecordType::A, |data| match data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            }),
            self.lookup(host, RecordType::AAAA, |data| match data {
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            }),
        );
        let (v4, v6) = match (v4, v6) {
            (Err(e), _) | (_, Err(e)) => return Err(e),
            (Ok(a), Ok(b)) => (a, b),
        };
        let mut records = v4.records;
        records.extend(v6.records);
        let mut cnames = v4.cnames;
        for c in v6.cnames {
            if !cnames.contains(&c) {
                cnames.push(c);
            }
        }
        let security = v4.security.and(v6.security);
        let mut signed = Vec::new();
        if security == Security::Secure {
            signatures::merge(&mut signed, v4.signed);
            signatures::merge(&mut signed, v6.signed);
        }
        Ok(Answer {
            records,
            security,
            cnames,
            nxdomain: v4.nxdomain && v6.nxdomain,
            bogus_reason: v4.bogus_reason.or(v6.bogus_reason),
            signed,
        })
    }

    /// TLSA records at `name`, following a CNAME chain (RFC 7671 §7).
    pub async fn tlsa(&self, name: &str) -> Result<Answer<Tlsa>, DnsFailure> {
        self.lookup(name, RecordType::TLSA, |data| match data {
            RData::TLSA(t) => Some(Tlsa {
                usage: u8::from(t.cert_usage),
                selector: u8::from(t.selector),
                matching: u8::from(t.matching),
                data: t.cert_data.clone(),
            }),
            _ => None,
        })
        .await
    }

    /// Whether `name` has records of `rtype` (for DS/DNSKEY/SOA probing in advice).
    pub async fn exists(&self, name: &str, rtype: RecordType) -> Result<Answer<()>, DnsFailure> {
        self.lookup(name, rtype, |data| {
            (data.record_type() == rtype).then_some(())
        })
        .await
    }

    /// Whether our resolver answers at all, right now: the root zone's SOA.
    /// Asked when a domain's lookups fail, so that one
    /// domain's broken or blocked DNS is not taken for our own outage.
    pub async fn canary(&self) -> bool {
        // Through the raw resolver, which keeps no cache: a cached root SOA
        // would say "works" long after the resolver stopped answering.
        match self.raw.lookup(Name::root(), RecordType::SOA).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .any(|r| r.record_type() == RecordType::SOA && r.name.is_root()),
            Err(_) => false,
        }
    }

    /// The zone apex that holds `name`, from the SOA in the answer or
    /// authority section (unvalidated: only its owner name is used).
    pub async fn zone_of(&self, name: &str) -> Result<Option<String>, DnsFailure> {
        let qname = parse_name(name)?;
        Ok(diagnose::zone_of(&self.raw, &qname)
            .await
            .map(|zone| name_to_string(&zone)))
    }

    /// A validated lookup; a bogus answer carries the reason it failed.
    async fn lookup<T>(
        &self,
        name: &str,
        rtype: RecordType,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> Result<Answer<T>, DnsFailure> {
        let mut answer = self.validated(name, rtype, extract).await?;
        if answer.security == Security::Bogus {
            let qname = parse_name(name)?;
            answer.bogus_reason =
                Some(diagnose::why_bogus(&self.raw, &qname, rtype, self.clock.now()).await);
        }
        Ok(answer)
    }

    async fn validated<T>(
        &self,
        name: &str,
        rtype: RecordType,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> Result<Answer<T>, DnsFailure> {
        let qname = parse_name(name)?;
        let result = self.inner.lookup(qname.clone(), rtype).await;
        let answer = match result {
            Ok(lookup) => positive(&qname, lookup.answers(), rtype, &extract),
            Err(e) => negative(name, e)?,
        };
        if answer.cnames.len() > MAX_CNAME_LINKS {
            // The same limit whether the resolver sent the chain whole or we
            // follow it link by link below: a finding, never "bogus".
            return Err(chain_too_long(name));
        }
        let unproven_denial =
            answer.security == Security::Indeterminate && answer.records.is_empty();
        if (answer.security == Security::Bogus || unproven_denial) && rtype != RecordType::CNAME {
            // hickory marks a valid CNAME answer bogus when an NSEC3 record rides in
            // the authority section, as resolvers with QNAME minimisation send, and
            // gives up on a chain longer than its own depth with an indeterminate
            // "no records"; so if the name is an alias, validate each link of the
            // chain on its own (and past our limit, say the chain is too long).
            if let Some(fixed) = self.revalidate_chain(name, rtype, &extract).await? {
                return Ok(fixed);
            }
        }
        Ok(answer)
    }

    /// Re-checks a bogus answer one CNAME link at a time; None if `name` is no alias.
    async fn revalidate_chain<T>(
        &self,
        name: &str,
        rtype: RecordType,
        extract: &impl Fn(&RData) -> Option<T>,
    ) -> Result<Option<Answer<T>>, DnsFailure> {
        let mut security = Security::Secure;
        let mut owner = name.trim_end_matches('.').to_ascii_lowercase();
        let mut cnames = Vec::new();
        let mut signed = Vec::new();
        loop {
            let qname = parse_name(&owner)?;
            let step = match self.inner.lookup(qname.clone(), RecordType::CNAME).await {
                Ok(lookup) => {
                    let link =
                        positive(&qname, lookup.answers(), RecordType::CNAME, &|d| match d {
                            RData::CNAME(c) => Some(name_to_string(&c.0)),
                            _ => None,
                        });
                    let sigs = link.signed;
                    link.records
                        .into_iter()
                        .next()
                        .map(|t| (t, link.security, sigs))
                }
                Err(e) => {
                    // No CNAME here: the chain ends, whatever its proof says.
                    let _end_of_chain: Answer<()> = negative(&owner, e)?;
                    None
                }
            };
            let Some((target, link_security, link_signatures)) = step else {
                break;
            };
            if cnames.len() >= MAX_CNAME_LINKS {
                // Validators (unbound, delv) follow longer chains than any
                // zone needs; past our own limit we say so, never "bogus".
                return Err(chain_too_long(name));
            }
            security = security.and(link_security);
            signatures::merge(&mut signed, link_signatures);
            cnames.push(target.clone());
            owner = target;
        }
        if cnames.is_empty() {
            return Ok(None);
        }
        let qname = parse_name(&owner)?;
        let last = match self.inner.lookup(qname.clone(), rtype).await {
            Ok(lookup) => positive(&qname, lookup.answers(), rtype, extract),
            Err(e) => negative(&owner, e)?,
        };
        // A chain that changed between our lookups stays bogus.
        let last_security = if last.cnames.is_empty() {
            last.security
        } else {
            Security::Bogus
        };
        let security = security.and(last_security);
        signatures::merge(&mut signed, last.signed);
        if security != Security::Secure {
            signed.clear();
        }
        Ok(Some(Answer {
            records: last.records,
            security,
            cnames,
            nxdomain: last.nxdomain,
            bogus_reason: None,
            signed,
        }))
    }
}

/// A resolver builder on our CD=1 connections; with a key cache it is the
/// validating one. The other one, raw and uncached, only explains what failed
/// and tells whether the resolver answers at all.
fn builder(
    settings: &ResolverSettings,
    keys: Option<Arc<cd::KeyCache>>,
) -> Result<hickory_resolver::ResolverBuilder<CdProvider>, ResolverSetupError> {
    let validate = keys.is_some();
    let provider = match keys {
        Some(keys) => CdProvider::with_key_cache(keys),
        None => CdProvider::default(),
    };
    let mut builder = if settings.nameservers.is_empty() {
        hickory_resolver::Resolver::builder(provider)
            .map_err(|e| ResolverSetupError::System(e.to_string()))?
    } else {
        let servers = settings
            .nameservers
            .iter()
            .map(|addr| name_server(*addr))
            .collect();
        hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], servers),
            provider,
        )
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.validate = validate;
    opts.use_hosts_file = ResolveHosts::Never;
    opts.ndots = 0;
    opts.attempts = 2;
    opts.timeout = settings.timeout.unwrap_or(Duration::from_secs(5));
    opts.edns0 = true;
    if !validate {
        // The raw resolver answers "what is there now": no cache.
        opts.cache_size = 0;
    }
    Ok(builder)
}

/// The longest CNAME chain followed when re-validating link by link
/// (RFC 7671 §7 chains are short; unbound gives up after 11 restarts).
pub const MAX_CNAME_LINKS: usize = 16;

fn chain_too_long(name: &str) -> DnsFailure {
    DnsFailure::ChainTooLong {
        name: name.trim_end_matches('.').to_ascii_lowercase(),
        limit: MAX_CNAME_LINKS,
    }
}

fn parse_name(name: &str) -> Result<Name, DnsFailure> {
    let fqdn = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(&fqdn).map_err(|e| DnsFailure::BadName {
        name: name.to_owned(),
        detail: e.to_string(),
    })
}

/// Lowercase, without the trailing dot; the root stays `.`.
pub fn name_to_string(name: &Name) -> String {
    let s = name.to_ascii().to_ascii_lowercase();
    if s == "." {
        s
    } else {
        s.trim_end_matches('.').to_owned()
    }
}

fn name_server(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}

fn load_trust_anchor(path: &Path) -> Result<TrustAnchors, ResolverSetupError> {
    let err = |detail: String| ResolverSetupError::TrustAnchor {
        path: path.display().to_string(),
        detail,
    };
    // Bounded: a trust anchor is a handful of keys.
    let text = crate::config::read_bounded(path, crate::config::INPUT_LIMIT)
        .map_err(|e| err(e.to_string()))?;
    if holds_ds_records(&text) {
        // hickory trusts keys, not digests of keys: a DS anchor would need
        // the DNSKEY fetched and matched first, which is the operator's job.
        return Err(err(
            "it holds DS records; CertWatch needs the DNSKEY records themselves \
             (e.g. unbound's root.key, or `dig . DNSKEY` checked against the DS)"
                .into(),
        ));
    }
    let anchors = text
        .parse::<TrustAnchors>()
        .map_err(|e| err(e.to_string()))?;
    if anchors.is_empty() {
        return Err(err("no DNSKEY records in it".into()));
    }
    Ok(anchors)
}

/// Whether a zone-file text has a record of type DS (`OWNER [TTL] [CLASS] DS ...`).
fn holds_ds_records(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.split(';').next().unwrap_or("");
        line.split_whitespace()
            .take(4)
            .skip(1)
            .any(|w| w.eq_ignore_ascii_case("DS"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_trust_anchor_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.ds");
        std::fs::write(
            &path,
            "; the root's DS\n. 86400 IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
        )
        .unwrap();
        let err = load_trust_anchor(&path)
            .err()
            .expect("must fail")
            .to_string();
        assert!(
            err.contains("DS records") && err.contains("DNSKEY"),
            "{err}"
        );
        assert!(!holds_ds_records(". 3600 IN DNSKEY 257 3 8 AwEAAa..."));
        assert!(holds_ds_records("example. ds 1 8 2 AB"));
        let err = load_trust_anchor(Path::new("/dev/zero"))
            .err()
            .expect("must fail")
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    #[test]
    fn security_and_takes_the_weaker() {
        use Security::*;
        assert_eq!(Secure.and(Insecure), Insecure);
        assert_eq!(Insecure.and(Bogus), Bogus);
        assert_eq!(Secure.and(Secure), Secure);
        assert_eq!(Indeterminate.and(Secure), Indeterminate);
        assert_eq!(Bogus.and(Indeterminate), Bogus);
    }

    #[test]
    fn names_are_lowercase_without_dot() {
        let n = Name::from_ascii("XMPP.Example.ORG.").unwrap();
        assert_eq!(name_to_string(&n), "xmpp.example.org");
        assert_eq!(name_to_string(&Name::root()), ".");
    }

    #[test]
    fn bad_trust_anchor_file_is_a_setup_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("anchor.key");
        std::fs::write(&path, "this is not a DNSKEY\n").unwrap();
        let err = load_trust_anchor(&path).err().expect("must fail");
        assert!(err.to_string().contains("anchor.key"), "{err}");
        let err = load_trust_anchor(&dir.path().join("missing"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}

//! Finds every endpoint of a domain and the TLSA records that cover it.
//!
//! RFC 6120 §3.2 (SRV, fallback), XEP-0368 (direct TLS services), RFC 7673
//! (TLSA at `_PORT._tcp.<SRV target>`, only under a secure SRV and secure
//! addresses), RFC 7671 §7 (CNAME chains, handled by the resolver).

use std::collections::HashMap;
use std::net::IpAddr;

use super::signatures::{self, MAX_KEY_ZONES};
use super::{Answer, DnsFailure, Resolver, Security, Signature, SignedRrset};
use crate::dane::Tlsa;
use crate::domain::Domain;
use crate::vocab::Service;

/// Most SRV records used per service: a hostile zone must not fan us out.
pub const MAX_SRV: usize = 16;
/// Most addresses probed per target.
pub const MAX_ADDRESSES: usize = 8;
/// TLSA records used per RRset (the rest are noted and left out).
pub const MAX_TLSA: usize = 32;

/// The TLSA situation of one endpoint, before any probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsaState {
    /// DANE does not apply: the SRV or address records are not secure.
    NotApplicable {
        /// The name whose lookup was not secure (the zone to sign is its zone).
        name: String,
        /// The weakest link on the way (insecure or indeterminate).
        security: Security,
        /// Which lookup was not secure.
        reason: String,
    },
    /// A lookup on the way was bogus.
    Bogus {
        /// Which lookup.
        reason: String,
    },
    /// Secure, and there are no TLSA records.
    Absent,
    /// TLSA records exist but are not secure (e.g. CNAME into an unsigned zone).
    InsecureRecords {
        /// The records seen (not to be trusted).
        records: Vec<Tlsa>,
    },
    /// Secure TLSA records.
    Present {
        /// The records.
        records: Vec<Tlsa>,
    },
    /// The TLSA lookup itself failed.
    Failed(DnsFailure),
}

/// One place to probe: service + host + port + address + TLS mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Which SRV service (the fallback counts as its plain service).
    pub service: Service,
    /// The SRV target (or the domain itself on fallback).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The address to connect to; None when the host has none.
    pub address: Option<IpAddr>,
    /// The owner name of its TLSA records.
    pub tlsa_name: String,
    /// Names a DANE-TA certificate may carry (RFC 7673 §4).
    pub reference_names: Vec<String>,
    /// What DNS says about its TLSA records.
    pub tlsa: TlsaState,
    /// Why it cannot be probed, when it cannot.
    pub error: Option<String>,
    /// No SRV: the domain itself on the default port (RFC 6120 §3.2.2).
    pub fallback: bool,
}

/// Everything DNS told us about a domain.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// Every endpoint, in service order.
    pub endpoints: Vec<Endpoint>,
    /// Services without SRV records that fell back to the domain itself.
    pub fallbacks: Vec<Service>,
    /// Services explicitly not offered (SRV target `.`).
    pub not_offered: Vec<Service>,
    /// Lookups that failed (resolver trouble), by name.
    pub failures: Vec<DnsFailure>,
    /// RRsets that failed DNSSEC validation and left no endpoint behind to
    /// carry the finding (a bogus SRV answer or denial): each an alarm.
    pub bogus: Vec<String>,
    /// Something worth telling the admin that is not a verdict.
    pub notes: Vec<String>,
    /// The domain's own address lookup said NXDOMAIN on fallback: with no
    /// SRV records either, the domain does not exist.
    pub nxdomain: bool,
    /// The signatures that verify over every secure RRset used (SRV, CNAME
    /// links, A/AAAA, TLSA), then over the DNSKEY and DS RRsets of their
    /// zones and of every zone above them up to the root; each RRset once,
    /// none for an RRset without a signature that verifies.
    pub signatures: Vec<Signature>,
    /// Per zone whose secure DS and DNSKEY RRsets were fetched for those
    /// signatures: which DS matches which key.
    pub zone_keys: Vec<crate::horizon::ZoneKeys>,
}

/// Walks the DNS of one domain.
pub async fn discover(resolver: &Resolver, domain: &Domain, services: &[Service]) -> Discovery {
    let mut walk = Walk {
        resolver,
        domain,
        out: Discovery::default(),
        addresses: HashMap::new(),
        tlsa: HashMap::new(),
        signed: Vec::new(),
    };
    // The SRV lookups are independent: ask them all at once.
    let answers = futures::future::join_all(services.iter().map(|s| {
        let name = format!("_{}._tcp.{}", s.as_str(), domain);
        async move { resolver.srv(&name).await }
    }))
    .await;
    for (&service, srv) in services.iter().zip(answers) {
        walk.service(service, srv).await;
    }
    let mut out = walk.out;
    let (signatures, zone_keys, left_out) = resolver.signatures(&walk.signed).await;
    out.signatures = signatures;
    out.zone_keys = zone_keys;
    if left_out > 0 {
        out.notes.push(format!(
            "the signatures of {left_out} zone(s) on the way to {domain}'s records were not looked at: a check looks at {MAX_KEY_ZONES} zones at most"
        ));
    }
    out
}

struct Walk<'a> {
    resolver: &'a Resolver,
    domain: &'a Domain,
    out: Discovery,
    addresses: HashMap<String, Result<Answer<IpAddr>, DnsFailure>>,
    tlsa: HashMap<String, TlsaState>,
    /// The secure RRsets used, with their RRSIGs, each once.
    signed: Vec<SignedRrset>,
}

impl Walk<'_> {
    async fn service(&mut self, service: Service, srv: Result<Answer<super::Srv>, DnsFailure>) {
        let srv_name = format!("_{}._tcp.{}", service.as_str(), self.domain);
        let srv = match srv {
            Ok(answer) => answer,
            Err(failure) => {
                self.out.failures.push(failure);
                return;
            }
        };
        signatures::merge(&mut self.signed, srv.signed.clone());
        if srv.records.is_empty() {
            return self
                .no_srv(service, srv.security, srv.bogus_reason.as_deref())
                .await;
        }
        if srv.records.len() == 1 && srv.records[0].target == "." {
            self.out.not_offered.push(service);
            return;
        }
        let mut records = srv.records.clone();
        records.retain(|r| r.target != ".");
        records.sort_by_key(|r| (r.priority, std::cmp::Reverse(r.weight), r.target.clone()));
        records.dedup_by(|a, b| a.target == b.target && a.port == b.port);
        if records.len() > MAX_SRV {
            self.out.notes.push(format!(
                "{srv_name} has {} SRV records; only the first {MAX_SRV} were checked",
                records.len()
            ));
            records.truncate(MAX_SRV);
        }
        for record in records {
            let mut names = vec![self.domain.to_string()];
            if srv.security == Security::Secure && record.target != self.domain.as_str() {
                names.push(record.target.clone());
            }
            let srv_link = Link {
                name: srv_name.clone(),
                security: srv.security,
                what: format!("the SRV record {srv_name}"),
                why: srv.bogus_reason.clone(),
            };
            self.target(service, &record.target, record.port, srv_link, names, false)
                .await;
        }
    }

    /// RFC 6120 §3.2.2: no SRV, so the domain itself on the default port.
    async fn no_srv(&mut self, service: Service, security: Security, why: Option<&str>) {
        if security == Security::Bogus {
            // Whether the SRV records were forged or their denial was: a
            // validator refused what came, for this service (direct TLS
            // included, which has no fallback), and nothing can be guessed.
            let what = format!(
                "the SRV RRset at _{}._tcp.{}",
                service.as_str(),
                self.domain
            );
            self.out.bogus.push(failed(&what, why));
            return;
        }
        let Some(port) = service.fallback_port() else {
            return;
        };
        self.out.fallbacks.push(service);
        let host = self.domain.to_string();
        // Without SRV the names come from the user's input itself, so the
        // first link is as good as the address records (RFC 7672 §2.2.2 style).
        let link = Link {
            name: host.clone(),
            security: Security::Secure,
            what: String::new(),
            why: None,
        };
        self.target(service, &host, port, link, vec![host.clone()], true)
            .await;
    }

    /// The endpoints of one SRV target (or of the domain itself on
    /// fallback): one per address, each with the TLSA state that covers it.
    async fn target(
        &mut self,
        service: Service,
        host: &str,
        port: u16,
        srv: Link,
        reference_names: Vec<String>,
        fallback: bool,
    ) {
        let addresses = self.addresses_of(host).await;
        let tlsa_name = tlsa_name(port, host);
        let template = Endpoint {
            service,
            host: host.to_owned(),
            port,
            address: None,
            tlsa_name: tlsa_name.clone(),
            reference_names,
            tlsa: TlsaState::Absent,
            error: None,
            fallback,
        };
        let addresses = match addresses {
            Ok(a) => a,
            Err(failure) => return self.push_lookup_failure(template, failure),
        };
        let addr_link = Link {
            name: host.to_owned(),
            security: addresses.security,
            what: format!("the address records of {host}"),
            why: addresses.bogus_reason.clone(),
        };
        if self.fallback_not_offered(&template, &addresses) {
            return;
        }
        let expanded = expanded_name(&addresses, template.fallback);
        let (tlsa_name, tlsa) = self
            .tlsa_for(port, host, expanded.as_deref(), &srv, &addr_link)
            .await;
        let mut reference_names = template.reference_names.clone();
        reference_names.extend(expanded);
        let template = Endpoint {
            tlsa_name,
            reference_names,
            ..template
        };
        self.push_endpoints(template, tlsa, &addresses);
    }

    /// The addresses of a host, looked up once per check: several SRV
    /// records (and services) may share one target.
    async fn addresses_of(&mut self, host: &str) -> Result<Answer<IpAddr>, DnsFailure> {
        match self.addresses.get(host) {
            Some(cached) => cached.clone(),
            None => {
                let fresh = self.resolver.addresses(host).await;
                if let Ok(answer) = &fresh {
                    signatures::merge(&mut self.signed, answer.signed.clone());
                }
                self.addresses.insert(host.to_owned(), fresh.clone());
                fresh
            }
        }
    }

    /// The one endpoint of a host whose address lookup failed: it carries
    /// the failure (nothing is known about its TLSA records either).
    fn push_lookup_failure(&mut self, template: Endpoint, failure: DnsFailure) {
        let error = failure.to_string();
        self.out.failures.push(failure.clone());
        self.out.endpoints.push(Endpoint {
            tlsa: TlsaState::Failed(failure),
            error: Some(error),
            ..template
        });
    }

    /// Whether a fallback host without addresses means the service is not
    /// offered (noted, no endpoint); a bogus answer is no such proof.
    fn fallback_not_offered(&mut self, template: &Endpoint, addresses: &Answer<IpAddr>) -> bool {
        if !(addresses.records.is_empty()
            && template.fallback
            && addresses.security != Security::Bogus)
        {
            return false;
        }
        let host = &template.host;
        let service = template.service;
        // No SRV and no address: the service is simply not offered, and
        // there is no TLSA record to ask for.
        self.out.nxdomain |= addresses.nxdomain && host == self.domain.as_str();
        self.out.notes.push(format!(
            "{host} publishes no _{}._tcp SRV record and no address: {} not offered",
            service.as_str(),
            service.as_str()
        ));
        true
    }

    /// The endpoints for a target's addresses (at most [`MAX_ADDRESSES`],
    /// the rest noted), or one endpoint saying why it has none.
    fn push_endpoints(&mut self, template: Endpoint, tlsa: TlsaState, addresses: &Answer<IpAddr>) {
        let host = &template.host;
        if addresses.records.is_empty() {
            let error = if addresses.nxdomain {
                format!("{host} does not exist")
            } else {
                format!("{host} has no A or AAAA records")
            };
            self.out.endpoints.push(Endpoint {
                tlsa,
                error: Some(error),
                ..template
            });
            return;
        }
        let mut list = addresses.records.clone();
        if list.len() > MAX_ADDRESSES {
            self.out.notes.push(format!(
                "{host} has {} addresses; only the first {MAX_ADDRESSES} were checked",
                list.len()
            ));
            list.truncate(MAX_ADDRESSES);
        }
        for address in list {
            self.out.endpoints.push(Endpoint {
                address: Some(address),
                tlsa: tlsa.clone(),
                ..template.clone()
            });
        }
    }

    /// The TLSA owner name and state of a target: at the expanded name if
    /// one is given and has records there, else at the host itself.
    async fn tlsa_for(
        &mut self,
        port: u16,
        host: &str,
        expanded: Option<&str>,
        srv: &Link,
        addr_link: &Link,
    ) -> (String, TlsaState) {
        if let Some(expanded) = expanded {
            let first = tlsa_name(port, expanded);
            let state = self.tlsa_state(&first, srv, addr_link).await;
            if state != TlsaState::Absent {
                return (first, state);
            }
        }
        let plain = tlsa_name(port, host);
        let state = self.tlsa_state(&plain, srv, addr_link).await;
        (plain, state)
    }

    async fn tlsa_state(&mut self, name: &str, srv: &Link, addresses: &Link) -> TlsaState {
        for link in [srv, addresses] {
            match link.security {
                Security::Secure => {}
                Security::Bogus => {
                    return TlsaState::Bogus {
                        reason: failed(&link.what, link.why.as_deref()),
                    }
                }
                other => {
                    return TlsaState::NotApplicable {
                        name: link.name.clone(),
                        security: other,
                        reason: format!("{}: DNSSEC {other}", link.what),
                    }
                }
            }
        }
        if let Some(cached) = self.tlsa.get(name) {
            return cached.clone();
        }
        let state = match self.resolver.tlsa(name).await {
            Ok(mut answer) if answer.records.len() > MAX_TLSA => {
                // Bounded, so one RRset cannot swell every report and alert;
                // a match among the records left out is missed (an alarm,
                // never a false "ok").
                self.out.notes.push(format!(
                    "{name} has {} TLSA records; only the first {MAX_TLSA} were used",
                    answer.records.len()
                ));
                answer.records.truncate(MAX_TLSA);
                self.tlsa_answer(name, answer)
            }
            Ok(answer) => self.tlsa_answer(name, answer),
            Err(failure) => {
                self.out.failures.push(failure.clone());
                TlsaState::Failed(failure)
            }
        };
        self.tlsa.insert(name.to_owned(), state.clone());
        state
    }

    fn tlsa_answer(&mut self, name: &str, answer: crate::dns::Answer<Tlsa>) -> TlsaState {
        signatures::merge(&mut self.signed, answer.signed.clone());
        match (answer.security, answer.records.is_empty()) {
            (Security::Bogus, _) => TlsaState::Bogus {
                reason: failed(
                    &format!("the TLSA records at {name}"),
                    answer.bogus_reason.as_deref(),
                ),
            },
            (Security::Secure, true) => TlsaState::Absent,
            (Security::Secure, false) => TlsaState::Present {
                records: answer.records,
            },
            (_, false) => TlsaState::InsecureRecords {
                records: answer.records,
            },
            (other, true) => TlsaState::NotApplicable {
                name: name.to_owned(),
                security: other,
                reason: format!("the denial of TLSA at {name} is not secure ({other})"),
            },
        }
    }
}

struct Link {
    name: String,
    security: Security,
    what: String,
    /// Why validation failed, when it did.
    why: Option<String>,
}

/// "X failed DNSSEC validation", with the reason when there is one.
fn failed(what: &str, why: Option<&str>) -> String {
    match why {
        Some(why) => format!("{what} failed DNSSEC validation: {why}"),
        None => format!("{what} failed DNSSEC validation"),
    }
}

/// Which name is a fallback host's first TLSA base: RFC 7671 §7, a host
/// whose addresses come through a secure CNAME chain has its expanded name.
fn expanded_name(addresses: &Answer<IpAddr>, fallback: bool) -> Option<String> {
    match addresses.cnames.last() {
        Some(last) if fallback && addresses.security == Security::Secure => Some(last.clone()),
        _ => None,
    }
}

/// RFC 7673 §3 / RFC 6698 §3: `_PORT._tcp.HOST`.
pub fn tlsa_name(port: u16, host: &str) -> String {
    format!("_{port}._tcp.{}", host.trim_end_matches('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::{Role, ServiceSet, TlsMode};

    #[test]
    fn rfc7673_tlsa_name_uses_srv_target_and_port() {
        assert_eq!(
            tlsa_name(5222, "xmpp.example.org"),
            "_5222._tcp.xmpp.example.org"
        );
        assert_eq!(tlsa_name(5269, "x.example."), "_5269._tcp.x.example");
    }

    #[test]
    fn xep0368_services_use_direct_tls_and_have_no_fallback() {
        let table = [
            (
                Service::XmppClient,
                TlsMode::StartTls,
                Role::Client,
                Some(5222),
            ),
            (Service::XmppsClient, TlsMode::Direct, Role::Client, None),
            (
                Service::XmppServer,
                TlsMode::StartTls,
                Role::Server,
                Some(5269),
            ),
            (Service::XmppsServer, TlsMode::Direct, Role::Server, None),
        ];
        for (service, tls, role, port) in table {
            assert_eq!(service.tls(), tls);
            assert_eq!(service.role(), role);
            assert_eq!(service.fallback_port(), port);
        }
    }

    #[test]
    fn service_sets() {
        assert_eq!(ServiceSet::All.services().len(), 4);
        assert_eq!(
            ServiceSet::Client.services(),
            vec![Service::XmppClient, Service::XmppsClient]
        );
        assert_eq!(
            ServiceSet::Server.services(),
            vec![Service::XmppServer, Service::XmppsServer]
        );
    }
}

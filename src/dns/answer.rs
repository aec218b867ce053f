//! Turning hickory's lookups into [`Answer`]s, trusting only what was asked.
//!
//! - A positive answer counts only the records at the query name, or at the
//!   last name of the CNAME chain that leads from it; every other RRset in
//!   the answer section is ignored, however validly it is signed (a path
//!   that stuffs a signed RRset of another owner into the answer must not
//!   make a key "match").
//! - A denial is as secure as its NSEC/NSEC3 and SOA RRsets, whatever
//!   number of RRSIGs the zone puts on them (hickory marks only the RRSIG it
//!   used; the others of a double-signed zone stay indeterminate).

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::signatures::signed_rrsets;
use super::{name_to_string, Answer, DnsFailure, Security};

/// The records of `rtype` at `qname` (through its CNAME chain), with the
/// weakest proof among the records used and, when that is secure, the
/// RRsets used with their RRSIGs.
pub(super) fn positive<T>(
    qname: &Name,
    records: &[Record],
    rtype: RecordType,
    extract: &impl Fn(&RData) -> Option<T>,
) -> Answer<T> {
    let mut owner = name_to_string(qname);
    let mut security = Security::Secure;
    let mut cnames = Vec::new();
    let mut used = 0usize;
    let mut rrsets = Vec::new();
    if rtype != RecordType::CNAME {
        // Each step must start at the current owner; a loop or a chain of
        // other owners ends it. At most one step per record in the answer.
        for _ in 0..records.len() {
            let Some((target, proof)) = records.iter().find_map(|r| match &r.data {
                RData::CNAME(c) if name_to_string(&r.name) == owner => {
                    Some((name_to_string(&c.0), Security::from_proof(r.proof)))
                }
                _ => None,
            }) else {
                break;
            };
            if target == owner || cnames.contains(&target) {
                break;
            }
            security = security.and(proof);
            used += 1;
            rrsets.push((owner.clone(), RecordType::CNAME));
            cnames.push(target.clone());
            owner = target;
        }
    }
    let mut out = Vec::new();
    for record in records {
        if record.record_type() != rtype || name_to_string(&record.name) != owner {
            continue;
        }
        if let Some(v) = extract(&record.data) {
            out.push(v);
        }
        used += 1;
        security = security.and(Security::from_proof(record.proof));
    }
    let ignored = records
        .iter()
        .filter(|r| matches!(r.record_type(), t if t == rtype || t == RecordType::CNAME))
        .count()
        .saturating_sub(used);
    if ignored > 0 {
        tracing::debug!(
            qname = %qname,
            %rtype,
            ignored,
            "answer carried records of other owners; ignored"
        );
    }
    if used == 0 {
        security = Security::Indeterminate;
    }
    rrsets.push((owner, rtype));
    let signed = if security == Security::Secure {
        signed_rrsets(records, &rrsets)
    } else {
        Vec::new()
    };
    Answer {
        records: out,
        security,
        cnames,
        nxdomain: false,
        bogus_reason: None,
        signed,
    }
}

/// The security of a denial, from the (type, proof) of the records that
/// came with it: its NSEC, NSEC3 and SOA records only.
pub(super) fn denial(records: impl IntoIterator<Item = (RecordType, Proof)>) -> Security {
    records
        .into_iter()
        .filter(|(t, _)| matches!(t, RecordType::NSEC | RecordType::NSEC3 | RecordType::SOA))
        .map(|(_, proof)| Security::from_proof(proof))
        .reduce(Security::and)
        .unwrap_or(Security::Indeterminate)
}

/// A negative answer, or the failure that is not one.
pub(super) fn negative<T>(name: &str, err: NetError) -> Result<Answer<T>, DnsFailure> {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            let nxdomain = nr.response_code == ResponseCode::NXDomain;
            let security = denial(
                nr.authorities
                    .iter()
                    .flat_map(|a| a.iter())
                    .map(|r| (r.record_type(), r.proof))
                    .chain(nr.soa.iter().map(|soa| (RecordType::SOA, soa.proof))),
            );
            Ok(Answer::negative(security, nxdomain))
        }
        NetError::Dns(DnsError::Nsec {
            proof, response, ..
        }) => Ok(Answer::negative(
            Security::from_proof(proof),
            response.response_code == ResponseCode::NXDomain,
        )),
        NetError::Dns(DnsError::DnssecBogus) => Ok(Answer::negative(Security::Bogus, false)),
        other => Err(failure(name, other)),
    }
}

/// A lookup that produced nothing to judge.
fn failure(name: &str, err: NetError) -> DnsFailure {
    let name = name.to_owned();
    match err {
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => {
            DnsFailure::ServFail { name }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => DnsFailure::Rcode {
            name,
            code: code.to_string(),
        },
        other => DnsFailure::Unavailable {
            name,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_resolver::proto::rr::rdata::{A, CNAME};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn rec(owner: &str, data: RData, proof: Proof) -> Record {
        let mut r = Record::from_rdata(name(owner), 300, data);
        r.proof = proof;
        r
    }

    fn a(owner: &str, last: u8, proof: Proof) -> Record {
        rec(owner, RData::A(A(Ipv4Addr::new(192, 0, 2, last))), proof)
    }

    fn cname(owner: &str, target: &str, proof: Proof) -> Record {
        rec(owner, RData::CNAME(CNAME(name(target))), proof)
    }

    fn addrs(qname: &str, records: &[Record]) -> Answer<u8> {
        positive(&name(qname), records, RecordType::A, &|d| match d {
            RData::A(a) => Some(a.0.octets()[3]),
            _ => None,
        })
    }

    #[test]
    fn records_of_other_owners_are_ignored_however_well_signed() {
        // The genuine answer is insecure; a stuffed, secure RRset of another
        // owner must neither be used nor lift the proof.
        let answer = addrs(
            "xmpp.example.org.",
            &[
                a("xmpp.example.org.", 1, Proof::Insecure),
                a("attacker.example.net.", 66, Proof::Secure),
            ],
        );
        assert_eq!(answer.records, vec![1]);
        assert_eq!(answer.security, Security::Insecure);
        // Only the stuffed RRset: nothing was answered at all.
        let answer = addrs(
            "xmpp.example.org.",
            &[a("attacker.example.net.", 66, Proof::Secure)],
        );
        assert!(answer.records.is_empty());
        assert_eq!(answer.security, Security::Indeterminate);
    }

    #[test]
    fn rfc7671_records_count_at_the_end_of_the_cname_chain_only() {
        let answer = addrs(
            "a.example.org.",
            &[
                cname("a.example.org.", "b.example.org.", Proof::Secure),
                cname("b.example.org.", "c.example.net.", Proof::Secure),
                a("c.example.net.", 3, Proof::Secure),
                // Stuffed: an A at an intermediate name and a stray CNAME.
                a("b.example.org.", 66, Proof::Secure),
                cname("x.example.org.", "a.example.org.", Proof::Secure),
            ],
        );
        assert_eq!(answer.records, vec![3]);
        assert_eq!(answer.cnames, vec!["b.example.org", "c.example.net"]);
        assert_eq!(answer.security, Security::Secure);
        // One insecure link makes the whole answer insecure.
        let answer = addrs(
            "a.example.org.",
            &[
                cname("a.example.org.", "c.example.net.", Proof::Insecure),
                a("c.example.net.", 3, Proof::Secure),
            ],
        );
        assert_eq!(answer.security, Security::Insecure);
    }

    #[test]
    fn a_cname_loop_ends_the_chain() {
        let answer = addrs(
            "a.example.org.",
            &[
                cname("a.example.org.", "b.example.org.", Proof::Secure),
                cname("b.example.org.", "a.example.org.", Proof::Secure),
            ],
        );
        assert!(answer.records.is_empty());
        assert_eq!(answer.cnames, vec!["b.example.org", "a.example.org"]);
    }

    #[test]
    fn a_denial_rests_on_its_nsec_and_soa_records_not_on_extra_signatures() {
        use RecordType::{NSEC3, RRSIG, SOA};
        // A double-signed zone: the second RRSIG of each RRset was not used
        // by the validator and stays indeterminate.
        let double_signed = [
            (NSEC3, Proof::Secure),
            (RRSIG, Proof::Secure),
            (RRSIG, Proof::Indeterminate),
            (SOA, Proof::Secure),
            (RRSIG, Proof::Secure),
            (RRSIG, Proof::Indeterminate),
        ];
        assert_eq!(denial(double_signed), Security::Secure);
        assert_eq!(denial([(SOA, Proof::Insecure)]), Security::Insecure);
        assert_eq!(
            denial([(NSEC3, Proof::Bogus), (SOA, Proof::Secure)]),
            Security::Bogus
        );
        assert_eq!(denial([(RRSIG, Proof::Secure)]), Security::Indeterminate);
        assert_eq!(denial([]), Security::Indeterminate);
    }
}

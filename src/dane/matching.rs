//! Matching a presented chain against a TLSA RRset under the operational
//! rules of RFC 7671 (DANE-EE, DANE-TA, PKIX-TA, PKIX-EE). Pure.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA};
use x509_parser::time::ASN1Time;

use super::{association, association_from_spki, digest, parse_cert, select, Tlsa, Unusable};

/// Most certificates after the leaf that matching considers (RFC 7671 leaves
/// the depth to the client; OpenSSL's default verify depth is 100, real XMPP
/// chains are 1-4 long). A longer chain is cut here, with a note: ignoring
/// certificates can only lose a DANE-TA or PKIX-TA anchor (a match turning
/// into a mismatch, never the other way), and it keeps a stuffed chain from
/// costing more than a bounded amount of parsing and hashing.
pub const MAX_CHAIN_BEYOND_LEAF: usize = 16;

/// Most certificate signatures one [`match_chain`] call verifies (each issuer
/// pair once: results are remembered across records and anchors). A sane
/// chain of [`MAX_CHAIN_BEYOND_LEAF`] certificates needs at most that many;
/// the budget only bites on chains built to make the search branch (many
/// certificates sharing a name, or a key). When it runs out before any record
/// matched, the outcome is [`MatchOutcome::SearchExhausted`], which the judge
/// reports as a mismatch: see there why.
pub const MAX_SIGNATURE_CHECKS: usize = 64;

/// What the matcher needs to know besides the records.
#[derive(Clone, Copy, Debug)]
pub struct MatchContext<'a> {
    /// DER certificates as presented, leaf first.
    pub chain: &'a [Vec<u8>],
    /// Acceptable names, lowercase ASCII (RFC 7673 §4: the service domain, and the SRV target when the SRV was secure).
    pub reference_names: &'a [String],
    /// The time certificates must be valid at (DANE-TA, PKIX-TA, PKIX-EE only).
    pub now: SystemTime,
    /// Trust anchors for usages 0 and 1; `None` means `webpki_roots::TLS_SERVER_ROOTS`.
    pub pkix_roots: Option<&'a [TrustAnchor<'static>]>,
}

/// The result of matching a chain against a TLSA RRset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchOutcome {
    /// A record authenticated the chain.
    Matched {
        /// The first record, in the order given, that did.
        record: Tlsa,
        /// The earliest notAfter (UNIX seconds) among the certificates the
        /// match rests on, which stops matching then: under DANE-TA
        /// (usage 2) the path from the leaf up to the named anchor (RFC
        /// 7671 §5.2.2); under PKIX-TA and PKIX-EE (usages 0, 1) the leaf
        /// and the intermediates of the validated PKIX path. None under
        /// DANE-EE (usage 3), whose match does not depend on dates.
        valid_until: Option<u64>,
    },
    /// Usable records existed and none authenticated the chain.
    NoMatch {
        /// Why each record failed, and which records or certificates were ignored.
        notes: Vec<String>,
    },
    /// Every record was unusable, which RFC 7671 §4.1 treats as no TLSA at all.
    NoUsableRecords {
        /// Why each record is unusable.
        notes: Vec<String>,
    },
    /// No record matched, and the DANE-TA search stopped at [`MAX_SIGNATURE_CHECKS`]
    /// before it could finish, so some path may not have been tried.
    ///
    /// Not `NoMatch`, because the search is incomplete, and never a match: only a
    /// verified path authenticates a chain, and whoever built a chain that needs
    /// more checks than this (an interceptor stuffing it, to burn our CPU or hide
    /// among the branches) gets the same result as one that does not verify. A
    /// DANE client with its own limits would also fail such a connection, so this
    /// is an alarm (`mismatch` in the report) with a note that says why, not
    /// silence and not "could not check": calling it unreachable would let a
    /// stuffed chain keep the monitor quiet.
    SearchExhausted {
        /// Why each record failed, the budget note included.
        notes: Vec<String>,
    },
    /// The chain was empty or its leaf could not be parsed: a finding, not a crash.
    MalformedChain {
        /// What is wrong with it.
        error: String,
    },
}

/// What one [`match_chain_counted`] call cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatchCost {
    /// Certificate signatures verified by the DANE-TA search (at most [`MAX_SIGNATURE_CHECKS`]).
    pub signature_checks: usize,
    /// Whether the search wanted more than the budget.
    pub exhausted: bool,
}

/// Matches a presented chain against a TLSA RRset (RFC 6698 §2.1.1, RFC 7671 §5).
pub fn match_chain(records: &[Tlsa], ctx: &MatchContext) -> MatchOutcome {
    match_chain_counted(records, ctx).0
}

/// [`match_chain`], and what it cost.
pub fn match_chain_counted(records: &[Tlsa], ctx: &MatchContext) -> (MatchOutcome, MatchCost) {
    let mut cost = MatchCost::default();
    let outcome = match_inner(records, ctx, &mut cost);
    (outcome, cost)
}

fn match_inner(records: &[Tlsa], ctx: &MatchContext, cost: &mut MatchCost) -> MatchOutcome {
    let (mut notes, mut usable) = (Vec::new(), Vec::new());
    for record in records {
        match record.usable() {
            Ok(()) => usable.push(record),
            Err(why) => notes.push(format!("{}: unusable, ignored: {why}", record.short())),
        }
    }
    // Records decide first: with none usable the chain is irrelevant (RFC 7671 §4.1).
    if usable.is_empty() {
        return MatchOutcome::NoUsableRecords { notes };
    }
    let malformed = |error| MatchOutcome::MalformedChain { error };
    let leaf = match ctx.chain.first().map(|der| parse_cert(der)) {
        Some(Ok(leaf)) => leaf,
        Some(Err(e)) => return malformed(format!("the server's certificate: {e}")),
        None => return malformed("the server presented no certificate".into()),
    };
    let presented = ctx.chain.len();
    let considered = presented.min(1 + MAX_CHAIN_BEYOND_LEAF);
    if presented > considered {
        notes.push(format!(
            "the server presented {presented} certificates; only its own and the {MAX_CHAIN_BEYOND_LEAF} after it are considered, the other {} are ignored",
            presented - considered
        ));
    }
    // PKIX validation sees the same cut chain (webpki has its own budget too).
    let ctx = &MatchContext {
        chain: &ctx.chain[..considered],
        ..*ctx
    };
    let mut certs = vec![Some(leaf)];
    for (i, der) in ctx.chain.iter().enumerate().skip(1) {
        // A broken extra certificate must not hide a DANE-EE match on the leaf.
        let ignored = |e| notes.push(format!("certificate {i} of the chain is ignored: {e}"));
        certs.push(parse_cert(der).map_err(ignored).ok());
    }
    let matcher = Matcher::new(ctx, certs);
    let mut outcome = None;
    for record in usable {
        match matcher.check(record) {
            Ok(valid_until) => {
                // Sound even after the budget ran out: a match is a verified path.
                outcome = Some(MatchOutcome::Matched {
                    record: record.clone(),
                    valid_until,
                });
                break;
            }
            Err(why) => notes.push(format!("{}: {why}", record.short())),
        }
    }
    cost.signature_checks = matcher.checks.get();
    cost.exhausted = matcher.exhausted.get();
    if let Some(matched) = outcome {
        return matched;
    }
    if cost.exhausted {
        notes.push(format!(
            "the search for a path to a trust anchor stopped after {MAX_SIGNATURE_CHECKS} signature checks, the most CertWatch spends on one server; a chain that needs more is not authenticated, so this counts as a mismatch (send only the server's certificate and its issuers)"
        ));
        return MatchOutcome::SearchExhausted { notes };
    }
    MatchOutcome::NoMatch { notes }
}

/// Why an issuer's key was not taken as having signed a certificate.
enum NotSigned {
    /// The signature does not verify (or uses SHA-1); the description.
    Bad(String),
    /// The signature budget is spent; this pair was never checked.
    OverBudget,
}

/// What PKIX validation found, kept because several records may ask.
struct PkixPath {
    intermediates: Vec<Vec<u8>>,
    anchor_spki: Vec<u8>,
}

struct Matcher<'a> {
    ctx: &'a MatchContext<'a>,
    certs: Vec<Option<X509Certificate<'a>>>,
    pkix: OnceCell<Result<PkixPath, String>>,
    /// Signature results by (certificate, issuer), so no pair is verified twice.
    verified: RefCell<HashMap<(usize, usize), Result<(), String>>>,
    /// Signatures verified so far.
    checks: Cell<usize>,
    /// Whether a signature was left unchecked because the budget was spent.
    exhausted: Cell<bool>,
}

impl<'a> Matcher<'a> {
    fn new(ctx: &'a MatchContext<'a>, certs: Vec<Option<X509Certificate<'a>>>) -> Matcher<'a> {
        Matcher {
            ctx,
            certs,
            pkix: OnceCell::new(),
            verified: RefCell::new(HashMap::new()),
            checks: Cell::new(0),
            exhausted: Cell::new(false),
        }
    }

    /// Whether `record` authenticates the chain; if so, until when (see
    /// [`MatchOutcome::Matched`]).
    fn check(&self, record: &Tlsa) -> Result<Option<u64>, String> {
        const NOT_LEAF: &str = "does not match the server's certificate";
        match record.usage {
            3 if self.matches(record, 0) => Ok(None),
            1 if self.matches(record, 0) => match self.pkix() {
                Ok(path) => Ok(self.pkix_until(path)),
                Err(e) => Err(format!("matched but PKIX validation failed: {e}")),
            },
            1 | 3 => Err(NOT_LEAF.into()),
            2 => self.dane_ta_path(record).map(|path| {
                let dates = path.iter().filter_map(|&i| self.cert(i).map(not_after));
                dates.min()
            }),
            0 => {
                self.pkix_ta(record)?;
                Ok(self.pkix().as_ref().ok().and_then(|p| self.pkix_until(p)))
            }
            u => Err(Unusable::Usage(u).to_string()),
        }
    }

    /// The earliest notAfter of the leaf and the PKIX path's intermediates
    /// (the root store's anchor carries no date webpki checks).
    fn pkix_until(&self, path: &PkixPath) -> Option<u64> {
        let intermediates = path
            .intermediates
            .iter()
            .filter_map(|d| super::not_after(d));
        self.cert(0)
            .map(not_after)
            .into_iter()
            .chain(intermediates)
            .min()
    }

    fn matches(&self, record: &Tlsa, index: usize) -> bool {
        let Some(cert) = self.cert(index) else {
            return false;
        };
        let data = select(cert, record.selector).and_then(|s| digest(s, record.matching));
        data.as_ref() == Some(&record.data)
    }

    fn cert(&self, index: usize) -> Option<&X509Certificate<'_>> {
        self.certs.get(index).and_then(Option::as_ref)
    }

    fn describe(&self, index: usize) -> String {
        let subject = self.cert(index).map(|c| c.subject().to_string());
        format!("certificate {index} ({})", subject.unwrap_or_default())
    }

    /// RFC 7671 §5.2: the record names a trust anchor in the chain; the
    /// leaf must chain to it. The path found, leaf first.
    fn dane_ta_path(&self, record: &Tlsa) -> Result<Vec<usize>, String> {
        let anchors = (0..self.certs.len()).filter(|&i| self.matches(record, i));
        let mut failures = Vec::new();
        for anchor in anchors {
            if anchor == 0 && !self.cert(0).is_some_and(|c| c.issuer() == c.subject()) {
                // As in OpenSSL: only a self-issued leaf can be its own trust anchor.
                let (s, m) = (record.selector, record.matching);
                let why = format!("matches the server's own certificate, which is not self-issued and so cannot be its trust anchor; a pin of the server's own key is written 3 {s} {m}");
                failures.push(why);
                continue;
            }
            let mut visited = vec![false; self.certs.len()];
            let mut why = String::new();
            let found = match self.search(0, anchor, &mut visited, &mut why) {
                Some(path) => self.check_path(&path).map(|()| path),
                None if self.exhausted.get() => Err(format!(
                    "the signature budget ({MAX_SIGNATURE_CHECKS}) ran out before a path to it was found"
                )),
                None if why.is_empty() => Err("no chain of issuer names leads there".into()),
                None => Err(format!("the chain does not verify up to it: {why}")),
            };
            match found {
                Ok(path) => return Ok(path),
                Err(e) => failures.push(format!("matches {} but {e}", self.describe(anchor))),
            }
        }
        if failures.is_empty() {
            return Err("matches no certificate in the chain".into());
        }
        Err(failures.join("; "))
    }

    /// Depth-first search for the issuer path from `at` to `anchor`, checking signatures;
    /// a certificate visited once is never retried in one search, and each signature is
    /// verified once per [`match_chain`] whatever the number of anchors.
    fn search(
        &self,
        at: usize,
        anchor: usize,
        seen: &mut [bool],
        why: &mut String,
    ) -> Option<Vec<usize>> {
        let cert = self.cert(at)?;
        if at == anchor {
            return Some(vec![at]);
        }
        seen[at] = true;
        for (j, parent) in self.certs.iter().enumerate() {
            let Some(parent) = parent else { continue };
            if seen[j] || parent.subject().as_raw() != cert.issuer().as_raw() {
                continue;
            }
            match self.signed_by(at, j) {
                Ok(()) => {}
                Err(NotSigned::Bad(e)) => {
                    *why = e;
                    continue;
                }
                Err(NotSigned::OverBudget) => return None,
            }
            if let Some(mut path) = self.search(j, anchor, seen, why) {
                path.insert(0, at);
                return Some(path);
            }
        }
        None
    }

    /// Whether certificate `at` carries a good signature by the key of certificate `issuer`,
    /// verified at most once per pair and within [`MAX_SIGNATURE_CHECKS`].
    fn signed_by(&self, at: usize, issuer: usize) -> Result<(), NotSigned> {
        if let Some(known) = self.verified.borrow().get(&(at, issuer)) {
            return known.clone().map_err(NotSigned::Bad);
        }
        let (Some(cert), Some(parent)) = (self.cert(at), self.cert(issuer)) else {
            return Err(NotSigned::Bad(format!(
                "certificate {issuer} is unreadable"
            )));
        };
        let algorithm = &cert.signature_algorithm.algorithm;
        let result = if *algorithm == OID_PKCS1_SHA1WITHRSA || *algorithm == OID_SHA1_WITH_RSA {
            // Collisions are practical and OpenSSL 3 rejects it, so it authenticates nothing.
            Err(format!("certificate {at} is signed with SHA-1"))
        } else {
            if self.checks.get() >= MAX_SIGNATURE_CHECKS {
                self.exhausted.set(true);
                return Err(NotSigned::OverBudget);
            }
            self.checks.set(self.checks.get() + 1);
            cert.verify_signature(Some(parent.public_key())).map_err(|e| {
                format!("the signature on certificate {at} does not verify with the key of certificate {issuer}, its named issuer ({e})")
            })
        };
        self.verified
            .borrow_mut()
            .insert((at, issuer), result.clone());
        result.map_err(NotSigned::Bad)
    }

    /// What comes with a DANE-TA anchor: CA flags, validity dates, and the leaf's name.
    fn check_path(&self, path: &[usize]) -> Result<(), String> {
        let now = asn1_time(self.ctx.now);
        for (pos, &i) in path.iter().enumerate() {
            let Some(cert) = self.cert(i) else { continue };
            // The anchor is trusted as a key (RFC 5280 §6.1.1 d), so a v1 root may pass.
            if pos > 0 && pos + 1 < path.len() && !cert.is_ca() {
                return Err(format!(
                    "{} issues a certificate but is not a CA",
                    self.describe(i)
                ));
            }
            let (from, to) = (cert.validity().not_before, cert.validity().not_after);
            if !cert.validity().is_valid_at(now) {
                let (from, to, now) = (iso(from), iso(to), iso(now));
                return Err(format!(
                    "{} is valid from {from} to {to}, not at {now}",
                    self.describe(i)
                ));
            }
        }
        // RFC 7671 §5.2 and RFC 7673 §4: unlike DANE-EE, DANE-TA needs the name check.
        let presented = self.cert(0).map(leaf_names).unwrap_or_default();
        let reference = self.ctx.reference_names;
        if presented
            .iter()
            .any(|p| reference.iter().any(|r| name_matches(p, r)))
        {
            return Ok(());
        }
        let (presented, reference) = (presented.join(", "), reference.join(", "));
        Err(format!(
            "the server's certificate is for [{presented}], not for any of [{reference}]"
        ))
    }

    fn pkix(&self) -> &Result<PkixPath, String> {
        self.pkix.get_or_init(|| pkix_validate(self.ctx))
    }

    /// RFC 6698 §2.1.1: usage 0 names a CA that must sit on a PKIX-valid path.
    fn pkix_ta(&self, record: &Tlsa) -> Result<(), String> {
        let in_chain: Vec<usize> = (1..self.certs.len())
            .filter(|&i| self.matches(record, i))
            .collect();
        let path = match self.pkix() {
            Ok(path) => path,
            Err(e) if in_chain.is_empty() => {
                return Err(format!(
                    "matches no CA certificate in the chain, and PKIX validation failed: {e}"
                ))
            }
            Err(e) => return Err(format!("matched but PKIX validation failed: {e}")),
        };
        let (selector, matching) = (record.selector, record.matching);
        let on_path =
            |der: &Vec<u8>| association(der, selector, matching).is_ok_and(|d| d == record.data);
        // The anchor store holds keys, not certificates: find a presented copy for selector 0.
        let is_anchor = |i: &usize| {
            self.cert(*i)
                .is_some_and(|c| c.public_key().raw == path.anchor_spki)
        };
        let anchor_matches = match selector {
            1 => association_from_spki(&path.anchor_spki, matching) == record.data,
            _ => in_chain.iter().any(is_anchor),
        };
        match (
            path.intermediates.iter().any(on_path) || anchor_matches,
            in_chain.is_empty(),
        ) {
            (true, _) => Ok(()),
            (false, false) => {
                Err("matches a CA certificate that is not on the validated PKIX path".into())
            }
            (false, true) => Err("matches no CA certificate on the validated PKIX path".into()),
        }
    }
}

/// Ordinary web PKIX validation plus the name check (RFC 6125, via webpki).
fn pkix_validate(ctx: &MatchContext) -> Result<PkixPath, String> {
    let ders: Vec<CertificateDer> = ctx
        .chain
        .iter()
        .map(|d| CertificateDer::from(d.as_slice()))
        .collect();
    let (leaf, intermediates) = ders.split_first().ok_or("no certificate")?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| describe_webpki(&e))?;
    let anchors = ctx.pkix_roots.unwrap_or(webpki_roots::TLS_SERVER_ROOTS);
    let time = UnixTime::since_unix_epoch(ctx.now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let algs = webpki::ALL_VERIFICATION_ALGS;
    let usage = webpki::KeyUsage::server_auth();
    let path = ee.verify_for_usage(algs, anchors, intermediates, time, usage, None, None);
    let path = path.map_err(|e| describe_webpki(&e))?;
    let valid_for = |n: &String| {
        let name = ServerName::try_from(n.as_str());
        name.is_ok_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
    };
    if !ctx.reference_names.iter().any(valid_for) {
        let names = ctx.reference_names.join(", ");
        return Err(format!("the certificate is not valid for any of [{names}]"));
    }
    let intermediates = path.intermediate_certificates().map(|c| c.der().to_vec());
    let anchor_spki = webpki::spki_for_anchor(path.anchor()).to_vec();
    Ok(PkixPath {
        intermediates: intermediates.collect(),
        anchor_spki,
    })
}

fn describe_webpki(e: &webpki::Error) -> String {
    let at = |t: &UnixTime| iso(asn1_time(UNIX_EPOCH + Duration::from_secs(t.as_secs())));
    match e {
        webpki::Error::CertExpired { not_after, .. } => format!("expired at {}", at(not_after)),
        webpki::Error::CertNotValidYet { not_before, .. } => {
            format!("not valid before {}", at(not_before))
        }
        webpki::Error::UnknownIssuer => "no path to a trusted root (unknown issuer)".into(),
        webpki::Error::InvalidSignatureForPublicKey => {
            "a signature in the chain does not verify".into()
        }
        webpki::Error::CaUsedAsEndEntity => "the server's certificate is a CA certificate".into(),
        other => format!("{other:?}"),
    }
}

/// The DNS names the leaf claims: its DNS SANs, or its CN only when it has none (RFC 6125 §6.4.4).
fn leaf_names(leaf: &X509Certificate) -> Vec<String> {
    let sans = leaf.subject_alternative_name().ok().flatten();
    let sans = sans.iter().flat_map(|san| san.value.general_names.iter());
    let names = sans.filter_map(|g| match g {
        GeneralName::DNSName(n) => Some(*n),
        _ => None,
    });
    let mut names: Vec<&str> = names.collect();
    if names.is_empty() {
        names = leaf
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .collect();
    }
    names.into_iter().map(str::to_ascii_lowercase).collect()
}

/// RFC 6125 §6.4.3: a wildcard stands for exactly one whole left-most label.
fn name_matches(presented: &str, reference: &str) -> bool {
    let presented = presented.trim_end_matches('.').to_ascii_lowercase();
    let reference = reference.trim_end_matches('.').to_ascii_lowercase();
    match presented.strip_prefix("*.") {
        // `*.org` would cover a whole TLD: require two labels after the star.
        Some(parent) if parent.contains('.') => {
            let split = reference.split_once('.');
            split.is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
        }
        Some(_) => false,
        None => !presented.is_empty() && presented == reference,
    }
}

/// A certificate's notAfter in UNIX seconds (0 before the epoch).
pub(super) fn not_after(cert: &X509Certificate) -> u64 {
    u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0)
}

fn asn1_time(t: SystemTime) -> ASN1Time {
    // Clamped to the years 1970-9999, which ASN1Time always holds.
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let secs = secs.min(253_402_300_799) as i64;
    ASN1Time::from_timestamp(secs).unwrap_or_else(|_| ASN1Time::now())
}

fn iso(t: ASN1Time) -> String {
    let d = t.to_datetime();
    let (date, time) = (
        (d.year(), u8::from(d.month()), d.day()),
        (d.hour(), d.minute(), d.second()),
    );
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        date.0, date.1, date.2, time.0, time.1, time.2
    )
}

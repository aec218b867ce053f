//! Unit tests of spreading probes over vantages and of confirming a
//! mismatch from the others, with fake agents (no network: the coordinator
//! does not probe itself here, `local = false`).

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::*;
use crate::dane::Tlsa;
use crate::probe::tls::TlsObservation;
use crate::probe::transport::Connector;
use crate::vantage::{wire, AgentFailure, Remote, Vantages};
use crate::vocab::Service;

/// What a fake agent does with every job.
#[derive(Clone)]
enum Does {
    /// Sees this leaf.
    Sees(Vec<u8>),
    /// Fails itself (times out, goes away, answers nonsense).
    Fails,
    /// Says the server cannot be reached.
    Unreachable,
}

struct Fake {
    agents: Vec<(String, Does)>,
    jobs: Mutex<Vec<String>>,
}

impl Fake {
    fn new(agents: &[(&str, Does)]) -> Arc<Fake> {
        Arc::new(Fake {
            agents: agents
                .iter()
                .map(|(n, d)| (n.to_string(), d.clone()))
                .collect(),
            jobs: Mutex::new(Vec::new()),
        })
    }

    fn jobs(&self) -> Vec<String> {
        self.jobs.lock().unwrap().clone()
    }
}

impl Vantages for Arc<Fake> {
    fn available(&self) -> Vec<(String, u32)> {
        self.agents.iter().map(|(n, _)| (n.clone(), 1)).collect()
    }

    fn probe(
        &self,
        agent: &str,
        _job: wire::Job,
        _deadline: tokio::time::Instant,
    ) -> BoxFuture<'static, Remote> {
        self.jobs.lock().unwrap().push(agent.to_owned());
        let does = self
            .agents
            .iter()
            .find(|(n, _)| n == agent)
            .unwrap()
            .1
            .clone();
        let agent = agent.to_owned();
        Box::pin(async move {
            match does {
                Does::Sees(leaf) => {
                    let seen = Seen {
                        observation: TlsObservation {
                            chain: vec![leaf],
                            version: "TLSv1.3".into(),
                            cipher: "TLS13_AES_128_GCM_SHA256".into(),
                            alpn: None,
                        },
                        exit: None,
                    };
                    Ok((Ok(seen), "direct".to_owned()))
                }
                Does::Fails => Err(AgentFailure::agent(&agent, "no answer within 10s")),
                Does::Unreachable => {
                    let failed = wire::Answer::Failed(wire::Failure {
                        whose: wire::Whose::Server,
                        reason: "other".into(),
                        text: "connection refused".into(),
                    });
                    crate::vantage::remote_of(&agent, failed)
                }
            }
        })
    }
}

fn leaf() -> (Vec<u8>, String) {
    let c = rcgen::generate_simple_self_signed(vec!["xmpp.example.org".to_owned()]).unwrap();
    let der = c.cert.der().to_vec();
    let spki = hex::encode(crate::dane::spki_sha256(&der).unwrap());
    (der, spki)
}

fn checker(fake: &Arc<Fake>) -> Checker {
    let prober = Prober::new(Connector::Direct, Duration::from_secs(5), None);
    let mut c = super::tests::checker(prober);
    c.local = false;
    c.vantages = Some(Arc::new(fake.clone()));
    c
}

fn endpoint(good_spki: &str) -> Endpoint {
    Endpoint {
        service: Service::XmppClient,
        host: "xmpp.example.org".into(),
        port: 5222,
        address: Some("192.0.2.1".parse().unwrap()),
        tlsa_name: "_5222._tcp.xmpp.example.org".into(),
        reference_names: vec![],
        tlsa: TlsaState::Present {
            records: vec![Tlsa::parse(&format!("3 1 1 {good_spki}")).unwrap()],
        },
        error: None,
        fallback: false,
    }
}

/// One check's probe and judging of `endpoint`, as `check` does them.
async fn probe_and_judge(c: &Checker, e: &Endpoint) -> EndpointReport {
    let domain = Domain::parse("example.org").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (p, exit, origin) = c.probe_endpoint(&domain, e, deadline).await;
    let mut reports = c
        .judge_all(
            &domain,
            std::slice::from_ref(e),
            &[p],
            (&[exit], &[origin]),
            deadline,
        )
        .await;
    reports.remove(0)
}

#[tokio::test]
async fn probes_spread_over_every_available_agent() {
    let (good, spki) = leaf();
    let names = ["a", "b", "c"];
    let fake = Fake::new(&names.map(|n| (n, Does::Sees(good.clone()))));
    let c = checker(&fake);
    for _ in 0..60 {
        let r = probe_and_judge(&c, &endpoint(&spki)).await;
        assert_eq!(r.verdict, EndpointVerdict::Match);
        assert_eq!(r.vantage.len(), 1);
    }
    let jobs = fake.jobs();
    for n in names {
        // 60 picks of 1 in 3: each is picked (the odds of missing one are 3e-11).
        assert!(jobs.iter().any(|j| j == n), "{n} never probed: {jobs:?}");
    }
}

#[tokio::test]
async fn a_failing_agent_sends_the_probe_elsewhere_never_unreachable() {
    let (good, spki) = leaf();
    let fake = Fake::new(&[("a", Does::Fails), ("b", Does::Sees(good))]);
    let c = checker(&fake);
    for _ in 0..10 {
        let r = probe_and_judge(&c, &endpoint(&spki)).await;
        assert_eq!(r.verdict, EndpointVerdict::Match, "{r:?}");
        assert_eq!(r.vantage[0].agent.as_deref(), Some("b"));
    }
}

#[tokio::test]
async fn every_agent_failing_is_not_probed_not_unreachable() {
    let (_, spki) = leaf();
    let fake = Fake::new(&[("a", Does::Fails), ("b", Does::Fails)]);
    let c = checker(&fake);
    let domain = Domain::parse("example.org").unwrap();
    // Two endpoints: neither is checked, and neither is "unreachable".
    let mut second = endpoint(&spki);
    second.address = Some("192.0.2.2".parse().unwrap());
    let endpoints = vec![endpoint(&spki), second];
    let out = c.probe_all(&domain, Arc::new(endpoints.clone())).await;
    let mut health = Health::default();
    tally(&out.probed, &mut health);
    assert!(health.ours(), "{health:?}");
    let reports: Vec<_> = endpoints
        .iter()
        .zip(&out.probed)
        .map(|(e, p)| judge(e, p, SystemTime::now()))
        .collect();
    for r in &reports {
        assert_eq!(r.verdict, EndpointVerdict::NotChecked, "{r:?}");
        let error = r.error.as_deref().unwrap_or_default();
        assert!(
            error.starts_with("no vantage could probe it: agents offline or failing"),
            "{error}"
        );
    }
    // The monitor's decision: the domain's state is left alone, no
    // subscriber is alerted (the operators are told by selfwatch).
    let verdict = Report::overall(&reports, false, false);
    assert_eq!(verdict, crate::report::Verdict::Unreachable);
    assert!(health.says_nothing(verdict));
    // With another endpoint that matched, the domain is still not "ok".
    let mut with_match = reports.clone();
    with_match[0].verdict = EndpointVerdict::Match;
    assert!(health.says_nothing(Report::overall(&with_match, false, false)));
    // The summary says why, not "unreachable" and not "our Tor client".
    let g = Gathered {
        found: Default::default(),
        unanswered: 0,
        resolver_works: true,
        health,
        endpoints: Arc::new(endpoints),
        probed: out.probed,
        exits: out.exits,
        origins: out.origins,
        left_out: out.left_out,
        deadline: out.deadline,
        probeable: out.probeable,
        tor: None,
    };
    let line = c.error_lines(&domain, &g);
    assert!(
        line.iter()
            .any(|l| l.contains("2 endpoint(s) were not checked: no vantage could probe it")),
        "{line:?}"
    );
    assert!(
        !line
            .iter()
            .any(|l| l.contains("slow servers") || l.contains("our own")),
        "{line:?}"
    );
}

#[tokio::test]
async fn an_agent_that_calls_everything_unreachable_is_second_guessed() {
    // A broken or lying agent says "connection refused" for every job:
    // another vantage reaches the server, so it is not unreachable.
    let (good, spki) = leaf();
    let fake = Fake::new(&[("liar", Does::Unreachable), ("b", Does::Sees(good))]);
    let c = checker(&fake);
    for _ in 0..10 {
        let r = probe_and_judge(&c, &endpoint(&spki)).await;
        assert_eq!(r.verdict, EndpointVerdict::Match, "{r:?}");
    }
    // Only unreachable when no vantage reaches it.
    let fake = Fake::new(&[("a", Does::Unreachable), ("b", Does::Unreachable)]);
    let r = probe_and_judge(&checker(&fake), &endpoint(&spki)).await;
    assert_eq!(r.verdict, EndpointVerdict::Unreachable, "{r:?}");
}

#[tokio::test]
async fn a_key_seen_only_from_one_agent_is_an_alarm_that_says_so_and_holds() {
    let (good, spki) = leaf();
    let (bad, bad_spki) = leaf();
    let fake = Fake::new(&[
        ("a", Does::Sees(good.clone())),
        ("b", Does::Sees(bad)),
        ("c", Does::Sees(good)),
    ]);
    let c = checker(&fake);
    let e = endpoint(&spki);
    // Until b is picked, every check is a match.
    let mut first = None;
    for _ in 0..60 {
        let r = probe_and_judge(&c, &e).await;
        if r.verdict == EndpointVerdict::Mismatch {
            first = Some(r);
            break;
        }
    }
    let r = first.expect("b was never picked");
    assert_eq!(r.spki_sha256.as_deref(), Some(bad_spki.as_str()));
    assert_eq!(r.confirmed, Some(true));
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("seen only from b: an interceptor that spares other networks")),
        "{:?}",
        r.notes
    );
    // The others' matching keys are in the evidence, named.
    let agents: Vec<_> = r.vantage.iter().filter_map(|v| v.agent.clone()).collect();
    assert!(
        agents.contains(&"a".to_owned()) && agents.contains(&"c".to_owned()),
        "{agents:?}"
    );
    // The next checks look from b first: the alarm holds, no flapping.
    for _ in 0..10 {
        let r = probe_and_judge(&c, &e).await;
        assert_eq!(r.verdict, EndpointVerdict::Mismatch, "{:?}", r.notes);
    }
}

#[tokio::test]
async fn a_key_seen_from_every_agent_is_confirmed_from_several_networks() {
    let (_, spki) = leaf();
    let (bad, _) = leaf();
    let fake = Fake::new(&[
        ("a", Does::Sees(bad.clone())),
        ("b", Does::Sees(bad.clone())),
        ("c", Does::Sees(bad)),
    ]);
    let r = probe_and_judge(&checker(&fake), &endpoint(&spki)).await;
    assert_eq!(r.verdict, EndpointVerdict::Mismatch);
    assert_eq!(r.confirmed, Some(true));
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("seen from 3 networks")),
        "{:?}",
        r.notes
    );
    assert_eq!(r.vantage.len(), 3);
}

#[tokio::test]
async fn confirmation_asks_at_most_the_bounded_number_of_other_vantages() {
    let (_, spki) = leaf();
    let (bad, _) = leaf();
    let names: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    let list: Vec<(&str, Does)> = names
        .iter()
        .map(|n| (n.as_str(), Does::Sees(bad.clone())))
        .collect();
    let fake = Fake::new(&list);
    let r = probe_and_judge(&checker(&fake), &endpoint(&spki)).await;
    assert_eq!(r.verdict, EndpointVerdict::Mismatch);
    // The first probe and at most MAX_CONFIRMING_VANTAGES others.
    assert_eq!(fake.jobs().len(), 1 + vantages::MAX_CONFIRMING_VANTAGES);
}

#[tokio::test]
async fn local_false_holds_before_the_agents_are_handed_over() {
    let (_, spki) = leaf();
    let fake = Fake::new(&[("a", Does::Fails)]);
    let mut c = checker(&fake);
    // Serve's first checks may run before the XMPP front sets the agents:
    // `probe.local = false` must still keep this machine from probing.
    c.vantages = None;
    let r = probe_and_judge(&c, &endpoint(&spki)).await;
    assert_eq!(r.verdict, EndpointVerdict::NotChecked, "{r:?}");
    assert!(r.vantage.is_empty(), "{r:?}");
    // With `local = true` and no agents, this machine probes (a closed
    // loopback port here: refused, so unreachable rather than not checked).
    c.local = true;
    let mut closed = endpoint(&spki);
    (closed.address, closed.port) = (Some("127.0.0.1".parse().unwrap()), 9);
    let r = probe_and_judge(&c, &closed).await;
    assert_eq!(r.verdict, EndpointVerdict::Unreachable, "{r:?}");
}

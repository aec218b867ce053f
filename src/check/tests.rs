//! Unit tests of a check.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;

use super::confirm::judge_blocking;
use super::*;
use crate::dane;
use crate::dns::ResolverSettings;
use crate::probe::tls::TlsObservation;
use crate::probe::transport::Connector;
use crate::probe::Spacing;
use crate::vocab::Service;

const SERVICES: [Service; 4] = [
    Service::XmppClient,
    Service::XmppsClient,
    Service::XmppServer,
    Service::XmppsServer,
];

pub(super) fn checker(prober: Prober) -> Checker {
    let resolver = Resolver::new(&ResolverSettings {
        nameservers: vec!["127.0.0.1:9".parse().unwrap()],
        trust_anchor: None,
        timeout: None,
        clock: None,
    })
    .unwrap();
    let mut checker = Checker::new(resolver, prober, crate::clock::system());
    // The stalling servers listen on loopback.
    checker.allow_private = true;
    checker
}

fn endpoint(service: Service, host: usize, addr: SocketAddr) -> Endpoint {
    Endpoint {
        service,
        host: format!("h{host}.example.org"),
        port: addr.port(),
        address: Some(addr.ip()),
        tlsa_name: format!("_{}._tcp.h{host}.example.org", addr.port()),
        reference_names: vec![],
        tlsa: TlsaState::Absent,
        error: None,
        fallback: false,
    }
}

/// A server that accepts every connection and never says a word.
async fn stalling_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// An address where nothing listens: every connection is refused at once.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn not_probed(p: &Probed) -> Option<&str> {
    match p {
        Probed::NotProbed(why) => Some(why),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_hundred_stalling_servers_end_within_the_check_deadline() {
    let addr = stalling_server().await;
    let timeout = Duration::from_secs(60);
    let prober = Prober::new(Connector::Direct, timeout, None).with_max_endpoints(512);
    let budget = prober.check_budget();
    assert_eq!(budget, 4 * timeout);
    let c = checker(prober);
    let endpoints: Vec<Endpoint> = (0..100)
        .map(|i| endpoint(SERVICES[i % 4], i / 4, addr))
        .collect();
    let t0 = Instant::now();
    let out = c
        .probe_all(&Domain::parse("example.org").unwrap(), Arc::new(endpoints))
        .await;
    assert!(
        Instant::now() - t0 <= budget,
        "took {:?}",
        Instant::now() - t0
    );
    assert!(out.left_out.is_empty());
    let cut: Vec<&str> = out.probed.iter().filter_map(not_probed).collect();
    assert!(!cut.is_empty(), "the stalls outlast the budget");
    assert!(
        cut.iter()
            .all(|w| *w == "not probed: the check's deadline of 4m passed"),
        "{cut:?}"
    );
    // Stalled servers are the servers' business, cut-off ones nobody's:
    // none of it is Tor failing.
    let mut health = Health::default();
    tally(&out.probed, &mut health);
    assert_eq!(health.transport_failures, 0);
    assert_eq!(health.probes, 100 - cut.len());
    let reports: Vec<_> = Arc::new(
        (0..100)
            .map(|i| endpoint(SERVICES[i % 4], i / 4, addr))
            .collect::<Vec<_>>(),
    )
    .iter()
    .zip(&out.probed)
    .map(|(e, p)| judge(e, p, SystemTime::now()))
    .collect();
    let shown = reports
        .iter()
        .filter(|r| {
            r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("not probed"))
        })
        .count();
    assert_eq!(shown, cut.len(), "every cut-off endpoint says so");
    assert_ne!(
        Report::overall(&reports, false, false),
        crate::report::Verdict::Ok
    );
}

#[tokio::test(start_paused = true)]
async fn at_most_max_endpoints_are_probed_taken_in_turn() {
    let addr = closed_port().await;
    let prober =
        Prober::new(Connector::Direct, Duration::from_secs(60), None).with_max_endpoints(32);
    let c = checker(prober);
    // The most discovery yields: 4 services × 16 targets × 8 addresses.
    let mut endpoints = Vec::new();
    for s in SERVICES {
        for h in 0..16 {
            for a in 0..8u8 {
                let mut e = endpoint(s, h, addr);
                e.tlsa_name = format!("{}-{a}", e.tlsa_name);
                endpoints.push(e);
            }
        }
    }
    let (chosen, left_out) = choose(&endpoints, 32);
    assert_eq!(chosen.len(), 32);
    assert_eq!(left_out.len(), 480);
    for s in SERVICES {
        let hosts: BTreeSet<&str> = chosen
            .iter()
            .filter(|&&i| endpoints[i].service == s)
            .map(|&i| endpoints[i].host.as_str())
            .collect();
        assert_eq!(hosts.len(), 8, "8 per service, each from another host");
    }
    let out = c
        .probe_all(&Domain::parse("example.org").unwrap(), Arc::new(endpoints))
        .await;
    let refused = out
        .probed
        .iter()
        .filter(|p| matches!(p, Probed::Failed(e) if e.is_remote()))
        .count();
    assert_eq!(refused, 32, "exactly max_endpoints probed");
    let cut: Vec<&str> = out.probed.iter().filter_map(not_probed).collect();
    assert_eq!(cut.len(), 480);
    assert!(cut
        .iter()
        .all(|w| *w
            == "not probed: the domain publishes 512 endpoints, more than the 32 a check probes"));
    let mut health = Health::default();
    tally(&out.probed, &mut health);
    assert_eq!((health.probes, health.transport_failures), (32, 0));
}

#[tokio::test(start_paused = true)]
async fn spacing_delays_probes_and_never_fails_them() {
    let addr = closed_port().await;
    let spacing = Arc::new(Spacing::new(
        Duration::from_secs(10),
        Duration::from_secs(600),
    ));
    let prober =
        Prober::new(Connector::Direct, Duration::from_secs(60), None).with_spacing(spacing.clone());
    let c = checker(prober);
    let domain = Domain::parse("example.org").unwrap();
    let three: Vec<Endpoint> = (0..3).map(|i| endpoint(SERVICES[i], 0, addr)).collect();
    let t0 = Instant::now();
    let out = c.probe_all(&domain, Arc::new(three.clone())).await;
    // Three endpoints × two attempts, one slot every 10 s.
    assert_eq!(Instant::now() - t0, Duration::from_secs(50));
    assert!(out
        .probed
        .iter()
        .all(|p| matches!(p, Probed::Failed(e) if e.is_remote())));
    // With a 5 s timeout the budget is 20 s: the slots after it are not
    // taken, and those probes are "not probed", not a transport failure.
    let prober = Prober::new(Connector::Direct, Duration::from_secs(5), None).with_spacing(spacing);
    let c = checker(prober);
    let t0 = Instant::now();
    let out = c.probe_all(&domain, Arc::new(three)).await;
    assert!(Instant::now() - t0 <= Duration::from_secs(20));
    let cut = out.probed.iter().filter_map(not_probed).count();
    assert!(cut > 0);
    let mut health = Health::default();
    tally(&out.probed, &mut health);
    assert_eq!(health.transport_failures, 0);
    assert_eq!(health.probes + cut, 3);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_spacing_gives_the_monitor_permit_back() {
    let addr = closed_port().await;
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    let gate = Arc::new(Gate::new(permits.clone()));
    assert!(
        gate.enter().await,
        "the monitor takes the permit for the check"
    );
    let spacing = Arc::new(Spacing::new(
        Duration::from_secs(10),
        Duration::from_secs(600),
    ));
    let prober = Prober::new(Connector::Direct, Duration::from_secs(60), None)
        .with_spacing(spacing)
        .with_gate(Some(gate.clone()));
    let c = checker(prober);
    let two: Vec<Endpoint> = (0..2).map(|i| endpoint(SERVICES[i], 0, addr)).collect();
    let run = tokio::spawn(async move {
        let out = c
            .probe_all(&Domain::parse("example.org").unwrap(), Arc::new(two))
            .await;
        out.probed
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        permits.available_permits(),
        1,
        "both probes wait for their slot: the permit is free for other checks"
    );
    let probed = run.await.unwrap();
    assert!(probed
        .iter()
        .all(|p| matches!(p, Probed::Failed(e) if e.is_remote())));
    assert!(gate.holds().await, "the check holds it again for the rest");
    gate.leave().await;
    assert_eq!(permits.available_permits(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_wait_between_lookups_and_probes_is_random_and_holds_no_permit() {
    let permits = Arc::new(tokio::sync::Semaphore::new(1));
    let gate = Arc::new(Gate::new(permits.clone()));
    assert!(gate.enter().await);
    let prober =
        Prober::new(Connector::Direct, Duration::from_secs(60), None).with_gate(Some(gate.clone()));
    let mut c = checker(prober);
    c.probe_delay = Duration::from_secs(600);
    let mut waits = BTreeSet::new();
    for _ in 0..8 {
        let t0 = tokio::time::Instant::now();
        let c2 = c.clone();
        let run = tokio::spawn(async move { c2.wait_before_probes().await });
        tokio::task::yield_now().await;
        assert_eq!(permits.available_permits(), 1, "no permit while waiting");
        run.await.unwrap();
        let waited = t0.elapsed();
        assert!(waited <= Duration::from_secs(600), "{waited:?}");
        assert!(gate.holds().await, "held again for the probes");
        waits.insert(waited.as_millis());
    }
    assert!(waits.len() > 1, "the wait is random: {waits:?}");
    c.probe_delay = Duration::ZERO;
    let t0 = tokio::time::Instant::now();
    c.wait_before_probes().await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    gate.leave().await;
}

#[tokio::test]
async fn a_dead_socks5_proxy_is_our_failure_and_checks_nothing() {
    let proxy = closed_port().await;
    let server = stalling_server().await;
    let prober = Prober::new(
        Connector::Socks5(proxy, Default::default()),
        Duration::from_secs(5),
        None,
    );
    let c = checker(prober);
    let (mut e, _) = endpoint_and_chain();
    e.address = Some(server.ip());
    e.port = server.port();
    let out = c
        .probe_all(
            &Domain::parse("example.org").unwrap(),
            Arc::new(vec![e.clone()]),
        )
        .await;
    let mut health = Health::default();
    tally(&out.probed, &mut health);
    assert_eq!((health.probes, health.transport_failures), (1, 1));
    assert!(health.ours());
    let error = health.transport_error.clone().unwrap();
    assert!(error.contains("our socks5 proxy"), "{error}");
    let report = judge(&e, &out.probed[0], SystemTime::now());
    assert_eq!(report.verdict, EndpointVerdict::NotChecked);
    assert_eq!(
        Report::overall(&[report], false, false),
        crate::report::Verdict::Unreachable
    );
    let advice = transport_advice("socks5", 1, 1, None);
    assert!(
        advice.contains("our own SOCKS5 proxy failed on 1 of 1"),
        "{advice}"
    );
    assert!(advice.contains("Try:"), "{advice}");
}

#[test]
fn a_stream_that_broke_while_arti_is_stuck_is_ours() {
    let closed = Probed::Failed(ProbeError::Session(ProbeFailure::Closed { stage: "TLS" }));
    let refused = Probed::Failed(ProbeError::Connect(ConnectFailure::Remote(
        "connection refused (seen by the Tor exit)".into(),
    )));
    let no_starttls = Probed::Failed(ProbeError::Session(ProbeFailure::StartTlsMissing));
    let all = vec![closed, refused, no_starttls];
    let healthy = TorState {
        ready: true,
        blocked: None,
    };
    let stuck = TorState {
        ready: false,
        blocked: Some("We seem to be offline".into()),
    };
    let count = |p: &[Probed]| {
        let mut h = Health::default();
        tally(p, &mut h);
        h.transport_failures
    };
    assert_eq!(count(&ours_when_tor_is_stuck(all.clone(), None)), 0);
    assert_eq!(
        count(&ours_when_tor_is_stuck(all.clone(), Some(&healthy))),
        0
    );
    let relabelled = ours_when_tor_is_stuck(all, Some(&stuck));
    // Only the broken stream: the exit's report and a missing STARTTLS
    // are what the server did.
    assert_eq!(count(&relabelled), 1);
    assert!(matches!(&relabelled[2], Probed::Failed(e) if e.is_starttls_missing()));
}

fn endpoint_and_chain() -> (Endpoint, Probed) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["xmpp.example.org".into()]).unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    let endpoint = Endpoint {
        service: Service::XmppClient,
        host: "xmpp.example.org".into(),
        port: 5222,
        address: Some("192.0.2.1".parse().unwrap()),
        tlsa_name: "_5222._tcp.xmpp.example.org".into(),
        reference_names: vec!["example.org".into()],
        tlsa: TlsaState::Present {
            records: vec![dane::record_for(&der, 3, 1, 1).unwrap()],
        },
        error: None,
        fallback: false,
    };
    let probed = Probed::Observed(TlsObservation {
        chain: vec![der],
        version: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        alpn: None,
    });
    (endpoint, probed)
}

/// A key pair and its self-signed certificate (DER).
fn key_and_cert() -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["example.org".into()]).unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    (der, key.serialize_der())
}

/// A direct-TLS server that presents, connection by connection, the
/// certificates in `script` (None: close at once), then refuses.
async fn scripted_tls_server(script: Vec<Option<(Vec<u8>, Vec<u8>)>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for step in script {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let Some((cert, key)) = step else {
                drop(sock);
                continue;
            };
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.into()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(sock).await {
                    let mut buf = [0u8; 16];
                    let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut buf).await;
                }
            });
        }
        // The listener goes: later connections are refused.
    });
    addr
}

/// Probes one direct-TLS endpoint whose TLSA names `tlsa_key`, and
/// judges and confirms it as a check does.
async fn probe_and_confirm(addr: SocketAddr, tlsa_key: &[u8]) -> EndpointReport {
    let prober = Prober::new(Connector::Direct, Duration::from_secs(10), None);
    let c = checker(prober);
    let mut e = endpoint(Service::XmppsClient, 0, addr);
    e.tlsa = TlsaState::Present {
        records: vec![dane::record_for(tlsa_key, 3, 1, 1).unwrap()],
    };
    let domain = Domain::parse("example.org").unwrap();
    let endpoints = Arc::new(vec![e]);
    let out = c.probe_all(&domain, endpoints.clone()).await;
    let mut reports = c
        .judge_all(
            &domain,
            &endpoints,
            &out.probed,
            (&out.exits, &out.origins),
            out.deadline,
        )
        .await;
    reports.pop().unwrap()
}

#[tokio::test]
async fn a_mismatch_seen_twice_is_confirmed_with_both_vantages() {
    let (published, _) = key_and_cert();
    let attacker = key_and_cert();
    let addr = scripted_tls_server(vec![Some(attacker.clone()), Some(attacker.clone())]).await;
    let r = probe_and_confirm(addr, &published).await;
    assert_eq!(r.verdict, EndpointVerdict::Mismatch);
    assert_eq!(r.confirmed, Some(true));
    assert_eq!(r.vantage.len(), 2, "{:?}", r.vantage);
    let spki = hex::encode(dane::spki_sha256(&attacker.0).unwrap());
    for v in &r.vantage {
        assert_eq!(v.transport, "direct");
        assert_eq!(v.exit, None, "direct has no exit");
        assert_eq!(v.spki_sha256, spki);
    }
}

#[tokio::test]
async fn a_mismatch_whose_second_probe_fails_stands_not_confirmed() {
    let (published, _) = key_and_cert();
    let attacker = key_and_cert();
    // The interceptor shows its key once, then drops the confirming probe.
    let addr = scripted_tls_server(vec![Some(attacker), None]).await;
    let r = probe_and_confirm(addr, &published).await;
    assert_eq!(r.verdict, EndpointVerdict::Mismatch, "still an alarm");
    assert_eq!(r.confirmed, Some(false));
    assert!(r.is_unconfirmed_mismatch());
    assert_eq!(r.vantage.len(), 1);
    assert!(
        r.notes
            .iter()
            .any(|n| n.starts_with("not confirmed: the second probe failed")),
        "{:?}",
        r.notes
    );
    let report = Report {
        domain: "example.org".into(),
        checked_at: String::new(),
        verdict: Report::overall(std::slice::from_ref(&r), false, false),
        endpoints: vec![r],
        records_to_add: vec![],
        advice: vec![],
        transport: "tor".into(),
        errors: vec![],
        bogus_rrsets: vec![],
        evidence: vec![],
        nxdomain: false,
        resolvers: vec![],
        horizons: Default::default(),
        rollover: vec![],
    };
    assert_eq!(report.verdict.exit_code(), 1);
    assert!(
        report.summary().contains("1 of them not confirmed"),
        "{}",
        report.summary()
    );
    assert!(report.to_text().contains("NOT CONFIRMED"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["endpoints"][0]["confirmed"], false);
}

#[tokio::test]
async fn a_mismatch_not_seen_again_gives_way_to_the_match() {
    let good = key_and_cert();
    let attacker = key_and_cert();
    let addr = scripted_tls_server(vec![Some(attacker), Some(good.clone())]).await;
    let r = probe_and_confirm(addr, &good.0).await;
    assert_eq!(r.verdict, EndpointVerdict::Match);
    assert_eq!(r.confirmed, None);
    assert_eq!(r.vantage.len(), 2, "both probes are listed");
    assert_ne!(r.vantage[0].spki_sha256, r.vantage[1].spki_sha256);
}

#[tokio::test]
async fn judging_runs_off_the_runtime_threads() {
    let (endpoint, probed) = endpoint_and_chain();
    let runtime_thread = std::thread::current().id();
    let report = judge_blocking(
        move |e, p, now| {
            assert_ne!(std::thread::current().id(), runtime_thread);
            judge(e, p, now)
        },
        &endpoint,
        &probed,
        SystemTime::now(),
    )
    .await;
    assert_eq!(report.verdict, EndpointVerdict::Match);
}

#[tokio::test]
async fn a_panicking_matcher_is_a_finding_not_a_crash() {
    let (endpoint, probed) = endpoint_and_chain();
    let report = judge_blocking(
        |_, _, _| panic!("matcher bug"),
        &endpoint,
        &probed,
        SystemTime::now(),
    )
    .await;
    // A chain we could not judge is not let through as ok, nor as silence.
    assert_eq!(report.verdict, EndpointVerdict::Mismatch);
    let error = report.error.unwrap();
    assert!(error.contains("the matcher panicked"), "{error}");
}

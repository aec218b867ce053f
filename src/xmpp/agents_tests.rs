//! The coordinator's side of the job protocol against hostile answers:
//! answers from a JID not listed or from another agent than the job's,
//! malformed and oversized answers, an agent leaving mid-job, and the
//! operators' notices (once each way).

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::Jid;

use super::*;
use crate::vantage::wire;
use crate::xmpp::{Outgoing, Stanza};

fn vantage(name: &str) -> VantageConfig {
    VantageConfig {
        name: name.into(),
        jid: format!("{name}@example.org"),
        weight: 1,
    }
}

/// Agents a and b, both online; the link's outgoing queue.
fn agents(away: Duration) -> (Arc<Agents>, mpsc::Receiver<Outgoing>) {
    let link = Arc::new(Link::default());
    let (tx, rx) = mpsc::channel(64);
    link.set(Some(tx));
    let me = Jid::new("certwatch.example.org").unwrap();
    let a = Arc::new(Agents::new(
        me,
        link,
        vec![vantage("a"), vantage("b")],
        away,
    ));
    for n in ["a", "b"] {
        a.on_presence(&full(n), true);
    }
    (a, rx)
}

fn full(name: &str) -> Jid {
    Jid::new(&format!("{name}@example.org/r1")).unwrap()
}

fn job() -> wire::Job {
    wire::Job {
        service: crate::vocab::Service::XmppClient,
        domain: "example.org".into(),
        host: "xmpp.example.org".into(),
        addr: "192.0.2.1:5222".parse().unwrap(),
        timeout: Duration::from_secs(2),
        avoid: vec![],
    }
}

/// Sends a job to `agent`; returns its future and the id it went out with.
async fn send(
    agents: &Arc<Agents>,
    rx: &mut mpsc::Receiver<Outgoing>,
    agent: &str,
) -> (tokio::task::JoinHandle<Remote>, String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let task = tokio::spawn(agents.probe(agent, job(), deadline));
    let Some(Outgoing::Stanza { stanza, .. }) = rx.recv().await else {
        panic!("no job sent")
    };
    let Stanza::Iq(Iq::Set { id, to, .. }) = *stanza else {
        panic!("not an IQ set")
    };
    assert_eq!(to, Some(full(agent)));
    (task, id)
}

fn seen(chain_len: usize) -> Element {
    seen_for(&job(), chain_len)
}

/// An agent's answer that names `job`'s endpoint.
fn seen_for(job: &wire::Job, chain_len: usize) -> Element {
    let c = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
    let der = c.cert.der().to_vec();
    wire::answer_element_for(
        job,
        &wire::Answer::Seen(wire::Sighting {
            transport: "direct".into(),
            exit: None,
            chain: vec![der; chain_len],
            version: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            millis: 3,
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn answers_from_strangers_and_other_agents_are_ignored() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let (task, id) = send(&agents, &mut rx, "a").await;
    // A JID not in the list, and agent b, answer a's job: both ignored.
    let mallory = Jid::new("mallory@example.org/x").unwrap();
    agents.on_answer(Some(&mallory), &id, Ok(Some(seen(1))));
    agents.on_answer(Some(&full("b")), &id, Ok(Some(seen(1))));
    agents.on_answer(None, &id, Ok(Some(seen(1))));
    assert!(!task.is_finished());
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "a stranger's answer was taken");
    // a's own answer is taken (its full JID may differ: the bare one counts).
    let other_resource = Jid::new("a@example.org/r2").unwrap();
    agents.on_answer(Some(&other_resource), &id, Ok(Some(seen(1))));
    let remote = task.await.unwrap();
    assert!(matches!(remote, Ok((Ok(_), _))), "{remote:?}");
}

#[tokio::test(start_paused = true)]
async fn an_answer_to_no_job_changes_nothing() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    // b answers a job it was never sent (a's id, before and after a's answer).
    agents.on_answer(Some(&full("b")), "job-1", Ok(Some(seen(1))));
    let (task, id) = send(&agents, &mut rx, "a").await;
    agents.on_answer(Some(&full("a")), &id, Ok(Some(seen(1))));
    assert!(task.await.unwrap().is_ok());
    agents.on_answer(Some(&full("b")), &id, Ok(Some(seen(1))));
    let states = agents.states();
    assert_eq!(states[1].1.answered + states[1].1.failed, 0, "{states:?}");
}

#[tokio::test(start_paused = true)]
async fn malformed_and_oversized_answers_are_the_agents_failure() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let bad = [
        Element::builder("seen", wire::NS).build(),
        Element::builder("nonsense", "urn:other").build(),
        seen(wire::MAX_CERTS + 1),
    ];
    for el in bad {
        let (task, id) = send(&agents, &mut rx, "a").await;
        agents.on_answer(Some(&full("a")), &id, Ok(Some(el)));
        let e = task.await.unwrap().unwrap_err();
        assert_eq!(e.agent, "a");
        assert!(e.why.contains("malformed"), "{e}");
    }
    // An empty result too.
    let (task, id) = send(&agents, &mut rx, "a").await;
    agents.on_answer(Some(&full("a")), &id, Ok(None));
    assert!(task.await.unwrap().is_err());
}

#[tokio::test(start_paused = true)]
async fn an_agent_leaving_mid_job_fails_it_at_once() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let (task, _) = send(&agents, &mut rx, "a").await;
    agents.on_presence(&full("a"), false);
    let e = tokio::time::timeout(Duration::from_millis(10), task)
        .await
        .expect("the job waited for its timeout")
        .unwrap()
        .unwrap_err();
    assert!(e.why.contains("went offline mid-job"), "{e}");
    assert_eq!(agents.available(), vec![("b".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn silence_is_the_agents_failure() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let (task, _) = send(&agents, &mut rx, "a").await;
    let e = task.await.unwrap().unwrap_err();
    assert!(e.why.contains("no answer"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn operators_hear_once_when_an_agent_is_away_and_once_when_back() {
    let (agents, _rx) = agents(Duration::from_secs(300));
    let (tx, mut notes) = mpsc::unbounded_channel();
    agents.notify(tx);
    agents.on_presence(&full("a"), false);
    let t0 = SystemTime::now();
    agents.sweep(t0 + Duration::from_secs(299));
    assert!(notes.try_recv().is_err(), "told before vantage_away");
    for s in [300, 301, 900] {
        agents.sweep(t0 + Duration::from_secs(s));
    }
    let n = notes.try_recv().unwrap();
    assert!(n.contains("Vantage agent a has been offline"), "{n}");
    assert!(notes.try_recv().is_err(), "told twice");
    agents.on_presence(&full("a"), true);
    agents.on_presence(&full("a"), true);
    assert!(notes.try_recv().unwrap().contains("a is back online"));
    assert!(notes.try_recv().is_err(), "told twice it is back");
}

#[tokio::test(start_paused = true)]
async fn operators_hear_once_when_an_agent_keeps_failing_and_once_when_it_answers() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let (tx, mut notes) = mpsc::unbounded_channel();
    agents.notify(tx);
    for _ in 0..FAILURES_FOR_NOTICE + 3 {
        let (task, _) = send(&agents, &mut rx, "a").await;
        assert!(task.await.unwrap().is_err());
    }
    assert!(notes.try_recv().unwrap().contains("keeps failing"));
    assert!(notes.try_recv().is_err(), "told twice");
    let (task, id) = send(&agents, &mut rx, "a").await;
    agents.on_answer(Some(&full("a")), &id, Ok(Some(seen(1))));
    assert!(task.await.unwrap().is_ok());
    assert!(notes.try_recv().unwrap().contains("answers again"));
}

#[tokio::test(start_paused = true)]
async fn a_job_dropped_before_its_answer_leaves_no_entry_and_counts_as_a_failure() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    // The check's deadline drops the probe first (as probe_at's timeout_at).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let probe = agents.probe("a", job(), deadline);
    let dropped = tokio::time::timeout(Duration::from_millis(100), probe).await;
    assert!(dropped.is_err(), "the job ended by itself");
    assert!(
        matches!(rx.try_recv(), Ok(Outgoing::Stanza { .. })),
        "no job sent"
    );
    assert_eq!(agents.pending.len(), 0, "the dropped job's entry stayed");
    assert_eq!(agents.states()[0].1.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_jobs_wait_ends_at_the_checks_deadline() {
    let (agents, _rx) = agents(Duration::from_secs(300));
    let t0 = tokio::time::Instant::now();
    let deadline = t0 + Duration::from_millis(500);
    let e = agents.probe("a", job(), deadline).await.unwrap_err();
    assert!(e.why.contains("by the check's deadline"), "{e}");
    assert_eq!(tokio::time::Instant::now(), deadline);
    assert_eq!(agents.pending.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_job_table_is_bounded_per_agent_and_in_all_and_full_is_ours() {
    use crate::vantage::Blame;
    let (agents, _rx) = agents(Duration::from_secs(300));
    let add = |agent: &str, id: String| {
        let (tx, _) = oneshot::channel();
        let entry = Entry {
            agent: agent.to_owned(),
            to: full(agent),
            tx,
        };
        agents.pending.add(&id, entry)
    };
    for i in 0..MAX_PENDING_PER_AGENT {
        add("a", format!("a{i}")).unwrap();
    }
    assert_eq!(add("a", "a-more".into()), Err(Full::Agent));
    // Agent a is busy: not its failure.
    let e = agents.probe("a", job(), far()).await.unwrap_err();
    assert_eq!(e.blame, Blame::Busy, "{e}");
    for i in MAX_PENDING_PER_AGENT..MAX_PENDING_JOBS {
        add(&format!("x{}", i % 64), format!("x{i}")).unwrap();
    }
    assert_eq!(add("b", "b-more".into()), Err(Full::All));
    // A full table is ours, not b's, and is never a failure of b.
    let e = agents.probe("b", job(), far()).await.unwrap_err();
    assert_eq!(e.blame, Blame::Ours, "{e}");
    assert_eq!(agents.states()[1].1.failed, 0);
}

fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(60)
}

#[tokio::test(start_paused = true)]
async fn an_answer_about_another_endpoint_is_the_agents_failure() {
    // A late answer to an old job (another endpoint) under this job's id.
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let (task, id) = send(&agents, &mut rx, "a").await;
    let old = wire::Job {
        addr: "192.0.2.99:5222".parse().unwrap(),
        ..job()
    };
    agents.on_answer(Some(&full("a")), &id, Ok(Some(seen_for(&old, 1))));
    let e = task.await.unwrap().unwrap_err();
    assert!(e.why.contains("address"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn job_ids_differ_across_restarts_and_are_not_small_numbers() {
    let (one, mut rx1) = agents(Duration::from_secs(300));
    let (two, mut rx2) = agents(Duration::from_secs(300));
    let (_t1, id1) = send(&one, &mut rx1, "a").await;
    let (_t2, id2) = send(&two, &mut rx2, "a").await;
    assert_ne!(id1, id2, "a restarted coordinator reuses job ids");
    let prefix = id1.strip_prefix("job-").unwrap().split('-').next().unwrap();
    assert_eq!(prefix.len(), 16, "{id1}");
}

#[tokio::test(start_paused = true)]
async fn a_busy_agent_is_not_failing() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let (tx, mut notes) = mpsc::unbounded_channel();
    agents.notify(tx);
    let busy = wire::Answer::Failed(wire::Failure {
        whose: wire::Whose::Busy,
        reason: "other".into(),
        text: "8 jobs running".into(),
    });
    for _ in 0..FAILURES_FOR_NOTICE + 2 {
        let (task, id) = send(&agents, &mut rx, "a").await;
        let el = wire::answer_element_for(&job(), &busy);
        agents.on_answer(Some(&full("a")), &id, Ok(Some(el)));
        let e = task.await.unwrap().unwrap_err();
        assert_eq!(e.blame, crate::vantage::Blame::Busy, "{e}");
    }
    let a = &agents.states()[0].1;
    assert_eq!((a.failed, a.failing), (0, 0), "{a:?}");
    assert!(
        notes.try_recv().is_err(),
        "a busy agent was reported failing"
    );
    assert!(agents.available().iter().any(|(n, _)| n == "a"));
}

#[tokio::test(start_paused = true)]
async fn an_agent_that_keeps_failing_rests_then_gets_one_job_again() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let picked = |agents: &Arc<Agents>| agents.available().iter().any(|(n, _)| n == "a");
    for _ in 0..FAILURES_FOR_NOTICE - 1 {
        let (task, _) = send(&agents, &mut rx, "a").await;
        assert!(task.await.unwrap().is_err());
    }
    assert!(picked(&agents), "rested before it kept failing");
    let (task, _) = send(&agents, &mut rx, "a").await;
    assert!(task.await.unwrap().is_err());
    assert!(!picked(&agents), "picked while it keeps failing");
    assert!(agents.describe()[0].1.contains("not picked for"));
    tokio::time::advance(COOL_DOWN_MIN).await;
    assert!(picked(&agents), "never picked again");
    // One more failure: a longer rest.
    let (task, _) = send(&agents, &mut rx, "a").await;
    assert!(task.await.unwrap().is_err());
    tokio::time::advance(COOL_DOWN_MIN).await;
    assert!(!picked(&agents));
    assert_eq!(cool_down(FAILURES_FOR_NOTICE + 1), COOL_DOWN_MIN * 2);
    assert_eq!(cool_down(100), COOL_DOWN_MAX);
    // It answers: picked at once, and again after that.
    tokio::time::advance(COOL_DOWN_MIN).await;
    let (task, id) = send(&agents, &mut rx, "a").await;
    agents.on_answer(Some(&full("a")), &id, Ok(Some(seen(1))));
    assert!(task.await.unwrap().is_ok());
    assert!(picked(&agents));
}

#[tokio::test(start_paused = true)]
async fn a_job_our_link_cannot_send_fails_at_once_as_ours() {
    let (agents, rx) = agents(Duration::from_secs(300));
    // The link's queue is gone (the link just closed).
    drop(rx);
    let t0 = tokio::time::Instant::now();
    let e = agents.probe("a", job(), far()).await.unwrap_err();
    assert_eq!(e.blame, crate::vantage::Blame::Ours, "{e}");
    assert!(e.why.contains("our link could not send the job"), "{e}");
    assert_eq!(tokio::time::Instant::now(), t0, "it waited");
    assert_eq!(agents.states()[0].1.failed, 0);
    assert_eq!(agents.pending.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn losing_our_link_ends_every_job_as_ours_and_takes_the_agents_offline() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let (ta, _) = send(&agents, &mut rx, "a").await;
    let (tb, _) = send(&agents, &mut rx, "b").await;
    agents.link_lost();
    for task in [ta, tb] {
        let e = tokio::time::timeout(Duration::from_millis(10), task)
            .await
            .expect("the job waited for its timeout")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.blame, crate::vantage::Blame::Ours, "{e}");
    }
    assert!(agents.available().is_empty());
    let states = agents.states();
    assert!(states.iter().all(|(_, s)| s.failed == 0), "{states:?}");
    // Back with the link: their presence makes them available again.
    agents.on_presence(&full("a"), true);
    assert_eq!(agents.available(), vec![("a".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn another_resource_leaving_does_not_end_the_jobs_of_the_one_online() {
    let (agents, mut rx) = agents(Duration::from_secs(300));
    let (task, id) = send(&agents, &mut rx, "a").await;
    // a@example.org/old (a stale session) goes away: a's job to r1 waits on.
    let old = Jid::new("a@example.org/old").unwrap();
    agents.on_presence(&old, false);
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "a job to r1 ended when /old left");
    agents.on_answer(Some(&full("a")), &id, Ok(Some(seen(1))));
    assert!(task.await.unwrap().is_ok());
}

//! Unit tests of the store.

use super::*;
use crate::model::Sink;
use crate::report::Verdict;

#[tokio::test]
async fn subscriptions_both_ways_and_monitoring_follows_them() {
    let s = Store::temporary().unwrap();
    assert!(s.subscribe("example.org", "alice@localhost").await.unwrap());
    assert!(!s.subscribe("example.org", "alice@localhost").await.unwrap());
    s.subscribe("example.org", "bob@localhost").await.unwrap();
    s.subscribe("example.net", "alice@localhost").await.unwrap();
    assert_eq!(
        s.subscribers("example.org").unwrap(),
        vec!["alice@localhost", "bob@localhost"]
    );
    assert_eq!(
        s.subscriptions_of("alice@localhost").unwrap(),
        vec!["example.net", "example.org"]
    );
    assert_eq!(s.monitored().unwrap(), vec!["example.net", "example.org"]);
    assert!(s
        .unsubscribe("example.net", "alice@localhost")
        .await
        .unwrap());
    assert!(!s
        .unsubscribe("example.net", "alice@localhost")
        .await
        .unwrap());
    assert_eq!(s.monitored().unwrap(), vec!["example.org"]);
    // A prefix of another domain must not leak into its scan.
    s.subscribe("example.org.uk", "carol@localhost")
        .await
        .unwrap();
    assert_eq!(s.subscribers("example.org").unwrap().len(), 2);
}

#[tokio::test]
async fn pubsub_subscriptions_of_one_bare_jid_only() {
    let s = Store::temporary().unwrap();
    s.pubsub_subscribe("a.org", "alice@x").await.unwrap();
    s.pubsub_subscribe("b.org", "alice@x/phone").await.unwrap();
    s.pubsub_subscribe("a.org", "alice@xy").await.unwrap();
    s.pubsub_subscribe("c.org", "bob@x").await.unwrap();
    assert_eq!(
        s.pubsub_subscriptions_of("alice@x", 10).unwrap(),
        vec![
            ("a.org".to_string(), "alice@x".to_string()),
            ("b.org".to_string(), "alice@x/phone".to_string())
        ]
    );
    assert_eq!(s.pubsub_subscriptions_of("alice@x", 1).unwrap().len(), 1);
    assert!(s.pubsub_subscriptions_of("carol@x", 10).unwrap().is_empty());
}

#[tokio::test]
async fn pubsub_subscriber_keeps_domain_monitored() {
    let s = Store::temporary().unwrap();
    s.subscribe("example.org", "alice@localhost").await.unwrap();
    s.pubsub_subscribe("example.org", "bob@localhost/res")
        .await
        .unwrap();
    s.unsubscribe("example.org", "alice@localhost")
        .await
        .unwrap();
    assert_eq!(s.monitored().unwrap(), vec!["example.org"]);
    s.pubsub_unsubscribe("example.org", "bob@localhost/res")
        .await
        .unwrap();
    assert!(s.monitored().unwrap().is_empty());
}

#[tokio::test]
async fn a_subscribe_racing_an_unsubscribe_never_leaves_a_follower_unmonitored() {
    let s = Store::temporary().unwrap();
    let mut lost = 0;
    for i in 0..300 {
        let d = format!("d{i}.example");
        s.subscribe(&d, "bob@x").await.unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (s1, s2) = (s.clone(), s.clone());
        let (b1, b2) = (barrier.clone(), barrier.clone());
        let (d1, d2) = (d.clone(), d.clone());
        let chat = std::thread::spawn(move || {
            b1.wait();
            if i % 2 == 0 {
                futures::executor::block_on(s1.subscribe(&d1, "alice@x")).unwrap();
            } else {
                futures::executor::block_on(s1.pubsub_subscribe(&d1, "alice@x/r")).unwrap();
            }
        });
        let gone = std::thread::spawn(move || {
            b2.wait();
            futures::executor::block_on(s2.unsubscribe(&d2, "bob@x")).unwrap();
        });
        chat.join().unwrap();
        gone.join().unwrap();
        if s.domain_state(&d).unwrap().is_none() {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "followed domains left unmonitored");
}

#[tokio::test]
async fn put_last_report_never_overwrites_a_committed_state() {
    let s = Store::temporary().unwrap();
    s.subscribe("example.org", "alice@x").await.unwrap();
    let report = Report {
        domain: "example.org".into(),
        checked_at: "2026-12-03T00:00:00Z".into(),
        verdict: Verdict::Ok,
        endpoints: vec![],
        records_to_add: vec![],
        advice: vec![],
        transport: "direct".into(),
        errors: vec![],
        bogus_rrsets: vec![],
        evidence: vec![],
        nxdomain: false,
        resolvers: vec![],
        horizons: Default::default(),
        rollover: vec![],
    };
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for n in 1..=2000u32 {
                let state = DomainState {
                    unreachable_streak: n,
                    ..DomainState::default()
                };
                futures::executor::block_on(s.commit_check("example.org", &state, &[], &[]))
                    .unwrap();
            }
        })
    };
    while !writer.is_finished() {
        s.put_last_report("example.org", &report).await.unwrap();
    }
    writer.join().unwrap();
    s.put_last_report("example.org", &report).await.unwrap();
    let state = s.domain_state("example.org").unwrap().unwrap();
    assert_eq!(
        state.unreachable_streak, 2000,
        "a committed state was overwritten"
    );
    assert!(state.last_report.is_some());
}

#[tokio::test]
async fn evidence_is_kept_newest_first_bounded_and_forgotten_with_the_domain() {
    let s = Store::temporary().unwrap();
    s.subscribe("example.org", "alice@x").await.unwrap();
    s.subscribe("example.org.uk", "alice@x").await.unwrap();
    let record = |n: usize| EvidenceRecord {
        alert_id: format!("a{n}"),
        title: "t".into(),
        items: vec![crate::report::Evidence {
            chain_pem: "-----BEGIN CERTIFICATE-----".into(),
            ..Default::default()
        }],
    };
    for n in 0..(MAX_EVIDENCE + 3) {
        s.put_evidence("example.org", &record(n)).await.unwrap();
    }
    s.put_evidence("example.org.uk", &record(99)).await.unwrap();
    let kept = s.evidence("example.org").unwrap();
    assert_eq!(kept.len(), MAX_EVIDENCE);
    assert_eq!(
        kept[0].alert_id,
        format!("a{}", MAX_EVIDENCE + 2),
        "newest first"
    );
    s.unsubscribe("example.org", "alice@x").await.unwrap();
    assert!(s.evidence("example.org").unwrap().is_empty());
    assert_eq!(
        s.evidence("example.org.uk").unwrap().len(),
        1,
        "not a prefix match"
    );
}

#[tokio::test]
async fn attempts_are_counted_and_dead_letters_leave_the_queue() {
    let s = Store::temporary().unwrap();
    let d = |id: &str| Delivery {
        alert_id: id.into(),
        sink: Sink::Chat("alice@localhost".into()),
        title: "t".into(),
        content: "c".into(),
        updated: "2026-12-03T00:00:00Z".into(),
        attempts: 0,
    };
    s.enqueue(&[d("stuck"), d("next")]).await.unwrap();
    let pending = s.pending().unwrap();
    let (stuck, next) = (pending[0].0, pending[1].0);
    for n in 1..=3 {
        let got = s.note_attempt(stuck).await.unwrap().unwrap();
        assert_eq!(got.attempts, n);
    }
    assert_eq!(
        s.pending().unwrap()[0].1.attempts,
        3,
        "stored, not only returned"
    );
    s.dead_letter(stuck).await.unwrap();
    let left: Vec<String> = s
        .pending()
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.alert_id)
        .collect();
    assert_eq!(left, vec!["next"], "the queue goes on behind it");
    let dead = s.dead_letters().unwrap();
    assert_eq!(
        (dead.len(), dead[0].alert_id.as_str(), dead[0].attempts),
        (1, "stuck", 3)
    );
    // Gone from the queue: no more attempts, no second dead letter.
    assert!(s.note_attempt(stuck).await.unwrap().is_none());
    s.dead_letter(stuck).await.unwrap();
    assert_eq!(s.dead_letters().unwrap().len(), 1);
    s.mark_sent(next).await.unwrap();
    assert!(s.note_attempt(next).await.unwrap().is_none());
    // Bounded.
    for i in 0..(MAX_DEAD_LETTERS + 3) {
        s.enqueue(&[d(&format!("d{i}"))]).await.unwrap();
        let id = s.pending().unwrap()[0].0;
        s.dead_letter(id).await.unwrap();
    }
    let dead = s.dead_letters().unwrap();
    assert_eq!(dead.len(), MAX_DEAD_LETTERS);
    assert_eq!(
        dead.last().unwrap().alert_id,
        format!("d{}", MAX_DEAD_LETTERS + 2)
    );
}

#[tokio::test]
async fn commit_check_writes_state_and_outbox_together() {
    let s = Store::temporary().unwrap();
    let d = Delivery {
        alert_id: "a1".into(),
        sink: Sink::Chat("alice@localhost".into()),
        title: "t".into(),
        content: "c".into(),
        updated: "2026-11-22T12:00:00Z".into(),
        attempts: 0,
    };
    let state = DomainState {
        state: Some(Verdict::Mismatch),
        ..DomainState::default()
    };
    let item = Item {
        id: "a1".into(),
        title: "t".into(),
        content: "c".into(),
        updated: "u".into(),
    };
    // Not monitored: nothing is written.
    assert!(!s
        .commit_check(
            "example.org",
            &state,
            std::slice::from_ref(&item),
            std::slice::from_ref(&d)
        )
        .await
        .unwrap());
    assert!(s.pending().unwrap().is_empty());
    assert!(s.items("example.org", 10).unwrap().is_empty());
    s.monitor("example.org").await.unwrap();
    assert!(s
        .commit_check(
            "example.org",
            &state,
            std::slice::from_ref(&item),
            std::slice::from_ref(&d)
        )
        .await
        .unwrap());
    assert_eq!(s.items("example.org", 10).unwrap(), vec![item.clone()]);
    let pending = s.pending().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].1, d);
    assert_eq!(
        s.domain_state("example.org").unwrap().unwrap().state,
        Some(Verdict::Mismatch)
    );
    // An alert and a warning in one check: both items, in order, and
    // their deliveries queued alert first.
    let warning = Item {
        id: "w1".into(),
        ..item.clone()
    };
    let alarm = Item {
        id: "a2".into(),
        ..item.clone()
    };
    let dw = Delivery {
        alert_id: "w1".into(),
        ..d.clone()
    };
    let da = Delivery {
        alert_id: "a2".into(),
        ..d.clone()
    };
    assert!(s
        .commit_check(
            "example.org",
            &state,
            &[alarm.clone(), warning.clone()],
            &[da.clone(), dw.clone()]
        )
        .await
        .unwrap());
    // Newest first.
    assert_eq!(s.items("example.org", 2).unwrap(), vec![warning, alarm]);
    let ids: Vec<String> = s
        .pending()
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.alert_id)
        .collect();
    assert_eq!(ids, ["a1", "a2", "w1"]);
}

#[tokio::test]
async fn items_are_idempotent_newest_first_and_bounded() {
    let s = Store::temporary().unwrap();
    for i in 0..(MAX_ITEMS + 5) {
        let item = Item {
            id: format!("i{i}"),
            title: "t".into(),
            content: "c".into(),
            updated: "u".into(),
        };
        assert!(s.put_item("example.org", &item).await.unwrap());
        assert!(!s.put_item("example.org", &item).await.unwrap());
    }
    let items = s.items("example.org", usize::MAX).unwrap();
    assert_eq!(items.len(), MAX_ITEMS);
    assert_eq!(items[0].id, format!("i{}", MAX_ITEMS + 4));
    assert!(s.items("example.net", 10).unwrap().is_empty());
}

#[tokio::test]
async fn survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.subscribe("example.org", "alice@localhost").await.unwrap();
        s.flush().await.unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.subscriptions_of("alice@localhost").unwrap(),
        vec!["example.org"]
    );
}

#[tokio::test]
async fn membership_changes_bump_the_generation_and_checked_times_follow_it() {
    let s = Store::temporary().unwrap();
    let g0 = s.membership_generation();
    s.subscribe("example.org", "alice@localhost").await.unwrap();
    let g1 = s.membership_generation();
    assert_ne!(g0, g1, "a new domain");
    s.subscribe("example.org", "bob@localhost").await.unwrap();
    assert_eq!(
        s.membership_generation(),
        g1,
        "a new subscriber of a known domain"
    );
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
    s.note_checked("example.org", at).await.unwrap();
    assert_eq!(s.last_checked("example.org").unwrap(), Some(at));
    s.note_checked("other.org", at).await.unwrap();
    assert_eq!(s.last_checked("other.org").unwrap(), None, "not monitored");
    s.unsubscribe("example.org", "alice@localhost")
        .await
        .unwrap();
    assert_eq!(s.membership_generation(), g1, "still followed by bob");
    s.unsubscribe("example.org", "bob@localhost").await.unwrap();
    assert_ne!(s.membership_generation(), g1, "no longer monitored");
    assert_eq!(
        s.last_checked("example.org").unwrap(),
        None,
        "forgotten with it"
    );
    let g2 = s.membership_generation();
    s.pubsub_subscribe("example.net", "carol@localhost")
        .await
        .unwrap();
    assert_ne!(s.membership_generation(), g2, "PubSub counts too");
}

/// The load that deadlocked sled 0.34 (transactions and flushes from many
/// threads at once): subscribes, PubSub subscribes, unsubscribes and
/// commits racing on a multi-threaded runtime. Every write must be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_from_many_tasks_are_all_answered() {
    let s = Store::temporary().unwrap();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let d = format!("d{}.example", i % 10);
                let jid = format!("u{t}@x");
                match (t + i) % 4 {
                    0 => drop(s.subscribe(&d, &jid).await.unwrap()),
                    1 => drop(
                        s.pubsub_subscribe(&d, &format!("{jid}/r{i}"))
                            .await
                            .unwrap(),
                    ),
                    2 => drop(s.unsubscribe(&d, &jid).await.unwrap()),
                    _ => drop(
                        s.commit_check(&d, &DomainState::default(), &[], &[])
                            .await
                            .unwrap(),
                    ),
                }
            }
        }));
    }
    let all = futures::future::join_all(tasks);
    tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("every write answered within a minute")
        .into_iter()
        .for_each(|r| r.unwrap());
    let p = s.progress().snapshot();
    assert_eq!(p.jobs, 32 * 40, "every write went through the owner");
    assert_eq!(p.waiting, 0);
    assert!(
        p.batches < p.jobs,
        "writes in flight together share a flush ({} batches for {} writes)",
        p.batches,
        p.jobs
    );
}

#[tokio::test]
async fn a_staged_write_is_visible_before_it_is_flushed_and_flushed_after() {
    let s = Store::temporary().unwrap();
    let (fresh, durable) = s.subscribe_staged("a.org", "alice@x").await.unwrap();
    assert!(fresh);
    assert_eq!(s.subscribers("a.org").unwrap(), vec!["alice@x"], "applied");
    durable.flushed().await.unwrap();
    let (fresh, durable) = s.pubsub_subscribe_staged("a.org", "bob@x/r").await.unwrap();
    assert!(fresh);
    durable.flushed().await.unwrap();
    assert_eq!(s.pubsub_subscribers("a.org").unwrap(), vec!["bob@x/r"]);
}

#[tokio::test]
async fn a_write_that_panics_leaves_the_owner_working() {
    let s = Store::temporary().unwrap();
    let err = s
        .owner
        .write(|_| -> Result<(), StoreError> { panic!("boom") })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("panicked"), "{err}");
    assert!(
        s.subscribe("a.org", "alice@x").await.unwrap(),
        "still writes"
    );
}

#[tokio::test]
async fn writes_queued_without_waiting_are_applied_in_order() {
    let s = Store::temporary().unwrap();
    for n in 0..100u32 {
        s.put_meta_now("n", &n).unwrap();
    }
    s.flush().await.unwrap();
    assert_eq!(s.meta::<u32>("n").unwrap(), Some(99), "the last one wins");
}

#[test]
fn a_stall_is_seen_only_with_work_waiting_or_a_batch_in_hand() {
    let snap = |waiting, phase, secs, batches| Snapshot {
        waiting,
        phase,
        phase_for: std::time::Duration::from_secs(secs),
        batches,
        jobs: 0,
        failed_flushes: 0,
    };
    let limit = std::time::Duration::from_secs(30);
    assert!(
        snap(0, Phase::Flushing, 30, 0).stalled(limit),
        "a flush that never ends"
    );
    assert!(!snap(0, Phase::Applying, 1, 0).stalled(limit));
    // An owner idle for an hour that is sent a write now is not stalled:
    // the wait is measured from when writes were first seen waiting.
    assert!(!snap(1, Phase::Idle, 3600, 5).stalled(limit));
    let t0 = std::time::Instant::now();
    let secs = std::time::Duration::from_secs;
    let mut idle = IdleWatch::default();
    assert_eq!(idle.look(&snap(1, Phase::Idle, 3600, 5), t0), Some(secs(0)));
    assert_eq!(
        idle.look(&snap(1, Phase::Idle, 3601, 5), t0 + secs(31)),
        Some(secs(31)),
        "waiting 31 s with no batch done"
    );
    // A batch done meanwhile starts the count again; nothing waiting ends it.
    assert_eq!(
        idle.look(&snap(2, Phase::Idle, 1, 6), t0 + secs(40)),
        Some(secs(0))
    );
    assert_eq!(idle.look(&snap(0, Phase::Idle, 2, 6), t0 + secs(80)), None);
    assert_eq!(
        idle.look(&snap(1, Phase::Idle, 3, 6), t0 + secs(81)),
        Some(secs(0))
    );
}

/// A write whose caller gives up before the queue took it (a timeout, a
/// dropped request) is not left counted as waiting: the watchdog would take
/// it for a stall at the next quiet spell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_given_up_before_it_was_queued_is_not_counted_as_waiting() {
    let s = Store::temporary().unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    let held = std::sync::Mutex::new(held);
    // The owner busy inside one write, so the queue fills up behind it.
    s.owner
        .submit("a write that waits", move |_| {
            let _ = held.lock().unwrap().recv();
            Ok(())
        })
        .unwrap();
    while s.progress().snapshot().phase != Phase::Applying {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    for n in 0..owner::QUEUE {
        s.put_meta_now("n", &n).unwrap();
    }
    let given_up =
        tokio::time::timeout(std::time::Duration::from_millis(50), s.put_meta("late", &1)).await;
    assert!(
        given_up.is_err(),
        "the queue was full: the send was pending"
    );
    assert_eq!(
        s.progress().snapshot().waiting,
        owner::QUEUE,
        "only the queued ones"
    );
    release.send(()).unwrap();
    s.flush().await.unwrap();
    assert_eq!(s.progress().snapshot().waiting, 0);
    assert_eq!(s.meta::<u32>("late").unwrap(), None, "it was never written");
}

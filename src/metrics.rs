//! The service's counters and gauges, in memory, for `GET /metrics`
//! (Prometheus text format, names `certwatch_<thing>_<unit>`).
//!
//! Checks are counted where they finish (the engine bumps [`Metrics`]);
//! what the store holds (domains, subscriptions, outbox) is refreshed by
//! a timer, never by a scrape, so a scrape costs the same with 100,000
//! domains as with ten.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::report::Report;

/// Label sets: a few fixed keys with short values.
type Labels = Vec<(&'static str, String)>;

/// Every metric of the service, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Domains monitored.
    pub domains: Gauge,
    /// Subscriptions by kind (chat, pubsub).
    pub subscriptions: Family<Labels, Gauge>,
    checks: Family<Labels, Counter>,
    check_duration: Histogram,
    probe_duration: Histogram,
    probes: Family<Labels, Counter>,
    /// Alerts written to the XMPP stream.
    pub alerts_sent: Counter,
    /// Deliveries given up (kept as dead letters).
    pub dead_letters: Gauge,
    /// Deliveries waiting in the outbox.
    pub outbox_depth: Gauge,
    /// How late the monitor started its last due check.
    pub scheduler_lag: Gauge<f64, AtomicU64>,
    circuits: Counter,
    self_watch: Family<Labels, Gauge>,
    self_watch_failures: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric at zero.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("certwatch"),
            domains: Gauge::default(),
            subscriptions: Family::default(),
            checks: Family::default(),
            // 0.25 s to about 17 min: a check waits for probes of up to a minute each.
            check_duration: Histogram::new([
                0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 1000.0,
            ]),
            // 10 ms to 2 min: a probe is a connection, STARTTLS and a handshake.
            probe_duration: Histogram::new([
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
            probes: Family::default(),
            alerts_sent: Counter::default(),
            dead_letters: Gauge::default(),
            outbox_depth: Gauge::default(),
            scheduler_lag: Gauge::default(),
            circuits: Counter::default(),
            self_watch: Family::default(),
            self_watch_failures: Family::default(),
        };
        m.register();
        // Every family shows its series at zero from the start, so a rate
        // over the first check is not lost.
        for kind in ["chat", "pubsub"] {
            let _ = m.subscriptions.get_or_create(&vec![("kind", kind.into())]);
        }
        for verdict in [
            "ok",
            "mismatch",
            "bogus",
            "insecure",
            "no_tlsa",
            "unreachable",
        ] {
            let _ = m.checks.get_or_create(&vec![("verdict", verdict.into())]);
        }
        m
    }

    /// Puts every metric (a shared handle to it) in the registry.
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "domains_monitored",
            "Domains monitored",
            self.domains.clone(),
        );
        r.register(
            "subscriptions",
            "Subscriptions, by kind (chat or pubsub)",
            self.subscriptions.clone(),
        );
        r.register("checks", "Checks finished, by verdict", self.checks.clone());
        r.register_with_unit(
            "check_duration",
            "Time one check took, lookups and probes included",
            Unit::Seconds,
            self.check_duration.clone(),
        );
        r.register_with_unit(
            "probe_duration",
            "Time one probe took: connection, STARTTLS or direct TLS, handshake",
            Unit::Seconds,
            self.probe_duration.clone(),
        );
        r.register(
            "probes",
            "Endpoints checked, by outcome (the endpoint's verdict) and transport",
            self.probes.clone(),
        );
        r.register(
            "alerts_sent",
            "Alerts written to the XMPP stream",
            self.alerts_sent.clone(),
        );
        r.register(
            "dead_letters",
            "Alerts given up after repeated failures, kept as dead letters",
            self.dead_letters.clone(),
        );
        r.register(
            "outbox_depth",
            "Alerts waiting to be delivered",
            self.outbox_depth.clone(),
        );
        r.register_with_unit(
            "scheduler_lag",
            "How late the monitor started its last due check",
            Unit::Seconds,
            self.scheduler_lag.clone(),
        );
        r.register(
            "circuits_taken",
            "Fresh Tor circuits asked for (one per probe over Tor or SOCKS5)",
            self.circuits.clone(),
        );
        r.register(
            "self_watch_failing",
            "1 while a part of CertWatch fails (operators alerted), by cause",
            self.self_watch.clone(),
        );
        r.register(
            "self_watch_failures",
            "Checks in a row that a part of CertWatch failed, by cause",
            self.self_watch_failures.clone(),
        );
        r.register(
            "build",
            "The running CertWatch",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
    }

    /// Counts a finished check: its verdict, its duration, each endpoint.
    pub fn check_done(&self, report: &Report, took: Duration, probes: &[Duration]) {
        for p in probes {
            self.probe_duration.observe(p.as_secs_f64());
        }
        self.checks
            .get_or_create(&vec![("verdict", report.verdict.as_str().into())])
            .inc();
        self.check_duration.observe(took.as_secs_f64());
        for e in &report.endpoints {
            let labels = vec![
                ("outcome", outcome(e.verdict)),
                ("transport", report.transport.clone()),
            ];
            self.probes.get_or_create(&labels).inc();
        }
    }

    /// Checks counted so far with `verdict`.
    pub fn checks(&self, verdict: &str) -> u64 {
        self.checks
            .get_or_create(&vec![("verdict", verdict.into())])
            .get()
    }

    /// Sets the circuits counter to the transport's own count.
    pub fn set_circuits(&self, taken: u64) {
        let now = self.circuits.get();
        if taken > now {
            self.circuits.inc_by(taken - now);
        }
    }

    /// Sets one self-watch cause's state.
    pub fn set_self_watch(&self, cause: &'static str, alerted: bool, failures: u32) {
        let labels = vec![("cause", cause.to_owned())];
        self.self_watch
            .get_or_create(&labels)
            .set(i64::from(alerted));
        self.self_watch_failures
            .get_or_create(&labels)
            .set(i64::from(failures));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// An endpoint verdict as JSON spells it (`match`, `no_tlsa`, …).
fn outcome(v: crate::report::EndpointVerdict) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Verdict;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = Metrics::new();
        let report = Report {
            domain: "example.org".into(),
            checked_at: "2026-01-01T00:00:00Z".into(),
            verdict: Verdict::Mismatch,
            endpoints: vec![],
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
        m.check_done(
            &report,
            Duration::from_millis(1500),
            &[Duration::from_millis(250)],
        );
        m.set_self_watch("dns", true, 4);
        let text = m.encode();
        for want in [
            "certwatch_checks_total{verdict=\"mismatch\"} 1",
            "certwatch_checks_total{verdict=\"ok\"} 0",
            "certwatch_check_duration_seconds_count 1",
            "certwatch_probe_duration_seconds_count 1",
            "certwatch_probe_duration_seconds_bucket{le=\"0.25\"} 1",
            "certwatch_domains_monitored 0",
            "certwatch_subscriptions{kind=\"pubsub\"} 0",
            "certwatch_self_watch_failing{cause=\"dns\"} 1",
            "certwatch_build_info{version=",
            "# TYPE certwatch_alerts_sent counter",
        ] {
            assert!(text.contains(want), "{want} missing from\n{text}");
        }
        assert_eq!(m.checks("mismatch"), 1);
    }
}

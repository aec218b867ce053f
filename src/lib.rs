//! CertWatch: catches machine-in-the-middle attacks on XMPP servers by
//! comparing the key a server presents (probed over Tor) with its
//! DNSSEC-signed DANE TLSA records.
//!
//! Map of the crate. Each line may use only the lines below it
//! (`scripts/check-layers.py` enforces this in CI; docs/architecture.md
//! draws it):
//!
//! - [`cli`]: the command line, exit codes
//! - [`serve`]: process start-up of `serve` (store, engine, monitor, front);
//!   [`watchdog`]: ends a `serve` that stopped making progress
//! - [`xmpp`]: the XEP-0114 front (stanzas in and out, PubSub, XEP-0050
//!   ad-hoc commands, delivery); [`web`]: the HTTP front (pages, JSON,
//!   Atom, badge, metrics, health); [`agent`]: `certwatch agent`, a
//!   probe-only XMPP client that probes for a coordinator
//! - [`commands`]: the commands, each defined once for chat, ad-hoc and web;
//!   [`monitor`]: the schedule that drives checks
//! - [`engine`]: the running service's core (checker, limits, self-watch)
//! - [`setup`]: resolver, transport and prober built from the config
//! - [`check`]: one check of a domain; [`store`]: sled
//! - [`judge`]: an endpoint's verdict from DNS and probe observations (pure);
//!   [`vantage`]: places to probe from other than our own (agents), and the
//!   job protocol they speak
//! - [`dns`]: SRV, A/AAAA, TLSA with DNSSEC proofs; [`probe`]: transport
//!   (Tor, SOCKS5, direct) → STARTTLS or direct TLS → the presented chain
//! - [`warning`]: expiry and rollover warnings beside the alerts (pure)
//! - [`advice`]: what to publish; [`alert`]: state changes worth telling (pure)
//! - [`dane`]: TLSA records and matching a chain against them (pure)
//! - [`model`]: what the store keeps (domain state, alerts, deliveries, items);
//!   [`render`]: how a report reads in chat (replies, status, alert lines);
//!   [`metrics`]: counters and gauges in memory
//! - [`report`]: the result of a check (JSON, text, verdicts); [`horizon`]:
//!   when the signatures and certificates it rests on run out; [`rollover`]:
//!   TLSA records against the keys presented over time, DS records against
//!   a zone's KSKs (key rollovers)
//! - [`vocab`]: the shared words (service, role, TLS mode); [`error`]: whose
//!   problem a failure is; [`clock`]: wall time, handed in; [`config`]: the
//!   TOML file; [`domain`]: input validation; [`netpolicy`]: which
//!   addresses may be probed; [`admission`]: the chat checks' queue, bounded
//!   per JID and in all

pub mod admission;
pub mod advice;
pub mod agent;
pub mod alert;
pub mod check;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod crashpoint;
pub mod dane;
pub mod dns;
pub mod domain;
pub mod engine;
pub mod error;
pub mod horizon;
pub mod judge;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod netpolicy;
pub mod probe;
pub mod render;
pub mod report;
pub mod rollover;
pub mod selfwatch;
pub mod serve;
pub mod setup;
pub mod store;
pub mod vantage;
pub mod vocab;
pub mod warning;
pub mod watchdog;
pub mod web;
pub mod xmpp;

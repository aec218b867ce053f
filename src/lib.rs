//! CertWatch: catches machine-in-the-middle attacks on XMPP servers by
//! comparing the key a server presents (probed over Tor) with its
//! DNSSEC-signed DANE TLSA records.
//!
//! Map of the crate, in the order data flows:
//!
//! - [`xmpp`]: the XEP-0114 component (stanzas in and out, PubSub, delivery)
//! - [`commands`]: chat commands, one variant each
//! - [`engine`]: the running service's shared core (store, checker, limits)
//! - [`monitor`]: the schedule; [`alert`]: state changes worth telling
//! - [`check`]: one check of a domain, built from
//!   - [`dns`]: SRV, A/AAAA, TLSA with the DNSSEC proof of each answer
//!   - [`probe`]: transport (Tor, SOCKS5, direct) → STARTTLS or direct TLS → chain
//!   - [`dane`]: matching a chain against TLSA records (pure)
//!   - [`judge`]: an endpoint's verdict (pure); [`advice`]: what to publish (pure)
//! - [`report`]: the result (JSON of the contract, text, exit codes)
//! - [`store`]: sled; [`config`]: the TOML file; [`domain`]: input validation;
//!   [`cli`]: the command line

pub mod advice;
pub mod alert;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dane;
pub mod dns;
pub mod domain;
pub mod engine;
pub mod judge;
pub mod monitor;
pub mod probe;
pub mod report;
pub mod store;
pub mod xmpp;

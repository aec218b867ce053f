//! Connections that ask the upstream resolver not to validate (the CD bit,
//! RFC 4035 §3.2.2), so that we see the data and validate it ourselves.
//!
//! hickory's validator sends every query with CD=0. Behind a validating
//! resolver (unbound, systemd-resolved with DNSSEC, the big public ones)
//! bogus data then never reaches us: the resolver answers SERVFAIL, and a
//! forged or broken signature looks like an unreachable resolver. Placed
//! beneath the validator, this handle sets CD=1 on every query, the
//! validator's own DNSKEY and DS queries included.
//!
//! The validator also fetches a zone's DNSKEY (and DS) RRset anew for every
//! RRset it checks, beneath the resolver's answer cache: one check of one
//! domain asked for the same DNSKEY about six times. A [`KeyCache`] here
//! shares one fetch among all of them, in flight and for the RRset's TTL
//! (clamped, see [`KEY_TTL`]). What it keeps is the raw answer, validated
//! again by every user, so a cached key is never trusted for being cached.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{self, BoxStream, StreamExt};
use hickory_resolver::config::ConnectionConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsHandle, NetError};
use hickory_resolver::proto::op::{DnsRequest, DnsResponse};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{ConnectionProvider, PoolContext};

/// How long a DNSKEY or DS answer is shared: its TTL, but at least long
/// enough to cover one check and never longer than five minutes.
pub const KEY_TTL: RangeInclusive<Duration> = Duration::from_secs(30)..=Duration::from_secs(300);

/// Most answers the key cache holds; past it, expired ones go, then all.
const KEY_CACHE_ENTRIES: usize = 10_000;

/// An answer being fetched or fetched, shared by everyone who asks.
type SharedAnswer = Shared<BoxFuture<'static, Result<DnsResponse, NetError>>>;

/// DNSKEY and DS answers shared among the validator's many asks (one fetch
/// per zone and type), in flight and for [`KEY_TTL`].
#[derive(Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<(Name, RecordType), (Instant, SharedAnswer)>>,
    fetches: AtomicUsize,
    asks: AtomicUsize,
}

impl KeyCache {
    /// How many DNSKEY and DS queries went upstream (for tests and benchmarks).
    pub fn fetches(&self) -> usize {
        self.fetches.load(Relaxed)
    }

    /// How many DNSKEY and DS queries the validator made (each would have
    /// gone upstream without this cache).
    pub fn asks(&self) -> usize {
        self.asks.load(Relaxed)
    }

    /// How many distinct (name, type) pairs were asked for.
    pub fn distinct(&self) -> usize {
        self.entries.lock().expect("key cache lock").len()
    }

    /// The shared answer for `key`, fetching it with `fetch` when there is
    /// none usable: an error or an expired answer is fetched again.
    fn get_or_fetch(
        &self,
        key: (Name, RecordType),
        fetch: impl FnOnce() -> BoxFuture<'static, Result<DnsResponse, NetError>>,
    ) -> SharedAnswer {
        self.asks.fetch_add(1, Relaxed);
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("key cache lock");
        if let Some((started, answer)) = entries.get(&key) {
            let usable = match answer.peek() {
                // In flight: join it, unless it is older than any query lives.
                None => now.duration_since(*started) < *KEY_TTL.start(),
                Some(Ok(response)) => now.duration_since(*started) < shared_for(response),
                Some(Err(_)) => false,
            };
            if usable {
                return answer.clone();
            }
        }
        if entries.len() >= KEY_CACHE_ENTRIES {
            entries.retain(|_, (started, answer)| match answer.peek() {
                Some(Ok(r)) => now.duration_since(*started) < shared_for(r),
                _ => false,
            });
            if entries.len() >= KEY_CACHE_ENTRIES {
                entries.clear();
            }
        }
        self.fetches.fetch_add(1, Relaxed);
        let answer = fetch().shared();
        entries.insert(key, (now, answer.clone()));
        answer
    }
}

/// How long an answer may be shared: its smallest TTL, within [`KEY_TTL`].
fn shared_for(response: &DnsResponse) -> Duration {
    let ttl = response.answers.iter().map(|r| r.ttl).min().unwrap_or(0);
    Duration::from_secs(ttl.into()).clamp(*KEY_TTL.start(), *KEY_TTL.end())
}

/// Tokio connections whose queries all carry CD=1; with a [`KeyCache`],
/// DNSKEY and DS answers are shared among the connections.
#[derive(Clone, Default)]
pub struct CdProvider {
    runtime: TokioRuntimeProvider,
    keys: Option<Arc<KeyCache>>,
}

impl CdProvider {
    /// Connections that share DNSKEY and DS answers through `keys`.
    pub fn with_key_cache(keys: Arc<KeyCache>) -> CdProvider {
        CdProvider {
            runtime: TokioRuntimeProvider::default(),
            keys: Some(keys),
        }
    }
}

impl ConnectionProvider for CdProvider {
    type Conn = CdHandle<<TokioRuntimeProvider as ConnectionProvider>::Conn>;
    type FutureConn = Pin<Box<dyn Future<Output = Result<Self::Conn, NetError>> + Send + 'static>>;
    type RuntimeProvider = TokioRuntimeProvider;

    fn new_connection(
        &self,
        ip: IpAddr,
        config: &ConnectionConfig,
        cx: &PoolContext,
    ) -> Result<Self::FutureConn, NetError> {
        let connecting = ConnectionProvider::new_connection(&self.runtime, ip, config, cx)?;
        let keys = self.keys.clone();
        Ok(Box::pin(async move {
            connecting.await.map(|inner| CdHandle { inner, keys })
        }))
    }

    fn runtime_provider(&self) -> &TokioRuntimeProvider {
        &self.runtime
    }
}

/// A connection that sets CD=1 on every query it sends.
#[derive(Clone)]
pub struct CdHandle<H> {
    inner: H,
    keys: Option<Arc<KeyCache>>,
}

impl<H: DnsHandle> DnsHandle for CdHandle<H> {
    type Response = BoxStream<'static, Result<DnsResponse, NetError>>;
    type Runtime = H::Runtime;

    fn is_using_edns(&self) -> bool {
        self.inner.is_using_edns()
    }

    fn send(&self, mut request: DnsRequest) -> Self::Response {
        request.metadata.checking_disabled = true;
        let key = match (&self.keys, request.queries.as_slice()) {
            (Some(keys), [q]) if matches!(q.query_type(), RecordType::DNSKEY | RecordType::DS) => {
                Some((keys, (q.name().to_lowercase(), q.query_type())))
            }
            _ => None,
        };
        let Some((keys, key)) = key else {
            return self.inner.send(request).boxed();
        };
        let inner = self.inner.clone();
        let answer = keys.get_or_fetch(key, move || {
            async move {
                match inner.send(request).next().await {
                    Some(result) => result,
                    None => Err(NetError::from("no response")),
                }
            }
            .boxed()
        });
        stream::once(answer).boxed()
    }
}

//! Connections that ask the upstream resolver not to validate (the CD bit,
//! RFC 4035 §3.2.2), so that we see the data and validate it ourselves.
//!
//! hickory's validator sends every query with CD=0. Behind a validating
//! resolver (unbound, systemd-resolved with DNSSEC, the big public ones)
//! bogus data then never reaches us: the resolver answers SERVFAIL, and a
//! forged or broken signature looks like an unreachable resolver. Placed
//! beneath the validator, this handle sets CD=1 on every query, the
//! validator's own DNSKEY and DS queries included.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use hickory_resolver::config::ConnectionConfig;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsHandle, NetError};
use hickory_resolver::proto::op::DnsRequest;
use hickory_resolver::{ConnectionProvider, PoolContext};

/// Tokio connections whose queries all carry CD=1.
#[derive(Clone, Default)]
pub struct CdProvider(TokioRuntimeProvider);

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
        let connecting = ConnectionProvider::new_connection(&self.0, ip, config, cx)?;
        Ok(Box::pin(async move { connecting.await.map(CdHandle) }))
    }

    fn runtime_provider(&self) -> &TokioRuntimeProvider {
        &self.0
    }
}

/// A connection that sets CD=1 on every query it sends.
#[derive(Clone)]
pub struct CdHandle<H>(H);

impl<H: DnsHandle> DnsHandle for CdHandle<H> {
    type Response = H::Response;
    type Runtime = H::Runtime;

    fn is_using_edns(&self) -> bool {
        self.0.is_using_edns()
    }

    fn send(&self, mut request: DnsRequest) -> Self::Response {
        request.metadata.checking_disabled = true;
        self.0.send(request)
    }
}

//! Which endpoints one check probes: those that can tell anything, at
//! most `probe.max_endpoints`, taken in turn so no service or host crowds
//! out the others.

use super::*;

/// Whether a probe of this endpoint can tell anything: it has an address and
/// DNS has not already decided its verdict.
pub(super) fn probeable(endpoint: &Endpoint) -> bool {
    endpoint.address.is_some()
        && !matches!(
            endpoint.tlsa,
            TlsaState::Bogus { .. } | TlsaState::Failed(_)
        )
}

/// A service's hosts, each with its endpoints' indices, in discovery order.
pub(super) type Hosts<'a> = Vec<(&'a str, Vec<usize>)>;

/// Which endpoints to probe when there are more than `max`: in turn from
/// each service, within a service in turn from each host, within a host in
/// turn from each address, so no service or host can crowd out the others.
/// Returns the indices chosen and those left out (probeable ones only).
pub(super) fn choose(endpoints: &[Endpoint], max: usize) -> (Vec<usize>, Vec<usize>) {
    let mut services: Vec<(crate::vocab::Service, Hosts)> = Vec::new();
    for (i, e) in endpoints.iter().enumerate().filter(|(_, e)| probeable(e)) {
        let s = match services.iter_mut().position(|(s, _)| *s == e.service) {
            Some(s) => s,
            None => {
                services.push((e.service, Vec::new()));
                services.len() - 1
            }
        };
        let hosts = &mut services[s].1;
        match hosts.iter_mut().find(|(h, _)| *h == e.host) {
            Some((_, list)) => list.push(i),
            None => hosts.push((&e.host, vec![i])),
        }
    }
    let per_service: Vec<Vec<usize>> = services
        .into_iter()
        .map(|(_, hosts)| round_robin(hosts.into_iter().map(|(_, l)| l).collect()))
        .collect();
    let mut order = round_robin(per_service);
    let left_out = order.split_off(order.len().min(max));
    (order, left_out)
}

/// The first of each list, then the second of each, and so on.
pub(super) fn round_robin(lists: Vec<Vec<usize>>) -> Vec<usize> {
    let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .flat_map(|k| lists.iter().filter_map(move |l| l.get(k).copied()))
        .collect()
}

pub(super) fn target(domain: &Domain, endpoint: &Endpoint, address: std::net::IpAddr) -> Target {
    Target {
        addr: SocketAddr::new(address, endpoint.port),
        domain: domain.to_string(),
        role: endpoint.service.role(),
        tls: endpoint.service.tls(),
    }
}

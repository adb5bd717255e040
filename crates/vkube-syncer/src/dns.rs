//! The virtual cluster's DNS, served by vkube itself (item 4): the records of Kubernetes' DNS
//! specification for the virtual Services and pods, fed by watches of the virtual cluster's
//! Services and EndpointSlices, and every other name forwarded to the host's DNS. vcluster runs a
//! CoreDNS pod per virtual cluster for this; here every replica answers from its own watch, so
//! every replica gives the same answer once it has seen the same revision.
//!
//! Records (cluster domain `cluster.local`):
//! - `SVC.NS.svc` A: the ClusterIP; for a headless Service, the ready endpoints' addresses;
//!   for an ExternalName Service, a CNAME;
//! - `HOSTNAME.SVC.NS.svc` A: the endpoint with that hostname (pods with `hostname` and
//!   `subdomain`, StatefulSet pods);
//! - `_PORT._PROTO.SVC.NS.svc` SRV, for named ports;
//! - `A-B-C-D.NS.pod` A: the address in the name (CoreDNS's `pods insecure`);
//! - PTR of ClusterIPs and endpoint addresses.
//!
//! A name of the domain that does not exist is NXDOMAIN; one that exists without a record of the
//! asked type (AAAA of an IPv4 Service) is an empty NOERROR answer, so resolvers do not give up.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::translate::CLUSTER_DOMAIN;

/// Seconds answers may be cached: CoreDNS's `kubernetes` plugin default.
const TTL: u32 = 5;

/// What the server answers from: the virtual cluster's Services and EndpointSlices.
#[derive(Clone)]
pub struct Records {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

impl Records {
    /// Starts the watches that feed the records, through `client` (the virtual cluster).
    pub fn watch(client: kube::Client) -> Records {
        let (services, services_writer) = reflector::store();
        let (slices, slices_writer) = reflector::store();
        let svc_api: kube::Api<Service> = kube::Api::all(client.clone());
        let slice_api: kube::Api<EndpointSlice> = kube::Api::all(client);
        tokio::spawn(drain(reflector::reflector(
            services_writer,
            watcher(svc_api, watcher::Config::default()).default_backoff(),
        )));
        tokio::spawn(drain(reflector::reflector(
            slices_writer,
            watcher(slice_api, watcher::Config::default()).default_backoff(),
        )));
        Records { services, slices }
    }

    /// Waits until both watches have listed once.
    pub async fn ready(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
    }

    fn service(&self, ns: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(ns))
    }

    /// The endpoints of a Service that may receive traffic: (address, hostname).
    fn endpoints(&self, ns: &str, svc: &str) -> Vec<(Ipv4Addr, Option<String>)> {
        let mut out: Vec<_> = self
            .slices
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
            .filter(|s| {
                s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .is_some_and(|n| n == svc)
            })
            .flat_map(|s| s.endpoints.clone())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .flat_map(|e| {
                let hostname = e.hostname.clone();
                e.addresses
                    .into_iter()
                    .filter_map(move |a| a.parse().ok().map(|ip| (ip, hostname.clone())))
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

async fn drain<S: futures_util::Stream + Send + 'static>(stream: S) {
    use futures_util::StreamExt;
    let mut stream = std::pin::pin!(stream);
    while stream.next().await.is_some() {}
}

/// What a name of the cluster domain answers.
#[derive(Debug, PartialEq)]
enum Answer {
    /// No such name: NXDOMAIN.
    Missing,
    /// The name exists; these are its records of the asked type (maybe none).
    Records(Vec<Record>),
}

/// Answers `name` `qtype` if it is the virtual cluster's to answer; `None`: forward it.
fn resolve(records: &Records, name: &Name, qtype: RecordType) -> Option<Answer> {
    let lower = name.to_lowercase();
    let ascii = lower.to_ascii();
    let fqdn = ascii.trim_end_matches('.');
    if let Some(arpa) = fqdn.strip_suffix(".in-addr.arpa") {
        return reverse(records, name, arpa);
    }
    let rest = fqdn.strip_suffix(CLUSTER_DOMAIN)?;
    let rest = rest.strip_suffix('.').unwrap_or(rest);
    let labels: Vec<&str> = if rest.is_empty() {
        vec![]
    } else {
        rest.split('.').collect()
    };
    let a = |ip: Ipv4Addr| Record::from_rdata(name.clone(), TTL, RData::A(A(ip)));
    let only = |rtype: RecordType, recs: Vec<Record>| {
        Answer::Records(if qtype == rtype || qtype == RecordType::ANY {
            recs
        } else {
            vec![]
        })
    };
    match labels.as_slice() {
        // The zone itself and its namespaces' parents exist (no records).
        [] | ["svc"] | ["pod"] => Some(Answer::Records(vec![])),
        [ip, _ns, "pod"] => {
            let ip: Ipv4Addr = ip.replace('-', ".").parse().ok()?;
            Some(only(RecordType::A, vec![a(ip)]))
        }
        [_ns, "svc"] => Some(Answer::Records(vec![])),
        [svc, ns, "svc"] => {
            let Some(service) = records.service(ns, svc) else {
                return Some(Answer::Missing);
            };
            let spec = service.spec.clone().unwrap_or_default();
            if spec.type_.as_deref() == Some("ExternalName") {
                let target = Name::from_ascii(format!(
                    "{}.",
                    spec.external_name.unwrap_or_default().trim_end_matches('.')
                ))
                .ok()?;
                let cname = Record::from_rdata(name.clone(), TTL, RData::CNAME(CNAME(target)));
                return Some(Answer::Records(vec![cname]));
            }
            let ips: Vec<Ipv4Addr> = match spec.cluster_ip.as_deref() {
                Some("None") | None => records
                    .endpoints(ns, svc)
                    .into_iter()
                    .map(|e| e.0)
                    .collect(),
                Some(ip) => ip.parse().ok().into_iter().collect(),
            };
            Some(only(RecordType::A, ips.into_iter().map(a).collect()))
        }
        [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
            let service = records.service(ns, svc)?;
            let spec = service.spec.clone().unwrap_or_default();
            let found = spec.ports.iter().flatten().find(|p| {
                p.name.as_deref() == Some(&port[1..])
                    && p.protocol
                        .as_deref()
                        .unwrap_or("TCP")
                        .eq_ignore_ascii_case(&proto[1..])
            });
            let Some(found) = found else {
                return Some(Answer::Missing);
            };
            let service_fqdn = format!("{svc}.{ns}.svc.{CLUSTER_DOMAIN}.");
            let targets: Vec<String> = if spec.cluster_ip.as_deref() == Some("None") {
                records
                    .endpoints(ns, svc)
                    .into_iter()
                    .map(|(ip, host)| {
                        let label = host.unwrap_or_else(|| ip.to_string().replace('.', "-"));
                        format!("{label}.{service_fqdn}")
                    })
                    .collect()
            } else {
                vec![service_fqdn]
            };
            let port = u16::try_from(found.port).ok()?;
            let srv = targets
                .into_iter()
                .filter_map(|t| Name::from_ascii(t).ok())
                .map(|t| {
                    Record::from_rdata(name.clone(), TTL, RData::SRV(SRV::new(0, 100, port, t)))
                })
                .collect();
            Some(only(RecordType::SRV, srv))
        }
        [host, svc, ns, "svc"] => {
            let matching: Vec<Ipv4Addr> = records
                .endpoints(ns, svc)
                .into_iter()
                .filter(|(ip, h)| {
                    h.as_deref() == Some(*host) || ip.to_string().replace('.', "-") == *host
                })
                .map(|e| e.0)
                .collect();
            if matching.is_empty() {
                return Some(Answer::Missing);
            }
            Some(only(RecordType::A, matching.into_iter().map(a).collect()))
        }
        _ => Some(Answer::Missing),
    }
}

/// PTR of a ClusterIP or an endpoint's address; other addresses are the host's to answer.
fn reverse(records: &Records, name: &Name, arpa: &str) -> Option<Answer> {
    let mut octets: Vec<&str> = arpa.split('.').collect();
    octets.reverse();
    let ip: Ipv4Addr = octets.join(".").parse().ok()?;
    let ip_text = ip.to_string();
    let ptr = |target: String| {
        let target = Name::from_ascii(target).ok()?;
        Some(Answer::Records(vec![Record::from_rdata(
            name.clone(),
            TTL,
            RData::PTR(PTR(target)),
        )]))
    };
    for svc in records.services.state() {
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.cluster_ip.as_deref()) == Some(ip_text.as_str()) {
            let (n, ns) = (svc.metadata.name.clone()?, svc.metadata.namespace.clone()?);
            return ptr(format!("{n}.{ns}.svc.{CLUSTER_DOMAIN}."));
        }
    }
    for slice in records.slices.state() {
        for e in &slice.endpoints {
            if e.addresses.iter().any(|a| a == &ip_text) {
                let svc = slice
                    .metadata
                    .labels
                    .as_ref()?
                    .get("kubernetes.io/service-name")?;
                let ns = slice.metadata.namespace.clone()?;
                let label = e
                    .hostname
                    .clone()
                    .unwrap_or_else(|| ip_text.replace('.', "-"));
                return ptr(format!("{label}.{svc}.{ns}.svc.{CLUSTER_DOMAIN}."));
            }
        }
    }
    None
}

/// The server's sockets: UDP and TCP on one address.
pub struct Sockets {
    udp: UdpSocket,
    tcp: TcpListener,
}

impl Sockets {
    /// Binds both, so a taken port fails vkube's start, not a query later.
    pub async fn bind(listen: SocketAddr) -> std::io::Result<Sockets> {
        Ok(Sockets {
            udp: UdpSocket::bind(listen).await?,
            tcp: TcpListener::bind(listen).await?,
        })
    }
}

/// The server, forwarding what is not the cluster's to `upstream`.
pub struct Server {
    pub upstream: Option<SocketAddr>,
    pub records: Records,
}

impl Server {
    /// Serves on `sockets` until the task is dropped.
    pub async fn run(self, sockets: Sockets) {
        let (udp, tcp) = (Arc::new(sockets.udp), sockets.tcp);
        tracing::info!(listen = ?tcp.local_addr(), upstream = ?self.upstream, "virtual cluster DNS serving");
        let shared = Arc::new(self);
        let udp_loop = {
            let shared = shared.clone();
            let udp = udp.clone();
            async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    let query = buf[..n].to_vec();
                    let (shared, udp) = (shared.clone(), udp.clone());
                    tokio::spawn(async move {
                        if let Some(answer) = shared.answer(&query, false).await {
                            let _ = udp.send_to(&answer, peer).await;
                        }
                    });
                }
            }
        };
        let tcp_loop = async move {
            loop {
                let Ok((mut conn, _)) = tcp.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = conn.read_u16().await else {
                            return;
                        };
                        let mut query = vec![0u8; usize::from(len)];
                        if conn.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        let Some(answer) = shared.answer(&query, true).await else {
                            return;
                        };
                        let Ok(len) = u16::try_from(answer.len()) else {
                            return;
                        };
                        if conn.write_u16(len).await.is_err()
                            || conn.write_all(&answer).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        };
        tokio::join!(udp_loop, tcp_loop);
    }

    /// The answer to one query message (its bytes), or `None` when there is none to give.
    async fn answer(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let request = Message::from_vec(query).ok()?;
        let mut response = Message::new();
        response
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_recursion_available(true);
        response.add_queries(request.queries().to_vec());
        let Some(q) = request
            .queries()
            .first()
            .filter(|_| request.op_code() == OpCode::Query)
        else {
            response.set_response_code(ResponseCode::NotImp);
            return response.to_vec().ok();
        };
        match resolve(&self.records, q.name(), q.query_type()) {
            Some(Answer::Missing) => {
                response
                    .set_authoritative(true)
                    .set_response_code(ResponseCode::NXDomain);
            }
            Some(Answer::Records(records)) => {
                response.set_authoritative(true).add_answers(records);
            }
            None => {
                return self.forward(query, tcp).await.or_else(|| {
                    response.set_response_code(ResponseCode::ServFail);
                    response.to_vec().ok()
                });
            }
        }
        let mut bytes = response.to_vec().ok()?;
        if !tcp && bytes.len() > 512 {
            // Too big for plain UDP: truncated, so the client asks again over TCP.
            let mut short = response.clone();
            short.take_answers();
            short.set_truncated(true);
            bytes = short.to_vec().ok()?;
        }
        Some(bytes)
    }

    /// Asks the host's DNS, with the client's own message.
    async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let upstream = self.upstream?;
        let exchange = async {
            if tcp {
                let mut conn = tokio::net::TcpStream::connect(upstream).await.ok()?;
                conn.write_u16(u16::try_from(query.len()).ok()?)
                    .await
                    .ok()?;
                conn.write_all(query).await.ok()?;
                let len = conn.read_u16().await.ok()?;
                let mut answer = vec![0u8; usize::from(len)];
                conn.read_exact(&mut answer).await.ok()?;
                Some(answer)
            } else {
                let bind: SocketAddr = if upstream.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .ok()?;
                let socket = UdpSocket::bind(bind).await.ok()?;
                socket.send_to(query, upstream).await.ok()?;
                let mut buf = vec![0u8; 4096];
                let n = socket.recv(&mut buf).await.ok()?;
                buf.truncate(n);
                Some(buf)
            }
        };
        tokio::time::timeout(Duration::from_secs(3), exchange)
            .await
            .ok()
            .flatten()
    }
}

/// The first nameserver of `/etc/resolv.conf`: inside a pod of the host, the host's DNS.
pub fn system_upstream() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn records() -> Records {
        let (services, mut sw) = reflector::store::<Service>();
        let (slices, mut ew) = reflector::store::<EndpointSlice>();
        for s in [
            json!({"metadata": {"name": "web", "namespace": "team"}, "spec": {"clusterIP": "198.19.0.9", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
            json!({"metadata": {"name": "db", "namespace": "team"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"name": "ext", "namespace": "team"}, "spec": {"type": "ExternalName", "externalName": "host.vkube.test"}}),
        ] {
            sw.apply_watcher_event(&Event::Apply(serde_json::from_value(s).unwrap()));
        }
        let slice = json!({"metadata": {"name": "db-x", "namespace": "team", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.18.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
                          {"addresses": ["198.18.0.8"], "conditions": {"ready": false}}]});
        ew.apply_watcher_event(&Event::Apply(serde_json::from_value(slice).unwrap()));
        Records { services, slices }
    }

    fn ask(r: &Records, name: &str, t: RecordType) -> Option<Answer> {
        resolve(r, &Name::from_ascii(name).unwrap(), t)
    }

    fn rdata(a: Option<Answer>) -> Vec<String> {
        match a {
            Some(Answer::Records(recs)) => recs.iter().map(|r| r.data().to_string()).collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn services_pods_and_endpoints_resolve() {
        let r = records();
        assert_eq!(
            rdata(ask(&r, "web.team.svc.cluster.local.", RecordType::A)),
            ["198.19.0.9"]
        );
        assert_eq!(
            rdata(ask(&r, "WEB.team.svc.cluster.local.", RecordType::A)),
            ["198.19.0.9"]
        );
        assert_eq!(
            rdata(ask(&r, "web.team.svc.cluster.local.", RecordType::AAAA)),
            Vec::<String>::new()
        );
        assert_eq!(
            ask(&r, "nope.team.svc.cluster.local.", RecordType::A),
            Some(Answer::Missing)
        );
        assert_eq!(
            rdata(ask(&r, "db.team.svc.cluster.local.", RecordType::A)),
            ["198.18.0.7"]
        );
        assert_eq!(
            rdata(ask(&r, "db-0.db.team.svc.cluster.local.", RecordType::A)),
            ["198.18.0.7"]
        );
        assert_eq!(
            rdata(ask(
                &r,
                "_http._tcp.web.team.svc.cluster.local.",
                RecordType::SRV
            )),
            ["0 100 80 web.team.svc.cluster.local."]
        );
        assert_eq!(
            rdata(ask(
                &r,
                "_pg._tcp.db.team.svc.cluster.local.",
                RecordType::SRV
            )),
            ["0 100 5432 db-0.db.team.svc.cluster.local."]
        );
        assert_eq!(
            rdata(ask(&r, "ext.team.svc.cluster.local.", RecordType::A)),
            ["host.vkube.test."]
        );
        assert_eq!(
            rdata(ask(&r, "198-18-0-3.team.pod.cluster.local.", RecordType::A)),
            ["198.18.0.3"]
        );
        assert_eq!(
            rdata(ask(&r, "9.0.19.198.in-addr.arpa.", RecordType::PTR)),
            ["web.team.svc.cluster.local."]
        );
        // Not the cluster's: forwarded.
        assert!(ask(&r, "host.vkube.test.", RecordType::A).is_none());
        assert!(ask(&r, "1.0.0.10.in-addr.arpa.", RecordType::PTR).is_none());
    }
}

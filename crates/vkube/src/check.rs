//! `vkube check`: asks every replica directly — found in the store's membership through any
//! replica, or given as addresses — and prints one row per replica: version, ready, leader, how
//! far its view is behind the most advanced replica, its configuration fingerprint, who it says
//! the credential is, and a few `can-i` answers. Exits non-zero on any disagreement, naming the
//! odd replica. This is the seed's "test OIDC on every instance", built in.
//!
//! Two credentials are in play. The kubeconfig's (an operator's) reads the membership, health
//! and version; the one being checked (`--token`, else the kubeconfig's too) asks whoami and
//! can-i. An ordinary user may not read the membership, and its refusal is not an empty list.
//!
//! It also warns (without failing) about each certificate it meets that expires within 30 days:
//! the kubeconfig's CA and client certificate, and every replica's serving certificate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use vkube_server::identity::{EXPIRY_WARNING, Validity, rfc3339};

#[derive(clap::Args)]
pub struct CheckArgs {
    /// A kubeconfig for any replica (its CA and credential are used for every replica).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// A bearer token to check instead of the kubeconfig's credential (e.g. a user's OIDC token).
    #[arg(long)]
    token: Option<String>,
    /// host:port of each replica; default: the membership the first replica reports.
    #[arg(long, value_delimiter = ',')]
    addresses: Vec<String>,
    /// `VERB RESOURCE[.GROUP] [NAMESPACE]` to ask every replica (repeatable).
    #[arg(long = "can-i")]
    can_i: Vec<String>,
}

/// How a connection authenticates.
enum Auth {
    /// A client certificate and its key (PEM).
    Cert(Vec<u8>, Vec<u8>),
    Token(String),
}

struct Credential {
    ca: Vec<u8>,
    /// The kubeconfig's own credential: for the membership, health and version.
    operator: Auth,
    /// The credential being checked (whoami, can-i), when it is not the kubeconfig's: `--token`.
    checked: Option<Auth>,
    server: String,
}

/// The current context's cluster and user of a kubeconfig, parsed as YAML (any writer's style:
/// kubectl's, vkube connect's, folded or quoted scalars).
struct KubeconfigEntries {
    cluster: serde_json::Value,
    user: serde_json::Value,
}

impl KubeconfigEntries {
    fn parse(text: &str, path: &std::path::Path) -> Result<KubeconfigEntries> {
        let doc = crate::cli::values::parse_yaml(text, &path.display().to_string())?;
        let named = |list: &str, name: &serde_json::Value, key: &str| {
            doc[list]
                .as_array()
                .and_then(|l| l.iter().find(|e| e["name"] == *name))
                .map(|e| e[key].clone())
                .with_context(|| format!("{}: no {list} entry named {name}", path.display()))
        };
        let current = match &doc["current-context"] {
            serde_json::Value::String(s) if !s.is_empty() => doc["current-context"].clone(),
            _ => doc["contexts"][0]["name"].clone(),
        };
        let context = named("contexts", &current, "context")?;
        Ok(KubeconfigEntries {
            cluster: named("clusters", &context["cluster"], "cluster")?,
            user: named("users", &context["user"], "user")?,
        })
    }
}

fn text_of(v: &serde_json::Value) -> Option<String> {
    v.as_str()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn decoded(v: &serde_json::Value, name: &str) -> Result<Vec<u8>> {
    let v = text_of(v).with_context(|| format!("the kubeconfig has no {name}"))?;
    base64::engine::general_purpose::STANDARD
        .decode(v)
        .with_context(|| format!("the kubeconfig's {name} is not base64"))
}

impl Credential {
    fn load(args: &CheckArgs) -> Result<Credential> {
        let text = std::fs::read_to_string(&args.kubeconfig)
            .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
        let entries = KubeconfigEntries::parse(&text, &args.kubeconfig)?;
        let user = &entries.user;
        let operator = match text_of(&user["token"]) {
            Some(token) => Auth::Token(token),
            None => Auth::Cert(
                decoded(&user["client-certificate-data"], "client-certificate-data")?,
                decoded(&user["client-key-data"], "client-key-data")?,
            ),
        };
        Ok(Credential {
            ca: decoded(
                &entries.cluster["certificate-authority-data"],
                "certificate-authority-data",
            )?,
            checked: args.token.clone().map(Auth::Token),
            operator,
            server: text_of(&entries.cluster["server"]).context("the kubeconfig has no server")?,
        })
    }
}

/// One HTTPS connection to one replica.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    token: Option<String>,
    authority: String,
    /// The validity of the serving certificate the replica presented.
    serving: Option<Validity>,
}

impl Conn {
    /// A connection that authenticates with `auth` only: a token is never sent beside a client
    /// certificate, which the server would authenticate first.
    async fn open(cred: &Credential, auth: &Auth, authority: &str) -> Result<Conn> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&cred.ca) {
            roots.add(c?)?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let tls = match auth {
            Auth::Cert(cert, key) => builder.with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>()?,
                PrivateKeyDer::from_pem_slice(key)?,
            )?,
            Auth::Token(_) => builder.with_no_client_auth(),
        };
        let (host, port) = authority
            .rsplit_once(':')
            .context("an address is host:port")?;
        let tcp = tokio::net::TcpStream::connect((host, port.parse::<u16>()?))
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await?;
        let serving = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| Validity::of_der(c));
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            token: match auth {
                Auth::Token(t) => Some(t.clone()),
                Auth::Cert(..) => None,
            },
            authority: authority.to_string(),
            serving,
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String)> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.sender.ready().await?;
        let resp = self
            .sender
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let code = resp.status().as_u16();
        let text = resp.into_body().collect().await?.to_bytes();
        Ok((code, String::from_utf8_lossy(&text).into_owned()))
    }
}

/// One row of the table.
#[derive(Default)]
struct Row {
    replica: String,
    version: String,
    ready: String,
    leader: String,
    revision: i64,
    fingerprint: String,
    whoami: String,
    can_i: Vec<String>,
    /// The replica's serving certificate.
    serving: Option<Validity>,
}

fn parse_can_i(spec: &str) -> Value {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let (resource, group) = parts
        .get(1)
        .map(|r| r.split_once('.').unwrap_or((r, "")))
        .unwrap_or(("", ""));
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
           "spec": {"resourceAttributes": {"verb": parts.first().copied().unwrap_or(""), "resource": resource,
                    "group": group, "namespace": parts.get(2).copied().unwrap_or("")}}})
}

async fn ask(cred: &Credential, address: &str, members: &[Value], can_i: &[String]) -> Row {
    let mut row = Row {
        replica: address.to_string(),
        ..Row::default()
    };
    let mut conn = match Conn::open(cred, &cred.operator, address).await {
        Ok(c) => c,
        Err(e) => {
            row.ready = format!("unreachable: {e}");
            return row;
        }
    };
    row.serving = conn.serving;
    if let Ok((200, body)) = conn.send("GET", "/version", None).await {
        row.version = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["gitVersion"].as_str().map(str::to_string))
            .unwrap_or_default();
    }
    row.ready = match conn.send("GET", "/readyz", None).await {
        Ok((200, _)) => "yes".into(),
        Ok((code, body)) => format!("no ({code}: {})", body.lines().next().unwrap_or_default()),
        Err(e) => format!("no ({e})"),
    };
    let me = members
        .iter()
        .find(|m| m["address"].as_str().is_some_and(|a| a.ends_with(address)));
    if let Some(m) = me {
        row.replica = format!("{} {address}", m["id"].as_str().unwrap_or_default());
        row.leader = if m["leader"] == true {
            "yes".into()
        } else {
            "no".into()
        };
        row.revision = m["revision"].as_i64().unwrap_or(0);
        row.fingerprint = m["fingerprint"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(19)
            .collect();
    }
    // The checked credential asks on a connection of its own.
    let mut own = None;
    if let Some(auth) = &cred.checked {
        match Conn::open(cred, auth, address).await {
            Ok(c) => own = Some(c),
            Err(e) => {
                row.whoami = format!("error: {e}");
                return row;
            }
        }
    }
    let conn = own.as_mut().unwrap_or(&mut conn);
    let review = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    row.whoami = match conn
        .send(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(review),
        )
        .await
    {
        Ok((201, body)) => {
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            let u = &v["status"]["userInfo"];
            let groups: Vec<&str> = u["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "{} [{}]",
                u["username"].as_str().unwrap_or_default(),
                groups.join(" ")
            )
        }
        Ok((code, _)) => format!("HTTP {code}"),
        Err(e) => format!("error: {e}"),
    };
    for spec in can_i {
        let answer = match conn
            .send(
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                Some(parse_can_i(spec)),
            )
            .await
        {
            Ok((201, body)) => {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                if v["status"]["allowed"] == true {
                    "yes".to_string()
                } else {
                    "no".to_string()
                }
            }
            Ok((code, _)) => format!("HTTP {code}"),
            Err(e) => format!("error: {e}"),
        };
        row.can_i.push(answer);
    }
    row
}

/// The membership, from the first replica (its records come from the shared store), read with
/// the operator's credential. A refusal or a failure is an error, never an empty membership: the
/// table's leader, lag and fingerprint columns (and the disagreements on them) depend on it.
async fn members(cred: &Credential, first: &str) -> Result<Vec<Value>> {
    let mut conn = Conn::open(cred, &cred.operator, first).await?;
    let (code, body) = conn
        .send("GET", "/vkube/replicas", None)
        .await
        .with_context(|| format!("reading the replica list from {first}"))?;
    if code != 200 {
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        bail!(
            "reading the replica list from {first} (/vkube/replicas) with the kubeconfig's credential: HTTP {code}: {message}; the kubeconfig must be an operator's (e.g. admin.kubeconfig), the user to check goes in --token"
        );
    }
    let list: Value = serde_json::from_str(&body)
        .with_context(|| format!("{first} sent a replica list that is not JSON"))?;
    list["replicas"]
        .as_array()
        .cloned()
        .with_context(|| format!("{first} sent a replica list without replicas: {body}"))
}

/// Warnings about the certificates in `certs` (what each is, its validity) that expire within
/// [`EXPIRY_WARNING`] of `now`, or have expired. They do not fail the check: nothing disagrees
/// yet, but an operator has a month to act.
fn expiry_warnings(certs: &[(String, Validity)], now: SystemTime) -> Vec<String> {
    certs
        .iter()
        .filter(|(_, v)| v.remaining(now) < EXPIRY_WARNING)
        .map(|(what, v)| {
            let left = v.remaining(now);
            let when = if left.is_zero() {
                format!("expired at {}", rfc3339(v.not_after))
            } else {
                let days = left.as_secs() / (24 * 3600);
                let hours = left.as_secs() / 3600 % 24;
                format!("expires in {days}d{hours}h, at {}", rfc3339(v.not_after))
            };
            format!("warning: {what} {when}")
        })
        .collect()
}

/// The certificates a check can see: the kubeconfig's CA and client certificate, and each
/// replica's serving certificate, with what to do about each.
fn certificates(cred: &Credential, rows: &[Row]) -> Vec<(String, Validity)> {
    let mut certs = Vec::new();
    let pem = |bytes: &[u8]| Validity::of_pem(&String::from_utf8_lossy(bytes));
    if let Some(v) = pem(&cred.ca) {
        certs.push((
            "the cluster CA (the kubeconfig's certificate-authority-data)".to_string(),
            v,
        ));
    }
    if let Auth::Cert(cert, _) = &cred.operator {
        if let Some(v) = pem(cert) {
            certs.push((
                "the kubeconfig's client certificate (vkube writes a fresh admin.kubeconfig into its data directory before it expires; copy that one)".to_string(),
                v,
            ));
        }
    }
    for r in rows {
        if let Some(v) = r.serving {
            certs.push((
                format!(
                    "the serving certificate of {} (vkube renews it before it expires; a replica that has not is failing to, see its log)",
                    r.replica
                ),
                v,
            ));
        }
    }
    certs
}

pub async fn run(args: CheckArgs) -> Result<bool> {
    let cred = Credential::load(&args)?;
    let first = cred
        .server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    let members = members(&cred, &first).await?;
    let mut addresses = args.addresses.clone();
    if addresses.is_empty() {
        addresses = members
            .iter()
            .filter_map(|m| {
                m["address"]
                    .as_str()
                    .map(|a| a.trim_start_matches("https://").to_string())
            })
            .collect();
        addresses.sort();
    }
    if addresses.is_empty() {
        bail!("no replicas found: {first} listed none; pass --addresses host:port,...");
    }
    let can_i = if args.can_i.is_empty() {
        vec![
            "list pods default".to_string(),
            "create deployments.apps default".to_string(),
            "get nodes".to_string(),
        ]
    } else {
        args.can_i.clone()
    };
    let mut rows = Vec::new();
    for a in &addresses {
        rows.push(ask(&cred, a, &members, &can_i).await);
    }
    let newest = rows.iter().map(|r| r.revision).max().unwrap_or(0);
    let mut header = vec![
        "REPLICA",
        "VERSION",
        "READY",
        "LEADER",
        "REV LAG",
        "FINGERPRINT",
        "WHOAMI",
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    header.extend(can_i.iter().map(|c| format!("CAN-I {c}")));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.replica.clone(),
                r.version.clone(),
                r.ready.clone(),
                r.leader.clone(),
                (newest - r.revision).to_string(),
                r.fingerprint.clone(),
                r.whoami.clone(),
            ];
            cells.extend(r.can_i.iter().cloned());
            cells
        })
        .collect();
    print_table(&header, &table);
    // Disagreements: any column that should be equal, and readiness.
    let mut odd = Vec::new();
    for (i, name) in [(1, "version"), (5, "fingerprint"), (6, "whoami")]
        .into_iter()
        .chain((0..can_i.len()).map(|k| (7 + k, "can-i")))
    {
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for r in &table {
            *counts.entry(r[i].as_str()).or_default() += 1;
        }
        if counts.len() > 1 {
            let majority = counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(v, _)| *v)
                .unwrap_or_default();
            for r in table.iter().filter(|r| r[i] != majority) {
                odd.push(format!(
                    "{} disagrees on {name}: {:?} where the others say {majority:?}",
                    r[0], r[i]
                ));
            }
        }
    }
    for r in table.iter().filter(|r| r[2] != "yes") {
        odd.push(format!("{} is not ready: {}", r[0], r[2]));
    }
    for o in &odd {
        eprintln!("vkube check: {o}");
    }
    for w in expiry_warnings(&certificates(&cred, &rows), SystemTime::now()) {
        eprintln!("vkube check: {w}");
    }
    Ok(odd.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// A CA, and a localhost serving pair it signed that expires `days_left` days from now.
    fn short_lived(days_left: u32) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let now = SystemTime::now();
        leaf.not_before = (now - DAY * 300).into();
        leaf.not_after = (now + DAY * days_left).into();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    #[test]
    fn certificates_within_thirty_days_of_expiry_are_warned_about() {
        let now = SystemTime::now();
        let valid = |days_left: u64| Validity {
            not_before: now - DAY * 300,
            not_after: now + DAY * days_left as u32 + Duration::from_secs(60),
        };
        let expired = Validity {
            not_before: now - DAY * 300,
            not_after: now - DAY,
        };
        let warnings = expiry_warnings(
            &[
                ("A".to_string(), valid(40)),
                ("B".to_string(), valid(12)),
                ("C".to_string(), expired),
            ],
            now,
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("warning: B expires in 12d0h, at "),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("warning: C expired at "),
            "{warnings:?}"
        );
    }

    #[tokio::test]
    async fn a_replicas_serving_certificate_near_expiry_is_warned_about() {
        let (ca_pem, cert_pem, key_pem) = short_lived(10);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("localhost:{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                // Handshakes, then hangs up: the replica answers no request.
                let _ = acceptor.accept(tcp).await;
            }
        });
        let cred = Credential {
            ca: ca_pem.into_bytes(),
            operator: Auth::Token("t".into()),
            checked: None,
            server: format!("https://{address}"),
        };
        let row = ask(&cred, &address, &[], &[]).await;
        let warnings = expiry_warnings(&certificates(&cred, &[row]), SystemTime::now());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!(
                "warning: the serving certificate of {address} (vkube renews it"
            )) && warnings[0].contains(" expires in 9d23h, at "),
            "{warnings:?}"
        );
    }
}

#[cfg(test)]
mod kubeconfig_tests {
    use super::*;

    #[test]
    fn the_current_contexts_entries_are_read_whatever_the_yaml_style() {
        let text = "apiVersion: v1\nkind: Config\ncurrent-context: b\nclusters:\n- name: a\n  cluster: {server: 'https://a'}\n- name: cb\n  cluster:\n    server: https://b:6443\n    certificate-authority-data: >-\n      QUJD\nusers:\n- name: ub\n  user:\n    token: \"t0k\"\ncontexts:\n- name: a\n  context: {cluster: a, user: ub}\n- name: b\n  context: {cluster: cb, user: ub}\n";
        let e = KubeconfigEntries::parse(text, std::path::Path::new("kc")).unwrap();
        assert_eq!(text_of(&e.cluster["server"]).unwrap(), "https://b:6443");
        assert_eq!(
            decoded(&e.cluster["certificate-authority-data"], "ca").unwrap(),
            b"ABC"
        );
        assert_eq!(text_of(&e.user["token"]).unwrap(), "t0k");
    }
}

/// Prints a kubectl-style table: left-aligned columns three spaces apart, no trailing blanks.
pub fn print_table(header: &[String], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i).map(String::len))
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("   ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(header));
    for r in rows {
        println!("{}", line(r));
    }
}

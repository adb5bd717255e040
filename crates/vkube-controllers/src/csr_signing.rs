//! kube-controller-manager's `csrsigning` controller: an approved CertificateSigningRequest for
//! one of the built-in signers gets its certificate from the cluster CA, so `kubectl certificate
//! approve` gives a certificate that the API accepts.
//!
//! Signers, with upstream's rules on what each may sign:
//! - `kubernetes.io/kube-apiserver-client`: client certificates, any subject; usages within
//!   digital signature, key encipherment and client auth, client auth required;
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a node's client certificate: organization
//!   exactly `system:nodes`, common name `system:node:NAME`, no subject alternative names;
//! - `kubernetes.io/kubelet-serving`: a node's serving certificate: the same subject, DNS and IP
//!   names only, usages within digital signature, key encipherment and server auth.
//!
//! `kubernetes.io/legacy-unknown` and other signers are left alone, as upstream. A request the
//! signer refuses gets the `Failed` condition with reason `SignerValidationFailure`. The
//! certificate lasts `spec.expirationSeconds` (at least 600) or the signing duration (a year,
//! kube-controller-manager's `--cluster-signing-duration`), whichever is shorter, and starts 5
//! minutes in the past for clocks that lag, as upstream backdates.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use rcgen::{
    CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Context, Result};

const CLIENT: &str = "kubernetes.io/kube-apiserver-client";
const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The CA that signs, and for how long.
pub struct SigningCa {
    pub cert_pem: String,
    pub key_pem: String,
    /// kube-controller-manager's `--cluster-signing-duration` (default a year).
    pub duration: Duration,
}

impl SigningCa {
    pub fn new(cert_pem: String, key_pem: String) -> Self {
        Self {
            cert_pem,
            key_pem,
            duration: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Runs the controller, signing with `ca`, until dropped.
pub async fn run(ctx: Context, ca: SigningCa) {
    let csrs: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let controller = Controller::new(csrs, Default::default());
    let ca = Arc::new(ca);
    let sign = move |csr, ctx| reconcile(csr, ctx, ca.clone());
    crate::runner::drive("csrsigning", controller, Arc::new(ctx), sign).await;
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
    ca: Arc<SigningCa>,
) -> Result<Action> {
    let signed = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    let signer = csr.spec.signer_name.as_str();
    if signed
        || !has_condition(&csr, "Approved")
        || has_condition(&csr, "Denied")
        || has_condition(&csr, "Failed")
        || ![CLIENT, KUBELET_CLIENT, KUBELET_SERVING].contains(&signer)
    {
        return Ok(Action::await_change());
    }
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let name = csr.metadata.name.clone().unwrap_or_default();
    let mut updated = (*csr).clone();
    let status = updated.status.get_or_insert_with(Default::default);
    let now = ctx.clock.now();
    match sign(&csr, &ca, now) {
        Ok(pem) => status.certificate = Some(ByteString(pem.into_bytes())),
        Err(why) => {
            let at = Some(Time(now));
            status.conditions.get_or_insert_with(Vec::new).push(
                CertificateSigningRequestCondition {
                    type_: "Failed".into(),
                    status: "True".into(),
                    reason: Some("SignerValidationFailure".into()),
                    message: Some(why),
                    last_update_time: at.clone(),
                    last_transition_time: at,
                },
            );
        }
    }
    api.replace_status(&name, &PostParams::default(), &updated)
        .await?;
    Ok(Action::await_change())
}

/// The usages a signer allows, and the one it requires.
fn allowed_usages(signer: &str) -> (&'static [&'static str], &'static str) {
    const CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];
    const SERVING_USAGES: &[&str] = &["digital signature", "key encipherment", "server auth"];
    if signer == KUBELET_SERVING {
        (SERVING_USAGES, "server auth")
    } else {
        (CLIENT_USAGES, "client auth")
    }
}

fn dn_text(value: &DnValue) -> String {
    match value {
        DnValue::PrintableString(s) => s.as_str().to_string(),
        DnValue::Utf8String(s) => s.clone(),
        DnValue::Ia5String(s) => s.as_str().to_string(),
        DnValue::TeletexString(s) => s.as_str().to_string(),
        _ => String::new(),
    }
}

/// Checks the request against its signer's rules and signs it: the PEM certificate, or why not.
fn sign(
    csr: &CertificateSigningRequest,
    ca: &SigningCa,
    now: jiff::Timestamp,
) -> Result<String, String> {
    let signer = csr.spec.signer_name.as_str();
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let mut request = CertificateSigningRequestParams::from_pem(&pem)
        .map_err(|e| format!("unable to parse csr: {e}"))?;
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let (allowed, required) = allowed_usages(signer);
    if let Some(bad) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("unsupported key usage: {bad}"));
    }
    if !usages.iter().any(|u| u == required) {
        return Err(format!("missing required key usage: {required}"));
    }
    let params = &mut request.params;
    if signer != CLIENT {
        let mut organizations = Vec::new();
        let mut common_name = String::new();
        for (kind, value) in params.distinguished_name.iter() {
            match kind {
                DnType::OrganizationName => organizations.push(dn_text(value)),
                DnType::CommonName => common_name = dn_text(value),
                _ => {}
            }
        }
        if organizations != ["system:nodes"] {
            return Err("subject organization is not system:nodes".into());
        }
        if !common_name.starts_with("system:node:") {
            return Err("subject common name does not begin with system:node:".into());
        }
        let only_dns_and_ip = params
            .subject_alt_names
            .iter()
            .all(|s| matches!(s, SanType::DnsName(_) | SanType::IpAddress(_)));
        if signer == KUBELET_CLIENT && !params.subject_alt_names.is_empty() {
            return Err("subject alternative names are not allowed".into());
        }
        if signer == KUBELET_SERVING && !only_dns_and_ip {
            return Err("only DNS and IP subject alternative names are allowed".into());
        }
        if signer == KUBELET_SERVING && params.subject_alt_names.is_empty() {
            return Err("DNS or IP subjectAltName is required".into());
        }
    }
    let mut lifetime = ca.duration;
    if let Some(seconds) = csr.spec.expiration_seconds {
        lifetime = lifetime.min(Duration::from_secs(seconds.max(600).unsigned_abs().into()));
    }
    let now = time::OffsetDateTime::from_unix_timestamp(now.as_second())
        .map_err(|e| format!("the clock: {e}"))?;
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = usages
        .iter()
        .filter_map(|u| match u.as_str() {
            "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
            _ => None,
        })
        .collect();
    params.extended_key_usages = usages
        .iter()
        .filter_map(|u| match u.as_str() {
            "client auth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
            _ => None,
        })
        .collect();
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| format!("the CA key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(|e| format!("the CA: {e}"))?;
    let cert = request
        .signed_by(&issuer)
        .map_err(|e| format!("signing: {e}"))?;
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName};

    fn ca() -> SigningCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "vkube-ca");
        let cert = params.self_signed(&key).unwrap();
        SigningCa::new(cert.pem(), key.serialize_pem())
    }

    fn request(cn: &str, orgs: &[&str], sans: &[&str], signer: &str, usages: &[&str]) -> TestCsr {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r"},
            "spec": {"request": k8s_b64(pem.as_bytes()), "signerName": signer,
                     "usages": usages, "expirationSeconds": 3600},
        }))
        .unwrap();
        TestCsr(csr)
    }

    struct TestCsr(CertificateSigningRequest);

    fn k8s_b64(bytes: &[u8]) -> String {
        serde_json::to_value(ByteString(bytes.to_vec()))
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    fn now() -> jiff::Timestamp {
        "2026-06-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_client_certificate_is_signed_by_the_ca_for_the_requested_time() {
        let ca = ca();
        let r = request(
            "jane",
            &["devs"],
            &[],
            CLIENT,
            &["digital signature", "client auth"],
        );
        let pem = sign(&r.0, &ca, now()).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "jane"
        );
        assert_eq!(
            cert.issuer()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "vkube-ca"
        );
        let validity = cert.validity();
        let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300, "expirationSeconds plus the backdate");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
    }

    #[test]
    fn signers_refuse_what_their_rules_forbid() {
        let ca = ca();
        let cases = [
            (
                request("jane", &[], &[], CLIENT, &["server auth"]),
                "unsupported key usage: server auth",
            ),
            (
                request("jane", &[], &[], CLIENT, &["digital signature"]),
                "missing required key usage: client auth",
            ),
            (
                request(
                    "system:node:a",
                    &["devs"],
                    &[],
                    KUBELET_CLIENT,
                    &["client auth"],
                ),
                "subject organization is not system:nodes",
            ),
            (
                request(
                    "a",
                    &["system:nodes"],
                    &[],
                    KUBELET_CLIENT,
                    &["client auth"],
                ),
                "subject common name does not begin with system:node:",
            ),
            (
                request(
                    "system:node:a",
                    &["system:nodes"],
                    &["a.example"],
                    KUBELET_CLIENT,
                    &["client auth"],
                ),
                "subject alternative names are not allowed",
            ),
            (
                request(
                    "system:node:a",
                    &["system:nodes"],
                    &[],
                    KUBELET_SERVING,
                    &["server auth"],
                ),
                "DNS or IP subjectAltName is required",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(sign(&r.0, &ca, now()).unwrap_err(), want);
        }
        let serving = request(
            "system:node:a",
            &["system:nodes"],
            &["a.example", "10.0.0.1"],
            KUBELET_SERVING,
            &["digital signature", "key encipherment", "server auth"],
        );
        assert!(sign(&serving.0, &ca, now()).is_ok());
    }

    #[tokio::test]
    async fn only_approved_requests_of_builtin_signers_are_signed_once() {
        use crate::testing::FakeApi;
        let fake = FakeApi::default();
        let collection = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
        let mut ctx = Context::new(fake.client());
        ctx.clock = Arc::new(crate::clock::FakeClock::new(now()));
        let (ctx, ca) = (Arc::new(ctx), Arc::new(ca()));
        let make = |name: &str, signer: &str, approved: bool| {
            let mut r = request("jane", &[], &[], signer, &["client auth"]).0;
            r.metadata.name = Some(name.into());
            let mut obj = serde_json::to_value(&r).unwrap();
            if approved {
                obj["status"] =
                    serde_json::json!({"conditions": [{"type": "Approved", "status": "True"}]});
            }
            fake.put(collection, obj);
        };
        make("approved", CLIENT, true);
        make("pending", CLIENT, false);
        make("legacy", "kubernetes.io/legacy-unknown", true);
        for name in ["approved", "pending", "legacy"] {
            let obj: CertificateSigningRequest =
                serde_json::from_value(fake.get(collection, name).unwrap()).unwrap();
            reconcile(Arc::new(obj), ctx.clone(), ca.clone())
                .await
                .unwrap();
        }
        let cert =
            |name: &str| fake.get(collection, name).unwrap()["status"]["certificate"].clone();
        assert!(cert("approved").is_string());
        assert!(cert("pending").is_null());
        assert!(cert("legacy").is_null());
        let writes = fake.writes().len();
        let obj: CertificateSigningRequest =
            serde_json::from_value(fake.get(collection, "approved").unwrap()).unwrap();
        reconcile(Arc::new(obj), ctx.clone(), ca.clone())
            .await
            .unwrap();
        assert_eq!(
            fake.writes().len(),
            writes,
            "a signed request is not signed again"
        );
    }
}

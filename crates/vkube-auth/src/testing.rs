//! A test OpenID provider: discovery and JWKS over HTTPS on loopback, with RSA and ECDSA keys the
//! test controls (mint tokens, rotate keys, serve distributed claims, go down). Unit tests and
//! the e2e suite use it; the e2e suite also drives a real third-party provider.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::jwt;

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
}

struct SignKey {
    kid: String,
    key: Key,
}

impl SignKey {
    fn jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.key {
            Key::Rsa(k) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "kid": self.kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Key::Ec(k, crv) => {
                let p = k.public_key().as_ref();
                let half = (p.len() - 1) / 2;
                json!({"kty": "EC", "kid": self.kid, "use": "sig", "crv": crv, "x": b64(&p[1..1 + half]), "y": b64(&p[1 + half..])})
            }
        }
    }

    fn sign(&self, alg: &str, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Rsa(k) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(padding, &rng, input, &mut sig).expect("rsa sign");
                sig
            }
            Key::Ec(k, _) => k.sign(&rng, input).expect("ec sign").as_ref().to_vec(),
        }
    }
}

fn new_key(alg: &str) -> SignKey {
    let key = match alg {
        "ES256" => Key::Ec(
            EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            "P-256",
        ),
        "ES384" => Key::Ec(
            EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
            "P-384",
        ),
        "ES512" => Key::Ec(
            EcdsaKeyPair::generate(&signature::ECDSA_P521_SHA512_FIXED_SIGNING).unwrap(),
            "P-521",
        ),
        _ => Key::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap()),
    };
    SignKey {
        kid: uuid::Uuid::new_v4().to_string(),
        key,
    }
}

#[derive(Default)]
struct State {
    /// Keys by family: "RSA", "ES256", "ES384", "ES512".
    keys: HashMap<String, Arc<SignKey>>,
    /// Keys that sign but are not published (a key the issuer has not announced).
    hidden: HashMap<String, Arc<SignKey>>,
    /// Distributed claim documents by path.
    claims: HashMap<String, String>,
    down: bool,
    jwks_fetches: usize,
    /// Requests per path, to prove what was (not) fetched.
    hits: HashMap<String, usize>,
}

/// A running test issuer.
pub struct TestIdp {
    pub issuer: String,
    pub addr: SocketAddr,
    /// The CA (self-signed serving certificate) to trust, PEM.
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn family(alg: &str) -> &str {
    if alg.starts_with("ES") { alg } else { "RSA" }
}

impl TestIdp {
    /// Starts an issuer at `https://127.0.0.1:PORT{path}`.
    pub async fn start(path: &str) -> TestIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("https://127.0.0.1:{}{path}", addr.port());
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
        params.subject_alt_names = vec![
            rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()),
            rcgen::SanType::DnsName("localhost".try_into().unwrap()),
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = cert.pem();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = vec![cert.der().clone()];
        let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let mut state = State::default();
        for alg in ["RS256", "ES256", "ES384", "ES512"] {
            state
                .keys
                .insert(family(alg).to_string(), Arc::new(new_key(alg)));
        }
        let state = Arc::new(Mutex::new(state));
        let (st, iss) = (state.clone(), issuer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, st, iss) = (acceptor.clone(), st.clone(), iss.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (st, iss) = (st.clone(), iss.clone());
                            async move {
                                Ok::<_, std::convert::Infallible>(serve(
                                    &st,
                                    &iss,
                                    req.uri().path(),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TestIdp {
            issuer,
            addr,
            ca_pem,
            state,
            task,
        }
    }

    /// Signs `claims` with this issuer's key for `alg`.
    pub fn mint(&self, alg: &str, claims: &Value) -> String {
        let key = self.state.lock().unwrap().keys[family(alg)].clone();
        jwt::encode(
            &json!({"alg": alg, "kid": key.kid, "typ": "JWT"}),
            claims,
            |input| key.sign(alg, input),
        )
    }

    /// Signs with a key the JWKS does not (yet) publish.
    pub fn mint_unpublished(&self, alg: &str, claims: &Value) -> String {
        let mut st = self.state.lock().unwrap();
        let key = st
            .hidden
            .entry(family(alg).to_string())
            .or_insert_with(|| Arc::new(new_key(alg)))
            .clone();
        jwt::encode(
            &json!({"alg": alg, "kid": key.kid, "typ": "JWT"}),
            claims,
            |input| key.sign(alg, input),
        )
    }

    /// Replaces the key of `alg`'s family (the old one is no longer published).
    pub fn rotate(&self, alg: &str) {
        self.state
            .lock()
            .unwrap()
            .keys
            .insert(family(alg).to_string(), Arc::new(new_key(alg)));
    }

    /// Publishes the hidden keys (a rotation announced after tokens were minted with them).
    pub fn publish_hidden(&self) {
        let mut st = self.state.lock().unwrap();
        let hidden: Vec<_> = st.hidden.drain().collect();
        for (family, key) in hidden {
            st.keys.insert(family, key);
        }
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().jwks_fetches
    }

    /// Serves `body` at `{issuer-host}/claims/{name}`; returns the URL.
    pub fn serve_claim(&self, name: &str, body: String) -> String {
        self.state
            .lock()
            .unwrap()
            .claims
            .insert(format!("/claims/{name}"), body);
        format!("https://127.0.0.1:{}/claims/{name}", self.addr.port())
    }

    /// Claims every token of this issuer needs: iss, aud, sub, exp.
    pub fn claims(&self, aud: &str) -> Value {
        let now = crate::unix_now();
        json!({"iss": self.issuer, "aud": aud, "sub": "alice", "exp": now + 600, "iat": now})
    }
}

fn serve(state: &Mutex<State>, issuer: &str, path: &str) -> Response<Full<Bytes>> {
    let mut st = state.lock().unwrap();
    *st.hits.entry(path.to_string()).or_default() += 1;
    let reply = |code: StatusCode, body: String| {
        Response::builder()
            .status(code)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    if st.down {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "{}".into());
    }
    let base = url::Url::parse(issuer)
        .unwrap()
        .path()
        .trim_end_matches('/')
        .to_string();
    if path == format!("{base}/.well-known/openid-configuration") {
        let doc =
            json!({"issuer": issuer, "jwks_uri": format!("{}/jwks", issuer.trim_end_matches('/'))});
        return reply(StatusCode::OK, doc.to_string());
    }
    if path == format!("{base}/jwks") {
        st.jwks_fetches += 1;
        let keys: Vec<Value> = st.keys.values().map(|k| k.jwk()).collect();
        return reply(StatusCode::OK, json!({"keys": keys}).to_string());
    }
    match st.claims.get(path) {
        Some(body) => reply(StatusCode::OK, body.clone()),
        None => reply(StatusCode::NOT_FOUND, "{}".into()),
    }
}

impl TestIdp {
    /// Signs `claims` under a header of the test's choosing (`alg`, `kid`, `jku`, …), with the key
    /// of `key_alg`'s family: for tokens that lie about themselves.
    pub fn mint_with_header(&self, key_alg: &str, header: &Value, claims: &Value) -> String {
        let key = self.state.lock().unwrap().keys[family(key_alg)].clone();
        jwt::encode(header, claims, |input| key.sign(key_alg, input))
    }

    /// How many requests `path` got.
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// The kid of the published key of `alg`'s family.
    pub fn kid(&self, alg: &str) -> String {
        self.state.lock().unwrap().keys[family(alg)].kid.clone()
    }

    /// The RSA key's public JWK, as the JWKS publishes it.
    pub fn public_jwk(&self, alg: &str) -> Value {
        self.state.lock().unwrap().keys[family(alg)].jwk()
    }
}

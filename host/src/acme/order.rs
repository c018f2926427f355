//! One ACME order (RFC 8555 §7.4) through `instant-acme`: a new order for
//! one name, its challenge answered by this host's ingress (HTTP-01 on the
//! plain-HTTP listener, with the answer also in the store for whichever
//! host the CA reaches; or TLS-ALPN-01 on the TLS listener), then the CSR,
//! the certificate, and the dates it is valid between.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, CustomExtension, KeyPair};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::records::Answer;
use crate::config::AcmeChallenge;
use crate::ingress::certs::AcmeCerts;
use crate::store::{encode, key, Store, Txn};

/// Longest the CA may take to validate and issue, once asked.
const POLL_LIMIT: Duration = Duration::from_secs(60);

/// What an order gives: the chain (PEM), its key (PKCS#8 PEM), and the
/// dates it is valid between.
pub struct Issued {
    pub chain_pem: String,
    pub key_pem: String,
    pub valid: (DateTime<Utc>, DateTime<Utc>),
}

/// Orders a certificate for `name`, answering its challenge in `certs`
/// (and in the store, for HTTP-01) until the order ends.
pub async fn order(
    account: &Account,
    name: &str,
    challenge: AcmeChallenge,
    certs: &AcmeCerts,
    store: &Store,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Issued> {
    let identifiers = [Identifier::Dns(name.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(problem("the CA refused the order"))?;
    // Withdrawn however the order ends, a dropped one included.
    let mut answering = Answering {
        certs,
        store: store.clone(),
        name: name.to_string(),
        tokens: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(problem("reading the authorization"))?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => anyhow::bail!("the authorization for {name} is {status:?}"),
        }
        let kind = match challenge {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut handle = authorization
            .challenge(kind.clone())
            .with_context(|| format!("the CA offers no {kind:?} challenge for {name}"))?;
        let key_authorization = handle.key_authorization();
        let token = handle.token.clone();
        answering.tokens.push(token.clone());
        match challenge {
            AcmeChallenge::Http01 => {
                let until = Utc::now() + chrono::Duration::minutes(10);
                let answer = Answer {
                    key_authorization: key_authorization.as_str().to_string(),
                    until,
                };
                store
                    .commit(Txn::new().put(key::acme_challenge(&token), encode(&answer)))
                    .await
                    .context("writing the challenge's answer to the store")?;
                anyhow::ensure!(
                    certs.answer_http(&token, key_authorization.as_str()),
                    "too many challenges are being answered"
                );
            }
            AcmeChallenge::TlsAlpn01 => {
                let cert = alpn_certificate(name, key_authorization.digest().as_ref(), provider)?;
                anyhow::ensure!(
                    certs.answer_alpn(name, cert),
                    "too many challenges are being answered"
                );
            }
        }
        handle
            .set_ready()
            .await
            .map_err(problem("telling the CA the challenge is ready"))?;
    }
    finish(&mut order, name).await
}

/// The challenges an order answers: withdrawn from the ingress and the
/// store however the order ends.
struct Answering<'a> {
    certs: &'a AcmeCerts,
    store: Store,
    name: String,
    tokens: Vec<String>,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.certs.withdraw(&self.name, token);
        }
        let (store, tokens) = (self.store.clone(), std::mem::take(&mut self.tokens));
        if tokens.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for token in tokens {
                    let _ = store
                        .commit(Txn::new().delete(key::acme_challenge(&token)))
                        .await;
                }
            });
        }
    }
}

/// Waits for the order to be ready, sends the CSR, and fetches the chain.
async fn finish(order: &mut instant_acme::Order, name: &str) -> anyhow::Result<Issued> {
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(200))
        .backoff(1.5)
        .timeout(POLL_LIMIT);
    let status = order
        .poll_ready(&retries)
        .await
        .map_err(problem("waiting for the CA to validate"))?;
    if status != OrderStatus::Ready {
        let why = validation_error(order)
            .await
            .unwrap_or_else(|| format!("the order is {status:?}"));
        anyhow::bail!("validation of {name} failed: {why}");
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(problem("sending the certificate request"))?;
    let chain_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(problem("fetching the certificate"))?;
    let valid = validity(&chain_pem)?;
    Ok(Issued {
        chain_pem,
        key_pem,
        valid,
    })
}

/// Why the CA found a challenge invalid, as its problem document says.
async fn validation_error(order: &mut instant_acme::Order) -> Option<String> {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        for challenge in &authorization.challenges {
            if let Some(error) = &challenge.error {
                return Some(describe(error));
            }
        }
    }
    None
}

/// A problem document in one line.
fn describe(problem: &instant_acme::Problem) -> String {
    match (&problem.detail, &problem.r#type) {
        (Some(detail), _) => detail.clone(),
        (None, Some(kind)) => kind.clone(),
        (None, None) => "no reason given".to_string(),
    }
}

/// Maps an `instant-acme` error to one line saying what was being done.
fn problem(doing: &'static str) -> impl Fn(instant_acme::Error) -> anyhow::Error {
    move |e| match e {
        instant_acme::Error::Api(p) => anyhow::anyhow!("{doing}: {}", describe(&p)),
        other => anyhow::anyhow!("{doing}: {other}"),
    }
}

/// The self-signed certificate that answers a TLS-ALPN-01 challenge for
/// `name` (RFC 8737 §3): the key authorization's digest in its
/// `acmeIdentifier` extension.
fn alpn_certificate(
    name: &str,
    digest: &[u8],
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.custom_extensions = vec![CustomExtension::new_acme_identifier(digest)];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    certified(vec![cert.der().clone()], key.serialize_der(), provider)
}

/// A chain and a PKCS#8 key as rustls serves them.
pub fn certified(
    chain: Vec<CertificateDer<'static>>,
    pkcs8: Vec<u8>,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8));
    let signing = provider
        .key_provider
        .load_private_key(der)
        .context("loading a certificate's key")?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// The dates the leaf of a PEM chain is valid between.
pub fn validity(chain_pem: &str) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .context("reading the certificate")?;
    let cert = pem.parse_x509().context("reading the certificate")?;
    let validity = cert.validity();
    let at = |t: x509_parser::time::ASN1Time| {
        DateTime::<Utc>::from_timestamp(t.timestamp(), 0).context("a certificate date out of range")
    };
    Ok((at(validity.not_before)?, at(validity.not_after)?))
}

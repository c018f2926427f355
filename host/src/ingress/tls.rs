//! TLS for the ingress. With `--tls-cert` and `--tls-key` the ingress
//! serves that certificate. Without them it acts as its own small
//! certificate authority: a CA made at first start and kept in
//! `DATA/tls/` (`ca.pem` is what clients trust, e.g. `curl --cacert`)
//! issues a certificate for each host name clients ask for (SNI) the first
//! time it is asked, so every endpoint host is served over real TLS.
//! Certificates from ACME (`certs.rs`) come first for the names they
//! cover.

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::certs::{AcmeCerts, ACME_TLS_ALPN};

/// The CA certificate clients trust, under the data directory.
pub const CA_FILE: &str = "tls/ca.pem";
const CA_KEY_FILE: &str = "tls/ca.key";
/// Name used when a client sends no SNI (e.g. it connected by IP).
const DEFAULT_NAME: &str = "localhost";
/// Most certificates the local CA keeps issued at once.
const MAX_LOCAL_NAMES: usize = 4096;

/// A TLS acceptor for the ingress: certificates from ACME (when `acme`
/// is given) by SNI, else the given certificate, or the local CA's.
pub fn acceptor(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    acme: Option<Arc<AcmeCerts>>,
) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_no_client_auth();
    let fallback = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading the certificate {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            let signing = provider
                .key_provider
                .load_private_key(key)
                .context("using the given private key")?;
            Fallback::Given(Arc::new(CertifiedKey::new(chain, signing)))
        }
        (None, None) => Fallback::Local(Box::new(LocalCa::open(data_dir, provider)?)),
        _ => anyhow::bail!("give both --tls-cert and --tls-key, or neither"),
    };
    let alpn_challenges = acme.as_ref().is_some_and(|a| a.tls_alpn);
    let mut config = builder.with_cert_resolver(Arc::new(Resolver { acme, fallback }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if alpn_challenges {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Picks each handshake's certificate: ACME's for its name, else the
/// fallback.
#[derive(Debug)]
struct Resolver {
    acme: Option<Arc<AcmeCerts>>,
    fallback: Fallback,
}

/// The certificate served for names ACME has none for.
#[derive(Debug)]
enum Fallback {
    /// `--tls-cert`, for every name.
    Given(Arc<CertifiedKey>),
    /// The local CA's, one per name.
    Local(Box<LocalCa>),
}

impl fmt::Debug for AcmeCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeCerts").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()
            .unwrap_or(DEFAULT_NAME)
            .to_ascii_lowercase();
        if let Some(acme) = &self.acme {
            // A validator offers acme-tls/1 and nothing else.
            let challenge = hello
                .alpn()
                .is_some_and(|mut offered| offered.all(|p| p == ACME_TLS_ALPN));
            match acme.resolve(&name, challenge) {
                Ok(Some(cert)) => return Some(cert),
                Ok(None) => {}
                Err(()) => {
                    tracing::debug!(%name, challenge, "no ACME certificate for this name yet");
                    return None;
                }
            }
        }
        match &self.fallback {
            Fallback::Given(cert) => Some(cert.clone()),
            Fallback::Local(ca) => ca.resolve_name(name),
        }
    }
}

/// Issues and caches one certificate per host name, signed by the CA.
struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    ca: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
    issued: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

/// The CA's parameters: the same at every start, so a CA key read back from
/// disk signs certificates that chain to the `ca.pem` written at first start.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "mesh local CA");
    name.push(DnType::OrganizationName, "mesh");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl LocalCa {
    fn open(data_dir: &Path, provider: Arc<CryptoProvider>) -> anyhow::Result<LocalCa> {
        let (cert_path, key_path) = (data_dir.join(CA_FILE), data_dir.join(CA_KEY_FILE));
        if !cert_path.is_file() || !key_path.is_file() {
            create_ca(&cert_path, &key_path)?;
        }
        let key = std::fs::read_to_string(&key_path)
            .map_err(anyhow::Error::from)
            .and_then(|pem| Ok(KeyPair::from_pem(&pem)?))
            .with_context(|| format!("reading the CA key {}", key_path.display()))?;
        let ca = CertificateDer::from_pem_file(&cert_path)
            .with_context(|| format!("reading the CA certificate {}", cert_path.display()))?;
        Ok(LocalCa {
            issuer: Issuer::new(ca_params()?, key),
            ca,
            provider,
            issued: Mutex::new(HashMap::new()),
        })
    }

    fn issue(&self, host: &str) -> anyhow::Result<Arc<CertifiedKey>> {
        let mut params = CertificateParams::new(vec![host.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, host);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = self
            .provider
            .key_provider
            .load_private_key(der)
            .context("loading an issued key")?;
        Ok(Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.ca.clone()],
            signing,
        )))
    }
}

impl LocalCa {
    /// The certificate for `host`, issued the first time it is asked for.
    /// At most [`MAX_LOCAL_NAMES`] are kept: a client naming ever new
    /// hosts cannot grow the cache without end.
    fn resolve_name(&self, host: String) -> Option<Arc<CertifiedKey>> {
        let mut issued = self.issued.lock();
        if let Some(key) = issued.get(&host) {
            return Some(key.clone());
        }
        if issued.len() >= MAX_LOCAL_NAMES {
            issued.clear();
        }
        match self.issue(&host) {
            Ok(key) => {
                issued.insert(host, key.clone());
                Some(key)
            }
            Err(e) => {
                tracing::warn!(%host, error = %format!("{e:#}"), "cannot issue a certificate");
                None
            }
        }
    }
}

fn create_ca(cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = KeyPair::generate()?;
    let cert = ca_params()?.self_signed(&key)?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    tracing::info!(ca = %cert_path.display(), "made a local certificate authority for HTTPS endpoints");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}

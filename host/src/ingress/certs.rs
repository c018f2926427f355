//! Certificates an ACME server issued, and the answers to its challenges,
//! as the ingress serves them: the ACME manager (`crate::acme`) fills
//! [`AcmeCerts`]; the TLS listener picks a certificate by SNI from it
//! (the local CA's, or the operator's, for any other name), answers a
//! TLS-ALPN-01 validation (`acme-tls/1`) with its challenge certificate,
//! and the plain-HTTP listener answers HTTP-01 at
//! `/.well-known/acme-challenge/TOKEN`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;
use tokio_rustls::rustls::sign::CertifiedKey;

use crate::services::code::BoxFuture;

/// The path prefix of HTTP-01 challenges (RFC 8555 §8.3).
pub const HTTP_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// The ALPN protocol of TLS-ALPN-01 validations (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Most HTTP-01 answers (and challenge certificates) held at once.
pub const MAX_CHALLENGES: usize = 1024;
/// Store look-ups of HTTP-01 answers at once.
const MAX_LOOKUPS: usize = 8;
/// Longest HTTP-01 token accepted in a request path.
const MAX_TOKEN_BYTES: usize = 128;

/// Finds the answer to an HTTP-01 challenge this host did not start (in a
/// cluster another host ordered the name and wrote it to the store).
pub trait ChallengeLookup: Send + Sync + 'static {
    /// The key authorization for `token`, if a host is answering it.
    fn answer(&self, token: &str) -> BoxFuture<'static, Option<String>>;
}

/// What the ingress serves from ACME.
pub struct AcmeCerts {
    /// Issued certificates with their keys, by host name.
    issued: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates, by host name.
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    /// HTTP-01 key authorizations, by token.
    http: RwLock<HashMap<String, String>>,
    /// Names ACME is responsible for: with `only`, such a name without an
    /// issued certificate gets none rather than the local CA's.
    managed: RwLock<HashSet<String>>,
    /// `--acme-only`.
    only: bool,
    /// Whether the TLS listener offers `acme-tls/1`.
    pub tls_alpn: bool,
    /// Where answers this host lacks are looked up.
    lookup: OnceLock<Arc<dyn ChallengeLookup>>,
    /// Look-ups at once: a client asking for made-up tokens costs the
    /// store at most this many reads at a time.
    lookups: tokio::sync::Semaphore,
}

impl AcmeCerts {
    /// Nothing issued yet; `only` is `--acme-only`, `tls_alpn` whether
    /// TLS-ALPN-01 is the challenge answered.
    pub fn new(only: bool, tls_alpn: bool) -> Arc<AcmeCerts> {
        Arc::new(AcmeCerts {
            issued: RwLock::default(),
            alpn: RwLock::default(),
            http: RwLock::default(),
            managed: RwLock::default(),
            only,
            tls_alpn,
            lookup: OnceLock::new(),
            lookups: tokio::sync::Semaphore::new(MAX_LOOKUPS),
        })
    }

    /// Looks answers this host lacks up with `lookup` from now on.
    pub fn look_up_with(&self, lookup: Arc<dyn ChallengeLookup>) {
        let _ = self.lookup.set(lookup);
    }

    /// Serves these certificates from now on, and counts these names as
    /// ACME's.
    pub fn set_issued(&self, issued: HashMap<String, Arc<CertifiedKey>>, managed: HashSet<String>) {
        *self.issued.write() = issued;
        *self.managed.write() = managed;
    }

    /// Serves `cert` for `name` from now on (one just issued here).
    pub fn add_issued(&self, name: &str, cert: Arc<CertifiedKey>) {
        self.issued.write().insert(name.to_string(), cert);
    }

    /// The certificate issued for `name`, if any.
    pub fn issued(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.issued.read().get(name).cloned()
    }

    /// Answers HTTP-01 `token` with `key_authorization` until it is
    /// withdrawn; false when too many are held.
    pub fn answer_http(&self, token: &str, key_authorization: &str) -> bool {
        let mut http = self.http.write();
        if http.len() >= MAX_CHALLENGES {
            return false;
        }
        http.insert(token.to_string(), key_authorization.to_string());
        true
    }

    /// Answers TLS-ALPN-01 for `name` with `cert`; false when too many
    /// are held.
    pub fn answer_alpn(&self, name: &str, cert: Arc<CertifiedKey>) -> bool {
        let mut alpn = self.alpn.write();
        if alpn.len() >= MAX_CHALLENGES {
            return false;
        }
        alpn.insert(name.to_string(), cert);
        true
    }

    /// Stops answering the challenges of `name` and `token`.
    pub fn withdraw(&self, name: &str, token: &str) {
        self.alpn.write().remove(name);
        self.http.write().remove(token);
    }

    /// The HTTP-01 answer for a request path, if it is a challenge's:
    /// `Some(None)` for a challenge path nobody answers.
    pub async fn http_answer(&self, path: &str) -> Option<Option<String>> {
        let token = path.strip_prefix(HTTP_CHALLENGE_PREFIX)?;
        let valid = !token.is_empty()
            && token.len() <= MAX_TOKEN_BYTES
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Some(None);
        }
        if let Some(answer) = self.http.read().get(token).cloned() {
            return Some(Some(answer));
        }
        let (Some(lookup), Ok(_permit)) = (self.lookup.get(), self.lookups.try_acquire()) else {
            return Some(None);
        };
        Some(lookup.answer(token).await)
    }

    /// The certificate for a TLS handshake: a TLS-ALPN-01 challenge's
    /// when the client offers only `acme-tls/1`, else the one issued for
    /// the name. `Err(())` when the name is ACME's, has none yet, and
    /// `--acme-only` says to serve no other.
    pub(super) fn resolve(
        &self,
        name: &str,
        alpn_challenge: bool,
    ) -> Result<Option<Arc<CertifiedKey>>, ()> {
        if alpn_challenge {
            return match self.alpn.read().get(name) {
                Some(cert) => Ok(Some(cert.clone())),
                None => Err(()),
            };
        }
        if let Some(cert) = self.issued.read().get(name) {
            return Ok(Some(cert.clone()));
        }
        if self.only && self.managed.read().contains(name) {
            return Err(());
        }
        Ok(None)
    }
}

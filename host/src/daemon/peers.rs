//! The other hosts of a cluster, as this one reaches them: code this host
//! lacks is fetched from whichever live host holds it, by digest, and
//! checked against the digest on arrival.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::api::wire::HereInstances;
use crate::api::OtherHosts;
use crate::model::Digest;
use crate::services::code::BoxFuture;
use crate::services::Fetch;
use crate::store::Store;

/// Longest one host may take to send a piece of code.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Fetches code from the other hosts.
#[derive(Clone)]
pub struct Peers {
    store: Store,
    /// This host's name (never asked).
    me: String,
    /// The operator's token the hosts share.
    token: String,
    /// Largest code accepted (the upload limit).
    max_bytes: usize,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Peers {
    /// Peers of host `me`, reached with `token`.
    pub fn new(store: Store, me: String, token: String, max_bytes: u64) -> Arc<Peers> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Arc::new(Peers {
            store,
            me,
            token,
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// A GET of `path` on the host at `address`, with the shared token:
    /// its status and body (at most `limit` bytes).
    async fn get(
        &self,
        address: &str,
        path: &str,
        limit: usize,
    ) -> Result<(http::StatusCode, Bytes), String> {
        let request = http::Request::get(format!("http://{address}{path}"))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| format!("reading its answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }

    /// The code from the host at `address`.
    async fn fetch_from(&self, address: &str, digest: &Digest) -> Result<Vec<u8>, String> {
        let (status, body) = self
            .get(address, &format!("/v1/code/{digest}"), self.max_bytes)
            .await?;
        if !status.is_success() {
            return Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let bytes = body.to_vec();
        let got = tokio::task::spawn_blocking(move || (Digest::of(&bytes), bytes))
            .await
            .map_err(|e| e.to_string())?;
        if got.0 != *digest {
            return Err(format!("it sent code whose digest is {}", got.0.short()));
        }
        Ok(got.1)
    }
}

/// Longest another host may take to say what it runs.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest answer about what another host runs.
const MAX_ANSWER_BYTES: usize = 64 << 20;

impl OtherHosts for Peers {
    fn instances(&self, env: &str) -> BoxFuture<'static, Vec<HereInstances>> {
        let peers = self.clone();
        let path = format!("/v1/here/instances?env={env}");
        Box::pin(async move {
            let Ok(hosts) = peers.store.nodes().await else {
                return Vec::new();
            };
            let asks = hosts
                .live
                .iter()
                .filter(|h| h.name != peers.me)
                .map(|host| {
                    let peers = &peers;
                    let path = &path;
                    async move {
                        let answer = tokio::time::timeout(
                            ASK_TIMEOUT,
                            peers.get(&host.address, path, MAX_ANSWER_BYTES),
                        )
                        .await;
                        match answer {
                            Ok(Ok((status, body))) if status.is_success() => {
                                serde_json::from_slice::<Vec<HereInstances>>(&body)
                                    .unwrap_or_default()
                            }
                            _ => {
                                tracing::debug!(node = %host.name, "no answer about its instances");
                                Vec::new()
                            }
                        }
                    }
                });
            futures::future::join_all(asks)
                .await
                .into_iter()
                .flatten()
                .collect()
        })
    }
}

impl Fetch for Peers {
    fn fetch(&self, digest: &Digest) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let digest = digest.clone();
        let peers = self.clone();
        Box::pin(async move {
            let hosts = peers
                .store
                .nodes()
                .await
                .map_err(|e| format!("listing the hosts: {e:#}"))?;
            let mut failures = Vec::new();
            for host in hosts.live.iter().filter(|h| h.name != peers.me) {
                let fetched =
                    tokio::time::timeout(FETCH_TIMEOUT, peers.fetch_from(&host.address, &digest))
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer in {FETCH_TIMEOUT:?}")));
                match fetched {
                    Ok(bytes) => {
                        tracing::info!(digest = digest.short(), from = %host.name, bytes = bytes.len(), "fetched code from another host");
                        return Ok(bytes);
                    }
                    Err(e) => failures.push(format!("{}: {e}", host.name)),
                }
            }
            Err(format!(
                "code {} is not stored on this host, and no other host sent it ({})",
                digest.short(),
                if failures.is_empty() {
                    "no other host is up".to_string()
                } else {
                    failures.join("; ")
                }
            ))
        })
    }
}

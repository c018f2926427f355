//! What ACME keeps in the state store, so every host of a cluster serves
//! the same certificates and one host at a time orders a name: each
//! name's certificate (its key sealed with the hosts' sealing key) and how
//! its orders went, the account, the locks, and the HTTP-01 answers.

use chrono::{DateTime, Duration as Span, Utc};
use serde::{Deserialize, Serialize};

use crate::sealed::Sealed;

/// Orders one name may start in an hour, whatever fails.
pub const MAX_ORDERS_PER_HOUR: usize = 5;
/// The first wait after a failed order; it doubles with each failure.
pub const FIRST_RETRY: Span = Span::seconds(30);
/// The longest wait between two orders of a failing name.
pub const MAX_RETRY: Span = Span::hours(6);

/// `/acme/certs/NAME`: a host name's certificate and its orders.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CertRecord {
    /// The host name.
    pub name: String,
    /// The environment whose endpoint it is.
    pub env: String,
    /// The certificate chain (PEM), leaf first, once issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_pem: Option<String>,
    /// Its private key (PKCS#8 PEM), sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Sealed>,
    /// When it was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
    /// When it stops being valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it is renewed: two thirds into its life, with jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<DateTime<Utc>>,
    /// Why the last order failed, until one succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Failed orders in a row.
    #[serde(default)]
    pub failures: u32,
    /// No order before then (after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try: Option<DateTime<Utc>>,
    /// When its orders of the last hour started.
    #[serde(default)]
    pub orders: Vec<DateTime<Utc>>,
}

impl CertRecord {
    /// A name with nothing ordered yet.
    pub fn new(name: &str, env: &str) -> CertRecord {
        CertRecord {
            name: name.to_string(),
            env: env.to_string(),
            ..CertRecord::default()
        }
    }

    /// Whether an order for the name should start now: it has no valid
    /// certificate or its renewal is due, it is not waiting out a
    /// failure, and its orders of the last hour are under the ceiling.
    pub fn due(&self, now: DateTime<Utc>) -> bool {
        let wanted = match (&self.chain_pem, self.renew_at) {
            (Some(_), Some(renew_at)) => now >= renew_at,
            _ => true,
        };
        let waiting = self.next_try.is_some_and(|t| now < t);
        wanted && !waiting && self.orders_since(now - Span::hours(1)) < MAX_ORDERS_PER_HOUR
    }

    /// Orders started after `since`.
    pub fn orders_since(&self, since: DateTime<Utc>) -> usize {
        self.orders.iter().filter(|t| **t > since).count()
    }

    /// Counts an order starting now (keeping only the last hour's).
    pub fn ordering(&mut self, now: DateTime<Utc>) {
        self.orders.retain(|t| *t > now - Span::hours(1));
        self.orders.push(now);
    }

    /// Records a failed order: why, and the back-off before the next
    /// (doubling from 30 s to 6 h, with up to a tenth more of jitter).
    pub fn failed(&mut self, why: String, now: DateTime<Utc>, jitter: f64) {
        self.last_error = Some(why);
        let wait = FIRST_RETRY
            .checked_mul(1 << self.failures.min(16))
            .unwrap_or(MAX_RETRY)
            .min(MAX_RETRY);
        let extra = Span::milliseconds((wait.num_milliseconds() as f64 * 0.1 * jitter) as i64);
        self.failures = self.failures.saturating_add(1);
        self.next_try = Some(now + wait + extra);
    }

    /// Records an issued certificate, renewed two thirds into its life
    /// (less up to a twentieth of it, so names issued together do not
    /// renew together).
    pub fn issued(
        &mut self,
        chain_pem: String,
        key: Sealed,
        valid: (DateTime<Utc>, DateTime<Utc>),
        now: DateTime<Utc>,
        jitter: f64,
    ) {
        let (not_before, not_after) = valid;
        let life = not_after - not_before;
        let early = Span::milliseconds((life.num_milliseconds() as f64 / 20.0 * jitter) as i64);
        self.chain_pem = Some(chain_pem);
        self.key = Some(key);
        self.issued_at = Some(now);
        self.expires_at = Some(not_after);
        self.renew_at = Some(not_before + life * 2 / 3 - early);
        self.last_error = None;
        self.failures = 0;
        self.next_try = None;
    }
}

/// `/acme/locks/NAME`: the host ordering a name, until when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lock {
    /// The host.
    pub holder: String,
    /// After this the lock is free again (its holder died mid-order).
    pub until: DateTime<Utc>,
}

/// `/acme/challenges/TOKEN`: an HTTP-01 answer, for any host.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    /// The key authorization the CA expects.
    pub key_authorization: String,
    /// After this it is stale.
    pub until: DateTime<Utc>,
}

/// A name's certificate as `mesh domain ls` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainStatus {
    /// The host name.
    pub name: String,
    /// The environment whose endpoint it is.
    pub env: String,
    /// `issued`, `pending` (not yet, or renewing) or `failed`.
    pub state: String,
    /// When the certificate served was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<DateTime<Utc>>,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it is renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<DateTime<Utc>>,
    /// Why the last order failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next order may start, after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try: Option<DateTime<Utc>>,
    /// Orders started in the last hour.
    pub orders_last_hour: usize,
}

impl DomainStatus {
    /// What `record` says, as of `now`.
    pub fn of(record: &CertRecord, now: DateTime<Utc>) -> DomainStatus {
        let valid = record.chain_pem.is_some() && record.expires_at.is_some_and(|t| t > now);
        let state = match (valid, &record.last_error) {
            (true, _) => "issued",
            (false, Some(_)) => "failed",
            (false, None) => "pending",
        };
        DomainStatus {
            name: record.name.clone(),
            env: record.env.clone(),
            state: state.to_string(),
            issued_at: record.issued_at,
            expires_at: record.expires_at,
            renew_at: record.renew_at,
            last_error: record.last_error.clone(),
            next_try: record.next_try,
            orders_last_hour: record.orders_since(now - Span::hours(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_name_backs_off_and_is_capped_per_hour() {
        let now = Utc::now();
        let mut record = CertRecord::new("shop.example.com", "default");
        assert!(record.due(now));
        record.ordering(now);
        record.failed("refused".into(), now, 0.0);
        assert!(!record.due(now + Span::seconds(29)));
        assert!(record.due(now + Span::seconds(30)));
        record.ordering(now + Span::seconds(30));
        record.failed("refused".into(), now + Span::seconds(30), 0.0);
        // 60 s after the second failure.
        assert!(!record.due(now + Span::seconds(89)));
        assert!(record.due(now + Span::seconds(90)));
        // Five orders in an hour, however short the waits.
        let mut busy = CertRecord::new("x.example.com", "default");
        for i in 0..5 {
            busy.ordering(now + Span::seconds(i));
        }
        assert!(!busy.due(now + Span::seconds(10)));
        assert!(busy.due(now + Span::minutes(61)));
        // The wait stops doubling at 6 h.
        let mut long = CertRecord::new("y.example.com", "default");
        long.failures = 30;
        long.failed("refused".into(), now, 1.0);
        assert_eq!(long.next_try, Some(now + MAX_RETRY + Span::minutes(36)));
    }

    #[test]
    fn a_certificate_renews_two_thirds_into_its_life() {
        let now = Utc::now();
        let mut record = CertRecord::new("shop.example.com", "default");
        let sealed = Sealed {
            nonce: String::new(),
            data: String::new(),
        };
        record.issued("PEM".into(), sealed, (now, now + Span::days(90)), now, 0.0);
        assert_eq!(record.renew_at, Some(now + Span::days(60)));
        assert!(!record.due(now + Span::days(59)));
        assert!(record.due(now + Span::days(60)));
        assert_eq!(DomainStatus::of(&record, now).state, "issued");
        assert_eq!(
            DomainStatus::of(&record, now + Span::days(91)).state,
            "pending"
        );
    }
}

//! Environments (tenants) and their outbound policy.

use std::fmt;

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

/// A tenant: owns stacks and a token; nothing in one environment sees
/// another.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Environment {
    /// DNS-label name, e.g. `default`.
    pub name: String,
    /// sha256 (hex) of the environment's API token; the token itself is
    /// never stored.
    pub token_sha256: String,
    /// When the environment was created.
    pub created_at: DateTime<Utc>,
    /// Where its services may connect outside the platform.
    #[serde(default)]
    pub outbound: Outbound,
}

/// An environment's outbound policy: where its guests may connect, by
/// `wasi:http` (matched on host and port) or raw `wasi:sockets` TCP
/// (matched on IP literals and `localhost`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outbound {
    /// Anywhere (the default: services reach the internet).
    #[default]
    Allow,
    /// Nowhere outside the platform (intra-DNS names still work).
    Deny,
    /// Only `host[:port]` patterns; `*.example.com` matches subdomains.
    AllowList(Vec<String>),
}

impl Outbound {
    /// Parses `allow`, `deny` or a comma-separated list of `host[:port]`.
    pub fn parse(text: &str) -> Result<Outbound, String> {
        match text.trim() {
            "allow" => return Ok(Outbound::Allow),
            "deny" => return Ok(Outbound::Deny),
            _ => {}
        }
        let mut patterns = Vec::new();
        for pattern in text.split(',').map(str::trim) {
            let (host, port) = split_pattern(pattern);
            let host_ok = !host.is_empty()
                && host
                    .trim_start_matches("*.")
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !host_ok || port.is_some_and(|p| p.parse::<u16>().is_err()) {
                return Err(format!(
                    "invalid outbound policy `{text}`: use allow, deny, or host[:port] patterns separated by commas (e.g. api.stripe.com:443,*.example.com,127.0.0.1:6379)"
                ));
            }
            patterns.push(pattern.to_ascii_lowercase());
        }
        Ok(Outbound::AllowList(patterns))
    }

    /// Whether a connection to `host` (a name or IP literal) and `port`
    /// is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        match self {
            Outbound::Allow => true,
            Outbound::Deny => false,
            Outbound::AllowList(patterns) => patterns.iter().any(|p| {
                let (p_host, p_port) = split_pattern(p);
                let host_ok = match p_host.strip_prefix("*.") {
                    Some(suffix) => host.ends_with(&format!(".{suffix}")),
                    None => host == p_host,
                };
                host_ok && p_port.is_none_or(|p| p.parse() == Ok(port))
            }),
        }
    }

    /// The plain host names (no wildcard, no IP literal) an allow-list
    /// lets reach `port`: raw sockets connect to addresses, so these are
    /// resolved to see whether an address is one of theirs.
    pub fn names_for_port(&self, port: u16) -> Vec<String> {
        let Outbound::AllowList(patterns) = self else {
            return Vec::new();
        };
        patterns
            .iter()
            .filter_map(|p| {
                let (host, p_port) = split_pattern(p);
                let named = !host.starts_with("*.") && host.parse::<std::net::IpAddr>().is_err();
                (named && p_port.is_none_or(|p| p.parse() == Ok(port))).then(|| host.to_string())
            })
            .collect()
    }
}

/// `host[:port]` of an allow-list pattern (the port as written; `parse`
/// checks it is a number).
fn split_pattern(pattern: &str) -> (&str, Option<&str>) {
    match pattern.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (pattern, None),
    }
}

impl fmt::Display for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outbound::Allow => f.write_str("allow"),
            Outbound::Deny => f.write_str("deny"),
            Outbound::AllowList(patterns) => write!(f, "allow only {}", patterns.join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_policies_match_hosts_and_ports() {
        let list = Outbound::parse("api.stripe.com:443, *.example.com,127.0.0.1:6379").unwrap();
        assert!(list.allows("api.stripe.com", 443));
        assert!(!list.allows("api.stripe.com", 80));
        assert!(list.allows("www.example.com", 80));
        assert!(!list.allows("example.com", 80));
        assert!(list.allows("127.0.0.1", 6379));
        // Raw sockets resolve the plain names that cover the port.
        let list =
            Outbound::parse("db.internal:5432,cache:6379,*.example.com,10.0.0.1,queue").unwrap();
        assert_eq!(list.names_for_port(5432), ["db.internal", "queue"]);
        assert_eq!(list.names_for_port(6379), ["cache", "queue"]);
        assert!(Outbound::Deny.names_for_port(80).is_empty());
        assert!(!list.allows("127.0.0.1", 6380));
        assert!(Outbound::Allow.allows("anything", 1));
        assert!(!Outbound::Deny.allows("anything", 1));
        assert!(Outbound::parse("bad host!").is_err());
        assert!(Outbound::parse("x.com:99999").is_err());
        assert_eq!(Outbound::parse("deny").unwrap(), Outbound::Deny);
    }
}

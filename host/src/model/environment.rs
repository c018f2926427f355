//! Environments (tenants) and their outbound policy.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use super::net::{special, Cidr};

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
    /// Non-public address ranges (loopback, private, link-local) the
    /// operator lets its guests reach; none by default.
    #[serde(default)]
    pub reach: Vec<Cidr>,
    /// Custom domains the operator assigned to it: it may publish
    /// endpoints on each and on its subdomains.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Limits the operator set; `None` takes the defaults for its kind.
    #[serde(default)]
    pub quotas: Option<Quotas>,
}

/// What one environment may use in all.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quotas {
    /// Instances of all its services together (a cron job counts one).
    pub max_instances: u32,
    /// Memory limits of all its instances added up, in bytes.
    pub max_memory_bytes: u64,
    /// Code its stacks keep (every kept version's components), in bytes.
    pub max_code_bytes: u64,
    /// Services.
    pub max_services: u32,
    /// Tasks (processes and threads) of all its containers together.
    #[serde(default = "default_max_tasks")]
    pub max_tasks: u32,
}

fn default_max_tasks() -> u32 {
    Quotas::TENANT.max_tasks
}

impl Quotas {
    /// A new tenant's limits, until the operator changes them.
    pub const TENANT: Quotas = Quotas {
        max_instances: 50,
        max_memory_bytes: 4 << 30,
        max_code_bytes: 256 << 20,
        max_services: 20,
        max_tasks: 2048,
    };
}

/// Where an environment's guests may connect: its policy on names and
/// ports, and the non-public ranges the operator opened for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Egress {
    /// The policy on host names and ports.
    pub policy: Outbound,
    /// Non-public ranges it may reach anyway.
    pub reach: Vec<Cidr>,
}

impl Egress {
    /// The egress of `env`.
    pub fn of(env: &Environment) -> Egress {
        Egress {
            policy: env.outbound.clone(),
            reach: env.reach.clone(),
        }
    }

    /// Whether a connection the guest asked for by `host` (a name or IP
    /// literal) may go to the address `ip` it resolved to. A non-public
    /// address needs a range the operator opened, or an allow-list entry
    /// naming that very address: a name resolving to one is refused, so
    /// DNS cannot point a guest at the host's loopback or the metadata
    /// service.
    pub fn check_address(&self, host: &str, ip: IpAddr, port: u16) -> Result<(), String> {
        let Some(kind) = special(ip) else {
            return Ok(());
        };
        let named_literally = matches!(&self.policy, Outbound::AllowList(_))
            && self.policy.allows(&ip.to_string(), port);
        if named_literally || self.reach.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        let via = if host.parse::<IpAddr>().is_ok() {
            String::new()
        } else {
            format!(" ({host} resolves to it)")
        };
        Err(format!(
            "{ip} is {kind}{via}; the operator can open it with `mesh env update ENV --reach {ip}/32`"
        ))
    }
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
            word => {
                // One bare word close to a keyword is a typo, not a host
                // (`dney` would otherwise block all egress but to `dney`);
                // a list of patterns is not one word.
                let one_word = !word.contains([',', ':', '.', '*']);
                if let Some(meant) = one_word
                    .then(|| super::values::did_you_mean(word, &["allow", "deny"]))
                    .flatten()
                {
                    return Err(format!(
                        "invalid outbound policy `{word}`: did you mean `{meant}`? Use allow, deny, or host[:port] patterns separated by commas (e.g. api.stripe.com:443,*.example.com,127.0.0.1:6379)"
                    ));
                }
            }
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
        let typo = Outbound::parse("dney").unwrap_err();
        assert!(typo.contains("did you mean `deny`?"), "{typo}");
        assert!(Outbound::parse("alow").unwrap_err().contains("`allow`"));
        assert!(Outbound::parse("dns").is_ok(), "a host name far from both");
        // A list is not one word: it parses as it shows (found by the fuzz
        // test: `7, allow` parsed but `7,allow` did not).
        for text in ["7, allow", "7,allow", "deny.example.com"] {
            let policy = Outbound::parse(text).unwrap();
            let Outbound::AllowList(patterns) = &policy else {
                panic!("{text}")
            };
            assert_eq!(Outbound::parse(&patterns.join(",")).unwrap(), policy);
        }
        assert!(Outbound::parse("x.com:99999").is_err());
        assert_eq!(Outbound::parse("deny").unwrap(), Outbound::Deny);
    }

    #[test]
    fn non_public_addresses_need_the_operator() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let open = Egress::default();
        assert!(open
            .check_address("example.com", ip("93.184.215.14"), 80)
            .is_ok());
        for addr in ["127.0.0.1", "169.254.169.254", "10.0.0.1", "::1", "0.0.0.0"] {
            let err = open.check_address("x.example", ip(addr), 80).unwrap_err();
            assert!(err.contains("resolves to it"), "{err}");
        }
        // An allow-list naming the address itself opens it, on that port.
        let listed = Egress {
            policy: Outbound::parse("127.0.0.1:6379,cache:6379").unwrap(),
            reach: Vec::new(),
        };
        assert!(listed
            .check_address("127.0.0.1", ip("127.0.0.1"), 6379)
            .is_ok());
        assert!(listed
            .check_address("127.0.0.1", ip("127.0.0.1"), 6380)
            .is_err());
        assert!(listed.check_address("cache", ip("10.0.0.5"), 6379).is_err());
        // So does a range the operator opened.
        let reach = Egress {
            policy: Outbound::Allow,
            reach: vec![Cidr::parse("10.0.0.0/8").unwrap()],
        };
        assert!(reach.check_address("cache", ip("10.0.0.5"), 6379).is_ok());
        assert!(reach
            .check_address("cache", ip("192.168.0.5"), 6379)
            .is_err());
    }
}

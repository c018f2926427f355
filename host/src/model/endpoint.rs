//! Endpoints: public URLs bound to web services.

use serde::{Deserialize, Serialize};

/// A public URL bound to a web service: requests whose Host is `host`
/// (any port) and whose path is `path` or below it reach the service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// `http` or `https`, as the user wrote it (labels: `http`).
    pub scheme: String,
    /// Lowercase host name, without a port.
    pub host: String,
    /// Path prefix, `/` or `/a/b` (no trailing slash).
    pub path: String,
    /// Served over HTTPS only (`--https-only`): plain HTTP is redirected
    /// (ACME's challenge path excepted) and answers carry HSTS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hsts: bool,
}

impl Endpoint {
    /// Parses what `--endpoint` and `--path` say. A label (`www`, no dots,
    /// no scheme) is relative to the environment's alias domain; anything
    /// else is a host name or URL. The path comes from `--path` or from the
    /// URL, not both.
    pub fn parse(text: &str, path: Option<&str>, alias: &str) -> Result<Endpoint, String> {
        let text = text.trim();
        let bad = |why: &str| {
            format!("invalid endpoint `{text}`: {why}; use a label like `www` or a URL like https://top.example.com")
        };
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = scheme.to_ascii_lowercase();
                if scheme != "http" && scheme != "https" {
                    return Err(bad("the scheme must be http or https"));
                }
                (scheme, rest)
            }
            None => ("http".to_string(), text),
        };
        let (authority, url_path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        if authority.contains(['?', '#', '@']) || url_path.is_some_and(|p| p.contains(['?', '#'])) {
            return Err(bad("it may not have a query, fragment or user"));
        }
        let host = strip_port(authority)
            .map_err(|why| bad(&why))?
            .to_ascii_lowercase();
        let host = if text.contains("://") || host.contains('.') {
            host
        } else {
            format!("{host}.{alias}")
        };
        validate_host(&host).map_err(|why| bad(&why))?;
        let path = match (path, url_path) {
            (Some(_), Some(p)) if p != "/" => {
                return Err(format!(
                    "invalid endpoint `{text}`: give the path once, in the URL or with --path"
                ))
            }
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => "/",
        };
        Ok(Endpoint {
            scheme,
            host,
            path: normalize_path(path)?,
            hsts: false,
        })
    }

    /// Whether `other` names the same host and path, however served.
    pub fn same_place(&self, other: &Endpoint) -> bool {
        self.host == other.host && self.path == other.path && self.scheme == other.scheme
    }

    /// The endpoint as a URL: `https://top.example.com/blog`.
    pub fn url(&self) -> String {
        let path = if self.path == "/" { "" } else { &self.path };
        format!("{}://{}{path}", self.scheme, self.host)
    }

    /// The URL that reaches the endpoint through an ingress listening on
    /// `port`: the port is written unless it is the scheme's own (80 for
    /// http, 443 for https) or unknown.
    pub fn url_at(&self, port: Option<u16>) -> String {
        let default = if self.scheme == "https" { 443 } else { 80 };
        match port {
            Some(port) if port != default => {
                let path = if self.path == "/" { "" } else { &self.path };
                format!("{}://{}:{port}{path}", self.scheme, self.host)
            }
            _ => self.url(),
        }
    }

    /// Whether a request path falls under this endpoint's path, on segment
    /// boundaries: `/blog` takes `/blog` and `/blog/x`, not `/blogger`.
    pub fn covers(&self, path: &str) -> bool {
        self.path == "/"
            || path.strip_prefix(self.path.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')
            })
    }
}

/// Whether `host` is `domain` or one of its subdomains.
pub fn within(host: &str, domain: &str) -> bool {
    host.strip_suffix(domain)
        .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
}

/// Whether `host` is an IP address: a literal, or a name whose last label
/// is a number (`127.1`), which resolvers read as one.
pub fn is_ip_like(host: &str) -> bool {
    host.parse::<std::net::IpAddr>().is_ok()
        || host
            .rsplit('.')
            .next()
            .is_some_and(|label| label.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether environment `env` may publish on `host`. Each environment has
/// the label space `*.<env>.<alias>` (the operator's `default`: the single
/// labels `*.<alias>`) and the custom domains the operator assigned it
/// (`own`, each with its subdomains). The operator's environment may also
/// use any other domain no environment was assigned (`taken`). IP literals
/// and the bare alias belong to nobody.
pub fn may_publish(
    host: &str,
    env: &str,
    alias: &str,
    envs: &[String],
    own: &[String],
    taken: &[String],
) -> Result<(), String> {
    let under = |domain: &str| within(host, domain);
    if is_ip_like(host) {
        return Err(format!(
            "`{host}` is an IP address: endpoints are host names, like www or https://api.example.com"
        ));
    }
    if host == alias {
        return Err(format!(
            "`{host}` is the platform's alias itself: publish under it, like www.{alias}"
        ));
    }
    let default = env == super::DEFAULT_ENVIRONMENT;
    let space = if default {
        format!("*.{alias}")
    } else {
        format!("*.{env}.{alias}")
    };
    if let Some(rest) = host.strip_suffix(alias).and_then(|r| r.strip_suffix('.')) {
        let ok = if default {
            !rest.contains('.') && !envs.iter().any(|e| e == rest)
        } else {
            rest.strip_suffix(&format!(".{env}"))
                .is_some_and(|label| !label.is_empty())
        };
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "`{host}` is not in environment {env}'s name space ({space}); use a label like `www`"
            ))
        };
    }
    if own.iter().any(|d| under(d)) {
        return Ok(());
    }
    if default && !taken.iter().any(|d| under(d)) {
        return Ok(());
    }
    let domains = if own.is_empty() {
        "none; the operator assigns them with `mesh env update ENV --domain example.com`"
            .to_string()
    } else {
        own.join(", ")
    };
    Err(format!(
        "`{host}` is not in environment {env}'s name space ({space}) or its domains ({domains})"
    ))
}

fn strip_port(authority: &str) -> Result<&str, String> {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse::<u16>() {
            Ok(n) if n > 0 => Ok(host),
            _ => Err(format!("`{port}` is not a port (1-65535)")),
        },
        _ => Ok(authority),
    }
}

fn validate_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{host}` is not a valid host name"))
    }
}

/// RFC 3986 path characters: unreserved, sub-delims, `:`, `@`, `/`, and
/// `%` followed by two hex digits.
fn path_chars_ok(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)) {
            return false;
        }
        i += 1;
    }
    true
}

/// `/blog/` → `/blog`; a path must start with `/`.
fn normalize_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "invalid path `{path}`: it must start with `/`, e.g. /blog"
        ));
    }
    if path.contains("//") || path.split('/').any(|s| s == ".." || s == ".") || !path_chars_ok(path)
    {
        return Err(format!(
            "invalid path `{path}`: use plain segments like /blog or /api/v1 (letters, digits, -._~!$&'()*+,;=:@ and %XX escapes)"
        ));
    }
    let trimmed = path.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_from_labels_and_urls() {
        let e = Endpoint::parse("www", Some("/blog/"), "localhost").unwrap();
        assert_eq!(
            (e.host.as_str(), e.path.as_str()),
            ("www.localhost", "/blog")
        );
        assert_eq!(e.url(), "http://www.localhost/blog");
        let e = Endpoint::parse("https://Top.Widemesh.dev", None, "localhost").unwrap();
        assert_eq!(e.url(), "https://top.widemesh.dev");
        assert_eq!(e.url_at(Some(443)), "https://top.widemesh.dev");
        assert_eq!(e.url_at(Some(8443)), "https://top.widemesh.dev:8443");
        assert_eq!(e.url_at(None), "https://top.widemesh.dev");
        let e = Endpoint::parse("https://top.widemesh.dev:8443/api", None, "x").unwrap();
        assert_eq!(
            (e.host.as_str(), e.path.as_str()),
            ("top.widemesh.dev", "/api")
        );
        assert!(Endpoint::parse("ftp://x.dev", None, "x").is_err());
        assert!(Endpoint::parse("www", Some("blog"), "x").is_err());
        assert!(Endpoint::parse("bad_label", None, "x").is_err());
        assert!(Endpoint::parse("https://x.dev/a", Some("/b"), "x").is_err());
        assert!(Endpoint::parse("https://x.dev:99999", None, "x").is_err());
        assert!(Endpoint::parse("https://x.dev/a?b", None, "x").is_err());
        for bad in [
            "http://x.dev:0",
            "http://x.dev:",
            "http://a.dev/%zz",
            "http://a.dev/%4",
            "http://x.dev/p|q",
            "http://x.dev/a b",
            "http://x.dev/./a",
            "ab*",
            "https://*.wild.dev",
            "http://x..dev",
            "http://-x.dev",
        ] {
            assert!(
                Endpoint::parse(bad, None, "localhost").is_err(),
                "{bad} was taken"
            );
        }
        let e = Endpoint::parse("http://x.dev/caf%C3%A9/v1.2~x", None, "x").unwrap();
        assert_eq!(e.path, "/caf%C3%A9/v1.2~x");
    }

    #[test]
    fn hosts_belong_to_one_environment() {
        let envs = ["default".to_string(), "t2".to_string()];
        let none: [String; 0] = [];
        let ok = |host: &str, env: &str, own: &[String], taken: &[String]| {
            may_publish(host, env, "localhost", &envs, own, taken)
        };
        assert!(ok("api.t2.localhost", "t2", &none, &none).is_ok());
        assert!(ok("a.b.t2.localhost", "t2", &none, &none).is_ok());
        assert!(ok("www.localhost", "default", &none, &none).is_ok());
        for (host, env) in [
            ("api.t2.localhost", "default"),
            ("t2.localhost", "default"),
            ("www.localhost", "t2"),
            ("api.t3.localhost", "t2"),
            ("t2.localhost", "t2"),
            ("localhost", "default"),
            ("localhost", "t2"),
            ("127.0.0.1", "default"),
            ("127.1", "t2"),
            ("top.example.com", "t2"),
        ] {
            assert!(ok(host, env, &none, &none).is_err(), "{env} took {host}");
        }
        let shop = ["shop.example".to_string()];
        assert!(ok("shop.example", "t2", &shop, &none).is_ok());
        assert!(ok("www.shop.example", "t2", &shop, &none).is_ok());
        assert!(ok("notshop.example", "t2", &shop, &none).is_err());
        // The operator may use any domain nobody was assigned.
        assert!(ok("top.example.com", "default", &none, &shop).is_ok());
        assert!(ok("www.shop.example", "default", &none, &shop).is_err());
    }

    #[test]
    fn endpoint_paths_match_on_segment_boundaries() {
        let blog = Endpoint::parse("www", Some("/blog"), "localhost").unwrap();
        assert!(blog.covers("/blog"));
        assert!(blog.covers("/blog/x"));
        assert!(blog.covers("/blog?page=2"));
        assert!(!blog.covers("/blogger"));
        assert!(!blog.covers("/"));
        let root = Endpoint::parse("www", None, "localhost").unwrap();
        assert!(root.covers("/anything"));
    }
}

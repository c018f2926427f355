//! The routing table: which web service an endpoint request goes to, by
//! Host (port ignored) and the longest path prefix on segment boundaries.

use std::collections::HashMap;

use crate::model::{Endpoint, Service, ServiceKey};

/// Every bound endpoint, by host.
#[derive(Debug, Default)]
pub struct Routes {
    hosts: HashMap<String, Vec<(Endpoint, ServiceKey)>>,
}

impl Routes {
    /// The table for a set of services.
    pub fn of(services: &[Service]) -> Routes {
        let mut hosts: HashMap<String, Vec<(Endpoint, ServiceKey)>> = HashMap::new();
        for service in services.iter().filter(|s| s.schedule.is_none()) {
            for endpoint in &service.endpoints {
                hosts
                    .entry(endpoint.host.clone())
                    .or_default()
                    .push((endpoint.clone(), ServiceKey::of(service)));
            }
        }
        for routes in hosts.values_mut() {
            // Longest prefix first.
            routes.sort_by_key(|(endpoint, _)| std::cmp::Reverse(endpoint.path.len()));
        }
        Routes { hosts }
    }

    /// The endpoint and service for a request's host (lowercase, no port)
    /// and path.
    pub fn find(&self, host: &str, path: &str) -> Option<(&Endpoint, &ServiceKey)> {
        self.hosts
            .get(host)?
            .iter()
            .find(|(endpoint, _)| endpoint.covers(path))
            .map(|(endpoint, key)| (endpoint, key))
    }
}

/// A request's host: from the URI (HTTP/2) or the Host header, lowercase,
/// without port or trailing dot.
pub fn request_host(uri: &http::Uri, headers: &http::HeaderMap) -> Option<String> {
    let raw = match uri.host() {
        Some(host) => host.to_string(),
        None => {
            let value = headers.get(http::header::HOST)?.to_str().ok()?;
            let value = value.trim();
            if value.starts_with('[') {
                value.split(']').next()?.trim_start_matches('[').to_string()
            } else {
                value.split(':').next()?.to_string()
            }
        }
    };
    Some(raw.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, endpoints: &[(&str, &str)]) -> Service {
        Service {
            command: vec!["app".into()],
            memory_bytes: 1 << 20,
            endpoints: endpoints
                .iter()
                .map(|(e, p)| Endpoint::parse(e, Some(p), "localhost").unwrap())
                .collect(),
            ..Service::new("default", "app", name)
        }
    }

    #[test]
    fn longest_prefix_on_the_right_host_wins() {
        let routes = Routes::of(&[
            service("web", &[("www", "/")]),
            service("blog", &[("www", "/blog")]),
            service("api", &[("api", "/")]),
        ]);
        let name = |host: &str, path: &str| routes.find(host, path).map(|(_, k)| k.name.clone());
        assert_eq!(name("www.localhost", "/"), Some("web".into()));
        assert_eq!(name("www.localhost", "/blog"), Some("blog".into()));
        assert_eq!(name("www.localhost", "/blog/post"), Some("blog".into()));
        assert_eq!(name("www.localhost", "/blogger"), Some("web".into()));
        assert_eq!(name("api.localhost", "/blog"), Some("api".into()));
        assert_eq!(name("nope.localhost", "/"), None);
    }

    #[test]
    fn hosts_come_from_the_uri_or_the_host_header() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, "WWW.Localhost:8080".parse().unwrap());
        let path_only: http::Uri = "/x".parse().unwrap();
        assert_eq!(
            request_host(&path_only, &headers).as_deref(),
            Some("www.localhost")
        );
        let absolute: http::Uri = "https://api.localhost./x".parse().unwrap();
        assert_eq!(
            request_host(&absolute, &headers).as_deref(),
            Some("api.localhost")
        );
        headers.insert(http::header::HOST, "[::1]:80".parse().unwrap());
        assert_eq!(request_host(&path_only, &headers).as_deref(), Some("::1"));
    }
}

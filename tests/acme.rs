//! Certificates from ACME, end to end: Let's Encrypt's test server pebble
//! on loopback validates the names by connecting to mesh's own listeners
//! (HTTP-01 on the plain-HTTP one, TLS-ALPN-01 on the TLS one); curl then
//! checks what mesh serves against pebble's root, as a browser would.

use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mesh_host::acme::records::DomainStatus;
use mesh_host::telemetry::Event;

use crate::support::pebble::{free_port, Pebble};
use crate::support::{self, parse, wait_until, Daemon};

/// A daemon on fixed ingress ports (pebble must know them first) using
/// `pebble`, with `extra` flags.
fn daemon(ports: (u16, u16), directory: &str, api_ca: &str, extra: &[&str]) -> Daemon {
    let http = format!("127.0.0.1:{}", ports.0);
    let https = format!("127.0.0.1:{}", ports.1);
    let mut args = vec![
        "--http",
        &http,
        "--https",
        &https,
        "--acme-directory",
        directory,
        "--acme-ca",
        api_ca,
        "--acme-email",
        "ops@example.com",
    ];
    args.extend_from_slice(extra);
    Daemon::start_process_with(&args)
}

/// `mesh domain ls --json` as the holder of `token` (the operator's when
/// `None`).
fn domains(d: &Daemon, token: Option<&str>) -> Vec<DomainStatus> {
    let args = ["domain", "ls", "--json"];
    parse(&match token {
        Some(token) => d.ok_as(token, &args),
        None => d.ok(&args),
    })
}

/// Waits until `name` has a certificate, as `domain ls` says.
fn wait_issued(d: &Daemon, name: &str) -> DomainStatus {
    let mut last = None;
    for _ in 0..150 {
        let found = domains(d, None).into_iter().find(|s| s.name == name);
        if let Some(status) = found.filter(|s| s.state == "issued") {
            return status;
        }
        last = Some(domains(d, None));
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{name} got no certificate: {last:#?}\n{}", d.log());
}

/// `curl` of `https://NAME:PORT/PATH`, trusting only `root`: its status,
/// or curl's error when the certificate does not verify.
fn curl_https(name: &str, port: u16, path: &str, root: &std::path::Path) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "--max-time", "5", "--cacert"])
        .arg(root)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).to_string()),
    }
}

/// `curl_https` once the host serves what the store holds (it loads a
/// certificate a moment after writing it), for at most 10 s.
fn curl_verified(name: &str, port: u16, path: &str, root: &std::path::Path) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match curl_https(name, port, path, root) {
            Ok(head) => return head,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{name} is not served with a certificate that verifies: {last}");
}

/// The serial number of the certificate served for `name`.
fn served_serial(name: &str, port: u16) -> String {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null | openssl x509 -noout -serial"
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Publishes `web` at `endpoint`, waits for its order to fail, then 6 s
/// more (a retry storm would show by then); its status.
fn failing(d: &Daemon, endpoint: &str) -> DomainStatus {
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", endpoint]);
    wait_until(Duration::from_secs(15), "the order failed", || {
        domains(d, None).iter().any(|s| s.state == "failed")
    });
    std::thread::sleep(Duration::from_secs(6));
    domains(d, None).remove(0)
}

fn events(d: &Daemon) -> Vec<Event> {
    parse(&d.ok(&["events", "--json"]))
}

#[test]
fn a_tenants_domain_gets_a_certificate_over_http_01_and_https_only_redirects() {
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(ports.0, ports.1, 0, &[]);
    let d = daemon(ports, &pebble.directory, &pebble.api_ca(), &[]);
    let token = d.new_env("shop", &[]);
    d.ok(&["env", "update", "shop", "--domain", "shop.test"]);
    let app = support::app_wasm();
    d.create_service_as(&token, "web", &[], &[app.to_str().unwrap(), "server"]);
    d.ok_as(
        &token,
        &[
            "svc",
            "publish",
            "-n",
            "web",
            "--endpoint",
            "https://www.shop.test",
            "--https-only",
        ],
    );
    let status = wait_issued(&d, "www.shop.test");
    assert_eq!(status.env, "shop");
    assert!(status.expires_at > status.renew_at, "{status:?}");
    // A browser trusting pebble's root accepts what mesh serves.
    let root = pebble.root();
    let head = curl_verified("www.shop.test", ports.1, "/", &root);
    assert!(
        head.starts_with("HTTP/2 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    // Plain HTTP is redirected, the challenge path excepted.
    let plain = d.get("www.shop.test", "/");
    assert_eq!(plain.status, 308, "{plain:?}");
    assert_eq!(
        d.get("www.shop.test", "/.well-known/acme-challenge/nothing")
            .status,
        404
    );
    // The tenant sees its own name; the operator sees every name.
    let own = domains(&d, Some(&token));
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0].state, "issued");
    let other = d.new_env("other", &[]);
    assert!(domains(&d, Some(&other)).is_empty());
    let issued: Vec<Event> = events(&d)
        .into_iter()
        .filter(|e| e.kind == "certificate.issued")
        .collect();
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    // A name under .localhost keeps the local CA's certificate.
    d.ok(&[
        "svc",
        "create",
        "-n",
        "local",
        "--",
        app.to_str().unwrap(),
        "server",
    ]);
    d.ok(&["svc", "publish", "-n", "local", "--endpoint", "www"]);
    assert!(domains(&d, None)
        .iter()
        .all(|s| !s.name.ends_with("localhost")));
}

#[test]
fn tls_alpn_01_proves_a_name_on_the_tls_listener_and_certificates_renew() {
    let ports = (free_port(), free_port());
    // Certificates that last 30 s: renewed about 20 s after issue.
    let pebble = Pebble::start(ports.0, ports.1, 30, &[]);
    let d = daemon(
        ports,
        &pebble.directory,
        &pebble.api_ca(),
        &["--acme-challenge", "tls-alpn-01", "--alias", "apps.test"],
    );
    d.create("web", &[], &["server"]);
    d.ok(&["svc", "publish", "-n", "web", "--endpoint", "www"]);
    // And a tenant's own domain, over the same challenge.
    let token = d.new_env("blog", &[]);
    d.ok(&["env", "update", "blog", "--domain", "blog.test"]);
    let app = support::app_wasm();
    d.create_service_as(&token, "site", &[], &[app.to_str().unwrap(), "server"]);
    d.ok_as(
        &token,
        &[
            "svc",
            "publish",
            "-n",
            "site",
            "--endpoint",
            "https://blog.test",
        ],
    );
    let first = wait_issued(&d, "www.apps.test");
    wait_issued(&d, "blog.test");
    let root = pebble.root();
    let head = curl_verified("www.apps.test", ports.1, "/", &root);
    assert!(head.contains(" 200"), "{head}");
    let head = curl_verified("blog.test", ports.1, "/", &root);
    assert!(head.contains(" 200"), "{head}");
    let serial = served_serial("www.apps.test", ports.1);
    assert!(!serial.is_empty());
    // It renews on its own before it expires.
    wait_until(Duration::from_secs(40), "a renewed certificate", || {
        domains(&d, None).iter().any(|s| {
            s.name == "www.apps.test" && s.issued_at > first.issued_at && s.state == "issued"
        })
    });
    wait_until(
        Duration::from_secs(10),
        "the renewed certificate served",
        || served_serial("www.apps.test", ports.1) != serial,
    );
    curl_verified("www.apps.test", ports.1, "/", &root);
    // Two first orders, and a renewal of each at most: no storm.
    let orders = pebble.orders();
    assert!(
        (3..=4).contains(&orders),
        "{orders} orders:\n{}",
        pebble.log()
    );
}

#[test]
fn a_refused_name_and_an_unreachable_ca_are_reported_without_a_retry_storm() {
    // pebble refuses orders for blocked.test.
    let ports = (free_port(), free_port());
    let pebble = Pebble::start(ports.0, ports.1, 0, &["blocked.test"]);
    let d = daemon(ports, &pebble.directory, &pebble.api_ca(), &["--acme-only"]);
    let status = failing(&d, "https://www.blocked.test");
    assert_eq!(status.orders_last_hour, 1, "{status:?}");
    assert!(status.next_try.is_some(), "{status:?}");
    let error = status.last_error.unwrap();
    assert!(error.contains("the CA refused the order"), "{error}");
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
    let failed: Vec<Event> = events(&d)
        .into_iter()
        .filter(|e| e.kind == "certificate.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    // With --acme-only a name without a certificate gets none at all.
    let root = pebble.root();
    assert!(curl_https("www.blocked.test", ports.1, "/", &root).is_err());

    // A CA that takes connections and answers nothing: one try, then the
    // back-off.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/dir", dead.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = accepted.clone();
    std::thread::spawn(move || {
        for stream in dead.incoming() {
            counting.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let ports = (free_port(), free_port());
    let d = daemon(ports, &url, &pebble.api_ca(), &[]);
    let status = failing(&d, "www.unreachable.test");
    let tried = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&tried),
        "{tried} connections to the dead CA"
    );
    assert!(
        status.last_error.as_deref().unwrap_or("").contains("ACME"),
        "{status:?}"
    );
    // The name is still served, by the local CA, meanwhile.
    assert_eq!(d.get("www.unreachable.test", "/").status, 200);
}

#[test]
fn in_a_cluster_one_host_orders_and_every_host_serves_the_certificate() {
    let etcd = crate::support::etcd::Etcd::start(1);
    let url = etcd.url();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("sealing.key");
    std::fs::write(&key, [9u8; 32]).unwrap();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    // pebble validates against host-a's listeners; any host may order.
    let pebble = Pebble::start(ports[0].0, ports[0].1, 0, &[]);
    let hosts: Vec<Daemon> = ["host-a", "host-b", "host-c"]
        .iter()
        .zip(&ports)
        .map(|(name, ports)| {
            daemon(
                *ports,
                &pebble.directory,
                &pebble.api_ca(),
                &[
                    "--store",
                    &url,
                    "--node",
                    name,
                    "--sealing-key",
                    key.to_str().unwrap(),
                ],
            )
        })
        .collect();
    hosts[1].create("web", &["--instances", "3"], &["server"]);
    hosts[1].ok(&[
        "svc",
        "publish",
        "-n",
        "web",
        "--endpoint",
        "https://www.cluster.test",
    ]);
    wait_issued(&hosts[2], "www.cluster.test");
    let root = pebble.root();
    for (host, ports) in hosts.iter().zip(&ports) {
        wait_until(Duration::from_secs(10), "every host serves it", || {
            curl_https("www.cluster.test", ports.1, "/", &root).is_ok()
        });
        let _ = host;
    }
    assert_eq!(pebble.orders(), 1, "{}", pebble.log());
}

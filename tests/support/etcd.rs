//! A real etcd cluster on loopback for the cluster tests: Debian's
//! `etcd-server` (installed by scripts/test.sh), each member with its own
//! data directory and ports, elections tuned fast, killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One member.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct Etcd {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
}

/// Ports free right now (the listeners are closed again at once).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Etcd {
    /// Starts `n` members and waits until the cluster is healthy.
    pub fn start(n: usize) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..n {
            etcd.boot(i);
        }
        etcd.wait_healthy(&(0..n).collect::<Vec<_>>());
        etcd
    }

    fn boot(&mut self, i: usize) {
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap();
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", "mesh-test"])
            .args(["--initial-cluster-state", "new"])
            // Elections in about half a second, as a test wants them.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting etcd (Debian's etcd-server; scripts/test.sh installs it)");
        self.members[i].child = Some(child);
    }

    /// `etcd://` URL of every member, for `mesh up --store`.
    pub fn url(&self) -> String {
        let members: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        format!("etcd://{}", members.join(","))
    }

    /// `http://` endpoint of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// Runs `etcdctl` against the given members; stdout, or a panic with
    /// stderr.
    pub fn etcdctl(&self, members: &[usize], args: &[&str]) -> String {
        let endpoints: Vec<String> = members
            .iter()
            .map(|&i| format!("127.0.0.1:{}", self.members[i].client))
            .collect();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["--dial-timeout", "2s", "--command-timeout", "5s"])
            .args(args)
            .output()
            .expect("running etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Waits until each of `members` reports healthy.
    pub fn wait_healthy(&self, members: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &i in members {
            let endpoint = format!("127.0.0.1:{}", self.members[i].client);
            loop {
                let ok = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={endpoint}"))
                    .args(["--dial-timeout", "1s", "endpoint", "health"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {i} not healthy in 30 s:\n{}",
                    self.log(i)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The index of the member that leads now.
    pub fn leader(&self) -> usize {
        let alive: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.etcdctl(&alive, &["endpoint", "status", "-w", "json"]);
            let statuses: Vec<Value> = serde_json::from_str(&text).unwrap();
            let found = statuses.iter().find_map(|s| {
                let status = &s["Status"];
                let leader = status["leader"].as_u64()?;
                (leader != 0 && status["header"]["member_id"].as_u64()? == leader)
                    .then(|| s["Endpoint"].as_str().map(str::to_string))?
            });
            if let Some(endpoint) = found {
                let port: u16 = endpoint.rsplit(':').next().unwrap().parse().unwrap();
                return self.members.iter().position(|m| m.client == port).unwrap();
            }
            assert!(Instant::now() < deadline, "no etcd leader: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9` member `i`.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Starts member `i` again on its data directory and waits for it.
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.boot(i);
        self.wait_healthy(&[i]);
    }

    /// Member `i`'s own log.
    pub fn log(&self, i: usize) -> String {
        let name = &self.members[i].name;
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill9(i);
        }
    }
}

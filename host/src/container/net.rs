//! The containers' network: one bridge the daemon owns (`meshXXXX`, the
//! tag taken from its subnet, 10.213.0.1/16 by default) and, per
//! container, a veth pair whose host end is an *isolated* port of the
//! bridge (so containers never reach one another, only the host side) and
//! whose other end is the container's `eth0` in its own network
//! namespace. An nftables table lets in from the bridge only the daemon's
//! proxy ports and answers to the host's own connections, and forwards
//! nothing: a container reaches the daemon's proxy on the bridge address,
//! which applies its environment's policy, and nothing else.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use parking_lot::Mutex;

/// The bridge's settings: its address and prefix length. Its device
/// name, and its veths', carry a tag taken from them, so daemons on
/// different subnets of one host never touch each other's links.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The bridge's own address: the containers' gateway and proxy.
    pub gateway: Ipv4Addr,
    /// Prefix length of the containers' subnet.
    pub prefix: u8,
}

/// The subnet containers get unless the operator names another.
pub const DEFAULT_SUBNET: &str = crate::config::DEFAULT_CONTAINER_NETWORK;

impl NetConfig {
    /// `GATEWAY/PREFIX`, e.g. `10.213.0.1/16`; the prefix is 8 to 30.
    pub fn parse(text: &str) -> Result<NetConfig, String> {
        let bad = || format!("{text:?} is not a gateway address and prefix like {DEFAULT_SUBNET}");
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let gateway: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        Ok(NetConfig { gateway, prefix })
    }

    /// The tag of its bridge's and table's names.
    pub fn tag(&self) -> String {
        short_hash(&format!("{}/{}", self.gateway, self.prefix))[..4].to_string()
    }

    /// The bridge device's name.
    pub fn bridge(&self) -> String {
        format!("mesh{}", self.tag())
    }
}

/// The bridge, and the addresses on it in use.
pub struct Network {
    config: NetConfig,
    used: Mutex<BTreeSet<u32>>,
    /// Whether the bridge and its table were removed already.
    closed: std::sync::atomic::AtomicBool,
}

/// One container's link: released (and its veth deleted) on drop.
pub struct Link {
    network: Arc<Network>,
    /// The container's address.
    pub address: Ipv4Addr,
    /// The host end's name.
    pub host: String,
    /// The bridge it joins.
    pub bridge: String,
}

/// Runs `program` with `args` and `input` on its stdin; its error output
/// on failure, after `what`.
pub fn run_tool(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    what: &str,
) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run_tool("ip", args, None, &format!("ip {}", args.join(" ")))
}

impl Network {
    /// Makes (or takes over) the bridge, and removes veths a killed
    /// daemon left.
    pub fn open(config: NetConfig) -> Result<Arc<Network>, String> {
        let bridge = &config.bridge();
        if !std::path::Path::new("/sys/class/net").join(bridge).exists() {
            ip(&["link", "add", bridge, "type", "bridge"])?;
        }
        let cidr = format!("{}/{}", config.gateway, config.prefix);
        let _ = ip(&["addr", "add", &cidr, "dev", bridge]);
        ip(&["link", "set", bridge, "up"])?;
        filter(bridge, config.gateway, &config.tag())?;
        clean_links(&config.tag());
        Ok(Arc::new(Network {
            config,
            used: Mutex::new(BTreeSet::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// The tag of its bridge's and table's names.
    pub fn tag(&self) -> String {
        self.config.tag()
    }

    /// Removes the bridge and its nftables table: a daemon that stops
    /// leaves neither (each table hooks every packet's input path).
    /// Called once no container is left on the bridge.
    pub fn close(&self) {
        if !self.closed.swap(true, std::sync::atomic::Ordering::Relaxed) {
            remove(&self.config.tag());
        }
    }

    /// The bridge's address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.config.gateway
    }

    /// The subnet as `ADDRESS/PREFIX` for a container's address.
    pub fn cidr_of(&self, address: Ipv4Addr) -> String {
        format!("{address}/{}", self.config.prefix)
    }

    /// Whether `address` is on the containers' subnet.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.config.prefix))
            .unwrap_or(0);
        u32::from(address) & mask == u32::from(self.config.gateway) & mask
    }

    /// A new link for container `id`: a free address and the names of
    /// its veth pair. The container's shim makes the pair once the
    /// container's network namespace exists (the host end on the bridge,
    /// the other end made straight inside as `eth0`: moving a device
    /// between namespaces is slow).
    pub fn link(self: &Arc<Self>, id: &str) -> Result<Link, String> {
        let address = self.allocate()?;
        let (net, tag) = (self.config.tag(), &short_hash(id)[..7]);
        Ok(Link {
            network: self.clone(),
            address,
            host: format!("m{net}h{tag}"),
            bridge: self.config.bridge(),
        })
    }

    /// The shim's `--net` argument for `link`: `HOST,BRIDGE,CIDR`.
    pub fn shim_arg(&self, link: &Link) -> String {
        format!(
            "{},{},{}",
            link.host,
            link.bridge,
            self.cidr_of(link.address)
        )
    }

    fn allocate(&self) -> Result<Ipv4Addr, String> {
        let base = u32::from(self.config.gateway);
        let size = 1u32 << (32 - u32::from(self.config.prefix));
        let network = base & !(size - 1);
        let mut used = self.used.lock();
        for offset in 2..size - 1 {
            let candidate = network + offset;
            if candidate != base && used.insert(candidate) {
                return Ok(Ipv4Addr::from(candidate));
            }
        }
        Err("no free address on the containers' bridge".into())
    }
}

impl Drop for Network {
    /// A daemon that fails to start after making its bridge (or drops its
    /// containers without stopping them in order) leaves none either.
    fn drop(&mut self) {
        self.close();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting either end deletes both; when the container's namespace
        // went, both went with it.
        // (Deleting one waits for the kernel's grace period, so it is done
        // beside the daemon's work, and the address is free only after.)
        let host = std::mem::take(&mut self.host);
        let (network, address) = (self.network.clone(), u32::from(self.address));
        let release = move || {
            if std::path::Path::new("/sys/class/net").join(&host).exists() {
                let _ = ip(&["link", "del", &host]);
            }
            network.used.lock().remove(&address);
        };
        if std::thread::Builder::new()
            .name("mesh-link-del".into())
            .spawn(release.clone())
            .is_err()
        {
            release();
        }
    }
}

/// Keeps containers from the host's own services: what comes in from the
/// bridge may reach the daemon's proxy ports on the bridge address, and
/// answers to connections the host opened; nothing else (IPv6 included),
/// and nothing is forwarded to or from the bridge. One nftables table per
/// bridge, made again at each start.
fn filter(bridge: &str, gateway: Ipv4Addr, tag: &str) -> Result<(), String> {
    let table = format!("mesh_{tag}");
    let rules = format!(
        "table inet {table} {{\n\
           chain input {{\n\
             type filter hook input priority filter; policy accept;\n\
             iifname \"{bridge}\" ip daddr {gateway} tcp dport {{ {proxy}, 80 }} accept\n\
             iifname \"{bridge}\" ct state established,related accept\n\
             iifname \"{bridge}\" drop\n\
           }}\n\
           chain forward {{\n\
             type filter hook forward priority filter; policy accept;\n\
             iifname \"{bridge}\" drop\n\
             oifname \"{bridge}\" drop\n\
           }}\n\
         }}\n",
        proxy = PROXY_PORT,
    );
    let _ = nft(&format!("delete table inet {table}\n"));
    nft(&rules)
}

/// Removes the bridge and the nftables table of the network tagged `tag`,
/// where they exist.
pub fn remove(tag: &str) {
    let _ = nft(&format!("delete table inet mesh_{tag}\n"));
    let bridge = format!("mesh{tag}");
    if std::path::Path::new("/sys/class/net")
        .join(&bridge)
        .exists()
    {
        if let Err(e) = ip(&["link", "del", &bridge]) {
            tracing::warn!("removing the containers' bridge {bridge}: {e}");
        }
    }
}

/// The port of the daemon's HTTP proxy on the bridge address.
pub const PROXY_PORT: u16 = 3128;

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), String> {
    run_tool("nft", &["-f", "-"], Some(script), "nft")
}

/// Deletes the host ends of veths a killed daemon on this bridge left.
fn clean_links(net: &str) {
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name
            .strip_prefix('m')
            .and_then(|n| n.strip_prefix(net))
            .is_some_and(|rest| {
                rest.len() == 8 && (rest.starts_with('h') || rest.starts_with('c'))
            });
        if ours {
            let _ = ip(&["link", "del", &name]);
        }
    }
}

/// 12 hex digits naming a container's links.
fn short_hash(id: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subnet_is_known() {
        let net = Network {
            config: NetConfig::parse(DEFAULT_SUBNET).expect("default"),
            used: Mutex::new(BTreeSet::new()),
            // It made nothing on the host: dropping it removes nothing
            // (the default bridge may be a running daemon's).
            closed: std::sync::atomic::AtomicBool::new(true),
        };
        assert!(net.contains(Ipv4Addr::new(10, 213, 4, 5)));
        assert!(!net.contains(Ipv4Addr::new(10, 214, 0, 1)));
        assert!(!net.contains(Ipv4Addr::new(127, 0, 0, 1)));
        let a = net.allocate().expect("one");
        let b = net.allocate().expect("two");
        assert_eq!(a, Ipv4Addr::new(10, 213, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 213, 0, 3));
        assert_eq!(short_hash("x").len(), 12);
        assert!(net.config.bridge().len() <= 15);
        assert!(NetConfig::parse("10.1.0.1/31").is_err());
        assert!(NetConfig::parse("nonsense").is_err());
    }
}

//! `mosboot init`: a commented cluster.toml filled from the machine's lab interface.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::Failure;

/// An interface with its IPv4 address and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub name: String,
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

/// IPv4 addresses of the machine's interfaces (loopback left out).
pub fn interfaces() -> Result<Vec<IfAddr>, Failure> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| Failure::runtime("list network interfaces", e))?;
    let mut out = Vec::new();
    for a in addrs {
        let (Some(addr), Some(mask)) = (a.address, a.netmask) else { continue };
        let (Some(addr), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else { continue };
        let ip = addr.ip();
        if ip.is_loopback() {
            continue;
        }
        out.push(IfAddr {
            name: a.interface_name.clone(),
            addr: ip,
            prefix: u32::from(mask.ip()).count_ones() as u8,
        });
    }
    Ok(out)
}

/// The pool for a server address: the rest of its subnet, capped to the server's /24 (the map
/// and the `ws001` names are per-/24; bigger labs list their ranges by hand).
pub fn default_pool(server: Ipv4Addr, prefix: u8) -> String {
    let prefix = prefix.max(24);
    let net = match ipnet::Ipv4Net::new(server, prefix) {
        Ok(n) => n,
        Err(_) => return String::new(),
    };
    let first = u32::from(net.network()) + 1;
    let last = u32::from(net.broadcast()) - 1;
    let s = u32::from(server);
    let mut ranges = Vec::new();
    if s > first {
        ranges.push((first, s - 1));
    }
    if s < last {
        ranges.push((s + 1, last));
    }
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                Ipv4Addr::from(a).to_string()
            } else {
                format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The commented config text for an interface.
pub fn config_text(i: &IfAddr) -> String {
    let pool = default_pool(i.addr, i.prefix);
    format!(
        r#"# mosboot cluster description. `mosboot check` validates it; `mosboot build` builds the
# node image and boot files; `mosboot serve` boots the nodes. Unknown keys are errors.

[cluster]
name = "lab"                       # shown in logs and in each node's "joined" line
interface = "{name}"{pad}# the lab NIC: DHCP answers only here
server = "{addr}/{prefix}"{pad2}# this server on that NIC; it is node 1 of the map
pool = "{pool}"   # addresses handed to nodes, in this order
hostname = "ltsp"                  # "ltsp" (ws001.. from the last octet), "mosix" (mosix<N>),
                                   # or a template over ip, octets, node, mac
lease_time = "12h"
# router = "{addr}"                # optional: default gateway for the nodes
# dns = ["{addr}"]                 # optional
dhcp = "full"                      # "full"; "proxy" when a router already hands out addresses;
                                   # "off" when you keep your own DHCP server (mosboot export)

[openmosix]
version = "2.4.26"                 # decides the map file names and /proc/hpc vs /proc/mosix
mfs = false                        # the /mfs fstab line (oMFS kernels before 2.4.26 only)
lstay = true                       # local processes of terminals stay home
map = "static"                     # "static" (from the pool) or "auto" (omdiscd)

[image]
kernel = "kernels/bzImage"         # the node kernel (the openMosix kernel in production)
busybox = "node-kit/busybox"       # a static i386 busybox that runs on a 486
userland = []                      # tar(.gz) files unpacked into the node root (openMosix tools)
# modules = "kernels/modules.tar.gz"
# overlay = "overlay"              # a folder copied over the node root last
# templates = "templates"          # a folder whose files replace built-in templates
initrd = "auto"                    # "auto", "cpio" (2.6+ kernels), "ext2" (2.4 kernels)
cmdline = ""                       # extra kernel arguments
out = "mosboot-out"

# Pinned nodes keep a fixed address (and so a fixed node number and hostname):
# [[node]]
# mac = "00:0c:29:aa:bb:01"
# ip = "{example}"
# hostname = "mosix1"              # optional; else the hostname rule
# yardstick = "P/133"              # optional: mosctl setyard for this CPU

# The status page of `mosboot serve` (loopback only; from your desktop: ssh -L 8067:127.0.0.1:8067):
# [serve]
# status = "127.0.0.1:8067"
"#,
        name = i.name,
        pad = " ".repeat(24usize.saturating_sub(i.name.len() + 2).max(1)),
        addr = i.addr,
        prefix = i.prefix,
        pad2 = " ".repeat(27usize.saturating_sub(i.addr.to_string().len() + 5).max(1)),
        pool = pool,
        example = pool.split(['-', ',']).next().unwrap_or("192.168.0.101"),
    )
}

/// The `init` command.
pub fn run(path: &Path, interface: Option<&str>, force: bool) -> Result<String, Failure> {
    if path.exists() && !force {
        return Err(Failure::Usage(format!(
            "{} exists already; use --force to overwrite it",
            path.display()
        )));
    }
    let all = interfaces()?;
    let chosen = match interface {
        Some(name) => all.iter().find(|i| i.name == name).cloned().ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
            Failure::Usage(format!(
                "interface '{name}' has no IPv4 address (interfaces with one: {})",
                names.join(", ")
            ))
        })?,
        None => match all.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Failure::Usage(
                    "no interface with an IPv4 address; give the lab NIC an address first".into(),
                ));
            }
            many => {
                let names: Vec<String> =
                    many.iter().map(|i| format!("{} ({}/{})", i.name, i.addr, i.prefix)).collect();
                return Err(Failure::Usage(format!(
                    "several interfaces; choose the lab NIC with --interface: {}",
                    names.join(", ")
                )));
            }
        },
    };
    let text = config_text(&chosen);
    std::fs::write(path, &text).map_err(|e| Failure::runtime(format!("write {}", path.display()), e))?;
    Ok(format!("wrote {} for {} ({}/{})", path.display(), chosen.name, chosen.addr, chosen.prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn pool_is_the_rest_of_the_subnet() {
        assert_eq!(default_pool(Ipv4Addr::new(192, 168, 0, 254), 24), "192.168.0.1-192.168.0.253");
        assert_eq!(default_pool(Ipv4Addr::new(10, 0, 0, 10), 24), "10.0.0.1-10.0.0.9,10.0.0.11-10.0.0.254");
        assert_eq!(default_pool(Ipv4Addr::new(10, 0, 5, 1), 16), "10.0.5.2-10.0.5.254");
    }

    #[test]
    fn written_config_parses_and_plans() {
        let text =
            config_text(&IfAddr { name: "eth1".into(), addr: Ipv4Addr::new(192, 168, 0, 254), prefix: 24 });
        let cfg = Config::parse(&text, Path::new("cluster.toml")).expect("init writes a valid config");
        let plan = crate::plan::Plan::new(&cfg).expect("and a valid plan");
        assert_eq!(plan.map_text(), "1 192.168.0.254 1\n2 192.168.0.1 253\n");
    }
}

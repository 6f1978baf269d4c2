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

/// The folder the package's `mosboot@NAME` service reads `NAME.toml` from.
pub const INSTALLED_CONFIG_DIR: &str = "/etc/mosboot";

/// Where a new config's cluster name, inputs and output tree point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub name: String,
    pub kernel: String,
    pub busybox: String,
    pub out: String,
}

impl Layout {
    /// A config in a checkout or home folder: inputs and output beside it (paths in a config
    /// are relative to its folder).
    pub fn local() -> Layout {
        Layout {
            name: "lab".into(),
            kernel: "kernels/bzImage".into(),
            busybox: "node-kit/busybox".into(),
            out: "mosboot-out".into(),
        }
    }

    /// `/etc/mosboot/NAME.toml`, served by `mosboot@NAME`: the cluster is named after the
    /// instance (so `mosboot nodes` finds the service's state in /var/lib/mosboot/NAME), and
    /// inputs and output live under /srv/mosboot (not in /etc; readable by the sandboxed
    /// service, which cannot write there). Each lab's tree has its own folder because `build`
    /// replaces the whole tree.
    pub fn installed(name: &str) -> Layout {
        Layout {
            name: name.into(),
            kernel: "/srv/mosboot/kit/bzImage".into(),
            busybox: "/srv/mosboot/kit/busybox".into(),
            out: format!("/srv/mosboot/out/{name}"),
        }
    }

    /// The installed layout for a config in [`INSTALLED_CONFIG_DIR`] whose name is a valid
    /// cluster name, else the local one.
    pub fn for_path(path: &Path) -> Layout {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let stem = abs.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        let valid = (1..=32).contains(&stem.len())
            && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if abs.parent() == Some(Path::new(INSTALLED_CONFIG_DIR)) && valid {
            Layout::installed(stem)
        } else {
            Layout::local()
        }
    }
}

/// The commented config text for an interface.
pub fn config_text(i: &IfAddr, layout: &Layout) -> String {
    let pool = default_pool(i.addr, i.prefix);
    format!(
        r#"# mosboot cluster description. `mosboot check` validates it; `mosboot build` builds the
# node image and boot files; `mosboot serve` boots the nodes. Unknown keys are errors.

[cluster]
name = "{cluster}"{pad3}# shown in logs and in each node's "joined" line
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
kernel = "{kernel}"{pad4}# the node kernel (the openMosix kernel in production)
busybox = "{busybox}"{pad5}# a static i386 busybox that runs on a 486
userland = []                      # tar(.gz) files unpacked into the node root (openMosix tools)
# modules = "kernels/modules.tar.gz"
# overlay = "overlay"              # a folder copied over the node root last
# templates = "templates"          # a folder whose files replace built-in templates
initrd = "auto"                    # "auto", "cpio" (2.6+ kernels), "ext2" (2.4 kernels)
cmdline = ""                       # extra kernel arguments
out = "{out}"

# Pinned nodes keep a fixed address (and so a fixed node number and hostname):
# [[node]]
# mac = "00:0c:29:aa:bb:01"
# ip = "{example}"
# hostname = "mosix1"              # optional; else the hostname rule
# yardstick = "P/133"              # optional: mosctl setyard for this CPU

# The status page of `mosboot serve` (loopback only; from your desktop: ssh -L 8067:127.0.0.1:8067):
# [serve]
# status = "127.0.0.1:8067"
# http = "0.0.0.0:8080"            # kernel and initrd over HTTP for iPXE nodes (TFTP stays the fallback)
# http_url = "http://web.example/lab/"  # or from a web server serving a copy of out/tftpboot/
# multicast = "239.255.69.1"       # RFC 2090 multicast TFTP for boot storms (README: when to turn it on)
# dhcp_new_mac_burst = 256         # DHCP flood limit: new PCs answered at once (raise for a bigger lab)...
# dhcp_new_macs_per_second = 20    # ...and then per second (README, SECURITY.md: what it protects)
"#,
        name = i.name,
        pad = pad(&i.name, 24),
        addr = i.addr,
        prefix = i.prefix,
        pad2 = " ".repeat(27usize.saturating_sub(i.addr.to_string().len() + 5).max(1)),
        pool = pool,
        cluster = layout.name,
        pad3 = pad(&layout.name, 28),
        kernel = layout.kernel,
        pad4 = pad(&layout.kernel, 26),
        busybox = layout.busybox,
        pad5 = pad(&layout.busybox, 25),
        out = layout.out,
        example = pool.split(['-', ',']).next().unwrap_or("192.168.0.101"),
    )
}

/// Spaces after a `key = "value"` so the comment lines up; `width` is the column budget of the
/// value with its quotes.
fn pad(value: &str, width: usize) -> String {
    " ".repeat(width.saturating_sub(value.len() + 2).max(1))
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
    let text = config_text(&chosen, &Layout::for_path(path));
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
        let text = config_text(
            &IfAddr { name: "eth1".into(), addr: Ipv4Addr::new(192, 168, 0, 254), prefix: 24 },
            &Layout::local(),
        );
        let cfg = Config::parse(&text, Path::new("cluster.toml")).expect("init writes a valid config");
        let plan = crate::plan::Plan::new(&cfg).expect("and a valid plan");
        assert_eq!(plan.map_text(), "1 192.168.0.254 1\n2 192.168.0.1 253\n");
    }

    #[test]
    fn a_config_in_etc_mosboot_names_the_instance_and_points_at_srv() {
        assert_eq!(Layout::for_path(Path::new("/etc/mosboot/lab2.toml")), Layout::installed("lab2"));
        assert_eq!(Layout::for_path(Path::new("/etc/mosboot/sub/lab.toml")), Layout::local());
        assert_eq!(Layout::for_path(Path::new("/home/me/cluster.toml")), Layout::local());
        assert_eq!(Layout::for_path(Path::new("/etc/mosboot/bad name.toml")), Layout::local());
        let i = IfAddr { name: "lab0".into(), addr: Ipv4Addr::new(10, 0, 0, 254), prefix: 24 };
        let text = config_text(&i, &Layout::installed("lab2"));
        let cfg = Config::parse(&text, Path::new("/etc/mosboot/lab2.toml")).expect("valid");
        assert_eq!(cfg.cluster.name, "lab2");
        assert_eq!(cfg.image.out, Path::new("/srv/mosboot/out/lab2"));
        assert_eq!(cfg.image.kernel, Path::new("/srv/mosboot/kit/bzImage"));
    }
}

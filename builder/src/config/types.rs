//! The parsed configuration: one type per section, with every value already checked and converted.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use netboot::mac::MacAddr;

/// How DHCP is served on the lab interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpMode {
    /// mosboot hands out addresses and boot information.
    Full,
    /// Another server (a school's router) hands out addresses; mosboot only answers PXE clients.
    Proxy,
    /// No DHCP from mosboot (a site that keeps its own server, see `export`).
    Off,
}

/// How the cluster map reaches the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapMode {
    /// Written from the address plan; identical on every node.
    Static,
    /// Nodes discover each other with omdiscd (needs multicast).
    Auto,
}

/// The initrd format; `Auto` decides from the kernel release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitrdChoice {
    Auto,
    Cpio,
    Ext2,
}

/// How node hostnames are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostnameRule {
    /// `ws001`..`ws254` from the last octet (the LTSP dhcpd.conf expression).
    Ltsp,
    /// `mosix<N>` with N the node number.
    Mosix,
    /// A minijinja template over `ip`, `octets`, `node`, `mac`.
    Template(String),
}

/// `[cluster]`.
#[derive(Clone, Debug)]
pub struct ClusterSection {
    pub name: String,
    pub interface: String,
    pub server: Ipv4Addr,
    pub prefix_len: u8,
    /// Pool ranges (inclusive), in the order written.
    pub pool: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub hostname: HostnameRule,
    /// `bootp = "dynamic"` (default "pinned"): see SPEC.
    pub bootp_dynamic: bool,
    pub lease_time: Duration,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub dhcp: DhcpMode,
}

/// `[openmosix]`.
#[derive(Clone, Debug)]
pub struct OpenMosixSection {
    pub version: String,
    /// (major, minor, patch) parsed from `version`.
    pub version_parts: (u32, u32, u32),
    pub mfs: bool,
    pub lstay: bool,
    pub map: MapMode,
}

/// `[image]`; relative paths are already resolved against the config file's folder.
#[derive(Clone, Debug)]
pub struct ImageSection {
    pub kernel: PathBuf,
    pub modules: Option<PathBuf>,
    pub busybox: PathBuf,
    pub userland: Vec<PathBuf>,
    pub overlay: Option<PathBuf>,
    pub templates: Option<PathBuf>,
    pub initrd: InitrdChoice,
    pub cmdline: String,
    pub out: PathBuf,
}

/// One `[[node]]` (a pinned node).
#[derive(Clone, Debug)]
pub struct NodeSection {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    pub yardstick: Option<String>,
}

/// `[serve]`: options of `mosboot serve` that belong with the cluster.
#[derive(Clone, Debug, Default)]
pub struct ServeSection {
    /// Where the status page listens (off when absent).
    pub status: Option<std::net::SocketAddr>,
    /// Allow a status address other than loopback.
    pub status_public: bool,
    /// Where mosboot's own HTTP server for the boot files listens (off when absent); boot.ipxe
    /// then fetches the kernel and initrd over HTTP first.
    pub http: Option<std::net::SocketAddrV4>,
    /// A web server elsewhere that serves a copy of `out/tftpboot/` at this URL (ends in `/`);
    /// boot.ipxe tries it before everything else.
    pub http_url: Option<String>,
    /// RFC 2090 multicast TFTP: the group and first port (off when absent).
    pub multicast: Option<std::net::SocketAddrV4>,
    /// `dhcp_new_mac_burst` / `dhcp_new_macs_per_second`: how many never-seen MACs DHCP answers
    /// at once and then per second (default 256, then 20/s); reloadable.
    pub dhcp_new_macs: netboot::dhcp::NewMacLimits,
}

/// Highest value of either new-MAC limit: far above any lab (a /16 is 65534 PCs), low enough
/// that the token arithmetic cannot overflow.
pub const MAX_NEW_MACS: u64 = 1_000_000;

/// Ports a multicast config reserves from its first one: one per session at once (the TFTP
/// server's `MulticastConfig::max_sessions`).
pub const MULTICAST_PORTS: u16 = 16;

/// Parses `[serve] multicast` / `--multicast`: `GROUP[:PORT]`, the group administratively
/// scoped (239.0.0.0/8, RFC 2365: never routed off the site, never a well-known group), the
/// port 1758 when left out. The error says what is wrong, for the config's located error.
pub fn parse_multicast(s: &str) -> Result<std::net::SocketAddrV4, String> {
    let (ip, port) = match s.split_once(':') {
        Some((ip, port)) => (ip, Some(port)),
        None => (s, None),
    };
    let ip: std::net::Ipv4Addr = ip
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not an IPv4 multicast group like 239.255.69.1[:1758]"))?;
    if ip.octets()[0] != 239 {
        let what =
            if ip.is_multicast() { "a multicast group outside 239.0.0.0/8" } else { "not a multicast group" };
        return Err(format!(
            "'{ip}' is {what}: use an administratively scoped group (239.0.0.0/8, e.g. 239.255.69.1), which stays on the site"
        ));
    }
    let port = match port {
        None => netboot::tftp::MULTICAST_DEFAULT_PORT,
        Some(p) => match p.trim().parse::<u16>() {
            Ok(p) if (1024..=u16::MAX - MULTICAST_PORTS).contains(&p) => p,
            _ => {
                return Err(format!(
                    "port '{p}' must be a number from 1024 to {}",
                    u16::MAX - MULTICAST_PORTS
                ));
            }
        },
    };
    Ok(std::net::SocketAddrV4::new(ip, port))
}

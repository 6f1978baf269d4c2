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
}

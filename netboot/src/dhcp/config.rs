//! What the DHCP server is told by `mosboot serve`: the interface, the address plan, boot files.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use super::handler::{NEW_MAC_BURST, NEW_MACS_PER_SEC};
use crate::mac::MacAddr;

/// Full: hand out addresses. Proxy: another server does that; answer PXE clients with boot
/// information only (port 67 and 4011).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpMode {
    Full,
    Proxy,
}

/// The plan's name and number for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    pub hostname: String,
    pub node: u16,
}

/// Boot file names inside the TFTP root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFiles {
    /// For PXE ROMs and plain clients (`pxelinux.0`).
    pub pxe: String,
    /// For clients already running iPXE (`boot.ipxe`), so they do not chainload forever.
    pub ipxe: String,
}

impl Default for BootFiles {
    fn default() -> Self {
        BootFiles { pxe: "pxelinux.0".into(), ipxe: "boot.ipxe".into() }
    }
}

/// How many requests from MACs the server has never seen it answers: `burst` at once, then
/// `per_sec` a second (a token bucket). Bounds what a flood of random MACs costs (offers held,
/// pool addresses, lease-log fsyncs); known and pinned clients are never limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewMacLimits {
    pub burst: u64,
    pub per_sec: u64,
}

impl Default for NewMacLimits {
    fn default() -> Self {
        NewMacLimits { burst: NEW_MAC_BURST, per_sec: NEW_MACS_PER_SEC }
    }
}

/// Everything the server needs; the caller builds it from its address plan.
#[derive(Clone, Debug)]
pub struct DhcpConfig {
    /// The lab NIC; nothing is read from or sent to any other interface.
    pub interface: String,
    /// This server's address on `interface` (server id, siaddr, TFTP server).
    pub server: Ipv4Addr,
    pub prefix_len: u8,
    pub mode: DhcpMode,
    /// Addresses handed out, in allocation order (lowest first).
    pub pool: Vec<Ipv4Addr>,
    /// MACs that always get one address; nobody else gets those addresses.
    pub pinned: Vec<(MacAddr, Ipv4Addr)>,
    /// Every address a node may hold -> its plan hostname and node number (option 12, logs).
    pub hosts: HashMap<Ipv4Addr, HostInfo>,
    pub lease_time: Duration,
    /// BOOTP clients (no option 53) from MACs that are not pinned get pool addresses (for
    /// `lease_time`, never longer); otherwise they are ignored (`bootp = "pinned"`).
    pub bootp_dynamic: bool,
    /// The new-MAC flood limit (`[serve] dhcp_new_mac_burst`, `dhcp_new_macs_per_second`).
    pub new_macs: NewMacLimits,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub boot: BootFiles,
    /// The append-only lease log.
    pub lease_file: PathBuf,
}

impl DhcpConfig {
    pub fn netmask(&self) -> Ipv4Addr {
        prefix_mask(self.prefix_len)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.server) | !u32::from(self.netmask()))
    }

    /// Whether `ip` lies in the server's subnet.
    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask());
        u32::from(ip) & m == u32::from(self.server) & m
    }
}

pub(crate) fn prefix_mask(prefix_len: u8) -> Ipv4Addr {
    let p = u32::from(prefix_len.min(32));
    Ipv4Addr::from(if p == 0 { 0 } else { u32::MAX << (32 - p) })
}

/// Why the DHCP server cannot start or run. The messages speak of the server's own terms; the
/// caller knows which of its settings produced them and says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpError {
    #[error("interface '{0}' does not exist")]
    NoInterface(String),
    #[error("interface '{interface}' does not have the server address {server} (has: {has})")]
    NoServerAddress { interface: String, server: Ipv4Addr, has: String },
    #[error(
        "cannot open UDP port {port} on {interface}: {source} (needs root or CAP_NET_BIND_SERVICE + CAP_NET_RAW)"
    )]
    Bind { interface: String, port: u16, source: std::io::Error },
    #[error("DHCP socket on {interface}: {source}")]
    Io { interface: String, source: std::io::Error },
    #[error(transparent)]
    Lease(#[from] crate::leases::LeaseError),
    /// Full mode with no address to hand out.
    #[error("invalid DHCP configuration: full mode needs a pool or pinned nodes")]
    NothingToServe,
}

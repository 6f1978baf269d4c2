//! Read-only TFTP server for boot ROMs, pxelinux, iPXE and the node's busybox.
//!
//! Why our own engine on tokio instead of the async-tftp crate (0.4.2): its directory handler
//! follows symlinks out of its root, it ignores the classic PXE abort-and-retry (the ROM aborts
//! the tsize probe with an ERROR and asks again from the same port; async-tftp keeps resending the
//! first transfer for minutes — its issue #18) and it has no windowsize. Each of those needs a
//! change deep in its transfer loop, and the protocol itself is small.
//!
//! Shape: one socket on port 69 takes requests ([`server`]); each read runs as its own task with
//! its own ephemeral socket ([`transfer`]) as RFC 1350 asks, after the name passed root
//! confinement ([`path`]) and options were negotiated ([`options`]); while few run, a lock-step
//! transfer's blocks go out from a thread of its own with a blocking socket, the same transfer
//! code with a cheaper wait (see `Shared::run_transfer`). Completed transfers and the
//! nodes' `mosboot-report/...` requests become [`crate::events::BootEvent`]s.

mod cache;
mod multicast;
mod options;
mod packet;
pub(crate) mod path;
mod server;
mod transfer;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::node_report::{REPORT_DIR, REPORT_PREFIX};
pub use multicast::{DEFAULT_PORT as MULTICAST_DEFAULT_PORT, MulticastConfig, MulticastLog, SessionStats};
pub use server::TftpServer;

/// Parses one datagram as the request socket does and, for a read request, negotiates its
/// options (the fuzzing entry point; see `netboot::fuzzing`). Returns whether it was a request.
pub fn parse_and_negotiate(data: &[u8]) -> bool {
    match packet::Packet::parse(data) {
        Ok(packet::Packet::Rrq(req)) => {
            let limits = options::Limits {
                max_blksize: 1468,
                max_windowsize: 8,
                default_timeout: Duration::from_secs(1),
            };
            let n = options::negotiate(&req.options, limits, req.mode, 1 << 20);
            assert!(n.blksize >= 8 && n.blksize <= 1468 && n.windowsize >= 1 && n.windowsize <= 8);
            static ROOT: std::sync::OnceLock<Option<path::Root>> = std::sync::OnceLock::new();
            if let Some(root) = ROOT.get_or_init(|| path::Root::new(&std::env::temp_dir()).ok())
                && let Ok(rel) = root.normalize(&req.filename)
            {
                assert!(!rel.starts_with('/') && !rel.split('/').any(|c| c == ".."), "{rel:?} escapes");
            }
            true
        }
        _ => false,
    }
}

/// What the TFTP server serves and how patiently.
#[derive(Clone, Debug)]
pub struct TftpConfig {
    /// Where requests arrive: the server's address on the lab interface, port 69.
    pub bind: SocketAddr,
    /// The directory served (`out/tftpboot`); nothing outside it is ever sent.
    pub root: PathBuf,
    /// Largest blksize granted; 1468 fills an Ethernet frame without IP fragmentation.
    pub max_blksize: u16,
    /// Largest windowsize granted (RFC 7440); PXE ROMs never ask, iPXE and curl-less tools may.
    pub max_windowsize: u16,
    /// Retransmit timeout per packet; a client may ask for another with the `timeout` option.
    pub timeout: Duration,
    /// Retransmissions of one packet before the client counts as gone.
    pub retries: u32,
    /// Concurrent transfers beyond which requests get "server busy".
    pub max_transfers: usize,
    /// Concurrent transfers per client address, so one source cannot take every slot (a PC
    /// fetches one file at a time; the PXE abort-and-retry reuses its slot).
    pub max_per_source: usize,
    /// Hard lifetime of a transfer, plus its size at the slowest rate kept alive (16 KiB/s): a
    /// client that stalls, or ACKs just before every timeout, is ended and cannot hold its slot.
    pub lifetime: Duration,
    /// Bind every socket to this interface (SO_BINDTODEVICE), so nothing is answered elsewhere.
    pub interface: Option<String>,
    /// RFC 2090 multicast for clients that ask for it (off when `None`).
    pub multicast: Option<MulticastConfig>,
}

impl Default for TftpConfig {
    fn default() -> Self {
        TftpConfig {
            bind: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 69)),
            root: PathBuf::from("tftpboot"),
            max_blksize: 1468,
            max_windowsize: 8,
            timeout: Duration::from_secs(1),
            retries: 5,
            max_transfers: 512,
            max_per_source: 8,
            lifetime: Duration::from_secs(30),
            interface: None,
            multicast: None,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TftpError {
    #[error("TFTP root {path}: {source}")]
    Root { path: PathBuf, source: std::io::Error },
    #[error("cannot bind TFTP socket to {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot bind TFTP socket to interface {interface}: {source}")]
    BindToDevice { interface: String, source: std::io::Error },
    #[error("TFTP socket: {0}")]
    Io(#[from] std::io::Error),
}

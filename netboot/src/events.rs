//! Boot-stage events: what the servers saw a node do, for serve's log and `mosboot nodes`.

use std::net::Ipv4Addr;
use std::time::SystemTime;

use crate::mac::MacAddr;

/// One step of a node's way from power-on to a joined cluster member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// DHCP OFFER sent (full mode) or boot information sent (proxy mode).
    Offered,
    /// DHCP ACK sent; the lease is on disk.
    Acked,
    /// DHCP NAK sent (address not ours or not this client's).
    Nak,
    /// The client declined the address (someone else holds it); it is quarantined.
    Declined,
    /// The client released its lease.
    Released,
    /// A TFTP transfer completed; the path is relative to the TFTP root (e.g. `pxelinux.0`).
    Fetched(String),
    /// The node reported itself up and in the cluster (or standalone); the text is what it said.
    Joined(String),
}

impl Stage {
    /// Short human label used in logs and the `nodes` table.
    pub fn label(&self) -> String {
        match self {
            Stage::Offered => "offered".into(),
            Stage::Acked => "acked".into(),
            Stage::Nak => "nak".into(),
            Stage::Declined => "declined".into(),
            Stage::Released => "released".into(),
            Stage::Fetched(path) => format!("fetched {path}"),
            Stage::Joined(_) => "joined".into(),
        }
    }
}

/// An event from the DHCP or TFTP server. TFTP only knows the client's IP; the receiver maps it
/// to a MAC through the lease store.
#[derive(Clone, Debug)]
pub struct BootEvent {
    pub at: SystemTime,
    pub ip: Ipv4Addr,
    pub mac: Option<MacAddr>,
    pub stage: Stage,
}

/// Where servers send events. Bounded, so a flood cannot grow memory without limit; a server
/// never blocks on its observer: when the queue is full the event is dropped (and counted).
pub type EventSender = tokio::sync::mpsc::Sender<BootEvent>;
/// The receiving end, held by `mosboot serve`.
pub type EventReceiver = tokio::sync::mpsc::Receiver<BootEvent>;

/// Events that may wait for the observer; a boot storm of 250 PCs makes about 2000.
pub const EVENT_QUEUE: usize = 4096;

/// A fresh event queue of [`EVENT_QUEUE`] entries.
pub fn channel() -> (EventSender, EventReceiver) {
    tokio::sync::mpsc::channel(EVENT_QUEUE)
}

static DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sends without waiting; a full queue drops the event with a warning for every 1000th drop.
pub fn emit(tx: &EventSender, ev: BootEvent) {
    if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = tx.try_send(ev) {
        let n = DROPPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n.is_multiple_of(1000) {
            tracing::warn!(dropped = n + 1, "boot event queue full (flood?); events dropped");
        }
    }
}

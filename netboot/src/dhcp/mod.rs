//! The DHCP server: full mode (addresses + boot information) or proxy mode (boot information
//! for PXE clients beside someone else's DHCP server), on one interface only.
//!
//! ```text
//! bind()  : check interface + address, open UDP 67 (and 4011 in proxy mode), open lease log
//! run()   : recv -> Handler (pure) -> [commit to lease log, group fsync] -> send reply -> event
//! ```
//! `bind` does everything that needs root, so `mosboot serve` can drop privileges before `run`.

mod alloc;
mod config;
mod handler;
pub mod packet;
mod probe;
mod recv_error;
mod socket;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use alloc::{Allocator, OFFER_HOLD_SECS};
pub use config::{BootFiles, DhcpConfig, DhcpError, DhcpMode, HostInfo, NewMacLimits};
pub use handler::{
    Action, DECLINE_QUARANTINE_SECS, Dest, Handler, NEW_MAC_BURST, NEW_MACS_PER_SEC, Note, Port,
};
pub use probe::{RivalProbe, probe_rival};
pub use socket::{DHCP_RCVBUF, RcvBuf, check_interface, grow_rcvbuf, interface_addrs};

use crate::events::{BootEvent, EventSender, Stage};
use crate::leases::{LeaseStore, to_system_time, unix_now};
use recv_error::{RecvError, RecvErrorLog};
use socket::{IfaceSocket, RecvBatch};

/// UDP port where PXE clients ask a proxyDHCP server for boot information after getting their
/// address elsewhere.
pub const PXE_SERVICE_PORT: u16 = 4011;
/// Replies waiting for their lease to reach the disk; beyond this, requests that need a commit
/// are dropped (the client retries) so a slow or full disk cannot grow memory without bound.
const MAX_PENDING_COMMITS: usize = 1024;

/// Tells the DHCP server which addresses fetched a boot file (fed from TFTP's `Fetched`
/// events): leases of MACs that never did are the first reclaimed when the pool runs dry.
#[derive(Clone, Debug)]
pub struct BootFetches(tokio::sync::mpsc::Sender<Ipv4Addr>);

impl BootFetches {
    pub fn fetched(&self, ip: Ipv4Addr) {
        // Full means a flood of fetches; losing a few only makes those leases reclaimable.
        let _ = self.0.try_send(ip);
    }
}

/// Hands a running DHCP server a reloaded plan (see [`Handler::reconfigure`]): a message to the
/// server task, which applies it between two requests, so no request sees half of each plan.
#[derive(Clone, Debug)]
pub struct Reconfigure(tokio::sync::mpsc::Sender<DhcpConfig>);

impl Reconfigure {
    /// Queues `cfg`; false if the server has stopped.
    pub async fn send(&self, cfg: DhcpConfig) -> bool {
        self.0.send(cfg).await.is_ok()
    }
}

/// A bound, ready-to-run DHCP server.
pub struct DhcpServer {
    handler: Handler,
    store: LeaseStore,
    dhcp: Arc<IfaceSocket>,
    pxe: Option<Arc<IfaceSocket>>,
    events: Option<EventSender>,
    fetches_tx: tokio::sync::mpsc::Sender<Ipv4Addr>,
    fetches: tokio::sync::mpsc::Receiver<Ipv4Addr>,
    reconfig_tx: tokio::sync::mpsc::Sender<DhcpConfig>,
    reconfig: tokio::sync::mpsc::Receiver<DhcpConfig>,
}

impl DhcpServer {
    /// Checks the interface, opens the sockets and the lease log (replaying it; damaged lines are
    /// logged as warnings). Must be called inside a tokio runtime.
    pub fn bind(cfg: DhcpConfig, events: Option<EventSender>) -> Result<Self, DhcpError> {
        if cfg.mode == DhcpMode::Full && cfg.pool.is_empty() && cfg.pinned.is_empty() {
            return Err(DhcpError::NothingToServe);
        }
        let ifindex = socket::check_interface(&cfg.interface, cfg.server)?;
        let dhcp = Arc::new(IfaceSocket::bind(&cfg.interface, ifindex, 67, cfg.server)?);
        let pxe = match cfg.mode {
            DhcpMode::Proxy => {
                Some(Arc::new(IfaceSocket::bind(&cfg.interface, ifindex, PXE_SERVICE_PORT, cfg.server)?))
            }
            DhcpMode::Full => None,
        };
        log_rcvbuf(&cfg.interface, &dhcp);
        let (store, table, warnings) = LeaseStore::open(&cfg.lease_file)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        tracing::info!(
            interface = %cfg.interface,
            server = %cfg.server,
            mode = ?cfg.mode,
            leases = table.len(),
            file = %cfg.lease_file.display(),
            "DHCP server bound"
        );
        let alloc = Allocator::new(cfg.pool.clone(), &cfg.pinned, table);
        let (fetches_tx, fetches) = tokio::sync::mpsc::channel(1024);
        let (reconfig_tx, reconfig) = tokio::sync::mpsc::channel(4);
        Ok(DhcpServer {
            handler: Handler::new(cfg, alloc),
            store,
            dhcp,
            pxe,
            events,
            fetches_tx,
            fetches,
            reconfig_tx,
            reconfig,
        })
    }

    /// Where to report boot-file fetches (see [`BootFetches`]).
    pub fn boot_fetches(&self) -> BootFetches {
        BootFetches(self.fetches_tx.clone())
    }

    /// Where to send a reloaded plan while the server runs.
    pub fn reconfigure(&self) -> Reconfigure {
        Reconfigure(self.reconfig_tx.clone())
    }

    /// MACs known to have fetched a boot file before this start (e.g. from the stage log).
    pub fn booted_before(&mut self, macs: impl IntoIterator<Item = crate::mac::MacAddr>) {
        for m in macs {
            self.handler.booted_before(m);
        }
    }

    /// Serves until `shutdown` completes. Replies that wait for their lease to reach the disk are
    /// sent by their own task, so one slow fsync never stalls the receive loop.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DhcpError> {
        tokio::pin!(shutdown);
        let mut batch67 = RecvBatch::default();
        let pxe = self.pxe.clone();
        // Port 4011 is open in proxy mode only.
        let mut batch4011 = pxe.as_ref().map(|_| RecvBatch::default());
        let interface = self.handler.config().interface.clone();
        let mut errors = RecvErrorLog::new();
        let mut commits = Commits { pending: Arc::new(AtomicUsize::new(0)), warned_full: false };
        loop {
            // Packets first: the other branches are polled only while none is queued (tokio's
            // task budget makes the socket report "not ready" now and then even in a storm, so
            // they are never starved), which keeps a storm from paying for them per packet.
            let received = tokio::select! {
                biased;
                r = self.dhcp.recv_batch(&mut batch67) => r.map(|n| (n, Port::Dhcp)),
                r = recv_opt(pxe.as_deref(), batch4011.as_mut()) => r.map(|n| (n, Port::PxeService)),
                Some(ip) = self.fetches.recv() => {
                    self.handler.fetched_by(ip);
                    continue;
                }
                Some(cfg) = self.reconfig.recv() => {
                    self.handler.reconfigure(cfg);
                    continue;
                }
                () = &mut shutdown => break,
            };
            let (count, port) = match received {
                Ok(got) => {
                    errors.received();
                    got
                }
                // A transient error (see recv_error) never takes the lab down.
                Err(source) if recv_error::classify(&source) == RecvError::Transient => {
                    let (line, pause) = errors.transient(&source, std::time::Instant::now());
                    if let Some(line) = line {
                        tracing::warn!(%interface, "DHCP receive error, carrying on: {line}");
                    }
                    if !pause.is_zero() {
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                    continue;
                }
                Err(source) => return Err(DhcpError::Io { interface: interface.clone(), source }),
            };
            let batch = match (port, &batch4011) {
                (Port::PxeService, Some(b)) => b,
                _ => &batch67,
            };
            let sock = if port == Port::Dhcp { &self.dhcp } else { pxe.as_ref().unwrap_or(&self.dhcp) };
            let now = unix_now();
            for i in 0..count {
                let (data, from) = batch.get(i);
                let Some(action) = self.handler.handle_datagram(data, from, port, now) else { continue };
                let events = self.events.clone();
                if action.commit.is_some() {
                    commits.spawn(action, self.store.clone(), sock.clone(), events);
                } else {
                    complete(action, self.store.clone(), sock.clone(), events).await;
                }
            }
        }
        tracing::info!("DHCP server stopped");
        Ok(())
    }
}

/// Replies that wait for their lease to reach the disk, each in its own task, at most
/// [`MAX_PENDING_COMMITS`] at a time (a plain counter: nothing ever waits for a slot).
struct Commits {
    pending: Arc<AtomicUsize>,
    warned_full: bool,
}

/// One of [`Commits`]' slots, given back when the task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Commits {
    fn spawn(
        &mut self,
        action: Action,
        store: LeaseStore,
        sock: Arc<IfaceSocket>,
        events: Option<EventSender>,
    ) {
        // Only this loop takes slots, so a load-then-add cannot overshoot.
        if self.pending.load(Ordering::Relaxed) >= MAX_PENDING_COMMITS {
            if !std::mem::replace(&mut self.warned_full, true) {
                tracing::warn!(
                    limit = MAX_PENDING_COMMITS,
                    "lease log is not keeping up; requests that need a commit are dropped until it does"
                );
            }
            return;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(self.pending.clone());
        self.warned_full = false;
        tokio::spawn(async move {
            complete(action, store, sock, events).await;
            drop(slot);
        });
    }
}

async fn recv_opt(sock: Option<&IfaceSocket>, batch: Option<&mut RecvBatch>) -> std::io::Result<usize> {
    match (sock, batch) {
        (Some(s), Some(b)) => s.recv_batch(b).await,
        _ => std::future::pending().await,
    }
}

/// Says how big a burst the DHCP socket can queue; a warning when it could not be forced.
fn log_rcvbuf(interface: &str, sock: &IfaceSocket) {
    let kib = sock.rcvbuf.bytes() >> 10;
    match sock.rcvbuf {
        socket::RcvBuf::Forced { .. } => {
            tracing::info!(%interface, kib, "DHCP receive buffer set (SO_RCVBUFFORCE)");
        }
        socket::RcvBuf::Capped { .. } => tracing::warn!(
            %interface,
            kib,
            wanted_kib = socket::DHCP_RCVBUF >> 10,
            "DHCP receive buffer could not be forced (no CAP_NET_ADMIN; SO_RCVBUF is capped by net.core.rmem_max): \
             a burst of PCs switched on together may overflow it, and those wait for their retransmit"
        ),
    }
}

/// Commit (if any), then send, then log and report.
async fn complete(action: Action, store: LeaseStore, sock: Arc<IfaceSocket>, events: Option<EventSender>) {
    if let Some(lease) = &action.commit
        && let Err(e) = store.commit(lease).await
    {
        tracing::error!(mac = %lease.mac, ip = %lease.ip, error = %e, "lease not saved; reply withheld");
        return;
    }
    if let Some((bytes, dest)) = &action.reply {
        let to = match dest {
            Dest::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, 68),
            Dest::Unicast(a) => *a,
        };
        if let Err(e) = sock.send_to(bytes, to).await {
            tracing::warn!(%to, error = %e, "cannot send DHCP reply");
            return;
        }
    }
    if let Some(note) = action.note {
        log_note(&note);
        if let Some(tx) = events {
            crate::events::emit(
                &tx,
                BootEvent {
                    at: to_system_time(unix_now()),
                    ip: note.ip,
                    mac: Some(note.mac),
                    stage: note.stage,
                },
            );
        }
    }
}

/// One plain-text line per event, greppable whatever the log formatter does with fields. The
/// line is formatted once, by the log writer's formatter, and queued (see `netboot::spool`).
fn log_note(n: &Note) {
    struct Node(Option<u16>);
    impl std::fmt::Display for Node {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self.0 {
                Some(x) => write!(f, "{x}"),
                None => f.write_str("-"),
            }
        }
    }
    let host = if n.hostname.is_empty() { "-" } else { n.hostname.as_str() };
    let (open, detail, close) =
        if n.detail.is_empty() { ("", "", "") } else { (" (", n.detail.as_str(), ")") };
    let node = Node(n.node);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                "{} mac={} ip={} host={} node={}{}{}{}",
                n.stage.label(),
                n.mac,
                n.ip,
                host,
                node,
                open,
                detail,
                close
            )
        };
    }
    match n.stage {
        Stage::Nak | Stage::Declined => line!(warn),
        _ => line!(info),
    }
}

#[cfg(test)]
mod tests;

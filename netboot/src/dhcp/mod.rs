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

pub use alloc::{Allocator, OFFER_HOLD_SECS};
pub use config::{BootFiles, DhcpConfig, DhcpError, DhcpMode, HostInfo};
pub use handler::{Action, BOOTP_LEASE_SECS, DECLINE_QUARANTINE_SECS, Dest, Handler, Note, Port};
pub use probe::probe_rival;
pub use socket::{check_interface, interface_addrs};

use crate::events::{BootEvent, EventSender, Stage};
use crate::leases::{LeaseStore, to_system_time, unix_now};
use recv_error::{RecvError, RecvErrorLog};
use socket::IfaceSocket;

/// UDP port where PXE clients ask a proxyDHCP server for boot information after getting their
/// address elsewhere.
pub const PXE_SERVICE_PORT: u16 = 4011;

/// A bound, ready-to-run DHCP server.
pub struct DhcpServer {
    handler: Handler,
    store: LeaseStore,
    dhcp: Arc<IfaceSocket>,
    pxe: Option<Arc<IfaceSocket>>,
    events: Option<EventSender>,
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
        Ok(DhcpServer { handler: Handler::new(cfg, alloc), store, dhcp, pxe, events })
    }

    /// Serves until `shutdown` completes. Replies that wait for their lease to reach the disk are
    /// sent by their own task, so one slow fsync never stalls the receive loop.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DhcpError> {
        tokio::pin!(shutdown);
        let mut buf67 = vec![0u8; 2048];
        let mut buf4011 = vec![0u8; 2048];
        let pxe = self.pxe.clone();
        let interface = self.handler.config().interface.clone();
        let mut errors = RecvErrorLog::new();
        loop {
            let received = tokio::select! {
                () = &mut shutdown => break,
                r = self.dhcp.recv(&mut buf67) => r.map(|(n, from)| (n, from, Port::Dhcp)),
                r = recv_opt(pxe.as_deref(), &mut buf4011) => r.map(|(n, from)| (n, from, Port::PxeService)),
            };
            let (n, from, port) = match received {
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
            let data = if port == Port::Dhcp { &buf67[..n] } else { &buf4011[..n] };
            let Some(action) = self.handler.handle_datagram(data, from, port, unix_now()) else { continue };
            let sock =
                if port == Port::Dhcp { self.dhcp.clone() } else { pxe.clone().unwrap_or(self.dhcp.clone()) };
            let store = self.store.clone();
            let events = self.events.clone();
            if action.commit.is_some() {
                tokio::spawn(async move { complete(action, store, sock, events).await });
            } else {
                complete(action, store, sock, events).await;
            }
        }
        tracing::info!("DHCP server stopped");
        Ok(())
    }
}

async fn recv_opt(sock: Option<&IfaceSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddrV4)> {
    match sock {
        Some(s) => s.recv(buf).await,
        None => std::future::pending().await,
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
            let _ = tx.send(BootEvent {
                at: to_system_time(unix_now()),
                ip: note.ip,
                mac: Some(note.mac),
                stage: note.stage,
            });
        }
    }
}

/// One plain-text line per event, greppable whatever the log formatter does with fields.
fn log_note(n: &Note) {
    let node = n.node.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    let host = if n.hostname.is_empty() { "-" } else { n.hostname.as_str() };
    let detail = if n.detail.is_empty() { String::new() } else { format!(" ({})", n.detail) };
    let line = format!("{} mac={} ip={} host={} node={}{}", n.stage.label(), n.mac, n.ip, host, node, detail);
    match n.stage {
        Stage::Nak | Stage::Declined => tracing::warn!("{line}"),
        _ => tracing::info!("{line}"),
    }
}

#[cfg(test)]
mod tests;

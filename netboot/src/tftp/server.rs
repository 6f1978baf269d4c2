//! The request socket: takes RRQs, runs each as a task, ends a peer's old transfer when the same
//! peer asks again (the PXE abort-and-retry), and turns `mosboot-report/...` requests into events.
//!
//! Node reports: a booted node runs `tftp -g -r mosboot-report/joined/3/ws001 -l /tmp/ack SERVER`
//! (busybox); that needs no extra port or daemon on the node. The rest of the name becomes
//! `Stage::Joined` for the client's IP, and the node receives the three bytes `ok\n`, in one DATA
//! block sent at once from the reply socket (no transfer: reports are frequent, see
//! `crate::node_report`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use super::cache::FileCache;
use super::options::{Limits, negotiate};
use super::packet::{ErrorCode, Mode, OP_RRQ, OP_WRQ, Packet, PacketError, Request, error_packet};
use super::path::{Refusal, Root};
use super::transfer::{Outcome, Source, Transfer};
use super::{REPORT_PREFIX, TftpConfig, TftpError};
use crate::events::{BootEvent, EventSender, Stage};

/// Longest report text accepted after `mosboot-report/`.
const MAX_REPORT_LEN: usize = 200;
/// What a reporting node receives.
const REPORT_REPLY: &[u8] = b"ok\n";
/// A zero timeout would spin; this is the floor.
const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Slowest transfer kept alive (bytes/s) beyond [`TftpConfig::lifetime`]; a 486 with an ISA NIC
/// does 20 times that.
pub(super) const MIN_RATE: u64 = 16 * 1024;
/// Most transfers running at once for which lock-step transfers get a thread of their own (see
/// [`Shared::run_transfer`]); beyond it all share the TFTP thread's reactor.
const OWN_THREAD_MAX: usize = 2;
/// Stack of such a thread: the transfer loop keeps its buffers on the heap.
const OWN_THREAD_STACK: usize = 256 * 1024;

/// A bound TFTP server, ready to [`run`](TftpServer::run).
pub struct TftpServer {
    socket: std::net::UdpSocket,
    local: SocketAddr,
    /// PXE MTFTP's request socket, when multicast is on with an MTFTP port.
    mtftp: Option<(std::net::UdpSocket, SocketAddr)>,
    shared: Arc<Shared>,
}

struct Shared {
    cfg: TftpConfig,
    root: Root,
    events: Option<crate::events::EventSender>,
    transfers: Mutex<HashMap<SocketAddr, Running>>,
    /// Shared copies of the files being sent (see `cache`).
    cache: FileCache,
    next_id: AtomicU64,
    /// Transfers running on a thread of their own now.
    own_threads: AtomicUsize,
    /// Where node reports are answered from (see [`reply_socket`]).
    replies: std::net::UdpSocket,
    /// Tests make starting a transfer thread fail, to check the fallback to the reactor.
    #[cfg(test)]
    fail_thread_spawn: AtomicBool,
    warned_bind_device: AtomicBool,
    /// RFC 2090 sessions, when `[serve] multicast` is on.
    multicast: Option<Arc<super::multicast::Multicast>>,
}

struct Running {
    id: u64,
    abort: AbortHandle,
    /// What it serves: the same request again from the same port is a retransmission.
    request: Request,
    /// Tells the transfer that its client repeated the request (it never got our OACK).
    again: Arc<tokio::sync::Notify>,
}

impl TftpServer {
    /// Checks the root and binds the request socket now, so `serve` can drop privileges before
    /// running. Transfer sockets use ephemeral ports and need no privilege.
    pub fn bind(cfg: TftpConfig, events: Option<EventSender>) -> Result<Self, TftpError> {
        let root =
            Root::new(&cfg.root).map_err(|source| TftpError::Root { path: cfg.root.clone(), source })?;
        let socket = udp_socket(cfg.bind, cfg.interface.as_deref(), true)?;
        // Room for a boot storm's worth of requests arriving at once.
        let _ = socket.set_recv_buffer_size(1 << 20);
        let socket: std::net::UdpSocket = socket.into();
        let local = socket.local_addr()?;
        let replies = reply_socket(&cfg)?;
        let mtftp = match cfg.multicast.as_ref().and_then(|mc| mc.mtftp_port) {
            Some(port) => {
                let addr = SocketAddr::new(cfg.bind.ip(), port);
                let socket: std::net::UdpSocket = udp_socket(addr, cfg.interface.as_deref(), true)?.into();
                let local = socket.local_addr()?;
                Some((socket, local))
            }
            None => None,
        };
        let multicast = cfg.multicast.clone().map(|mc| {
            Arc::new(super::multicast::Multicast::new(mc, cfg.clone(), root.clone(), events.clone()))
        });
        Ok(TftpServer {
            socket,
            local,
            mtftp,
            shared: Arc::new(Shared {
                cfg,
                root,
                events,
                transfers: Mutex::new(HashMap::new()),
                cache: FileCache::default(),
                next_id: AtomicU64::new(1),
                own_threads: AtomicUsize::new(0),
                replies,
                #[cfg(test)]
                fail_thread_spawn: AtomicBool::new(false),
                warned_bind_device: AtomicBool::new(false),
                multicast,
            }),
        })
    }

    /// The address requests are taken on (useful when bound to port 0 in tests).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The PXE MTFTP request address, when it is served.
    pub fn mtftp_addr(&self) -> Option<SocketAddr> {
        self.mtftp.as_ref().map(|(_, a)| *a)
    }

    /// Counters of finished multicast sessions (None when multicast is off).
    pub fn multicast_log(&self) -> Option<super::multicast::MulticastLog> {
        self.shared.multicast.as_ref().map(|m| m.log())
    }

    /// Serves until `shutdown` completes; running transfers are then ended.
    ///
    /// TFTP runs on a thread of its own with a single-threaded runtime: a lock-step transfer is
    /// one small packet each way per block, and on the shared multi-threaded runtime every ACK
    /// woke a worker and often handed the task to the other one (a futex wake and a context
    /// switch per block, more than the packet itself costs). One thread sends far more than a
    /// lab link carries; DHCP and the status page keep the other runtime to themselves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), TftpError> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("mosboot-tftp".into()).spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(TftpError::from)
                .and_then(|rt| {
                    // A dropped sender (the caller went away) stops the server too.
                    rt.block_on(self.serve_requests(async {
                        let _ = stop_rx.await;
                    }))
                });
            let _ = done_tx.send(result);
        })?;
        tokio::pin!(shutdown);
        let mut done_rx = done_rx;
        let finished = tokio::select! {
            () = &mut shutdown => {
                let _ = stop_tx.send(());
                done_rx.await
            }
            r = &mut done_rx => r,
        };
        finished.unwrap_or_else(|_| Err(TftpError::Io(io::Error::other("the TFTP thread ended abnormally"))))
    }

    async fn serve_requests(self, shutdown: impl Future<Output = ()>) -> Result<(), TftpError> {
        let socket = Arc::new(UdpSocket::from_std(self.socket)?);
        let shared = self.shared;
        tracing::info!(addr = %self.local, root = %shared.root.path().display(), "tftp: serving");
        let mtftp = match self.mtftp {
            Some((s, addr)) => {
                tracing::info!(%addr, group = %super::multicast::MTFTP_GROUP, "tftp: PXE MTFTP on");
                Some(Arc::new(UdpSocket::from_std(s)?))
            }
            None => None,
        };
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; 4096];
        let mut mbuf = vec![0u8; 4096];
        loop {
            let mtftp_recv = async {
                match &mtftp {
                    Some(s) => s.recv_from(&mut mbuf).await.map(|(n, peer)| (Arc::clone(s), n, peer)),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                received = mtftp_recv => {
                    if let Ok((s, n, peer)) = received {
                        shared.handle_mtftp(&s, &mbuf[..n], peer);
                    }
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok((n, peer)) => shared.handle(&socket, &buf[..n], peer),
                    // ICMP errors for earlier replies surface here; they concern one client only.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "tftp: receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
            }
        }
        let running = std::mem::take(&mut *shared.lock_transfers());
        for r in running.values() {
            r.abort.abort();
        }
        tracing::info!(ended = running.len(), "tftp: stopped");
        Ok(())
    }
}

/// The socket node reports are answered from: an ephemeral port of the server's address (as a
/// transfer's TID would be), only ever sent on. The node's ACK of the one DATA block goes there
/// and is never read: nothing is woken for it (answered from port 69, each report woke the
/// TFTP thread twice), and with the smallest receive buffer the kernel drops those ACKs once a
/// few are queued, so the socket holds a few KiB whatever the LAN sends it.
fn reply_socket(cfg: &TftpConfig) -> Result<std::net::UdpSocket, TftpError> {
    let socket = udp_socket(SocketAddr::new(cfg.bind.ip(), 0), cfg.interface.as_deref(), false)?;
    let _ = socket.set_recv_buffer_size(0);
    Ok(socket.into())
}

/// Creates a non-blocking UDP socket bound to `addr` (and the interface, when given).
pub(super) fn udp_socket(
    addr: SocketAddr,
    interface: Option<&str>,
    device_required: bool,
) -> Result<Socket, TftpError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let device_error =
        interface.and_then(|iface| socket.bind_device(Some(iface.as_bytes())).err().map(|e| (iface, e)));
    if let Some((iface, source)) = device_error {
        if device_required {
            return Err(TftpError::BindToDevice { interface: iface.to_string(), source });
        }
        tracing::debug!(interface = iface, error = %source, "tftp: SO_BINDTODEVICE failed");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into()).map_err(|source| TftpError::Bind { addr, source })?;
    Ok(socket)
}

/// Removes a transfer's entry when its task ends in any way (done, aborted, panicked), unless a
/// newer transfer for the same peer has replaced it.
struct Deregister {
    shared: Arc<Shared>,
    peer: SocketAddr,
    id: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        let mut map = self.shared.lock_transfers();
        if map.get(&self.peer).is_some_and(|r| r.id == self.id) {
            map.remove(&self.peer);
        }
    }
}

/// A claimed place among the [`OWN_THREAD_MAX`] transfer threads, given back when dropped.
struct OwnThread(Arc<Shared>);

impl Drop for OwnThread {
    fn drop(&mut self) {
        self.0.own_threads.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Starts a transfer thread (failing on purpose in tests that ask for it).
    fn spawn_transfer_thread(&self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_thread_spawn.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "thread limit (test)"));
        }
        let thread =
            std::thread::Builder::new().name("mosboot-tftp-xfer".into()).stack_size(OWN_THREAD_STACK);
        thread.spawn(f).map(drop)
    }

    fn lock_transfers(&self) -> MutexGuard<'_, HashMap<SocketAddr, Running>> {
        // A poisoned map is still a consistent map of handles.
        self.transfers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn handle(self: &Arc<Self>, socket: &Arc<UdpSocket>, bytes: &[u8], peer: SocketAddr) {
        match Packet::parse(bytes) {
            Ok(Packet::Rrq(req)) => {
                match req.filename.replace('\\', "/").trim_start_matches('/').strip_prefix(REPORT_PREFIX) {
                    Some(report) => self.report(socket, peer, report),
                    None if self.multicast.is_some() && super::multicast::wants(&req) => {
                        self.multicast(socket, peer, req)
                    }
                    None if self
                        .multicast
                        .as_ref()
                        .is_some_and(|mc| mc.refuse_fallback(socket, peer, &req)) => {}
                    None => self.start(socket, peer, req),
                }
            }
            Ok(Packet::Wrq(req)) => {
                tracing::info!(%peer, file = ?req.filename, "tftp: refused write request (read-only server)");
                reply(socket, peer, ErrorCode::AccessViolation, "access violation: read-only server");
            }
            Ok(Packet::Error { code, message }) => {
                // Some ROMs send their abort to port 69 instead of the transfer's port.
                let old = self.lock_transfers().remove(&peer);
                if let Some(old) = old {
                    old.abort.abort();
                    tracing::debug!(%peer, code, message = ?message, "tftp: client ended its transfer via port 69");
                }
            }
            Ok(other) => {
                tracing::debug!(%peer, packet = other.kind(), "tftp: ignored non-request on port 69");
            }
            Err(e) => {
                let opcode = bytes.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                let answer =
                    matches!(e, PacketError::UnknownOpcode(_)) || matches!(opcode, Some(OP_RRQ | OP_WRQ));
                tracing::warn!(%peer, error = ?e.to_string(), "tftp: malformed packet");
                if answer {
                    reply(socket, peer, ErrorCode::IllegalOperation, &format!("malformed request: {e}"));
                }
            }
        }
    }

    /// A datagram on the PXE MTFTP port: read requests go to the MTFTP sessions (options
    /// dropped: MTFTP has none, blocks are 512 bytes), anything else is ignored.
    fn handle_mtftp(self: &Arc<Self>, socket: &Arc<UdpSocket>, bytes: &[u8], peer: SocketAddr) {
        let (Ok(Packet::Rrq(mut req)), Some(mc)) = (Packet::parse(bytes), &self.multicast) else {
            tracing::debug!(%peer, "tftp: mtftp: ignored a datagram that is no read request");
            return;
        };
        req.options.clear();
        let (shared, main) = (Arc::clone(self), Arc::clone(socket));
        mc.mtftp_request(socket, peer, req, move |req| shared.start(&main, peer, req));
    }

    /// A node report (crate::node_report) is answered at once with its single DATA block from
    /// the reply socket: no transfer, no task, options ignored (RFC 2347 allows it), so 254
    /// nodes reporting every 5 s cost next to nothing.
    fn report(&self, socket: &UdpSocket, peer: SocketAddr, report: &str) {
        let valid = !report.is_empty()
            && report.len() <= MAX_REPORT_LEN
            && report.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !valid {
            tracing::warn!(%peer, "tftp: refused: bad node report (printable ASCII, 1-200 characters)");
            reply(socket, peer, ErrorCode::AccessViolation, "access violation");
            return;
        }
        tracing::debug!(%peer, report, "tftp: node report");
        self.emit(peer, Stage::Joined(report.to_string()));
        let _ = self.replies.send_to(&Packet::Data { block: 1, data: REPORT_REPLY.to_vec() }.encode(), peer);
    }

    /// Hands a request with the `multicast` option to the multicast sessions, with the same
    /// negotiation as unicast and unicast as the fallback.
    fn multicast(self: &Arc<Self>, socket: &Arc<UdpSocket>, peer: SocketAddr, req: Request) {
        let Some(mc) = &self.multicast else { return self.start(socket, peer, req) };
        let limits = Limits {
            max_blksize: self.cfg.max_blksize,
            max_windowsize: self.cfg.max_windowsize,
            default_timeout: self.cfg.timeout.max(MIN_TIMEOUT),
        };
        let (mode, options) = (req.mode, req.options.clone());
        let (shared, main) = (Arc::clone(self), Arc::clone(socket));
        mc.request(
            socket,
            peer,
            req,
            move |size| negotiate(&options, limits, mode, size),
            move |req| shared.start(&main, peer, req),
        );
    }

    /// Starts a transfer task for a read request, ending any older one of the same peer.
    fn start(self: &Arc<Self>, socket: &Arc<UdpSocket>, peer: SocketAddr, req: Request) {
        let old;
        {
            let mut map = self.lock_transfers();
            if let Some(running) = map.get(&peer).filter(|r| r.request == req) {
                // The same request again from the same port: the client's own retransmission
                // (our first reply was lost or is late). The running transfer answers it with its
                // own retransmission. Replacing it would change the TID under a client that may
                // have accepted the first reply meanwhile (curl then ignores the new one and
                // hangs). A PXE ROM's retry after its tsize probe asks differently, or after an
                // ERROR that ended the old transfer.
                tracing::debug!(%peer, file = ?req.filename, "tftp: repeated request; the running transfer answers it");
                running.again.notify_one();
                return;
            }
            old = map.remove(&peer);
            let from_source = map.keys().filter(|p| p.ip() == peer.ip()).count();
            let refusal = if from_source >= self.cfg.max_per_source {
                Some(("too many transfers from your address", self.cfg.max_per_source))
            } else if map.len() >= self.cfg.max_transfers {
                Some(("server busy", self.cfg.max_transfers))
            } else {
                None
            };
            if let Some((why, limit)) = refusal {
                drop(map);
                if let Some(old) = old {
                    old.abort.abort();
                }
                tracing::warn!(%peer, file = ?req.filename, limit, "tftp: refused: {why}");
                reply(socket, peer, ErrorCode::NotDefined, why);
                return;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let shared = Arc::clone(self);
            let main = Arc::clone(socket);
            let request = req.clone();
            let again = Arc::new(tokio::sync::Notify::new());
            let heard_again = Arc::clone(&again);
            // Spawning never polls inline, so the entry is in the map before the task can end.
            let task = tokio::spawn(async move {
                let _deregister = Deregister { shared: Arc::clone(&shared), peer, id };
                shared.serve(&main, peer, req, heard_again).await;
            });
            map.insert(peer, Running { id, abort: task.abort_handle(), request, again });
        }
        // Aborted outside the lock: the old task's Deregister takes the same lock.
        if let Some(old) = old {
            old.abort.abort();
            tracing::debug!(%peer, "tftp: same client port asked again; previous transfer ended");
        }
    }

    async fn serve(
        self: &Arc<Self>,
        main: &UdpSocket,
        peer: SocketAddr,
        req: Request,
        again: Arc<tokio::sync::Notify>,
    ) {
        let started = Instant::now();
        let (source, size, path) = match self.prepare(&req).await {
            Ok(prepared) => prepared,
            Err(refusal) => {
                match &refusal {
                    Refusal::NotFound(why) => {
                        tracing::debug!(%peer, file = ?req.filename, reason = ?why, "tftp: file not found");
                    }
                    Refusal::Denied(why) => {
                        tracing::warn!(%peer, file = ?req.filename, reason = ?why, "tftp: refused");
                    }
                }
                let (code, text) = match &refusal {
                    Refusal::NotFound(_) => (ErrorCode::FileNotFound, "file not found"),
                    Refusal::Denied(_) => (ErrorCode::AccessViolation, "access violation"),
                };
                let _ = main.send_to(&error_packet(code, text), peer).await;
                return;
            }
        };
        let limits = Limits {
            max_blksize: self.cfg.max_blksize,
            max_windowsize: self.cfg.max_windowsize,
            default_timeout: self.cfg.timeout.max(MIN_TIMEOUT),
        };
        let negotiated = negotiate(&req.options, limits, req.mode, size);
        if !negotiated.ignored.is_empty() {
            tracing::debug!(%peer, ignored = ?negotiated.ignored, "tftp: options not granted");
        }
        let (blksize, windowsize) = (negotiated.blksize, negotiated.windowsize);
        let socket = match self.transfer_socket(peer).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "tftp: cannot open a transfer socket");
                let _ = main.send_to(&error_packet(ErrorCode::NotDefined, "server error"), peer).await;
                return;
            }
        };
        tracing::debug!(%peer, ?path, size, blksize, windowsize, mode = %req.mode, oack = ?negotiated.oack, "tftp: sending");
        let transfer =
            Transfer::new(socket, source, req.mode, negotiated, self.cfg.retries).with_again(again);
        let lifetime = self.cfg.lifetime + Duration::from_secs(size / MIN_RATE);
        let Ok(outcome) = tokio::time::timeout(lifetime, self.run_transfer(transfer)).await else {
            tracing::warn!(%peer, ?path, size, secs = lifetime.as_secs(), "tftp: transfer ended: too slow (hard lifetime)");
            return;
        };
        let ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(Outcome::Complete { bytes, final_ack }) => {
                tracing::debug!(%peer, ?path, bytes, blksize, windowsize, ms, final_ack, "tftp: sent");
                self.emit(peer, Stage::Fetched(path));
            }
            Ok(Outcome::ClientError { code, message, bytes }) => {
                tracing::debug!(%peer, ?path, bytes, blksize, ms, code, message = ?message, "tftp: client ended the transfer");
            }
            Ok(Outcome::GaveUp { bytes, reason }) => {
                tracing::warn!(%peer, ?path, bytes, blksize, ms, reason, "tftp: transfer abandoned");
            }
            Err(e) => {
                tracing::warn!(%peer, ?path, blksize, ms, error = %e, "tftp: transfer failed");
            }
        }
    }

    /// Runs a transfer: the OACK handshake here, then the blocks. A lock-step data phase runs on
    /// a thread of its own with a blocking socket while few transfers run: one `send` and one
    /// `recv` per block, no reactor round trip (an `epoll_wait` per wakeup).
    /// With many transfers the reactor is the cheaper one: one wakeup serves several ready
    /// sockets, where threads would cost a context switch per block each. This task waits for the
    /// thread; when it is aborted or its lifetime ends, dropping the [`Stop`] ends the thread.
    async fn run_transfer(self: &Arc<Self>, mut transfer: Transfer) -> io::Result<Outcome> {
        if let Some(outcome) = transfer.open().await? {
            return Ok(outcome);
        }
        if !transfer.lock_step() || self.lock_transfers().len() > OWN_THREAD_MAX {
            return transfer.send_data().await;
        }
        let claimed = self
            .own_threads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < OWN_THREAD_MAX).then_some(n + 1))
            .is_ok();
        if !claimed {
            return transfer.send_data().await;
        }
        let slot = OwnThread(Arc::clone(self));
        // The thread is started before the transfer is handed over, so a thread that cannot be
        // started (a thread or memory limit) leaves the transfer here, on the reactor.
        let (give, take) = std::sync::mpsc::sync_channel::<Transfer>(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = self.spawn_transfer_thread(move || {
            let _slot = slot;
            if let Ok(transfer) = take.recv() {
                let _ = tx.send(transfer.run_blocking());
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "tftp: cannot start a transfer thread; this transfer stays on the reactor");
            return transfer.send_data().await;
        }
        let (transfer, _stop) = transfer.into_blocking()?;
        if give.send(transfer).is_err() {
            return Err(io::Error::other("the transfer thread ended before its transfer"));
        }
        rx.await.unwrap_or_else(|_| Err(io::Error::other("the transfer thread ended abnormally")))
    }

    /// Opens the file a request names, under the root; an octet-mode file small enough comes
    /// as the shared in-memory copy of it (`cache`), read once for all concurrent transfers.
    async fn prepare(self: &Arc<Self>, req: &Request) -> Result<(Source, u64, String), Refusal> {
        let relative = self.root.normalize(&req.filename)?;
        let shared = Arc::clone(self);
        let rel = relative.clone();
        let octet = req.mode == Mode::Octet;
        let opened = tokio::task::spawn_blocking(move || {
            let opened = shared.root.open(&rel)?;
            let copy = if octet { shared.cache.get(&opened.file).ok().flatten() } else { None };
            Ok::<_, Refusal>((opened, copy))
        })
        .await
        .map_err(|e| Refusal::Denied(format!("open task failed: {e}")))?;
        let (opened, copy) = opened?;
        let source = match copy {
            Some(copy) => Source::Memory(copy),
            None => Source::File(Arc::new(opened.file)),
        };
        Ok((source, opened.size, relative))
    }

    /// A fresh socket on the server's address, connected to the client (RFC 1350's new TID).
    async fn transfer_socket(&self, peer: SocketAddr) -> Result<UdpSocket, TftpError> {
        let local = SocketAddr::new(self.cfg.bind.ip(), 0);
        let socket = udp_socket(local, self.cfg.interface.as_deref(), false)?;
        if self.cfg.interface.is_some()
            && socket.device()?.is_none()
            && !self.warned_bind_device.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "tftp: transfer sockets cannot be bound to the interface (no privilege); they stay bound to the server address"
            );
        }
        let socket = UdpSocket::from_std(socket.into())?;
        socket.connect(peer).await?;
        Ok(socket)
    }

    fn emit(&self, peer: SocketAddr, stage: Stage) {
        let ip = match peer.ip() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return,
            },
        };
        if let Some(tx) = &self.events {
            // A closed receiver means serve is shutting down; nothing to do.
            crate::events::emit(tx, BootEvent { at: SystemTime::now(), ip, mac: None, stage });
        }
    }
}

/// Sends a request-level ERROR from the request socket without waiting (dropped if the socket
/// buffer is full: the client will ask again).
fn reply(socket: &UdpSocket, peer: SocketAddr, code: ErrorCode, message: &str) {
    let _ = socket.try_send_to(&error_packet(code, message), peer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventReceiver;
    use std::net::Ipv4Addr;

    struct Running {
        addr: SocketAddr,
        events: EventReceiver,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        _root: tempfile::TempDir,
    }

    async fn start(timeout: Duration, retries: u32) -> Running {
        start_with(timeout, retries, false).await
    }

    async fn start_with(timeout: Duration, retries: u32, fail_thread_spawn: bool) -> Running {
        let root = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::write(root.path().join("big"), &big).unwrap();
        let cfg = TftpConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            root: root.path().to_path_buf(),
            timeout,
            retries,
            ..TftpConfig::default()
        };
        let (tx, rx) = crate::events::channel();
        let server = TftpServer::bind(cfg, Some(tx)).unwrap();
        server.shared.fail_thread_spawn.store(fail_thread_spawn, Ordering::Relaxed);
        let addr = server.local_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        Running { addr, events: rx, stop: Some(stop_tx), _root: root }
    }

    fn rrq(name: &str, options: &[(&str, &str)]) -> Vec<u8> {
        Packet::Rrq(Request {
            filename: name.into(),
            mode: super::super::packet::Mode::Octet,
            options: options.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
        })
        .encode()
    }

    /// One datagram, or a failed test after 3 s (a regression must fail, not hang).
    async fn recv_within(client: &UdpSocket, buf: &mut [u8]) -> usize {
        tokio::time::timeout(Duration::from_secs(3), client.recv(buf))
            .await
            .expect("an answer in time")
            .unwrap()
    }

    /// Fetches with blksize 512 and no options; stops ACKing after `ack_limit` blocks.
    async fn fetch(addr: SocketAddr, name: &str, ack_limit: usize) -> Vec<u8> {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&rrq(name, &[]), addr).await.unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2048];
        let mut acked = 0;
        loop {
            let (n, from) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            match Packet::parse(&buf[..n]).unwrap() {
                Packet::Data { block, data } => {
                    if acked == ack_limit {
                        return out;
                    }
                    if usize::from(block) == (out.len() / 512 + 1) % 65536 {
                        out.extend_from_slice(&data);
                    }
                    client.send_to(&Packet::Ack { block }.encode(), from).await.unwrap();
                    acked += 1;
                    if data.len() < 512 {
                        return out;
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn complete_transfer_emits_fetched_and_report_emits_joined() {
        let mut s = start(Duration::from_millis(200), 2).await;
        let got = fetch(s.addr, "/big", usize::MAX).await;
        assert_eq!(got.len(), 300_000);
        let ev = tokio::time::timeout(Duration::from_secs(2), s.events.recv()).await.unwrap().unwrap();
        assert_eq!(ev.stage, Stage::Fetched("big".into()));
        assert_eq!(ev.ip, Ipv4Addr::LOCALHOST);
        assert_eq!(ev.mac, None);

        let got = fetch(s.addr, "mosboot-report/joined/3/ws001", usize::MAX).await;
        assert_eq!(got, b"ok\n");
        let ev = tokio::time::timeout(Duration::from_secs(2), s.events.recv()).await.unwrap().unwrap();
        assert_eq!(ev.stage, Stage::Joined("joined/3/ws001".into()));
        // The report reply itself is not a fetched boot file: the next event is the next real
        // fetch (waiting for that instead of sleeping and hoping nothing came).
        fetch(s.addr, "big", usize::MAX).await;
        let ev = tokio::time::timeout(Duration::from_secs(2), s.events.recv()).await.unwrap().unwrap();
        assert_eq!(ev.stage, Stage::Fetched("big".into()));
        let _ = s.stop.take().unwrap().send(());
    }

    /// A lock-step transfer whose thread cannot be started is sent from the reactor instead.
    #[tokio::test]
    async fn transfer_stays_on_the_reactor_when_no_thread_can_start() {
        let mut s = start_with(Duration::from_millis(200), 2, true).await;
        let got = fetch(s.addr, "big", usize::MAX).await;
        let want: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
        assert!(got == want, "{} bytes, not the file", got.len());
        let ev = tokio::time::timeout(Duration::from_secs(2), s.events.recv()).await.unwrap().unwrap();
        assert_eq!(ev.stage, Stage::Fetched("big".into()));
        let _ = s.stop.take().unwrap().send(());
    }

    #[tokio::test]
    async fn vanished_client_is_given_up_without_fetched() {
        let (timeout, retries) = (Duration::from_millis(100), 3);
        let mut s = start(timeout, retries).await;
        let t0 = Instant::now();
        // The client keeps its socket open but stops answering after 10 blocks.
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&rrq("big", &[]), s.addr).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let mut last_packet = Instant::now();
        let mut acked = 0u16;
        while let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf)).await
        {
            // A server that never gives up must fail the test, not hang it.
            assert!(t0.elapsed() < Duration::from_secs(30), "server still sending after 30 s");
            last_packet = Instant::now();
            match Packet::parse(&buf[..n]) {
                Ok(Packet::Data { block, .. }) if acked < 10 => {
                    let ack = Packet::Ack { block }.encode();
                    client.send_to(&ack, from).await.unwrap();
                    acked += 1;
                }
                _ => {}
            }
        }
        let gave_up_after = last_packet - t0;
        // The ten ACKed blocks plus (retries + 1) timeouts; the margin absorbs a loaded machine
        // while still telling "gave up" from "kept going" (the next bound up is the linger).
        assert!(
            gave_up_after <= timeout * (retries + 1) + Duration::from_secs(2),
            "server kept sending for {gave_up_after:?}"
        );
        assert!(s.events.try_recv().is_err(), "no Fetched for an abandoned transfer");
        assert!(s.stop.take().unwrap().send(()).is_ok());
    }

    #[tokio::test]
    async fn bad_reports_are_refused() {
        let s = start(Duration::from_millis(200), 1).await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let long = format!("mosboot-report/{}", "x".repeat(201));
        for name in ["mosboot-report/", "mosboot-report/a\u{7f}b", long.as_str()] {
            client.send_to(&rrq(name, &[]), s.addr).await.unwrap();
            let mut buf = vec![0u8; 2048];
            let n = recv_within(&client, &mut buf).await;
            assert!(matches!(Packet::parse(&buf[..n]), Ok(Packet::Error { code: 2, .. })), "{name}");
        }
    }

    /// Some ROMs never ACK the last block: once the retries are spent the transfer still counts
    /// as fetched; a client that closed its port (ICMP) counts at once.
    #[tokio::test]
    async fn missing_final_ack_still_counts_as_fetched() {
        // Generous timeouts: the point is the order of magnitude (ICMP at once vs retries spent),
        // and a loaded CI machine must not turn scheduling delays into failures.
        let mut s = start(Duration::from_millis(500), 2).await;
        for close_socket in [false, true] {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            client.send_to(&rrq("big", &[]), s.addr).await.unwrap();
            let mut buf = vec![0u8; 2048];
            let t0 = Instant::now();
            loop {
                let (n, from) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
                    .await
                    .expect("DATA in time")
                    .unwrap();
                let Ok(Packet::Data { block, data }) = Packet::parse(&buf[..n]) else { panic!() };
                if data.len() < 512 {
                    break;
                }
                client.send_to(&Packet::Ack { block }.encode(), from).await.unwrap();
            }
            if close_socket {
                drop(client);
            }
            let ev = tokio::time::timeout(Duration::from_secs(8), s.events.recv()).await.unwrap().unwrap();
            assert_eq!(ev.stage, Stage::Fetched("big".into()));
            let took = t0.elapsed();
            if close_socket {
                assert!(took < Duration::from_millis(1000), "port closed noticed late: {took:?}");
            } else {
                assert!(took >= Duration::from_millis(1250), "counted before the retries: {took:?}");
            }
        }
    }

    #[tokio::test]
    async fn interface_binding() {
        let root = tempfile::tempdir().unwrap();
        let cfg = TftpConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            root: root.path().to_path_buf(),
            interface: Some("mosboot-none0".into()),
            ..TftpConfig::default()
        };
        assert!(matches!(TftpServer::bind(cfg.clone(), None), Err(TftpError::BindToDevice { .. })));
        let missing_root = TftpConfig { root: root.path().join("nope"), ..cfg.clone() };
        assert!(matches!(TftpServer::bind(missing_root, None), Err(TftpError::Root { .. })));
        // SO_BINDTODEVICE needs no privilege since Linux 5.7, so this runs as any user.
        let on_lo = TftpConfig { interface: Some("lo".into()), ..cfg };
        std::fs::write(root.path().join("f"), b"x").unwrap();
        let server = TftpServer::bind(on_lo, None)
            .expect("bind to lo (before Linux 5.7 SO_BINDTODEVICE needs CAP_NET_RAW)");
        let addr = server.local_addr();
        tokio::spawn(server.run(std::future::pending()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&rrq("f", &[]), addr).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let n = recv_within(&client, &mut buf).await;
        assert_eq!(Packet::parse(&buf[..n]), Ok(Packet::Data { block: 1, data: b"x".to_vec() }));
    }
}

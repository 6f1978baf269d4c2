//! RFC 2090 multicast TFTP: one copy of a boot file for every node that asks at once.
//!
//! A read request with the `multicast` option joins the file's session (one per file and block
//! size). The session sends every DATA block once to the multicast group; one member, the master
//! (OACK `addr,port,1`), ACKs in lock-step, the others (`addr,port,0`) only listen and collect.
//! When the master has everything, leaves (ERROR) or stops answering, the next member is sent an
//! OACK with mc=1 and ACKs from its first missing block, so late joiners and clients that missed
//! blocks fill their gaps one pass at a time; a member that has everything ACKs the last block
//! at once and is done. Clients that do not ask for the option keep getting unicast.
//!
//! Bounds: memory per session is its member list plus one read chunk (never the file); sessions
//! and members are limited, each member also counts against the per-source limit and has the
//! same hard lifetime as a unicast transfer. Names pass the same root confinement as unicast.
//! Files of more than 65535 blocks, netascii and anything else unusual fall back to unicast (the
//! option is then simply not granted).
//!
//! PXE MTFTP (iPXE's `mtftp://`) rides on the same sessions: a plain read request (no options,
//! blksize 512) to [`MTFTP_PORT`]; the client has opened the group ([`MTFTP_GROUP`], compiled
//! into iPXE) before asking. It becomes the master when it receives a *unicast* datagram, so the
//! master is sent block 1 unicast, then ACKs (the count of blocks it holds in a row) and the rest
//! goes to the group, all from the session's one socket (iPXE drops anything from another source
//! port). Listeners send nothing; when the master is done the next one is sent block 1 unicast
//! and ACKs from its first gap. iPXE re-opens (new port, new request) whenever it hears nothing
//! for its retry timer (250 ms at least), and its fourth unanswered timeout drops it into a plain
//! TFTP fallback that, after a partial MTFTP download, ends with a corrupt file: so the group is
//! never left silent that long while a session has members ([`MTFTP_RETRY`]), and every request
//! is answered at once or heard from the flowing stream. The group cannot tell files apart (a
//! client takes the first DATA it hears on it), so at most one MTFTP session exists at a time; a
//! request for another file meanwhile is served unicast, and the group stays quiet for [`QUIET`]
//! so that client locks onto its own transfer first.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::options::{DEFAULT_BLKSIZE, Negotiated};
use super::packet::{self, ErrorCode, Mode, Packet, Request, error_packet};
use super::path::{Opened, Refusal, Root};
use super::transfer::read_full_at;
use super::{TftpConfig, TftpError};
use crate::events::{BootEvent, EventSender, Stage};

/// The option's name (RFC 2090).
pub const OPTION: &str = "multicast";
/// The port sessions start from when none is configured (atftpd's default, IANA's "mtftp").
pub const DEFAULT_PORT: u16 = 1758;
/// Bytes read from the file at once (a whole number of blocks is served from it).
const CHUNK: usize = 64 * 1024;
/// PXE MTFTP's server port (the PXE spec's and iPXE's default).
pub const MTFTP_PORT: u16 = 1759;
/// Where iPXE listens for `mtftp://` DATA: 239.255.1.1:3001, fixed in its build (only the PXE
/// API of a chainloading NBP can change it; DHCP cannot).
pub const MTFTP_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 1, 1), 3001);
/// How long MTFTP DATA to the group waits after a request for another file was sent unicast.
const QUIET: Duration = Duration::from_millis(100);
/// MTFTP retransmits after this, well inside iPXE's shortest retry timer (250 ms): a stalled
/// stream makes every listening iPXE re-open (new port, new request), and one that gets no
/// answer in time counts a timeout; after its fourth it falls back to plain TFTP, which after a
/// partial MTFTP download hands over a corrupt file (iPXE frees its block bitmap but keeps the
/// size it saw, so the first plain DATA block "completes" the download; seen here as a kernel
/// that did not boot).
const MTFTP_RETRY: Duration = Duration::from_millis(100);
/// Retransmissions before an MTFTP master (or one offered the role) is given up, about two
/// seconds: an emulated iPXE under load was seen answering after 550 ms, and one given up while
/// it still downloads soon falls back (see [`MTFTP_RETRY`]).
const MTFTP_TRIES: u32 = 20;
/// Blocks in a row a master acknowledged only after a unicast copy: from then on it gets each
/// block unicast too (it does not hear the group: a switch that drops unregistered multicast,
/// a firewall), so a broken group costs one pass at unicast speed, not a stall per block.
const DEAF_AFTER: u32 = 3;
/// How long an unfinished MTFTP download is remembered for [`Multicast::refuse_fallback`].
const UNFINISHED_FOR: Duration = Duration::from_secs(300);
/// Unfinished MTFTP downloads remembered at most.
const MAX_UNFINISHED: usize = 4096;
/// Finished sessions kept for [`MulticastLog::finished`].
const KEEP_FINISHED: usize = 64;

/// Where and how much multicast the server does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastConfig {
    /// The group DATA goes to; administratively scoped (239.0.0.0/8) in practice.
    pub group: Ipv4Addr,
    /// Session N (0-based) sends to `port + N`.
    pub port: u16,
    /// Files served by multicast at once; more requests fall back to unicast.
    pub max_sessions: usize,
    /// Members of one session; more requests fall back to unicast.
    pub max_members: usize,
    /// The PXE MTFTP request port (`None`: MTFTP off); DATA goes to [`MTFTP_GROUP`].
    pub mtftp_port: Option<u16>,
}

impl MulticastConfig {
    pub fn new(group: Ipv4Addr, port: u16) -> Self {
        MulticastConfig { group, port, max_sessions: 16, max_members: 512, mtftp_port: Some(MTFTP_PORT) }
    }
}

/// What one session did, from its first member to its last; logged and kept for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// The root-relative file name.
    pub file: String,
    /// Members that joined.
    pub clients: usize,
    /// Members that got the whole file.
    pub completed: usize,
    /// Blocks in the file.
    pub blocks: u64,
    /// DATA packets sent (retransmissions included), to the group and unicast.
    pub data_sent: u64,
    /// Of those, sent unicast (PXE MTFTP: block 1 to each new master).
    pub unicast_sent: u64,
    /// `mtftp` (PXE MTFTP) or `rfc2090`.
    pub protocol: &'static str,
    /// Masters that had at least one block sent for them.
    pub passes: u64,
    /// Of `data_sent`, retransmissions (no ACK in time).
    pub resent: u64,
}

/// Finished sessions' counters, shared with whoever wants to read them (tests, the log).
#[derive(Clone, Debug, Default)]
pub struct MulticastLog(Arc<Mutex<VecDeque<SessionStats>>>);

impl MulticastLog {
    /// Takes the sessions finished since the last call.
    pub fn take(&self) -> Vec<SessionStats> {
        lock(&self.0).drain(..).collect()
    }

    fn push(&self, stats: SessionStats) {
        let mut q = lock(&self.0);
        if q.len() >= KEEP_FINISHED {
            q.pop_front();
        }
        q.push_back(stats);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a request asks for multicast.
pub fn wants(req: &Request) -> bool {
    req.options.iter().any(|(name, _)| name == OPTION)
}

/// Which multicast protocol a session speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// RFC 2090: the `multicast` option on port 69, OACKs name the group and the master.
    Rfc2090,
    /// PXE MTFTP: a plain request on [`MTFTP_PORT`], unicast DATA names the master.
    Mtftp,
}

type Key = (String, u16, Kind);

struct Join {
    peer: SocketAddr,
    /// The OACK's other options (blksize, tsize) as negotiated for this client.
    oack: Vec<(String, String)>,
}

struct Handle {
    tx: mpsc::UnboundedSender<Join>,
    members: usize,
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<Key, Handle>,
    /// Which session slots (ports) are taken.
    slots: Vec<bool>,
    per_source: HashMap<IpAddr, usize>,
    members: usize,
    /// The file of the one MTFTP session (it owns [`MTFTP_GROUP`]).
    mtftp_file: Option<String>,
    /// No MTFTP DATA to the group before this (see [`QUIET`]).
    quiet_until: Option<Instant>,
    /// Who asked for which file by MTFTP and has not got all of it (see
    /// [`Multicast::refuse_fallback`]), and since when.
    unfinished: HashMap<IpAddr, (String, Instant)>,
}

/// The multicast side of one TFTP server.
pub(super) struct Multicast {
    mc: MulticastConfig,
    cfg: TftpConfig,
    root: Root,
    events: Option<EventSender>,
    registry: Mutex<Registry>,
    log: MulticastLog,
}

impl Multicast {
    pub(super) fn new(mc: MulticastConfig, cfg: TftpConfig, root: Root, events: Option<EventSender>) -> Self {
        tracing::info!(group = %mc.group, port = mc.port, sessions = mc.max_sessions, "tftp: multicast on (RFC 2090)");
        Multicast {
            mc,
            cfg,
            root,
            events,
            registry: Mutex::new(Registry::default()),
            log: MulticastLog::default(),
        }
    }

    pub(super) fn log(&self) -> MulticastLog {
        self.log.clone()
    }

    /// Takes a read request with the option: joins or starts the file's session. `negotiated`
    /// holds what unicast would have granted (blksize, tsize); `unicast` runs the request as a
    /// plain transfer when multicast cannot take it.
    pub(super) fn request(
        self: &Arc<Self>,
        main: &Arc<UdpSocket>,
        peer: SocketAddr,
        req: Request,
        negotiated: impl FnOnce(u64) -> Negotiated + Send + 'static,
        unicast: impl FnOnce(Request) + Send + 'static,
    ) {
        self.open_then(main, peer, req, move |this, relative, opened, req| {
            let n = negotiated(opened.size);
            let blocks = opened.size / u64::from(n.blksize) + 1;
            if req.mode != Mode::Octet || blocks > u64::from(u16::MAX) {
                tracing::debug!(%peer, file = relative, blocks, "tftp: multicast not granted (netascii or > 65535 blocks)");
                return unicast(without_multicast(req));
            }
            let oack: Vec<(String, String)> =
                n.oack.into_iter().filter(|(k, _)| k == "blksize" || k == "tsize").collect();
            let join = Join { peer, oack };
            if let Err(why) = this.join(Kind::Rfc2090, &relative, n.blksize, blocks, opened.file, join) {
                tracing::info!(%peer, file = relative, why, "tftp: multicast refused; unicast instead");
                unicast(without_multicast(req));
            }
        });
    }

    /// Confines and opens the requested name off the async workers, then runs `then` with the
    /// root-relative name and the open file; a refusal is answered with an ERROR instead.
    fn open_then(
        self: &Arc<Self>,
        main: &Arc<UdpSocket>,
        peer: SocketAddr,
        req: Request,
        then: impl FnOnce(Arc<Self>, String, Opened, Request) + Send + 'static,
    ) {
        let relative = match self.root.normalize(&req.filename) {
            Ok(r) => r,
            Err(refusal) => return refuse(main, peer, &req, &refusal),
        };
        let this = Arc::clone(self);
        let main = Arc::clone(main);
        tokio::spawn(async move {
            let root = this.root.clone();
            let rel = relative.clone();
            match tokio::task::spawn_blocking(move || root.open(&rel)).await {
                Ok(Ok(opened)) => then(this, relative, opened, req),
                Ok(Err(refusal)) => refuse(&main, peer, &req, &refusal),
                Err(e) => refuse(&main, peer, &req, &Refusal::Denied(format!("open task failed: {e}"))),
            }
        });
    }

    /// Takes a PXE MTFTP read request (to [`MTFTP_PORT`]): joins or starts the file's session,
    /// or runs `unicast` (a plain transfer, which the MTFTP client takes as well) when the group
    /// carries another file or a limit is reached.
    pub(super) fn mtftp_request(
        self: &Arc<Self>,
        main: &Arc<UdpSocket>,
        peer: SocketAddr,
        req: Request,
        unicast: impl FnOnce(Request) + Send + 'static,
    ) {
        self.open_then(main, peer, req, move |this, relative, opened, req| {
            let blocks = opened.size / u64::from(DEFAULT_BLKSIZE) + 1;
            let why = if req.mode != Mode::Octet || blocks > u64::from(u16::MAX) {
                Err("netascii or more than 65535 blocks")
            } else {
                let join = Join { peer, oack: Vec::new() };
                this.join(Kind::Mtftp, &relative, DEFAULT_BLKSIZE, blocks, opened.file, join)
            };
            if why.is_ok() {
                let mut reg = lock(&this.registry);
                let now = Instant::now();
                reg.unfinished.retain(|_, (_, since)| now.duration_since(*since) < UNFINISHED_FOR);
                // Bounded: a flood of spoofed sources only turns the guard off for newcomers.
                if reg.unfinished.len() < MAX_UNFINISHED || reg.unfinished.contains_key(&peer.ip()) {
                    reg.unfinished.insert(peer.ip(), (relative.clone(), now));
                }
            }
            if let Err(why) = why {
                tracing::info!(%peer, file = relative, why, "tftp: mtftp: served unicast");
                unicast(req);
            }
        });
    }

    /// A plain read request (port 69) for a file this client was taking by MTFTP and has not got
    /// whole: iPXE's own fallback from MTFTP to TFTP, which after a partial download ends with a
    /// corrupt file (it frees its block bitmap but keeps the size it saw, so the first block
    /// "completes" the download). Answered with an ERROR once, so the download fails and
    /// boot.ipxe fetches the file afresh from its next source; returns whether it refused.
    pub(super) fn refuse_fallback(&self, main: &UdpSocket, peer: SocketAddr, req: &Request) -> bool {
        let Ok(file) = self.root.normalize(&req.filename) else { return false };
        let mut reg = lock(&self.registry);
        if reg.unfinished.get(&peer.ip()).is_none_or(|(f, _)| *f != file) {
            return false;
        }
        reg.unfinished.remove(&peer.ip());
        drop(reg);
        tracing::info!(%peer, file, "tftp: mtftp: refused the client's TFTP fallback after a partial MTFTP download");
        let _ = main.try_send_to(
            &error_packet(ErrorCode::NotDefined, "incomplete MTFTP download: start again"),
            peer,
        );
        true
    }

    /// Adds `peer` to the session of `(file, blksize)`, starting it if there is none.
    fn join(
        self: &Arc<Self>,
        kind: Kind,
        file: &str,
        blksize: u16,
        blocks: u64,
        opened: std::fs::File,
        join: Join,
    ) -> Result<(), &'static str> {
        let Join { peer, oack } = join;
        let key = (file.to_string(), blksize, kind);
        let mut reg = lock(&self.registry);
        let from_source = reg.per_source.get(&peer.ip()).copied().unwrap_or(0);
        if from_source >= self.cfg.max_per_source {
            return Err("too many transfers from this address");
        }
        if reg.members >= self.cfg.max_transfers {
            return Err("server busy");
        }
        let mut oack = oack;
        if let Some(handle) = reg.sessions.get_mut(&key) {
            if handle.members >= self.mc.max_members {
                return Err("multicast session full");
            }
            // A session that just ended hands the join back; a new one is started below.
            match handle.tx.send(Join { peer, oack }) {
                Ok(()) => {
                    handle.members += 1;
                    *reg.per_source.entry(peer.ip()).or_default() += 1;
                    reg.members += 1;
                    return Ok(());
                }
                Err(mpsc::error::SendError(join)) => oack = join.oack,
            }
        }
        if reg.sessions.len() >= self.mc.max_sessions {
            return Err("too many multicast sessions");
        }
        let (slot, group) = if kind == Kind::Mtftp {
            if reg.mtftp_file.is_some() {
                // Its client listens on the group already: keep the other file's DATA off it
                // until our unicast reply has reached it.
                reg.quiet_until = Some(Instant::now() + QUIET);
                return Err("the MTFTP group carries another file");
            }
            (None, MTFTP_GROUP)
        } else {
            let slots = self.mc.max_sessions;
            reg.slots.resize(slots, false);
            let Some(slot) = reg.slots.iter().position(|taken| !taken) else {
                return Err("too many multicast sessions");
            };
            let Some(port) = u16::try_from(usize::from(self.mc.port) + slot).ok() else {
                return Err("no multicast port left");
            };
            (Some(slot), SocketAddrV4::new(self.mc.group, port))
        };
        let socket = self.session_socket().map_err(|e| {
            tracing::warn!(error = %e, "tftp: cannot open a multicast socket");
            "cannot open a multicast socket"
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(Join { peer, oack });
        match slot {
            Some(slot) => reg.slots[slot] = true,
            None => reg.mtftp_file = Some(file.to_string()),
        }
        reg.sessions.insert(key.clone(), Handle { tx, members: 1 });
        *reg.per_source.entry(peer.ip()).or_default() += 1;
        reg.members += 1;
        drop(reg);
        let session = Session {
            owner: Arc::clone(self),
            key,
            kind,
            slot,
            socket,
            group: SocketAddr::V4(group),
            file: Arc::new(opened),
            blksize,
            blocks,
            members: VecDeque::new(),
            master: Master::None,
            chunk: None,
            stats: SessionStats {
                file: file.to_string(),
                blocks,
                protocol: match kind {
                    Kind::Rfc2090 => "rfc2090",
                    Kind::Mtftp => "mtftp",
                },
                ..SessionStats::default()
            },
            unicast_streak: 0,
            last_group: None,
        };
        tokio::spawn(session.run(rx));
        Ok(())
    }

    /// The session's own socket (its TID): on the server's address, DATA to the group through
    /// the lab interface only, TTL 1 (never routed off the segment), no loopback copies.
    fn session_socket(&self) -> Result<UdpSocket, TftpError> {
        let local = SocketAddr::new(self.cfg.bind.ip(), 0);
        let socket = super::server::udp_socket(local, self.cfg.interface.as_deref(), false)?;
        if let IpAddr::V4(ip) = self.cfg.bind.ip()
            && !ip.is_unspecified()
        {
            socket.set_multicast_if_v4(&ip)?;
        }
        socket.set_multicast_ttl_v4(1)?;
        socket.set_multicast_loop_v4(false)?;
        Ok(UdpSocket::from_std(socket.into())?)
    }

    fn left(&self, key: &Key, peer: SocketAddr) {
        let mut reg = lock(&self.registry);
        if let Some(h) = reg.sessions.get_mut(key) {
            h.members = h.members.saturating_sub(1);
        }
        reg.members = reg.members.saturating_sub(1);
        if let Some(n) = reg.per_source.get_mut(&peer.ip()) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                reg.per_source.remove(&peer.ip());
            }
        }
    }

    fn emit(&self, peer: SocketAddr, stage: Stage) {
        if let (Some(tx), IpAddr::V4(ip)) = (&self.events, peer.ip()) {
            crate::events::emit(tx, BootEvent { at: SystemTime::now(), ip, mac: None, stage });
        }
    }
}

fn without_multicast(mut req: Request) -> Request {
    req.options.retain(|(name, _)| name != OPTION);
    req
}

fn refuse(main: &UdpSocket, peer: SocketAddr, req: &Request, refusal: &Refusal) {
    let (code, text) = match refusal {
        Refusal::NotFound(why) => {
            tracing::debug!(%peer, file = ?req.filename, reason = ?why, "tftp: multicast: file not found");
            (ErrorCode::FileNotFound, "file not found")
        }
        Refusal::Denied(why) => {
            tracing::warn!(%peer, file = ?req.filename, reason = ?why, "tftp: multicast: refused");
            (ErrorCode::AccessViolation, "access violation")
        }
    };
    let _ = main.try_send_to(&error_packet(code, text), peer);
}

struct Member {
    peer: SocketAddr,
    oack: Vec<(String, String)>,
    /// Hard end of this member, like a unicast transfer's lifetime.
    until: Instant,
    /// MTFTP: it did not hear the group as master; its blocks go unicast (see [`DEAF_AFTER`]).
    deaf: bool,
}

/// The master's state.
enum Master {
    None,
    /// OACK mc=1 sent; waiting for its first ACK.
    Offered {
        tries: u32,
        deadline: Instant,
    },
    /// Block `next` sent; waiting for its ACK.
    Active {
        next: u64,
        tries: u32,
        deadline: Instant,
    },
}

struct Session {
    owner: Arc<Multicast>,
    key: Key,
    kind: Kind,
    /// The RFC 2090 port slot (MTFTP uses the fixed group).
    slot: Option<usize>,
    socket: UdpSocket,
    group: SocketAddr,
    file: Arc<std::fs::File>,
    blksize: u16,
    blocks: u64,
    /// Front: the master (when there is one).
    members: VecDeque<Member>,
    master: Master,
    /// Byte offset and contents of the chunk last read.
    chunk: Option<(u64, Vec<u8>)>,
    stats: SessionStats,
    /// MTFTP: blocks in a row the master acknowledged only after a unicast copy.
    unicast_streak: u32,
    /// MTFTP: the block last sent to the group, resent to keep listeners' timers alive while a
    /// new master is being offered the role.
    last_group: Option<u64>,
}

impl Session {
    async fn run(mut self, mut joins: mpsc::UnboundedReceiver<Join>) {
        let mut buf = vec![0u8; 2048];
        loop {
            while let Ok(join) = joins.try_recv() {
                self.add(join).await;
            }
            self.expire().await;
            if self.members.is_empty() {
                // Under the registry lock, so no join can slip in between the check and removal.
                let mut reg = lock(&self.owner.registry);
                if joins.is_empty() {
                    reg.sessions.remove(&self.key);
                    match self.slot {
                        Some(slot) => {
                            if let Some(s) = reg.slots.get_mut(slot) {
                                *s = false;
                            }
                        }
                        None => reg.mtftp_file = None,
                    }
                    break;
                }
                continue;
            }
            let deadline = match self.master {
                Master::Offered { deadline, .. } | Master::Active { deadline, .. } => deadline,
                Master::None => Instant::now() + self.retry_after(),
            };
            let wake = self.members.iter().map(|m| m.until).min().map_or(deadline, |u| u.min(deadline));
            tokio::select! {
                join = joins.recv() => if let Some(join) = join { self.add(join).await },
                got = tokio::time::timeout_at(wake, self.socket.recv_from(&mut buf)) => match got {
                    Ok(Ok((n, from))) => {
                        let packet = Packet::parse(&buf[..n]).ok();
                        self.heard(from, packet).await;
                    }
                    Ok(Err(e)) => {
                        // ICMP for one member (its port closed); the timer handles it.
                        tracing::debug!(error = %e, "tftp: multicast socket");
                    }
                    Err(_) => self.timer().await,
                },
            }
        }
        let s = std::mem::take(&mut self.stats);
        tracing::info!(
            file = s.file,
            clients = s.clients,
            completed = s.completed,
            blocks = s.blocks,
            data_sent = s.data_sent,
            passes = s.passes,
            resent = s.resent,
            unicast = s.unicast_sent,
            "multicast {} ({}): {} clients, {} blocks, {} DATA sent ({} resent, {} passes)",
            s.file,
            s.protocol,
            s.clients,
            s.blocks,
            s.data_sent,
            s.resent,
            s.passes
        );
        self.owner.log.push(s);
    }

    async fn add(&mut self, join: Join) {
        if self.kind == Kind::Mtftp {
            return self.add_mtftp(join).await;
        }
        if let Some(pos) = self.members.iter().position(|m| m.peer == join.peer) {
            // Its request again: our OACK was lost.
            let master = pos == 0 && !matches!(self.master, Master::None);
            let oack = self.oack(&self.members[pos].oack, master);
            self.send_to(&oack, join.peer).await;
            self.owner.left(&self.key, join.peer);
            return;
        }
        self.stats.clients += 1;
        let peer = join.peer;
        self.members.push_back(self.member(join));
        if matches!(self.master, Master::None) {
            self.promote().await;
        } else {
            let oack = self.oack(&self.members[self.members.len() - 1].oack, false);
            self.send_to(&oack, peer).await;
        }
    }

    /// An MTFTP request. While the stream flows (the block in flight went to the group less
    /// than [`MTFTP_RETRY`] ago) a newcomer, and a listener that re-opened (a new port), just listen:
    /// they take the next DATA on the group at once. Anyone else is made the master at once
    /// (block 1 unicast, then on from its ACK): the master itself asking again (it re-opened and
    /// acknowledges nothing until it hears from us unicast), anyone while the stream stalls, and
    /// a request repeated from the same port (it heard nothing: iPXE must hear something before
    /// its fourth timeout, or it falls back to plain TFTP, see [`MTFTP_RETRY`]). A master pushed
    /// aside goes to the back of the queue and is promoted again for what it still lacks.
    async fn add_mtftp(&mut self, join: Join) {
        let flowing = matches!(self.master, Master::Active { tries: 0, .. });
        let pos = match self.members.iter().position(|m| m.peer.ip() == join.peer.ip()) {
            Some(pos) => {
                // Counted once already.
                self.owner.left(&self.key, join.peer);
                let repeated = self.members[pos].peer == join.peer;
                self.members[pos].peer = join.peer;
                if flowing && pos != 0 && !repeated {
                    return;
                }
                pos
            }
            None => {
                self.stats.clients += 1;
                self.members.push_back(self.member(join));
                if flowing {
                    return;
                }
                self.members.len() - 1
            }
        };
        let Some(m) = self.members.remove(pos) else { return };
        if pos != 0
            && !matches!(self.master, Master::None)
            && let Some(old) = self.members.pop_front()
        {
            self.members.push_back(old);
        }
        tracing::debug!(peer = %m.peer, file = self.key.0, "tftp: mtftp: master from its ACK");
        self.members.push_front(m);
        self.promote().await;
    }

    /// The retransmit timeout: the configured one for RFC 2090 (its clients negotiate it),
    /// [`MTFTP_RETRY`] for iPXE's MTFTP.
    fn retry_after(&self) -> Duration {
        match self.kind {
            Kind::Rfc2090 => self.owner.cfg.timeout,
            Kind::Mtftp => MTFTP_RETRY,
        }
    }

    fn member(&self, join: Join) -> Member {
        let lifetime = self.owner.cfg.lifetime
            + Duration::from_secs(self.blocks * u64::from(self.blksize) / super::server::MIN_RATE);
        Member { peer: join.peer, oack: join.oack, until: Instant::now() + lifetime, deaf: false }
    }

    fn oack(&self, options: &[(String, String)], master: bool) -> Vec<u8> {
        let mut options = options.to_vec();
        let value = match self.group {
            SocketAddr::V4(g) => format!("{},{},{}", g.ip(), g.port(), u8::from(master)),
            SocketAddr::V6(_) => String::new(),
        };
        options.push((OPTION.to_string(), value));
        Packet::Oack { options }.encode()
    }

    /// Makes the front member the master (OACK mc=1; MTFTP: block 1 unicast), if there is one.
    async fn promote(&mut self) {
        self.master = Master::None;
        if self.members.is_empty() {
            return;
        }
        self.offer().await;
        self.keep_alive().await;
        self.master = Master::Offered { tries: 0, deadline: Instant::now() + self.retry_after() };
    }

    /// Tells the front member it is the master.
    async fn offer(&mut self) {
        let Some(front) = self.members.front() else { return };
        let peer = front.peer;
        match self.kind {
            Kind::Rfc2090 => {
                let oack = self.oack(&front.oack, true);
                self.send_to(&oack, peer).await;
            }
            Kind::Mtftp => self.send_block(1, Some(peer)).await,
        }
    }

    /// MTFTP: the group must not fall silent for longer than iPXE's retry timer while a new
    /// master makes up its mind: every listener would re-open, and re-opening is what brings
    /// iPXE to its broken fallback (see [`MTFTP_RETRY`]). A block that was on the group already
    /// is harmless to everyone.
    async fn keep_alive(&mut self) {
        if let Some(seq) = self.last_group.filter(|_| self.kind == Kind::Mtftp && !self.members.is_empty()) {
            self.stats.resent += 1;
            self.send_block(seq, None).await;
        }
    }

    /// Removes the master (done, gone or erroring) and hands over to the next member.
    async fn drop_master(&mut self, complete: bool, why: &str) {
        if let Some(m) = self.members.pop_front() {
            self.finish(m, complete, why);
        }
        self.unicast_streak = 0;
        self.promote().await;
    }

    /// Accounts for a member that left the session, complete or not.
    fn finish(&mut self, m: Member, complete: bool, why: &str) {
        self.owner.left(&self.key, m.peer);
        if complete && self.kind == Kind::Mtftp {
            lock(&self.owner.registry).unfinished.remove(&m.peer.ip());
        }
        if complete {
            self.stats.completed += 1;
            self.owner.emit(m.peer, Stage::Fetched(self.key.0.clone()));
            // One line per node and file, like the stage log: the lab test reads it.
            tracing::info!(peer = %m.peer, file = self.key.0, protocol = self.stats.protocol, "tftp: multicast: sent");
        } else {
            tracing::info!(peer = %m.peer, file = self.key.0, why, "tftp: multicast: member dropped");
        }
    }

    async fn heard(&mut self, from: SocketAddr, packet: Option<Packet>) {
        let is_master =
            self.members.front().is_some_and(|m| m.peer == from) && !matches!(self.master, Master::None);
        match packet {
            Some(Packet::Ack { block }) if is_master => {
                let acked = u64::from(block);
                if acked >= self.blocks {
                    return self.drop_master(true, "done").await;
                }
                let next = acked + 1;
                if let Master::Active { next: sent, tries, .. } = self.master {
                    if next <= sent {
                        // A repeated ACK for the block in flight (or an older one): the timer
                        // resends it; answering here too would double every later block
                        // (Sorcerer's Apprentice).
                        return;
                    }
                    // Only a unicast copy got through (see [`DEAF_AFTER`]).
                    self.unicast_streak =
                        if tries >= 1 && self.kind == Kind::Mtftp { self.unicast_streak + 1 } else { 0 };
                    if self.unicast_streak >= DEAF_AFTER
                        && let Some(m) = self.members.front_mut()
                        && !m.deaf
                    {
                        m.deaf = true;
                        tracing::info!(peer = %from, file = self.key.0, "tftp: mtftp: master does not hear the group; unicast to it");
                    }
                } else {
                    self.stats.passes += 1;
                }
                self.send_next(next).await;
                self.master =
                    Master::Active { next, tries: 0, deadline: Instant::now() + self.retry_after() };
            }
            // An MTFTP listener that was master once acknowledges every block it hears (iPXE
            // keeps ACKing once it has had a unicast datagram): it may complete by listening.
            Some(Packet::Ack { block }) if self.kind == Kind::Mtftp && u64::from(block) >= self.blocks => {
                if let Some(pos) = self.members.iter().position(|m| m.peer == from)
                    && let Some(m) = self.members.remove(pos)
                {
                    self.finish(m, true, "done");
                }
            }
            Some(Packet::Error { code, message }) => {
                let Some(pos) = self.members.iter().position(|m| m.peer == from) else { return };
                tracing::debug!(peer = %from, code, message, "tftp: multicast: client left");
                if pos == 0 && !matches!(self.master, Master::None) {
                    self.drop_master(false, "client sent ERROR").await;
                } else if let Some(m) = self.members.remove(pos) {
                    self.owner.left(&self.key, m.peer);
                }
            }
            // Passive members' ACKs, strangers, garbage: nothing to do.
            _ => {}
        }
    }

    /// Sends block `seq` for the master: to the group, and also unicast to a master that does
    /// not hear the group (the listeners must still hear something, see [`MTFTP_RETRY`]).
    async fn send_next(&mut self, seq: u64) {
        self.send_block(seq, None).await;
        if let Some(peer) = self.members.front().filter(|m| m.deaf).map(|m| m.peer) {
            self.send_block(seq, Some(peer)).await;
        }
    }

    async fn timer(&mut self) {
        let (retries, offers) = match self.kind {
            Kind::Rfc2090 => (self.owner.cfg.retries, self.owner.cfg.retries),
            Kind::Mtftp => (MTFTP_TRIES, MTFTP_TRIES),
        };
        let deadline = Instant::now() + self.retry_after();
        match self.master {
            Master::Offered { tries, .. } if tries >= offers => {
                self.drop_master(false, "no ACK for OACK").await
            }
            Master::Offered { tries, .. } => {
                self.offer().await;
                self.keep_alive().await;
                self.master = Master::Offered { tries: tries + 1, deadline };
            }
            Master::Active { tries, .. } if tries >= retries => {
                self.drop_master(false, "master stopped answering").await
            }
            Master::Active { next, tries, .. } => {
                self.stats.resent += 1;
                self.send_next(next).await;
                // MTFTP: a unicast copy too, so a master that misses the group still
                // progresses (and is found out, see [`DEAF_AFTER`]).
                if let Some(m) = self.members.front().filter(|m| self.kind == Kind::Mtftp && !m.deaf) {
                    let peer = m.peer;
                    self.stats.resent += 1;
                    self.send_block(next, Some(peer)).await;
                }
                self.master = Master::Active { next, tries: tries + 1, deadline };
            }
            Master::None => {}
        }
    }

    /// Ends members past their lifetime.
    async fn expire(&mut self) {
        let now = Instant::now();
        if self.members.front().is_some_and(|m| m.until <= now) && !matches!(self.master, Master::None) {
            self.drop_master(false, "too slow (hard lifetime)").await;
        }
        let before = self.members.len();
        let (owner, key) = (Arc::clone(&self.owner), self.key.clone());
        self.members.retain(|m| {
            let keep = m.until > now;
            if !keep {
                owner.left(&key, m.peer);
            }
            keep
        });
        if self.members.len() != before && matches!(self.master, Master::None) {
            self.promote().await;
        }
    }

    async fn send_to(&self, pkt: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.send_to(pkt, to).await {
            tracing::debug!(peer = %to, error = %e, "tftp: multicast: send failed");
        }
    }

    /// Sends block `seq` (1-based) to the group, or unicast to `to`.
    async fn send_block(&mut self, seq: u64, to: Option<SocketAddr>) {
        let data = match self.block(seq).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(file = self.key.0, error = %e, "tftp: multicast: read failed");
                return;
            }
        };
        let mut pkt = Vec::with_capacity(4 + data.len());
        packet::encode_data_into(&mut pkt, (seq & 0xFFFF) as u16, &data);
        self.stats.data_sent += 1;
        if to.is_some() {
            self.stats.unicast_sent += 1;
        } else if self.kind == Kind::Mtftp {
            let quiet = lock(&self.owner.registry).quiet_until;
            if let Some(until) = quiet.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until).await;
            }
        }
        if to.is_none() {
            self.last_group = Some(seq);
        }
        if let Err(e) = self.socket.send_to(&pkt, to.unwrap_or(self.group)).await {
            tracing::debug!(error = %e, "tftp: multicast: DATA send failed");
        }
    }

    async fn block(&mut self, seq: u64) -> io::Result<Vec<u8>> {
        let blksize = u64::from(self.blksize);
        let start = (seq - 1) * blksize;
        // A whole number of blocks, so no block straddles two chunks.
        let per_chunk = (CHUNK as u64 / blksize).max(1) * blksize;
        let hit = self.chunk.as_ref().is_some_and(|(at, data)| {
            let len = data.len() as u64;
            start >= *at && (start + blksize <= at + len || len < per_chunk)
        });
        if !hit {
            let chunk_at = start / per_chunk * per_chunk;
            let file = Arc::clone(&self.file);
            let read = tokio::task::spawn_blocking(move || read_full_at(&file, chunk_at, per_chunk as usize))
                .await
                .map_err(io::Error::other)??;
            self.chunk = Some((chunk_at, read));
        }
        let Some((at, data)) = &self.chunk else { return Ok(Vec::new()) };
        let from = usize::try_from(start - at).unwrap_or(usize::MAX).min(data.len());
        let to = from.saturating_add(self.blksize.into()).min(data.len());
        Ok(data[from..to].to_vec())
    }
}

//! From one request to at most one reply, as a chain of small steps: decode, screen (relay,
//! mode), dispatch on the message type, fill boot and lease options, pick the destination.
//! Pure and synchronous: the server loop does the I/O and the durable commit.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::MessageType;

use super::alloc::Allocator;
use super::config::{DhcpConfig, DhcpMode, NewMacLimits};
use super::packet::{self, PXE_VENDOR_OPTIONS, Reply, Request, code};
use crate::events::Stage;
use crate::leases::{Lease, LeaseState};
use crate::mac::MacAddr;

/// How long a DECLINEd address stays out of use.
pub const DECLINE_QUARANTINE_SECS: u64 = 600;
/// New MACs (no lease, no offer, not pinned) answered per second, on average, by default...
pub const NEW_MACS_PER_SEC: u64 = 20;
/// ...and at once: a whole /24 lab (254 PCs) switched on together is one burst, answered in one
/// pass instead of 20 a second.
pub const NEW_MAC_BURST: u64 = 256;
/// At most one flood warning per this many seconds.
const FLOOD_WARN_SECS: u64 = 10;
/// Option 97 as PXE defines it: type 0 and a 16-byte GUID. Only this is echoed.
const UUID_LEN: usize = 17;
/// Longest relay agent information (82) echoed back to a relay.
const MAX_RELAY_ECHO: usize = 64;

/// The client state a REQUEST is sent from (RFC 2131 4.3.2); it decides how the request is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RequestState {
    /// Answering our OFFER (server id is ours).
    Selecting,
    /// Rebooted, asking for the address it remembers (no server id).
    InitReboot,
    /// Renewing (unicast) or rebinding (broadcast) the lease in ciaddr.
    Renewing,
}

impl RequestState {
    /// How the state shows in the log note.
    fn as_str(self) -> &'static str {
        match self {
            RequestState::Selecting => "selecting",
            RequestState::InitReboot => "init-reboot",
            RequestState::Renewing => "renewing",
        }
    }
}

/// Which socket a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// UDP 67.
    Dhcp,
    /// UDP 4011, the PXE boot server port (proxy mode).
    PxeService,
}

/// Where a reply goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// 255.255.255.255:68 on the served interface.
    Broadcast,
    Unicast(SocketAddrV4),
}

/// One thing worth a log line and a [`crate::events::BootEvent`].
#[derive(Clone, Debug)]
pub struct Note {
    pub stage: Stage,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: String,
    pub node: Option<u16>,
    pub detail: String,
}

/// What the server loop must do for one request.
#[derive(Debug, Default)]
pub struct Action {
    pub reply: Option<(Vec<u8>, Dest)>,
    /// Persist before sending `reply` (an ACK leaves only after its lease is on disk).
    pub commit: Option<Lease>,
    pub note: Option<Note>,
}

pub struct Handler {
    cfg: DhcpConfig,
    alloc: Allocator,
    new_macs: NewMacLimit,
}

/// Token bucket for requests from MACs the server has never seen: a flood of random MACs is
/// slowed to `limits.per_sec` ([`NEW_MACS_PER_SEC`] unless configured), known clients are never
/// limited.
#[derive(Debug, Default)]
struct NewMacLimit {
    limits: NewMacLimits,
    tokens: u64,
    last: u64,
    dropped: u64,
    warned_at: Option<u64>,
}

impl NewMacLimit {
    fn allow(&mut self, now: u64) -> bool {
        if self.last == 0 {
            self.tokens = self.limits.burst;
        } else {
            let refill = now.saturating_sub(self.last).saturating_mul(self.limits.per_sec);
            self.tokens = self.tokens.saturating_add(refill).min(self.limits.burst);
        }
        self.last = now;
        if self.tokens > 0 {
            self.tokens -= 1;
            return true;
        }
        self.dropped += 1;
        false
    }

    /// New limits from a reload; the tokens left are kept (capped), so a reload is no way to
    /// refill the bucket.
    fn set_limits(&mut self, limits: NewMacLimits) {
        self.limits = limits;
        self.tokens = self.tokens.min(limits.burst);
    }

    /// The warning, when one is due (rate-limited).
    fn warning(&mut self, mac: MacAddr, now: u64) -> Option<String> {
        if self.warned_at.is_some_and(|t| now < t + FLOOD_WARN_SECS) {
            return None;
        }
        self.warned_at = Some(now);
        let n = std::mem::take(&mut self.dropped);
        let (burst, per_sec) = (self.limits.burst, self.limits.per_sec);
        Some(format!(
            "DHCP flood: more than {burst} new MACs at once or {per_sec} per second (e.g. {mac}); {n} requests from new MACs ignored; known and pinned clients are still served"
        ))
    }
}

impl Handler {
    pub fn new(cfg: DhcpConfig, alloc: Allocator) -> Self {
        let new_macs = NewMacLimit { limits: cfg.new_macs, ..NewMacLimit::default() };
        Handler { cfg, alloc, new_macs }
    }

    /// The client at `ip` fetched a boot file (TFTP): its lease is never reclaimed early.
    pub fn fetched_by(&mut self, ip: Ipv4Addr) {
        self.alloc.mark_booted_ip(ip);
    }

    /// `mac` fetched a boot file before this server started (from the stage log).
    pub fn booted_before(&mut self, mac: MacAddr) {
        self.alloc.mark_booted(mac);
    }

    /// Takes a reloaded plan (pool, pins, hostnames, lease time, options) and keeps the lease
    /// table. What the sockets were bound for (interface, server address, mode) and the lease
    /// file stay as they are: changing those needs a new server.
    pub fn reconfigure(&mut self, mut cfg: DhcpConfig) {
        cfg.interface = std::mem::take(&mut self.cfg.interface);
        cfg.server = self.cfg.server;
        cfg.prefix_len = self.cfg.prefix_len;
        cfg.mode = self.cfg.mode;
        cfg.lease_file = std::mem::take(&mut self.cfg.lease_file);
        self.alloc.set_plan(cfg.pool.clone(), &cfg.pinned);
        self.new_macs.set_limits(cfg.new_macs);
        self.cfg = cfg;
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.cfg
    }

    /// Decodes and answers one datagram; garbage gets `None` (and a debug log line).
    pub fn handle_datagram(
        &mut self,
        data: &[u8],
        src: SocketAddrV4,
        port: Port,
        now: u64,
    ) -> Option<Action> {
        let req = match packet::decode(data) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%src, error = %e, "dropped malformed DHCP packet");
                return None;
            }
        };
        self.handle(&req, src, port, now)
    }

    pub fn handle(&mut self, req: &Request, src: SocketAddrV4, port: Port, now: u64) -> Option<Action> {
        if *src.ip() == self.cfg.server {
            // Our own broadcast (the rival probe's DISCOVER) looping back.
            return None;
        }
        if !req.giaddr.is_unspecified() && !self.cfg.in_subnet(req.giaddr) {
            tracing::debug!(mac = %req.mac, giaddr = %req.giaddr, "relayed request from a subnet that is not ours; ignored");
            return None;
        }
        match self.cfg.mode {
            DhcpMode::Full if port == Port::Dhcp => self.full(req, now),
            DhcpMode::Full => None,
            DhcpMode::Proxy => self.proxy(req, src, port),
        }
    }

    fn full(&mut self, req: &Request, now: u64) -> Option<Action> {
        if req.msg_type.is_none() && !self.cfg.bootp_dynamic && !self.alloc.is_pinned(req.mac) {
            tracing::debug!(mac = %req.mac, "BOOTP request from a MAC that is not pinned ignored (bootp = \"pinned\")");
            return None;
        }
        if matches!(req.msg_type, None | Some(MessageType::Discover))
            && self.alloc.is_new(req.mac, now)
            && !self.new_macs.allow(now)
        {
            if let Some(w) = self.new_macs.warning(req.mac, now) {
                tracing::warn!("{w}");
            }
            return None;
        }
        match req.msg_type {
            None => self.bootp(req, now),
            Some(MessageType::Discover) => self.discover(req, now),
            Some(MessageType::Request) => self.request(req, now),
            Some(MessageType::Decline) => self.decline(req, now),
            Some(MessageType::Release) => self.release(req, now),
            Some(MessageType::Inform) => self.inform(req),
            Some(_) => None,
        }
    }

    fn discover(&mut self, req: &Request, now: u64) -> Option<Action> {
        let Some(ip) = self.alloc.choose(req.mac, now) else {
            tracing::warn!(mac = %req.mac, "no free address left in the pool; DISCOVER not answered");
            return None;
        };
        if let Some(old) = self.alloc.reclaimed_from(ip, req.mac, now) {
            tracing::warn!(mac = %req.mac, %ip, from = %old, "pool is full: offering the address of a MAC that never fetched a boot file");
        }
        self.alloc.reserve(req.mac, ip, now);
        let mut reply = Reply::to(req, Some(MessageType::Offer));
        reply.yiaddr = ip;
        self.lease_options(&mut reply, req, ip, self.lease_secs());
        Some(self.finish(req, reply, None, Stage::Offered, ip, ""))
    }

    fn request(&mut self, req: &Request, now: u64) -> Option<Action> {
        let server_id = req.opt_ip(code::SERVER_ID);
        let requested = req.opt_ip(code::REQUESTED_IP);
        let (ip, state) = match (server_id, requested) {
            // SELECTING: the client answers an OFFER; another server's id means it chose them.
            (Some(sid), _) if sid != self.cfg.server => {
                self.alloc.drop_offer(req.mac);
                return None;
            }
            (Some(_), Some(ip)) => (ip, RequestState::Selecting),
            (Some(_), None) if !req.ciaddr.is_unspecified() => (req.ciaddr, RequestState::Selecting),
            (Some(_), None) => return None,
            // INIT-REBOOT: the client asks for the address it remembers.
            (None, Some(ip)) => (ip, RequestState::InitReboot),
            // RENEWING (unicast) / REBINDING (broadcast): ciaddr is the lease.
            (None, None) if !req.ciaddr.is_unspecified() => (req.ciaddr, RequestState::Renewing),
            (None, None) => return None,
        };
        if state == RequestState::InitReboot && !self.cfg.in_subnet(ip) {
            return Some(self.nak(req, ip, "address is on another network"));
        }
        if !self.alloc.was_given(req.mac, ip, now) {
            // Not an answer to our OFFER nor this client's own lease: binding it would let anyone
            // take any free address without DISCOVER (and its rate limit). RFC 2131 4.3.2: a
            // server with no record of an INIT-REBOOT client stays silent.
            return match state {
                RequestState::InitReboot if self.alloc.table().of_mac(req.mac).is_none() => None,
                RequestState::Renewing if !self.cfg.in_subnet(ip) => None,
                _ => Some(self.nak(req, ip, "not offered to this client")),
            };
        }
        if let Err(why) = self.alloc.check(req.mac, ip, now) {
            if state == RequestState::Renewing && !self.alloc.is_ours(ip) && !self.cfg.in_subnet(ip) {
                // Not our network at all: some other server's client rebinding; stay silent.
                return None;
            }
            return Some(self.nak(req, ip, &why.to_string()));
        }
        let lease_secs = self.lease_secs();
        let lease = self.lease(req.mac, ip, now + lease_secs, LeaseState::Bound, now);
        self.alloc.record(lease.clone());
        let mut reply = Reply::to(req, Some(MessageType::Ack));
        reply.yiaddr = ip;
        reply.ciaddr = req.ciaddr;
        self.lease_options(&mut reply, req, ip, lease_secs);
        Some(self.finish(req, reply, Some(lease), Stage::Acked, ip, state.as_str()))
    }

    fn nak(&mut self, req: &Request, ip: Ipv4Addr, why: &str) -> Action {
        let mut reply = Reply::to(req, Some(MessageType::Nak));
        reply.set_ip(code::SERVER_ID, self.cfg.server);
        reply.set(code::MESSAGE, why.as_bytes());
        // RFC 2131 4.3.2: NAKs go broadcast unless relayed.
        let dest = if req.giaddr.is_unspecified() {
            Dest::Broadcast
        } else {
            Dest::Unicast(SocketAddrV4::new(req.giaddr, 67))
        };
        if dest == Dest::Broadcast {
            reply.flags |= 0x8000;
        }
        let note = self.note(Stage::Nak, req.mac, ip, why);
        Action { reply: reply.encode().ok().map(|b| (b, dest)), commit: None, note: Some(note) }
    }

    fn decline(&mut self, req: &Request, now: u64) -> Option<Action> {
        if req.opt_ip(code::SERVER_ID) != Some(self.cfg.server) {
            return None;
        }
        let ip = req.opt_ip(code::REQUESTED_IP)?;
        // Only the holder may decline its own address (it found it in use after the ACK);
        // anyone else's DECLINE would quarantine free addresses for nothing.
        let holder = self
            .alloc
            .table()
            .get(ip)
            .is_some_and(|l| l.mac == req.mac && l.state == LeaseState::Bound && l.active_at(now));
        if !self.alloc.is_ours(ip) || !holder {
            tracing::debug!(mac = %req.mac, %ip, "DECLINE from a MAC that does not hold the address ignored");
            return None;
        }
        let lease = self.lease(req.mac, ip, now + DECLINE_QUARANTINE_SECS, LeaseState::Declined, now);
        self.alloc.record(lease.clone());
        self.alloc.drop_offer(req.mac);
        let note = self.note(Stage::Declined, req.mac, ip, "address in use by someone else; quarantined");
        Some(Action { reply: None, commit: Some(lease), note: Some(note) })
    }

    fn release(&mut self, req: &Request, now: u64) -> Option<Action> {
        let ip = req.ciaddr;
        let held =
            self.alloc.table().get(ip).is_some_and(|l| l.mac == req.mac && l.state == LeaseState::Bound);
        if !held {
            return None;
        }
        let lease = self.lease(req.mac, ip, now, LeaseState::Released, now);
        self.alloc.record(lease.clone());
        let note = self.note(Stage::Released, req.mac, ip, "");
        Some(Action { reply: None, commit: Some(lease), note: Some(note) })
    }

    fn inform(&mut self, req: &Request) -> Option<Action> {
        if req.ciaddr.is_unspecified() || !self.cfg.in_subnet(req.ciaddr) {
            return None;
        }
        let mut reply = Reply::to(req, Some(MessageType::Ack));
        reply.ciaddr = req.ciaddr;
        self.common_options(&mut reply, req, req.ciaddr);
        let dest = self.dest(req, &reply);
        Some(Action { reply: reply.encode().ok().map(|b| (b, dest)), commit: None, note: None })
    }

    /// BOOTP: no message type; answer at once with a binding for `lease_time` (committed
    /// first). `full` has already ignored MACs that are not pinned unless `bootp = "dynamic"`.
    fn bootp(&mut self, req: &Request, now: u64) -> Option<Action> {
        let ip = self.alloc.choose(req.mac, now)?;
        if self.alloc.reclaimed_from(ip, req.mac, now).is_some() {
            // BOOTP has no offer step to make the takeover explicit; leave reclaiming to DHCP.
            return None;
        }
        let lease = self.lease(req.mac, ip, now + self.lease_secs(), LeaseState::Bound, now);
        self.alloc.record(lease.clone());
        let mut reply = Reply::to(req, None);
        reply.yiaddr = ip;
        self.common_options(&mut reply, req, ip);
        Some(self.finish(req, reply, Some(lease), Stage::Acked, ip, "bootp"))
    }

    /// Proxy mode: PXE clients only, boot information only, never an address.
    fn proxy(&mut self, req: &Request, src: SocketAddrV4, port: Port) -> Option<Action> {
        if !req.is_pxe() {
            return None;
        }
        let (msg, dest) = match (port, req.msg_type) {
            (Port::Dhcp, Some(MessageType::Discover)) => (MessageType::Offer, None),
            (Port::PxeService, Some(MessageType::Request | MessageType::Inform)) => {
                // Answer only what a PXE ROM sends: from its DHCP client port (or 4011), from an
                // address on our subnet. Anything else may be a spoofed source to reflect at.
                let plausible = matches!(src.port(), 68 | 4011)
                    && !src.ip().is_unspecified()
                    && self.cfg.in_subnet(*src.ip())
                    && *src.ip() != self.cfg.server
                    && *src.ip() != self.cfg.broadcast();
                if !plausible {
                    tracing::debug!(mac = %req.mac, %src, "port 4011 request from an implausible source ignored");
                    return None;
                }
                (MessageType::Ack, Some(Dest::Unicast(src)))
            }
            _ => return None,
        };
        let mut reply = Reply::to(req, Some(msg));
        reply.ciaddr = req.ciaddr;
        reply.siaddr = self.cfg.server;
        reply.file = self.boot_file(req).into_bytes();
        reply.set_ip(code::SERVER_ID, self.cfg.server);
        reply.set(code::VENDOR_CLASS, b"PXEClient");
        reply.set(code::VENDOR_SPECIFIC, PXE_VENDOR_OPTIONS);
        reply.set(code::TFTP_SERVER, self.cfg.server.to_string().into_bytes());
        reply.set(code::BOOTFILE, reply.file.clone());
        echo_uuid(&mut reply, req);
        let dest = dest.unwrap_or_else(|| self.dest(req, &reply));
        let ip = if req.ciaddr.is_unspecified() { *src.ip() } else { req.ciaddr };
        let note = self.note(Stage::Offered, req.mac, ip, "proxy boot information");
        Some(Action { reply: reply.encode().ok().map(|b| (b, dest)), commit: None, note: Some(note) })
    }

    fn lease_secs(&self) -> u64 {
        self.cfg.lease_time.as_secs().clamp(60, u64::from(u32::MAX - 1))
    }

    fn lease_options(&self, reply: &mut Reply, req: &Request, ip: Ipv4Addr, secs: u64) {
        self.common_options(reply, req, ip);
        reply.set_u32(code::LEASE_TIME, secs as u32);
        reply.set_u32(code::T1, (secs / 2) as u32);
        reply.set_u32(code::T2, (secs * 7 / 8) as u32);
    }

    /// Everything but the lease times: network, name, boot and PXE options.
    fn common_options(&self, reply: &mut Reply, req: &Request, ip: Ipv4Addr) {
        let bootp = req.msg_type.is_none();
        reply.siaddr = self.cfg.server;
        reply.file = self.boot_file(req).into_bytes();
        if !bootp {
            reply.set_ip(code::SERVER_ID, self.cfg.server);
        }
        reply.set_ip(code::SUBNET_MASK, self.cfg.netmask());
        reply.set_ip(code::BROADCAST, self.cfg.broadcast());
        if let Some(r) = self.cfg.router {
            reply.set_ip(code::ROUTER, r);
        }
        if !self.cfg.dns.is_empty() {
            reply.set(code::DNS, self.cfg.dns.iter().flat_map(|d| d.octets()).collect::<Vec<u8>>());
        }
        if let Some(h) = self.cfg.hosts.get(&ip) {
            reply.set(code::HOSTNAME, h.hostname.as_bytes());
        }
        if bootp {
            // A 64-byte vendor area has room for little else.
            return;
        }
        reply.set(code::TFTP_SERVER, self.cfg.server.to_string().into_bytes());
        reply.set(code::BOOTFILE, reply.file.clone());
        if req.is_pxe() {
            reply.set(code::VENDOR_CLASS, b"PXEClient");
            reply.set(code::VENDOR_SPECIFIC, PXE_VENDOR_OPTIONS);
        }
        echo_uuid(reply, req);
        if let Some(relay) = req.opt(code::RELAY_AGENT)
            && !req.giaddr.is_unspecified()
            && relay.len() <= MAX_RELAY_ECHO
        {
            reply.set(code::RELAY_AGENT, relay);
        }
    }

    fn boot_file(&self, req: &Request) -> String {
        if req.is_ipxe() { self.cfg.boot.ipxe.clone() } else { self.cfg.boot.pxe.clone() }
    }

    /// RFC 2131 4.1: relay -> relay:67; ciaddr -> unicast; else broadcast (old ROMs rarely set
    /// the broadcast flag and cannot take unicast before they have an address).
    fn dest(&self, req: &Request, reply: &Reply) -> Dest {
        if !req.giaddr.is_unspecified() {
            return Dest::Unicast(SocketAddrV4::new(req.giaddr, 67));
        }
        // Unicast only to an address of ours that this MAC holds: a spoofed ciaddr must not
        // make us send to a host of the attacker's choosing.
        let held = self.cfg.in_subnet(req.ciaddr)
            && self
                .alloc
                .table()
                .get(req.ciaddr)
                .is_some_and(|l| l.mac == req.mac && l.state == LeaseState::Bound);
        if !req.ciaddr.is_unspecified()
            && held
            && !req.broadcast_flag()
            && reply.msg_type != Some(MessageType::Nak)
        {
            return Dest::Unicast(SocketAddrV4::new(req.ciaddr, 68));
        }
        Dest::Broadcast
    }

    fn finish(
        &mut self,
        req: &Request,
        reply: Reply,
        commit: Option<Lease>,
        stage: Stage,
        ip: Ipv4Addr,
        detail: &str,
    ) -> Action {
        let dest = self.dest(req, &reply);
        let bytes = match reply.encode() {
            Ok(b) => Some((b, dest)),
            Err(e) => {
                tracing::error!(mac = %req.mac, error = %e, "cannot encode reply");
                None
            }
        };
        let mut detail = detail.to_string();
        if let Some(h) = req.client_hostname() {
            detail = format!("{detail} client-name={h:?}").trim().to_string();
        }
        let note = self.note(stage, req.mac, ip, &detail);
        Action { reply: bytes, commit, note: Some(note) }
    }

    fn lease(&self, mac: MacAddr, ip: Ipv4Addr, expires: u64, state: LeaseState, now: u64) -> Lease {
        let hostname = self.cfg.hosts.get(&ip).map(|h| h.hostname.clone()).unwrap_or_default();
        Lease { mac, ip, hostname, expires, state, at: now }
    }

    fn note(&self, stage: Stage, mac: MacAddr, ip: Ipv4Addr, detail: &str) -> Note {
        let host = self.cfg.hosts.get(&ip);
        Note {
            stage,
            mac,
            ip,
            hostname: host.map(|h| h.hostname.clone()).unwrap_or_default(),
            node: host.map(|h| h.node),
            detail: detail.to_string(),
        }
    }
}

/// Echoes option 97 only in its PXE shape (fixed size), so a reply never carries back
/// arbitrary client bytes.
fn echo_uuid(reply: &mut Reply, req: &Request) {
    if let Some(uuid) = req.opt(code::CLIENT_UUID)
        && uuid.len() == UUID_LEN
        && uuid[0] == 0
    {
        reply.set(code::CLIENT_UUID, uuid);
    }
}

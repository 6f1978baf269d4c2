//! DHCP/BOOTP wire format: a tolerant decoder and an encoder that old ROMs accept.
//!
//! The fixed BOOTP header goes through dhcproto; options are walked here, one TLV at a time, so
//! one option with a bad value cannot hide the options after it (dhcproto drops the rest), and
//! option overload (52) is honoured. Replies keep option 53 first (ISC dhcpd and dnsmasq do, and
//! some ROMs only look there), keep sname/file NUL-terminated in the fixed fields (never
//! overloaded), and are padded to the 300-byte BOOTP minimum.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use dhcproto::v4::{Flags, MessageType};

use crate::mac::MacAddr;

pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Smallest reply old BOOTP/PXE clients accept.
pub const MIN_REPLY_LEN: usize = 300;
const HEADER_LEN: usize = 236;
/// `op` of a server's reply.
const BOOTREPLY: u8 = 2;
/// `htype` of Ethernet (10 Mb and up).
const HTYPE_ETHERNET: u8 = 1;

/// Option codes this server reads or writes.
pub mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const BROADCAST: u8 = 28;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAM_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const T1: u8 = 58;
    pub const T2: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER: u8 = 66;
    pub const BOOTFILE: u8 = 67;
    pub const USER_CLASS: u8 = 77;
    pub const RELAY_AGENT: u8 = 82;
    pub const CLIENT_ARCH: u8 = 93;
    pub const CLIENT_UUID: u8 = 97;
    pub const IPXE_ENCAP: u8 = 175;
    pub const END: u8 = 255;
}

/// PXE vendor option 43 as the server sends it: PXE_DISCOVERY_CONTROL (6), length 1, value 8
/// ("boot the file named in this reply", no discovery), then END. `mosboot export` writes the
/// same bytes into dnsmasq and dhcpd configs.
pub const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, code::END];

/// Why a reply cannot be put on the wire.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("sname is {0} bytes, the field holds 63 + NUL")]
    SnameTooLong(usize),
    #[error("boot file name is {0} bytes, the field holds 127 + NUL")]
    FileTooLong(usize),
    #[error(transparent)]
    Header(#[from] dhcproto::error::EncodeError),
}

/// Why a datagram is not a request we answer. Never shown to the client (garbage gets silence).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PacketError {
    #[error("{0} bytes is shorter than a BOOTP request (236-byte header + vendor area)")]
    TooShort(usize),
    #[error("op {0} is not BOOTREQUEST")]
    NotRequest(u8),
    #[error("htype {0}/hlen {1} is not Ethernet")]
    NotEthernet(u8, u8),
    #[error("option {code} at offset {offset} claims {len} bytes but the packet ends first")]
    OptionOverrun { code: u8, offset: usize, len: usize },
    #[error("options end without an END (255) option")]
    NoEnd,
    #[error("option 53 (message type) is {0:?}, not one byte 1..=8")]
    BadMessageType(Vec<u8>),
    #[error("option 52 (overload) value {0:?} is not 1, 2 or 3")]
    BadOverload(Vec<u8>),
    #[error("header: {0}")]
    Header(String),
}

/// A decoded client request.
#[derive(Clone, Debug)]
pub struct Request {
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    pub mac: MacAddr,
    /// Had the RFC 1048 magic cookie (a BOOTP client without it gets no options).
    pub has_cookie: bool,
    /// Options by code; repeated codes are concatenated (RFC 3396).
    pub options: BTreeMap<u8, Vec<u8>>,
    /// Option 53; `None` for a BOOTP client.
    pub msg_type: Option<MessageType>,
}

impl Request {
    pub fn opt(&self, c: u8) -> Option<&[u8]> {
        self.options.get(&c).map(Vec::as_slice)
    }

    pub fn opt_ip(&self, c: u8) -> Option<Ipv4Addr> {
        match self.opt(c) {
            Some(&[a, b, c, d]) => Some(Ipv4Addr::new(a, b, c, d)),
            _ => None,
        }
    }

    pub fn broadcast_flag(&self) -> bool {
        Flags::from(self.flags).broadcast()
    }

    /// Option 60 starts with `PXEClient` (PXE ROMs and iPXE).
    pub fn is_pxe(&self) -> bool {
        self.opt(code::VENDOR_CLASS).is_some_and(|v| v.starts_with(b"PXEClient"))
    }

    /// Already running iPXE: user class 77 says `iPXE`, or iPXE's own option 175 is present.
    pub fn is_ipxe(&self) -> bool {
        self.opt(code::IPXE_ENCAP).is_some()
            || self.opt(code::USER_CLASS).is_some_and(|v| v.windows(4).any(|w| w == b"iPXE"))
    }

    /// The client's own hostname (option 12) for logs: lossy, bounded.
    pub fn client_hostname(&self) -> Option<String> {
        self.opt(code::HOSTNAME).map(|h| {
            let s = String::from_utf8_lossy(&h[..h.len().min(64)]);
            s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
        })
    }
}

/// Decodes one datagram. Anything that is not a well-formed Ethernet BOOTREQUEST is an error.
pub fn decode(data: &[u8]) -> Result<Request, PacketError> {
    if data.len() < HEADER_LEN {
        return Err(PacketError::TooShort(data.len()));
    }
    if data[0] != 1 {
        return Err(PacketError::NotRequest(data[0]));
    }
    if data[1] != 1 || data[2] != 6 {
        return Err(PacketError::NotEthernet(data[1], data[2]));
    }
    // The fixed header is read here, field by field: with op, htype and hlen checked above
    // nothing in it can be invalid (dhcproto's decoder would only allocate for the same values).
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&data[28..44]);
    let mac = MacAddr([chaddr[0], chaddr[1], chaddr[2], chaddr[3], chaddr[4], chaddr[5]]);

    let has_cookie = data.len() >= HEADER_LEN + 4 && data[HEADER_LEN..HEADER_LEN + 4] == MAGIC;
    if !has_cookie && data.len() < MIN_REPLY_LEN {
        // A BOOTP request always carries the 64-byte vendor area; shorter without a cookie is a
        // truncated DHCP packet, not an old client.
        return Err(PacketError::TooShort(data.len()));
    }
    let mut options = BTreeMap::new();
    if has_cookie {
        walk_options(data, HEADER_LEN + 4, data.len(), true, &mut options)?;
        if let Some(ov) = options.get(&code::OVERLOAD).cloned() {
            let (file, sname) = match ov.as_slice() {
                [1] => (true, false),
                [2] => (false, true),
                [3] => (true, true),
                _ => return Err(PacketError::BadOverload(ov)),
            };
            // RFC 2131 4.1: file first, then sname; each must end with END too.
            if file {
                walk_options(data, 108, 236, false, &mut options)?;
            }
            if sname {
                walk_options(data, 44, 108, false, &mut options)?;
            }
        }
    }
    let msg_type = match options.get(&code::MESSAGE_TYPE) {
        None => None,
        Some(v) if v.len() == 1 && (1..=8).contains(&v[0]) => Some(MessageType::from(v[0])),
        Some(v) => return Err(PacketError::BadMessageType(v.clone())),
    };
    let be16 = |o: usize| u16::from_be_bytes([data[o], data[o + 1]]);
    let ip = |o: usize| Ipv4Addr::new(data[o], data[o + 1], data[o + 2], data[o + 3]);
    Ok(Request {
        xid: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        secs: be16(8),
        flags: be16(10),
        hops: data[3],
        ciaddr: ip(12),
        giaddr: ip(24),
        chaddr,
        mac,
        has_cookie,
        options,
        msg_type,
    })
}

fn walk_options(
    data: &[u8],
    start: usize,
    end: usize,
    need_end: bool,
    out: &mut BTreeMap<u8, Vec<u8>>,
) -> Result<(), PacketError> {
    let mut i = start;
    while i < end {
        let c = data[i];
        match c {
            code::PAD => i += 1,
            code::END => return Ok(()),
            _ => {
                let len = *data.get(i + 1).ok_or(PacketError::OptionOverrun { code: c, offset: i, len: 0 })?
                    as usize;
                let body = data
                    .get(i + 2..i + 2 + len)
                    .filter(|_| i + 2 + len <= end)
                    .ok_or(PacketError::OptionOverrun { code: c, offset: i, len })?;
                out.entry(c).or_default().extend_from_slice(body);
                i += 2 + len;
            }
        }
    }
    if need_end { Err(PacketError::NoEnd) } else { Ok(()) }
}

/// A reply under construction.
#[derive(Clone, Debug)]
pub struct Reply {
    pub xid: u32,
    pub flags: u16,
    pub hops: u8,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    /// Fixed-field server name; at most 63 bytes (one is kept for the NUL).
    pub sname: Vec<u8>,
    /// Fixed-field boot file; at most 127 bytes.
    pub file: Vec<u8>,
    /// Option 53 value; `None` for a BOOTREPLY to a BOOTP client.
    pub msg_type: Option<MessageType>,
    /// Options other than 53, set in any order; written sorted by code after 53.
    options: ReplyOptions,
    /// Whether to write the RFC 1048 cookie and options at all.
    pub with_options: bool,
}

impl Reply {
    /// A reply skeleton echoing the request's transaction fields.
    pub fn to(req: &Request, msg_type: Option<MessageType>) -> Reply {
        Reply {
            xid: req.xid,
            flags: req.flags,
            hops: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
            sname: Vec::new(),
            file: Vec::new(),
            msg_type,
            options: ReplyOptions { bytes: Vec::with_capacity(128), index: Vec::with_capacity(16) },
            with_options: req.has_cookie,
        }
    }

    pub fn set(&mut self, c: u8, value: impl AsRef<[u8]>) {
        self.options.set(c, value.as_ref());
    }

    pub fn set_ip(&mut self, c: u8, ip: Ipv4Addr) {
        self.options.set(c, &ip.octets());
    }

    pub fn set_u32(&mut self, c: u8, v: u32) {
        self.options.set(c, &v.to_be_bytes());
    }

    pub fn opt(&self, c: u8) -> Option<&[u8]> {
        self.options.get(c)
    }

    /// Wire bytes. Fails (instead of panicking like dhcproto's setters) on an over-long sname/file.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.sname.len() > 63 {
            return Err(EncodeError::SnameTooLong(self.sname.len()));
        }
        if self.file.len() > 127 {
            return Err(EncodeError::FileTooLong(self.file.len()));
        }
        // The fixed header (RFC 2131 figure 1), written directly: dhcproto's encoder pushes the
        // 192 bytes of sname/file padding one at a time and draws a random xid it never uses.
        let mut out = Vec::with_capacity(576);
        out.extend_from_slice(&[BOOTREPLY, HTYPE_ETHERNET, 6, self.hops]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&[0, 0]); // secs
        out.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&a.octets());
        }
        out.extend_from_slice(&self.chaddr[..6]);
        out.resize(44, 0);
        out.extend_from_slice(&self.sname);
        out.resize(108, 0);
        out.extend_from_slice(&self.file);
        out.resize(HEADER_LEN, 0);
        if self.with_options {
            out.extend_from_slice(&MAGIC);
            if let Some(t) = self.msg_type {
                out.extend_from_slice(&[code::MESSAGE_TYPE, 1, u8::from(t)]);
            }
            for (c, v) in self.options.iter() {
                if c == code::MESSAGE_TYPE || c == code::PAD || c == code::END {
                    continue;
                }
                // Long values are split into several instances (RFC 3396); an empty one is kept.
                if v.is_empty() {
                    out.extend_from_slice(&[c, 0]);
                }
                for chunk in v.chunks(255) {
                    out.push(c);
                    out.push(chunk.len() as u8);
                    out.extend_from_slice(chunk);
                }
            }
            out.push(code::END);
        }
        if out.len() < MIN_REPLY_LEN {
            out.resize(MIN_REPLY_LEN, code::PAD);
        }
        Ok(out)
    }
}

/// A reply's options by code, values back to back in one buffer: building a reply allocates
/// twice instead of once per option (a map of `Vec`s cost ~20 allocations per reply).
#[derive(Clone, Debug, Default)]
struct ReplyOptions {
    bytes: Vec<u8>,
    /// (code, start, length) into `bytes`, sorted by code, one per code.
    index: Vec<(u8, usize, usize)>,
}

impl ReplyOptions {
    /// Sets (or replaces: the old value's bytes are left unused) the value of `c`.
    fn set(&mut self, c: u8, value: &[u8]) {
        let entry = (c, self.bytes.len(), value.len());
        self.bytes.extend_from_slice(value);
        match self.index.binary_search_by_key(&c, |e| e.0) {
            Ok(i) => self.index[i] = entry,
            Err(i) => self.index.insert(i, entry),
        }
    }

    fn get(&self, c: u8) -> Option<&[u8]> {
        let i = self.index.binary_search_by_key(&c, |e| e.0).ok()?;
        let (_, at, len) = self.index[i];
        Some(&self.bytes[at..at + len])
    }

    /// (code, value) in code order.
    fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.index.iter().map(|&(c, at, len)| (c, &self.bytes[at..at + len]))
    }
}

/// Builds a request datagram (for the rival probe and tests).
pub fn encode_request(
    xid: u32,
    mac: MacAddr,
    flags: u16,
    ciaddr: Ipv4Addr,
    options: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[0] = 1;
    out[1] = 1;
    out[2] = 6;
    out[4..8].copy_from_slice(&xid.to_be_bytes());
    out[10..12].copy_from_slice(&flags.to_be_bytes());
    out[12..16].copy_from_slice(&ciaddr.octets());
    out[28..34].copy_from_slice(&mac.0);
    out.extend_from_slice(&MAGIC);
    for (c, v) in options {
        out.push(*c);
        out.push(v.len().min(255) as u8);
        out.extend_from_slice(&v[..v.len().min(255)]);
    }
    out.push(code::END);
    if out.len() < MIN_REPLY_LEN {
        out.resize(MIN_REPLY_LEN, code::PAD);
    }
    out
}

/// Minimal view of a reply, for the probe and tests.
#[derive(Clone, Debug)]
pub struct ReplyView {
    pub op: u8,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub file: Vec<u8>,
    pub options: BTreeMap<u8, Vec<u8>>,
}

/// Decodes a server reply (used by the rival probe).
pub fn decode_reply(data: &[u8]) -> Option<ReplyView> {
    if data.len() < HEADER_LEN + 4 || data[0] != 2 || data[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
        return None;
    }
    let mut options = BTreeMap::new();
    walk_options(data, HEADER_LEN + 4, data.len(), false, &mut options).ok()?;
    let ip = |o: usize| Ipv4Addr::new(data[o], data[o + 1], data[o + 2], data[o + 3]);
    let file_field = &data[108..236];
    let file = file_field[..file_field.iter().position(|&b| b == 0).unwrap_or(128)].to_vec();
    Some(ReplyView {
        op: data[0],
        xid: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
        yiaddr: ip(16),
        siaddr: ip(20),
        file,
        options,
    })
}

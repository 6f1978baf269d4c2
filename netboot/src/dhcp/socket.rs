//! UDP sockets pinned to the lab interface. SO_BINDTODEVICE keeps the kernel from handing us
//! packets from other NICs (and sends broadcasts out the right one); IP_PKTINFO double-checks
//! the ingress interface per packet and sets the source address of every reply.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::config::DhcpError;

/// The interface's index and its IPv4 addresses with prefix lengths.
pub fn interface_addrs(interface: &str) -> Result<(u32, Vec<(Ipv4Addr, u8)>), DhcpError> {
    let index = nix::net::if_::if_nametoindex(interface)
        .map_err(|_| DhcpError::NoInterface(interface.to_string()))?;
    let mut addrs = Vec::new();
    let ifaddrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| DhcpError::Io { interface: interface.to_string(), source: e.into() })?;
    for ifa in ifaddrs {
        if ifa.interface_name != interface {
            continue;
        }
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else { continue };
        if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            addrs.push((a.ip(), u32::from(m.ip()).count_ones() as u8));
        }
    }
    Ok((index, addrs))
}

/// Refuses to serve an interface that is missing or lacks the server address.
pub fn check_interface(interface: &str, server: Ipv4Addr) -> Result<u32, DhcpError> {
    let (index, addrs) = interface_addrs(interface)?;
    if !addrs.iter().any(|(a, _)| *a == server) {
        let has = if addrs.is_empty() {
            "no IPv4 address".to_string()
        } else {
            addrs.iter().map(|(a, p)| format!("{a}/{p}")).collect::<Vec<_>>().join(", ")
        };
        return Err(DhcpError::NoServerAddress { interface: interface.to_string(), server, has });
    }
    Ok(index)
}

/// Receive buffer asked for on the DHCP sockets: 250 PCs switched on together send their
/// DISCOVERs within a millisecond, about 2.3 KiB of buffer each on a veth or Ethernet NIC, and
/// the default (208 KiB) overflows after ~100 of them, so the rest wait for their retransmit
/// (1-4 s). 4 MiB holds ~1800, and costs memory only while it is full.
pub const DHCP_RCVBUF: usize = 4 << 20;

/// How big a socket's receive buffer ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcvBuf {
    /// Set with `SO_RCVBUFFORCE` (needs CAP_NET_ADMIN): the size asked for; `bytes` is what the
    /// kernel reports (it doubles the request for its bookkeeping).
    Forced { bytes: usize },
    /// Not permitted to force it: `SO_RCVBUF`, which the kernel caps at `net.core.rmem_max`.
    Capped { bytes: usize },
}

impl RcvBuf {
    pub fn bytes(self) -> usize {
        match self {
            RcvBuf::Forced { bytes } | RcvBuf::Capped { bytes } => bytes,
        }
    }
}

/// Grows `sock`'s receive buffer to `want` bytes: forced while the process still has
/// CAP_NET_ADMIN (`serve` binds before it drops privileges), else as far as `rmem_max` allows.
pub fn grow_rcvbuf(sock: &impl std::os::fd::AsFd, want: usize) -> std::io::Result<RcvBuf> {
    let forced = setsockopt(sock, sockopt::RcvBufForce, &want).is_ok();
    if !forced {
        setsockopt(sock, sockopt::RcvBuf, &want)?;
    }
    let bytes = nix::sys::socket::getsockopt(sock, sockopt::RcvBuf)?;
    Ok(if forced { RcvBuf::Forced { bytes } } else { RcvBuf::Capped { bytes } })
}

/// A UDP socket on one port of one interface.
pub struct IfaceSocket {
    sock: UdpSocket,
    interface: String,
    ifindex: u32,
    /// Source address of replies; unspecified lets the kernel choose.
    source: Ipv4Addr,
    /// The receive buffer it got (see [`grow_rcvbuf`]).
    pub rcvbuf: RcvBuf,
}

impl IfaceSocket {
    /// Binds 0.0.0.0:`port` (broadcasts arrive at 255.255.255.255, so a unicast bind would miss
    /// them) restricted to `interface`. Must run inside a tokio runtime.
    pub fn bind(interface: &str, ifindex: u32, port: u16, source: Ipv4Addr) -> Result<Self, DhcpError> {
        let bind_err = |source| DhcpError::Bind { interface: interface.to_string(), port, source };
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(bind_err)?;
        sock.set_reuse_address(true).map_err(bind_err)?;
        sock.set_broadcast(true).map_err(bind_err)?;
        sock.bind_device(Some(interface.as_bytes())).map_err(bind_err)?;
        setsockopt(&sock, sockopt::Ipv4PacketInfo, &true).map_err(|e| bind_err(e.into()))?;
        sock.set_nonblocking(true).map_err(bind_err)?;
        let rcvbuf = grow_rcvbuf(&sock, DHCP_RCVBUF).map_err(bind_err)?;
        sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into()).map_err(bind_err)?;
        let sock = UdpSocket::from_std(sock.into()).map_err(bind_err)?;
        Ok(IfaceSocket { sock, interface: interface.to_string(), ifindex, source, rcvbuf })
    }

    /// Next datagram that really arrived on our interface: (length, sender).
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddrV4)> {
        loop {
            let (n, from, ifindex) = self
                .sock
                .async_io(Interest::READABLE, || {
                    let mut iov = [IoSliceMut::new(buf)];
                    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
                    let msg = recvmsg::<SockaddrIn>(
                        self.sock.as_raw_fd(),
                        &mut iov,
                        Some(&mut cmsg),
                        MsgFlags::empty(),
                    )
                    .map_err(std::io::Error::from)?;
                    let mut ifindex = None;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                                ifindex = Some(info.ipi_ifindex as u32);
                            }
                        }
                    }
                    let from = msg.address.map(|a| SocketAddrV4::new(a.ip(), a.port()));
                    Ok((msg.bytes, from, ifindex))
                })
                .await?;
            match (from, ifindex) {
                (Some(from), Some(i)) if i == self.ifindex => return Ok((n, from)),
                (from, i) => {
                    tracing::debug!(interface = %self.interface, ?from, ifindex = ?i, "dropped datagram from another interface");
                }
            }
        }
    }

    /// Receives as many datagrams as are queued (up to the batch's size) with one `recvmmsg`,
    /// waiting only while none is; keeps those that arrived on our interface. Under a storm this
    /// costs one system call per batch instead of one per packet.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> std::io::Result<usize> {
        loop {
            let got = self.sock.async_io(Interest::READABLE, || batch.fill(self.sock.as_raw_fd())).await?;
            batch.keep_from(self.ifindex, got);
            if batch.len > 0 {
                return Ok(batch.len);
            }
            tracing::debug!(interface = %self.interface, got, "dropped datagrams from another interface");
        }
    }

    /// Sends from our address out of our interface.
    pub async fn send_to(&self, data: &[u8], dest: SocketAddrV4) -> std::io::Result<()> {
        let info = libc::in_pktinfo {
            ipi_ifindex: self.ifindex as i32,
            ipi_spec_dst: libc::in_addr { s_addr: u32::from(self.source).to_be() },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let to = SockaddrIn::from(dest);
        self.sock
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(data)];
                let cmsgs = [ControlMessage::Ipv4PacketInfo(&info)];
                sendmsg(self.sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), Some(&to))
                    .map_err(std::io::Error::from)
            })
            .await
            .map(|_| ())
    }
}

/// Datagrams in one batch; more than a 100-PC burst needs several calls, none waits.
pub const RECV_BATCH: usize = 64;
/// Longest DHCP datagram read (the rest of a bigger one is cut off, as with `recv`).
const DATAGRAM: usize = 2048;

/// Buffers for [`IfaceSocket::recv_batch`]: after a call, datagrams `0..len` are valid.
///
/// The `recvmmsg` headers and their iovecs are built once and point into the batch's own heap
/// buffers (which stay put when the batch moves); a call only resets the two lengths the kernel
/// overwrote in the headers it filled last time. Rebuilding (and zeroing) 64 headers per call
/// was the largest single cost of a DHCP exchange.
pub struct RecvBatch {
    /// `RECV_BATCH` datagram buffers of `DATAGRAM` bytes, back to back.
    bufs: Vec<u8>,
    /// (length, sender) of each kept datagram, in arrival order.
    got: Vec<(usize, SocketAddrV4)>,
    /// Which buffer each kept datagram is in.
    slot: Vec<usize>,
    names: Vec<libc::sockaddr_in>,
    cmsgs: Vec<[u64; 8]>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Headers the last call filled (their name and control lengths need resetting).
    filled: usize,
    len: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point only into this batch's own heap
// allocations (`bufs`, `names`, `cmsgs`, `iovs`), which move with it and are never shared.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        let mut b = RecvBatch {
            // Zeroed by the allocator (fresh pages), not by a memset.
            bufs: vec![0; RECV_BATCH * DATAGRAM],
            got: Vec::with_capacity(RECV_BATCH),
            slot: Vec::with_capacity(RECV_BATCH),
            // SAFETY: sockaddr_in is plain old data; all zeros is a valid value.
            names: vec![unsafe { std::mem::zeroed() }; RECV_BATCH],
            cmsgs: vec![[0; 8]; RECV_BATCH],
            iovs: Vec::with_capacity(RECV_BATCH),
            hdrs: Vec::with_capacity(RECV_BATCH),
            filled: 0,
            len: 0,
        };
        for chunk in b.bufs.chunks_exact_mut(DATAGRAM) {
            b.iovs.push(libc::iovec { iov_base: chunk.as_mut_ptr().cast(), iov_len: DATAGRAM });
        }
        for i in 0..RECV_BATCH {
            // SAFETY: mmsghdr is plain old data; every pointer field is set here.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut b.names[i] as *mut libc::sockaddr_in).cast();
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = b.cmsgs[i].as_mut_ptr().cast();
            b.hdrs.push(h);
        }
        b.filled = RECV_BATCH;
        b
    }
}

impl RecvBatch {
    /// Datagram `i` of the last batch and its sender.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddrV4) {
        let (n, from) = self.got[i];
        let at = self.slot[i] * DATAGRAM;
        (&self.bufs[at..at + n], from)
    }

    /// One non-blocking `recvmmsg` into every buffer: how many datagrams came.
    fn fill(&mut self, fd: std::os::fd::RawFd) -> std::io::Result<usize> {
        self.len = 0;
        for h in &mut self.hdrs[..self.filled] {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_hdr.msg_controllen = std::mem::size_of::<[u64; 8]>();
            h.msg_hdr.msg_flags = 0;
        }
        self.filled = 0;
        // SAFETY: every header points into buffers owned by `self`, alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                RECV_BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            // The kernel writes no header back when it fails (EAGAIN included).
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        self.filled = n;
        Ok(n)
    }

    /// Keeps, of the `n` datagrams just received, those from interface `ifindex`.
    fn keep_from(&mut self, ifindex: u32, n: usize) {
        self.got.clear();
        self.slot.clear();
        for (i, h) in self.hdrs.iter().take(n).enumerate() {
            let from_if = pktinfo_ifindex(&h.msg_hdr).unwrap_or(-1);
            if from_if != ifindex as i32
                || (h.msg_hdr.msg_namelen as usize) < std::mem::size_of::<libc::sockaddr_in>()
            {
                continue;
            }
            let a = &self.names[i];
            let from =
                SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port));
            self.got.push(((h.msg_len as usize).min(DATAGRAM), from));
            self.slot.push(i);
        }
        self.len = self.got.len();
    }
}

/// The ingress interface from a received message's IP_PKTINFO, if it has one.
fn pktinfo_ifindex(msg: &libc::msghdr) -> Option<i32> {
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just filled, within
    // msg_controllen; the data is read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                return Some(info.ipi_ifindex);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    None
}

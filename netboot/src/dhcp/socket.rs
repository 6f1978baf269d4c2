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

/// A UDP socket on one port of one interface.
pub struct IfaceSocket {
    sock: UdpSocket,
    interface: String,
    ifindex: u32,
    /// Source address of replies; unspecified lets the kernel choose.
    source: Ipv4Addr,
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
        sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into()).map_err(bind_err)?;
        let sock = UdpSocket::from_std(sock.into()).map_err(bind_err)?;
        Ok(IfaceSocket { sock, interface: interface.to_string(), ifindex, source })
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

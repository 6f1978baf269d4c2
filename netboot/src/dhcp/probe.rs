//! Is another DHCP server on the segment? Two servers handing out addresses on one LAN fight
//! (clients take whichever answers first), so full mode looks before it serves.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::config::DhcpError;
use super::packet::{self, code};
use super::socket::{IfaceSocket, check_interface};
use crate::mac::MacAddr;

/// Broadcasts one DISCOVER (from port 68, on `interface` only) and waits up to `wait` for an
/// OFFER from anybody but `server`. Returns the rival's server id (or source address).
pub async fn probe_rival(
    interface: &str,
    server: Ipv4Addr,
    wait: Duration,
) -> Result<Option<Ipv4Addr>, DhcpError> {
    RivalProbe::open(interface, server)?.run(wait).await
}

/// The rival probe in two steps, so that only [`RivalProbe::open`] (binding port 68) needs
/// privileges and the packets are parsed by [`RivalProbe::run`] after `serve` dropped them.
pub struct RivalProbe {
    sock: IfaceSocket,
    interface: String,
    server: Ipv4Addr,
}

impl RivalProbe {
    pub fn open(interface: &str, server: Ipv4Addr) -> Result<RivalProbe, DhcpError> {
        let ifindex = check_interface(interface, server)?;
        let sock = IfaceSocket::bind(interface, ifindex, 68, server)?;
        Ok(RivalProbe { sock, interface: interface.to_string(), server })
    }

    pub async fn run(self, wait: Duration) -> Result<Option<Ipv4Addr>, DhcpError> {
        let RivalProbe { sock, interface, server } = self;
        let interface = interface.as_str();
        let mac = interface_mac(interface).unwrap_or(MacAddr([0x02, 0x6d, 0x6f, 0x73, 0x62, 0x74]));
        let xid = pseudo_random();
        let discover = packet::encode_request(
            xid,
            mac,
            0x8000,
            Ipv4Addr::UNSPECIFIED,
            &[(code::MESSAGE_TYPE, vec![1]), (code::PARAM_LIST, vec![1, 3, 6, 54])],
        );
        let io = |source| DhcpError::Io { interface: interface.to_string(), source };
        sock.send_to(&discover, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67)).await.map_err(io)?;
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = vec![0u8; 1500];
        loop {
            let got = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await;
            let Ok(got) = got else { return Ok(None) };
            let (n, from) = got.map_err(io)?;
            let Some(reply) = packet::decode_reply(&buf[..n]) else { continue };
            if reply.xid != xid {
                continue;
            }
            let sid = reply
                .options
                .get(&code::SERVER_ID)
                .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
                .map(Ipv4Addr::from)
                .unwrap_or(*from.ip());
            if sid != server {
                return Ok(Some(sid));
            }
        }
    }
}

fn interface_mac(interface: &str) -> Option<MacAddr> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    text.trim().parse().ok()
}

fn pseudo_random() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0);
    nanos.wrapping_mul(2_654_435_761) ^ std::process::id()
}

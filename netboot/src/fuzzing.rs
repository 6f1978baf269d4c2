//! Entry points for the coverage-guided fuzz targets in `fuzz/` (and the corpus replay test
//! that runs in `make test`): each takes arbitrary bytes and must never panic.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use crate::dhcp::{Allocator, BootFiles, DhcpConfig, DhcpMode, Handler, HostInfo, Port};
use crate::leases::LeaseTable;

fn dhcp_config(mode: DhcpMode) -> DhcpConfig {
    let server = Ipv4Addr::new(192, 168, 0, 254);
    let pool: Vec<Ipv4Addr> = (1..=20).map(|n| Ipv4Addr::new(192, 168, 0, n)).collect();
    let hosts: HashMap<Ipv4Addr, HostInfo> = pool
        .iter()
        .enumerate()
        .map(|(i, ip)| (*ip, HostInfo { hostname: format!("ws{:03}", ip.octets()[3]), node: i as u16 + 2 }))
        .collect();
    DhcpConfig {
        interface: "lab0".into(),
        server,
        prefix_len: 24,
        mode,
        pool,
        pinned: vec![("52:54:00:00:00:99".parse().expect("valid MAC"), Ipv4Addr::new(192, 168, 0, 20))],
        hosts,
        lease_time: Duration::from_secs(3600),
        bootp_dynamic: mode == DhcpMode::Full,
        new_macs: Default::default(),
        router: Some(server),
        dns: vec![server],
        boot: BootFiles::default(),
        lease_file: "/nonexistent".into(),
    }
}

/// The DHCP decoder and handler: the input is split at `0xff 0xff 0xfe` into up to 8
/// datagrams fed in order to one full-mode and one proxy-mode handler, on both ports, so
/// sequences (DISCOVER then REQUEST, DECLINE, RELEASE) are explored, not only single packets.
pub fn dhcp(data: &[u8]) {
    let mut full = handler(DhcpMode::Full);
    let mut proxy = handler(DhcpMode::Proxy);
    let src = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 7), 68);
    for (i, dgram) in split(data).enumerate().take(8) {
        let now = 1_800_000_000 + i as u64 * 7;
        for port in [Port::Dhcp, Port::PxeService] {
            for h in [&mut full, &mut proxy] {
                if let Some(action) = h.handle_datagram(dgram, src, port, now)
                    && let Some((bytes, _)) = &action.reply
                {
                    assert!(bytes.len() >= 300 && bytes[0] == 2, "malformed reply");
                }
            }
        }
    }
}

fn handler(mode: DhcpMode) -> Handler {
    let cfg = dhcp_config(mode);
    let alloc = Allocator::new(cfg.pool.clone(), &cfg.pinned, LeaseTable::default());
    Handler::new(cfg, alloc)
}

fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.windows(3).position(|w| w == [0xff, 0xff, 0xfe]) {
            Some(i) => {
                let (a, b) = rest.split_at(i);
                rest = &b[3..];
                Some(a)
            }
            None => Some(std::mem::take(&mut rest)),
        }
    })
}

/// The TFTP packet parser, option negotiation and name confinement.
pub fn tftp(data: &[u8]) {
    crate::tftp::parse_and_negotiate(data);
}

/// The lease-log parser: every record it returns must survive a write and re-read.
pub fn lease_log(data: &[u8]) {
    let (leases, _warnings) = crate::leases::parse_leases(Path::new("fuzz"), data);
    let text: String = leases.iter().map(|l| l.to_line()).collect();
    let (again, warnings) = crate::leases::parse_leases(Path::new("fuzz"), text.as_bytes());
    assert!(warnings.is_empty(), "a record we wrote does not read back: {warnings:?}");
    assert_eq!(again, leases, "records changed in a round trip");
}

/// The HTTP server: the input is everything one client sends on one connection (requests,
/// pipelined or not, then EOF), answered from a small root with a link to a file outside it.
/// Every answer must start with an HTTP/1.x status line, and the outside file's bytes must
/// never appear.
pub fn http(data: &[u8]) {
    struct Fixture {
        rt: tokio::runtime::Runtime,
        server: crate::http::InMemory,
    }
    static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    let f = FIXTURE.get_or_init(|| {
        // A new folder per process (created here, never one found in /tmp, where another user
        // could have planted links), kept for the process's lifetime: libFuzzer never returns.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("mosboot-fuzz-http-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).expect("a new fuzz folder");
        let root = dir.join("tftpboot");
        std::fs::create_dir_all(root.join("pxelinux.cfg")).expect("fuzz root");
        std::fs::write(dir.join("secret"), HTTP_SECRET).expect("fuzz secret");
        std::fs::write(root.join("vmlinuz"), (0..3000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>())
            .expect("fuzz file");
        std::fs::write(root.join("pxelinux.cfg/default"), b"DEFAULT node\n").expect("fuzz file");
        std::fs::write(root.join("empty"), b"").expect("fuzz file");
        let _ = std::os::unix::fs::symlink(dir.join("secret"), root.join("out"));
        let cfg = crate::http::HttpConfig { root, ..crate::http::HttpConfig::default() };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        Fixture { rt, server: crate::http::InMemory::new(cfg).expect("fuzz root") }
    });
    let out = f.rt.block_on(f.server.exchange(data));
    if !out.is_empty() {
        assert!(out.starts_with(b"HTTP/1."), "not a status line: {:?}", String::from_utf8_lossy(&out));
    }
    assert!(!out.windows(HTTP_SECRET.len()).any(|w| w == HTTP_SECRET), "served a file outside the root");
}

/// The content of the file outside the HTTP fuzz root.
const HTTP_SECRET: &[u8] = b"mosboot fuzz: outside the root";

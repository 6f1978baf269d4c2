//! mosboot-test-flood: the attacker of tests/security.rs, run inside a lab namespace.
//!
//! usage:
//!   mosboot-test-flood dhcp IF COUNT SEED     COUNT random MACs: even ones plain BOOTP, odd ones
//!                                             DISCOVER and then REQUEST whatever is offered
//!   mosboot-test-flood dora IF MAC TRIES      one honest client: prints `offer IP`, `ack IP`,
//!                                             `nak` or `noack` per try; exit 0 once ACKed
//!   mosboot-test-flood tftp SERVER COUNT RATE RRQs for pxelinux.0 from COUNT new ports, RATE per
//!                                             second, never answered (ports stay open)
//!   mosboot-test-flood rrq SERVER NAME [MODE] one RRQ with an arbitrary file name (and mode)
//!   mosboot-test-flood pxe4011 SERVER PORT    a PXE REQUEST with oversized options 97 and 82 to
//!                                             SERVER:4011 from PORT (0: any); prints the answer
//!   mosboot-test-flood decline IF MAC IP SERVER a DECLINE of IP by MAC (no lease of its own)

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use netboot::dhcp::packet::{ReplyView, code, decode_reply, encode_request};
use netboot::mac::MacAddr;

fn msg_type(v: &ReplyView) -> Option<u8> {
    v.options.get(&code::MESSAGE_TYPE).and_then(|t| t.first().copied())
}

/// A tiny xorshift, so a seed gives the same MACs every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn select(mac: MacAddr, xid: u32, offer: &ReplyView) -> Vec<u8> {
    let sid = offer.options.get(&code::SERVER_ID).cloned().unwrap_or_default();
    encode_request(
        xid,
        mac,
        0x8000,
        Ipv4Addr::UNSPECIFIED,
        &[
            (code::MESSAGE_TYPE, vec![3]),
            (code::SERVER_ID, sid),
            (code::REQUESTED_IP, offer.yiaddr.octets().to_vec()),
        ],
    )
}

fn flood_dhcp(iface: &str, count: u32, seed: u64) {
    let sock = harness::dhcp_client_socket(iface);
    sock.set_nonblocking(true).unwrap();
    let mut rng = seed | 1;
    let mut macs = std::collections::HashMap::new();
    let mut buf = [0u8; 1500];
    let (mut sent, mut offers, mut acks) = (0u32, 0u32, 0u32);
    let drain =
        |macs: &std::collections::HashMap<u32, MacAddr>, offers: &mut u32, acks: &mut u32, buf: &mut [u8]| {
            while let Ok((n, _)) = sock.recv_from(buf) {
                let Some(v) = decode_reply(&buf[..n]) else { continue };
                match (msg_type(&v), macs.get(&v.xid)) {
                    (Some(2), Some(&mac)) => {
                        *offers += 1;
                        let _ = sock.send_to(&select(mac, v.xid, &v), "255.255.255.255:67");
                    }
                    (Some(5) | None, _) => *acks += 1,
                    _ => {}
                }
            }
        };
    for i in 0..count {
        let r = next(&mut rng);
        let mut m = r.to_be_bytes();
        m[0] = 0x02; // locally administered, unicast
        let mac = MacAddr([m[0], m[1], m[2], m[3], m[4], m[5]]);
        let xid = (r >> 16) as u32 ^ i;
        let pkt = if i % 2 == 0 {
            encode_request(xid, mac, 0x8000, Ipv4Addr::UNSPECIFIED, &[])
        } else {
            macs.insert(xid, mac);
            encode_request(xid, mac, 0x8000, Ipv4Addr::UNSPECIFIED, &[(code::MESSAGE_TYPE, vec![1])])
        };
        if sock.send_to(&pkt, "255.255.255.255:67").is_ok() {
            sent += 1;
        }
        drain(&macs, &mut offers, &mut acks, &mut buf);
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        drain(&macs, &mut offers, &mut acks, &mut buf);
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("sent {sent} offers {offers} acks {acks}");
}

fn dora(iface: &str, mac: MacAddr, tries: u32) -> bool {
    let sock = harness::dhcp_client_socket(iface);
    let mut buf = [0u8; 1500];
    let xid = std::process::id().wrapping_mul(2_654_435_761);
    let wait = |sock: &UdpSocket, buf: &mut [u8], want: &[u8]| -> Option<ReplyView> {
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            sock.set_read_timeout(Some(
                end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
            ))
            .unwrap();
            if let Ok((n, _)) = sock.recv_from(buf)
                && let Some(v) = decode_reply(&buf[..n])
                && v.xid == xid
                && msg_type(&v).is_some_and(|t| want.contains(&t))
            {
                return Some(v);
            }
        }
        None
    };
    for _ in 0..tries {
        let discover =
            encode_request(xid, mac, 0x8000, Ipv4Addr::UNSPECIFIED, &[(code::MESSAGE_TYPE, vec![1])]);
        sock.send_to(&discover, "255.255.255.255:67").unwrap();
        let Some(offer) = wait(&sock, &mut buf, &[2]) else {
            println!("nooffer");
            continue;
        };
        println!("offer {}", offer.yiaddr);
        sock.send_to(&select(mac, xid, &offer), "255.255.255.255:67").unwrap();
        match wait(&sock, &mut buf, &[5, 6]) {
            Some(v) if msg_type(&v) == Some(5) => {
                println!("ack {}", v.yiaddr);
                return true;
            }
            Some(_) => println!("nak"),
            None => println!("noack"),
        }
    }
    false
}

fn rrq(name: &[u8], mode: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(name);
    p.push(0);
    p.extend_from_slice(mode);
    p.push(0);
    p
}

fn flood_tftp(server: &str, count: u32, rate: u32) {
    let mut keep = Vec::new();
    let start = Instant::now();
    for i in 0..count {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        let _ = s.send_to(&rrq(b"pxelinux.0", b"octet"), (server, 69));
        keep.push(s);
        let due = start + Duration::from_secs_f64(f64::from(i + 1) / f64::from(rate.max(1)));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    println!("sent {count}");
    // Hold the ports open (never ACK) until killed.
    std::thread::sleep(Duration::from_secs(3600));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_else(|| panic!("missing argument {i}; see usage"));
    match arg(0).as_str() {
        "dhcp" => flood_dhcp(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap()),
        "dora" => {
            let ok = dora(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap());
            std::process::exit(if ok { 0 } else { 1 });
        }
        "tftp" => flood_tftp(&arg(1), arg(2).parse().unwrap(), arg(3).parse().unwrap()),
        "rrq" => {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            let mode = args.get(3).map(String::as_str).unwrap_or("octet");
            s.send_to(&rrq(arg(2).as_bytes(), mode.as_bytes()), (arg(1).as_str(), 69)).unwrap();
            let mut buf = [0u8; 1600];
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.recv_from(&mut buf);
        }
        "pxe4011" => {
            let s = UdpSocket::bind(("0.0.0.0", arg(2).parse::<u16>().unwrap())).unwrap();
            let mac: MacAddr = "02:00:00:00:40:11".parse().unwrap();
            let req = encode_request(
                4011,
                mac,
                0,
                Ipv4Addr::UNSPECIFIED,
                &[
                    (code::MESSAGE_TYPE, vec![3]),
                    (code::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
                    (code::CLIENT_UUID, vec![0x55; 250]),
                    (code::RELAY_AGENT, vec![0x66; 250]),
                ],
            );
            s.send_to(&req, (arg(1).as_str(), 4011)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut buf = [0u8; 2000];
            match s.recv_from(&mut buf) {
                Ok((n, _)) => {
                    let v = decode_reply(&buf[..n]);
                    let has = |c| v.as_ref().is_some_and(|v| v.options.contains_key(&c));
                    println!(
                        "reply {n} bytes uuid={} relay={}",
                        has(code::CLIENT_UUID),
                        has(code::RELAY_AGENT)
                    );
                }
                Err(_) => println!("noreply"),
            }
        }
        "decline" => {
            let sock = harness::dhcp_client_socket(&arg(1));
            let mac: MacAddr = arg(2).parse().unwrap();
            let ip: Ipv4Addr = arg(3).parse().unwrap();
            let sid: Ipv4Addr = arg(4).parse().unwrap();
            let d = encode_request(
                77,
                mac,
                0,
                Ipv4Addr::UNSPECIFIED,
                &[
                    (code::MESSAGE_TYPE, vec![4]),
                    (code::SERVER_ID, sid.octets().to_vec()),
                    (code::REQUESTED_IP, ip.octets().to_vec()),
                ],
            );
            sock.send_to(&d, "255.255.255.255:67").unwrap();
        }
        other => panic!("unknown mode {other}"),
    }
}

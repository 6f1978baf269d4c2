//! Handler tests on real wire bytes: what an old ROM, dhclient or iPXE would see.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use proptest::prelude::*;

use super::packet::{self, ReplyView, code, decode_reply, encode_request};
use super::*;
use crate::leases::LeaseTable;
use crate::mac::MacAddr;

const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 254);
const NOW: u64 = 1_800_000_000;

fn cfg(mode: DhcpMode) -> DhcpConfig {
    let pool: Vec<Ipv4Addr> = (1..=10).map(|n| Ipv4Addr::new(192, 168, 0, n)).collect();
    let mut hosts = HashMap::new();
    for (i, ip) in pool.iter().enumerate() {
        hosts.insert(*ip, HostInfo { hostname: format!("ws{:03}", ip.octets()[3]), node: i as u16 + 2 });
    }
    hosts.insert(Ipv4Addr::new(192, 168, 0, 101), HostInfo { hostname: "mosix1".into(), node: 12 });
    DhcpConfig {
        interface: "lab0".into(),
        server: SERVER,
        prefix_len: 24,
        mode,
        pool,
        pinned: vec![(mac(0x99), Ipv4Addr::new(192, 168, 0, 101))],
        hosts,
        lease_time: Duration::from_secs(3600),
        bootp_dynamic: false,
        new_macs: NewMacLimits::default(),
        router: Some(SERVER),
        dns: vec![SERVER],
        boot: BootFiles::default(),
        lease_file: "/nonexistent".into(),
    }
}

fn handler(mode: DhcpMode) -> Handler {
    handler_with(mode, &[])
}

/// A handler whose lease log already binds each (MAC, address), as after earlier boots.
fn handler_with(mode: DhcpMode, held: &[(MacAddr, Ipv4Addr)]) -> Handler {
    let c = cfg(mode);
    let mut table = LeaseTable::default();
    for &(mac, ip) in held {
        table.apply(crate::leases::Lease {
            mac,
            ip,
            hostname: String::new(),
            expires: NOW + 3600,
            state: crate::leases::LeaseState::Bound,
            at: NOW - 100,
        });
    }
    let alloc = Allocator::new(c.pool.clone(), &c.pinned, table);
    Handler::new(c, alloc)
}

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0x12, 0x34, n])
}

fn src() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68)
}

fn msg(t: u8, m: MacAddr, extra: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut opts = vec![(code::MESSAGE_TYPE, vec![t])];
    opts.extend_from_slice(extra);
    encode_request(0x1234_5678, m, 0, Ipv4Addr::UNSPECIFIED, &opts)
}

fn reply(a: &Action) -> (ReplyView, Vec<u8>, Dest) {
    let (bytes, dest) = a.reply.clone().expect("a reply");
    (decode_reply(&bytes).expect("decodable reply"), bytes, dest)
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 0, n)
}

#[test]
fn dora_gives_lowest_address_hostname_and_boot_file() {
    let mut h = handler(DhcpMode::Full);
    let offer = h.handle_datagram(&msg(1, mac(1), &[]), src(), Port::Dhcp, NOW).unwrap();
    let (v, bytes, dest) = reply(&offer);
    assert!(bytes.len() >= 300);
    assert_eq!(dest, Dest::Broadcast);
    assert_eq!(v.yiaddr, ip(1));
    assert_eq!(v.siaddr, SERVER);
    assert_eq!(v.file, b"pxelinux.0");
    assert_eq!(bytes[108 + 10], 0, "file is NUL-terminated in the fixed field");
    assert_eq!(&bytes[240..243], &[53, 1, 2], "option 53 comes first");
    assert_eq!(v.options[&code::HOSTNAME], b"ws001");
    assert_eq!(v.options[&code::BOOTFILE], b"pxelinux.0");
    assert_eq!(v.options[&code::TFTP_SERVER], b"192.168.0.254");
    assert_eq!(v.options[&code::SERVER_ID], SERVER.octets());
    assert_eq!(v.options[&code::SUBNET_MASK], [255, 255, 255, 0]);
    assert_eq!(v.options[&code::BROADCAST], [192, 168, 0, 255]);
    assert_eq!(v.options[&code::LEASE_TIME], 3600u32.to_be_bytes());
    assert_eq!(v.options[&code::T1], 1800u32.to_be_bytes());
    assert_eq!(v.options[&code::T2], 3150u32.to_be_bytes());
    assert!(offer.commit.is_none());

    let req = msg(
        3,
        mac(1),
        &[(code::SERVER_ID, SERVER.octets().to_vec()), (code::REQUESTED_IP, ip(1).octets().to_vec())],
    );
    let ack = h.handle_datagram(&req, src(), Port::Dhcp, NOW).unwrap();
    let (v, _, _) = reply(&ack);
    assert_eq!(v.options[&code::MESSAGE_TYPE], [5]);
    assert_eq!(v.yiaddr, ip(1));
    let lease = ack.commit.expect("ACK waits for its lease record");
    assert_eq!((lease.ip, lease.hostname.as_str(), lease.expires), (ip(1), "ws001", NOW + 3600));
    assert_eq!(ack.note.unwrap().node, Some(2));

    // The next client gets the next address; the first keeps its own on reboot.
    let o2 = h.handle_datagram(&msg(1, mac(2), &[]), src(), Port::Dhcp, NOW).unwrap();
    assert_eq!(reply(&o2).0.yiaddr, ip(2));
    let o1 = h.handle_datagram(&msg(1, mac(1), &[]), src(), Port::Dhcp, NOW + 99_999).unwrap();
    assert_eq!(reply(&o1).0.yiaddr, ip(1));
}

#[test]
fn pxe_and_ipxe_clients_get_their_files_and_echoes() {
    let mut h = handler(DhcpMode::Full);
    let uuid = vec![0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
    let pxe = msg(
        1,
        mac(3),
        &[
            (code::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            (code::CLIENT_UUID, uuid.clone()),
        ],
    );
    let (v, _, _) = reply(&h.handle_datagram(&pxe, src(), Port::Dhcp, NOW).unwrap());
    assert_eq!(v.options[&code::VENDOR_CLASS], b"PXEClient");
    assert_eq!(v.options[&code::VENDOR_SPECIFIC], [6, 1, 8, 255]);
    assert_eq!(v.options[&code::CLIENT_UUID], uuid);
    assert_eq!(v.file, b"pxelinux.0");

    let ipxe = msg(
        1,
        mac(3),
        &[
            (code::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            (code::USER_CLASS, b"iPXE".to_vec()),
        ],
    );
    let (v, _, _) = reply(&h.handle_datagram(&ipxe, src(), Port::Dhcp, NOW).unwrap());
    assert_eq!(v.file, b"boot.ipxe");
    let ipxe175 = msg(1, mac(3), &[(code::IPXE_ENCAP, vec![1, 1, 1])]);
    let (v, _, _) = reply(&h.handle_datagram(&ipxe175, src(), Port::Dhcp, NOW).unwrap());
    assert_eq!(v.file, b"boot.ipxe");
    assert!(!v.options.contains_key(&code::VENDOR_CLASS), "no PXEClient echo to non-PXE clients");
}

#[test]
fn naks_foreign_and_taken_addresses_and_honours_pins() {
    let mut h = handler_with(DhcpMode::Full, &[(mac(1), ip(5)), (mac(2), ip(7))]);
    // INIT-REBOOT for an address on another network.
    let r = msg(3, mac(1), &[(code::REQUESTED_IP, vec![10, 0, 0, 5])]);
    let (v, _, d) = reply(&h.handle_datagram(&r, src(), Port::Dhcp, NOW).unwrap());
    assert_eq!((v.options[&code::MESSAGE_TYPE].as_slice(), d), (&[6u8][..], Dest::Broadcast));
    // Someone else's pinned address.
    let r = msg(3, mac(1), &[(code::REQUESTED_IP, ip(101).octets().to_vec())]);
    assert_eq!(
        reply(&h.handle_datagram(&r, src(), Port::Dhcp, NOW).unwrap()).0.options[&code::MESSAGE_TYPE],
        [6]
    );
    // The pinned MAC gets its address.
    let (v, _, _) = reply(&h.handle_datagram(&msg(1, mac(0x99), &[]), src(), Port::Dhcp, NOW).unwrap());
    assert_eq!((v.yiaddr, v.options[&code::HOSTNAME].as_slice()), (ip(101), &b"mosix1"[..]));
    // An address leased to someone else.
    let take = msg(3, mac(1), &[(code::REQUESTED_IP, ip(5).octets().to_vec())]);
    assert!(h.handle_datagram(&take, src(), Port::Dhcp, NOW).unwrap().commit.is_some());
    let steal = msg(3, mac(2), &[(code::REQUESTED_IP, ip(5).octets().to_vec())]);
    assert_eq!(
        reply(&h.handle_datagram(&steal, src(), Port::Dhcp, NOW).unwrap()).0.options[&code::MESSAGE_TYPE],
        [6]
    );
    // A REQUEST for another server's offer is silence (and frees our offer).
    let other = msg(
        3,
        mac(2),
        &[(code::SERVER_ID, vec![192, 168, 0, 1]), (code::REQUESTED_IP, ip(2).octets().to_vec())],
    );
    assert!(h.handle_datagram(&other, src(), Port::Dhcp, NOW).is_none());
}

#[test]
fn renew_is_unicast_and_inform_has_no_lease() {
    let mut h = handler_with(DhcpMode::Full, &[(mac(1), ip(4))]);
    let take = msg(3, mac(1), &[(code::REQUESTED_IP, ip(4).octets().to_vec())]);
    h.handle_datagram(&take, src(), Port::Dhcp, NOW).unwrap();
    let renew = encode_request(9, mac(1), 0, ip(4), &[(code::MESSAGE_TYPE, vec![3])]);
    let a = h.handle_datagram(&renew, SocketAddrV4::new(ip(4), 68), Port::Dhcp, NOW).unwrap();
    let (v, _, d) = reply(&a);
    assert_eq!((v.yiaddr, d), (ip(4), Dest::Unicast(SocketAddrV4::new(ip(4), 68))));
    let inform = encode_request(9, mac(1), 0, ip(4), &[(code::MESSAGE_TYPE, vec![8])]);
    let a = h.handle_datagram(&inform, SocketAddrV4::new(ip(4), 68), Port::Dhcp, NOW).unwrap();
    let (v, _, _) = reply(&a);
    assert_eq!(v.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert!(!v.options.contains_key(&code::LEASE_TIME));
    assert!(a.commit.is_none());
}

#[test]
fn decline_quarantines_and_release_frees() {
    let mut h = handler_with(DhcpMode::Full, &[(mac(1), ip(1)), (mac(8), ip(6))]);
    let take = msg(3, mac(1), &[(code::REQUESTED_IP, ip(1).octets().to_vec())]);
    h.handle_datagram(&take, src(), Port::Dhcp, NOW).unwrap();
    let decline = msg(
        4,
        mac(1),
        &[(code::SERVER_ID, SERVER.octets().to_vec()), (code::REQUESTED_IP, ip(1).octets().to_vec())],
    );
    let a = h.handle_datagram(&decline, src(), Port::Dhcp, NOW).unwrap();
    assert!(a.reply.is_none() && a.commit.is_some());
    // Nobody gets .1 during the quarantine, not even the decliner.
    assert_eq!(
        reply(&h.handle_datagram(&msg(1, mac(1), &[]), src(), Port::Dhcp, NOW).unwrap()).0.yiaddr,
        ip(2)
    );
    assert_eq!(
        reply(&h.handle_datagram(&msg(1, mac(7), &[]), src(), Port::Dhcp, NOW).unwrap()).0.yiaddr,
        ip(3)
    );

    let take = msg(3, mac(8), &[(code::REQUESTED_IP, ip(6).octets().to_vec())]);
    h.handle_datagram(&take, src(), Port::Dhcp, NOW).unwrap();
    let release = encode_request(
        1,
        mac(8),
        0,
        ip(6),
        &[(code::MESSAGE_TYPE, vec![7]), (code::SERVER_ID, SERVER.octets().to_vec())],
    );
    let a = h.handle_datagram(&release, SocketAddrV4::new(ip(6), 68), Port::Dhcp, NOW).unwrap();
    assert_eq!(a.commit.unwrap().state, crate::leases::LeaseState::Released);
    // The releasing MAC still gets its address back first.
    assert_eq!(
        reply(&h.handle_datagram(&msg(1, mac(8), &[]), src(), Port::Dhcp, NOW + 5).unwrap()).0.yiaddr,
        ip(6)
    );
}

#[test]
fn bootp_client_gets_a_bootreply_without_dhcp_options() {
    let mut c = cfg(DhcpMode::Full);
    c.bootp_dynamic = true;
    let mut h = Handler::new(c.clone(), Allocator::new(c.pool.clone(), &c.pinned, LeaseTable::default()));
    let req = encode_request(5, mac(4), 0, Ipv4Addr::UNSPECIFIED, &[]);
    let a = h.handle_datagram(&req, src(), Port::Dhcp, NOW).unwrap();
    let (bytes, _) = a.reply.clone().unwrap();
    assert_eq!(bytes.len(), 300);
    let v = decode_reply(&bytes).unwrap();
    assert_eq!(v.yiaddr, ip(1));
    assert!(!v.options.contains_key(&code::MESSAGE_TYPE) && !v.options.contains_key(&code::LEASE_TIME));
    assert_eq!(v.options[&code::HOSTNAME], b"ws001");
    assert_eq!(a.commit.unwrap().expires, NOW + 3600, "BOOTP binds for lease_time, never longer");
}

#[test]
fn bootp_pinned_serves_only_pinned_macs() {
    let mut h = handler(DhcpMode::Full);
    let req = encode_request(5, mac(4), 0, Ipv4Addr::UNSPECIFIED, &[]);
    assert!(h.handle_datagram(&req, src(), Port::Dhcp, NOW).is_none());
    let req = encode_request(5, mac(0x99), 0, Ipv4Addr::UNSPECIFIED, &[]);
    let a = h.handle_datagram(&req, src(), Port::Dhcp, NOW).unwrap();
    assert_eq!(reply(&a).0.yiaddr, ip(101));
    assert_eq!(a.commit.unwrap().expires, NOW + 3600);
}

#[test]
fn requests_for_addresses_never_offered_are_not_bound() {
    let mut h = handler(DhcpMode::Full);
    // INIT-REBOOT from a MAC we have no record of: silence (RFC 2131 4.3.2).
    let r = msg(3, mac(1), &[(code::REQUESTED_IP, ip(5).octets().to_vec())]);
    assert!(h.handle_datagram(&r, src(), Port::Dhcp, NOW).is_none());
    // SELECTING an address we never offered to it: NAK, nothing committed.
    let r = msg(
        3,
        mac(1),
        &[(code::SERVER_ID, SERVER.octets().to_vec()), (code::REQUESTED_IP, ip(5).octets().to_vec())],
    );
    let a = h.handle_datagram(&r, src(), Port::Dhcp, NOW).unwrap();
    assert!(a.commit.is_none());
    assert_eq!(reply(&a).0.options[&code::MESSAGE_TYPE], [6]);
    // RENEWING a lease it never had: NAK.
    let renew = encode_request(9, mac(1), 0, ip(4), &[(code::MESSAGE_TYPE, vec![3])]);
    let a = h.handle_datagram(&renew, SocketAddrV4::new(ip(4), 68), Port::Dhcp, NOW).unwrap();
    assert!(a.commit.is_none());
}

#[test]
fn new_macs_are_rate_limited_known_ones_are_not() {
    let c = cfg(DhcpMode::Full);
    let pool: Vec<Ipv4Addr> = (1..=400u32).map(|n| Ipv4Addr::from(0x0a00_0000 + n)).collect();
    let mut c2 = c.clone();
    c2.pool = pool.clone();
    let mut h = Handler::new(c2, Allocator::new(pool, &[], LeaseTable::default()));
    let flood_mac = |n: u64| MacAddr([2, 1, 0, 0, (n >> 8) as u8, n as u8]);
    let answered = (0..350)
        .filter(|&n| h.handle_datagram(&msg(1, flood_mac(n), &[]), src(), Port::Dhcp, NOW).is_some())
        .count();
    assert_eq!(answered as u64, NEW_MAC_BURST);
    // A MAC that was offered an address is known: it is answered again.
    assert!(h.handle_datagram(&msg(1, flood_mac(0), &[]), src(), Port::Dhcp, NOW).is_some());
    // One second later the bucket has refilled a little.
    let later = (350..400)
        .filter(|&n| h.handle_datagram(&msg(1, flood_mac(n), &[]), src(), Port::Dhcp, NOW + 1).is_some())
        .count();
    assert_eq!(later as u64, NEW_MACS_PER_SEC);
}

/// `[serve] dhcp_new_mac_burst`/`dhcp_new_macs_per_second`: a raised limit answers a lab
/// bigger than the default burst in one pass; a reload can lower it again without refilling
/// the bucket.
#[test]
fn a_configured_new_mac_limit_takes_effect_and_reloads() {
    let pool: Vec<Ipv4Addr> = (1..=2000u32).map(|n| Ipv4Addr::from(0x0a00_0000 + n)).collect();
    let mut c = cfg(DhcpMode::Full);
    c.pool = pool.clone();
    c.new_macs = NewMacLimits { burst: 1000, per_sec: 50 };
    let mut h = Handler::new(c.clone(), Allocator::new(pool, &[], LeaseTable::default()));
    let flood_mac = |n: u64| MacAddr([2, 2, 0, 0, (n >> 8) as u8, n as u8]);
    let answered = |h: &mut Handler, macs: std::ops::Range<u64>, now: u64| {
        macs.filter(|&n| h.handle_datagram(&msg(1, flood_mac(n), &[]), src(), Port::Dhcp, now).is_some())
            .count() as u64
    };
    const { assert!(900 > NEW_MAC_BURST) };
    assert_eq!(answered(&mut h, 0..900, NOW), 900, "all 900 new MACs answered at once");
    assert_eq!(answered(&mut h, 900..1200, NOW), 100, "then the burst of 1000 is used up");
    assert_eq!(answered(&mut h, 1200..1300, NOW + 1), 50, "and 50 a second come back");
    // A reload to the defaults: the bucket is empty and refills at 20 a second.
    h.reconfigure(DhcpConfig { new_macs: NewMacLimits::default(), ..c });
    assert_eq!(answered(&mut h, 1300..1400, NOW + 1), 0);
    assert_eq!(answered(&mut h, 1400..1500, NOW + 2), NEW_MACS_PER_SEC);
}

#[test]
fn relayed_requests_from_our_subnet_go_back_to_the_relay() {
    let mut h = handler(DhcpMode::Full);
    let mut req = msg(1, mac(5), &[]);
    req[24..28].copy_from_slice(&[192, 168, 0, 200]);
    let (_, _, d) = reply(&h.handle_datagram(&req, SocketAddrV4::new(ip(200), 67), Port::Dhcp, NOW).unwrap());
    assert_eq!(d, Dest::Unicast(SocketAddrV4::new(ip(200), 67)));
    req[24..28].copy_from_slice(&[10, 1, 1, 1]);
    assert!(
        h.handle_datagram(&req, SocketAddrV4::new(Ipv4Addr::new(10, 1, 1, 1), 67), Port::Dhcp, NOW).is_none()
    );
}

#[test]
fn fifty_concurrent_discovers_get_distinct_offers() {
    let c = cfg(DhcpMode::Full);
    let pool: Vec<Ipv4Addr> = (1..=60).map(ip).collect();
    let mut c2 = c.clone();
    c2.pool = pool.clone();
    let mut h = Handler::new(c2, Allocator::new(pool, &[], LeaseTable::default()));
    let mut seen = std::collections::HashSet::new();
    for n in 0..50 {
        let (v, _, _) = reply(&h.handle_datagram(&msg(1, mac(n), &[]), src(), Port::Dhcp, NOW).unwrap());
        assert!(seen.insert(v.yiaddr), "{} offered twice", v.yiaddr);
    }
}

#[test]
fn proxy_mode_answers_only_pxe_clients_and_never_gives_addresses() {
    let mut h = handler(DhcpMode::Proxy);
    assert!(h.handle_datagram(&msg(1, mac(1), &[]), src(), Port::Dhcp, NOW).is_none());
    let pxe_opts = [(code::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001".to_vec())];
    let (v, bytes, d) =
        reply(&h.handle_datagram(&msg(1, mac(1), &pxe_opts), src(), Port::Dhcp, NOW).unwrap());
    assert_eq!(
        (v.yiaddr, v.siaddr, v.file.as_slice(), d),
        (Ipv4Addr::UNSPECIFIED, SERVER, &b"pxelinux.0"[..], Dest::Broadcast)
    );
    assert!(bytes.len() >= 300);
    assert_eq!(v.options[&code::VENDOR_CLASS], b"PXEClient");
    assert!(!v.options.contains_key(&code::LEASE_TIME));
    // REQUEST on 67 belongs to the real DHCP server.
    assert!(h.handle_datagram(&msg(3, mac(1), &pxe_opts), src(), Port::Dhcp, NOW).is_none());
    let req = encode_request(
        3,
        mac(1),
        0,
        Ipv4Addr::new(192, 168, 0, 50),
        &[(code::MESSAGE_TYPE, vec![3]), pxe_opts[0].clone()],
    );
    let from = SocketAddrV4::new(Ipv4Addr::new(192, 168, 0, 50), 68);
    let (v, _, d) = reply(&h.handle_datagram(&req, from, Port::PxeService, NOW).unwrap());
    assert_eq!(
        (v.options[&code::MESSAGE_TYPE].as_slice(), v.yiaddr, d),
        (&[5u8][..], Ipv4Addr::UNSPECIFIED, Dest::Unicast(from))
    );
}

#[test]
fn one_bad_option_does_not_hide_the_rest_and_overload_is_read() {
    // A 3-byte "subnet mask" (invalid for dhcproto) before the PXE vendor class.
    let req =
        msg(1, mac(1), &[(code::SUBNET_MASK, vec![1, 2, 3]), (code::VENDOR_CLASS, b"PXEClient".to_vec())]);
    assert!(packet::decode(&req).unwrap().is_pxe());
    // Option overload: 60 lives in the file field.
    let mut req = msg(1, mac(1), &[(code::OVERLOAD, vec![1])]);
    let opt = [60u8, 9, b'P', b'X', b'E', b'C', b'l', b'i', b'e', b'n', b't', 255];
    req[108..108 + opt.len()].copy_from_slice(&opt);
    assert!(packet::decode(&req).unwrap().is_pxe());
}

#[test]
fn over_long_boot_file_is_an_error_not_a_panic() {
    let mut c = cfg(DhcpMode::Full);
    c.boot.pxe = "x".repeat(200);
    let alloc = Allocator::new(c.pool.clone(), &[], LeaseTable::default());
    let mut h = Handler::new(c, alloc);
    let a = h.handle_datagram(&msg(1, mac(1), &[]), src(), Port::Dhcp, NOW).unwrap();
    assert!(a.reply.is_none());
}

fn valid_requests() -> impl Strategy<Value = Vec<u8>> {
    let host = prop::collection::vec(any::<u8>(), 0..600);
    (1u8..=8, host, any::<u8>(), prop::bool::ANY).prop_map(|(t, host, m, pxe)| {
        let mut opts = vec![(code::HOSTNAME, host)];
        if pxe {
            opts.push((code::VENDOR_CLASS, b"PXEClient:Arch:00000".to_vec()));
        }
        msg(t, mac(m), &opts)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes: never a panic, never a reply unless they happen to form a valid request.
    #[test]
    fn arbitrary_bytes_never_panic_and_get_no_reply(data in prop::collection::vec(any::<u8>(), 0..700)) {
        for mode in [DhcpMode::Full, DhcpMode::Proxy] {
            let mut h = handler(mode);
            let a = h.handle_datagram(&data, src(), Port::Dhcp, NOW);
            if packet::decode(&data).is_err() {
                prop_assert!(a.is_none());
            }
        }
    }

    /// Truncating a valid request anywhere before its END option makes it garbage: no reply.
    #[test]
    fn truncated_requests_get_no_reply(req in valid_requests(), cut in 0usize..700) {
        let end = 240 + req[240..].iter().position(|&b| b == 255).unwrap_or(0);
        let cut = cut.min(end);
        let mut h = handler(DhcpMode::Full);
        prop_assert!(h.handle_datagram(&req[..cut], src(), Port::Dhcp, NOW).is_none());
    }

    /// The fixed header is read and written by hand; dhcproto's codec is the reference: the
    /// same fields from any request, the same 236 bytes for any reply.
    #[test]
    fn fixed_header_matches_dhcproto(head in prop::collection::vec(any::<u8>(), 236), sname in prop::collection::vec(1u8.., 0..64), file in prop::collection::vec(1u8.., 0..128)) {
        use dhcproto::{Decodable, Encodable};
        let mut data = head;
        data[..3].copy_from_slice(&[1, 1, 6]);
        data.extend_from_slice(&[99, 130, 83, 99, code::END]);
        data.resize(300, 0);
        let req = packet::decode(&data).unwrap();
        let msg = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&data)).unwrap();
        prop_assert_eq!((req.xid, req.secs, req.flags, req.hops), (msg.xid(), msg.secs(), u16::from(msg.flags()), msg.hops()));
        prop_assert_eq!((req.ciaddr, req.giaddr, &req.chaddr[..6], &req.chaddr[..]), (msg.ciaddr(), msg.giaddr(), msg.chaddr(), &data[28..44]));
        prop_assert_eq!(&req.mac.0[..], msg.chaddr());

        let mut reply = packet::Reply::to(&req, None);
        reply.hops = req.hops;
        (reply.ciaddr, reply.yiaddr, reply.siaddr) = (msg.yiaddr(), msg.siaddr(), req.ciaddr);
        reply.sname = sname[..sname.len().min(63)].to_vec();
        reply.file = file[..file.len().min(127)].to_vec();
        let mut want = dhcproto::v4::Message::new_with_id(reply.xid, reply.ciaddr, reply.yiaddr, reply.siaddr, reply.giaddr, &reply.chaddr[..6]);
        want.set_opcode(dhcproto::v4::Opcode::BootReply).set_hops(reply.hops).set_flags(reply.flags.into());
        if !reply.sname.is_empty() {
            want.set_sname(&reply.sname);
        }
        if !reply.file.is_empty() {
            want.set_fname(&reply.file);
        }
        let mut want_bytes = Vec::new();
        want.encode(&mut dhcproto::Encoder::new(&mut want_bytes)).unwrap();
        let got = reply.encode().unwrap();
        prop_assert_eq!(&got[..236], &want_bytes[..236]);
    }

    /// Corrupted option lengths, overload flags and bytes anywhere: no panic; a reply only for
    /// what still decodes, and every reply is a well-formed, padded BOOTREPLY.
    #[test]
    fn mutated_requests_never_panic(req in valid_requests(), flips in prop::collection::vec((0usize..700, any::<u8>()), 1..8), overload in 0u8..5) {
        let mut data = req;
        for (pos, val) in flips {
            let at = pos % data.len();
            data[at] = val;
        }
        if overload > 0 {
            data.splice(240..240, [52u8, 1, overload]);
        }
        for port in [Port::Dhcp, Port::PxeService] {
            for mode in [DhcpMode::Full, DhcpMode::Proxy] {
                let mut h = handler(mode);
                let a = h.handle_datagram(&data, src(), port, NOW);
                if packet::decode(&data).is_err() {
                    prop_assert!(a.is_none());
                }
                if let Some((bytes, _)) = a.and_then(|a| a.reply) {
                    prop_assert!(bytes.len() >= 300 && bytes[0] == 2);
                }
            }
        }
    }
}

#[test]
fn spoofed_decline_ciaddr_and_oversized_echoes_are_refused() {
    let mut h = handler_with(DhcpMode::Full, &[(mac(1), ip(1))]);
    // DECLINE of a free address, and of someone else's: ignored.
    for (m, i) in [(mac(2), ip(3)), (mac(2), ip(1))] {
        let d = msg(
            4,
            m,
            &[(code::SERVER_ID, SERVER.octets().to_vec()), (code::REQUESTED_IP, i.octets().to_vec())],
        );
        assert!(h.handle_datagram(&d, src(), Port::Dhcp, NOW).is_none());
    }
    // A spoofed ciaddr (not held by this MAC, or off-subnet) gets a broadcast, never a unicast.
    for ci in [ip(1), Ipv4Addr::new(8, 8, 8, 8)] {
        let inform = encode_request(9, mac(2), 0, ci, &[(code::MESSAGE_TYPE, vec![8])]);
        if let Some(a) = h.handle_datagram(&inform, SocketAddrV4::new(ci, 68), Port::Dhcp, NOW) {
            assert_eq!(reply(&a).2, Dest::Broadcast);
        }
    }
    // Option 97 of the wrong shape and 82 without a relay are not echoed.
    let d = msg(1, mac(5), &[(code::CLIENT_UUID, vec![7; 250]), (code::RELAY_AGENT, vec![1; 250])]);
    let (v, _, _) = reply(&h.handle_datagram(&d, src(), Port::Dhcp, NOW).unwrap());
    assert!(!v.options.contains_key(&code::CLIENT_UUID) && !v.options.contains_key(&code::RELAY_AGENT));
}

#[test]
fn port_4011_answers_only_plausible_pxe_sources() {
    let mut h = handler(DhcpMode::Proxy);
    let pxe = (code::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001".to_vec());
    let req = encode_request(3, mac(1), 0, ip(50), &[(code::MESSAGE_TYPE, vec![3]), pxe]);
    for bad in [
        SocketAddrV4::new(ip(50), 5353),
        SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 68),
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    ] {
        assert!(h.handle_datagram(&req, bad, Port::PxeService, NOW).is_none(), "{bad}");
    }
    assert!(h.handle_datagram(&req, SocketAddrV4::new(ip(50), 68), Port::PxeService, NOW).is_some());
}

/// A reload (new pins and hostnames) keeps every lease and never moves what the sockets were
/// bound for.
#[test]
fn reconfigure_keeps_leases_and_applies_new_pins() {
    let mut h = handler_with(DhcpMode::Full, &[(mac(1), ip(3))]);
    let mut next = cfg(DhcpMode::Full);
    next.pinned.push((mac(7), ip(50)));
    next.hosts.insert(ip(50), HostInfo { hostname: "newpin".into(), node: 60 });
    next.interface = "other0".into();
    h.reconfigure(next);
    assert_eq!(h.config().interface, "lab0", "the bound interface stays");

    let o = h.handle_datagram(&msg(1, mac(7), &[]), src(), Port::Dhcp, NOW).unwrap();
    let (v, _, _) = reply(&o);
    assert_eq!((v.yiaddr, v.options[&code::HOSTNAME].as_slice()), (ip(50), b"newpin".as_slice()));
    // The earlier client still gets the address it holds.
    let o = h.handle_datagram(&msg(1, mac(1), &[]), src(), Port::Dhcp, NOW).unwrap();
    assert_eq!(reply(&o).0.yiaddr, ip(3));
}

//! mosboot-test-pxeclient: behaves like a PXE ROM beside a proxyDHCP server, on one interface.
//! DISCOVER (option 60 PXEClient) -> collect OFFERs -> REQUEST the address offer -> ACK ->
//! configure the address -> REQUEST boot information from the proxy on UDP 4011.
//! Prints one line per step: `offer <server-id> yiaddr=<ip> file=<file>`, `ack ...`,
//! `proxyack <server> file=<file> siaddr=<ip>`. With `--discover-only`, stops after the offers.
//!
//! usage: mosboot-test-pxeclient IF MAC [--discover-only] [--wait-ms N]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use netboot::dhcp::packet::{code, encode_request};
use netboot::mac::MacAddr;

use harness::{dhcp_replies as collect, dhcp_server_id as sid};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iface = &args[0];
    let mac: MacAddr = args[1].parse().unwrap();
    let wait =
        args.iter().position(|a| a == "--wait-ms").map(|i| args[i + 1].parse().unwrap()).unwrap_or(2000);
    let wait = Duration::from_millis(wait);
    let sock = harness::dhcp_client_socket(iface);
    let vendor = (code::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001".to_vec());
    let arch = (code::CLIENT_ARCH, vec![0, 0]);
    let uuid = (code::CLIENT_UUID, vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    let xid = std::process::id().wrapping_mul(7919);
    let discover = encode_request(
        xid,
        mac,
        0x8000,
        Ipv4Addr::UNSPECIFIED,
        &[(code::MESSAGE_TYPE, vec![1]), vendor.clone(), arch.clone(), uuid.clone()],
    );
    let offers = harness::dhcp_discover(&sock, &discover, xid, wait);
    for o in &offers {
        println!(
            "offer {} yiaddr={} file={} siaddr={}",
            sid(o),
            o.yiaddr,
            String::from_utf8_lossy(&o.file),
            o.siaddr
        );
    }
    if args.iter().any(|a| a == "--discover-only") {
        return;
    }
    let Some(addr_offer) = offers.iter().find(|o| !o.yiaddr.is_unspecified()) else {
        println!("no address offer");
        std::process::exit(1);
    };
    let Some(proxy) = offers.iter().find(|o| o.yiaddr.is_unspecified() && !o.file.is_empty()) else {
        println!("no proxy offer");
        std::process::exit(1);
    };
    // Broadcast flag: this client cannot take unicast before it has an address.
    let request = encode_request(
        xid,
        mac,
        0x8000,
        Ipv4Addr::UNSPECIFIED,
        &[
            (code::MESSAGE_TYPE, vec![3]),
            (code::SERVER_ID, sid(addr_offer).octets().to_vec()),
            (code::REQUESTED_IP, addr_offer.yiaddr.octets().to_vec()),
            vendor.clone(),
            arch.clone(),
            uuid.clone(),
        ],
    );
    sock.send_to(&request, "255.255.255.255:67").unwrap();
    let acks = collect(&sock, xid, wait);
    let Some(ack) =
        acks.iter().find(|a| a.options.get(&code::MESSAGE_TYPE).map(Vec::as_slice) == Some(&[5][..]))
    else {
        println!("no ack");
        std::process::exit(1);
    };
    println!("ack {} yiaddr={}", sid(ack), ack.yiaddr);
    let prefix = ack
        .options
        .get(&code::SUBNET_MASK)
        .map(|m| m.iter().map(|b| b.count_ones()).sum::<u32>())
        .unwrap_or(24);
    let st = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{}/{prefix}", ack.yiaddr), "dev", iface])
        .status()
        .unwrap();
    assert!(st.success());
    let proxy_addr = if proxy.siaddr.is_unspecified() { sid(proxy) } else { proxy.siaddr };
    // From port 68, as a PXE ROM does (the server answers nothing else on 4011).
    let req = encode_request(xid, mac, 0, ack.yiaddr, &[(code::MESSAGE_TYPE, vec![3]), vendor, arch, uuid]);
    sock.send_to(&req, SocketAddrV4::new(proxy_addr, 4011)).unwrap();
    let answers = collect(&sock, xid, wait);
    match answers.first() {
        Some(a) => {
            println!("proxyack {} file={} siaddr={}", sid(a), String::from_utf8_lossy(&a.file), a.siaddr)
        }
        None => {
            println!("no proxy ack");
            std::process::exit(1);
        }
    }
}

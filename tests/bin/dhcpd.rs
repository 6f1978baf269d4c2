//! mosboot-test-dhcpd: runs netboot's DHCP server from the command line, for tests that need a
//! real server process (kill -9, restart) before or without a full `mosboot serve` setup.
//!
//! usage: mosboot-test-dhcpd --interface IF --server IP/PREFIX --pool FIRST-LAST --leases FILE
//!        [--proxy] [--probe-ms N] [--force] [--pin MAC=IP]...
//! Hostnames follow the product's LTSP rule (`wsNNN` from the last octet); node numbers count
//! from 2 in address order.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use mosboot::config::HostnameRule;
use netboot::dhcp::{BootFiles, DhcpConfig, DhcpMode, DhcpServer, HostInfo, probe_rival};
use netboot::mac::MacAddr;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| args.iter().position(|a| a == k).map(|i| args[i + 1].clone());
    let has = |k: &str| args.iter().any(|a| a == k);
    let interface = get("--interface").expect("--interface");
    let (server, prefix) = get("--server")
        .expect("--server")
        .split_once('/')
        .map(|(a, p)| (a.parse::<Ipv4Addr>().unwrap(), p.parse::<u8>().unwrap()))
        .unwrap();
    let pool_arg = get("--pool").expect("--pool");
    let (first, last) = pool_arg.split_once('-').unwrap();
    let (first, last): (Ipv4Addr, Ipv4Addr) = (first.parse().unwrap(), last.parse().unwrap());
    let pool: Vec<Ipv4Addr> = (u32::from(first)..=u32::from(last)).map(Ipv4Addr::from).collect();
    let pinned: Vec<(MacAddr, Ipv4Addr)> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "--pin")
        .map(|(i, _)| {
            let (m, ip) = args[i + 1].split_once('=').unwrap();
            (m.parse().unwrap(), ip.parse().unwrap())
        })
        .collect();
    let mut all: Vec<Ipv4Addr> = pool.iter().copied().chain(pinned.iter().map(|p| p.1)).collect();
    all.sort();
    all.dedup();
    let hosts: HashMap<Ipv4Addr, HostInfo> = all
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let node = i as u16 + 2;
            let hostname = mosboot::hostname::render(&HostnameRule::Ltsp, *ip, u32::from(node), None)
                .expect("LTSP names are valid");
            (*ip, HostInfo { hostname, node })
        })
        .collect();
    let mode = if has("--proxy") { DhcpMode::Proxy } else { DhcpMode::Full };
    let cfg = DhcpConfig {
        interface: interface.clone(),
        server,
        prefix_len: prefix,
        mode,
        pool,
        pinned,
        hosts,
        lease_time: Duration::from_secs(3600),
        bootp_dynamic: false,
        new_macs: Default::default(),
        router: Some(server),
        dns: vec![],
        boot: BootFiles::default(),
        lease_file: get("--leases").expect("--leases").into(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let code = rt.block_on(async move {
        if mode == DhcpMode::Full && !has("--force") {
            let ms: u64 = get("--probe-ms").map(|v| v.parse().unwrap()).unwrap_or(0);
            if ms > 0 {
                match probe_rival(&interface, server, Duration::from_millis(ms)).await {
                    Ok(Some(rival)) => {
                        eprintln!("another DHCP server ({rival}) answers on {interface}; refusing full mode (use proxy mode or --force)");
                        return 1;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("{e}");
                        return 1;
                    }
                }
            }
        }
        let server = match DhcpServer::bind(cfg, None) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return 1;
            }
        };
        eprintln!("READY");
        let stop = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
        };
        match server.run(stop).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                2
            }
        }
    });
    std::process::exit(code);
}

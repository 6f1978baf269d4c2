//! DHCP server against real clients (ISC dhclient, busybox udhcpc, dnsmasq as a rival), all in
//! network namespaces this test creates: a "lab" namespace with the server on bridge `br0`, and
//! client namespaces wired to the bridge by veth pairs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{ChildGuard, Lab, Netns, env_file, run, udhcpc_once, veth, wait_until};
use mosboot::config::HostnameRule;

const SERVER: &str = "192.168.77.254";

fn dhcpd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mosboot-test-dhcpd")
}

/// The lab for these tests: server 192.168.77.254/24 on br0 (see [`harness::Lab`]).
fn lab() -> Lab {
    Lab::new("d", &format!("{SERVER}/24"))
}

/// The rival: dnsmasq at 192.168.77.1 handing out .150-.160 (see [`Lab::rival`]).
fn rival(lab: &Lab) -> (Netns, ChildGuard) {
    lab.rival("192.168.77.1/24", "192.168.77.150", "192.168.77.160")
}

/// The lab with the rival on its bridge and one client interface, c0.
fn lab_with_rival_and_client() -> (Lab, Netns, ChildGuard) {
    let mut lab = lab();
    let (rns, dnsmasq) = rival(&lab);
    lab.clients(1);
    (lab, rns, dnsmasq)
}

fn leases(lab: &Lab) -> PathBuf {
    lab.dir.path().join("leases")
}

/// Starts the test server on br0 (pool .10-.99); waits for READY, or for it to exit (a refusal
/// is what some tests want). Returns the guard and its log path.
fn server(lab: &Lab, extra: &[&str], tag: &str) -> (ChildGuard, PathBuf) {
    let log = lab.dir.path().join(format!("dhcpd-{tag}.log"));
    let mut cmd = lab.srv.command(dhcpd_bin());
    cmd.args([
        "--interface",
        "br0",
        "--server",
        &format!("{SERVER}/24"),
        "--pool",
        "192.168.77.10-192.168.77.99",
    ])
    .arg("--leases")
    .arg(leases(lab))
    .args(extra);
    let mut g = harness::spawn_until_line(&mut cmd, &log, "READY", Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("READY") || matches!(g.child.try_wait(), Ok(Some(_))),
        "server did not start: {text}"
    );
    (g, log)
}

/// The plan's name for a pool address: the product's LTSP rule (what `mosboot serve` sends).
fn hostname_for(ip: &str) -> String {
    let ip: Ipv4Addr = ip.parse().unwrap();
    mosboot::hostname::render(&HostnameRule::Ltsp, ip, 0, None).unwrap()
}

#[test]
fn udhcpc_and_dhclient_get_address_hostname_and_boot_file() {
    let mut lab = lab();
    lab.clients(2);
    let (_srv, log) = server(&lab, &[], "a");
    let script = lab.udhcpc_script();

    // busybox udhcpc: exports $ip, $hostname, $boot_file, $siaddr to its script.
    let out = udhcpc_once(&lab.cli, "c0", 5, &[], &script);
    assert!(out.status.success(), "udhcpc: {}", String::from_utf8_lossy(&out.stderr));
    let env = lab.udhcpc_env("c0", "bound");
    assert_eq!(env.get("ip").map(String::as_str), Some("192.168.77.10"), "{env:?}");
    assert_eq!(env.get("hostname").map(String::as_str), Some("ws010"));
    assert_eq!(env.get("boot_file").map(String::as_str), Some("pxelinux.0"));
    assert_eq!(env.get("siaddr").map(String::as_str), Some(SERVER));
    assert_eq!(env.get("serverid").map(String::as_str), Some(SERVER));

    // ISC dhclient with its own script and lease file.
    let dscript = lab.dir.path().join("dhclient.sh");
    let dout = lab.dir.path().join("dhclient.env");
    std::fs::write(
        &dscript,
        format!(
            "#!/bin/sh\n[ \"$reason\" = BOUND ] && env > {}.tmp && mv {}.tmp {}\nexit 0\n",
            dout.display(),
            dout.display(),
            dout.display()
        ),
    )
    .unwrap();
    run(&["chmod", "+x", dscript.to_str().unwrap()]);
    let lf = lab.dir.path().join("dhclient.leases");
    let pf = lab.dir.path().join("dhclient.pid");
    let mut cmd = lab.cli.command("dhclient");
    cmd.args(["-d", "-1", "-cf", "/dev/null", "-sf"])
        .arg(&dscript)
        .arg("-lf")
        .arg(&lf)
        .arg("-pf")
        .arg(&pf)
        .arg("c1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _dh = ChildGuard::spawn(&mut cmd);
    assert!(
        wait_until(Duration::from_secs(20), || dout.exists()),
        "dhclient got no lease; server log:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );
    let env = env_file(&dout);
    assert_eq!(env.get("new_ip_address").map(String::as_str), Some("192.168.77.11"), "{env:?}");
    assert_eq!(env.get("new_host_name").map(String::as_str), Some("ws011"));
    assert_eq!(env.get("new_filename").map(String::as_str), Some("pxelinux.0"));
    assert_eq!(env.get("new_subnet_mask").map(String::as_str), Some("255.255.255.0"));
    assert_eq!(env.get("new_dhcp_lease_time").map(String::as_str), Some("3600"));

    // Both leases are on disk, and the log names MAC, IP, hostname and node number.
    let (leases, warnings) = netboot::leases::read_leases(&leases(&lab)).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let got: Vec<(String, String)> = leases.iter().map(|l| (l.ip.to_string(), l.hostname.clone())).collect();
    assert_eq!(got, vec![("192.168.77.10".into(), "ws010".into()), ("192.168.77.11".into(), "ws011".into())]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| l.contains("acked")
            && l.contains("02:00:00:00:00:00")
            && l.contains("192.168.77.10")
            && l.contains("ws010")
            && l.contains("node=2")),
        "{text}"
    );
}

/// Runs udhcpc on c{from}..c{to} concurrently (each exits once bound).
fn storm(lab: &Lab, script: &Path, range: std::ops::Range<usize>) -> Vec<ChildGuard> {
    range
        .map(|i| {
            let mut cmd = lab.cli.command("udhcpc");
            // Up to a minute of DISCOVERs: enough for a server restart on a loaded machine (a
            // bound client exits at once, so a healthy run is no slower).
            cmd.args(["-f", "-q", "-n", "-t", "60", "-T", "1", "-A", "1", "-i", &format!("c{i}"), "-s"])
                .arg(script)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            ChildGuard::spawn(&mut cmd)
        })
        .collect()
}

fn bound(lab: &Lab, n: usize) -> BTreeMap<usize, String> {
    (0..n)
        .filter_map(|i| lab.udhcpc_env(&format!("c{i}"), "bound").get("ip").map(|ip| (i, ip.clone())))
        .collect()
}

#[test]
fn storm_of_50_survives_kill_9_and_every_mac_keeps_its_address() {
    const N: usize = 50;
    let mut lab = lab();
    let macs = lab.clients(N);
    let script = lab.udhcpc_script();
    // The real thing: `mosboot serve` with a cluster.toml (it drops to nobody after binding).
    let (cfg, out, state) = cluster(&lab, "full");
    let leases = state.join("leases");
    let (mut srv, log) = mosboot_serve(&lab, &cfg, &out, &state, "first");
    // Crash the server mid-storm: half the nodes are booting, the other half starts during the
    // outage, so some clients are bound and many are in flight whatever the timing.
    let mut clients = storm(&lab, &script, 0..N / 2);
    assert!(
        wait_until(Duration::from_secs(30), || bound(&lab, N).len() >= 5),
        "no leases: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    srv.signal(libc::SIGKILL);
    srv.wait_timeout(Duration::from_secs(5)).expect("server died");
    clients.extend(storm(&lab, &script, N / 2..N));
    let acked_before_crash = bound(&lab, N);
    assert!(acked_before_crash.len() < N, "storm ended before the crash; test proves nothing");
    let (on_disk, warnings) = netboot::leases::read_leases(&leases).unwrap();
    for (i, ip) in &acked_before_crash {
        let l = on_disk
            .iter()
            .find(|l| l.ip.to_string() == *ip)
            .unwrap_or_else(|| panic!("ACKed lease {ip} of c{i} lost in crash"));
        assert_eq!(l.mac.to_string(), macs[*i].1);
    }
    eprintln!("crash after {} of {N} ACKs; warnings on reopen: {warnings:?}", acked_before_crash.len());

    let (_srv2, log2) = mosboot_serve(&lab, &cfg, &out, &state, "second");
    for c in clients.iter_mut() {
        c.wait_timeout(Duration::from_secs(150)).expect("udhcpc finished");
    }
    let first = bound(&lab, N);
    assert_eq!(first.len(), N, "not every client got a lease: {}", std::fs::read_to_string(&log2).unwrap());
    let distinct: std::collections::BTreeSet<&String> = first.values().collect();
    assert_eq!(distinct.len(), N, "duplicate addresses: {first:?}");
    for (i, ip) in &first {
        let env = lab.udhcpc_env(&format!("c{i}"), "bound");
        assert_eq!(env.get("hostname"), Some(&hostname_for(ip)), "c{i} {ip}");
        if let Some(before) = acked_before_crash.get(i) {
            assert_eq!(before, ip, "c{i} changed address across the crash");
        }
    }
    let (on_disk, warnings) = netboot::leases::read_leases(&leases).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(on_disk.len(), N);
    // Consistent with `mosboot map`: node numbers count up from 2 at .10, one map line.
    let map = Command::new(harness::mosboot_bin()).arg("-c").arg(&cfg).arg("map").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&map.stdout), "1 192.168.77.254 1\n2 192.168.77.10 90\n");
    let rows = nodes_json(&cfg, &state);
    for (i, ip) in &first {
        let row = rows.as_array().unwrap().iter().find(|r| r["ip"] == ip.as_str()).unwrap();
        let last: u32 = ip.rsplit('.').next().unwrap().parse().unwrap();
        assert_eq!(row["node"], last - 10 + 2, "{row}");
        assert_eq!(row["mac"], macs[*i].1.as_str(), "{row}");
        assert_eq!(row["lease"], "bound", "{row}");
    }

    // Second boot of every node (no remembered lease, plain DISCOVER): same address each.
    std::fs::remove_dir_all(lab.udhcpc_out()).unwrap();
    std::fs::create_dir_all(lab.udhcpc_out()).unwrap();
    for mut c in storm(&lab, &script, 0..N) {
        c.wait_timeout(Duration::from_secs(150)).expect("udhcpc finished");
    }
    assert_eq!(bound(&lab, N), first);
}

#[test]
fn packets_from_another_interface_get_no_answer() {
    let mut lab = lab();
    // A second NIC in the server namespace with its own address, and a client behind it.
    let other = Netns::new("doth");
    veth(&lab.srv, "eth9", &other, "o0");
    lab.srv.addr("eth9", "10.77.0.1/24");
    let (_srv, log) = server(&lab, &[], "a");
    let script = lab.udhcpc_script();
    let out = udhcpc_once(&other, "o0", 3, &[], &script);
    assert!(!out.status.success(), "client on the other interface got a lease");
    assert!(!lab.udhcpc_out().join("o0.bound").exists());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("offered"), "{text}");
    // The same server does answer on its own interface (so the silence above means something).
    lab.clients(1);
    let ok = udhcpc_once(&lab.cli, "c0", 3, &[], &script);
    assert!(ok.status.success());
}

#[test]
fn refuses_missing_interface_or_address() {
    let lab = lab();
    let err = |args: &[&str]| {
        let out = lab.srv.command(dhcpd_bin()).args(args).arg("--leases").arg(leases(&lab)).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let e = err(&[
        "--interface",
        "nope0",
        "--server",
        "192.168.77.254/24",
        "--pool",
        "192.168.77.10-192.168.77.20",
    ]);
    assert!(e.contains("'nope0' does not exist"), "{e}");
    let e = err(&[
        "--interface",
        "br0",
        "--server",
        "192.168.77.253/24",
        "--pool",
        "192.168.77.10-192.168.77.20",
    ]);
    assert!(
        e.contains("does not have the server address 192.168.77.253") && e.contains("192.168.77.254/24"),
        "{e}"
    );
}

#[test]
fn rival_server_blocks_full_mode_and_proxy_mode_boots_beside_it() {
    let (lab, _rns, _dnsmasq) = lab_with_rival_and_client();

    // Full mode looks first and refuses.
    let (mut full, log) = server(&lab, &["--probe-ms", "2000"], "full");
    let st = full.wait_timeout(Duration::from_secs(10)).expect("full mode exits");
    assert!(!st.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("another DHCP server (192.168.77.1)") && text.contains("proxy"), "{text}");

    // Proxy mode beside dnsmasq: address from dnsmasq, boot file from us (offer and port 4011).
    let (_proxy, plog) = server(&lab, &["--proxy"], "proxy");
    pxe_boot_beside_rival(&lab, &plog);
    // And a plain (non-PXE) client is left to dnsmasq alone.
    let script = lab.udhcpc_script();
    let out = udhcpc_once(&lab.cli, "c0", 5, &[], &script);
    assert!(out.status.success());
    let env = lab.udhcpc_env("c0", "bound");
    assert_eq!(env.get("serverid").map(String::as_str), Some("192.168.77.1"), "{env:?}");
    // The proxy logged the boot information it gave, and never an address.
    let ptext = std::fs::read_to_string(&plog).unwrap();
    assert!(ptext.contains("proxy boot information"), "{ptext}");
    assert!(!ptext.contains("acked"), "{ptext}");
}

#[test]
fn no_rival_lets_full_mode_start() {
    let mut lab = lab();
    lab.clients(1);
    let (mut srv, log) = server(&lab, &["--probe-ms", "1000"], "a");
    // Started means serving: a client gets a lease from it (no sleep-and-hope).
    let script = lab.udhcpc_script();
    let out = udhcpc_once(&lab.cli, "c0", 5, &[], &script);
    assert!(out.status.success(), "no lease: {}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(lab.udhcpc_env("c0", "bound").get("serverid").map(String::as_str), Some(SERVER));
    assert!(srv.child.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap());
}

/// `mosboot nodes --json` for the lab's cluster and state, as a user would read it.
fn nodes_json(cfg: &Path, state: &Path) -> serde_json::Value {
    let o = Command::new(harness::mosboot_bin())
        .arg("-c")
        .arg(cfg)
        .args(["nodes", "--json", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert!(o.status.success(), "mosboot nodes: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A PXE ROM (the test client) on c0 beside the rival: its address comes from dnsmasq
/// (192.168.77.1), its boot file from our proxy, in the offer and again on port 4011.
fn pxe_boot_beside_rival(lab: &Lab, server_log: &Path) {
    let out = lab
        .cli
        .command(env!("CARGO_BIN_EXE_mosboot-test-pxeclient"))
        .args(["c0", "02:00:00:00:00:00"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}\nserver:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(server_log).unwrap()
    );
    assert!(text.lines().any(|l| l.starts_with("offer 192.168.77.1 yiaddr=192.168.77.15")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ack 192.168.77.1 yiaddr=192.168.77.15")), "{text}");
    for line in [
        format!("offer {SERVER} yiaddr=0.0.0.0 file=pxelinux.0 siaddr={SERVER}"),
        format!("proxyack {SERVER} file=pxelinux.0 siaddr={SERVER}"),
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
}

/// A cluster.toml for the lab and a minimal output tree (serve needs only tftpboot/).
fn cluster(lab: &Lab, dhcp: &str) -> (PathBuf, PathBuf, PathBuf) {
    // serve drops to `nobody`: the tree it serves must be reachable by that user (the lab dir
    // is 755, see harness::Lab).
    let out = lab.dir.path().join("out");
    std::fs::create_dir_all(out.join("tftpboot")).unwrap();
    std::fs::write(
        out.join("tftpboot/pxelinux.0"),
        b"not really pxelinux, but served byte for byte\n".repeat(40),
    )
    .unwrap();
    let cfg = lab.dir.path().join("cluster.toml");
    std::fs::write(
        &cfg,
        format!(
            "[cluster]\nname = \"lab\"\ninterface = \"br0\"\nserver = \"{SERVER}/24\"\npool = \"192.168.77.10-192.168.77.99\"\n\
             hostname = \"ltsp\"\nlease_time = \"1h\"\ndhcp = \"{dhcp}\"\n"
        ),
    )
    .unwrap();
    (cfg, out, lab.dir.path().join("state"))
}

fn mosboot_serve(lab: &Lab, cfg: &Path, out: &Path, state: &Path, tag: &str) -> (ChildGuard, PathBuf) {
    let log = lab.dir.path().join(format!("serve-{tag}.log"));
    let mut cmd = lab.srv.command(harness::mosboot_bin());
    cmd.arg("-c")
        .arg(cfg)
        .arg("serve")
        .arg("--state")
        .arg(state)
        .arg("--out")
        .arg(out)
        .args(["--probe", "1s"]);
    let g = harness::spawn_until_line(&mut cmd, &log, "mosboot serve:", Duration::from_secs(15));
    (g, log)
}

#[test]
fn mosboot_serve_boots_a_client_and_nodes_shows_it() {
    let mut lab = lab();
    lab.clients(1);
    let (cfg, out, state) = cluster(&lab, "full");
    let (mut srv, log) = mosboot_serve(&lab, &cfg, &out, &state, "a");
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "serve exited: {}",
        std::fs::read_to_string(&log).unwrap()
    );

    // A client that configures its address, then fetches the boot file it was told.
    let envdir = lab.dir.path().join("udhcpc-out");
    std::fs::create_dir_all(&envdir).unwrap();
    let script = lab.dir.path().join("cfg.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && ip addr add $ip/$mask dev $interface\nenv > {}/$interface.$1\n",
            envdir.display()
        ),
    )
    .unwrap();
    run(&["chmod", "+x", script.to_str().unwrap()]);
    let o = udhcpc_once(&lab.cli, "c0", 5, &[], &script);
    assert!(o.status.success(), "{}", std::fs::read_to_string(&log).unwrap());
    let env = env_file(&envdir.join("c0.bound"));
    assert_eq!(
        (env["ip"].as_str(), env["hostname"].as_str(), env["boot_file"].as_str()),
        ("192.168.77.10", "ws010", "pxelinux.0")
    );
    let got = lab.dir.path().join("fetched");
    let o = lab
        .cli
        .command("busybox")
        .args(["tftp", "-g", "-r", "pxelinux.0", "-l"])
        .arg(&got)
        .arg(SERVER)
        .output()
        .unwrap();
    assert!(o.status.success(), "tftp: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(out.join("tftpboot/pxelinux.0")).unwrap());

    // The stages reach the stage log, and `mosboot nodes` shows them while serve runs.
    assert!(wait_until(Duration::from_secs(5), || std::fs::read_to_string(state.join("stages.log"))
        .unwrap_or_default()
        .contains("stage=fetched pxelinux.0")));
    let rows = nodes_json(&cfg, &state);
    let row = rows.as_array().unwrap().iter().find(|r| r["ip"] == "192.168.77.10").unwrap();
    assert_eq!(row["node"], 2);
    assert_eq!(row["hostname"], "ws010");
    assert_eq!(row["mac"], "02:00:00:00:00:00");
    assert_eq!(row["lease"], "bound");
    assert_eq!(row["last_stage"], "fetched pxelinux.0");
    let table = Command::new(harness::mosboot_bin())
        .arg("-c")
        .arg(&cfg)
        .args(["nodes", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout).to_string();
    assert!(
        table.lines().any(|l| l.starts_with("2 ")
            && l.contains("ws010")
            && l.contains("bound")
            && l.contains("fetched pxelinux.0")),
        "{table}"
    );

    // Nothing runs as root once the sockets are open.
    let status = std::fs::read_to_string(format!("/proc/{}/status", srv.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|u| u == "65534"), "{uid}");

    // The log names every stage with MAC, IP, hostname and node.
    let text = std::fs::read_to_string(&log).unwrap();
    for stage in ["offered", "acked"] {
        assert!(
            text.lines().any(|l| l.contains(stage)
                && l.contains("02:00:00:00:00:00")
                && l.contains("ws010")
                && l.contains("node=2")),
            "{stage}: {text}"
        );
    }
    srv.signal(libc::SIGTERM);
    let st = srv.wait_timeout(Duration::from_secs(5)).expect("serve stops on SIGTERM");
    assert!(st.success(), "{st:?}: {}", std::fs::read_to_string(&log).unwrap());
}

#[test]
fn mosboot_serve_refuses_full_mode_beside_dnsmasq() {
    let lab = lab();
    let (_rns, _dnsmasq) = rival(&lab);
    let (cfg, out, state) = cluster(&lab, "full");
    let (mut srv, log) = mosboot_serve(&lab, &cfg, &out, &state, "full");
    let st = srv.wait_timeout(Duration::from_secs(10)).expect("serve refuses");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(1), "{text}");
    assert!(
        text.contains("another DHCP server (192.168.77.1)")
            && text.contains("dhcp = \"proxy\"")
            && text.contains("--force"),
        "{text}"
    );
}

/// The school case through the real command: the router (dnsmasq) hands out addresses, and
/// `mosboot serve` with `dhcp = "proxy"` starts beside it (no refusal) and gives a PXE client
/// only its boot information, in the offer and on port 4011.
#[test]
fn mosboot_serve_proxy_mode_beside_dnsmasq() {
    let (lab, _rns, _dnsmasq) = lab_with_rival_and_client();
    let (cfg, out, state) = cluster(&lab, "proxy");
    let (mut srv, log) = mosboot_serve(&lab, &cfg, &out, &state, "proxy");
    assert!(srv.child.try_wait().unwrap().is_none(), "{}", std::fs::read_to_string(&log).unwrap());
    pxe_boot_beside_rival(&lab, &log);
    // No lease is ever written in proxy mode.
    let leases = std::fs::read_to_string(state.join("leases")).unwrap_or_default();
    assert!(!leases.contains("state=bound"), "{leases}");
}

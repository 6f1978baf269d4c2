//! `mosboot export dnsmasq|isc-dhcpd` against the real servers: the exported config runs in a
//! "lab" namespace (bridge `br0`, 10.61.0.254/24) and busybox udhcpc asks from a client namespace.
//! A node must get what `mosboot serve` would give it: a pool address, the plan's hostname for that
//! address, the right boot file, and a pinned MAC its pinned address.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{ChildGuard, Lab, Netns, mosboot_bin, run, udhcpc_once, wait_for_line};
use mosboot::config::HostnameRule;

const SERVER: &str = "10.61.0.254";
const PINNED_MAC: &str = "02:00:00:00:00:99";
/// A hostname template nothing but a per-address rule can reproduce (node number and octet).
const TEMPLATE: &str = "pc{{ node }}x{{ octets[3] }}";

/// The plan's hostname for a pool address of the test cluster, from the product's own rule:
/// node 1 is the server, then .10-.20 are nodes 2-12 (.15, the pinned one, is node 7, "big").
fn plan_name(rule: &str, last_octet: u8) -> String {
    let node = u32::from(last_octet) - 10 + 2;
    let rule = if rule == "ltsp" { HostnameRule::Ltsp } else { HostnameRule::Template(rule.into()) };
    mosboot::hostname::render(&rule, std::net::Ipv4Addr::new(10, 61, 0, last_octet), node, None).unwrap()
}

fn lab() -> Lab {
    Lab::new("x", &format!("{SERVER}/24"))
}

/// What these tests do with the shared lab: write the cluster, export, run the exported
/// server, ask it with udhcpc.
trait LabExt {
    fn cluster(&self, hostname: &str, dhcp: &str) -> PathBuf;
    fn export(&self, cfg: &Path, format: &str) -> (PathBuf, String);
    fn dnsmasq(&self, conf: &Path) -> (ChildGuard, PathBuf);
    fn dhcpd(&self, conf: &Path) -> (ChildGuard, PathBuf);
    fn udhcpc(&self, iface: &str, extra: &[&str], log: &Path) -> BTreeMap<String, String>;
}

impl LabExt for Lab {
    /// cluster.toml (pool .10-.20, .15 pinned) and a built-looking TFTP root.
    fn cluster(&self, hostname: &str, dhcp: &str) -> PathBuf {
        let tftp = self.dir.path().join("out/tftpboot");
        std::fs::create_dir_all(&tftp).unwrap();
        for d in [self.dir.path().join("out"), tftp.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(tftp.join("pxelinux.0"), b"not really pxelinux, but served byte for byte\n").unwrap();
        std::fs::write(tftp.join("boot.ipxe"), b"#!ipxe\n").unwrap();
        let cfg = self.dir.path().join("cluster.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"[cluster]
name = "exp"
interface = "br0"
server = "{SERVER}/24"
pool = "10.61.0.10-10.61.0.20"
hostname = "{hostname}"
lease_time = "1h"
dhcp = "{dhcp}"

[image]
kernel = "kernels/bzImage"
out = "out"

[[node]]
mac = "{PINNED_MAC}"
ip = "10.61.0.15"
hostname = "big"
"#
            ),
        )
        .unwrap();
        cfg
    }

    /// `mosboot export FORMAT` into a file; returns (path, text).
    fn export(&self, cfg: &Path, format: &str) -> (PathBuf, String) {
        let out = Command::new(mosboot_bin()).arg("-c").arg(cfg).args(["export", format]).output().unwrap();
        assert!(out.status.success(), "export {format} failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let path = self.dir.path().join(format!("{format}.conf"));
        std::fs::write(&path, &text).unwrap();
        (path, text)
    }

    fn dnsmasq(&self, conf: &Path) -> (ChildGuard, PathBuf) {
        let log = self.dir.path().join("dnsmasq.log");
        let mut cmd = self.srv.command("dnsmasq");
        cmd.arg("--no-daemon")
            .arg(format!("--conf-file={}", conf.display()))
            .arg(format!("--pid-file={}", self.dir.path().join("dnsmasq.pid").display()))
            .arg(format!("--dhcp-leasefile={}", self.dir.path().join("dnsmasq.leases").display()))
            // DNS stays on (the hostnames need it) but never forwards anywhere.
            .args(["--no-resolv", "--log-dhcp"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut g = ChildGuard::spawn(&mut cmd);
        wait_for_line("dnsmasq", &log, "sockets bound exclusively", &mut g, Duration::from_secs(10));
        (g, log)
    }

    fn dhcpd(&self, conf: &Path) -> (ChildGuard, PathBuf) {
        let log = self.dir.path().join("dhcpd.log");
        let leases = self.dir.path().join("dhcpd.leases");
        std::fs::write(&leases, b"").unwrap();
        let mut cmd = self.srv.command("dhcpd");
        cmd.args(["-4", "-f", "-d", "-cf"])
            .arg(conf)
            .arg("-lf")
            .arg(&leases)
            .arg("-pf")
            .arg(self.dir.path().join("dhcpd.pid"))
            .arg("br0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let mut g = ChildGuard::spawn(&mut cmd);
        wait_for_line("dhcpd", &log, "Server starting service", &mut g, Duration::from_secs(10));
        (g, log)
    }

    /// One udhcpc run on `iface` with extra arguments; returns the environment of its `bound` call.
    fn udhcpc(&self, iface: &str, extra: &[&str], log: &Path) -> BTreeMap<String, String> {
        let out = udhcpc_once(&self.cli, iface, 5, extra, &self.udhcpc_script());
        assert!(
            out.status.success(),
            "udhcpc on {iface} got no lease: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        self.udhcpc_env(iface, "bound")
    }
}

fn get<'a>(env: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    env.get(key).map(String::as_str).unwrap_or("")
}

/// PXE ROM, iPXE, pinned MAC, a client that names itself: each gets what serve would give it.
fn four_clients(lab: &mut Lab, rule: &str, log: &Path) {
    let pxe = lab.client("02:00:00:00:00:01");
    let ipxe = lab.client("02:00:00:00:00:02");
    let pinned = lab.client(PINNED_MAC);
    let selfnamed = lab.client("02:00:00:00:00:03");

    let env = lab.udhcpc(&pxe, &["-V", "PXEClient:Arch:00000:UNDI:002001"], log);
    assert_eq!(get(&env, "ip"), "10.61.0.10", "{env:?}");
    assert_eq!(get(&env, "hostname"), plan_name(rule, 10), "{env:?}");
    assert_eq!(get(&env, "boot_file"), "pxelinux.0", "{env:?}");
    assert_eq!(get(&env, "siaddr"), SERVER, "{env:?}");
    assert_eq!(get(&env, "serverid"), SERVER, "{env:?}");
    assert_eq!(get(&env, "subnet"), "255.255.255.0", "{env:?}");
    assert_eq!(get(&env, "lease"), "3600", "{env:?}");
    // PXE extras serve sends: option 43 (discovery control 8) and no router/DNS it was not told of.
    assert_eq!(get(&env, "opt43"), "060108ff", "{env:?}");
    assert!(!env.contains_key("router") && !env.contains_key("dns"), "{env:?}");

    // iPXE sends user class "iPXE" (option 77).
    let env = lab.udhcpc(&ipxe, &["-x", "0x4d:69505845"], log);
    assert_eq!(get(&env, "ip"), "10.61.0.11", "{env:?}");
    assert_eq!(get(&env, "hostname"), plan_name(rule, 11), "{env:?}");
    assert_eq!(get(&env, "boot_file"), "boot.ipxe", "{env:?}");

    let env = lab.udhcpc(&pinned, &[], log);
    assert_eq!(get(&env, "ip"), "10.61.0.15", "{env:?}");
    assert_eq!(get(&env, "hostname"), "big", "{env:?}");
    assert_eq!(get(&env, "lease"), "3600", "{env:?}");
    assert_eq!(get(&env, "boot_file"), "pxelinux.0", "{env:?}");

    // A client's own name does not override the plan's.
    let env = lab.udhcpc(&selfnamed, &["-x", "hostname:intruder"], log);
    assert_eq!(get(&env, "ip"), "10.61.0.12", "{env:?}");
    assert_eq!(get(&env, "hostname"), plan_name(rule, 12), "{env:?}");
}

fn dnsmasq_full(rule: &str) {
    let mut lab = lab();
    let cfg = lab.cluster(rule, "full");
    let (conf, text) = lab.export(&cfg, "dnsmasq");
    assert!(text.starts_with("# Generated by mosboot"), "{text}");
    let tftp_root = format!("tftp-root={}", lab.dir.path().join("out/tftpboot").display());
    assert!(text.lines().any(|l| l == tftp_root), "{text}");
    let (_srv, log) = lab.dnsmasq(&conf);
    four_clients(&mut lab, rule, &log);

    // TFTP from the same server: the PXE client, now configured, fetches its boot file.
    lab.cli.ip(&["addr", "add", "10.61.0.10/24", "dev", "c0"]);
    let got = lab.dir.path().join("fetched-pxelinux.0");
    let out = lab
        .cli
        .command("tftp")
        .args(["-m", "binary", SERVER, "-c", "get", "pxelinux.0"])
        .arg(&got)
        .output()
        .unwrap();
    assert!(out.status.success(), "tftp: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        std::fs::read(&got).unwrap(),
        std::fs::read(lab.dir.path().join("out/tftpboot/pxelinux.0")).unwrap()
    );
}

#[test]
fn dnsmasq_export_gives_template_hostnames_boot_files_and_pinned_address() {
    dnsmasq_full(TEMPLATE);
}

#[test]
fn dnsmasq_export_gives_ltsp_hostnames() {
    dnsmasq_full("ltsp");
}

fn dhcpd_full(rule: &str) {
    let mut lab = lab();
    let cfg = lab.cluster(rule, "full");
    let (conf, text) = lab.export(&cfg, "isc-dhcpd");
    assert!(text.starts_with("# Generated by mosboot"), "{text}");
    // The LTSP preset uses the classic expression, a template one rule per address.
    assert_eq!(text.contains("substring(leased-address, 3, 1)"), rule == "ltsp", "{text}");
    assert_eq!(text.contains("if leased-address = 0a:3d:00:0a"), rule != "ltsp", "{text}");
    let (_srv, log) = lab.dhcpd(&conf);
    four_clients(&mut lab, rule, &log);
}

#[test]
fn isc_dhcpd_export_gives_ltsp_hostnames_boot_files_and_pinned_address() {
    dhcpd_full("ltsp");
}

#[test]
fn isc_dhcpd_export_gives_template_hostnames() {
    dhcpd_full(TEMPLATE);
}

/// Proxy mode: a rival dnsmasq hands out addresses; the exported dnsmasq only boots PXE clients.
/// ISC dhcpd cannot proxy, and the export says so.
#[test]
fn proxy_export_boots_beside_a_rival_and_dhcpd_refuses() {
    let mut lab = lab();
    let cfg = lab.cluster("ltsp", "proxy");
    let out = Command::new(mosboot_bin()).arg("-c").arg(&cfg).args(["export", "isc-dhcpd"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot act as a proxyDHCP server"), "{err}");

    let (_rns, _rival) = lab.rival("10.61.0.1/24", "10.61.0.150", "10.61.0.160");

    let (conf, text) = lab.export(&cfg, "dnsmasq");
    assert!(text.lines().any(|l| l == "dhcp-range=10.61.0.0,proxy,255.255.255.0"), "{text}");
    let (_proxy, log) = lab.dnsmasq(&conf);
    let c = lab.client("02:00:00:00:00:05");
    let steps = pxe_rom(&lab.cli, &c, "02:00:00:00:00:05".parse().unwrap());
    let text = steps.join("\n");
    let proxy_log = std::fs::read_to_string(&log).unwrap_or_default();
    // Address from the rival, boot file from the exported proxy (menu, then port 4011).
    assert!(steps.iter().any(|l| l.starts_with("ack 10.61.0.1 yiaddr=10.61.0.1")), "{text}\n{proxy_log}");
    assert!(steps.iter().any(|l| l.starts_with(&format!("proxyoffer {SERVER} menu-item="))), "{text}");
    assert!(
        steps.iter().any(|l| l == &format!("bootack {SERVER} file=pxelinux.0 siaddr={SERVER}")),
        "{text}\n{proxy_log}"
    );
}

/// What a PXE ROM does beside a proxyDHCP server with a boot menu (PXE 2.1): DISCOVER; take the
/// address offer and the proxy offer (option 43: menu, boot servers); REQUEST the address; then
/// ask the boot server on UDP 4011 for the first menu item (option 43, sub-option 71). Runs on a
/// thread that has joined the client namespace. Returns one line per step.
fn pxe_rom(ns: &Netns, iface: &str, mac: netboot::mac::MacAddr) -> Vec<String> {
    use netboot::dhcp::packet::{code, encode_request};
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::os::fd::AsRawFd;

    use harness::{dhcp_replies as collect, dhcp_server_id as sid};
    /// Sub-option `want` of an encapsulated option 43.
    fn sub(data: &[u8], want: u8) -> Option<Vec<u8>> {
        let mut i = 0;
        while i + 1 < data.len() && data[i] != 255 {
            let (t, l) = (data[i], data[i + 1] as usize);
            let v = data.get(i + 2..i + 2 + l)?;
            if t == want {
                return Some(v.to_vec());
            }
            i += 2 + l;
        }
        None
    }

    let nspath = format!("/var/run/netns/{}", ns.name);
    let (nsname, iface) = (ns.name.clone(), iface.to_string());
    std::thread::spawn(move || {
        let f = std::fs::File::open(&nspath).unwrap();
        // SAFETY: setns on a valid namespace fd; it moves only this thread.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
        let mut steps = Vec::new();
        let sock = harness::dhcp_client_socket(&iface);
        let pxe_opts = vec![
            (code::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001".to_vec()),
            (code::CLIENT_ARCH, vec![0, 0]),
            (code::CLIENT_UUID, (0u8..17).collect::<Vec<u8>>()),
        ];
        let xid = std::process::id().wrapping_mul(104_729);
        let with = |extra: Vec<(u8, Vec<u8>)>| -> Vec<(u8, Vec<u8>)> {
            extra.into_iter().chain(pxe_opts.clone()).collect()
        };
        let discover = encode_request(
            xid,
            mac,
            0x8000,
            Ipv4Addr::UNSPECIFIED,
            &with(vec![(code::MESSAGE_TYPE, vec![1])]),
        );
        sock.send_to(&discover, "255.255.255.255:67").unwrap();
        let offers = collect(&sock, xid, Duration::from_secs(2));
        let Some(addr) = offers.iter().find(|o| !o.yiaddr.is_unspecified()) else {
            steps.push(format!("no address offer among {}", offers.len()));
            return steps;
        };
        let Some(proxy) = offers.iter().find(|o| {
            o.yiaddr.is_unspecified()
                && o.options.get(&code::VENDOR_CLASS).map(Vec::as_slice) == Some(b"PXEClient")
        }) else {
            steps.push("no proxy offer".into());
            return steps;
        };
        let vendor = proxy.options.get(&code::VENDOR_SPECIFIC).cloned().unwrap_or_default();
        let item = sub(&vendor, 9).filter(|m| m.len() >= 2).map(|m| [m[0], m[1]]).unwrap_or([0, 0]);
        steps.push(format!("proxyoffer {} menu-item={:02x}{:02x}", sid(proxy), item[0], item[1]));

        let request = encode_request(
            xid,
            mac,
            0x8000,
            Ipv4Addr::UNSPECIFIED,
            &with(vec![
                (code::MESSAGE_TYPE, vec![3]),
                (code::SERVER_ID, sid(addr).octets().to_vec()),
                (code::REQUESTED_IP, addr.yiaddr.octets().to_vec()),
            ]),
        );
        sock.send_to(&request, "255.255.255.255:67").unwrap();
        let acks = collect(&sock, xid, Duration::from_secs(2));
        let Some(ack) =
            acks.iter().find(|a| a.options.get(&code::MESSAGE_TYPE).map(Vec::as_slice) == Some(&[5][..]))
        else {
            steps.push("no ack".into());
            return steps;
        };
        steps.push(format!("ack {} yiaddr={}", sid(ack), ack.yiaddr));
        run(&["ip", "-n", &nsname, "addr", "add", &format!("{}/24", ack.yiaddr), "dev", &iface]);

        // Boot server discovery: unicast to the proxy (discovery control forbids broadcast here).
        let boot = UdpSocket::bind(SocketAddrV4::new(ack.yiaddr, 0)).unwrap();
        let req = encode_request(
            xid,
            mac,
            0,
            ack.yiaddr,
            &with(vec![
                (code::MESSAGE_TYPE, vec![3]),
                (code::VENDOR_SPECIFIC, vec![71, 4, item[0], item[1], 0, 0, 255]),
            ]),
        );
        boot.send_to(&req, SocketAddrV4::new(sid(proxy), 4011)).unwrap();
        match collect(&boot, xid, Duration::from_secs(2)).first() {
            Some(a) => steps.push(format!(
                "bootack {} file={} siaddr={}",
                sid(a),
                String::from_utf8_lossy(&a.file),
                a.siaddr
            )),
            None => steps.push("no boot server answer".into()),
        }
        steps
    })
    .join()
    .unwrap()
}

//! Adversarial tests (issue 11, SECURITY.md): each runs an attack from the lab LAN or from the
//! unprivileged server user, inside network namespaces the test creates, against a real
//! `mosboot serve`, and checks what an admin would check afterwards.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::{ChildGuard, Netns, run, wait_until};

const SERVER: &str = "192.168.79.254";

fn flood_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mosboot-test-flood")
}

/// The shared DHCP lab ([`harness::Lab`]: server namespace with br0 = SERVER/24, one
/// attacker/client namespace) plus a cluster tree that `nobody` can read and the serve helpers.
struct Lab {
    net: harness::Lab,
}

impl std::ops::Deref for Lab {
    type Target = harness::Lab;
    fn deref(&self) -> &harness::Lab {
        &self.net
    }
}

impl std::ops::DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut harness::Lab {
        &mut self.net
    }
}

impl Lab {
    fn new(dhcp: &str) -> Lab {
        Lab::on(&format!("{SERVER}/24"), "192.168.79.10-192.168.79.99", dhcp)
    }

    /// A lab whose server is `server_cidr`, handing out `pool`.
    fn on(server_cidr: &str, pool: &str, dhcp: &str) -> Lab {
        let lab = Lab { net: harness::Lab::new("s", server_cidr) };
        let out = lab.out();
        std::fs::create_dir_all(out.join("tftpboot")).unwrap();
        std::fs::write(
            out.join("tftpboot/pxelinux.0"),
            b"pxelinux stand-in, served byte for byte\n".repeat(100),
        )
        .unwrap();
        std::fs::write(
            lab.cfg(),
            format!(
                "[cluster]\nname = \"lab\"\ninterface = \"br0\"\nserver = \"{server_cidr}\"\npool = \"{pool}\"\n\
                 hostname = \"ltsp\"\nlease_time = \"1h\"\ndhcp = \"{dhcp}\"\n"
            ),
        )
        .unwrap();
        lab
    }

    fn cfg(&self) -> PathBuf {
        self.dir.path().join("cluster.toml")
    }
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A new interface in the client namespace on the bridge (a MAC of the lab's numbering
    /// unless given); returns its name.
    fn port(&mut self, mac: Option<&str>) -> String {
        match mac {
            Some(mac) => self.net.client(mac),
            None => self.net.clients(1).remove(0).0,
        }
    }

    /// Starts `mosboot serve` (no rival probe) with `state`; waits until it is ready or exited.
    fn serve(&self, state: &Path, tag: &str) -> (ChildGuard, PathBuf) {
        self.serve_via(&[], state, tag, "info")
    }

    /// Like [`Lab::serve`], started through `wrapper` (e.g. setpriv with capabilities) and
    /// logging at `rust_log`.
    fn serve_via(&self, wrapper: &[&str], state: &Path, tag: &str, rust_log: &str) -> (ChildGuard, PathBuf) {
        let log = self.dir.path().join(format!("serve-{tag}.log"));
        let mut cmd = match wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = self.srv.command(prog);
                c.args(rest).arg(harness::mosboot_bin());
                c
            }
            None => self.srv.command(harness::mosboot_bin()),
        };
        cmd.arg("-c").arg(self.cfg()).arg("serve").arg("--state").arg(state).arg("--out").arg(self.out());
        cmd.arg("--force").env("RUST_LOG", rust_log);
        let g = harness::spawn_until_line(&mut cmd, &log, "mosboot serve:", Duration::from_secs(15));
        (g, log)
    }

    /// One DISCOVER/REQUEST exchange by the flooder's `dora` mode from interface `c`.
    fn dora(&self, c: &str, mac: &str, tries: u32) -> String {
        let o = self.cli.command(flood_bin()).args(["dora", c, mac, &tries.to_string()]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

fn stop(mut g: ChildGuard) {
    g.signal(libc::SIGTERM);
    g.wait_timeout(Duration::from_secs(10)).expect("serve stops on SIGTERM");
}

/// Runs a shell line as `nobody` (the user serve drops to), as an attacker who took it over.
fn as_nobody(line: &str) -> std::process::Output {
    std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c", line])
        .output()
        .unwrap()
}

/// Finding 1: the unprivileged server user plants symlinks in the state folder; root must not
/// follow them on the next start (today's code chowned the victim to `nobody`).
#[test]
fn nobody_cannot_make_root_follow_planted_links() {
    harness::require_root("the attack runs in network namespaces");
    let lab = Lab::new("full");
    let victim = lab.dir.path().join("victim");
    std::fs::write(&victim, b"precious root file\n").unwrap();
    let state = lab.state();
    let (srv, log) = lab.serve(&state, "first");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    stop(srv);
    let plant = format!(
        "for f in stages.log leases leases.tmp; do ln -sf {v} {s}/$f; done",
        v = victim.display(),
        s = state.display()
    );
    let planted = as_nobody(&plant);
    let st = std::fs::metadata(&state).unwrap();
    assert_eq!(
        (st.uid(), st.mode() & 0o022),
        (0, 0),
        "state folder must stay root-owned, not group/other-writable"
    );
    assert!(!planted.status.success(), "nobody could write into the state folder");
    let (srv, log) = lab.serve(&state, "second");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    stop(srv);

    // The layout an older mosboot left behind: the folder handed to nobody, links planted in it.
    run(&["chown", "-R", "nobody:nogroup", state.to_str().unwrap()]);
    let planted = as_nobody(&plant);
    assert!(planted.status.success(), "{}", String::from_utf8_lossy(&planted.stderr));
    let (mut srv, log) = lab.serve(&state, "legacy");
    let exit = srv.wait_timeout(Duration::from_secs(10));
    let text = read(&log);
    assert!(exit.is_some_and(|s| !s.success()), "serve must refuse a planted link: {text}");
    assert!(text.contains("is a symbolic link") && text.contains("refusing to follow"), "{text}");
    let v = std::fs::metadata(&victim).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious root file\n");
    assert_eq!((v.uid(), v.gid()), (0, 0), "victim owner changed");
    let st = std::fs::metadata(&state).unwrap();
    assert_eq!(st.uid(), 0, "state folder taken back for root");
}

fn udhcpc(lab: &Lab, iface: &str, secs: u32) -> std::process::Output {
    lab.cli
        .command("udhcpc")
        .args([
            "-f",
            "-q",
            "-n",
            "-t",
            &secs.to_string(),
            "-T",
            "1",
            "-A",
            "1",
            "-i",
            iface,
            "-s",
            "/bin/true",
        ])
        .output()
        .unwrap()
}

/// Finding 2: 1000 random MACs (half plain BOOTP, half full DORA) must not lock the lab out:
/// a PC switched on right after the flood gets an address within 60 s, and no binding outlives
/// `lease_time`.
#[test]
fn dhcp_flood_of_1000_macs_does_not_lock_out_a_new_pc() {
    harness::require_root("the attack runs in network namespaces");
    let mut lab = Lab::new("full");
    let attacker = lab.port(None);
    let pc = lab.port(Some("52:54:00:aa:bb:01"));
    let state = lab.state();
    let (_srv, log) = lab.serve(&state, "flood");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    let o = lab.cli.command(flood_bin()).args(["dhcp", &attacker, "1000", "7"]).output().unwrap();
    eprintln!("flood: {}", String::from_utf8_lossy(&o.stdout).trim());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let flood_done = Instant::now();
    let o = udhcpc(&lab, &pc, 60);
    let took = flood_done.elapsed();
    let text = read(&log);
    assert!(
        o.status.success(),
        "new PC got no address within 60 s of the flood:\n{}\nserver:\n{}",
        String::from_utf8_lossy(&o.stderr),
        text.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    eprintln!("new PC bound {:.1} s after the flood", took.as_secs_f64());
    assert!(text.contains("DHCP flood: more than"), "no flood warning:\n{text}");
    assert!(
        text.lines().filter(|l| l.contains("DHCP flood")).count() <= 10,
        "flood warning not rate-limited"
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (leases, _) = netboot::leases::read_leases(&state.join("leases")).unwrap();
    assert!(!leases.is_empty());
    for l in &leases {
        assert!(l.expires <= now + 3600 + 5, "binding longer than lease_time: {l:?}");
    }
    assert!(leases.iter().any(|l| l.mac.to_string() == "52:54:00:aa:bb:01"), "{leases:?}");
    // The flood filled the pool; the PC got a flood MAC's address.
    assert!(
        text.contains("pool is full: offering the address of a MAC that never fetched a boot file"),
        "{text}"
    );
}

/// `[serve] dhcp_new_mac_burst`: with the default limit a flood of 500 new MACs (plus 500
/// BOOTP requests, ignored) gets about 256 OFFERs and the flood warning; raised for a big lab,
/// the same flood is answered whole and nothing is called a flood.
#[test]
fn a_raised_new_mac_limit_answers_a_lab_bigger_than_the_default_burst() {
    harness::require_root("the flood runs in network namespaces");
    let mut lab = Lab::on("10.79.7.254/21", "10.79.0.1-10.79.7.250", "full");
    let attacker = lab.port(None);
    // A /21 has more addresses than ws001-ws254 can name.
    let cfg = read(&lab.cfg()).replace("hostname = \"ltsp\"", "hostname = \"mosix\"");
    std::fs::write(lab.cfg(), &cfg).unwrap();
    let flood = |lab: &Lab, tag: &str, seed: &str| {
        let state = lab.dir.path().join(format!("state-{tag}"));
        let (srv, log) = lab.serve(&state, tag);
        let o = lab.cli.command(flood_bin()).args(["dhcp", &attacker, "1000", seed]).output().unwrap();
        let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        eprintln!("{tag}: {out}");
        stop(srv);
        // "sent S offers O acks A"
        let offers: u32 = out.split_whitespace().nth(3).and_then(|n| n.parse().ok()).expect("flood summary");
        (offers, read(&log))
    };
    let (offers, text) = flood(&lab, "default", "21");
    assert!((256..400).contains(&offers), "default limit: {offers} OFFERs for 500 new MACs\n{text}");
    assert!(text.contains("DHCP flood: more than 256 new MACs at once or 20 per second"), "{text}");

    std::fs::write(lab.cfg(), format!("{cfg}\n[serve]\ndhcp_new_mac_burst = 4000\n")).unwrap();
    let (offers, text) = flood(&lab, "raised", "22");
    assert!(offers >= 450, "raised limit: only {offers} OFFERs for 500 new MACs\n{text}");
    assert!(!text.contains("DHCP flood"), "a raised limit still called it a flood:\n{text}");
}

/// A small tmpfs the test mounts (and unmounts on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(at: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&at).unwrap();
        run(&["mount", "-t", "tmpfs", "-o", &format!("size={size},mode=755"), "tmpfs", at.to_str().unwrap()]);
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Finding 3: a full disk. While the state folder has no space, OFFERs still go out and TFTP
/// still serves, but no ACK leaves without its record, with a clear error; once space is back,
/// ACKs resume without a restart.
#[test]
fn full_disk_withholds_acks_and_recovers_without_restart() {
    harness::require_root("the attack runs in network namespaces");
    let mut lab = Lab::new("full");
    let pc = lab.port(Some("52:54:00:aa:bb:02"));
    lab.cli.addr(&pc, "192.168.79.200/24");
    let fs = Tmpfs::new(lab.dir.path().join("fs"), "512k");
    let state = fs.0.join("state");
    std::fs::create_dir_all(&state).unwrap();
    // A lease log that ends exactly on a page boundary, so the next record needs a new page.
    let mut seed = String::from("# mosboot lease log v1\n");
    seed.push_str(&format!("#{}\n", "-".repeat(4096 - seed.len() - 2)));
    assert_eq!(seed.len(), 4096);
    std::fs::write(state.join("leases"), &seed).unwrap();
    let (_srv, log) = lab.serve(&state, "enospc");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));

    let fill = fs.0.join("fill");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", &format!("of={}", fill.display())])
        .stderr(Stdio::null())
        .status();
    let full = lab.dora(&pc, "52:54:00:aa:bb:02", 3);
    assert!(full.contains("offer 192.168.79.10"), "no OFFER while the disk is full: {full}\n{}", read(&log));
    assert!(!full.contains("ack "), "ACK without its record: {full}");
    let text = read(&log);
    assert!(text.contains("lease log write failed") && text.contains("No space left on device"), "{text}");
    let got = lab.dir.path().join("got");
    let o = tftp_get(&lab.cli, "pxelinux.0", &got);
    assert!(o.status.success(), "TFTP while the disk is full: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(lab.out().join("tftpboot/pxelinux.0")).unwrap());

    std::fs::remove_file(&fill).unwrap();
    let back = lab.dora(&pc, "52:54:00:aa:bb:02", 5);
    assert!(back.contains("ack 192.168.79.10"), "ACKs did not resume: {back}\n{}", read(&log));
    // The log is written by its own thread (answers never wait for it): the line may land just
    // after the ACK it precedes.
    assert!(
        harness::wait_until(Duration::from_secs(5), || read(&log).contains("lease log writable again")),
        "{}",
        read(&log)
    );
    let (leases, warnings) = netboot::leases::read_leases(&state.join("leases")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(leases.len(), 1, "{leases:?}");
}

fn tftp_get(ns: &Netns, file: &str, to: &Path) -> std::process::Output {
    ns.command("busybox").args(["tftp", "-g", "-r", file, "-l"]).arg(to).arg(SERVER).output().unwrap()
}

/// Finding 4: one address sending ~150 unanswered RRQs a second (from new ports, never ACKing)
/// must not keep a PC at another address from fetching its boot file.
#[test]
fn tftp_rrq_flood_from_one_address_does_not_keep_others_out() {
    harness::require_root("the attack runs in network namespaces");
    let mut lab = Lab::new("full");
    let atk = lab.port(None);
    lab.cli.addr(&atk, "192.168.79.200/24");
    let good_ns = lab.host("sgood", "02:00:00:00:ff:01");
    good_ns.addr("eth0", "192.168.79.201/24");
    let (_srv, log) = lab.serve(&lab.state(), "tftpflood");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    let mut cmd = lab.cli.command(flood_bin());
    cmd.args(["tftp", SERVER, "900", "150"]).stdout(Stdio::null());
    let _flood = ChildGuard::spawn(&mut cmd);
    // Let the flood reach its peak (today's code: every one of the 512 slots held).
    std::thread::sleep(Duration::from_secs(6));
    let got = lab.dir.path().join("got");
    let o = tftp_get(&good_ns, "pxelinux.0", &got);
    let text = read(&log);
    assert!(o.status.success(), "fetch during the flood: {}\n{text}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(lab.out().join("tftpboot/pxelinux.0")).unwrap());
    assert!(text.contains("tftp: refused: too many transfers from your address"), "{text}");
}

/// Finding 6: a file name or mode with a newline must not forge a log line.
#[test]
fn tftp_names_cannot_forge_log_lines() {
    harness::require_root("the attack runs in network namespaces");
    let mut lab = Lab::new("full");
    let c = lab.port(None);
    lab.cli.addr(&c, "192.168.79.202/24");
    let (_srv, log) = lab.serve(&lab.state(), "forge");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    for args in [
        vec!["rrq", SERVER, "../x\nFORGED: acked mac=02:00:00:00:00:01\rFORGED"],
        vec!["rrq", SERVER, "pxelinux.0", "oct\nFORGED: mode"],
    ] {
        let o = lab.cli.command(flood_bin()).args(&args).output().unwrap();
        assert!(o.status.success());
    }
    assert!(
        wait_until(Duration::from_secs(5), || read(&log).matches("FORGED").count() >= 3),
        "{}",
        read(&log)
    );
    let text = read(&log);
    for line in text.lines() {
        assert!(!line.starts_with("FORGED") && !line.contains('\r'), "forged line: {line:?}\n{text}");
    }
}

/// Finding 5: spoofing and reflection. A DECLINE from a MAC that holds nothing quarantines
/// nothing; port 4011 does not answer a source port other than 68/4011 (a reflector aimed at
/// any UDP service), and never echoes oversized options 97/82.
#[test]
fn spoofed_decline_and_4011_reflection_are_refused() {
    harness::require_root("the attack runs in network namespaces");
    let mut lab = Lab::new("full");
    let atk = lab.port(None);
    let pc = lab.port(Some("52:54:00:aa:bb:05"));
    // Debug for the handler: it says when it ignores a DECLINE, so the test knows it was handled.
    let (srv, log) = lab.serve_via(&[], &lab.state(), "decline", "info,netboot::dhcp::handler=debug");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    let o = lab
        .cli
        .command(flood_bin())
        .args(["decline", &atk, "02:de:c1:1e:00:01", "192.168.79.10", SERVER])
        .output()
        .unwrap();
    assert!(o.status.success());
    let ignored = "DECLINE from a MAC that does not hold the address ignored";
    assert!(wait_until(Duration::from_secs(10), || read(&log).contains(ignored)), "{}", read(&log));
    let got = lab.dora(&pc, "52:54:00:aa:bb:05", 3);
    assert!(got.contains("ack 192.168.79.10"), "a spoofed DECLINE quarantined .10: {got}\n{}", read(&log));
    stop(srv);

    let mut lab = Lab::new("proxy");
    let atk = lab.port(None);
    lab.cli.addr(&atk, "192.168.79.203/24");
    let (_srv, log) = lab.serve(&lab.state(), "4011");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    let ask = |port: &str| {
        let o = lab.cli.command(flood_bin()).args(["pxe4011", SERVER, port]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(ask("0"), "noreply", "4011 answered an arbitrary source port");
    let answer = ask("4011");
    assert!(answer.starts_with("reply ") && answer.ends_with("uuid=false relay=false"), "{answer}");
    let n: usize = answer.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(n <= 400, "reply of {n} bytes to a request of about 800: amplification");
}

/// Finding 7 (build side): a version that would inject shell lines into every node's
/// openmosix-start is a config error naming the key, not a build.
#[test]
fn openmosix_version_injection_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cluster.toml");
    std::fs::write(
        &cfg,
        "[cluster]\nname = \"lab\"\ninterface = \"eth1\"\nserver = \"192.168.0.254/24\"\npool = \"192.168.0.1-192.168.0.9\"\n\
         [openmosix]\nversion = \"2.4.26-x\\ntouch /p\\n#\"\n",
    )
    .unwrap();
    let o =
        std::process::Command::new(harness::mosboot_bin()).arg("-c").arg(&cfg).arg("check").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted: {err}");
    assert!(err.contains(":7: openmosix.version") && err.contains(r"\ntouch"), "{err}");
}

/// `CapEff`, `CapPrm`, `CapInh`, `CapAmb`, `CapBnd` and `NoNewPrivs` of a running process.
fn cap_status(pid: u32) -> std::collections::BTreeMap<String, String> {
    read(Path::new(&format!("/proc/{pid}/status")))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.starts_with("Cap") || *k == "NoNewPrivs" || *k == "Uid")
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Finding 8: started the systemd way (a plain user with CAP_NET_BIND_SERVICE and CAP_NET_RAW
/// as ambient capabilities) or as root, serve holds no capability once it serves.
#[test]
fn serve_keeps_no_capability_after_binding() {
    harness::require_root("the attack runs in network namespaces");
    let lab = Lab::new("full");
    let zero = "0000000000000000";
    // As root: switches to nobody, bounding set emptied too.
    let (srv, log) = lab.serve(&lab.state(), "root");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    let st = cap_status(srv.pid());
    assert_eq!(
        (st["CapEff"].as_str(), st["CapPrm"].as_str(), st["CapAmb"].as_str()),
        (zero, zero, zero),
        "{st:?}"
    );
    assert_eq!((st["CapBnd"].as_str(), st["NoNewPrivs"].as_str()), (zero, "1"), "{st:?}");
    stop(srv);

    // As nobody with only the two capabilities (its own state folder, as systemd's StateDirectory).
    let state = lab.dir.path().join("state-caps");
    std::fs::create_dir(&state).unwrap();
    run(&["chown", "nobody:nogroup", state.to_str().unwrap()]);
    let wrapper = [
        "setpriv",
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=+net_bind_service,+net_raw",
        "--ambient-caps=+net_bind_service,+net_raw",
    ];
    let (srv, log) = lab.serve_via(&wrapper, &state, "caps", "info");
    assert!(read(&log).contains("mosboot serve:"), "{}", read(&log));
    assert_eq!(read(Path::new(&format!("/proc/{}/comm", srv.pid()))).trim(), "mosboot");
    let st = cap_status(srv.pid());
    assert!(st["Uid"].starts_with("65534"), "{st:?}");
    for k in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(st[k], zero, "{k} after start: {st:?}\n{}", read(&log));
    }
    assert_eq!(st["NoNewPrivs"], "1", "{st:?}");
    stop(srv);
}

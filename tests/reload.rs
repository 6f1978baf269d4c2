//! Live reload of `mosboot serve` (issue 12, item 3), against a real serve in network namespaces
//! this test creates: a rebuild is picked up without a signal, SIGHUP picks up an edited config,
//! leases survive, a config that fails its check (or needs a restart) is refused while the old
//! plan keeps answering, and a TFTP transfer running across a rebuild finishes on the old file.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{ChildGuard, Lab, fake_busybox, fake_bzimage, udhcpc_once, wait_until};

const SERVER: &str = "192.168.0.254";

fn pinned(mac: &str, ip: &str, name: &str) -> String {
    format!("[[node]]\nmac = \"{mac}\"\nip = \"{ip}\"\nhostname = \"{name}\"\n")
}

/// The sample cluster on br0 with `nodes` appended (and `set` applied), beside a synthetic
/// kernel and busybox in the lab folder (which `nobody`, the user serve drops to, can read).
fn write_config(lab: &Lab, set: &[(&str, &str)], nodes: &str) {
    let mut all = set.to_vec();
    if !set.iter().any(|(k, _)| *k == "cluster.interface") {
        all.push(("cluster.interface", "\"br0\""));
    }
    std::fs::write(cfg(lab), harness::sample_cluster(&all, nodes)).unwrap();
}

fn cfg(lab: &Lab) -> PathBuf {
    lab.dir.path().join("cluster.toml")
}
fn out(lab: &Lab) -> PathBuf {
    lab.dir.path().join("mosboot-out")
}

fn project(tag: &str) -> Lab {
    let lab = Lab::new(tag, &format!("{SERVER}/24"));
    let p = lab.dir.path();
    for d in ["kernels", "node-kit"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(p.join("kernels/bzImage"), fake_bzimage("2.4.26-om1")).unwrap();
    std::fs::write(p.join("node-kit/busybox"), fake_busybox()).unwrap();
    write_config(&lab, &[], "");
    build(&lab);
    lab
}

fn build(lab: &Lab) {
    let o = Command::new(harness::mosboot_bin()).arg("-c").arg(cfg(lab)).arg("build").output().unwrap();
    assert!(o.status.success(), "mosboot build: {}", String::from_utf8_lossy(&o.stderr));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Starts `mosboot serve` with `NOTIFY_SOCKET` pointing at `notify`; waits until it is ready.
fn serve(lab: &Lab, notify: &Path) -> (ChildGuard, PathBuf) {
    let log = lab.dir.path().join("serve.log");
    let mut cmd = lab.srv.command(harness::mosboot_bin());
    cmd.arg("-c").arg(cfg(lab)).arg("serve").arg("--state").arg(lab.dir.path().join("state"));
    cmd.arg("--out").arg(out(lab)).arg("--force").env("RUST_LOG", "info").env("NOTIFY_SOCKET", notify);
    let mut g = harness::spawn_until_line(&mut cmd, &log, "mosboot serve:", Duration::from_secs(15));
    let up = read(&log).contains("mosboot serve:");
    assert!(up && g.child.try_wait().unwrap().is_none(), "serve did not start:\n{}", read(&log));
    (g, log)
}

/// A notify socket the unprivileged server may write to.
fn notify_socket(lab: &Lab) -> (UnixDatagram, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let path = lab.dir.path().join("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (sock, path)
}

fn next_notice(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a notice from serve");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

/// The address (and hostname) udhcpc gets on `iface`.
fn lease(lab: &Lab, iface: &str, script: &Path, log: &Path) -> (String, String) {
    let o = udhcpc_once(&lab.cli, iface, 5, &[], script);
    assert!(o.status.success(), "udhcpc on {iface} got no lease; serve log:\n{}", read(log));
    let env = lab.udhcpc_env(iface, "bound");
    (env.get("ip").cloned().unwrap_or_default(), env.get("hostname").cloned().unwrap_or_default())
}

fn count(log: &Path, what: &str) -> usize {
    read(log).matches(what).count()
}

#[test]
fn rebuild_and_sighup_reload_the_plan_and_leases_survive() {
    harness::require_root("network namespaces");
    let mut lab = project("rl");
    let (notices, npath) = notify_socket(&lab);
    let (srv, log) = serve(&lab, &npath);
    assert_eq!(next_notice(&notices), "READY=1");
    let script = lab.udhcpc_script();
    let a = lab.client("02:00:00:00:00:0a");
    let (ip_a, _) = lease(&lab, &a, &script, &log);

    // (a) A rebuild with a new pinned node, no signal: serve notices the swapped tree.
    let b_node = pinned("02:00:00:00:00:0b", "192.168.0.200", "pinned-b");
    write_config(&lab, &[], &b_node);
    build(&lab);
    assert!(
        wait_until(Duration::from_secs(5), || count(&log, "reloaded: ") == 1),
        "the rebuild was not picked up:\n{}",
        read(&log)
    );
    let b = lab.client("02:00:00:00:00:0b");
    assert_eq!(lease(&lab, &b, &script, &log), ("192.168.0.200".into(), "pinned-b".into()));
    let reloading = next_notice(&notices);
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
    assert_eq!(next_notice(&notices), "READY=1");

    // (b) Another pinned node in the config, then SIGHUP (`systemctl reload`).
    let c_node = pinned("02:00:00:00:00:0c", "192.168.0.201", "pinned-c");
    write_config(&lab, &[], &format!("{b_node}\n{c_node}"));
    srv.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || count(&log, "reloaded: ") == 2),
        "SIGHUP did not reload:\n{}",
        read(&log)
    );
    assert!(read(&log).contains(" nodes in the map, 2 pinned"), "{}", read(&log));
    let c = lab.client("02:00:00:00:00:0c");
    assert_eq!(lease(&lab, &c, &script, &log).0, "192.168.0.201");
    // The first client's lease survived both reloads.
    assert_eq!(lease(&lab, &a, &script, &log).0, ip_a);
    let o = Command::new(harness::mosboot_bin())
        .arg("-c")
        .arg(cfg(&lab))
        .args(["nodes", "--json", "--state"])
        .arg(lab.dir.path().join("state"))
        .output()
        .unwrap();
    let nodes = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success() && nodes.contains(&ip_a) && nodes.contains("02:00:00:00:00:0a"), "{nodes}");

    // (c) A config that fails its check: refused with every problem, the old plan answers.
    std::fs::write(
        cfg(&lab),
        harness::sample_cluster(
            &[("cluster.interface", "\"br0\""), ("cluster.pool", "\"10.9.9.1-10.9.9.5\"")],
            "bogus_key = 1\n",
        ),
    )
    .unwrap();
    srv.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || count(&log, "reload refused") == 1),
        "the broken config was not refused:\n{}",
        read(&log)
    );
    let text = read(&log);
    assert!(text.lines().any(|l| l.contains("ERROR") && l.contains("bogus_key")), "{text}");
    assert!(text.lines().any(|l| l.contains("ERROR") && l.contains("pool")), "{text}");
    // ...and one that changes what only a restart can change.
    write_config(&lab, &[("cluster.interface", "\"br1\"")], &b_node);
    srv.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || count(&log, "reload refused") == 2), "{}", read(&log));
    assert!(
        read(&log).contains("cluster.interface changed from br0 to br1: that needs a restart"),
        "{}",
        read(&log)
    );
    let mut srv = srv;
    assert!(srv.child.try_wait().unwrap().is_none(), "serve died:\n{}", read(&log));
    assert_eq!(lease(&lab, &c, &script, &log).0, "192.168.0.201", "the old plan still answers");
    srv.signal(libc::SIGTERM);
    srv.wait_timeout(Duration::from_secs(10)).expect("serve stops on SIGTERM");
}

/// (d) A transfer started before a rebuild that changes the file ends with the old bytes; the
/// next request gets the new file.
#[test]
fn a_transfer_running_across_a_rebuild_finishes_on_the_old_file() {
    harness::require_root("network namespaces and taps");
    let lab = project("rt");
    let (_notices, npath) = notify_socket(&lab);
    let (_srv, log) = serve(&lab, &npath);
    // A slow link: the client reaches br0 through taps joined by a forwarder that holds every
    // frame (this kernel has no netem), so the lock-step transfer takes seconds.
    lab.srv.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap"]);
    lab.srv.ip(&["link", "set", "tap0", "master", "br0", "up"]);
    lab.cli.ip(&["tuntap", "add", "dev", "tap1", "mode", "tap"]);
    lab.cli.addr("tap1", "192.168.0.77/24");
    lab.cli.ip(&["link", "set", "tap1", "up"]);
    let fwd_log = lab.dir.path().join("fwd.log");
    let mut fwd = ChildGuard::spawn(
        Command::new(env!("CARGO_BIN_EXE_mosboot-delayfwd"))
            .arg("--a")
            .arg(format!("{}:tap0", lab.srv.name))
            .arg("--b")
            .arg(format!("{}:tap1", lab.cli.name))
            .args(["--delay-us", "40000"])
            .stdout(std::fs::File::create(&fwd_log).unwrap())
            .stderr(Stdio::null()),
    );
    harness::wait_for_line("delayfwd", &fwd_log, "forwarding", &mut fwd, Duration::from_secs(10));

    let file = out(&lab).join("tftpboot/initrd.gz");
    let old = std::fs::read(&file).unwrap();
    let got = lab.dir.path().join("got");
    let mut tftp = ChildGuard::spawn(
        lab.cli
            .command("curl")
            .args(["-sS", "--tftp-blksize", "512", "-o"])
            .arg(&got)
            .arg(format!("tftp://{SERVER}/initrd.gz")),
    );
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::metadata(&got).is_ok_and(|m| m.len() >= 1024)),
        "the transfer did not start; serve log:\n{}\nforwarder:\n{}",
        read(&log),
        read(&fwd_log)
    );
    write_config(&lab, &[], &pinned("02:00:00:00:00:0d", "192.168.0.202", "pinned-d"));
    build(&lab);
    let new = std::fs::read(&file).unwrap();
    assert_ne!(old, new, "the rebuild must change initrd.gz for this test to mean anything");
    assert!(tftp.child.try_wait().unwrap().is_none(), "the transfer ended before the rebuild; slow it down");
    let status = tftp.wait_timeout(Duration::from_secs(40)).expect("tftp finishes");
    assert!(status.success(), "tftp failed; serve log:\n{}", read(&log));
    assert!(std::fs::read(&got).unwrap() == old, "the running transfer did not end with the old file");
    assert!(wait_until(Duration::from_secs(5), || count(&log, "reloaded: ") == 1), "{}", read(&log));

    let again = lab.dir.path().join("again");
    let o = lab
        .cli
        .command("busybox")
        .args(["tftp", "-g", "-b", "1400", "-r", "initrd.gz", "-l"])
        .arg(&again)
        .arg(SERVER)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&again).unwrap() == new, "a new request must get the new file");
}

//! RFC 2090 multicast TFTP against real atftp clients (`--option multicast`). atftp binds the
//! group's port without SO_REUSEADDR, so each client runs in its own network namespace, all on
//! one bridge in the server's namespace (as PCs on a hub); the server is the test daemon
//! (`mosboot-test-tftpd --multicast`), which prints each finished session's counters. A tbf on
//! the server's port (8 Mbit/s) makes a 2 MiB file take ~2 s, so joins and kills land mid-file.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{ChildGuard, Netns, random_bytes, veth, wait_until};

const TFTPD: &str = env!("CARGO_BIN_EXE_mosboot-test-tftpd");
const GROUP: &str = "239.255.69.1:1758";
const SERVER: &str = "10.70.0.1";
const BLKSIZE: u64 = 1432;

/// One lab: the server's namespace with bridge `br0`, one namespace per client, a served tree.
struct Lab {
    srv: Netns,
    clients: Vec<Netns>,
    dir: tempfile::TempDir,
}

impl Lab {
    fn new(n: usize, rate: Option<&str>) -> Lab {
        let srv = Netns::new("mcs");
        srv.add_bridge("br0");
        srv.addr("br0", &format!("{SERVER}/24"));
        srv.ip(&["route", "add", "224.0.0.0/4", "dev", "br0"]);
        if let Some(rate) = rate {
            let tc = srv.sh(&format!("tc qdisc add dev br0 root tbf rate {rate} burst 16kb latency 2s"));
            assert!(tc.status.success(), "tbf: {}", String::from_utf8_lossy(&tc.stderr));
        }
        let mut clients = Vec::new();
        for i in 0..n {
            let ns = Netns::new("mcc");
            let (a, b) = (harness::unique_name("mca"), harness::unique_name("mcb"));
            veth(&srv, &a, &ns, &b);
            srv.ip(&["link", "set", &a, "master", "br0"]);
            ns.addr(&b, &format!("10.70.0.{}/24", i + 10));
            ns.ip(&["route", "add", "224.0.0.0/4", "dev", &b]);
            clients.push(ns);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("secret"), b"SECRET outside the root\n").unwrap();
        Lab { srv, clients, dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn out(&self, i: usize) -> PathBuf {
        self.dir.path().join("out").join(format!("c{i}"))
    }

    fn put(&self, name: &str, data: &[u8]) {
        std::fs::write(self.root().join(name), data).unwrap();
    }

    /// Client `i` fetches `file` with atftp (with the multicast option unless `plain`).
    fn fetch(&self, i: usize, file: &str, plain: bool) -> ChildGuard {
        let mut cmd = self.clients[i].command("atftp");
        if !plain {
            cmd.args(["--option", "multicast"]);
        }
        cmd.args(["--option", &format!("blksize {BLKSIZE}"), "-g", "-r", file, "-l"])
            .arg(self.out(i))
            .arg(SERVER)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        ChildGuard::spawn(&mut cmd)
    }

    fn got(&self, i: usize) -> Vec<u8> {
        std::fs::read(self.out(i)).unwrap_or_default()
    }
}

/// The test daemon in the server's namespace; stdout lines collected.
struct Tftpd {
    _child: ChildGuard,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tftpd {
    fn start(lab: &Lab, extra: &[&str]) -> Tftpd {
        let mut cmd = lab.srv.command(TFTPD);
        cmd.args(["--bind", &format!("{SERVER}:69"), "--root"])
            .arg(lab.root())
            .args(["--max-per-source", "4"])
            .args(extra)
            .env("RUST_LOG", std::env::var("TFTPD_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut cmd);
        let stdout = child.child.stdout.take().unwrap();
        let lines = harness::collect_lines(stdout);
        let t = Tftpd { _child: child, lines };
        assert!(wait_until(Duration::from_secs(10), || t
            .lines()
            .iter()
            .any(|l| l.starts_with("listening "))));
        t
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The counters of the finished session of `file`: (clients, completed, blocks, sent, passes).
    fn session(&self, file: &str) -> Option<[u64; 5]> {
        let prefix = format!("multicast {file} ");
        let line = self.lines().into_iter().find(|l| l.starts_with(&prefix))?;
        let mut v = [0u64; 5];
        for (slot, key) in v.iter_mut().zip(["clients", "completed", "blocks", "sent", "passes"]) {
            *slot = line
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {line:?}"));
        }
        Some(v)
    }

    fn wait_session(&self, file: &str, limit: Duration) -> [u64; 5] {
        let mut got = None;
        assert!(
            wait_until(limit, || {
                got = self.session(file);
                got.is_some()
            }),
            "no multicast session line for {file}: {:?}",
            self.lines()
        );
        got.unwrap()
    }
}

fn wait_all(children: &mut [ChildGuard], limit: Duration) {
    let t0 = Instant::now();
    for c in children.iter_mut() {
        let left = limit.saturating_sub(t0.elapsed());
        assert!(c.wait_timeout(left).is_some(), "a client still runs after {limit:?}");
    }
}

fn blocks(len: usize) -> u64 {
    len as u64 / BLKSIZE + 1
}

/// Four clients at once get byte-identical files, and the group saw about one DATA per block,
/// not one per client; a fifth client without the option is served by unicast meanwhile.
#[test]
fn clients_at_once_share_one_stream() {
    let lab = Lab::new(5, Some("8mbit"));
    let data = random_bytes(2 * 1024 * 1024, 21);
    lab.put("vmlinuz", &data);
    let srv = Tftpd::start(&lab, &["--multicast", GROUP]);
    let t0 = Instant::now();
    let mut kids: Vec<ChildGuard> = (0..4).map(|i| lab.fetch(i, "vmlinuz", false)).collect();
    kids.push(lab.fetch(4, "vmlinuz", true));
    wait_all(&mut kids, Duration::from_secs(60));
    for i in 0..5 {
        assert!(lab.got(i) == data, "client {i} got {} bytes, not the file", lab.got(i).len());
    }
    let [clients, completed, nblocks, sent, passes] = srv.wait_session("vmlinuz", Duration::from_secs(5));
    eprintln!(
        "4 multicast clients + 1 unicast: {:?}; session {clients} clients, {nblocks} blocks, {sent} DATA, {passes} passes",
        t0.elapsed()
    );
    assert_eq!((clients, completed, nblocks), (4, 4, blocks(data.len())));
    // All four asked within milliseconds of a ~2 s pass: one pass plus a short gap at most.
    assert!(sent <= nblocks * 12 / 10, "{sent} DATA for {nblocks} blocks: not one send per block");
}

/// A late joiner gets the rest from the running pass and its gap from a second one; a passive
/// client killed mid-file and a master killed mid-file do not stop the others.
#[test]
fn late_joiner_and_leavers() {
    let lab = Lab::new(4, Some("8mbit"));
    let data = random_bytes(2 * 1024 * 1024, 22);
    lab.put("initrd.gz", &data);
    let srv = Tftpd::start(&lab, &["--multicast", GROUP, "--timeout-ms", "300", "--retries", "3"]);
    let mut master = lab.fetch(0, "initrd.gz", false);
    std::thread::sleep(Duration::from_millis(150));
    let mut passive = lab.fetch(1, "initrd.gz", false);
    let stays = lab.fetch(2, "initrd.gz", false);
    std::thread::sleep(Duration::from_millis(500));
    let late = lab.fetch(3, "initrd.gz", false);
    std::thread::sleep(Duration::from_millis(200));
    // Killed mid-file, without a word (no ERROR): the server finds out by their silence.
    master.signal(libc::SIGKILL);
    passive.signal(libc::SIGKILL);
    let _ = (master.wait_timeout(Duration::from_secs(2)), passive.wait_timeout(Duration::from_secs(2)));
    let mut rest = vec![stays, late];
    wait_all(&mut rest, Duration::from_secs(60));
    assert!(lab.got(2) == data, "the client that stayed got {} bytes", lab.got(2).len());
    assert!(lab.got(3) == data, "the late joiner got {} bytes", lab.got(3).len());
    assert!(lab.got(0).len() < data.len(), "the master was killed before the end (test too slow?)");
    let [clients, completed, nblocks, sent, passes] = srv.wait_session("initrd.gz", Duration::from_secs(10));
    eprintln!(
        "late joiner + 2 leavers: {clients} clients, {completed} completed, {nblocks} blocks, {sent} DATA, {passes} passes"
    );
    assert_eq!((clients, completed), (4, 2));
    // The first pass went on for the others after the master died (the next member took over
    // where it stopped), and the late joiner's gap was sent once more: well under 2 copies.
    assert!(passes >= 2, "the late joiner's gap needs a pass of its own");
    assert!(sent < nblocks * 2, "{sent} DATA for {nblocks} blocks");
}

/// Names outside the root are refused on the multicast path too, and nothing is sent.
#[test]
fn multicast_names_stay_in_the_root() {
    let lab = Lab::new(1, None);
    lab.put("ok", b"fine\n");
    std::os::unix::fs::symlink(lab.dir.path().join("secret"), lab.root().join("link")).unwrap();
    let srv = Tftpd::start(&lab, &["--multicast", GROUP]);
    for name in ["../secret", "link", "/../secret", "..\\secret"] {
        let mut c = lab.fetch(0, name, false);
        assert!(c.wait_timeout(Duration::from_secs(30)).is_some());
        let got = lab.got(0);
        assert!(!String::from_utf8_lossy(&got).contains("SECRET"), "{name} leaked");
    }
    let mut c = lab.fetch(0, "ok", false);
    assert!(c.wait_timeout(Duration::from_secs(30)).is_some());
    assert_eq!(lab.got(0), b"fine\n");
    assert!(srv.wait_session("ok", Duration::from_secs(5))[1] == 1);
    // A whole number of blocks: the last DATA is empty, and must be sent (and counted).
    let exact = random_bytes(3 * BLKSIZE as usize, 24);
    lab.put("exact", &exact);
    let mut c = lab.fetch(0, "exact", false);
    assert!(c.wait_timeout(Duration::from_secs(30)).is_some());
    assert!(lab.got(0) == exact, "got {} bytes of {}", lab.got(0).len(), exact.len());
    assert_eq!(srv.wait_session("exact", Duration::from_secs(5))[2..4], [4, 4]);
    assert!(srv.lines().iter().all(|l| !l.contains("secret") && !l.contains("link")), "{:?}", srv.lines());
}

/// Multicast off: a client asking for it gets a plain unicast transfer (no session).
#[test]
fn multicast_off_means_unicast() {
    let lab = Lab::new(1, None);
    let data = random_bytes(300_000, 23);
    lab.put("vmlinuz", &data);
    let srv = Tftpd::start(&lab, &[]);
    let mut c = lab.fetch(0, "vmlinuz", false);
    assert!(c.wait_timeout(Duration::from_secs(30)).is_some());
    assert!(lab.got(0) == data);
    assert!(wait_until(Duration::from_secs(5), || srv.lines().iter().any(|l| l.starts_with("fetched "))));
    assert!(srv.session("vmlinuz").is_none());
}

/// atftp's PXE MTFTP client (`--mget`; the PXE spec's protocol, which iPXE's `mtftp://` speaks).
fn mtftp_fetch(lab: &Lab, i: usize, file: &str) -> ChildGuard {
    let mut cmd = lab.clients[i].command("atftp");
    cmd.args(["--mget", "--mtftp", "mcast-ip 239.255.1.1", "--mtftp", "client-port 3001"])
        .args(["--mtftp", "listen-delay 0", "--mtftp", "timeout-delay 1"])
        .args(["-r", file, "-l"])
        .arg(lab.out(i))
        .args([SERVER, "1759"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    ChildGuard::spawn(&mut cmd)
}

/// PXE MTFTP with an independent client: block 1 unicast from the session's socket makes atftp
/// the master, the rest reaches it through 239.255.1.1:3001 from the same socket; byte-identical.
/// Then three clients at once: every one the server completed has the file byte for byte. atftp
/// itself sometimes ends as a pure listener with a hole (block 1 never asked for: the server
/// never hears from it), and once promoted it ACKs block by block from block 1 rather than from
/// its first gap, so each of its clients costs a pass; iPXE ACKs its first gap (the lab test's
/// counters: about one copy for four nodes).
#[test]
fn mtftp_with_atftp() {
    let lab = Lab::new(3, Some("8mbit"));
    let data = random_bytes(1024 * 1024, 25);
    lab.put("vmlinuz", &data);
    let srv = Tftpd::start(&lab, &["--multicast", GROUP, "--mtftp-port", "1759"]);
    let mut one = vec![mtftp_fetch(&lab, 0, "vmlinuz")];
    wait_all(&mut one, Duration::from_secs(30));
    assert!(lab.got(0) == data, "the MTFTP client got {} bytes, not the file", lab.got(0).len());
    let [clients, completed, nblocks, sent, _] = srv.wait_session("vmlinuz", Duration::from_secs(5));
    assert_eq!((clients, completed, nblocks), (1, 1, data.len() as u64 / 512 + 1));
    assert!(sent <= nblocks + 2, "{sent} DATA for {nblocks} blocks");

    lab.put("initrd.gz", &data[..600_000]);
    let mut kids: Vec<ChildGuard> = (0..3).map(|i| mtftp_fetch(&lab, i, "initrd.gz")).collect();
    wait_all(&mut kids, Duration::from_secs(60));
    // A member that ended silently is given up after the retries (5 × 1 s).
    let [clients, completed, ..] = srv.wait_session("initrd.gz", Duration::from_secs(15));
    let served: Vec<usize> = (0..3)
        .filter(|i| {
            srv.lines().iter().any(|l| l.starts_with(&format!("fetched 10.70.0.{} initrd.gz", i + 10)))
        })
        .collect();
    assert!(completed >= 1 && served.len() as u64 == completed && clients <= 3, "{:?}", srv.lines());
    for i in served {
        assert!(lab.got(i) == data[..600_000], "client {i} got {} bytes, not the file", lab.got(i).len());
    }
}

/// iPXE's own fallback from MTFTP to plain TFTP after a partial download ends with a corrupt
/// file (it keeps the size it saw but frees its block map, so the first block "completes" it).
/// The server refuses the first plain request for a file the client was taking by MTFTP and has
/// not finished, so that download fails and the client's next source starts afresh; the next
/// plain request is served, byte for byte.
#[test]
fn plain_request_after_an_unfinished_mtftp_download_is_refused_once() {
    let lab = Lab::new(1, Some("8mbit"));
    let data = random_bytes(1024 * 1024, 27);
    lab.put("vmlinuz", &data);
    let _srv = Tftpd::start(&lab, &["--multicast", GROUP, "--mtftp-port", "1759"]);
    let mut mtftp = mtftp_fetch(&lab, 0, "vmlinuz");
    assert!(wait_until(Duration::from_secs(20), || !lab.got(0).is_empty()), "no MTFTP data arrived");
    mtftp.signal(libc::SIGKILL);
    assert!(mtftp.wait_timeout(Duration::from_secs(5)).is_some());
    assert!(lab.got(0) != data, "the MTFTP download finished before it could be cut short");
    let mut fallback = lab.fetch(0, "vmlinuz", true);
    let refused = fallback.wait_timeout(Duration::from_secs(30)).expect("atftp ends");
    assert!(!refused.success(), "the fallback request was served");
    let mut again = lab.fetch(0, "vmlinuz", true);
    assert!(again.wait_timeout(Duration::from_secs(60)).expect("atftp ends").success());
    assert!(lab.got(0) == data, "the fresh download got {} bytes, not the file", lab.got(0).len());
}

/// A node whose network never delivers the group (a switch that drops unregistered multicast,
/// a firewall) still gets the file over PXE MTFTP: after a few blocks it acknowledged only
/// once they were resent to it unicast, the server sends it every block unicast as well
/// ("master does not hear the group"), so the file arrives byte for byte at unicast speed
/// rather than one retransmission timeout per block.
#[test]
fn mtftp_master_that_does_not_hear_the_group_gets_unicast() {
    let lab = Lab::new(1, Some("8mbit"));
    let nft = lab.clients[0].sh("nft add table inet deaf && \
         nft add chain inet deaf input '{ type filter hook input priority 0; }' && \
         nft add rule inet deaf input ip daddr 239.255.1.1 counter drop");
    assert!(nft.status.success(), "nft: {}", String::from_utf8_lossy(&nft.stderr));
    let data = random_bytes(300_000, 28);
    lab.put("vmlinuz", &data);
    let srv = Tftpd::start(&lab, &["--multicast", GROUP, "--mtftp-port", "1759"]);
    let t0 = Instant::now();
    let mut one = vec![mtftp_fetch(&lab, 0, "vmlinuz")];
    wait_all(&mut one, Duration::from_secs(60));
    let took = t0.elapsed();
    assert!(lab.got(0) == data, "the deaf MTFTP client got {} bytes, not the file", lab.got(0).len());
    let dropped = lab.clients[0].sh("nft list table inet deaf");
    let listing = String::from_utf8_lossy(&dropped.stdout);
    assert!(!listing.contains("packets 0 "), "the group reached the client after all:\n{listing}");
    let [clients, completed, nblocks, sent, _] = srv.wait_session("vmlinuz", Duration::from_secs(5));
    eprintln!("deaf MTFTP client: {took:?}, {nblocks} blocks, {sent} DATA (group and unicast)");
    assert_eq!((clients, completed), (1, 1));
    // Group and unicast copies of each block, plus the few resent before it was found deaf:
    // at one retransmission (100 ms) per block the 587 blocks would take about a minute.
    assert!(sent <= nblocks * 2 + 20, "{sent} DATA for {nblocks} blocks");
    assert!(took < Duration::from_secs(20), "{took:?}: not at unicast speed");
}

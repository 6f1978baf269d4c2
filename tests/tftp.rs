//! The TFTP server against real clients (curl, tftp-hpa, atftp, busybox) and a raw UDP client
//! that plays the PXE ROM's quirks. The server runs as a real process (`mosboot-test-tftpd`, a
//! thin wrapper around `netboot::tftp::TftpServer`), each test on its own 127.0.69.N address so
//! parallel tests never meet; the lossy-link test runs in two namespaces it creates.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{ChildGuard, Netns, random_bytes, veth, wait_until};

const TFTPD: &str = env!("CARGO_BIN_EXE_mosboot-test-tftpd");

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A temp dir with `root/` (served) and `secret` next to it (must never be sent).
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::write(dir.path().join("secret"), b"SECRET outside the root\n").unwrap();
        Tree { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn put(&self, rel: &str, data: &[u8]) -> Vec<u8> {
        let p = self.root().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, data).unwrap();
        data.to_vec()
    }
    fn out(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join("out");
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }
}

fn sha256(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// The test daemon, killed on drop. Its stdout lines (events) are collected.
struct Tftpd {
    _child: ChildGuard,
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tftpd {
    fn start(ip: &str, root: &Path, extra: &[&str]) -> Tftpd {
        let mut cmd = Command::new(TFTPD);
        Self::start_cmd(&mut cmd, ip, root, extra)
    }

    fn start_cmd(cmd: &mut Command, ip: &str, root: &Path, extra: &[&str]) -> Tftpd {
        cmd.arg("--bind")
            .arg(format!("{ip}:0"))
            .arg("--root")
            .arg(root)
            .args(extra)
            .env("RUST_LOG", std::env::var("TFTPD_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped());
        let mut child = ChildGuard::spawn(cmd);
        let stdout = child.child.stdout.take().unwrap();
        let lines = harness::collect_lines(stdout);
        let mut addr = None;
        assert!(
            wait_until(Duration::from_secs(10), || {
                addr = lines
                    .lock()
                    .unwrap()
                    .iter()
                    .find_map(|l| l.strip_prefix("listening ").map(|a| a.parse().unwrap()));
                addr.is_some()
            }),
            "tftpd did not start"
        );
        Tftpd { _child: child, addr: addr.unwrap(), lines }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn has_line(&self, line: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l == line)
    }

    fn count_lines(&self, line: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| *l == line).count()
    }
}

// ---------------------------------------------------------------------------------------------
// A raw TFTP client, for the sequences real clients do not produce on demand.

fn rrq(name: &[u8], options: &[(&str, &str)]) -> Vec<u8> {
    request(1, name, options)
}

fn request(op: u16, name: &[u8], options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = op.to_be_bytes().to_vec();
    v.extend_from_slice(name);
    v.extend_from_slice(b"\0octet\0");
    for (k, val) in options {
        v.extend_from_slice(k.as_bytes());
        v.push(0);
        v.extend_from_slice(val.as_bytes());
        v.push(0);
    }
    v
}

fn ack(block: u16) -> Vec<u8> {
    let mut v = vec![0, 4];
    v.extend_from_slice(&block.to_be_bytes());
    v
}

#[derive(Debug, PartialEq)]
enum Pkt {
    Data(u16, Vec<u8>),
    Error(u16, String),
    Oack(Vec<(String, String)>),
    Other(Vec<u8>),
}

fn parse(buf: &[u8]) -> Pkt {
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    match op {
        3 => Pkt::Data(u16::from_be_bytes([buf[2], buf[3]]), buf[4..].to_vec()),
        5 => Pkt::Error(
            u16::from_be_bytes([buf[2], buf[3]]),
            String::from_utf8_lossy(&buf[4..buf.len() - 1]).into_owned(),
        ),
        6 => {
            let parts: Vec<String> = buf[2..buf.len() - 1]
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            Pkt::Oack(parts.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect())
        }
        _ => Pkt::Other(buf.to_vec()),
    }
}

struct Raw {
    sock: UdpSocket,
}

impl Raw {
    fn new() -> Raw {
        Raw { sock: UdpSocket::bind("127.0.0.1:0").unwrap() }
    }

    fn send(&self, pkt: &[u8], to: SocketAddr) {
        self.sock.send_to(pkt, to).unwrap();
    }

    fn recv(&self, limit: Duration) -> Option<(Pkt, SocketAddr)> {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut buf = vec![0u8; 70000];
        match self.sock.recv_from(&mut buf) {
            Ok((n, from)) => Some((parse(&buf[..n]), from)),
            Err(_) => None,
        }
    }

    /// Everything that arrives within `limit`.
    fn drain(&self, limit: Duration) -> Vec<(Pkt, SocketAddr)> {
        let end = Instant::now() + limit;
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            match self.recv(left) {
                Some(p) => got.push(p),
                None => break,
            }
        }
        got
    }

    /// Receives DATA from `tid` (ACKing each) until a block shorter than `blksize`. Packets from
    /// anyone else are returned in `strays`.
    fn receive_file(&self, tid: SocketAddr, blksize: usize) -> (Vec<u8>, Vec<(Pkt, SocketAddr)>) {
        let mut data = Vec::new();
        let mut strays = Vec::new();
        let mut expect: u16 = 1;
        loop {
            let (pkt, from) = self.recv(Duration::from_secs(3)).expect("DATA in time");
            if from != tid {
                strays.push((pkt, from));
                continue;
            }
            match pkt {
                Pkt::Data(block, chunk) => {
                    if block == expect {
                        data.extend_from_slice(&chunk);
                        expect = expect.wrapping_add(1);
                    }
                    self.send(&ack(block), tid);
                    if block == expect.wrapping_sub(1) && chunk.len() < blksize {
                        return (data, strays);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// A plain RRQ (no options) for a file; returns its bytes or the ERROR code.
    fn fetch(&self, server: SocketAddr, name: &[u8]) -> Result<Vec<u8>, u16> {
        self.send(&rrq(name, &[]), server);
        let (pkt, tid) = self.recv(Duration::from_secs(3)).expect("an answer");
        match pkt {
            Pkt::Error(code, _) => Err(code),
            Pkt::Data(1, chunk) => {
                let mut data = chunk.clone();
                self.send(&ack(1), tid);
                if chunk.len() < 512 {
                    return Ok(data);
                }
                // Block 1 is already in; take the rest.
                let (rest, strays) = self.receive_file_from(tid, 2);
                assert!(strays.is_empty());
                data.extend_from_slice(&rest);
                Ok(data)
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn receive_file_from(&self, tid: SocketAddr, first: u16) -> (Vec<u8>, Vec<(Pkt, SocketAddr)>) {
        let mut data = Vec::new();
        let mut strays = Vec::new();
        let mut expect = first;
        loop {
            let (pkt, from) = self.recv(Duration::from_secs(3)).expect("DATA in time");
            if from != tid {
                strays.push((pkt, from));
                continue;
            }
            if let Pkt::Data(block, chunk) = pkt {
                self.send(&ack(block), tid);
                if block == expect {
                    data.extend_from_slice(&chunk);
                    expect = expect.wrapping_add(1);
                    if chunk.len() < 512 {
                        return (data, strays);
                    }
                }
            }
        }
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Real clients

/// Builds a client command line: (remote file name, local output path).
type ClientCmd<'a> = dyn Fn(&str, &Path) -> Command + 'a;

/// Every client, each at blksize 512 and (where it can ask) 1468, gets byte-identical files,
/// including the edge sizes: empty, exact multiples of the block size (a final empty block).
#[test]
fn real_clients_fetch_byte_identical_at_512_and_1468() {
    let tree = Tree::new();
    let files = [
        ("empty", tree.put("empty", b"")),
        ("exact512", tree.put("exact512", &random_bytes(1024, 1))),
        ("exact1468", tree.put("exact1468", &random_bytes(2936, 2))),
        ("kernel", tree.put("kernel", &random_bytes(300_001, 3))),
        ("pxelinux.cfg/default", tree.put("pxelinux.cfg/default", b"DEFAULT linux\n")),
    ];
    let d = Tftpd::start("127.0.69.1", &tree.root(), &[]);
    let (host, port) = ("127.0.69.1", d.port());
    let clients: [(&str, &ClientCmd); 8] = [
        ("curl-512", &|f, out| {
            let mut c = Command::new("curl");
            c.args(["-sS", "-o"]).arg(out).arg(format!("tftp://{host}:{port}/{f}"));
            c
        }),
        ("curl-1468", &|f, out| {
            let mut c = Command::new("curl");
            c.args(["-sS", "--tftp-blksize", "1468", "-o"]).arg(out).arg(format!("tftp://{host}:{port}/{f}"));
            c
        }),
        ("tftp-hpa-512", &|f, out| {
            let mut c = Command::new("tftp");
            c.args(["-m", "binary", host, &port, "-c", "get", f]).arg(out);
            c
        }),
        ("atftp-512", &|f, out| {
            let mut c = Command::new("atftp");
            c.args(["-g", "-r", f, "-l"]).arg(out).args([host, &port]);
            c
        }),
        ("atftp-1468", &|f, out| {
            let mut c = Command::new("atftp");
            c.args(["--option", "blksize 1468", "--option", "tsize 0", "-g", "-r", f, "-l"])
                .arg(out)
                .args([host, &port]);
            c
        }),
        ("atftp-1468-window8", &|f, out| {
            let mut c = Command::new("atftp");
            c.args(["--option", "blksize 1468", "--option", "windowsize 8", "-g", "-r", f, "-l"])
                .arg(out)
                .args([host, &port]);
            c
        }),
        ("busybox-512", &|f, out| {
            let mut c = Command::new("busybox");
            c.args(["tftp", "-g", "-r", f, "-l"]).arg(out).args([host, &port]);
            c
        }),
        ("busybox-1468", &|f, out| {
            let mut c = Command::new("busybox");
            c.args(["tftp", "-b", "1468", "-g", "-r", f, "-l"]).arg(out).args([host, &port]);
            c
        }),
    ];
    for (client, make) in clients {
        for (name, data) in &files {
            let out = tree.out(&format!("{client}-{}", name.replace('/', "_")));
            run_ok(&mut make(name, &out));
            let got = std::fs::read(&out).unwrap();
            assert!(got == *data, "{client} {name}: {} bytes, want {}", got.len(), data.len());
        }
    }
    // Every completed transfer was reported (one per client for `kernel`).
    assert!(wait_until(Duration::from_secs(5), || d.count_lines("fetched 127.0.0.1 kernel") == clients.len()));
}

/// A file of more than 65535 blocks: block numbers roll over to 0 and the bytes stay right.
#[test]
fn block_numbers_roll_over_past_65535() {
    let tree = Tree::new();
    let data = tree.put("big", &random_bytes(600_000, 4)); // 75000 blocks of 8 bytes
    let d = Tftpd::start("127.0.69.2", &tree.root(), &["--max-blksize", "8"]);
    let out = tree.out("big");
    run_ok(
        Command::new("curl")
            .args(["-sS", "--tftp-blksize", "8", "-o"])
            .arg(&out)
            .arg(format!("tftp://127.0.69.2:{}/big", d.port())),
    );
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&data));
}

// ---------------------------------------------------------------------------------------------
// Confinement

#[test]
fn traversal_links_devices_directories_and_writes_are_refused() {
    let tree = Tree::new();
    let root = tree.root();
    tree.put("ok", b"fine");
    std::fs::create_dir(root.join("pxelinux.cfg")).unwrap();
    // Links out of the root point at files the test made next to it (never the host's /etc).
    let etc = tree.dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("hostname"), b"host\n").unwrap();
    std::fs::write(etc.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink(etc.join("hostname"), root.join("hostname-link")).unwrap();
    std::os::unix::fs::symlink(&etc, root.join("etc-link")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("secret-link")).unwrap();
    std::os::unix::fs::symlink("/dev/null", root.join("null-link")).unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: plain mkfifo(3) on a path in our temp dir.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let cases: [(&[u8], u16); 14] = [
        (b"../secret", 2),
        (b"..\\secret", 2),
        (b"/../secret", 2),
        (b"a/../../secret", 2),
        (b"/etc/passwd", 1),
        (b"hostname-link", 2),
        (b"etc-link/passwd", 2),
        (b"etc-link/hostname", 2),
        (b"secret-link", 2),
        (b"null-link", 2),
        (b"fifo", 2),
        (b"pxelinux.cfg", 2),
        (b"/", 2),
        (b"ok\xff", 4),
    ];
    let d = Tftpd::start("127.0.69.3", &root, &[]);
    let raw = Raw::new();
    assert_eq!(raw.fetch(d.addr, b"/ok"), Ok(b"fine".to_vec()));
    assert_refused(&raw, d.addr, &cases);
    // A write request is refused and creates nothing.
    raw.send(&request(2, b"upload", &[]), d.addr);
    assert!(matches!(raw.recv(Duration::from_secs(1)), Some((Pkt::Error(2, _), _))));
    assert!(!root.join("upload").exists());
    // Real clients get nothing either.
    let (host, port) = ("127.0.69.3", d.port());
    for name in ["etc-link/hostname", "hostname-link", "secret-link"] {
        let out = tree.out(name);
        let st = Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&out)
            .arg(format!("tftp://{host}:{port}/{name}"))
            .output()
            .unwrap();
        assert!(!st.status.success(), "curl {name} must fail");
        assert!(std::fs::read(&out).map(|v| v.is_empty()).unwrap_or(true));
    }
    let out = tree.out("atftp-secret");
    let st = Command::new("atftp")
        .args(["-g", "-r", "../secret", "-l"])
        .arg(&out)
        .args([host, &port])
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(std::fs::read(&out).map(|v| v.is_empty()).unwrap_or(true));
    assert!(
        !d.lines.lock().unwrap().iter().any(|l| l.starts_with("fetched") && !l.ends_with(" ok")),
        "no refused file counts as fetched"
    );
}

/// Each request gets exactly one ERROR packet, of the given code.
fn assert_refused(raw: &Raw, to: SocketAddr, cases: &[(&[u8], u16)]) {
    for (name, code) in cases {
        raw.send(&rrq(name, &[("tsize", "0"), ("blksize", "1468")]), to);
        let got = raw.drain(Duration::from_millis(400));
        let shown = String::from_utf8_lossy(name);
        assert_eq!(got.len(), 1, "{shown}: exactly one reply, got {got:?}");
        match &got[0].0 {
            Pkt::Error(c, _) => assert_eq!(c, code, "{shown}"),
            other => panic!("{shown}: {other:?}"),
        }
    }
}

/// A device node inside the root (mknod needs root) is refused like any non-regular file.
#[test]
fn device_node_in_the_root_is_refused() {
    harness::require_root("mknod of a device node in the TFTP root");
    let tree = Tree::new();
    let root = tree.root();
    tree.put("ok", b"fine");
    let dev = std::ffi::CString::new(root.join("devnode").to_str().unwrap()).unwrap();
    // SAFETY: mknod(2) of a character device (1,3 = /dev/null) in our temp dir.
    let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(rc, 0, "mknod");
    let d = Tftpd::start("127.0.69.14", &root, &[]);
    let raw = Raw::new();
    assert_eq!(raw.fetch(d.addr, b"ok"), Ok(b"fine".to_vec()));
    assert_refused(&raw, d.addr, &[(b"devnode", 2)]);
}

// ---------------------------------------------------------------------------------------------
// PXE behaviour

/// The classic PXE ROM: RRQ with tsize → OACK → ERROR → same port asks again. The old transfer
/// must go silent at once, the new one must be served, all in well under a second.
#[test]
fn pxe_tsize_probe_abort_and_retry() {
    let tree = Tree::new();
    let data = tree.put("pxelinux.0", &random_bytes(46_000, 5));
    let d = Tftpd::start("127.0.69.4", &tree.root(), &[]);
    for abort_with_error in [true, false] {
        let raw = Raw::new();
        let t0 = Instant::now();
        raw.send(&rrq(b"pxelinux.0", &[("tsize", "0"), ("blksize", "1456")]), d.addr);
        let (pkt, old_tid) = raw.recv(Duration::from_secs(1)).expect("OACK");
        assert_eq!(
            pkt,
            Pkt::Oack(vec![("tsize".into(), data.len().to_string()), ("blksize".into(), "1456".into())])
        );
        if abort_with_error {
            let mut err = vec![0, 5, 0, 0];
            err.extend_from_slice(b"abort\0");
            raw.send(&err, old_tid);
        }
        raw.send(&rrq(b"pxelinux.0", &[("blksize", "1456")]), d.addr);
        let (pkt, new_tid) = raw.recv(Duration::from_secs(1)).expect("second OACK");
        assert_ne!(new_tid, old_tid, "old transfer sent {pkt:?} after the abort");
        assert_eq!(pkt, Pkt::Oack(vec![("blksize".into(), "1456".into())]));
        raw.send(&ack(0), new_tid);
        let (got, strays) = raw.receive_file(new_tid, 1456);
        let took = t0.elapsed();
        assert!(got == data, "file differs");
        assert!(strays.is_empty(), "stray packets: {strays:?}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        // Longer than the server's retransmit timeout: nothing more from either transfer.
        let late = raw.drain(Duration::from_millis(1500));
        assert!(late.is_empty(), "late packets: {late:?}");
        eprintln!("PXE dance (abort by ERROR: {abort_with_error}) took {took:?}");
    }
}

/// pxelinux asks for 01-<mac>, then hex-IP prefixes, then default: each miss is a quick ERROR 1.
#[test]
fn pxelinux_probe_sequence_gets_quick_not_found() {
    let tree = Tree::new();
    let default = tree.put("pxelinux.cfg/default", b"DEFAULT linux\nLABEL linux\n");
    let d = Tftpd::start("127.0.69.5", &tree.root(), &[]);
    let raw = Raw::new();
    let mut names = vec!["pxelinux.cfg/01-88-99-aa-bb-cc-dd".to_string()];
    let hex = "C0A80001";
    for n in (1..=hex.len()).rev() {
        names.push(format!("pxelinux.cfg/{}", &hex[..n]));
    }
    for name in &names {
        let t = Instant::now();
        assert_eq!(raw.fetch(d.addr, name.as_bytes()), Err(1), "{name}");
        let took = t.elapsed();
        assert!(took < Duration::from_millis(500), "{name}: {took:?}");
    }
    assert_eq!(raw.fetch(d.addr, b"pxelinux.cfg/default"), Ok(default));
}

// ---------------------------------------------------------------------------------------------
// Load, loss, vanishing clients, limits

#[test]
fn two_hundred_fifty_concurrent_curl_fetches() {
    let tree = Tree::new();
    let data = tree.put("initrd.gz", &random_bytes(2 * 1024 * 1024, 6));
    let want = sha256(&data);
    let d = Tftpd::start("127.0.69.6", &tree.root(), &[]);
    let t0 = Instant::now();
    let mut children = Vec::new();
    for i in 0..250 {
        let out = tree.out(&format!("c{i}"));
        // Half ask for 1468-byte blocks, half take the default 512.
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "170", "-o"]).arg(&out);
        if i % 2 == 1 {
            cmd.args(["--tftp-blksize", "1468"]);
        }
        cmd.arg(format!("tftp://127.0.69.6:{}/initrd.gz", d.port()));
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        children.push((out, ChildGuard::spawn(&mut cmd)));
    }
    let mut failed = Vec::new();
    for (out, mut child) in children {
        let st = child.wait_timeout(Duration::from_secs(180));
        let ok = st.is_some_and(|s| s.success())
            && std::fs::read(&out).map(|v| sha256(&v) == want).unwrap_or(false);
        if !ok {
            failed.push(out.display().to_string());
        }
    }
    let took = t0.elapsed();
    eprintln!("250 concurrent 2 MiB fetches took {took:?}");
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(wait_until(Duration::from_secs(10), || d.count_lines("fetched 127.0.0.1 initrd.gz") == 250));
}

/// 5 % of packets dropped in each direction on a veth between two namespaces the test creates:
/// curl and atftp still get the 2 MiB file intact.
#[test]
fn transfers_survive_five_percent_loss() {
    harness::require_root("network namespaces with a lossy link");
    let tree = Tree::new();
    let data = tree.put("initrd.gz", &random_bytes(2 * 1024 * 1024, 7));
    let srv = Netns::new("tfs");
    let cli = Netns::new("tfc");
    let (va, vb) = (harness::unique_name("tfa"), harness::unique_name("tfb"));
    veth(&srv, &va, &cli, &vb);
    srv.addr(&va, "10.69.0.1/24");
    cli.addr(&vb, "10.69.0.2/24");
    for (ns, ifname) in [(&srv, &va), (&cli, &vb)] {
        let steps: [Vec<String>; 3] = [
            vec!["add", "table", "inet", "loss"],
            vec!["add", "chain", "inet", "loss", "pre", "{ type filter hook prerouting priority -300; }"],
            vec![
                "add",
                "rule",
                "inet",
                "loss",
                "pre",
                "iifname",
                ifname.as_str(),
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                "5",
                "counter",
                "drop",
            ],
        ]
        .map(|v| v.into_iter().map(String::from).collect());
        for args in steps {
            let out = ns.command("nft").args(&args).output().unwrap();
            assert!(out.status.success(), "nft {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    // A short retransmit timeout keeps the test quick. (atftp re-ACKs a repeated block only
    // once; if that ACK is lost it waits for 5 s of silence: the server's quiet linger after its
    // last retransmission is what keeps such a transfer alive.)
    let d = Tftpd::start_cmd(
        &mut srv.command(TFTPD),
        "10.69.0.1",
        &tree.root(),
        &["--timeout-ms", "100", "--retries", "20"],
    );
    let port = d.port();
    let t0 = Instant::now();
    let curl_out = tree.out("curl");
    run_ok(
        cli.command("curl")
            .args(["-sS", "--max-time", "120", "--tftp-blksize", "1468", "-o"])
            .arg(&curl_out)
            .arg(format!("tftp://10.69.0.1:{port}/initrd.gz")),
    );
    let curl_took = t0.elapsed();
    let atftp_out = tree.out("atftp");
    run_ok(
        cli.command("atftp")
            .args(["--option", "blksize 1468", "-g", "-r", "initrd.gz", "-l"])
            .arg(&atftp_out)
            .args(["10.69.0.1", &port]),
    );
    let atftp_took = t0.elapsed() - curl_took;
    // RFC 7440 windows: a lost block makes the client ACK the last one in order, and the server
    // resends the window from there.
    let window_out = tree.out("atftp-window");
    run_ok(
        cli.command("atftp")
            .args(["--option", "blksize 1468", "--option", "windowsize 8", "-g", "-r", "initrd.gz"])
            .arg("-l")
            .arg(&window_out)
            .args(["10.69.0.1", &port]),
    );
    let window_took = t0.elapsed() - curl_took - atftp_took;
    assert_eq!(sha256(&std::fs::read(&curl_out).unwrap()), sha256(&data));
    assert_eq!(sha256(&std::fs::read(&atftp_out).unwrap()), sha256(&data));
    assert_eq!(sha256(&std::fs::read(&window_out).unwrap()), sha256(&data));
    // The loss really happened on both sides.
    for ns in [&srv, &cli] {
        let listing = ns.command("nft").args(["list", "table", "inet", "loss"]).output().unwrap();
        let text = String::from_utf8_lossy(&listing.stdout);
        let packets: u64 = text
            .split("counter packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(packets > 20, "{}: only {packets} dropped", ns.name);
    }
    eprintln!("5% loss: curl {curl_took:?}, atftp {atftp_took:?}, atftp windowsize 8 {window_took:?}");
}

/// A client that stops answering mid-file: the server gives up within (retries+1) × timeout and
/// reports no fetch; a complete fetch is reported.
#[test]
fn vanished_client_is_abandoned_quickly_and_not_reported() {
    let tree = Tree::new();
    tree.put("vmlinuz", &random_bytes(200_000, 8));
    let (timeout_ms, retries) = (200u64, 3u32);
    let d = Tftpd::start(
        "127.0.69.8",
        &tree.root(),
        &["--timeout-ms", &timeout_ms.to_string(), "--retries", &retries.to_string()],
    );
    let raw = Raw::new();
    raw.send(&rrq(b"vmlinuz", &[]), d.addr);
    for expect in 1..=5u16 {
        let (pkt, tid) = raw.recv(Duration::from_secs(1)).expect("DATA");
        assert!(matches!(pkt, Pkt::Data(b, _) if b == expect));
        raw.send(&ack(expect), tid);
    }
    // Silence from now on (socket kept open, so no ICMP tells the server).
    let stopped = Instant::now();
    let mut last = stopped;
    let mut resent = 0;
    while let Some((pkt, _)) = raw.recv(Duration::from_millis(1500)) {
        // A server that never gives up must fail the test, not hang it.
        assert!(stopped.elapsed() < Duration::from_secs(20), "still resending after 20 s");
        assert!(matches!(pkt, Pkt::Data(6, _)), "only block 6 is resent: {pkt:?}");
        last = Instant::now();
        resent += 1;
    }
    let gave_up = last - stopped;
    // (retries + 1) timeouts, plus a margin for a loaded machine that still tells "gave up" from
    // "kept going" (after its retries the server is silent for many seconds, see the linger).
    let bound = Duration::from_millis(timeout_ms * u64::from(retries + 1)) + Duration::from_secs(1);
    assert!(resent as u32 <= retries + 1, "resent {resent} times");
    assert!(gave_up <= bound, "still sending after {gave_up:?}");
    assert!(!d.has_line("fetched 127.0.0.1 vmlinuz"));
    // Now a whole fetch: reported.
    let out = tree.out("vmlinuz");
    run_ok(
        Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&out)
            .arg(format!("tftp://127.0.69.8:{}/vmlinuz", d.port())),
    );
    assert!(wait_until(Duration::from_secs(3), || d.has_line("fetched 127.0.0.1 vmlinuz")));
}

/// Nodes report through `mosboot-report/...`: a `joined` event, and the node gets "ok\n".
#[test]
fn node_report_via_busybox_tftp() {
    let tree = Tree::new();
    let d = Tftpd::start("127.0.69.9", &tree.root(), &[]);
    let out = tree.out("ack");
    run_ok(
        Command::new("busybox")
            .args(["tftp", "-g", "-r", "mosboot-report/joined/3/ws001", "-l"])
            .arg(&out)
            .args(["127.0.69.9", &d.port()]),
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"ok\n");
    assert!(wait_until(Duration::from_secs(3), || d.has_line("joined 127.0.0.1 joined/3/ws001")));
    assert!(!tree.root().join("mosboot-report").exists());
}

/// Garbage never stops the server; beyond max_transfers a request gets "server busy".
#[test]
fn malformed_packets_and_busy_limit() {
    let tree = Tree::new();
    tree.put("f", &random_bytes(100_000, 9));
    tree.put("tiny", b"tiny file");
    let d = Tftpd::start("127.0.69.10", &tree.root(), &["--max-transfers", "2", "--timeout-ms", "3000"]);
    // Malformed input: answered with ERROR 4 where it is a request, otherwise dropped.
    let raw = Raw::new();
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x09abc",
        b"\x00\x01no-nul",
        b"\x00\x01f\x00octet\x00blksize\x00",
        b"\x00\x01f\x00mail\x00",
        b"\x00\x04",
        b"\x00\x03\x00\x01data",
    ] {
        raw.send(junk, d.addr);
    }
    let replies = raw.drain(Duration::from_millis(500));
    assert_eq!(replies.len(), 4, "{replies:?}");
    assert!(replies.iter().all(|(p, _)| matches!(p, Pkt::Error(4, _))));
    // An option value that is not a number is ignored: no OACK, plain 512-byte transfer.
    raw.send(&rrq(b"tiny", &[("blksize", "big")]), d.addr);
    match raw.recv(Duration::from_secs(1)) {
        Some((Pkt::Data(1, b), tid)) => {
            assert_eq!(b, b"tiny file");
            raw.send(&ack(1), tid);
        }
        other => panic!("expected DATA 1, got {other:?}"),
    }
    assert!(wait_until(Duration::from_secs(3), || d.has_line("fetched 127.0.0.1 tiny")));
    // Two stalled transfers (never ACKed) fill the server.
    let stalled: Vec<Raw> = (0..2).map(|_| Raw::new()).collect();
    for r in &stalled {
        r.send(&rrq(b"f", &[]), d.addr);
        assert!(matches!(r.recv(Duration::from_secs(1)), Some((Pkt::Data(1, _), _))));
    }
    let third = Raw::new();
    third.send(&rrq(b"f", &[]), d.addr);
    match third.recv(Duration::from_secs(1)) {
        Some((Pkt::Error(0, msg), _)) => assert!(msg.contains("busy"), "{msg}"),
        other => panic!("expected server busy, got {other:?}"),
    }
}

/// A client that makes no progress (here: it never ACKs, while the server's retries would keep
/// the transfer alive for a minute) is ended at the hard lifetime and frees its slot: an
/// attacker cannot hold slots by ACKing just before every timeout.
#[test]
fn a_transfer_that_makes_no_progress_ends_at_its_lifetime() {
    let tree = Tree::new();
    tree.put("f", &random_bytes(8_000, 12));
    let d = Tftpd::start(
        "127.0.69.12",
        &tree.root(),
        &["--timeout-ms", "300", "--retries", "200", "--lifetime-ms", "1500", "--max-per-source", "1"],
    );
    let raw = Raw::new();
    raw.send(&rrq(b"f", &[]), d.addr);
    assert!(matches!(raw.recv(Duration::from_secs(1)), Some((Pkt::Data(1, _), _))));
    // Without a lifetime the server resends DATA 1 every 300 ms for 200 retries (a minute); with
    // it, the resends stop 1.5 s after the request.
    let during = raw.drain(Duration::from_millis(2500));
    assert!(!during.is_empty(), "the server never retransmitted: the test would prove nothing");
    let after = raw.drain(Duration::from_millis(1500));
    assert!(after.is_empty(), "the server still sends to the stalled client: {after:?}");
    // Its slot is free again: the same source (limit 1) is served.
    raw.send(&rrq(b"f", &[]), d.addr);
    assert!(matches!(raw.recv(Duration::from_secs(1)), Some((Pkt::Data(1, _), _))), "slot not freed");
}

/// RFC 7440 windows: a client that repeats its ACK for the block before the window (atftp does
/// it for every duplicate block it sees) gets the window resent once, not once per repeat. The
/// old answer-every-repeat made a storm of duplicates under loss that stalled atftp.
#[test]
fn repeated_acks_before_a_window_resend_it_once() {
    let tree = Tree::new();
    tree.put("f", &random_bytes(100_000, 11));
    // A retransmit timer far longer than the test, so every packet seen answers an ACK.
    let d = Tftpd::start("127.0.69.11", &tree.root(), &["--timeout-ms", "5000"]);
    let raw = Raw::new();
    raw.send(&rrq(b"f", &[("windowsize", "4")]), d.addr);
    let (pkt, tid) = raw.recv(Duration::from_secs(1)).expect("OACK");
    assert_eq!(pkt, Pkt::Oack(vec![("windowsize".into(), "4".into())]));
    raw.send(&ack(0), tid);
    let blocks = |got: &[(Pkt, SocketAddr)]| -> Vec<u16> {
        got.iter().map(|(p, _)| if let Pkt::Data(b, _) = p { *b } else { panic!("{p:?}") }).collect()
    };
    assert_eq!(blocks(&raw.drain(Duration::from_millis(500))), [1, 2, 3, 4]);
    // Block 1 "lost": the client says so five times.
    for _ in 0..5 {
        raw.send(&ack(0), tid);
    }
    assert_eq!(blocks(&raw.drain(Duration::from_millis(1000))), [1, 2, 3, 4], "one resend, no storm");
    // The window still moves on the next real ACK.
    raw.send(&ack(4), tid);
    assert_eq!(blocks(&raw.drain(Duration::from_millis(500))), [5, 6, 7, 8]);
}

/// A lost ACK of the OACK: the server never sends the OACK again on its own timer (atftp 0.8.0
/// aborts with "unexpected OACK" on a second OACK after its ACK; its ACK 0 retry comes after 5 s
/// and may be lost too), and the transfer goes on when the client's ACK 0 comes late.
#[test]
fn oack_is_not_repeated_before_a_strict_clients_timer() {
    let tree = Tree::new();
    let data = tree.put("f", &random_bytes(3000, 12));
    let d = Tftpd::start("127.0.69.12", &tree.root(), &["--timeout-ms", "100"]);
    let raw = Raw::new();
    raw.send(&rrq(b"f", &[("blksize", "1468")]), d.addr);
    let (pkt, tid) = raw.recv(Duration::from_secs(1)).expect("OACK");
    assert_eq!(pkt, Pkt::Oack(vec![("blksize".into(), "1468".into())]));
    // 6.5 s of silence from the client, past one round of atftp's timer: at a 100 ms timer this
    // would have been many OACKs, and waiting only one atftp round would have sent one.
    let repeats = raw.drain(Duration::from_millis(6500));
    assert!(repeats.is_empty(), "OACK repeated on the server's own timer: {repeats:?}");
    raw.send(&ack(0), tid);
    let (got, strays) = raw.receive_file(tid, 1468);
    assert!(got == data && strays.is_empty());
}

/// The same request again from the same port is the client's retransmission (curl re-sends its
/// RRQ on its timer): the running transfer keeps its TID and answers, instead of a new transfer
/// that a client which already took the first reply would ignore (and hang).
#[test]
fn repeated_request_from_the_same_port_keeps_the_transfer() {
    let tree = Tree::new();
    let data = tree.put("f", &random_bytes(5000, 13));
    let d = Tftpd::start("127.0.69.13", &tree.root(), &["--timeout-ms", "100"]);
    let raw = Raw::new();
    let request = rrq(b"f", &[("blksize", "1468")]);
    raw.send(&request, d.addr);
    let (pkt, tid) = raw.recv(Duration::from_secs(1)).expect("OACK");
    assert_eq!(pkt, Pkt::Oack(vec![("blksize".into(), "1468".into())]));
    raw.send(&request, d.addr);
    // The running transfer answers with its OACK again (the client says it never got it), from
    // the same TID; no second transfer answers.
    let answers = raw.drain(Duration::from_millis(500));
    assert!(
        answers.len() == 1 && answers.iter().all(|(p, from)| *from == tid && matches!(p, Pkt::Oack(_))),
        "expected the OACK again from the same TID: {answers:?}"
    );
    raw.send(&ack(0), tid);
    let (got, strays) = raw.receive_file(tid, 1468);
    assert!(got == data && strays.is_empty(), "{strays:?}");
}

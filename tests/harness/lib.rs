//! Shared test harness: network namespaces the test creates and deletes, processes it starts and
//! ends by PID, and the paths of the workspace and the `mosboot` binary.
//!
//! Every namespace carries a unique name (prefix, PID, counter) and is deleted on drop, so a failed
//! test leaves nothing behind and parallel tests never meet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The workspace root (the folder holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The `mosboot` binary: `$MOSBOOT_BIN`, else `target/debug/mosboot` (the Makefile builds it
/// before running tests; `cargo build -p mosboot` does too).
pub fn mosboot_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MOSBOOT_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("debug").join("mosboot");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p mosboot` (or set MOSBOOT_BIN) first",
        bin.display()
    );
    bin
}

/// True when the test runs as root (namespaces, port 67/69, mknod need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The one gate for tests that need root (network namespaces, ports 67/69, taps): as root it
/// returns; otherwise the test FAILS with this message. A test that cannot run must never count
/// as passed. Run them as root: `make test`, or `sudo -E cargo test -p mosboot-tests`.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "needs root: {what} (run `make test` as root, or `sudo -E cargo test -p mosboot-tests`; \
         `make unit-test` runs what needs no root)"
    );
}

/// Runs a command and panics with its output when it fails: for setup steps whose failure makes
/// the test meaningless.
pub fn run(cmd: &[&str]) -> Output {
    let out =
        Command::new(cmd[0]).args(&cmd[1..]).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A short unique name: `<prefix><pid%10000>x<n>` (interface names are limited to 15 bytes).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}x{n}", std::process::id() % 10000)
}

/// A network namespace owned by the test; deleted (with everything in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates a fresh namespace with loopback up (fails the test when not root).
    pub fn new(prefix: &str) -> Netns {
        require_root("network namespaces");
        let name = unique_name(prefix);
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NS ...`, asserting success.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut cmd = vec!["ip", "-n", &self.name];
        cmd.extend_from_slice(args);
        run(&cmd)
    }

    /// A command that runs inside the namespace (`ip netns exec NS prog args...`).
    pub fn command(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(&self.name).arg(prog);
        c
    }

    /// Runs a shell line inside the namespace and returns its output (success not asserted).
    pub fn sh(&self, line: &str) -> Output {
        self.command("sh")
            .arg("-c")
            .arg(line)
            .output()
            .unwrap_or_else(|e| panic!("cannot run in {}: {e}", self.name))
    }

    /// Adds a bridge (STP off, no forward delay) and brings it up.
    pub fn add_bridge(&self, br: &str) {
        self.ip(&["link", "add", br, "type", "bridge", "stp_state", "0", "forward_delay", "0"]);
        self.ip(&["link", "set", br, "up"]);
    }

    /// Adds an address (CIDR) to an interface of this namespace.
    pub fn addr(&self, ifname: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", ifname]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside (only processes of this namespace, which the test started).
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.name]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: plain kill(2) on a PID that lives in our own namespace.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A veth pair: `a` in namespace `ns_a`, `b` in namespace `ns_b` (or attached to a bridge there).
pub fn veth(ns_a: &Netns, a: &str, ns_b: &Netns, b: &str) {
    run(&[
        "ip", "link", "add", a, "netns", &ns_a.name, "type", "veth", "peer", "name", b, "netns", &ns_b.name,
    ]);
    ns_a.ip(&["link", "set", a, "up"]);
    ns_b.ip(&["link", "set", b, "up"]);
}

/// A child process the test started; killed (by its PID) and reaped on drop.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let child = cmd.stdin(Stdio::null()).spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        ChildGuard { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal to the child (e.g. SIGKILL to simulate a crash, SIGTERM to stop it).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the child to exit, up to `limit`; returns its status or None on time-out.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Waits until the file `log` (a child's output) contains `needle`, or `child` exits, or `limit`
/// passes. Returns the log text; panics naming `what` unless the line came and the child still
/// runs. This is how a test knows a server is ready: by what it says, never by a fixed sleep.
pub fn wait_for_line(
    what: &str,
    log: &Path,
    needle: &str,
    child: &mut ChildGuard,
    limit: Duration,
) -> String {
    let seen = line_or_exit(log, needle, child, limit);
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        seen && text.contains(needle) && matches!(child.child.try_wait(), Ok(None)),
        "{what} did not start (waited for '{needle}'):\n{text}"
    );
    text
}

/// True once `log` contains `needle` or `child` has exited; false when `limit` passed first.
fn line_or_exit(log: &Path, needle: &str, child: &mut ChildGuard, limit: Duration) -> bool {
    wait_until(limit, || {
        std::fs::read_to_string(log).unwrap_or_default().contains(needle)
            || matches!(child.child.try_wait(), Ok(Some(_)))
    })
}

/// Starts a server: `cmd` with stdout discarded and stderr into `log`, then waits until the log
/// contains `needle` or the server exits (a refusal is what some tests want), at most `limit`.
/// The caller asserts which it was, from the log and the guard.
pub fn spawn_until_line(cmd: &mut Command, log: &Path, needle: &str, limit: Duration) -> ChildGuard {
    let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let mut g = ChildGuard::spawn(cmd.stdout(Stdio::null()).stderr(file));
    line_or_exit(log, needle, &mut g, limit);
    g
}

/// Collects a child's output lines as they come (a thread reads them), for tests that wait for
/// a line the child prints.
pub fn collect_lines(
    out: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    });
    lines
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Deterministic pseudo-random bytes (xorshift64): compress badly, like a real binary, and
/// make a failure reproducible. Different seeds give different bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A DHCP client's socket: UDP 68 on every address, broadcast allowed, bound to `iface` (run it
/// on a thread or in a process inside the client's namespace).
pub fn dhcp_client_socket(iface: &str) -> std::net::UdpSocket {
    use std::os::fd::AsRawFd;
    let sock = std::net::UdpSocket::bind("0.0.0.0:68").unwrap_or_else(|e| panic!("bind UDP 68: {e}"));
    sock.set_broadcast(true).expect("SO_BROADCAST");
    // SAFETY: setsockopt with a valid fd and the interface name's bytes and length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            iface.as_ptr().cast(),
            iface.len() as u32,
        )
    };
    assert_eq!(rc, 0, "SO_BINDTODEVICE {iface}: {}", std::io::Error::last_os_error());
    sock
}

/// Every DHCP reply with transaction id `xid` that reaches `sock` within `wait`.
pub fn dhcp_replies(
    sock: &std::net::UdpSocket,
    xid: u32,
    wait: Duration,
) -> Vec<netboot::dhcp::packet::ReplyView> {
    let end = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 1500];
    while Instant::now() < end {
        let left = end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        sock.set_read_timeout(Some(left)).expect("SO_RCVTIMEO");
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && let Some(v) = netboot::dhcp::packet::decode_reply(&buf[..n])
            && v.xid == xid
        {
            out.push(v);
        }
    }
    out
}

/// Broadcasts `discover` and gathers the offers for `xid` for `wait`; like a PXE ROM it sends the
/// DISCOVER again (up to four times in all) while nothing answered, so a link that is still
/// coming up (a port just added to the bridge) costs a retry, not the test.
pub fn dhcp_discover(
    sock: &std::net::UdpSocket,
    discover: &[u8],
    xid: u32,
    wait: Duration,
) -> Vec<netboot::dhcp::packet::ReplyView> {
    for _ in 0..4 {
        sock.send_to(discover, "255.255.255.255:67").expect("send DISCOVER");
        let offers = dhcp_replies(sock, xid, wait);
        if !offers.is_empty() {
            return offers;
        }
    }
    Vec::new()
}

/// The server identifier (option 54) of a DHCP reply, 0.0.0.0 when it has none.
pub fn dhcp_server_id(v: &netboot::dhcp::packet::ReplyView) -> std::net::Ipv4Addr {
    use netboot::dhcp::packet::code;
    v.options
        .get(&code::SERVER_ID)
        .and_then(|s| <[u8; 4]>::try_from(s.as_slice()).ok())
        .map(std::net::Ipv4Addr::from)
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(Sha256::digest(&data))
}

/// The DHCP lab every namespace test shares: a "server" namespace with bridge `br0` holding the
/// server address, a "client" namespace whose interfaces `c<n>` are wired to the bridge by veth
/// pairs (`p<n>` on the bridge side), and a temp dir (mode 755: servers that drop to `nobody`
/// must still read it). Everything is deleted on drop.
pub struct Lab {
    pub srv: Netns,
    pub cli: Netns,
    pub dir: tempfile::TempDir,
    clients: usize,
}

impl Lab {
    /// `tag` (up to 4 characters) starts the namespace names; `server_cidr` goes on br0.
    pub fn new(tag: &str, server_cidr: &str) -> Lab {
        use std::os::unix::fs::PermissionsExt;
        let srv = Netns::new(&format!("{tag}s"));
        let cli = Netns::new(&format!("{tag}c"));
        srv.add_bridge("br0");
        srv.addr("br0", server_cidr);
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Lab { srv, cli, dir, clients: 0 }
    }

    /// Adds `n` client interfaces (next free `c<k>`) with MACs 02:00:00:00:<hi>:<lo> from their
    /// number, in one `ip -batch` per namespace (fast for storms). Returns (name, MAC) pairs.
    pub fn clients(&mut self, n: usize) -> Vec<(String, String)> {
        let first = self.clients;
        self.clients += n;
        let (mut pairs, mut srv_batch, mut cli_batch) = (String::new(), String::new(), String::new());
        let mut out = Vec::new();
        for i in first..first + n {
            let mac = format!("02:00:00:00:{:02x}:{:02x}", i / 256, i % 256);
            pairs.push_str(&format!(
                "link add c{i} netns {cli} address {mac} type veth peer name p{i} netns {srv}\n",
                cli = self.cli.name,
                srv = self.srv.name
            ));
            srv_batch.push_str(&format!("link set p{i} master br0 up\n"));
            cli_batch.push_str(&format!("link set c{i} up\n"));
            out.push((format!("c{i}"), mac));
        }
        let batch = |name: &str, text: &str| {
            let f = self.dir.path().join(name);
            std::fs::write(&f, text).expect("batch file");
            f.to_string_lossy().into_owned()
        };
        run(&["ip", "-batch", &batch("veth.batch", &pairs)]);
        self.srv.ip(&["-batch", &batch("srv.batch", &srv_batch)]);
        self.cli.ip(&["-batch", &batch("cli.batch", &cli_batch)]);
        out
    }

    /// Adds one client interface with the given MAC; returns its name.
    pub fn client(&mut self, mac: &str) -> String {
        let c = format!("c{}", self.clients);
        self.wire(&self.cli.name.clone(), &c, mac);
        c
    }

    /// A machine of its own on the bridge: a new namespace (name starting with `prefix`) whose
    /// one NIC `eth0` has `mac`, for tests where each host must speak from its own address and
    /// routes (fake nodes, a second PC next to an attacker). Deleted when the returned value drops.
    pub fn host(&mut self, prefix: &str, mac: &str) -> Netns {
        let ns = Netns::new(prefix);
        self.wire(&ns.name, "eth0", mac);
        ns
    }

    /// A veth pair: `ifname` (with `mac`, up) in namespace `ns`, its peer `p<n>` on br0.
    fn wire(&mut self, ns: &str, ifname: &str, mac: &str) {
        let p = format!("p{}", self.clients);
        self.clients += 1;
        run(&[
            "ip",
            "link",
            "add",
            ifname,
            "netns",
            ns,
            "address",
            mac,
            "type",
            "veth",
            "peer",
            "name",
            &p,
            "netns",
            &self.srv.name,
        ]);
        run(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        self.srv.ip(&["link", "set", &p, "master", "br0", "up"]);
    }

    /// Where [`Lab::udhcpc_script`] leaves `<interface>.<event>` environment dumps.
    pub fn udhcpc_out(&self) -> PathBuf {
        self.dir.path().join("udhcpc-out")
    }

    /// A udhcpc script that dumps its environment to [`Lab::udhcpc_out`]`/<interface>.<event>`
    /// (written whole, then renamed, so a reader never sees half a file).
    pub fn udhcpc_script(&self) -> PathBuf {
        let out = self.udhcpc_out();
        std::fs::create_dir_all(&out).expect("udhcpc-out");
        let s = self.dir.path().join("udhcpc.sh");
        let o = out.display();
        std::fs::write(
            &s,
            format!("#!/bin/sh\nenv > {o}/$interface.$1.tmp && mv {o}/$interface.$1.tmp {o}/$interface.$1\n"),
        )
        .expect("udhcpc script");
        run(&["chmod", "+x", &s.to_string_lossy()]);
        s
    }

    /// The environment udhcpc gave the script for `event` on `iface` (empty if none).
    pub fn udhcpc_env(&self, iface: &str, event: &str) -> BTreeMap<String, String> {
        env_file(&self.udhcpc_out().join(format!("{iface}.{event}")))
    }

    /// A rival DHCP server: dnsmasq in its own namespace on the bridge, at `addr_cidr`, handing
    /// out `first..=last`. Returns once dnsmasq says its DHCP socket is bound.
    pub fn rival(&self, addr_cidr: &str, first: &str, last: &str) -> (Netns, ChildGuard) {
        let rns = Netns::new("riv");
        veth(&rns, "r0", &self.srv, "pr");
        self.srv.ip(&["link", "set", "pr", "master", "br0"]);
        rns.addr("r0", addr_cidr);
        let log = self.dir.path().join("rival.log");
        let mut cmd = rns.command("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--interface=r0",
            "--bind-interfaces",
            "--no-ping",
            "--pid-file=",
            "--log-dhcp",
        ])
        .arg(format!("--dhcp-range={first},{last},1h"))
        .arg(format!("--dhcp-leasefile={}", self.dir.path().join("rival.leases").display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("rival log"));
        let mut g = ChildGuard::spawn(&mut cmd);
        wait_for_line(
            "rival dnsmasq",
            &log,
            "sockets bound exclusively to interface r0",
            &mut g,
            Duration::from_secs(10),
        );
        (rns, g)
    }
}

/// A `key=value` file (a udhcpc/dhclient environment dump), values unquoted.
pub fn env_file(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string())))
        .collect()
}

/// One busybox udhcpc run in the foreground on `iface` of `ns`: `tries` DISCOVERs one second
/// apart, then exit (0 with a lease, non-zero without); `extra` goes before `-s script`.
pub fn udhcpc_once(ns: &Netns, iface: &str, tries: u32, extra: &[&str], script: &Path) -> Output {
    ns.command("udhcpc")
        .args(["-f", "-q", "-n", "-t", &tries.to_string(), "-T", "1", "-i", iface])
        .args(extra)
        .arg("-s")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run udhcpc: {e}"))
}

/// The one sample cluster (tests/fixtures/cluster.toml, the SPEC's LTSP example).
pub const SAMPLE_CLUSTER: &str = include_str!("../fixtures/cluster.toml");

/// The sample cluster with `set` applied (`("section.key", "toml value")`: replaces the key's
/// line, or adds it at the end of its section) and `extra` appended (more `[[node]]`s...).
pub fn sample_cluster(set: &[(&str, &str)], extra: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut pending: Vec<(&str, &str)> = set.to_vec();
    let mut section = String::new();
    let flush = |section: &str, pending: &mut Vec<(&str, &str)>, out: &mut Vec<String>| {
        let at = out.iter().rposition(|l| !l.trim().is_empty()).map_or(out.len(), |i| i + 1);
        let mine: Vec<String> = pending
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&format!("{section}.")).map(|key| format!("{key} = {v}")))
            .collect();
        pending.retain(|(k, _)| !k.starts_with(&format!("{section}.")));
        for (n, l) in mine.into_iter().enumerate() {
            out.insert(at + n, l);
        }
    };
    for line in SAMPLE_CLUSTER.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            flush(&section, &mut pending, &mut out);
            section = name.to_string();
        } else if let Some((key, _)) = line.split_once(" = ") {
            let full = format!("{section}.{key}");
            if let Some(i) = pending.iter().position(|(k, _)| *k == full) {
                out.push(format!("{key} = {}", pending.remove(i).1));
                continue;
            }
        }
        out.push(line.to_string());
    }
    flush(&section, &mut pending, &mut out);
    assert!(pending.is_empty(), "no section for {pending:?} in the sample cluster");
    let mut text = out.join("\n");
    text.push('\n');
    text.push_str(extra);
    text
}

/// A file that passes as a bzImage of the given release (setup header magic and version string).
pub fn fake_bzimage(release: &str) -> Vec<u8> {
    let mut k = vec![0u8; 0x4000];
    k[0x1fe] = 0x55;
    k[0x1ff] = 0xaa;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    let off: u16 = 0x1000;
    k[0x20e..0x210].copy_from_slice(&off.to_le_bytes());
    let s = format!("{release} (builder@lab) #1 Sat Jan 1 00:00:00 UTC 2005\0");
    let at = off as usize + 0x200;
    k[at..at + s.len()].copy_from_slice(s.as_bytes());
    k
}

/// A minimal static ELF executable: the header and one PT_LOAD program header, 32-bit i386 (what
/// the nodes run) or 64-bit x86-64 (what a PC's own busybox is). The build only reads headers.
pub fn fake_elf(x86_64: bool) -> Vec<u8> {
    // (class, machine, e_phoff at, e_ehsize at, header size, program header size)
    let (class, machine, phoff_at, ehsize_at, ehsize, phsize) =
        if x86_64 { (2u8, 62u16, 32, 52, 64usize, 56usize) } else { (1, 3, 28, 40, 52, 32) };
    let mut e = vec![0u8; ehsize + phsize];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = class;
    e[5] = 1; // little endian
    e[6] = 1;
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&machine.to_le_bytes());
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[phoff_at] = ehsize as u8; // e_phoff: right after the header
    e[ehsize_at..ehsize_at + 2].copy_from_slice(&(ehsize as u16).to_le_bytes());
    e[ehsize_at + 2..ehsize_at + 4].copy_from_slice(&(phsize as u16).to_le_bytes());
    e[ehsize_at + 4..ehsize_at + 6].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    e[ehsize..ehsize + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e
}

/// The node busybox stand-in: an i386 ELF followed by an applet-table-like string list.
pub fn fake_busybox() -> Vec<u8> {
    let mut e = fake_elf(false);
    e.extend_from_slice(b"\0[\0[[\0ash\0cat\0echo\0hostname\0ip\0ls\0mount\0sh\0tftp\0udhcpc\0\0");
    e
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Overrides replace a key in place, new keys land at the end of their section, and the
    /// result is a config the product reads as meant.
    #[test]
    fn sample_cluster_overrides_land_in_their_sections() {
        let text = super::sample_cluster(
            &[
                ("cluster.interface", "\"br0\""),
                ("cluster.router", "\"192.168.0.254\""),
                ("image.initrd", "\"ext2\""),
            ],
            "[[node]]\nmac = \"52:54:00:12:34:56\"\nip = \"192.168.0.5\"\n",
        );
        assert_eq!(text.matches("interface = ").count(), 1, "{text}");
        let cfg = mosboot::config::Config::parse(&text, Path::new("/lab/cluster.toml")).expect(&text);
        assert_eq!(cfg.cluster.interface, "br0");
        assert_eq!(cfg.cluster.pool.len(), 1);
        let plan = mosboot::plan::Plan::new(&cfg).expect("plan");
        assert_eq!(plan.map_text(), "1 192.168.0.254 1\n2 192.168.0.1 253\n");
        assert!(text.contains("router = \"192.168.0.254\"\n\n[openmosix]"), "{text}");
        assert!(text.contains("busybox = \"node-kit/busybox\"\ninitrd = \"ext2\"\n[[node]]"), "{text}");
    }
}

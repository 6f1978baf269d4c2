//! Shared test harness: network namespaces the test creates and deletes, processes it starts and
//! ends by PID, and the paths of the workspace and the `mosboot` binary.
//!
//! Every namespace carries a unique name (prefix, PID, counter) and is deleted on drop, so a failed
//! test leaves nothing behind and parallel tests never meet.

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
    /// Creates a fresh namespace with loopback up.
    pub fn new(prefix: &str) -> Netns {
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

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(Sha256::digest(&data))
}

//! The status page of `mosboot serve`, with real clients and a real browser: two fake nodes (one
//! client namespace each, so each speaks from its own address) boot with busybox udhcpc and
//! tftp; one joins and reports its vitals, one stops after its boot file; a third namespace
//! spoofs a report. curl reads the JSON API, `mosboot nodes --json` must say the same, and
//! headless Chromium (run inside the server's namespace, where the page listens on loopback)
//! renders the page; the test reads its DOM, watches a live update arrive and saves a screenshot.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use harness::{ChildGuard, Netns, run, wait_until};

const SERVER: &str = "192.168.78.254";
const STATUS: &str = "127.0.0.1:8067";

/// The shared DHCP lab ([`harness::Lab`], server 192.168.78.254/24 on br0); each fake node is a
/// [`harness::Lab::host`] of its own.
struct Lab {
    net: harness::Lab,
}

/// A fake node: its own namespace with one NIC `eth0` on the lab bridge.
struct FakeNode {
    ns: Netns,
    mac: String,
}

impl Lab {
    fn new() -> Lab {
        Lab { net: harness::Lab::new("st", &format!("{SERVER}/24")) }
    }

    fn node(&mut self, i: u8) -> FakeNode {
        let mac = format!("02:00:00:00:01:{i:02x}");
        FakeNode { ns: self.net.host("snod", &mac), mac }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.net.dir.path().join(rel)
    }

    /// cluster.toml with the status page on, and a tree with the three boot files.
    fn cluster(&self) -> PathBuf {
        let boot = self.path("out/tftpboot");
        std::fs::create_dir_all(&boot).unwrap();
        for (name, size) in [("pxelinux.0", 30_000), ("vmlinuz", 200_000), ("initrd.gz", 300_000)] {
            std::fs::write(boot.join(name), vec![b'x'; size]).unwrap();
        }
        let cfg = self.path("cluster.toml");
        std::fs::write(
            &cfg,
            format!(
                "[cluster]\nname = \"lab\"\ninterface = \"br0\"\nserver = \"{SERVER}/24\"\n\
                 pool = \"192.168.78.10-192.168.78.20\"\nhostname = \"ltsp\"\nlease_time = \"1h\"\n\n\
                 [serve]\nstatus = \"{STATUS}\"\n"
            ),
        )
        .unwrap();
        // A udhcpc script that configures the address (what a node's init does).
        let script = self.path("udhcpc.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$1\" = bound ] && ip addr add $ip/$mask dev $interface\nexit 0\n",
        )
        .unwrap();
        run(&["chmod", "+x", script.to_str().unwrap()]);
        cfg
    }

    fn serve(&self, cfg: &Path) -> (ChildGuard, PathBuf) {
        let log = self.path("serve.log");
        let mut cmd = self.net.srv.command(harness::mosboot_bin());
        cmd.arg("-c")
            .arg(cfg)
            .arg("serve")
            .arg("--state")
            .arg(self.path("state"))
            .arg("--out")
            .arg(self.path("out"))
            .args(["--probe", "1s"]);
        let g = harness::spawn_until_line(&mut cmd, &log, "status page on", Duration::from_secs(15));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(text.contains(&format!("status page on http://{STATUS}/")), "{text}");
        (g, log)
    }

    /// GET on the page's server, from inside its namespace.
    fn get(&self, path: &str) -> String {
        let o = self
            .net
            .srv
            .command("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://{STATUS}{path}"))
            .output()
            .unwrap();
        assert!(o.status.success(), "curl {path}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn nodes_json(&self, cfg: &Path) -> serde_json::Value {
        let o = Command::new(harness::mosboot_bin())
            .arg("-c")
            .arg(cfg)
            .args(["nodes", "--json", "--state"])
            .arg(self.path("state"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Headless Chromium inside the server's namespace (the page is on its loopback).
    fn chromium(&self, args: &[&str]) -> Command {
        let profile = tempfile::tempdir_in(self.net.dir.path()).unwrap().keep();
        let mut c = self.net.srv.command("chromium");
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1024,768",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("http://{STATUS}/"))
        .stdin(Stdio::null());
        c
    }
}

impl FakeNode {
    fn udhcpc(&self, lab: &Lab) -> Output {
        self.ns
            .command("udhcpc")
            .args(["-f", "-q", "-n", "-t", "5", "-T", "1", "-i", "eth0", "-s"])
            .arg(lab.path("udhcpc.sh"))
            .output()
            .unwrap()
    }

    fn tftp(&self, lab: &Lab, remote: &str) -> Output {
        self.ns
            .command("busybox")
            .args(["tftp", "-g", "-r", remote, "-l"])
            .arg(lab.path(&format!("got-{}", self.ns.name)))
            .arg(SERVER)
            .output()
            .unwrap()
    }

    fn fetch(&self, lab: &Lab, remote: &str) {
        let o = self.tftp(lab, remote);
        assert!(o.status.success(), "tftp {remote}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// A page in headless Chromium, driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands on fd 3, replies on fd 4, each message ends with NUL), so
/// the test can read the live DOM as often as it likes while the page stays open.
struct Browser {
    _child: ChildGuard,
    to: std::fs::File,
    from: std::io::BufReader<std::fs::File>,
    next: u64,
    session: String,
}

impl Browser {
    fn open(lab: &Lab) -> Browser {
        use std::os::fd::{FromRawFd, RawFd};
        use std::os::unix::process::CommandExt;
        let pipe = || {
            let mut fds = [0 as RawFd; 2];
            // SAFETY: pipe2 writes two fresh descriptors into the array.
            assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
            fds
        };
        let (cmd_pipe, reply_pipe) = (pipe(), pipe());
        let (child_in, child_out) = (cmd_pipe[0], reply_pipe[1]);
        let mut cmd = lab.chromium(&["--remote-debugging-pipe"]);
        cmd.stdout(Stdio::null()).stderr(std::fs::File::create(lab.path("browser.err")).unwrap());
        // SAFETY: only dup2/fcntl (async-signal-safe) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let hi_in = libc::fcntl(child_in, libc::F_DUPFD_CLOEXEC, 10);
                let hi_out = libc::fcntl(child_out, libc::F_DUPFD_CLOEXEC, 10);
                if hi_in < 0 || hi_out < 0 || libc::dup2(hi_in, 3) < 0 || libc::dup2(hi_out, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = ChildGuard::spawn(&mut cmd);
        // SAFETY: the parent's ends are ours alone; the child's ends are closed here after fork.
        let (to, from) = unsafe {
            libc::close(child_in);
            libc::close(child_out);
            (std::fs::File::from_raw_fd(cmd_pipe[1]), std::fs::File::from_raw_fd(reply_pipe[0]))
        };
        let mut b = Browser {
            _child: child,
            to,
            from: std::io::BufReader::new(from),
            next: 0,
            session: String::new(),
        };
        let mut target = None;
        assert!(wait_until(Duration::from_secs(20), || {
            let t = b.call(None, "Target.getTargets", serde_json::json!({}));
            target = t["targetInfos"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["type"] == "page").map(|t| t["targetId"].clone()));
            target.is_some()
        }));
        let s =
            b.call(None, "Target.attachToTarget", serde_json::json!({ "targetId": target, "flatten": true }));
        b.session = s["sessionId"].as_str().expect("a session").to_string();
        b
    }

    /// Sends one command and returns its result (events in between are skipped).
    fn call(&mut self, session: Option<&str>, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::{BufRead, Write};
        self.next += 1;
        let mut msg = serde_json::json!({ "id": self.next, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).expect("chromium takes commands");
        loop {
            let mut buf = Vec::new();
            let n = self.from.read_until(0, &mut buf).expect("chromium answers");
            assert!(n > 0, "chromium closed its pipe during {method}");
            buf.pop();
            let reply: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            if reply["id"] == self.next {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// The page's DOM as it is now.
    fn dom(&mut self) -> String {
        let session = self.session.clone();
        let r = self.call(
            Some(&session),
            "Runtime.evaluate",
            serde_json::json!({ "expression": "document.documentElement.outerHTML", "returnByValue": true }),
        );
        r["result"]["value"].as_str().unwrap_or_default().to_string()
    }
}

fn rows_by_ip(v: &serde_json::Value) -> std::collections::BTreeMap<String, serde_json::Value> {
    v.as_array().unwrap().iter().map(|r| (r["ip"].as_str().unwrap().to_string(), r.clone())).collect()
}

fn stages(row: &serde_json::Value) -> Vec<String> {
    row["boot"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap().to_string()).collect()
}

/// The `<tr>` of node `n` in a dumped DOM.
fn dom_row(dom: &str, n: u64) -> String {
    let start =
        dom.find(&format!("id=\"node-{n}\"")).unwrap_or_else(|| panic!("no row for node {n}:\n{dom}"));
    let end = dom[start..].find("</tr>").map(|e| start + e).unwrap_or(dom.len());
    dom[start..end].to_string()
}

#[test]
fn status_page_shows_each_node_its_timeline_and_live_updates_in_chromium() {
    harness::require_root("the status page test (network namespaces, ports 67/69)");
    let mut lab = Lab::new();
    let cfg = lab.cluster();
    let (mut srv, log) = lab.serve(&cfg);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    // Node A boots the whole way: firmware DHCP, the three files, its kernel's DHCP, joined, alive.
    let a = lab.node(1);
    assert!(a.udhcpc(&lab).status.success(), "{}", log_text());
    for f in ["pxelinux.0", "vmlinuz", "initrd.gz"] {
        a.fetch(&lab, f);
    }
    a.ns.ip(&["addr", "flush", "dev", "eth0"]);
    assert!(a.udhcpc(&lab).status.success(), "{}", log_text());
    // serve records events in batches (at most every 100 ms): wait until what happened shows.
    let api_rows = |lab: &Lab| rows_by_ip(&serde_json::from_str(&lab.get("/api/nodes")).unwrap());
    let mut api = api_rows(&lab);
    let a_seen = |api: &std::collections::BTreeMap<String, serde_json::Value>| {
        api.values().any(|r| r["mac"] == a.mac.as_str() && stages(r).contains(&"initrd".to_string()))
    };
    assert!(
        wait_until(Duration::from_secs(5), || {
            api = api_rows(&lab);
            a_seen(&api)
        }),
        "{api:?}"
    );
    let (a_ip, a_row) = api.iter().find(|(_, r)| r["mac"] == a.mac.as_str()).expect("node A has a row");
    let a_node = a_row["node"].as_u64().unwrap();
    a.fetch(&lab, &format!("mosboot-report/joined/{a_node}/{}", a_row["hostname"].as_str().unwrap()));
    let alive = format!(
        "mosboot-report/alive/{a_node}/{}/{}/0.42/9876/75/on",
        a_row["hostname"].as_str().unwrap(),
        a.mac
    );
    a.fetch(&lab, &alive);

    // Node B stops after its boot file.
    let b = lab.node(2);
    assert!(b.udhcpc(&lab).status.success(), "{}", log_text());
    b.fetch(&lab, "pxelinux.0");

    // B claims to be A: refused (wrong node for its address), and A's vitals stay A's.
    let spoof = format!("mosboot-report/alive/{a_node}/x/{}/9.99/1/1/on", a.mac);
    b.fetch(&lab, &spoof);

    let mut rows = api_rows(&lab);
    let b_mac = b.mac.as_str();
    assert!(
        wait_until(Duration::from_secs(5), || {
            rows = api_rows(&lab);
            let b_row = rows.values().find(|r| r["mac"] == b_mac);
            b_row.is_some_and(|r| stages(r).len() == 3)
                && rows[a_ip]["state"] == "up"
                && log_text().contains("node report refused")
        }),
        "{rows:?}\n{}",
        log_text()
    );
    let ra = &rows[a_ip];
    assert_eq!(ra["state"], "up", "{ra}");
    assert_eq!(ra["load"].as_f64().map(|l| (l * 100.0).round()), Some(42.0), "{ra}");
    assert_eq!(ra["mem_free_kb"], 9876);
    assert_eq!(stages(ra), ["offered", "acked", "boot-file", "kernel", "initrd", "up", "joined"]);
    let (b_ip, rb) = rows.iter().find(|(_, r)| r["mac"] == b.mac.as_str()).expect("node B has a row");
    assert_eq!(rb["state"], "booting", "{rb}");
    assert_eq!(stages(rb), ["offered", "acked", "boot-file"]);
    assert!(log_text().contains("node report refused"), "{}", log_text());

    // `mosboot nodes --json` reads the same data from the state files.
    // serve rewrites alive.json every report interval (5 s) through the descriptor it opened at start.
    let saved = || std::fs::read_to_string(lab.path("state/alive.json")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(12), || saved().contains(a.mac.as_str())),
        "alive.json: {}",
        saved()
    );
    let cli = rows_by_ip(&lab.nodes_json(&cfg));
    for ip in [a_ip, b_ip] {
        for key in ["node", "hostname", "mac", "state", "load", "boot", "lease", "last_stage"] {
            assert_eq!(cli[ip][key], rows[ip][key], "{key} of {ip}");
        }
    }
    let events: serde_json::Value = serde_json::from_str(&lab.get("/api/events")).unwrap();
    let fetched: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ip"] == b_ip.as_str())
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(fetched, ["offered", "acked", "fetched pxelinux.0"]);

    // The page in a real browser: each node's row and stages as the plan has them.
    let o = lab.chromium(&["--dump-dom"]).output().unwrap();
    let dom = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success() && dom.contains("</html>"), "{}", String::from_utf8_lossy(&o.stderr));
    for (ip, r) in [(a_ip, ra), (b_ip, rb)] {
        let row = dom_row(&dom, r["node"].as_u64().unwrap());
        for want in [ip.as_str(), r["hostname"].as_str().unwrap(), r["mac"].as_str().unwrap()] {
            assert!(row.contains(want), "{want} not in {row}");
        }
        assert!(row.contains(&format!("data-state=\"{}\"", r["state"].as_str().unwrap())), "{row}");
        let shown: Vec<&str> =
            row.split("data-stage=\"").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
        assert_eq!(shown, stages(r), "{row}");
    }
    assert!(dom_row(&dom, a_node).contains("0.42"));
    assert!(dom.contains(">1 booting<"), "{dom}");
    assert!(dom.contains("class=\"lane\""), "the storm view has lanes: {dom}");

    // Live: while the page is open, B fetches its kernel; the event must reach the page (listed
    // and in B's row) within a second or so, without a reload.
    let mut page = Browser::open(&lab);
    assert!(
        wait_until(Duration::from_secs(10), || page.dom().contains("id=\"conn\" class=\"live\"")),
        "{}",
        page.dom()
    );
    assert!(!page.dom().contains("fetched vmlinuz"));
    b.fetch(&lab, "vmlinuz");
    let mut live = String::new();
    let arrived = wait_until(Duration::from_millis(1500), || {
        live = page.dom();
        live.contains("fetched vmlinuz</li>")
            && dom_row(&live, rb["node"].as_u64().unwrap()).contains("data-stage=\"kernel\"")
    });
    assert!(arrived, "no live update within 1.5 s:\n{live}");

    // A picture of it, for a person (kept in the target folder).
    let shot = harness::workspace_root().join("target/status-page-test.png");
    let o = lab.chromium(&[&format!("--screenshot={}", shot.display())]).output().unwrap();
    assert!(o.status.success() && shot.metadata().map(|m| m.len() > 10_000).unwrap_or(false));

    // A stops reporting: after three missed intervals it is down, on the API and in `mosboot nodes`.
    assert!(wait_until(Duration::from_secs(25), || {
        rows_by_ip(&serde_json::from_str(&lab.get("/api/nodes")).unwrap())[a_ip]["state"] == "down"
    }));
    assert_eq!(rows_by_ip(&lab.nodes_json(&cfg))[a_ip]["state"], "down");
    let hint = rows_by_ip(&serde_json::from_str(&lab.get("/api/nodes")).unwrap())[a_ip]["hint"].clone();
    assert!(hint.as_str().unwrap_or_default().starts_with("no report for"), "{hint}");

    srv.signal(libc::SIGTERM);
    let st = srv.wait_timeout(Duration::from_secs(5)).expect("serve stops on SIGTERM");
    assert!(st.success(), "{st:?}: {}", log_text());
}

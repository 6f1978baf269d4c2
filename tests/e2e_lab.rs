//! The virtual lab, end to end: emulated 486s and Pentiums boot from `mosboot serve` inside a
//! network namespace this test creates (scripts/lab/lab.sh), with the real kit kernel, a busybox
//! built for the 486, QEMU's iPXE ROMs and pxelinux. Five nodes: PXE with three NIC models, one
//! booting the ext2 (2.4-style) initrd from /dev/ram0, one from `mosboot floppy --nic pci` (iPXE)
//! with its NIC ROM off. Checks what an admin would: every node's hostname and IP agree with the plan,
//! its node number with the map, the map bytes on the node with `out/server/`, and `mosboot
//! nodes` and the status page (read in headless Chromium) show every node joined.
//!
//! The second test is the ISA floppy (issue 10): 486s with an ISA NE2000 at 0x300/IRQ 9 and
//! 0x320/IRQ 10, no PCI NIC, boot the same floppy, pick up a rebuilt image on the next boot, and
//! the 2.4-style ext2 stage-1 boots an ext2 node image through /dev/ram1 and pivot_root.
//!
//! Needs root and the node kit (`make test` builds it and passes KIT_KERNEL, KIT_BUSYBOX,
//! KIT_FLOPPY_KERNEL, KIT_BUSYBOX_STAGE1, KIT_QEMU_DIR, KIT_LKRN). To leave them out on purpose,
//! filter them (`cargo test -p mosboot-tests --test e2e_lab -- --skip boot`): libtest then counts
//! them as filtered out, never as passed. The two tests take turns: each runs QEMUs on both cores.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use harness::{mosboot_bin, sha256_file, workspace_root};

fn kit(var: &str) -> PathBuf {
    let v = std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: run this test through `make test` (it builds the node kit), or leave it out with `-- --skip boot`")
    });
    let p = PathBuf::from(v);
    assert!(p.exists(), "{var}={} does not exist (make kit)", p.display());
    p
}

/// The lab tests run one at a time: each one's emulated PCs need both cores.
static LAB: Mutex<()> = Mutex::new(());

fn mosboot_output(dir: &Path, args: &[&str]) -> Output {
    Command::new(mosboot_bin()).current_dir(dir).args(args).output().expect("run mosboot")
}

fn mosboot(dir: &Path, args: &[&str]) -> String {
    let out = mosboot_output(dir, args);
    assert!(
        out.status.success(),
        "mosboot {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn config(kernel: &Path, busybox: &Path, initrd: &str, out: &str) -> String {
    config_with(kernel, busybox, initrd, out, None)
}

/// The shared sample cluster on the lab bridge, with the kit's kernel and busybox.
fn config_with(kernel: &Path, busybox: &Path, initrd: &str, out: &str, overlay: Option<&Path>) -> String {
    let q = |v: &str| format!("{v:?}");
    let kernel = q(&kernel.display().to_string());
    let busybox = q(&busybox.display().to_string());
    let overlay = overlay.map(|o| q(&o.display().to_string()));
    let mut set = vec![
        ("cluster.name", "\"e2e\""),
        ("cluster.interface", "\"br0\""),
        ("cluster.lease_time", "\"1h\""),
        ("image.kernel", kernel.as_str()),
        ("image.busybox", busybox.as_str()),
        ("image.cmdline", "\"panic=5\""),
    ];
    let (initrd, out) = (q(initrd), q(out));
    set.push(("image.initrd", initrd.as_str()));
    set.push(("image.out", out.as_str()));
    if let Some(o) = &overlay {
        set.push(("image.overlay", o.as_str()));
    }
    harness::sample_cluster(&set, "")
}

/// What a node printed: (hostname, ip, mac) from `up`, (N, M) from joined/standalone, the map hash.
#[derive(Debug, Default)]
struct Console {
    up: Option<(String, String, String)>,
    number: Option<(u32, u32)>,
    map_sha: Option<String>,
}

fn read_console(path: &Path) -> Console {
    let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).replace('\r', "");
    let mut c = Console::default();
    for line in text.lines() {
        let Some(rest) = line.find("mosboot: ").map(|i| &line[i + 9..]) else { continue };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["up", h, ip, mac, ..] => c.up = Some((h.to_string(), ip.to_string(), mac.to_string())),
            ["map", "sha256", sum, ..] => c.map_sha = Some(sum.to_string()),
            ["joined", _, "as", "node", n, "of", m, ..] => c.number = parse_nm(n, m),
            ["no", "openMosix", "in", "this", "kernel;", "node", n, "of", m, ..] => c.number = parse_nm(n, m),
            _ => {}
        }
    }
    c
}

/// The four iPXE PCs (486 and Pentium, rtl8139 and e1000) that boot at once in the transport
/// tests (HTTP, multicast); names and the fourth MAC octet keep one test's nodes apart from
/// another's. No ne2k_pci: iPXE's NE2000 driver (ns8390) can wedge for good after a receive
/// overrun ("Bogus packet, ignoring" for every later packet), which the bursts of a TCP window
/// or of the multicast group provoke on a loaded host (seen once in seven multicast runs and
/// once in a fresh-clone CI over HTTP) -- an iPXE bug that would make these tests flaky; the
/// README says what it means for NE2000 labs. The NE2000 keeps its place in the lock-step TFTP
/// lab tests.
const TRANSPORT_PCS: [&str; 4] = [
    "cpu=486,nic=rtl8139,mem=16",
    "cpu=pentium,nic=rtl8139,mem=32",
    "cpu=486,nic=e1000,mem=16",
    "cpu=pentium,nic=e1000,mem=24",
];

fn four_ipxe_pcs(specs: [&str; 4], names: [&'static str; 4], mac_octet: u8) -> [(&'static str, String); 4] {
    std::array::from_fn(|i| (names[i], format!("{},mac=52:54:00:{mac_octet:02x}:00:{:02x}", specs[i], i + 1)))
}

/// One lab run: `mosboot serve` (with its status page) for `cfg` and the given nodes; afterwards
/// `mosboot nodes --json` and, with `page`, the status page as headless Chromium renders it (its
/// DOM, and a screenshot kept in the target folder). Returns the server log, the nodes table and
/// the page's DOM (empty without `page`); fails the test when a node does not finish.
fn run_lab(
    w: &Path,
    cfg: &str,
    run: &str,
    nodes: &[(&str, String)],
    page: bool,
) -> (String, Vec<serde_json::Value>, String) {
    let logs = w.join(format!("logs-{run}"));
    let state = w.join("state");
    let json = w.join(format!("nodes-{run}.json"));
    let cfg = w.join(cfg);
    let mb = mosboot_bin();
    let mut cmd = Command::new(workspace_root().join("scripts/lab/lab.sh"));
    cmd.args(["--ns-prefix", "mbe2e", "--timeout", "420", "--logdir"]).arg(&logs);
    if let Some(q) = std::env::var_os("KIT_QEMU_DIR") {
        cmd.arg("--qemu-dir").arg(q);
    }
    cmd.arg("--server").arg(format!(
        "{} -c {} serve --status 127.0.0.1:8067 --state {}",
        mb.display(),
        cfg.display(),
        state.display()
    ));
    for (name, spec) in nodes {
        cmd.arg("--node").arg(format!("name={name},{spec}"));
    }
    // Give the last report a moment to land, then read the table as an admin would, while serve
    // runs; Chromium runs inside the lab's namespace, where the page listens on loopback.
    let chromium = |what: &str| {
        format!(
            "chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
             --disable-background-networking --disable-component-update --disable-sync \
             --user-data-dir=$(mktemp -d) --window-size=1024,768 {what} http://127.0.0.1:8067/"
        )
    };
    let page_file = w.join(format!("page-{run}.html"));
    let look = if page {
        let shot = workspace_root().join(format!("target/e2e-status-{run}.png"));
        format!(
            "; {} > {} 2>/dev/null; {} 2>/dev/null",
            chromium("--dump-dom"),
            page_file.display(),
            chromium(&format!("--screenshot={}", shot.display()))
        )
    } else {
        String::new()
    };
    cmd.arg("--after").arg(format!(
        "sleep 2; {} -c {} nodes --json --state {} > {}{look}",
        mb.display(),
        cfg.display(),
        state.display(),
        json.display()
    ));
    let out = cmd.output().expect("run lab.sh");
    let transcript =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{transcript}");
    let server_log = std::fs::read_to_string(logs.join("server.log")).unwrap_or_default();
    assert!(out.status.success(), "lab run {run} failed:\n{transcript}\n--- server log ---\n{server_log}");
    for (name, _) in nodes {
        let console = std::fs::read(logs.join(format!("node-{name}.log"))).unwrap_or_default();
        std::fs::write(w.join(format!("console-{run}-{name}.log")), console).expect("keep console");
    }
    let rows = serde_json::from_slice(&std::fs::read(&json).expect("nodes.json")).expect("json");
    let dom = std::fs::read_to_string(&page_file).unwrap_or_default();
    if page {
        assert!(dom.contains("id=\"nodes\""), "Chromium got no status page:\n{dom}");
    }
    (server_log, rows, dom)
}

/// The status page shows the node up, with the steps of its boot ending in "joined".
fn check_page(dom: &str, name: &str, spec: &str, ip: &str, rows: &[serde_json::Value]) {
    let row = rows.iter().find(|r| r["ip"].as_str() == Some(ip)).expect("row");
    assert_eq!(row["state"].as_str(), Some("up"), "{name}: {row}");
    let node = row["node"].as_u64().expect("node");
    let start = dom.find(&format!("id=\"node-{node}\"")).unwrap_or_else(|| panic!("no page row for {name}"));
    let tr = &dom[start..start + dom[start..].find("</tr>").unwrap_or(dom.len() - start)];
    let (host, mac) = (row["hostname"].as_str().expect("host"), row["mac"].as_str().expect("mac"));
    assert!(tr.contains("data-state=\"up\"") && tr.contains(host) && tr.contains(mac), "{name}: {tr}");
    assert!(tr.contains("data-stage=\"joined\""), "{name}: {tr}");
    if !spec.contains("kernel=") {
        assert!(tr.contains("data-stage=\"kernel\"") && tr.contains("data-stage=\"initrd\""), "{name}: {tr}");
    }
}

/// Checks one node as an admin would: its `up` line (MAC, pool address, plan hostname), its node
/// number against the map, the map bytes against `out/server/`, and its row in `mosboot nodes`.
/// Returns the node's console text and IP.
fn check_node(
    w: &Path,
    run: &str,
    name: &str,
    spec: &str,
    total: u32,
    map_sha: &str,
    rows: &[serde_json::Value],
) -> (String, String) {
    let path = w.join(format!("console-{run}-{name}.log"));
    let c = read_console(&path);
    let (host, ip, mac) = c.up.clone().unwrap_or_else(|| panic!("node {name} printed no 'mosboot: up' line"));
    let want_mac = spec.split(',').find_map(|kv| kv.strip_prefix("mac=")).expect("mac");
    assert_eq!(mac, want_mac, "node {name}: MAC");
    let last: u32 = ip.rsplit('.').next().and_then(|o| o.parse().ok()).expect("ip");
    assert!(ip.starts_with("192.168.0.") && (1..=253).contains(&last), "node {name}: {ip} not in the pool");
    assert_eq!(host, format!("ws{last:03}"), "node {name}: hostname does not follow the plan");
    // Plan: node 1 is the server, pool address .k is node k+1.
    assert_eq!(c.number, Some((last + 1, total)), "node {name}: node number disagrees with the map");
    assert_eq!(c.map_sha.as_deref(), Some(map_sha), "node {name}: map differs from out/server/");
    let row = rows
        .iter()
        .find(|r| r["mac"].as_str() == Some(mac.as_str()))
        .unwrap_or_else(|| panic!("mosboot nodes does not list {mac}"));
    assert_eq!(row["ip"].as_str(), Some(ip.as_str()), "nodes table IP for {name}");
    assert_eq!(row["hostname"].as_str(), Some(host.as_str()));
    assert_eq!(row["lease"].as_str(), Some("bound"), "{name}: {row}");
    let joined = format!("joined as node {}", last + 1);
    assert_eq!(row["last_stage"].as_str(), Some(joined.as_str()), "{name}: {row}");
    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).replace('\r', "");
    (text, ip)
}

/// Nodes in the map of a `mosboot map` output (the server is one of them).
fn map_total(map: &str) -> u32 {
    let lines = map.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect::<Vec<_>>();
    assert_eq!(lines.len(), 2, "{map}");
    lines.iter().map(|l| l[2].parse::<u32>().expect("count")).sum()
}

fn parse_nm(n: &str, m: &str) -> Option<(u32, u32)> {
    Some((n.parse().ok()?, m.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?))
}

#[test]
fn emulated_pcs_boot_from_mosboot_and_join() {
    harness::require_root("the virtual lab (namespaces, taps)");
    let kernel = kit("KIT_KERNEL");
    let busybox = kit("KIT_BUSYBOX");
    let lkrn = kit("KIT_LKRN");
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    std::fs::write(w.join("cluster.toml"), config(&kernel, &busybox, "cpio", "out")).expect("config");
    std::fs::write(w.join("ext2.toml"), config(&kernel, &busybox, "ext2", "out-ext2")).expect("config");
    mosboot(w, &["-c", "cluster.toml", "build"]);
    mosboot(w, &["-c", "ext2.toml", "build"]);
    // A PCI card without a ROM: the iPXE floppy.
    mosboot(w, &["floppy", "--nic", "pci", "--out", "floppy.img", "--ipxe", lkrn.to_str().expect("utf8")]);
    let map = mosboot(w, &["-c", "cluster.toml", "map"]);
    let server_map_sha = sha256_file(&w.join("out/server/openmosix.map"));

    // The ext2 node boots that image straight from QEMU (-kernel/-initrd) with the boot line the
    // build wrote, minus the serial console's comma (lab.sh splits node specs on commas).
    let pxe_ext2 = std::fs::read_to_string(w.join("out-ext2/tftpboot/pxelinux.cfg/default")).expect("cfg");
    let append = pxe_ext2
        .lines()
        .find_map(|l| l.trim().strip_prefix("APPEND "))
        .expect("APPEND line")
        .split_whitespace()
        .filter(|a| !a.starts_with("console="))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(append.contains("root=/dev/ram0"), "{append}");
    let append = format!("console=ttyS0 {append}");

    let nodes = [
        ("486", "cpu=486,nic=ne2k_pci,mem=16,mac=52:54:00:e2:00:01".to_string()),
        ("pentium", "cpu=pentium,nic=rtl8139,mem=32,mac=52:54:00:e2:00:02".to_string()),
        ("p3", "cpu=pentium3,nic=pcnet,mem=64,mac=52:54:00:e2:00:03".to_string()),
        (
            "ext2",
            format!(
                "cpu=486,nic=e1000,mem=24,mac=52:54:00:e2:00:04,kernel={},initrd={},append={append}",
                w.join("out-ext2/tftpboot/vmlinuz").display(),
                w.join("out-ext2/tftpboot/initrd.gz").display()
            ),
        ),
        (
            "floppy",
            format!(
                "cpu=486,nic=rtl8139,mem=16,mac=52:54:00:e2:00:05,rom=off,fda={}",
                w.join("floppy.img").display()
            ),
        ),
    ];
    let _turn = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (server_log, rows, dom) = run_lab(w, "cluster.toml", "pxe", &nodes, true);
    let total = map_total(&map);
    let mut ips = Vec::new();
    for (name, spec) in &nodes {
        let ip = check_node(w, "pxe", name, spec, total, &server_map_sha, &rows).1;
        check_page(&dom, name, spec, &ip, &rows);
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), nodes.len(), "two nodes got the same address");
    // The PXE nodes fetched their boot files from mosboot's TFTP.
    // QEMU's NIC ROMs are iPXE, so they get boot.ipxe (the DHCP tests cover PXE ROMs and
    // pxelinux.0 at the protocol level).
    for f in ["boot.ipxe", "vmlinuz", "initrd.gz"] {
        assert!(
            server_log.contains(&format!("fetched {f}")),
            "server log shows no 'fetched {f}':\n{server_log}"
        );
    }
}

/// An overlay whose openMosix start script says which build the node runs (the kit kernel has
/// no openMosix, so it then reports standalone as it would anyway).
fn write_marker_overlay(dir: &Path, version: &str) {
    let script = dir.join("etc/mosboot/openmosix-start");
    std::fs::create_dir_all(script.parent().expect("parent")).expect("overlay dir");
    std::fs::write(&script, format!("#!/bin/sh\necho \"mosboot: e2e image {version}\"\nexit 3\n"))
        .expect("overlay");
}

#[test]
fn isa_486s_boot_one_floppy_and_pick_up_a_rebuilt_image() {
    harness::require_root("the virtual lab (namespaces, taps)");
    let kernel = kit("KIT_KERNEL");
    let busybox = kit("KIT_BUSYBOX");
    let fkernel = kit("KIT_FLOPPY_KERNEL");
    let fbusybox = kit("KIT_BUSYBOX_STAGE1");
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let overlay = w.join("overlay");
    write_marker_overlay(&overlay, "v1");
    std::fs::write(w.join("cluster.toml"), config_with(&kernel, &busybox, "cpio", "out", Some(&overlay)))
        .expect("config");
    std::fs::write(w.join("ext2.toml"), config_with(&kernel, &busybox, "ext2", "out-ext2", Some(&overlay)))
        .expect("config");
    mosboot(w, &["-c", "cluster.toml", "build"]);
    let map = mosboot(w, &["-c", "cluster.toml", "map"]);
    let total = map_total(&map);
    let map_sha = sha256_file(&w.join("out/server/openmosix.map"));

    // Item 3: fits, reproducible (two writes, a second apart), and a clear refusal when too big.
    let (fk, fb) = (fkernel.to_str().expect("utf8"), fbusybox.to_str().expect("utf8"));
    let floppy = |out: &str, extra: &[&str]| {
        let mut args = vec!["floppy", "--out", out, "--kernel", fk, "--busybox", fb];
        args.extend_from_slice(extra);
        mosboot_output(w, &args)
    };
    let first = floppy("floppy.img", &[]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    println!("{}", String::from_utf8_lossy(&first.stdout));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(floppy("again.img", &[]).status.success());
    let img = std::fs::read(w.join("floppy.img")).expect("floppy");
    assert_eq!(img.len(), 1_474_560);
    assert!(
        img == std::fs::read(w.join("again.img")).expect("floppy"),
        "two floppies of the same inputs differ"
    );
    let mut big = std::fs::read(&fkernel).expect("kernel");
    big.resize(1_300_000, 0);
    std::fs::write(w.join("big-kernel"), &big).expect("big kernel");
    let refused =
        mosboot_output(w, &["floppy", "--out", "big.img", "--kernel", "big-kernel", "--busybox", fb]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not fit") && err.contains("bytes too many") && err.contains("big-kernel"),
        "{err}"
    );
    assert!(!w.join("big.img").exists(), "a refused floppy must not be written");

    // Item 7: two ISA NE2000 486s (no PCI NIC) at the common ports boot the floppy and join.
    let isa = |io: &str, irq: u32, n: u32| {
        format!(
            "cpu=486,nic=ne2k_isa,io={io},irq={irq},mem=16,mac=52:54:00:e3:00:0{n},fda={}",
            w.join("floppy.img").display()
        )
    };
    let nodes = [("isa300", isa("0x300", 9, 1)), ("isa320", isa("0x320", 10, 2))];
    let _turn = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (server_log, rows, _) = run_lab(w, "cluster.toml", "first", &nodes, false);
    let mut first_ips = Vec::new();
    for (name, spec) in &nodes {
        let (text, ip) = check_node(w, "first", name, spec, total, &map_sha, &rows);
        assert!(text.contains("mosboot: floppy: starting the node image"), "{name}: no stage-1:\n{text}");
        assert!(text.contains("mosboot: e2e image v1"), "{name}: not the v1 image:\n{text}");
        first_ips.push(ip);
    }
    // The server saw the floppy's stages: its marker and the image fetch, per node.
    for ip in &first_ips {
        for stage in ["reported floppy-stage1", "fetched initrd.gz"] {
            assert!(
                server_log.lines().any(|l| l.contains(&format!("ip={ip} ")) && l.contains(stage)),
                "server log has no '{stage}' for {ip}:\n{server_log}"
            );
        }
    }

    // Item 2: a rebuilt image (new overlay) reaches the same floppy on its next boot.
    write_marker_overlay(&overlay, "v2");
    mosboot(w, &["-c", "cluster.toml", "build"]);
    let (_, rows, _) = run_lab(w, "cluster.toml", "rebuilt", &nodes[..1], false);
    let (text, ip) = check_node(w, "rebuilt", nodes[0].0, &nodes[0].1, total, &map_sha, &rows);
    assert!(text.contains("mosboot: e2e image v2"), "the floppy did not boot the rebuilt image:\n{text}");
    assert_eq!(ip, first_ips[0], "the node kept its lease");

    // Item 6 as far as it runs here: the 2.4-style floppy (ext2 stage-1 in /dev/ram0, node ext2
    // image in /dev/ram1, pivot_root) with the floppy kernel standing in for a 2.4 one.
    mosboot(w, &["-c", "ext2.toml", "build"]);
    let ext2 = floppy("floppy-ext2.img", &["--initrd", "ext2", "--nic", "ne2000:io=0x320,irq=10"]);
    assert!(ext2.status.success(), "{}", String::from_utf8_lossy(&ext2.stderr));
    let spec = isa("0x320", 10, 3).replace("floppy.img", "floppy-ext2.img");
    let (_, rows, _) = run_lab(w, "ext2.toml", "ext2", &[("isa-ext2", spec.clone())], false);
    let ext2_sha = sha256_file(&w.join("out-ext2/server/openmosix.map"));
    let (text, _) = check_node(w, "ext2", "isa-ext2", &spec, total, &ext2_sha, &rows);
    assert!(text.contains("mosboot: e2e image v2"), "ext2 path did not boot the node image:\n{text}");
}

/// Issue 14 §2–3: four iPXE nodes (four NIC models) boot at once with `[serve] http` on; their
/// boot.ipxe (over TFTP) sends them to mosboot's HTTP server for the kernel and initrd. The
/// server's log proves the path: per node, one `http: sent` line for each file and exactly one
/// `fetched` stage for it (a TFTP fetch would add a second). No pcnet node: the iPXE pcnet
/// driver on QEMU's pcnet stops receiving after the first dropped segment of a TCP stream (seen
/// here: the client SACKs for a few ms, then sends nothing, not even for retransmissions, at
/// 7-25 % of the kernel), and iPXE has no download timeout to fall back to TFTP; the TFTP runs
/// keep pcnet covered. Not mosboot's doing: Debian's nginx hangs the same node the same way,
/// also with small send buffers or a link shaped to 10 Mbit/s (README, HTTP for iPXE nodes).
#[test]
fn ipxe_nodes_boot_over_http() {
    harness::require_root("the virtual lab (namespaces, taps)");
    let kernel = kit("KIT_KERNEL");
    let busybox = kit("KIT_BUSYBOX");
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let cfg = config(&kernel, &busybox, "cpio", "out") + "\n[serve]\nhttp = \"0.0.0.0:8080\"\n";
    std::fs::write(w.join("http.toml"), cfg).expect("config");
    mosboot(w, &["-c", "http.toml", "build"]);
    let script = std::fs::read_to_string(w.join("out/tftpboot/boot.ipxe")).expect("boot.ipxe");
    assert!(script.contains("kernel http://192.168.0.254:8080/vmlinuz"), "{script}");
    let map = mosboot(w, &["-c", "http.toml", "map"]);
    let map_sha = sha256_file(&w.join("out/server/openmosix.map"));
    let nodes = four_ipxe_pcs(TRANSPORT_PCS, ["h486", "hpentium", "h486b", "he1000"], 0xe4);
    let _turn = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let started = std::time::Instant::now();
    let (server_log, rows, _) = run_lab(w, "http.toml", "http", &nodes, false);
    println!("http lab: {} nodes at once, {:.1} s", nodes.len(), started.elapsed().as_secs_f64());
    let total = map_total(&map);
    for (name, spec) in &nodes {
        let (_, ip) = check_node(w, "http", name, spec, total, &map_sha, &rows);
        for f in ["vmlinuz", "initrd.gz"] {
            let sent = server_log
                .lines()
                .filter(|l| l.contains("http: sent") && l.contains(&format!("{ip}:")) && l.contains(f))
                .count();
            let fetched = server_log
                .lines()
                .filter(|l| l.contains(&format!("ip={ip} ")) && l.ends_with(&format!("stage=fetched {f}")))
                .count();
            assert_eq!(
                (sent, fetched),
                (1, 1),
                "{name} ({ip}) {f}: HTTP sends and fetched stages:\n{server_log}"
            );
        }
    }
}

/// Issue 14 §1, §3: four iPXE nodes boot at once over PXE MTFTP (`mtftp://`, what Debian 13's
/// iPXE can receive; its `tftm://` never delivers the group's DATA, README says why): with
/// `[serve] multicast` on, the built boot.ipxe takes the kernel by MTFTP and the initrd by plain
/// TFTP (iPXE listens on one fixed group for every MTFTP file). Per node the server logs a multicast `sent` line for
/// the kernel (a member that got the whole file) and exactly one `fetched` stage for it (iPXE's
/// own fallback to plain TFTP would add none or a second), and the session's counters show each
/// DATA block sent about once, not once per node (unicast: blocks × nodes).
///
/// Measured on the shared two-core build host under heavy load (load average 7-50), with the
/// final code: 6 of 7 runs passed, the last 5 in a row (55-85 s for the lab, 3540-6049 DATA for
/// 2490 blocks, 3-94 resent). The failing run: iPXE's ne2k_pci driver wedged after a receive
/// overrun (the group still flooding its NIC while it took the initrd by TFTP; "Bogus packet,
/// ignoring" for every later packet) and that node never booted. An iPXE that hears nothing for
/// its 250 ms retry timer re-opens, and after its fourth timeout falls back to plain TFTP; the
/// server refuses that once after a partial MTFTP download, so such a node boots by TFTP and
/// this test fails on "kernel by multicast" rather than on a corrupt kernel.
#[test]
fn ipxe_nodes_boot_over_multicast() {
    harness::require_root("the virtual lab (namespaces, taps)");
    let kernel = kit("KIT_KERNEL");
    let busybox = kit("KIT_BUSYBOX");
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let cfg = config(&kernel, &busybox, "cpio", "out") + "\n[serve]\nmulticast = \"239.255.69.1\"\n";
    std::fs::write(w.join("mc.toml"), cfg).expect("config");
    mosboot(w, &["-c", "mc.toml", "build"]);
    let script = std::fs::read_to_string(w.join("out/tftpboot/boot.ipxe")).expect("boot.ipxe");
    let mtftp =
        script.find("\nkernel mtftp://192.168.0.254/vmlinuz ").expect("boot.ipxe has no MTFTP kernel");
    assert!(script[mtftp..].contains("\ninitrd initrd.gz "), "{script}");
    assert!(script[mtftp..].contains("\nkernel vmlinuz "), "no TFTP fallback after MTFTP:\n{script}");
    let map = mosboot(w, &["-c", "mc.toml", "map"]);
    let map_sha = sha256_file(&w.join("out/server/openmosix.map"));
    let nodes = four_ipxe_pcs(TRANSPORT_PCS, ["m486", "mpentium", "m486b", "me1000"], 0xe5);
    let _turn = LAB.lock().unwrap_or_else(|e| e.into_inner());
    let started = std::time::Instant::now();
    let (server_log, rows, _) = run_lab(w, "mc.toml", "multicast", &nodes, false);
    println!("multicast lab: {} nodes at once, {:.1} s", nodes.len(), started.elapsed().as_secs_f64());
    let total = map_total(&map);
    // Sessions of the kernel: "multicast vmlinuz (mtftp): N clients, B blocks, D DATA sent (R
    // resent, P passes)".
    let head = "multicast vmlinuz (mtftp): ";
    let sessions: Vec<Vec<u64>> = server_log
        .lines()
        .filter_map(|l| l.split_once(head).map(|(_, rest)| rest))
        .map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit()).filter_map(|t| t.parse().ok()).take(4).collect()
        })
        .collect();
    println!("vmlinuz: mtftp sessions [clients, blocks, DATA sent, resent]: {sessions:?}");
    for l in server_log.lines().filter(|l| l.contains(head)) {
        println!("{l}");
    }
    for (name, spec) in &nodes {
        let (_, ip) = check_node(w, "multicast", name, spec, total, &map_sha, &rows);
        let by_multicast = server_log
            .lines()
            .filter(|l| {
                l.contains("tftp: multicast: sent") && l.contains(&format!("{ip}:")) && l.contains("vmlinuz")
            })
            .count();
        let fetched = |f: &str| {
            server_log
                .lines()
                .filter(|l| l.contains(&format!("ip={ip} ")) && l.ends_with(&format!("stage=fetched {f}")))
                .count()
        };
        assert_eq!(
            (by_multicast, fetched("vmlinuz"), fetched("initrd.gz")),
            (1, 1, 1),
            "{name} ({ip}): kernel by multicast, kernel and initrd fetched:\n{server_log}"
        );
    }
    // No node fell back to plain TFTP for the kernel (after a partial MTFTP download iPXE's
    // fallback ends after one block with a corrupt kernel).
    let by_tftp: Vec<&str> = server_log.lines().filter(|l| l.contains("path=\"vmlinuz\"")).collect();
    assert!(by_tftp.is_empty(), "vmlinuz by plain TFTP:\n{}", by_tftp.join("\n"));
    let [clients, blocks, sent, resent] = sessions.iter().fold([0, 0, 0, 0], |[c, b, d, r], s| {
        let at = |i: usize| s.get(i).copied().unwrap_or(0);
        [c + at(0), b.max(at(1)), d + at(2), r + at(3)]
    });
    // Each block once per pass: a pass sends only what its master lacks, to the group, whatever
    // the number of listeners; retransmissions stay rare. Not once per node: unicast would send
    // blocks × nodes. (The emulated listeners, four PCs on two host cores, miss blocks whenever
    // the host deschedules them for longer than their NIC's receive ring lasts, so the later
    // passes are larger here than on a quiet host: 2988-6299 DATA seen for 2490 blocks.)
    let unicast = blocks * nodes.len() as u64;
    assert!(
        clients >= nodes.len() as u64 && blocks > 100 && sent * 4 <= unicast * 3 && resent * 20 <= sent,
        "vmlinuz: {sent} DATA ({resent} resent) for {blocks} blocks and {clients} clients (unicast: {unicast}):\n{server_log}"
    );
}

//! The virtual lab, end to end: emulated 486s and Pentiums boot from `mosboot serve` inside a
//! network namespace this test creates (scripts/lab/lab.sh), with the real kit kernel, a busybox
//! built for the 486, QEMU's iPXE ROMs and pxelinux. Five nodes: PXE with three NIC models, one
//! booting the ext2 (2.4-style) initrd from /dev/ram0, one from `mosboot floppy` with its NIC ROM
//! off. Checks what an admin would: every node's hostname and IP agree with the plan, its node
//! number with the map, the map bytes on the node with `out/server/`, and `mosboot nodes` shows
//! every node joined.
//!
//! Needs root and the node kit (`make test` builds it and passes KIT_KERNEL, KIT_BUSYBOX,
//! KIT_QEMU_DIR, KIT_LKRN). Set MOSBOOT_E2E=skip to skip it deliberately.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{mosboot_bin, sha256_file, workspace_root};

fn kit(var: &str) -> PathBuf {
    let v = std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: run this test through `make test` (it builds the node kit), or set MOSBOOT_E2E=skip")
    });
    let p = PathBuf::from(v);
    assert!(p.exists(), "{var}={} does not exist (make kit)", p.display());
    p
}

fn mosboot(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(mosboot_bin()).current_dir(dir).args(args).output().expect("run mosboot");
    assert!(
        out.status.success(),
        "mosboot {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The shared sample cluster on the lab bridge, with the kit's kernel and busybox.
fn config(kernel: &Path, busybox: &Path, initrd: &str, out: &str) -> String {
    let q = |v: &str| format!("{v:?}");
    harness::sample_cluster(
        &[
            ("cluster.name", "\"e2e\""),
            ("cluster.interface", "\"br0\""),
            ("cluster.lease_time", "\"1h\""),
            ("image.kernel", &q(&kernel.display().to_string())),
            ("image.busybox", &q(&busybox.display().to_string())),
            ("image.initrd", &q(initrd)),
            ("image.cmdline", "\"panic=5\""),
            ("image.out", &q(out)),
        ],
        "",
    )
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

fn parse_nm(n: &str, m: &str) -> Option<(u32, u32)> {
    Some((n.parse().ok()?, m.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()?))
}

#[test]
fn emulated_pcs_boot_from_mosboot_and_join() {
    if std::env::var("MOSBOOT_E2E").as_deref() == Ok("skip") {
        eprintln!("skipped: MOSBOOT_E2E=skip");
        return;
    }
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
    mosboot(w, &["floppy", "--out", "floppy.img", "--ipxe", lkrn.to_str().expect("utf8")]);
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
    let logs = w.join("logs");
    let state = w.join("state");
    let mb = mosboot_bin();
    let mut cmd = Command::new(workspace_root().join("scripts/lab/lab.sh"));
    cmd.args(["--ns-prefix", "mbe2e", "--timeout", "420", "--logdir"]).arg(&logs);
    if let Some(q) = std::env::var_os("KIT_QEMU_DIR") {
        cmd.arg("--qemu-dir").arg(q);
    }
    cmd.arg("--server").arg(format!(
        "{} -c {} serve --state {}",
        mb.display(),
        w.join("cluster.toml").display(),
        state.display()
    ));
    for (name, spec) in &nodes {
        cmd.arg("--node").arg(format!("name={name},{spec}"));
    }
    // Give the last report a moment to land, then read the table as an admin would, while serve runs.
    cmd.arg("--after").arg(format!(
        "sleep 2; {} -c {} nodes --json --state {} > {}",
        mb.display(),
        w.join("cluster.toml").display(),
        state.display(),
        w.join("nodes.json").display()
    ));
    let out = cmd.output().expect("run lab.sh");
    let transcript =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{transcript}");
    let server_log = std::fs::read_to_string(logs.join("server.log")).unwrap_or_default();
    assert!(out.status.success(), "lab failed:\n{transcript}\n--- server log ---\n{server_log}");

    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(w.join("nodes.json")).expect("nodes.json")).expect("json");
    let by_mac: HashMap<String, &serde_json::Value> =
        rows.iter().filter_map(|r| Some((r["mac"].as_str()?.to_string(), r))).collect();
    let plan_nodes = map.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).collect::<Vec<_>>();
    assert_eq!(plan_nodes.len(), 2, "{map}");
    let total: u32 = plan_nodes.iter().map(|l| l[2].parse::<u32>().expect("count")).sum();

    let mut ips = Vec::new();
    for (name, spec) in &nodes {
        let c = read_console(&logs.join(format!("node-{name}.log")));
        let (host, ip, mac) =
            c.up.clone().unwrap_or_else(|| panic!("node {name} printed no 'mosboot: up' line"));
        let want_mac = spec.split(',').find_map(|kv| kv.strip_prefix("mac=")).expect("mac");
        assert_eq!(mac, want_mac, "node {name}: MAC");
        let last: u32 = ip.rsplit('.').next().and_then(|o| o.parse().ok()).expect("ip");
        assert!(
            ip.starts_with("192.168.0.") && (1..=253).contains(&last),
            "node {name}: {ip} not in the pool"
        );
        assert_eq!(host, format!("ws{last:03}"), "node {name}: hostname does not follow the plan");
        // Plan: node 1 is the server, pool address .k is node k+1.
        assert_eq!(c.number, Some((last + 1, total)), "node {name}: node number disagrees with the map");
        assert_eq!(
            c.map_sha.as_deref(),
            Some(server_map_sha.as_str()),
            "node {name}: map differs from out/server/"
        );
        let row = by_mac.get(&mac).unwrap_or_else(|| panic!("mosboot nodes does not list {mac}"));
        assert_eq!(row["ip"].as_str(), Some(ip.as_str()), "nodes table IP for {name}");
        assert_eq!(row["hostname"].as_str(), Some(host.as_str()));
        assert_eq!(row["lease"].as_str(), Some("bound"), "{name}: {row}");
        let joined = format!("joined as node {}", last + 1);
        assert_eq!(row["last_stage"].as_str(), Some(joined.as_str()), "{name}: {row}");
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

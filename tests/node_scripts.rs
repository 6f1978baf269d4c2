//! The files mosboot writes into a node's root (templates/node/) and the boot-loader configs
//! (templates/boot/), rendered with minijinja and, for the shell scripts, run under BusyBox sh as
//! on a node.
//!
//! There is no openMosix kernel here, so `/proc/hpc` (or `/proc/mosix`) is a scripted directory
//! tree in a scratch root, and setpe, mosctl and omdiscd — like mount, ifconfig, route, hostname,
//! udhcpc, tftp and setsid, which must not touch this machine — are STAND-INS: tiny sh scripts
//! that append their name and arguments to a log and succeed (some can be told to fail). The
//! scripts find them through PATH; every other tool they use is a link to the host's busybox, so
//! they run with the same applets as on a node. `MOSBOOT_ROOT` points the scripts at the scratch
//! root instead of `/`.
//!
//! The templates are rendered with the product's own code (mosboot::render: built-in templates,
//! environment, `sh` filter, template context from the shared sample cluster).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mosboot::config::Config;
use mosboot::plan::Plan;
use mosboot::render::{BootCtx, ImageCtx, Templates, context};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const BUSYBOX: &str = "/bin/busybox";

/// Busybox applets the scripts may use for real (harmless ones; no network, no mounts).
const APPLETS: &[&str] = &[
    "sh",
    "cat",
    "grep",
    "awk",
    "sed",
    "cut",
    "tr",
    "mkdir",
    "sha256sum",
    "echo",
    "printf",
    "ls",
    "head",
    "wc",
    "chmod",
    "ln",
];

/// Renders a template exactly as `mosboot build` does: the product's built-in templates, its
/// environment and its `sh` filter (mosboot::render), never a copy of them.
fn render(ctx: &Value, name: &str) -> String {
    let templates = Templates::load(None, Path::new("cluster.toml"), 0).expect("built-in templates");
    templates
        .render(name, &minijinja::Value::from_serialize(ctx))
        .unwrap_or_else(|e| panic!("rendering {name}: {e}"))
}

const MAP_TEXT: &str = "1 192.168.0.254 1\n2 192.168.0.1 253\n";

/// The product's template context for the SPEC's LTSP example (the shared sample cluster):
/// server .254 is node 1, the pool .1-.253 is nodes 2-254 (ws001..); ws005 (node 6) is pinned
/// with a yardstick. As JSON, so a test can change one value with [`with`].
fn sample_context() -> Value {
    let text = harness::sample_cluster(
        &[],
        "[[node]]\nmac = \"52:54:00:12:34:56\"\nip = \"192.168.0.5\"\nyardstick = \"P/133\"\n",
    );
    let cfg = Config::parse(&text, Path::new("/lab/cluster.toml")).expect("the sample parses");
    let plan = Plan::new(&cfg).expect("the sample plans");
    let image = ImageCtx {
        initrd_format: "cpio".into(),
        init_path: "/init".into(),
        kernel_release: "6.1.0-i486".into(),
    };
    let boot = BootCtx {
        kernel: "vmlinuz".into(),
        initrd: "initrd.gz".into(),
        append: "console=tty0 console=ttyS0,115200 panic=1".into(),
        sources: mosboot::pipeline::boot_sources(&cfg, &plan),
    };
    let ctx = context(&cfg, &plan, &image, &boot);
    let json = serde_json::to_value(&ctx).expect("the context is JSON");
    assert_eq!(json["map"]["text"], MAP_TEXT, "the sample's map");
    json
}

fn with(mut ctx: Value, section: &str, key: &str, value: Value) -> Value {
    ctx[section][key] = value;
    ctx
}

/// A scratch node: `root/` holds the rendered files at their node paths, `stand/` the
/// stand-ins, `bb/` links to busybox; `log` collects the stand-ins' calls.
struct Node {
    _dir: TempDir,
    root: PathBuf,
    stand: PathBuf,
    bb: PathBuf,
    log: PathBuf,
}

impl Node {
    fn new(ctx: &Value) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let stand = dir.path().join("stand");
        let bb = dir.path().join("bb");
        for d in [&root, &stand, &bb] {
            fs::create_dir_all(d).unwrap();
        }
        for applet in APPLETS {
            symlink(BUSYBOX, bb.join(applet)).unwrap();
        }
        let node = Node { log: dir.path().join("calls.log"), _dir: dir, root, stand, bb };
        node.write("etc/mosboot/mosboot.conf", &render(ctx, "node/mosboot.conf"));
        node.write("etc/mosboot/nodes", &render(ctx, "node/nodes"));
        node.write("etc/mosboot/openmosix-start", &render(ctx, "node/openmosix-start"));
        node.write("etc/mosboot/udhcpc.script", &render(ctx, "node/udhcpc.script"));
        node.write("etc/hosts", &render(ctx, "node/hosts"));
        node.write("etc/fstab", &render(ctx, "node/fstab"));
        let map = render(ctx, "node/openmosix.map");
        for file in ctx["openmosix"]["map_files"].as_array().unwrap() {
            node.write(file.as_str().unwrap().trim_start_matches('/'), &map);
        }
        node.write("init", &render(ctx, "node/init"));
        // The modes the builder gives them (templates/README.md): udhcpc execs its script.
        for script in ["init", "etc/mosboot/openmosix-start", "etc/mosboot/udhcpc.script"] {
            fs::set_permissions(node.path(script), fs::Permissions::from_mode(0o755)).unwrap();
        }
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `rel` as the scripts see it: MOSBOOT_ROOT + "/" + rel.
    fn node_path(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    fn write(&self, rel: &str, contents: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// A stand-in `name` that logs "name arg..." and then runs `body` (sh).
    fn stand_in(&self, name: &str, body: &str) {
        let p = self.stand.join(name);
        let script = format!(
            "#!{BUSYBOX} sh\n{{ printf '%s' {name}; for a in \"$@\"; do printf ' %s' \"$a\"; done; echo; }} >> \"$LOG\"\n{body}\n"
        );
        fs::write(&p, script).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The openMosix tools and everything that would touch this machine, as recorders.
    fn stand_ins(&self) {
        for name in [
            "setpe", "mosctl", "omdiscd", "mount", "umount", "ifconfig", "route", "ip", "hostname", "tftp",
            "setsid", "cttyhack", "modprobe",
        ] {
            self.stand_in(name, "exit 0");
        }
        // sleep returns at once so retry loops are quick.
        self.stand_in("sleep", "exit 0");
    }

    /// A scripted openMosix /proc directory (`proc/hpc` or `proc/mosix`).
    fn om_proc(&self, dir: &str) {
        self.write(&format!("{dir}/admin/lstay"), "0\n");
        self.write(&format!("{dir}/admin/overheads"), "");
        self.write(&format!("{dir}/admin/mfscosts"), "");
        self.write(&format!("{dir}/admin/version"), "2.4.26\n");
    }

    /// `busybox sh SCRIPT ARGS` with only our PATH, MOSBOOT_ROOT and LOG (+ `env`).
    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(BUSYBOX);
        cmd.arg("sh")
            .arg(self.path(script))
            .args(args)
            .env_clear()
            .env("PATH", format!("{}:{}", self.stand.display(), self.bb.display()))
            .env("MOSBOOT_ROOT", &self.root)
            .env("LOG", &self.log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn calls_of(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name} ");
        self.calls().into_iter().filter(|c| c == name || c.starts_with(&prefix)).collect()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn start(node: &Node, args: &[&str]) -> Output {
    node.run("etc/mosboot/openmosix-start", args, &[])
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------- openmosix-start --------------------------------------------------------------------

#[test]
fn start_runs_setpe_with_the_first_map_and_sets_lstay() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    node.om_proc("proc/hpc");
    let out = start(&node, &[]);
    assert_ok(&out);
    assert_eq!(node.calls_of("setpe"), [format!("setpe -W -f {}", node.node_path("etc/openmosix.map"))]);
    assert_eq!(node.read("proc/hpc/admin/lstay"), "1\n");
    assert!(node.calls_of("omdiscd").is_empty());
    assert!(node.calls_of("mount").is_empty(), "no MFS with mfs = false");
}

#[test]
fn start_passes_mospe_and_mosgates_to_setpe() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    node.om_proc("proc/hpc");
    node.write("etc/mospe", "7\n");
    node.write("etc/mosgates", " 2\n");
    assert_ok(&start(&node, &[]));
    assert_eq!(
        node.calls_of("setpe"),
        [format!("setpe -W -p 7 -g 2 -f {}", node.node_path("etc/openmosix.map"))]
    );
}

#[test]
fn start_refuses_a_mospe_that_is_not_a_number() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    node.om_proc("proc/hpc");
    node.write("etc/mospe", "7; reboot\n");
    let out = start(&node, &[]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/etc/mospe must hold one number"));
    assert!(node.calls_of("setpe").is_empty());
}

#[test]
fn lstay_is_left_alone_when_off() {
    let ctx = with(sample_context(), "openmosix", "lstay", json!(false));
    let node = Node::new(&ctx);
    node.stand_ins();
    node.om_proc("proc/hpc");
    assert_ok(&start(&node, &[]));
    assert_eq!(node.read("proc/hpc/admin/lstay"), "0\n");
    assert_eq!(node.calls_of("setpe").len(), 1);
}

#[test]
fn cost_tables_are_loaded_only_when_present() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    node.om_proc("proc/hpc");
    assert_ok(&start(&node, &[]));
    assert_eq!(node.read("proc/hpc/admin/overheads"), "");
    assert_eq!(node.read("proc/hpc/admin/mfscosts"), "");

    node.write("etc/overheads", "1 2 3\n4 5 6\n");
    node.write("etc/mfscosts", "9 8\n");
    assert_ok(&start(&node, &[]));
    assert_eq!(node.read("proc/hpc/admin/overheads"), "1 2 3\n4 5 6\n");
    assert_eq!(node.read("proc/hpc/admin/mfscosts"), "9 8\n");
}

#[test]
fn yardstick_is_set_only_for_a_node_that_has_one() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    node.om_proc("proc/hpc");
    // Node 7 (ws006) has no yardstick.
    assert_ok(&start(&node, &["7"]));
    assert!(node.calls_of("mosctl").is_empty());
    // Node 6 (ws005) is pinned with P/133; here the number comes from /etc/mospe.
    node.write("etc/mospe", "6\n");
    assert_ok(&start(&node, &[]));
    assert_eq!(node.calls_of("mosctl"), ["mosctl setyard P/133"]);
}

#[test]
fn proc_mosix_is_used_when_it_is_the_only_one() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    node.om_proc("proc/mosix");
    assert_ok(&start(&node, &[]));
    assert_eq!(node.calls_of("setpe").len(), 1);
    assert_eq!(node.read("proc/mosix/admin/lstay"), "1\n");
}

#[test]
fn no_openmosix_exits_3_silently() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    node.write("proc/version", "Linux 6.1\n");
    let out = start(&node, &["6"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(text(&out.stderr), "");
    assert!(node.calls().is_empty(), "{:?}", node.calls());
}

#[test]
fn auto_map_mode_runs_omdiscd_not_setpe() {
    let ctx = with(sample_context(), "openmosix", "map_mode", json!("auto"));
    let node = Node::new(&ctx);
    node.stand_ins();
    node.om_proc("proc/hpc");
    assert_ok(&start(&node, &[]));
    assert_eq!(node.calls_of("omdiscd"), ["omdiscd"]);
    assert!(node.calls_of("setpe").is_empty());
}

#[test]
fn missing_setpe_fails_with_a_clear_message() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    fs::remove_file(node.stand.join("setpe")).unwrap();
    node.om_proc("proc/hpc");
    let out = start(&node, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(
        "mosboot: setpe not found in the node image; add the openMosix userland tarball to [image] userland"
    ), "{}", text(&out.stderr));
    assert_eq!(node.read("proc/hpc/admin/lstay"), "0\n", "nothing after a failed start");
}

#[test]
fn failing_setpe_fails_the_start_and_names_the_usual_cause() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    node.stand_in("setpe", "exit 1");
    node.om_proc("proc/hpc");
    let out = start(&node, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("127.0.0.1"), "{}", text(&out.stderr));
}

#[test]
fn mfs_is_mounted_only_with_mfs_on() {
    let ctx = with(sample_context(), "openmosix", "mfs", json!(true));
    let node = Node::new(&ctx);
    node.stand_ins();
    node.om_proc("proc/hpc");
    assert_ok(&start(&node, &[]));
    assert_eq!(node.calls_of("mount"), [format!("mount -t mfs -o dfsa=1 none {}", node.node_path("mfs"))]);
}

// ---------- udhcpc.script -----------------------------------------------------------------------

/// Values a hostile or broken DHCP server might send; none may run when lease.env is sourced.
const HOSTILE_HOSTNAME: &str = "ws005'; touch PWNED1; echo '";
const HOSTILE_DOMAIN: &str = "$(touch PWNED2) `touch PWNED3` \"x y\" \\n";

#[test]
fn udhcpc_bound_configures_the_nic_and_records_the_lease_quoted() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    let env = [
        ("interface", "eth0"),
        ("ip", "192.168.0.5"),
        ("subnet", "255.255.255.0"),
        ("mask", "24"),
        ("broadcast", "192.168.0.255"),
        ("router", "192.168.0.254 192.168.0.253"),
        ("dns", "192.168.0.254 192.168.0.1"),
        ("domain", HOSTILE_DOMAIN),
        ("hostname", HOSTILE_HOSTNAME),
        ("siaddr", "192.168.0.254"),
        ("serverid", "192.168.0.254"),
        ("boot_file", "pxelinux.0"),
        ("lease", "43200"),
    ];
    let out = node.run("etc/mosboot/udhcpc.script", &["bound"], &env);
    assert_ok(&out);
    assert_eq!(
        node.calls_of("ifconfig"),
        ["ifconfig eth0 192.168.0.5 netmask 255.255.255.0 broadcast 192.168.0.255 up"]
    );
    assert_eq!(
        node.calls_of("route"),
        ["route del default dev eth0", "route add default gw 192.168.0.254 dev eth0"]
    );
    let resolv = node.read("etc/resolv.conf");
    assert!(resolv.ends_with("nameserver 192.168.0.254\nnameserver 192.168.0.1\n"));

    // Source lease.env in a fresh shell (from inside the root, where PWNED files would land) and
    // print every variable back: each must come back byte for byte, and nothing may have run.
    let show = "cd \"$MOSBOOT_ROOT\" && . ./etc/mosboot/lease.env && \
        for v in interface ip subnet router dns domain hostname siaddr serverid boot_file lease; do \
        eval \"printf '%s=[%s]\\n' $v \\\"\\$$v\\\"\"; done";
    let shown = Command::new(BUSYBOX)
        .args(["sh", "-c", show])
        .env_clear()
        .env("PATH", node.bb.as_os_str())
        .env("MOSBOOT_ROOT", &node.root)
        .output()
        .unwrap();
    assert_ok(&shown);
    let shown = text(&shown.stdout);
    for (k, v) in env.iter().filter(|(k, _)| !["mask", "broadcast"].contains(k)) {
        assert!(
            shown.contains(&format!("{k}=[{v}]\n")),
            "{k} did not round-trip; lease.env:\n{}\nshown:\n{shown}",
            node.read("etc/mosboot/lease.env")
        );
    }
    for pwned in ["PWNED1", "PWNED2", "PWNED3"] {
        assert!(!node.path(pwned).exists(), "{pwned}: a lease value ran");
    }
    assert!(!node.stand.join("PWNED1").exists());
}

#[test]
fn udhcpc_deconfig_clears_the_address() {
    let node = Node::new(&sample_context());
    node.stand_ins();
    let out = node.run("etc/mosboot/udhcpc.script", &["deconfig"], &[("interface", "eth1")]);
    assert_ok(&out);
    assert_eq!(node.calls_of("ifconfig"), ["ifconfig eth1 0.0.0.0 up"]);
    assert!(!node.path("etc/mosboot/lease.env").exists());
}

/// The real busybox udhcpc against a real busybox udhcpd, in two network namespaces this test
/// creates (and deletes): proves the variable names the script reads are the ones udhcpc exports
/// and that the NIC ends up configured. Needs root (namespaces).
#[test]
fn udhcpc_script_with_a_real_udhcpc_and_udhcpd() {
    harness::require_root("network namespaces for udhcpc and udhcpd");
    let node = Node::new(&sample_context());
    // Real ifconfig/route: they only touch the node's own namespace.
    for applet in ["ifconfig", "route"] {
        symlink(BUSYBOX, node.bb.join(applet)).unwrap();
    }
    let server = harness::Netns::new("nss");
    let client = harness::Netns::new("nsc");
    let (srv_if, cli_if) = (harness::unique_name("vs"), harness::unique_name("vc"));
    harness::veth(&server, &srv_if, &client, &cli_if);
    server.addr(&srv_if, "192.168.77.254/24");

    let conf = node.path("udhcpd.conf");
    fs::write(
        &conf,
        format!(
            "start 192.168.77.5\nend 192.168.77.5\ninterface {srv_if}\n\
             lease_file {leases}\npidfile {pid}\nsiaddr 192.168.77.254\nboot_file pxelinux.0\n\
             option subnet 255.255.255.0\noption router 192.168.77.254\n\
             option dns 192.168.77.254\noption hostname ws005\noption lease 600\n",
            leases = node.path("udhcpd.leases").display(),
            pid = node.path("udhcpd.pid").display(),
        ),
    )
    .unwrap();
    fs::write(node.path("udhcpd.leases"), "").unwrap();
    let mut udhcpd = server.command(BUSYBOX);
    udhcpd.args(["udhcpd", "-f"]).arg(&conf);
    let _udhcpd = harness::ChildGuard::spawn(&mut udhcpd);

    let out = client
        .command("/usr/bin/env")
        .arg("-i")
        .arg(format!("PATH={}", node.bb.display()))
        .arg(format!("MOSBOOT_ROOT={}", node.root.display()))
        .args([BUSYBOX, "udhcpc", "-i", &cli_if, "-n", "-q", "-t", "5", "-T", "1"])
        .args(["-O", "hostname", "-s"])
        .arg(node.path("etc/mosboot/udhcpc.script"))
        .output()
        .unwrap();
    assert_ok(&out);
    let lease = node.read("etc/mosboot/lease.env");
    for want in [
        format!("interface='{cli_if}'"),
        "ip='192.168.77.5'".to_owned(),
        "subnet='255.255.255.0'".to_owned(),
        "router='192.168.77.254'".to_owned(),
        "dns='192.168.77.254'".to_owned(),
        "hostname='ws005'".to_owned(),
        "siaddr='192.168.77.254'".to_owned(),
        "serverid='192.168.77.254'".to_owned(),
        "boot_file='pxelinux.0'".to_owned(),
    ] {
        assert!(lease.lines().any(|l| l == want), "{want} not in\n{lease}");
    }
    let addr = text(&client.ip(&["-4", "addr", "show", "dev", &cli_if]).stdout);
    assert!(addr.contains("inet 192.168.77.5/24"), "{addr}");
    let routes = text(&client.ip(&["route", "show", "default"]).stdout);
    assert!(routes.contains("default via 192.168.77.254"), "{routes}");
    assert_eq!(node.read("etc/resolv.conf"), "nameserver 192.168.77.254\n");
}

// ---------- init ----------------------------------------------------------------------------------

/// A node kernel's view for init: /proc files, eth0 with a MAC, and a udhcpc stand-in that runs
/// the real udhcpc.script with a lease from FAKE_IP / FAKE_HOSTNAME (or fails: FAKE_DHCP_FAIL).
fn booting_node(ctx: &Value) -> Node {
    let node = Node::new(ctx);
    node.stand_ins();
    node.write("proc/filesystems", "nodev\tsysfs\nnodev\ttmpfs\nnodev\tdevtmpfs\nnodev\tproc\n\text2\n");
    node.write("proc/mounts", "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n");
    node.write("proc/net/dev", "Inter-|   Receive\n face |bytes\n    lo: 0 0\n  eth0: 0 0\n");
    node.write("sys/class/net/eth0/address", "52:54:00:12:34:56\n");
    node.stand_in(
        "udhcpc",
        r#"s=; i=
while [ $# -gt 0 ]; do case $1 in -s) s=$2; shift ;; -i) i=$2; shift ;; esac; shift; done
[ -z "$FAKE_DHCP_FAIL" ] || exit 1
interface=$i ip=$FAKE_IP subnet=255.255.255.0 router=192.168.0.254 dns=192.168.0.254 \
hostname=$FAKE_HOSTNAME siaddr=192.168.0.254 serverid=192.168.0.254 sh "$s" bound"#,
    );
    node
}

fn boot(node: &Node, env: &[(&str, &str)]) -> String {
    let out = node.run("init", &[], env);
    assert_ok(&out);
    text(&out.stdout)
}

fn mosboot_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("mosboot: ")).collect()
}

#[test]
fn init_joins_prints_the_contract_lines_and_reports() {
    let node = booting_node(&sample_context());
    node.om_proc("proc/hpc");
    let out = boot(&node, &[("FAKE_IP", "192.168.0.5"), ("FAKE_HOSTNAME", "ws005")]);
    let sha = hex::encode(Sha256::digest(MAP_TEXT.as_bytes()));
    assert_eq!(
        mosboot_lines(&out),
        [
            "mosboot: up ws005 192.168.0.5 52:54:00:12:34:56".to_owned(),
            format!("mosboot: map sha256 {sha}"),
            "mosboot: joined lab as node 6 of 254".to_owned(),
        ]
    );
    let r = |p: &str| node.node_path(p);
    assert_eq!(
        node.calls_of("udhcpc"),
        [format!("udhcpc -i eth0 -n -t 6 -T 2 -O hostname -s {}", r("etc/mosboot/udhcpc.script"))]
    );
    assert_eq!(node.calls_of("hostname"), ["hostname ws005"]);
    assert_eq!(node.read("etc/mospe"), "6\n");
    assert_eq!(node.calls_of("setpe"), [format!("setpe -W -p 6 -f {}", r("etc/openmosix.map"))]);
    assert_eq!(node.calls_of("mosctl"), ["mosctl setyard P/133"]);
    assert_eq!(
        node.calls_of("tftp"),
        [format!("tftp -g -r mosboot-report/joined/6/ws005 -l {} 192.168.0.254", r("tmp/.mosboot-ack"))]
    );
    assert_eq!(node.calls_of("setsid"), ["setsid cttyhack sh"]);
    let mounts = node.calls_of("mount");
    for want in [
        format!("mount -t sysfs sysfs {}", r("sys")),
        format!("mount -t devtmpfs devtmpfs {}", r("dev")),
        format!("mount -t tmpfs tmpfs {}", r("tmp")),
    ] {
        assert!(mounts.contains(&want), "{want} not in {mounts:?}");
    }
    // The plan's hosts file already names ws005: nothing appended.
    assert_eq!(node.read("etc/hosts"), render(&sample_context(), "node/hosts"));
    assert_eq!(node.read("etc/hostname"), "ws005\n");
}

#[test]
fn init_without_openmosix_runs_standalone_and_still_reports() {
    let node = booting_node(&sample_context());
    let out = boot(&node, &[("FAKE_IP", "192.168.0.1"), ("FAKE_HOSTNAME", "ws001")]);
    let lines = mosboot_lines(&out);
    assert_eq!(lines[0], "mosboot: up ws001 192.168.0.1 52:54:00:12:34:56");
    assert_eq!(lines[2], "mosboot: no openMosix in this kernel; node 2 of 254 runs standalone");
    assert!(node.calls_of("setpe").is_empty());
    assert_eq!(node.calls_of("tftp").len(), 1);
    assert!(node.calls_of("tftp")[0].contains(" mosboot-report/joined/2/ws001 "));
}

/// After joining, the node keeps reporting its vitals over the same TFTP channel
/// (netboot::node_report's `alive/...` form); MOSBOOT_REPORTS runs two rounds in the foreground.
#[test]
fn init_keeps_reporting_load_memory_uptime_and_openmosix() {
    let node = booting_node(&sample_context());
    node.om_proc("proc/hpc");
    node.write("proc/loadavg", "0.42 0.20 0.10 1/30 99\n");
    node.write("proc/uptime", "75.31 70.00\n");
    node.write("proc/meminfo", "        total:    used:    free:\nMem:  1 2 3\nMemTotal:        14956 kB\nMemFree:          9876 kB\n");
    let out =
        boot(&node, &[("FAKE_IP", "192.168.0.5"), ("FAKE_HOSTNAME", "ws005"), ("MOSBOOT_REPORTS", "2")]);
    let alive = format!(
        "tftp -g -r mosboot-report/alive/6/ws005/52:54:00:12:34:56/0.42/9876/75/on -l {} 192.168.0.254",
        node.node_path("tmp/.mosboot-alive")
    );
    let calls = node.calls_of("tftp");
    assert_eq!(calls.len(), 3, "{calls:?}\n{out}");
    assert!(calls[0].contains(" mosboot-report/joined/6/ws005 "), "{calls:?}");
    assert_eq!(calls[1..], [alive.clone(), alive], "{out}");
    // Without openMosix the last field says so.
    let node = booting_node(&sample_context());
    node.write("proc/loadavg", "1.00 0.20 0.10 1/30 99\n");
    boot(&node, &[("FAKE_IP", "192.168.0.1"), ("FAKE_HOSTNAME", "ws001"), ("MOSBOOT_REPORTS", "1")]);
    let calls = node.calls_of("tftp");
    assert!(calls[1].contains(" mosboot-report/alive/2/ws001/52:54:00:12:34:56/1.00/0/0/- "), "{calls:?}");
}

#[test]
fn init_takes_the_plan_name_when_dhcp_sends_none_and_cleans_a_hostile_one() {
    let node = booting_node(&sample_context());
    let out = boot(&node, &[("FAKE_IP", "192.168.0.12"), ("FAKE_HOSTNAME", "")]);
    assert!(out.contains("mosboot: up ws012 192.168.0.12 "), "{out}");

    let node = booting_node(&sample_context());
    let out =
        boot(&node, &[("FAKE_IP", "192.168.0.12"), ("FAKE_HOSTNAME", "ws012.lab.example; $(touch PWNED)")]);
    assert!(out.contains("mosboot: up ws012 192.168.0.12 "), "{out}");
    assert!(!node.path("PWNED").exists());
}

#[test]
fn init_says_so_when_its_address_is_not_in_the_map() {
    let node = booting_node(&sample_context());
    node.om_proc("proc/hpc");
    let out = boot(&node, &[("FAKE_IP", "10.9.9.9"), ("FAKE_HOSTNAME", "stray")]);
    assert!(
        out.contains("mosboot: 10.9.9.9 is not in the map of lab (/etc/openmosix.map); not joining"),
        "{out}"
    );
    assert!(!out.contains("joined"));
    assert!(node.calls_of("setpe").is_empty());
    // Its name must still resolve to its address for anything that looks it up.
    assert!(node.read("etc/hosts").ends_with("10.9.9.9\tstray\n"));
    assert!(node.calls_of("tftp")[0].contains(" mosboot-report/joined/0/stray "));
}

#[test]
fn init_without_a_dhcp_answer_says_so_and_leaves_a_shell() {
    let node = booting_node(&sample_context());
    let out = boot(&node, &[("FAKE_DHCP_FAIL", "1")]);
    assert_eq!(mosboot_lines(&out), ["mosboot: no DHCP answer on eth0"]);
    assert!(node.calls_of("tftp").is_empty());
    assert_eq!(node.calls_of("setsid"), ["setsid cttyhack sh"]);
}

#[test]
fn init_gives_up_reporting_after_three_tries() {
    let node = booting_node(&sample_context());
    node.stand_in("tftp", "exit 1");
    let out = boot(&node, &[("FAKE_IP", "192.168.0.5"), ("FAKE_HOSTNAME", "ws005")]);
    assert_eq!(node.calls_of("tftp").len(), 3);
    assert!(out.contains("mosboot: could not report to the server 192.168.0.254 over TFTP"));
    assert_eq!(node.calls_of("setsid"), ["setsid cttyhack sh"]);
}

#[test]
fn init_and_every_script_pass_a_syntax_check_for_both_image_formats() {
    let ext2 = with(
        with(sample_context(), "image", "init_path", json!("/linuxrc")),
        "image",
        "initrd_format",
        json!("ext2"),
    );
    let ext2 = with(ext2, "image", "kernel_release", json!("2.4.26-om1"));
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, source: &str| {
        let p = dir.path().join(name.replace('/', "_"));
        fs::write(&p, source).unwrap();
        Command::new(BUSYBOX).args(["sh", "-n"]).arg(&p).output().unwrap()
    };
    // The check itself must be able to fail.
    assert!(!check("broken", "if true; then\n echo x\n").status.success());
    for ctx in [sample_context(), ext2] {
        for name in ["node/init", "node/udhcpc.script", "node/openmosix-start", "node/mosboot.conf"] {
            let rendered = render(&ctx, name);
            let out = check(name, &rendered);
            assert_ok(&out);
        }
        let init = render(&ctx, "node/init");
        assert!(init.starts_with("#!/bin/sh\n# "));
        assert!(init.contains(ctx["image"]["init_path"].as_str().unwrap()));
    }
}

// ---------- data files ----------------------------------------------------------------------------

#[test]
fn hosts_keeps_node_names_off_loopback_and_lists_every_node() {
    let ctx = sample_context();
    let hosts = render(&ctx, "node/hosts");
    let entries: Vec<Vec<&str>> = hosts
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    for e in &entries {
        if e[0].starts_with("127.") {
            assert_eq!(e[1..], ["localhost"], "loopback line {e:?}");
        }
    }
    assert!(entries.iter().any(|e| e[..] == ["127.0.0.1", "localhost"]));
    for n in ctx["nodes"].as_array().unwrap() {
        let want = [n["ip"].as_str().unwrap(), n["hostname"].as_str().unwrap()];
        assert!(entries.iter().any(|e| e[..] == want), "{want:?} missing");
    }
    assert_eq!(entries.len(), 255);
    assert!(hosts.ends_with("192.168.0.253\tws253\n"));

    let block = render(&ctx, "server/hosts-block");
    assert!(block.starts_with("# mosboot lab begin\n"));
    assert!(block.ends_with("192.168.0.253\tws253\n# mosboot lab end\n"));
    assert!(block.contains("\n192.168.0.254\tws254\n"));
    assert!(
        block.lines().all(|l| l.starts_with('#') || !l.starts_with("127.")),
        "the server block must not touch loopback"
    );
}

#[test]
fn fstab_has_the_mfs_line_only_with_mfs() {
    let off = render(&sample_context(), "node/fstab");
    let on = render(&with(sample_context(), "openmosix", "mfs", json!(true)), "node/fstab");
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(body(&off), ["proc /proc proc defaults 0 0", "tmpfs /tmp tmpfs defaults 0 0"]);
    assert_eq!(
        body(&on),
        ["proc /proc proc defaults 0 0", "tmpfs /tmp tmpfs defaults 0 0", "none /mfs mfs dfsa=1 0 0"]
    );
}

#[test]
fn map_file_is_exactly_the_map_text() {
    assert_eq!(render(&sample_context(), "node/openmosix.map"), MAP_TEXT);
}

#[test]
fn nodes_table_has_one_line_per_node_with_yardstick_or_dash() {
    let nodes = render(&sample_context(), "node/nodes");
    let lines: Vec<&str> = nodes.lines().collect();
    assert_eq!(lines.len(), 254);
    assert_eq!(lines[0], "1 192.168.0.254 ws254 -");
    assert_eq!(lines[1], "2 192.168.0.1 ws001 -");
    assert_eq!(lines[5], "6 192.168.0.5 ws005 P/133");
    assert_eq!(lines[253], "254 192.168.0.253 ws253 -");
    assert!(nodes.ends_with('\n'));
}

#[test]
fn mosboot_conf_sources_back_to_the_context_values() {
    // A name with a quote and a $() shows the sh filter quotes safely.
    let ctx = with(sample_context(), "cluster", "name", json!("o'lab $(touch PWNED)"));
    let node = Node::new(&ctx);
    let out = Command::new(BUSYBOX)
        .args([
            "sh",
            "-c",
            "cd \"$MOSBOOT_ROOT\" && . ./etc/mosboot/mosboot.conf && printf '%s|' \"$CLUSTER\" \
             \"$SERVER_IP\" \"$NODE_COUNT\" \"$OM_PROC\" \"$OM_LSTAY\" \"$OM_MFS\" \"$OM_MAP_MODE\" \
             \"$MAP_FILE\" \"$MAP_FILES\" \"$REPORT_PATH\" \"$INIT_PATH\"",
        ])
        .env_clear()
        .env("PATH", node.bb.as_os_str())
        .env("MOSBOOT_ROOT", &node.root)
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(
        text(&out.stdout),
        "o'lab $(touch PWNED)|192.168.0.254|254|/proc/hpc|1|0|static|/etc/openmosix.map|\
         /etc/openmosix.map /etc/mosix.map /etc/hpc.map|mosboot-report|/init|"
    );
    assert!(!node.path("PWNED").exists());
}

// ---------- boot loader configs --------------------------------------------------------------------

#[test]
fn pxelinux_default_boots_the_kernel_and_initrd_at_once() {
    let cfg = render(&sample_context(), "boot/pxelinux.cfg");
    let words: Vec<String> = cfg
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "DEFAULT mosboot",
        "PROMPT 0",
        "LABEL mosboot",
        "KERNEL vmlinuz",
        "INITRD initrd.gz",
        "APPEND console=tty0 console=ttyS0,115200 panic=1",
    ] {
        assert!(words.iter().any(|w| w == want), "{want:?} missing in\n{cfg}");
    }
    // SeaBIOS mirrors the screen to serial already; a SERIAL line would print everything twice.
    assert!(!words.iter().any(|w| w.to_uppercase().starts_with("SERIAL")));
}

#[test]
fn boot_ipxe_loads_by_relative_path_and_retries() {
    let script = render(&sample_context(), "boot/boot.ipxe");
    assert!(script.starts_with("#!ipxe\n"));
    let lines: Vec<&str> = script.lines().map(str::trim).collect();
    // Without [serve] http there is one source: TFTP, relative to the script.
    let from = lines.iter().position(|l| *l == ":source1").expect(":source1");
    assert_eq!(
        lines[from..],
        [
            ":source1",
            "kernel vmlinuz console=tty0 console=ttyS0,115200 panic=1 || goto failed1",
            "initrd initrd.gz || goto failed1",
            "boot || goto failed1",
            ":failed1",
            "echo mosboot: could not boot from TFTP",
            "imgfree",
            "echo mosboot: could not load vmlinuz and initrd.gz, retrying in 5 s",
            "sleep 5",
            "goto source1",
        ],
        "{script}"
    );
}

/// Every source in order (as the build makes them with every transport on), each falling
/// through to the next, the retry loop only after the last; multicast takes only the kernel.
#[test]
fn boot_ipxe_tries_each_source_in_turn() {
    let serve =
        "[serve]\nhttp_url = \"http://web/lab/\"\nhttp = \"0.0.0.0:8080\"\nmulticast = \"239.255.69.1\"\n";
    let text = harness::sample_cluster(&[], serve);
    let cfg = Config::parse(&text, Path::new("/lab/cluster.toml")).expect("the sample parses");
    let plan = Plan::new(&cfg).expect("the sample plans");
    let sources = serde_json::to_value(mosboot::pipeline::boot_sources(&cfg, &plan)).expect("json");
    let script = render(&with(sample_context(), "boot", "sources", sources), "boot/boot.ipxe");
    let lines: Vec<&str> = script.lines().map(str::trim).collect();
    let at =
        |l: &str| lines.iter().position(|x| *x == l).unwrap_or_else(|| panic!("{l:?} missing:\n{script}"));
    let k = "console=tty0 console=ttyS0,115200 panic=1";
    let order = [
        at(&format!("kernel http://web/lab/vmlinuz {k} || goto failed1")),
        at("initrd http://web/lab/initrd.gz || goto failed1"),
        at(":failed1"),
        at(":source2"),
        at(&format!("kernel mtftp://192.168.0.254/vmlinuz {k} || goto failed2")),
        at("initrd initrd.gz || goto failed2"),
        at(":failed2"),
        at(":source3"),
        at(&format!("kernel http://192.168.0.254:8080/vmlinuz {k} || goto failed3")),
        at(":failed3"),
        at(":source4"),
        at(&format!("kernel vmlinuz {k} || goto failed4")),
        at("initrd initrd.gz || goto failed4"),
        at(":failed4"),
        at("sleep 5"),
        at("goto source1"),
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{script}");
    // A failed source frees what it loaded before the next one starts.
    assert_eq!(lines[at(":failed1") + 2], "imgfree");
    assert_eq!(lines[at(":failed4") - 1], "boot || goto failed4");
}

#[test]
fn server_notes_render_with_map_paths_and_ports() {
    let notes = render(&sample_context(), "server/NOTES");
    for want in
        ["/etc/openmosix.map", "/etc/hpc.map", "TCP 4660", "UDP 5428", "setpe -W -f /etc/openmosix.map"]
    {
        assert!(notes.contains(want), "{want:?} missing");
    }
    let auto = render(&with(sample_context(), "openmosix", "map_mode", json!("auto")), "server/NOTES");
    assert!(auto.contains("omdiscd") && !auto.contains("setpe -W"));
}

//! `mosboot build`, `check`, `map`, `init` and `kernel-config` as a user runs them: the real
//! binary on real files, outputs checked with outside tools (cpio, gzip, e2fsck, debugfs).
//!
//! The kernel and busybox here are synthetic: a file with a valid bzImage setup header and a
//! minimal static i386 ELF. The build only reads their headers, and synthesizing them keeps these
//! tests independent of the (slow) node kit; the virtual-lab test boots the real ones.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::{fake_busybox, fake_bzimage, fake_elf, mosboot_bin, sha256_file};

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// The shared sample cluster with `set` applied and `extra` appended (see
    /// harness::sample_cluster), beside a synthetic kernel and busybox.
    fn new(set: &[(&str, &str)], extra: &str) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path();
        std::fs::create_dir_all(p.join("kernels")).expect("mkdir");
        std::fs::create_dir_all(p.join("node-kit")).expect("mkdir");
        std::fs::write(p.join("kernels/bzImage"), fake_bzimage("6.1.0-mosboot")).expect("kernel");
        std::fs::write(p.join("node-kit/busybox"), fake_busybox()).expect("busybox");
        let cfg = harness::sample_cluster(set, extra);
        std::fs::write(p.join("cluster.toml"), cfg).expect("config");
        Project { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(mosboot_bin()).current_dir(self.path()).args(args).output().expect("run mosboot")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "mosboot {args:?} failed ({:?}):\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn out(&self) -> PathBuf {
        self.path().join("mosboot-out")
    }
}

fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gzip").arg("-dc").arg(path).output().expect("gzip");
    assert!(out.status.success(), "gzip -dc {}", path.display());
    out.stdout
}

/// Unpacks a newc initrd with the system cpio into a fresh folder.
fn unpack_cpio(initrd: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = gunzip(initrd);
    let mut child = Command::new("cpio")
        .args(["-idm", "--quiet", "--no-absolute-filenames"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("cpio");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&data).expect("feed cpio");
    }
    assert!(child.wait().expect("cpio").success(), "cpio -i failed");
    dir
}

#[test]
fn build_writes_the_spec_tree_and_map() {
    let lab = Project::new(&[], "");
    let summary = lab.ok(&["build"]);
    assert!(summary.contains("254 nodes"), "{summary}");
    let out = lab.out();
    for f in [
        "tftpboot/pxelinux.0",
        "tftpboot/ldlinux.c32",
        "tftpboot/pxelinux.cfg/default",
        "tftpboot/boot.ipxe",
        "tftpboot/vmlinuz",
        "tftpboot/initrd.gz",
        "server/openmosix.map",
        "server/hosts-block",
        "manifest.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing from the output tree");
    }
    assert_eq!(lab.ok(&["map"]), "1 192.168.0.254 1\n2 192.168.0.1 253\n");
    assert_eq!(std::fs::read_to_string(out.join("server/openmosix.map")).expect("map"), lab.ok(&["map"]));

    // The node root inside the initrd carries the same map bytes, hosts that never put a node
    // name on 127.0.0.1, and an executable /init.
    let root = unpack_cpio(&out.join("tftpboot/initrd.gz"));
    let r = root.path();
    assert_eq!(sha256_file(&r.join("etc/openmosix.map")), sha256_file(&out.join("server/openmosix.map")));
    let hosts = std::fs::read_to_string(r.join("etc/hosts")).expect("hosts");
    assert!(
        hosts.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["192.168.0.1", "ws001"]),
        "{hosts}"
    );
    for l in hosts.lines().filter(|l| l.starts_with("127.")) {
        assert!(!l.contains("ws"), "a node name on loopback: {l}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(r.join("init")).expect("/init").permissions().mode();
    assert!(mode & 0o111 != 0, "/init is not executable");
    let fstab = std::fs::read_to_string(r.join("etc/fstab")).expect("fstab");
    assert!(fstab.contains("proc") && fstab.contains("tmpfs") && !fstab.contains("mfs"), "{fstab}");
    // The listing includes /dev/console, which the kernel opens before /init runs.
    let data = gunzip(&out.join("tftpboot/initrd.gz"));
    let mut child = Command::new("cpio")
        .args(["-tv", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cpio -t");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(&data).expect("feed");
    }
    let listing = String::from_utf8_lossy(&child.wait_with_output().expect("cpio").stdout).to_string();
    assert!(listing.lines().any(|l| l.starts_with('c') && l.ends_with("dev/console")), "{listing}");

    let pxe = std::fs::read_to_string(out.join("tftpboot/pxelinux.cfg/default")).expect("pxelinux cfg");
    assert!(pxe.contains("vmlinuz") && pxe.contains("initrd.gz"), "{pxe}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).expect("manifest")).expect("json");
    let outputs = manifest["outputs"].as_array().expect("outputs");
    let initrd = outputs.iter().find(|o| o["path"] == "tftpboot/initrd.gz").expect("initrd listed");
    assert_eq!(initrd["sha256"].as_str(), Some(sha256_file(&out.join("tftpboot/initrd.gz")).as_str()));
}

#[test]
fn two_builds_are_byte_identical() {
    let lab = Project::new(&[], "");
    lab.ok(&["build", "--out", "a"]);
    lab.ok(&["build", "--out", "b"]);
    let mut files = Vec::new();
    collect(&lab.path().join("a"), Path::new(""), &mut files);
    assert!(files.len() >= 9, "{files:?}");
    for f in files {
        assert_eq!(
            sha256_file(&lab.path().join("a").join(&f)),
            sha256_file(&lab.path().join("b").join(&f)),
            "{} differs between two builds",
            f.display()
        );
    }
}

fn collect(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let e = e.expect("entry");
        if e.path().is_dir() {
            collect(&e.path(), &rel.join(e.file_name()), out);
        } else {
            out.push(rel.join(e.file_name()));
        }
    }
}

#[test]
fn five_mistakes_five_messages_with_lines() {
    let lab = Project::new(
        &[("cluster.router", "\"10.0.0.1\""), ("cluster.dhcp", "\"sometimes\""), ("image.initrd", "\"zip\"")],
        "[[node]]\nmac = \"00:0c:29:aa:bb:zz\"\nip = \"192.168.0.9\"\n",
    );
    // Also a typo'd key.
    let cfg = std::fs::read_to_string(lab.path().join("cluster.toml")).expect("read");
    std::fs::write(lab.path().join("cluster.toml"), cfg.replace("lease_time", "lease_tme")).expect("write");
    let out = lab.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 5, "{err}");
    for l in &lines {
        // error: <path>:<line>: <key>: <message>
        let after = l.split("cluster.toml:").nth(1).unwrap_or_else(|| panic!("no file in: {l}"));
        let line_no: usize = after.split(':').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(line_no > 0, "no line number in: {l}");
    }
    for key in ["cluster.lease_tme", "cluster.dhcp", "image.initrd", "node[1].mac"] {
        assert!(err.contains(key), "{key} not reported:\n{err}");
    }
    // Nothing was written.
    assert!(!lab.out().exists());
    // build refuses the same way.
    assert_eq!(lab.run(&["build"]).status.code(), Some(1));
    assert!(!lab.out().exists());
}

#[test]
fn plan_mistakes_and_input_mistakes_are_reported_together() {
    let lab = Project::new(&[], "");
    let cfg = std::fs::read_to_string(lab.path().join("cluster.toml")).expect("read");
    let cfg = cfg
        .replace("192.168.0.1-192.168.0.253", "192.168.0.0-192.168.0.254")
        .replace("kernels/bzImage", "kernels/nope");
    std::fs::write(lab.path().join("cluster.toml"), cfg).expect("write");
    std::fs::write(lab.path().join("node-kit/busybox"), fake_elf(true)).expect("bb");
    let out = lab.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("network address 192.168.0.0"), "{err}");
    assert!(err.contains("server's own address"), "{err}");
    assert!(err.contains("kernels/nope") && err.contains("image.kernel"), "{err}");
    assert!(err.contains("64-bit") && err.contains("x86-64"), "an x86-64 busybox must be refused:\n{err}");
}

#[test]
fn a_kernel_that_is_not_a_bzimage_is_refused() {
    let lab = Project::new(&[], "");
    std::fs::write(lab.path().join("kernels/bzImage"), b"#!/bin/sh\necho not a kernel\n").expect("write");
    let out = lab.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image.kernel") && err.contains("bzImage"), "{err}");
}

/// A tarball entry that climbs out of the node root stops the build, names the tarball and the
/// entry, and leaves an existing output tree exactly as it was.
#[test]
fn escaping_tarball_entries_are_refused() {
    let lab = Project::new(&[("image.userland", "[\"evil.tar.gz\"]")], "");
    let good = Project::new(&[], "");
    // First a good build into the same out dir, to check a failed build does not touch it.
    std::fs::create_dir_all(lab.path().join("stage")).expect("mkdir");
    let tgz = lab.path().join("evil.tar.gz");
    {
        let f = std::fs::File::create(&tgz).expect("create");
        let gz = flate2_writer(f);
        let mut b = tar::Builder::new(gz);
        let data = b"root::0:0:pwned:/:/bin/sh\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // set_path refuses "..", so write the name bytes directly, as a hostile tool would.
        let name = b"../../etc/passwd";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &data[..]).expect("append");
        b.into_inner().expect("finish tar").finish().expect("finish gz");
    }
    good.ok(&["build", "--out", lab.out().to_str().expect("utf8")]);
    let before = sha256_file(&lab.out().join("tftpboot/initrd.gz"));
    let out = lab.run(&["build"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("evil.tar.gz") && err.contains("../../etc/passwd"), "{err}");
    assert_eq!(sha256_file(&lab.out().join("tftpboot/initrd.gz")), before, "a failed build changed the tree");
    let leftovers: Vec<_> = std::fs::read_dir(lab.path())
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary build folders left behind");
}

fn flate2_writer(f: std::fs::File) -> flate2::write::GzEncoder<std::fs::File> {
    flate2::write::GzEncoder::new(f, flate2::Compression::default())
}

/// The 2.4 format: an ext2 image (1 KiB blocks, 128-byte inodes) that e2fsck finds clean, with
/// the same node files, and a boot line that mounts it from /dev/ram0.
#[test]
fn ext2_initrd_is_clean_and_complete() {
    let lab = Project::new(&[], "");
    std::fs::write(lab.path().join("kernels/bzImage"), fake_bzimage("2.4.26-om1")).expect("kernel");
    let summary = lab.ok(&["build"]);
    assert!(summary.contains("ext2"), "auto must pick ext2 for a 2.4 kernel: {summary}");
    let img = lab.path().join("initrd.img");
    std::fs::write(&img, gunzip(&lab.out().join("tftpboot/initrd.gz"))).expect("write image");
    let fsck = Command::new("e2fsck").arg("-fn").arg(&img).output().expect("e2fsck");
    assert!(
        fsck.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let stats = Command::new("dumpe2fs").arg("-h").arg(&img).output().expect("dumpe2fs");
    let stats = String::from_utf8_lossy(&stats.stdout);
    assert!(stats.lines().any(|l| l.starts_with("Block size:") && l.ends_with(" 1024")), "{stats}");
    assert!(stats.lines().any(|l| l.starts_with("Inode size:") && l.ends_with(" 128")), "{stats}");
    let cat =
        Command::new("debugfs").arg("-R").arg("cat /etc/openmosix.map").arg(&img).output().expect("debugfs");
    assert_eq!(String::from_utf8_lossy(&cat.stdout), lab.ok(&["map"]));
    let ls = Command::new("debugfs").arg("-R").arg("ls -l /").arg(&img).output().expect("debugfs");
    assert!(String::from_utf8_lossy(&ls.stdout).contains("linuxrc"), "no /linuxrc");
    let pxe = std::fs::read_to_string(lab.out().join("tftpboot/pxelinux.cfg/default")).expect("cfg");
    assert!(
        pxe.contains("root=/dev/ram0") && pxe.contains("init=/linuxrc") && pxe.contains("ramdisk_size="),
        "{pxe}"
    );
    // 2.4.26: /etc/openmosix.map plus the older names with the same bytes.
    let mosix =
        Command::new("debugfs").arg("-R").arg("cat /etc/mosix.map").arg(&img).output().expect("debugfs");
    assert_eq!(String::from_utf8_lossy(&mosix.stdout), lab.ok(&["map"]));
}

#[test]
fn a_template_override_replaces_one_file() {
    let lab = Project::new(&[], "");
    std::fs::create_dir_all(lab.path().join("mytpl/node")).expect("mkdir");
    std::fs::write(
        lab.path().join("mytpl/node/fstab"),
        "# site fstab for {{ cluster.name }}\nproc /proc proc defaults 0 0\n",
    )
    .expect("write");
    lab.ok(&["build", "--templates", "mytpl"]);
    let root = unpack_cpio(&lab.out().join("tftpboot/initrd.gz"));
    let fstab = std::fs::read_to_string(root.path().join("etc/fstab")).expect("fstab");
    assert_eq!(fstab, "# site fstab for lab\nproc /proc proc defaults 0 0\n");
    // A file that matches no template is an error, not silently ignored.
    std::fs::write(lab.path().join("mytpl/node/fstabb"), "x").expect("write");
    let out = lab.run(&["check", "--templates", "mytpl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("fstabb"));
    // An undefined variable in an override fails the build with the template's name.
    std::fs::remove_file(lab.path().join("mytpl/node/fstabb")).expect("rm");
    std::fs::write(lab.path().join("mytpl/node/fstab"), "{{ cluster.nmae }}\n").expect("write");
    let out = lab.run(&["build", "--templates", "mytpl"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mytpl/node/fstab"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mfs_line_only_with_mfs() {
    let lab = Project::new(&[], "");
    let cfg = std::fs::read_to_string(lab.path().join("cluster.toml")).expect("read");
    std::fs::write(
        lab.path().join("cluster.toml"),
        cfg.replace("version = \"2.4.26\"", "version = \"2.4.22\"\nmfs = true"),
    )
    .expect("write");
    lab.ok(&["build"]);
    let root = unpack_cpio(&lab.out().join("tftpboot/initrd.gz"));
    let fstab = std::fs::read_to_string(root.path().join("etc/fstab")).expect("fstab");
    assert!(fstab.lines().any(|l| l.contains("/mfs") && l.contains("mfs")), "{fstab}");
    // oMFS does not exist from 2.4.26 on: asking for it there is an error.
    std::fs::write(
        lab.path().join("cluster.toml"),
        cfg.replace("version = \"2.4.26\"", "version = \"2.4.26\"\nmfs = true"),
    )
    .expect("write");
    assert_eq!(lab.run(&["check"]).status.code(), Some(1));
}

#[test]
fn kernel_config_merges_and_detects_conflicts() {
    let lab = Project::new(&[], "");
    let out = lab.ok(&["kernel-config", "--cpu", "486", "--nic", "ne2000,rtl8139", "--openmosix"]);
    for sym in ["CONFIG_M486=y", "CONFIG_MOSIX=y", "CONFIG_BLK_DEV_INITRD=y", "CONFIG_8139TOO=y"] {
        assert!(out.lines().any(|l| l == sym), "{sym} missing:\n{out}");
    }
    let frag = lab.path().join("frags");
    std::fs::create_dir_all(&frag).expect("mkdir");
    std::fs::write(frag.join("cpu-486"), "CONFIG_M486=y\nCONFIG_SMP=y\n").expect("w");
    std::fs::write(frag.join("netboot-2.4"), "CONFIG_BLK_DEV_RAM=y\n").expect("w");
    std::fs::write(frag.join("nic-ne2000"), "# CONFIG_SMP is not set\n").expect("w");
    let res = lab.run(&[
        "kernel-config",
        "--cpu",
        "486",
        "--nic",
        "ne2000",
        "--fragments",
        frag.to_str().expect("utf8"),
    ]);
    assert_eq!(res.status.code(), Some(1));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("CONFIG_SMP") && err.contains("cpu-486") && err.contains("nic-ne2000"), "{err}");
}

/// The README's address-plan example is the shared sample cluster: its `server` and `pool` are
/// the sample's, and the map it shows is what `mosboot map` prints for the sample.
#[test]
fn readme_map_example_is_what_the_sample_gives() {
    let readme = std::fs::read_to_string(harness::workspace_root().join("README.md")).expect("README.md");
    let (before, after) = readme.split_once(") gives exactly:\n\n```\n").expect("the README's map example");
    let shown = &after[..after.find("```").expect("end of the example")];
    let sample = harness::SAMPLE_CLUSTER;
    for key in ["server", "pool"] {
        let line = sample.lines().find(|l| l.starts_with(&format!("{key} = "))).expect("key in the sample");
        assert!(before.contains(&format!("`{line}`")), "README example lost `{line}`");
    }
    assert_eq!(Project::new(&[], "").ok(&["map"]), shown);
}

#[test]
fn check_accepts_a_good_config() {
    let lab = Project::new(&[], "");
    let out = lab.ok(&["check"]);
    assert!(out.contains("ok"), "{out}");
}

/// `init` reads the lab interface (here a veth in a namespace this test creates) and writes a
/// config that builds; it never overwrites without --force.
#[test]
fn init_fills_the_config_from_the_interface() {
    harness::require_root("a network namespace with the lab interface");
    let ns = harness::Netns::new("mbi");
    ns.ip(&["link", "add", "lab0", "type", "veth", "peer", "name", "lab0p"]);
    ns.ip(&["link", "set", "lab0", "up"]);
    ns.addr("lab0", "10.77.3.254/24");
    let dir = tempfile::tempdir().expect("tempdir");
    let run =
        |args: &[&str]| ns.command(mosboot_bin()).current_dir(dir.path()).args(args).output().expect("run");
    let out = run(&["init", "--interface", "lab0"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cfg = std::fs::read_to_string(dir.path().join("cluster.toml")).expect("written");
    assert!(cfg.contains("interface = \"lab0\""), "{cfg}");
    assert!(cfg.contains("server = \"10.77.3.254/24\""), "{cfg}");
    assert!(cfg.contains("pool = \"10.77.3.1-10.77.3.253\""), "{cfg}");
    let map = run(&["map"]);
    assert_eq!(String::from_utf8_lossy(&map.stdout), "1 10.77.3.254 1\n2 10.77.3.1 253\n");
    let again = run(&["init", "--interface", "lab0"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(run(&["init", "--interface", "lab0", "--force"]).status.success());
    let missing = run(&["init", "--interface", "nope0", "--force"]);
    assert_eq!(missing.status.code(), Some(1));
}

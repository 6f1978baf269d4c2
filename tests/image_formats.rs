//! The node images as outside tools see them: GNU cpio lists and extracts our newc archives,
//! e2fsck finds nothing to complain about in our ext2 images, debugfs reads back every byte,
//! GNU gzip unpacks our gzip, and a tarball made by GNU tar with `../../etc/passwd` is refused.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use node_image::{EntryKind, Ext2Options, Tree, ext2_size_kib, gzip_deterministic, write_ext2, write_newc};

/// Deterministic pseudo-random bytes (compress badly, like a real binary).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    harness::random_bytes(len, u64::from(seed))
}

const LONG_TARGET: &str = "/usr/share/deep/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/leaf.txt";

/// A node root that exercises every corner of both writers.
fn sample_tree() -> Tree {
    let mut t = Tree::new();
    t.add_dir("/bin", 0o755).unwrap();
    t.add_dir("/etc", 0o755).unwrap();
    t.add_dir("/tmp", 0o1777).unwrap();
    t.add_file("/etc/empty", 0o644, Vec::new()).unwrap();
    t.add_file("/etc/hosts", 0o644, b"127.0.0.1 localhost\n".to_vec()).unwrap();
    t.add_file("/etc/secret", 0o600, b"s3cret".to_vec()).unwrap();
    t.set_owner("/etc/secret", 1000, 100).unwrap();
    t.add_file("/usr/lib/medium.bin", 0o644, noise(70_000, 1)).unwrap();
    // 1.6 MB: past 12 direct + 256 single-indirect 1 KiB blocks, so double indirect is used.
    t.add_file("/bin/busybox", 0o4755, noise(1_600_000, 2)).unwrap();
    t.add_symlink("/bin/sh", "busybox").unwrap();
    t.add_symlink("/sbin/init", "/bin/busybox").unwrap();
    t.add_file(&LONG_TARGET[1..], 0o644, b"deep\n".to_vec()).unwrap();
    t.add_symlink("/usr/long-link", LONG_TARGET).unwrap();
    t.add_char_device("/dev/console", 0o600, 5, 1).unwrap();
    t.add_char_device("/dev/null", 0o666, 1, 3).unwrap();
    t.add_char_device("/dev/ttyS0", 0o660, 4, 64).unwrap();
    t.add_char_device("/dev/bigdev", 0o600, 300, 70_000).unwrap();
    t.add_block_device("/dev/ram0", 0o660, 1, 0).unwrap();
    for i in 0..300 {
        t.add_file(
            &format!("/many/entry-with-a-longish-name-{i:03}"),
            0o644,
            format!("file {i}\n").into_bytes(),
        )
        .unwrap();
    }
    t
}

/// Compares an extracted directory with the tree: every entry present with the same kind,
/// content, link target, permission bits and (as root) device numbers and owners; nothing more.
/// debugfs rdump does not recreate device nodes, and it chowns after chmod, which drops the
/// setuid bit on the host copy: `faithful` is false for it (devices and mode bits above 0777
/// are then checked with `debugfs stat` instead).
fn assert_matches_tree(tree: &Tree, root: &Path, tool: &str, faithful: bool) {
    let with_devices = faithful;
    let mode_mask = if faithful { 0o7777 } else { 0o777 };
    let is_device = |e: &node_image::Entry| {
        matches!(e.kind, EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. })
    };
    let mut on_disk = BTreeSet::new();
    collect(root, root, &mut on_disk);
    let expected: BTreeSet<String> = tree
        .iter()
        .filter(|(p, e)| !p.is_empty() && (with_devices || !is_device(e)))
        .map(|(p, _)| p.to_string())
        .collect();
    let on_disk: BTreeSet<String> = on_disk.into_iter().filter(|p| p != "lost+found").collect();
    let missing: Vec<_> = expected.difference(&on_disk).collect();
    let extra: Vec<_> = on_disk.difference(&expected).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{tool}: missing {missing:?}, unexpected {extra:?}");
    for (path, entry) in tree.iter().filter(|(p, e)| !p.is_empty() && (with_devices || !is_device(e))) {
        let host = root.join(path);
        let meta = fs::symlink_metadata(&host).unwrap();
        let what = format!("{tool}: /{path}");
        match &entry.kind {
            EntryKind::Directory => assert!(meta.is_dir(), "{what} is not a dir"),
            EntryKind::File(data) => {
                assert!(meta.is_file(), "{what} is not a file");
                assert!(fs::read(&host).unwrap() == *data, "{what}: content differs");
            }
            EntryKind::Symlink(target) => {
                assert!(meta.file_type().is_symlink(), "{what} is not a symlink");
                assert_eq!(fs::read_link(&host).unwrap().to_str().unwrap(), target, "{what}");
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let ft = meta.file_type();
                if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    assert!(ft.is_char_device(), "{what} is not a char device");
                } else {
                    assert!(ft.is_block_device(), "{what} is not a block device");
                }
                let dev = meta.rdev();
                let got_major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
                let got_minor = (dev & 0xff) | ((dev >> 12) & !0xff);
                assert_eq!((got_major as u32, got_minor as u32), (*major, *minor), "{what}");
            }
        }
        if !matches!(entry.kind, EntryKind::Symlink(_)) {
            assert_eq!(meta.permissions().mode() & mode_mask, entry.mode & mode_mask, "{what}: mode");
        }
        assert_eq!((meta.uid(), meta.gid()), (entry.uid, entry.gid), "{what}: owner");
    }
}

fn collect(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
    for item in fs::read_dir(dir).unwrap() {
        let item = item.unwrap();
        let path = item.path();
        let rel = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
        out.insert(rel);
        if item.file_type().unwrap().is_dir() {
            collect(root, &path, out);
        }
    }
}

fn cpio_bytes(tree: &Tree) -> Vec<u8> {
    let mut out = Vec::new();
    write_newc(tree, &mut out).unwrap();
    out
}

/// Feeds `input` from a thread while the output is read, so big outputs cannot deadlock.
fn run_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The tool may stop reading early (e.g. after the trailer); that is not our error.
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

#[test]
fn cpio_t_lists_exactly_the_tree() {
    let tree = sample_tree();
    let out = run_stdin(Command::new("cpio").args(["-it", "--quiet"]), &cpio_bytes(&tree));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect();
    let expected: Vec<String> =
        tree.iter().map(|(p, _)| if p.is_empty() { ".".to_string() } else { p.to_string() }).collect();
    assert_eq!(listed, expected);
}

#[test]
fn cpio_extraction_gives_back_the_tree() {
    let tree = sample_tree();
    harness::require_root("cpio -i recreates device nodes and owners (mknod, chown)");
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("cpio");
    cmd.args(["-idm", "--quiet", "--no-absolute-filenames"]).current_dir(dir.path());
    let out = run_stdin(&mut cmd, &cpio_bytes(&tree));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_matches_tree(&tree, dir.path(), "cpio -i", true);
}

#[test]
fn cpio_verbose_listing_shows_devices_modes_and_owners() {
    let tree = sample_tree();
    let out =
        run_stdin(Command::new("cpio").args(["-itv", "--quiet", "--numeric-uid-gid"]), &cpio_bytes(&tree));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |name: &str| {
        text.lines()
            .find(|l| l.ends_with(&format!(" {name}")) || l.contains(&format!(" {name} -> ")))
            .unwrap_or_else(|| panic!("{name} not listed in:\n{text}"))
            .to_string()
    };
    assert!(line("dev/console").starts_with("crw-------"), "{}", line("dev/console"));
    assert!(line("dev/console").contains("5,   1") || line("dev/console").contains("5, 1"));
    assert!(line("dev/ram0").starts_with("brw-rw----"));
    assert!(line("bin/busybox").starts_with("-rwsr-xr-x"));
    assert!(line("tmp").starts_with("drwxrwxrwt"));
    assert!(line("etc/secret").contains(" 1000 "), "{}", line("etc/secret"));
    assert!(line("usr/long-link").ends_with(&format!("-> {LONG_TARGET}")));
}

fn write_image(tree: &Tree) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let img = write_ext2(tree, &Ext2Options::default()).unwrap();
    let path = dir.path().join("root.ext2");
    fs::write(&path, &img).unwrap();
    (dir, path, img)
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs").args(["-R", request]).arg(image).output().unwrap();
    assert!(out.status.success(), "debugfs -R '{request}' failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// e2fsck -fn: exit 0 and only the five pass headers plus the summary line.
fn assert_e2fsck_clean(image: &Path) {
    let out = Command::new("e2fsck").arg("-fn").arg(image).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "e2fsck complained:\n{text}");
    let remarks: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("Pass ") && !l.contains(" files (") && !l.starts_with("e2fsck "))
        .collect();
    assert!(remarks.is_empty(), "e2fsck said more than the passes:\n{text}");
}

#[test]
fn ext2_is_clean_for_e2fsck() {
    let tree = sample_tree();
    let started = Instant::now();
    let (_dir, path, img) = write_image(&tree);
    eprintln!(
        "ext2: {} entries, {} file bytes -> {} KiB image in {:?}",
        tree.len(),
        tree.total_file_bytes(),
        ext2_size_kib(&img),
        started.elapsed()
    );
    assert_e2fsck_clean(&path);
}

#[test]
fn ext2_superblock_has_the_2_4_friendly_geometry() {
    let (_dir, path, img) = write_image(&sample_tree());
    let out = Command::new("dumpe2fs").arg("-h").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing in dumpe2fs output"))
            .split_once(':')
            .unwrap()
            .1
            .trim()
            .to_string()
    };
    assert_eq!(field("Block size"), "1024");
    assert_eq!(field("Inode size"), "128");
    assert_eq!(field("Filesystem revision #"), "1 (dynamic)");
    assert_eq!(field("Filesystem features"), "filetype sparse_super");
    assert_eq!(field("Block count").parse::<u32>().unwrap(), ext2_size_kib(&img));
    assert_eq!(img.len(), ext2_size_kib(&img) as usize * 1024);
}

#[test]
fn ext2_contents_read_back_with_debugfs() {
    let tree = sample_tree();
    let (_dir, path, _img) = write_image(&tree);

    let listing = debugfs(&path, "ls -l /");
    for name in ["bin", "dev", "etc", "lost+found", "many", "sbin", "tmp", "usr"] {
        assert!(listing.contains(&format!(" {name}")), "ls -l / lacks {name}:\n{listing}");
    }
    let out = Command::new("debugfs").args(["-R", "cat /bin/busybox"]).arg(&path).output().unwrap();
    assert!(out.stdout == noise(1_600_000, 2), "cat /bin/busybox differs");
    let many = debugfs(&path, "ls /many");
    assert_eq!(many.matches("entry-with-a-longish-name-").count(), 300);

    // `debugfs stat` of a path shows each of these lines (root links = 2 + 8 subdirs).
    let link_size = format!("Size: {}", LONG_TARGET.len());
    let stats: &[(&str, &[&str])] = &[
        ("/dev/console", &["Type: character", "Device major/minor number: 05:01"]),
        ("/dev/ttyS0", &["Device major/minor number: 04:64"]),
        ("/dev/bigdev", &["Device major/minor number: 300:70000"]),
        ("/usr/long-link", &["Type: symlink", &link_size]),
        ("/bin/busybox", &["Mode:  04755"]),
        ("/etc/secret", &["User:  1000   Group:   100"]),
        ("/tmp", &["Mode:  01777"]),
        ("/", &["Links: 10"]),
    ];
    for (entry, wants) in stats {
        let stat = debugfs(&path, &format!("stat {entry}"));
        for want in *wants {
            assert!(stat.contains(want), "{entry}: no {want:?} in\n{stat}");
        }
    }
}

/// Everything at once: rdump writes files, dirs and links to the host (owners need root).
#[test]
fn ext2_dumps_back_to_the_tree_with_debugfs_rdump() {
    harness::require_root("debugfs rdump restores owners (chown)");
    let tree = sample_tree();
    let (dir, path, _img) = write_image(&tree);
    let out_dir = dir.path().join("dump");
    fs::create_dir(&out_dir).unwrap();
    debugfs(&path, &format!("rdump / {}", out_dir.display()));
    // Device nodes are not recreated by rdump; `stat` in the test above checks them.
    assert_matches_tree(&tree, &out_dir, "debugfs rdump", false);
}

#[test]
fn images_are_reproducible_and_gzip_round_trips() {
    let a = sample_tree();
    let b = sample_tree();
    assert!(cpio_bytes(&a) == cpio_bytes(&b), "cpio differs between two writes");
    let ea = write_ext2(&a, &Ext2Options::default()).unwrap();
    let eb = write_ext2(&b, &Ext2Options::default()).unwrap();
    assert!(ea == eb, "ext2 differs between two writes");

    let started = Instant::now();
    let gz = gzip_deterministic(&ea, 9);
    eprintln!(
        "gzip -9 of {} KiB ext2 -> {} KiB in {:?}",
        ea.len() / 1024,
        gz.len() / 1024,
        started.elapsed()
    );
    assert!(gz == gzip_deterministic(&eb, 9), "gzip output differs between two runs");
    let out = run_stdin(Command::new("gzip").arg("-dc"), &gz);
    assert!(out.status.success());
    assert!(out.stdout == ea, "gunzip does not give back the image");
    let out = run_stdin(Command::new("gzip").arg("-t"), &gz);
    assert!(out.status.success(), "gzip -t fails");
}

#[test]
fn modern_kernel_can_read_the_gzipped_cpio() {
    // The kernel's own unpacker is not run here (the boot tests do that); GNU cpio reading
    // through gunzip proves the compressed stream and archive framing agree.
    let tree = sample_tree();
    let gz = gzip_deterministic(&cpio_bytes(&tree), 9);
    let out = run_stdin(Command::new("sh").args(["-c", "gzip -dc | cpio -it --quiet | wc -l"]), &gz);
    let count: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(count, tree.len());
}

#[test]
fn gnu_tar_layers_import_and_escapes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("usr/bin")).unwrap();
    fs::write(src.join("usr/bin/setpe"), b"setpe tool").unwrap();
    fs::set_permissions(src.join("usr/bin/setpe"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::hard_link(src.join("usr/bin/setpe"), src.join("usr/bin/mosctl")).unwrap();
    std::os::unix::fs::symlink("setpe", src.join("usr/bin/mosrun")).unwrap();
    std::os::unix::fs::symlink("/bin/busybox", src.join("usr/bin/ash")).unwrap();
    let good = dir.path().join("openmosix-tools.tar.gz");
    harness::run(&[
        "tar",
        "-czf",
        good.to_str().unwrap(),
        "-C",
        src.to_str().unwrap(),
        "--owner=0",
        "--group=0",
        ".",
    ]);
    let mut tree = Tree::new();
    let stats = tree.import_tar(fs::File::open(&good).unwrap(), "openmosix-tools.tar.gz").unwrap();
    assert_eq!((stats.files, stats.hard_links, stats.symlinks), (1, 1, 2));
    assert_eq!(tree.get("/usr/bin/mosctl").unwrap().kind, EntryKind::File(b"setpe tool".to_vec()));
    assert_eq!(tree.get("/usr/bin/setpe").unwrap().mode, 0o755);

    // GNU tar keeps "../../" in member names only with -P; such a tarball must be refused.
    fs::write(dir.path().join("passwd"), b"root::0:0::/:/bin/sh\n").unwrap();
    let evil = dir.path().join("userland.tar.gz");
    harness::run(&[
        "tar",
        "-czf",
        evil.to_str().unwrap(),
        "-C",
        dir.path().to_str().unwrap(),
        "-P",
        "--transform",
        "s,^,../../etc/,",
        "passwd",
    ]);
    let err = Tree::new().import_tar(fs::File::open(&evil).unwrap(), "userland.tar.gz").unwrap_err();
    assert_eq!(
        err.to_string(),
        "tarball userland.tar.gz: entry '../../etc/passwd' escapes the node root ('..' component)"
    );

    let abs = dir.path().join("abs.tar");
    harness::run(&["tar", "-cf", abs.to_str().unwrap(), "-P", dir.path().join("passwd").to_str().unwrap()]);
    let err = Tree::new().import_tar(fs::File::open(&abs).unwrap(), "abs.tar").unwrap_err().to_string();
    assert!(err.contains("escapes the node root (absolute path)"), "{err}");
}

/// A small xorshift generator, so the random trees below are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A random tree: nested dirs, files at block-boundary sizes, fast and slow symlinks, devices.
fn random_tree(seed: u64) -> Tree {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut t = Tree::new();
    let dirs = ["a", "b", "sub", "x.y", "deep-dir_9"];
    let count = 1 + rng.below(60);
    for i in 0..count {
        let depth = rng.below(4);
        let mut path = String::new();
        for _ in 0..depth {
            path.push('/');
            path.push_str(rng.pick(&dirs));
        }
        let len = 1 + rng.below(40) as usize;
        let name: String = (0..len).map(|_| rng.pick(b"az0.-_Q") as char).collect();
        path.push_str(&format!("/{name}{i}"));
        let result = match rng.below(10) {
            0 | 1 => t.add_dir(&path, rng.pick(&[0o755, 0o700, 0o1777, 0o555])),
            2 | 3 => {
                let target_len = 1 + rng.below(200) as usize;
                let target: String = (0..target_len).map(|_| rng.pick(b"/ab.1") as char).collect();
                t.add_symlink(&path, &target)
            }
            4 => t.add_char_device(&path, 0o620, rng.below(300) as u32, rng.below(1000) as u32),
            5 => t.add_block_device(&path, 0o660, rng.below(256) as u32, rng.below(256) as u32),
            _ => {
                let any = rng.below(300_000) as usize;
                let size = rng.pick(&[
                    0usize,
                    1,
                    1023,
                    1024,
                    1025,
                    12 * 1024,
                    12 * 1024 + 1,
                    268 * 1024,
                    268 * 1024 + 1,
                    any,
                ]);
                let mode = rng.pick(&[0o644, 0o600, 0o755, 0o4755, 0o2711]);
                t.add_file(&path, mode, noise(size, i as u32 + seed as u32))
            }
        };
        // A path through an existing file is refused by the tree; that case is unit-tested.
        let _ = result;
    }
    t
}

#[test]
fn random_trees_make_ext2_images_e2fsck_accepts() {
    for seed in 0..24 {
        let tree = random_tree(seed);
        let (_dir, path, _img) = write_image(&tree);
        assert_e2fsck_clean(&path);
    }
}

/// The random trees unpack to themselves from both formats (owners and device nodes need root).
#[test]
fn random_trees_unpack_to_themselves() {
    harness::require_root("debugfs rdump and cpio -i restore owners and device nodes");
    for seed in 0..24 {
        let tree = random_tree(seed);
        let (dir, path, _img) = write_image(&tree);
        let dump = dir.path().join("dump");
        fs::create_dir(&dump).unwrap();
        debugfs(&path, &format!("rdump / {}", dump.display()));
        assert_matches_tree(&tree, &dump, &format!("seed {seed}: debugfs rdump"), false);

        let unpacked = dir.path().join("cpio");
        fs::create_dir(&unpacked).unwrap();
        let out = run_stdin(
            Command::new("cpio").args(["-idm", "--quiet", "--no-absolute-filenames"]).current_dir(&unpacked),
            &cpio_bytes(&tree),
        );
        assert!(out.status.success(), "seed {seed}: {}", String::from_utf8_lossy(&out.stderr));
        assert_matches_tree(&tree, &unpacked, &format!("seed {seed}: cpio -i"), true);
    }
}

#[test]
fn ext2_spans_many_groups_and_triple_indirect_blocks() {
    // 65 MiB is past 12 + 256 + 256*256 blocks of 1 KiB, so the triple indirect tree is used;
    // the image spans nine 8 MiB groups, with sparse superblock backups in groups 1, 3, 5 and 7.
    let big: Vec<u8> =
        (0..65u32 * 1024 * 1024).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut tree = Tree::new();
    tree.add_file("/data/big", 0o644, big.clone()).unwrap();
    for d in 0..10 {
        for f in 0..500 {
            tree.add_file(&format!("/d{d}/f{f}"), 0o644, vec![b'x'; f]).unwrap();
        }
    }
    let started = Instant::now();
    let (_dir, path, img) = write_image(&tree);
    eprintln!(
        "ext2: {} entries, {} MiB -> {} KiB image in {:?}",
        tree.len(),
        tree.total_file_bytes() >> 20,
        ext2_size_kib(&img),
        started.elapsed()
    );
    assert_e2fsck_clean(&path);
    let out = Command::new("dumpe2fs").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let backups: Vec<&str> = text.lines().filter(|l| l.contains("Backup superblock at")).collect();
    assert!(text.contains("Group 8:"), "expected nine groups");
    assert_eq!(backups.len(), 4, "{backups:?}");
    let out = Command::new("debugfs").args(["-R", "cat /data/big"]).arg(&path).output().unwrap();
    assert!(out.stdout == big, "cat /data/big differs");
    assert_eq!(debugfs(&path, "cat /d9/f499").len(), 499);
}

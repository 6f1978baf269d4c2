//! Assembles the node root (the RAM root inside the initrd): busybox and its applet links, the
//! rendered node files, device nodes, then the userland and modules tarballs, then the overlay.
//! Later layers win, so an admin's overlay can replace anything mosboot wrote.

use std::path::Path;

use minijinja::Value;
use node_image::tree::Tree;

use crate::diag::Diagnostics;
use crate::render::Templates;

/// Where each node template lands in the node root, and its mode. The map template is written
/// to every map file name of the version (see [`crate::render::map_files`]).
pub const NODE_FILES: &[(&str, &str, u32)] = &[
    ("node/udhcpc.script", "/etc/mosboot/udhcpc.script", 0o755),
    ("node/openmosix-start", "/etc/mosboot/openmosix-start", 0o755),
    ("node/hosts", "/etc/hosts", 0o644),
    ("node/fstab", "/etc/fstab", 0o644),
    ("node/nodes", "/etc/mosboot/nodes", 0o644),
    ("node/mosboot.conf", "/etc/mosboot/mosboot.conf", 0o644),
    ("node/passwd", "/etc/passwd", 0o644),
    ("node/group", "/etc/group", 0o644),
];

/// Device nodes every image carries: a 2.4 kernel has no devtmpfs, and even a modern kernel opens
/// /dev/console from the initramfs before /init runs.
const DEVICES: &[(&str, u32, u32, u32)] = &[
    ("/dev/console", 0o600, 5, 1),
    ("/dev/tty", 0o666, 5, 0),
    ("/dev/tty0", 0o620, 4, 0),
    ("/dev/tty1", 0o620, 4, 1),
    ("/dev/ttyS0", 0o660, 4, 64),
    ("/dev/null", 0o666, 1, 3),
    ("/dev/zero", 0o666, 1, 5),
    ("/dev/random", 0o666, 1, 8),
    ("/dev/urandom", 0o666, 1, 9),
    ("/dev/ram0", 0o660, 1, 0),
    ("/dev/mem", 0o640, 1, 1),
];

/// Applets the node scripts call: linked at build time even when the busybox binary's applet
/// table cannot be read (the init script also runs `busybox --install -s` for the rest).
const ESSENTIAL_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "mount",
    "umount",
    "mkdir",
    "cat",
    "echo",
    "ip",
    "ifconfig",
    "route",
    "udhcpc",
    "hostname",
    "sleep",
    "grep",
    "sed",
    "awk",
    "ls",
    "ps",
    "dmesg",
    "poweroff",
    "reboot",
    "mknod",
    "ln",
    "chmod",
    "uname",
    "wc",
    "head",
    "tr",
    "cut",
    "sha256sum",
    "tftp",
    "setsid",
    "cttyhack",
    "printf",
    "test",
    "[",
    "cp",
    "rm",
    "mv",
    "sync",
    "kill",
    "true",
    "false",
    "env",
    "init",
];

/// Inputs of the root besides templates, already read.
pub struct RootInputs<'a> {
    pub busybox: &'a [u8],
    /// (display name, bytes) of each tarball, modules first then userland in config order.
    pub tarballs: Vec<(String, Vec<u8>)>,
    pub overlay: Option<&'a Path>,
    pub init_path: &'a str,
    pub map_files: &'a [String],
    pub mfs: bool,
}

/// Builds the node root.
pub fn assemble(templates: &Templates, ctx: &Value, inp: &RootInputs<'_>) -> Result<Tree, Diagnostics> {
    let mut d = Diagnostics::default();
    let mut t = Tree::new();
    let fail = |d: &mut Diagnostics, what: &str, e: &dyn std::fmt::Display| {
        d.push(Path::new("node root"), 0, "", format!("{what}: {e}"));
    };
    for dir in [
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/etc/mosboot",
        "/proc",
        "/sys",
        "/dev",
        "/root",
        "/mnt",
        "/var/run",
        "/lib",
    ] {
        if let Err(e) = t.add_dir(dir, 0o755) {
            fail(&mut d, dir, &e);
        }
    }
    if let Err(e) = t.add_dir("/tmp", 0o1777) {
        fail(&mut d, "/tmp", &e);
    }
    if inp.mfs
        && let Err(e) = t.add_dir("/mfs", 0o755)
    {
        fail(&mut d, "/mfs", &e);
    }
    for &(path, mode, major, minor) in DEVICES {
        if let Err(e) = t.add_char_device(path, mode, major, minor) {
            fail(&mut d, path, &e);
        }
    }
    if let Err(e) = t.add_file("/bin/busybox", 0o755, inp.busybox.to_vec()) {
        fail(&mut d, "/bin/busybox", &e);
    }
    let mut applets = applet_names(inp.busybox);
    if applets.is_empty() {
        applets = ESSENTIAL_APPLETS.iter().map(|s| s.to_string()).collect();
    }
    for a in &applets {
        let dir = if SBIN_APPLETS.contains(&a.as_str()) { "/sbin" } else { "/bin" };
        let path = format!("{dir}/{a}");
        if t.get(&path).is_none()
            && let Err(e) = t.add_symlink(&path, "/bin/busybox")
        {
            fail(&mut d, &path, &e);
        }
    }

    let render = |name: &str, d: &mut Diagnostics| -> Option<Vec<u8>> {
        match templates.render(name, ctx) {
            Ok(s) => Some(s.into_bytes()),
            Err(e) => {
                d.extend(e);
                None
            }
        }
    };
    if let Some(init) = render("node/init", &mut d)
        && let Err(e) = t.add_file(inp.init_path, 0o755, init)
    {
        fail(&mut d, inp.init_path, &e);
    }
    for &(name, dest, mode) in NODE_FILES {
        if let Some(bytes) = render(name, &mut d)
            && let Err(e) = t.add_file(dest, mode, bytes)
        {
            fail(&mut d, dest, &e);
        }
    }
    if let Some(map) = render("node/openmosix.map", &mut d) {
        for f in inp.map_files {
            if let Err(e) = t.add_file(f, 0o644, map.clone()) {
                fail(&mut d, f, &e);
            }
        }
    }

    for (name, bytes) in &inp.tarballs {
        if let Err(e) = t.import_tar(bytes.as_slice(), name) {
            d.push(Path::new(name), 0, "image", e.to_string());
        }
    }
    if let Some(dir) = inp.overlay
        && let Err(e) = t.import_dir(dir)
    {
        d.push(dir, 0, "image.overlay", e.to_string());
    }
    if d.is_empty() { Ok(t) } else { Err(d) }
}

/// Applets that live in /sbin on a classic system (scripts call some of them by full path).
const SBIN_APPLETS: &[&str] = &[
    "init",
    "ifconfig",
    "route",
    "udhcpc",
    "poweroff",
    "reboot",
    "halt",
    "mknod",
    "modprobe",
    "insmod",
    "rmmod",
    "lsmod",
    "ip",
    "syslogd",
    "klogd",
    "getty",
    "swapon",
    "swapoff",
    "pivot_root",
    "switch_root",
];

/// Reads the applet table from a busybox binary without running it (it is an i386 binary and the
/// build host may not run it): busybox keeps all applet names as one NUL-separated, sorted string
/// list that starts with `[` and `[[`.
pub fn applet_names(bin: &[u8]) -> Vec<String> {
    let needle = b"[\0[[\0";
    let Some(start) = bin.windows(needle.len()).position(|w| w == needle) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for part in bin[start..].split(|&b| b == 0) {
        if part.is_empty() {
            break;
        }
        let ok = part.len() <= 32 && part.iter().all(|&b| b.is_ascii_alphanumeric() || b"[-_.".contains(&b));
        if !ok {
            break;
        }
        match std::str::from_utf8(part) {
            Ok(s) => names.push(s.to_string()),
            Err(_) => break,
        }
    }
    // A real table has hundreds of sorted names; anything short is a false match.
    if names.len() < 10 { Vec::new() } else { names }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_applet_table() {
        let mut bin = b"\x7fELF junk\0more\0".to_vec();
        bin.extend_from_slice(b"[\0[[\0acpid\0ash\0awk\0cat\0echo\0ip\0ls\0mount\0sh\0udhcpc\0\0tail");
        let names = applet_names(&bin);
        assert_eq!(names.first().map(String::as_str), Some("["));
        assert!(names.contains(&"udhcpc".to_string()));
        assert!(!names.iter().any(|n| n == "tail"));
        assert!(applet_names(b"nothing here").is_empty());
    }
}

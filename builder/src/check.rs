//! `mosboot check`: every problem with the config and its inputs, at once.

use std::path::Path;

use crate::config::Config;
use crate::diag::Diagnostics;
use crate::pipeline::{self, BuildOptions, Prepared};
use crate::plan::Plan;

/// Loads the config, plans, and prepares the whole build in memory. Returns the config, plan and
/// prepared build, or every problem found.
///
/// A config with problems (an unknown key, say) is still planned and its inputs still read
/// whenever its sections could be built, so one mistake does not hide the others.
pub fn full(path: &Path, opts: &BuildOptions) -> Result<(Config, Plan, Prepared), Diagnostics> {
    let parsed = Config::read(path);
    let (cfg, mut problems) = match parsed.config {
        Some(cfg) => (cfg, parsed.problems),
        None => return Err(parsed.problems.sorted()),
    };
    match Plan::new(&cfg) {
        Ok(plan) => match pipeline::prepare(&cfg, &plan, opts) {
            Ok(prep) if problems.is_empty() => return Ok((cfg, plan, prep)),
            Ok(_) => {}
            Err(d) => problems.extend(d),
        },
        Err(d) => {
            // The plan failed, but the inputs can still be checked on their own.
            problems.extend(d);
            problems.extend(inputs_only(&cfg, opts));
        }
    }
    Err(problems.sorted())
}

/// Checks the inputs that do not need a plan (kernel, busybox, tarballs, overlay, templates),
/// scanning tarballs for entries that escape the node root.
pub fn inputs_only(cfg: &Config, opts: &BuildOptions) -> Diagnostics {
    let mut d = Diagnostics::default();
    let inputs = pipeline::read_inputs(cfg, opts, &mut d);
    for (name, bytes) in &inputs.tarballs {
        let mut scratch = node_image::tree::Tree::new();
        if let Err(e) = scratch.import_tar(bytes.as_slice(), name) {
            d.push(Path::new(name), 0, "image", e.to_string());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{synthetic_elf, synthetic_kernel};

    /// Broken configs and what `check` says about each, in a folder that holds a usable kernel
    /// (`bzImage`), busybox (`busybox`), an x86-64 binary (`busybox64`) and a text file
    /// (`notes.txt`). Every case must list every one of its problems, each at its line.
    const CASES: &[(&str, &str)] = &[
        (
            "five_mistakes",
            r#"[cluster]
name = "lab"
interface = "eth1"
server = "192.168.0.254/24"
pool = "192.168.1.1-192.168.1.20"
hostname = "ws{{ bogus("
bogus_key = 1

[image]
kernel = "bzImage"
busybox = "missing/busybox"

[[node]]
mac = "00:0c:29:aa:bb:01"
ip = "10.0.0.5"
"#,
        ),
        (
            "unknown_keys_everywhere",
            r#"colour = "blue"
[cluster]
interface = "eth1"
server = "192.168.0.254/24"
pool = "192.168.0.1-192.168.0.9"
pol = "192.168.0.1-192.168.0.9"
[openmosix]
mfs_enabled = true
[image]
kernel = "bzImage"
busybox = "busybox"
kernal = "bzImage"
[[node]]
mac = "00:0c:29:aa:bb:01"
ip = "192.168.0.50"
host = "big"
"#,
        ),
        (
            "wrong_values",
            r#"[cluster]
interface = "eth1"
server = "192.168.0.254"
pool = 5
lease_time = "forever"
dhcp = "maybe"
dns = ["192.168.0.1", "dns.example"]
[openmosix]
version = "two"
lstay = "yes"
map = "dynamic"
[image]
kernel = "bzImage"
busybox = "busybox"
initrd = 5
"#,
        ),
        (
            "keys_that_disagree",
            r#"[cluster]
interface = "eth1"
server = "192.168.0.254/24"
pool = "192.168.0.1-192.168.0.9"
router = "10.0.0.1"
[openmosix]
version = "2.4.26"
mfs = true
[image]
kernel = "bzImage"
busybox = "busybox"
cmdline = """quiet
single"""
[[node]]
mac = "00:0c:29:aa:bb:01"
ip = "192.168.0.50"
[[node]]
mac = "00:0c:29:aa:bb:01"
ip = "192.168.0.50"
[[node]]
mac = "00:0c:29:aa:bb:03"
ip = "192.168.0.254"
"#,
        ),
        (
            "missing_keys",
            r#"[cluster]
name = "a lab"
[image]
kernel = "bzImage"
busybox = "busybox"
"#,
        ),
        (
            "bad_inputs",
            r#"[cluster]
interface = "eth1"
server = "192.168.0.254/24"
pool = "192.168.0.1-192.168.0.9"
hostname = "{{ nope }}"
[image]
kernel = "notes.txt"
busybox = "busybox64"
userland = ["missing.tar.gz"]
overlay = "notes.txt"
"#,
        ),
        ("not_toml", "[cluster]\ninterface = \"eth1\"\nserver = = 3\n"),
    ];

    #[test]
    fn every_problem_of_every_broken_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: [(&str, Vec<u8>); 4] = [
            ("bzImage", synthetic_kernel("2.4.26-om1")),
            ("busybox", synthetic_elf(3)),
            ("busybox64", synthetic_elf(62)),
            ("notes.txt", b"not a kernel\n".to_vec()),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.path().join(name), bytes).expect("write fixture");
        }
        let shown_dir = dir.path().display().to_string();
        for (name, text) in CASES {
            let path = dir.path().join(format!("{name}.toml"));
            std::fs::write(&path, text).expect("write config");
            let mut problems = match full(&path, &BuildOptions::default()) {
                Ok(_) => panic!("{name}: check found no problem"),
                Err(d) => d,
            };
            // Whether this machine has pxelinux installed is not about the config.
            problems.items.retain(|d| !d.file.starts_with("/usr/lib/PXELINUX"));
            let out = problems.to_string().replace(&shown_dir, "<dir>");
            // What the command prints is this text; it exits 1 (the user can fix it).
            assert_eq!(crate::error::Failure::from(problems).exit_code(), 1, "{name}");
            insta::assert_snapshot!(format!("check__{name}"), out);
        }
    }
}

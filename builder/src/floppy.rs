//! `mosboot floppy`: a 1.44 MB boot floppy for PCs whose NIC has no boot ROM, above all the
//! ISA cards (NE2000 clones, 3c509, WD80x3, SMC Ultra) that no current iPXE probes.
//!
//! The floppy holds only what never changes: SYSLINUX, a small kernel with the ISA and PCI NIC
//! drivers built in (the kit's `floppy-i486`) and a stage-1 initrd with a tiny busybox. The
//! stage-1 does DHCP against mosboot, fetches the server's current `initrd.gz` by TFTP and
//! switches into it, so a rebuilt image is picked up on the next boot and nobody rewrites
//! floppies. With a 2.4 kernel (no initramfs, no switch_root) the stage-1 is an ext2 image whose
//! /linuxrc loads the node's ext2 image into /dev/ram1 and pivot_roots into it.
//!
//! `--nic ipxe` keeps the older design for PCI cards: SYSLINUX loads iPXE (`ipxe.lkrn`), which
//! then boots like a PXE ROM. Only a post-2021 iPXE is accepted: older builds execute FXSAVE
//! and hang on 486 and Pentium CPUs.
//!
//! The image is written without root or mounts (mkfs.fat, syslinux --install and mcopy work on
//! the file) and is byte-for-byte reproducible: directory entry times are fixed afterwards.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use node_image::tree::Tree;

use crate::error::Failure;

/// A 3.5" high-density floppy.
pub const FLOPPY_BYTES: u64 = 1_474_560;

/// Where an ipxe.lkrn may be found when `--ipxe` is not given, best first.
const LKRN_SEARCH: &[&str] = &["/usr/lib/ipxe/ipxe.lkrn", "/usr/share/ipxe/ipxe.lkrn"];

/// The first iPXE build date known not to hang on FXSR-less CPUs (a conservative bound).
const MIN_IPXE_DATE: u32 = 20_210_101;

/// DHCP option 60 the stage-1 sends, so a server (and its log) can tell a floppy from a ROM.
pub const VENDOR_CLASS: &str = "mosboot-floppy";

/// The node image the stage-1 fetches: the same file PXE nodes load (see `mosboot build`).
const NODE_IMAGE: &str = "initrd.gz";

/// TFTP block size the stage-1 asks for: one Ethernet frame (the server clamps to its MTU).
const STAGE1_BLKSIZE: u32 = 1468;

/// RAM disk size (KiB) for the 2.4 path: room for the node's ext2 image in /dev/ram1. RAM
/// disks take memory only as they are written, so a generous bound costs nothing.
const RAMDISK_KIB: u32 = 32768;

/// Applets the stage-1 scripts run; the busybox given must have every one.
const STAGE1_APPLETS: &[&str] =
    &["sh", "mount", "umount", "mkdir", "cat", "ifconfig", "route", "udhcpc", "tftp", "gunzip", "sleep"];
const STAGE1_APPLETS_CPIO: &[&str] = &["cpio", "switch_root"];
const STAGE1_APPLETS_EXT2: &[&str] = &["pivot_root", "chroot"];

/// Fixed FAT timestamps (1980-01-01 00:00): SYSLINUX and mcopy stamp files with the clock.
const FAT_DATE: u16 = (1 << 5) | 1;

/// Which card the floppy is for. Every driver is built into the floppy kernel and probes at
/// boot; a choice with `io=`/`irq=` pins the card instead of probing (`ether=` on the kernel
/// line, which Linux 2.4 and 6.1 both read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nic {
    /// Let every built-in driver probe: NE2000 at 0x300, 0x280, 0x320, 0x340, 0x360, 0x380,
    /// 3c509 by its ID port, WD80x3, SMC Ultra.
    Auto,
    Ne2000 {
        io: Option<u16>,
        irq: Option<u8>,
    },
    El3,
    Wd {
        io: Option<u16>,
        irq: Option<u8>,
        mem: Option<u32>,
    },
    Ultra {
        io: Option<u16>,
        irq: Option<u8>,
    },
    /// PCI cards without a boot ROM: the SYSLINUX + iPXE floppy, whose drivers cover them (the
    /// floppy kernel has no PCI support; it would not fit).
    Pci,
    /// The same as [`Nic::Pci`], by the name of what goes on the floppy.
    Ipxe,
}

impl fmt::Display for Nic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Nic::Auto => "auto (every built-in driver probes)",
            Nic::Ne2000 { .. } => "ne2000",
            Nic::El3 => "3c509",
            Nic::Wd { .. } => "wd",
            Nic::Ultra { .. } => "ultra",
            Nic::Pci => "pci",
            Nic::Ipxe => "ipxe",
        };
        f.write_str(name)?;
        if let Some(p) = self.boot_param() {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

impl Nic {
    /// Parses `auto`, `ne2000[:io=0x300,irq=9]`, `3c509`, `wd[:io=..,irq=..,mem=0xd0000]`,
    /// `ultra[:io=..,irq=..]`, `pci`, `ipxe`.
    pub fn parse(s: &str) -> Result<Nic, String> {
        let (name, opts) = s.split_once(':').unwrap_or((s, ""));
        let mut io = None;
        let mut irq = None;
        let mut mem = None;
        for kv in opts.split(',').filter(|kv| !kv.is_empty()) {
            let (k, v) =
                kv.split_once('=').ok_or_else(|| format!("'{kv}' in --nic {s}: expected key=value"))?;
            let num =
                parse_num(v).ok_or_else(|| format!("'{v}' in --nic {s}: not a number (0x300 or 768)"))?;
            match k {
                "io" => {
                    io = Some(
                        u16::try_from(num)
                            .ok()
                            .filter(|&p| p > 0 && p < 0x400)
                            .ok_or_else(|| format!("io={v}: ISA ports are 0x001-0x3ff"))?,
                    )
                }
                "irq" => {
                    irq = Some(
                        u8::try_from(num)
                            .ok()
                            .filter(|&i| (1..=15).contains(&i))
                            .ok_or_else(|| format!("irq={v}: ISA IRQs are 1-15"))?,
                    )
                }
                "mem" => {
                    mem = Some(
                        u32::try_from(num)
                            .ok()
                            .filter(|&m| (0xa_0000..0x10_0000).contains(&m))
                            .ok_or_else(|| format!("mem={v}: shared memory lies at 0xa0000-0xfffff"))?,
                    )
                }
                _ => return Err(format!("unknown setting '{k}' in --nic {s} (io, irq, mem)")),
            }
        }
        let nic = match name {
            "auto" => Nic::Auto,
            "ne2000" | "ne" | "ne2k" => Nic::Ne2000 { io, irq },
            "3c509" | "el3" => Nic::El3,
            "wd" | "wd8003" | "wd80x3" => Nic::Wd { io, irq, mem },
            "ultra" | "smc-ultra" => Nic::Ultra { io, irq },
            "pci" => Nic::Pci,
            "ipxe" => Nic::Ipxe,
            _ => {
                return Err(format!(
                    "unknown card '{name}' in --nic (auto, ne2000, 3c509, wd, ultra, pci, ipxe)"
                ));
            }
        };
        let settable = matches!(nic, Nic::Ne2000 { .. } | Nic::Wd { .. } | Nic::Ultra { .. });
        if !settable && (io.is_some() || irq.is_some()) {
            return Err(format!("--nic {name} takes no io=/irq= (it needs none)"));
        }
        if mem.is_some() && !matches!(nic, Nic::Wd { .. }) {
            return Err(format!("--nic {name} takes no mem= (only wd has shared memory to set)"));
        }
        if settable && io.is_none() && (irq.is_some() || mem.is_some()) {
            return Err(format!(
                "--nic {s}: irq= and mem= need io= too (the kernel probes ports only when none is given)"
            ));
        }
        Ok(nic)
    }

    /// The kernel's `ether=IRQ,IO[,MEM,MEM_END],eth0` that pins an ISA card, when set (Linux
    /// 6.1 reads it as `netdev=`; 2.4 knows only `ether=`).
    /// IRQ 0 lets the driver find the IRQ itself.
    pub fn boot_param(&self) -> Option<String> {
        match *self {
            Nic::Ne2000 { io: Some(io), irq } | Nic::Ultra { io: Some(io), irq } => {
                Some(format!("ether={},0x{io:x},eth0", irq.unwrap_or(0)))
            }
            Nic::Wd { io: Some(io), irq, mem: Some(mem) } => {
                Some(format!("ether={},0x{io:x},0x{mem:x},0,eth0", irq.unwrap_or(0)))
            }
            Nic::Wd { io: Some(io), irq, mem: None } => {
                Some(format!("ether={},0x{io:x},eth0", irq.unwrap_or(0)))
            }
            _ => None,
        }
    }
}

fn parse_num(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Which stage-1 the floppy carries: a cpio initramfs (2.6+ kernels) or an ext2 RAM disk (2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage1Format {
    /// From the kernel: ext2 for 2.4 and older, cpio otherwise.
    Auto,
    Cpio,
    Ext2,
}

/// Everything `mosboot floppy` takes.
#[derive(Debug, Clone)]
pub struct FloppyOptions {
    pub out: PathBuf,
    pub nic: Nic,
    /// The floppy kernel (default `$MOSBOOT_FLOPPY_KERNEL`).
    pub kernel: Option<PathBuf>,
    /// The stage-1 busybox (default `$MOSBOOT_FLOPPY_BUSYBOX`).
    pub busybox: Option<PathBuf>,
    /// For `--nic pci`/`ipxe`: the ipxe.lkrn.
    pub ipxe: Option<PathBuf>,
    pub initrd: Stage1Format,
    /// Added to the kernel command line (e.g. `mosboot.server=192.168.0.254`).
    pub append: Option<String>,
}

/// Reads the Debian-style version (`1.21.1+git20250501...`) out of an iPXE binary and returns
/// the git date as YYYYMMDD.
pub fn ipxe_build_date(bin: &[u8]) -> Option<u32> {
    let pat = b"+git";
    let mut from = 0;
    while let Some(pos) = bin[from..].windows(pat.len()).position(|w| w == pat) {
        let at = from + pos + pat.len();
        let rest = &bin[at..bin.len().min(at + 10)];
        let digits: Vec<u8> = rest.iter().copied().skip_while(|&b| b == b'-').take(8).collect();
        if digits.len() == 8
            && digits.iter().all(u8::is_ascii_digit)
            && let Some(d) = std::str::from_utf8(&digits).ok().and_then(|s| s.parse().ok())
        {
            return Some(d);
        }
        from = at;
    }
    None
}

fn tool(cmd: &mut Command, what: &str) -> Result<String, Failure> {
    let out = cmd.output().map_err(|e| {
        Failure::runtime(what, format!("{e} (install Debian's dosfstools, mtools and syslinux)"))
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Failure::runtime(what, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Finds and checks the iPXE image to put on the floppy.
pub fn find_lkrn(given: Option<&Path>) -> Result<(PathBuf, Vec<u8>), Failure> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("MOSBOOT_IPXE_LKRN")
            .map(PathBuf::from)
            .or_else(|| LKRN_SEARCH.iter().map(PathBuf::from).find(|p| p.is_file()))
            .ok_or_else(|| Failure::Usage("no ipxe.lkrn found: pass --ipxe FILE (a post-2021 iPXE, e.g. Debian 13's ipxe package; `make kit-paths` shows the kit's)".into()))?,
    };
    let bin = std::fs::read(&path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
    match ipxe_build_date(&bin) {
        Some(d) if d >= MIN_IPXE_DATE => Ok((path, bin)),
        Some(d) => Err(Failure::Usage(format!(
            "{} is an iPXE from {d}; builds before 2021 hang on 486 and Pentium CPUs (no FXSR). Use a newer one (Debian 13's ipxe package)",
            path.display()
        ))),
        None => Err(Failure::Usage(format!(
            "{} does not look like an iPXE image (no version string found)",
            path.display()
        ))),
    }
}

/// A file given by flag or environment variable, read whole.
fn input(
    given: Option<&Path>,
    env: &str,
    flag: &str,
    what: &str,
    kit: &str,
) -> Result<(PathBuf, Vec<u8>), Failure> {
    let path = given.map(Path::to_path_buf).or_else(|| std::env::var_os(env).map(PathBuf::from)).ok_or_else(|| {
        Failure::Usage(format!(
            "no {what}: pass {flag} FILE or set {env} (`make kit` builds one; `make kit-paths` shows it as {kit})"
        ))
    })?;
    let bytes =
        std::fs::read(&path).map_err(|e| Failure::Usage(format!("{what} {}: {e}", path.display())))?;
    Ok((path, bytes))
}

/// One file of the floppy: its 8.3 name and contents.
struct FloppyFile {
    name: &'static str,
    what: String,
    bytes: Vec<u8>,
}

/// Bytes a file takes on the floppy: whole 512-byte clusters.
fn on_disk(len: usize) -> u64 {
    (len as u64).div_ceil(512) * 512
}

/// What the stage-1 templates (`templates/floppy/*`) are rendered with: no per-cluster values,
/// so one floppy serves every cluster.
pub fn stage1_context() -> minijinja::Value {
    minijinja::context! {
        vendor_class => VENDOR_CLASS,
        image => NODE_IMAGE,
        report_path => netboot::tftp::REPORT_DIR,
        stage1_report => netboot::node_report::FLOPPY_STAGE1,
        blksize => STAGE1_BLKSIZE,
    }
}

/// The stage-1 busybox's scripts, rendered.
fn render_stage1(name: &str) -> Result<String, Failure> {
    let src =
        crate::render::builtin_templates().iter().find(|(n, _)| *n == name).map(|(_, s)| *s).ok_or_else(
            || Failure::runtime("render the stage-1", format!("built-in template {name} is missing")),
        )?;
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template(name, src).map_err(|e| Failure::runtime(format!("parse template {name}"), e))?;
    let ctx = stage1_context();
    env.get_template(name)
        .and_then(|t| t.render(ctx))
        .map_err(|e| Failure::runtime(format!("render template {name}"), e))
}

/// The stage-1 root: busybox and its links in /bin, the scripts, the mount points and, for a
/// kernel without devtmpfs (2.4), the device nodes the scripts open.
pub fn stage1_tree(busybox: &[u8], format: Stage1Format) -> Result<Tree, Failure> {
    let bad = |e: node_image::ImageError| Failure::runtime("assemble the stage-1", e);
    let applets = crate::root::applet_names(busybox);
    let needs: Vec<&str> = STAGE1_APPLETS
        .iter()
        .chain(if format == Stage1Format::Ext2 { STAGE1_APPLETS_EXT2 } else { STAGE1_APPLETS_CPIO })
        .copied()
        .filter(|a| !applets.iter().any(|b| b == a))
        .collect();
    if !needs.is_empty() {
        return Err(Failure::Usage(format!(
            "the stage-1 busybox lacks the applet(s) {} (the kit's busybox-stage1 has them: make kit)",
            needs.join(", ")
        )));
    }
    let mut t = Tree::new();
    for d in ["/bin", "/dev", "/proc", "/newroot", "/tmp"] {
        t.add_dir(d, 0o755).map_err(bad)?;
    }
    t.add_file("/bin/busybox", 0o755, busybox.to_vec()).map_err(bad)?;
    for a in &applets {
        if a != "busybox" {
            t.add_symlink(&format!("/bin/{a}"), "busybox").map_err(bad)?;
        }
    }
    let (script, at) =
        if format == Stage1Format::Ext2 { ("floppy/linuxrc", "/linuxrc") } else { ("floppy/init", "/init") };
    t.add_file(at, 0o755, render_stage1(script)?.into_bytes()).map_err(bad)?;
    t.add_file("/bin/udhcpc.script", 0o755, render_stage1("floppy/udhcpc.script")?.into_bytes())
        .map_err(bad)?;
    t.add_char_device("/dev/console", 0o600, 5, 1).map_err(bad)?;
    if format == Stage1Format::Ext2 {
        for (p, maj, min) in
            [("/dev/null", 1, 3), ("/dev/tty", 5, 0), ("/dev/ttyS0", 4, 64), ("/dev/tty0", 4, 0)]
        {
            t.add_char_device(p, 0o666, maj, min).map_err(bad)?;
        }
        for (p, min) in [("/dev/ram0", 0), ("/dev/ram1", 1)] {
            t.add_block_device(p, 0o660, 1, min).map_err(bad)?;
        }
    }
    Ok(t)
}

/// The gzip'd stage-1 image in the chosen format.
fn stage1_image(busybox: &[u8], format: Stage1Format) -> Result<Vec<u8>, Failure> {
    let tree = stage1_tree(busybox, format)?;
    let raw = if format == Stage1Format::Ext2 {
        // 1 KiB blocks and 128-byte inodes, as a 2.4 kernel needs; /tmp and /lease.env need room.
        let opts = node_image::ext2::Ext2Options {
            extra_free_kib: 64,
            extra_inodes: 16,
            volume_label: "mosboot-stage1".into(),
            ..Default::default()
        };
        node_image::ext2::write_ext2(&tree, &opts)
            .map_err(|e| Failure::runtime("write the ext2 stage-1", e))?
    } else {
        let mut buf = Vec::new();
        node_image::cpio::write_newc(&tree, &mut buf)
            .map_err(|e| Failure::runtime("write the cpio stage-1", e))?;
        buf
    };
    Ok(node_image::gzip::gzip_deterministic(&raw, 9))
}

/// What goes on the floppy besides SYSLINUX itself, and a line about it for the user.
fn contents(opts: &FloppyOptions) -> Result<(Vec<FloppyFile>, String), Failure> {
    if matches!(opts.nic, Nic::Ipxe | Nic::Pci) {
        if opts.kernel.is_some() || opts.busybox.is_some() {
            return Err(Failure::Usage(format!(
                "--nic {} puts iPXE on the floppy: --kernel and --busybox do not apply",
                opts.nic
            )));
        }
        let (lkrn_path, lkrn) = find_lkrn(opts.ipxe.as_deref())?;
        let cfg = "DEFAULT ipxe\nPROMPT 0\nTIMEOUT 0\nLABEL ipxe\n  KERNEL ipxe.lkr\n";
        let files = vec![
            FloppyFile { name: "syslinux.cfg", what: "syslinux.cfg".into(), bytes: cfg.as_bytes().to_vec() },
            FloppyFile { name: "ipxe.lkr", what: format!("iPXE {}", lkrn_path.display()), bytes: lkrn },
        ];
        return Ok((files, format!("SYSLINUX + {}; it network-boots like a PXE ROM", lkrn_path.display())));
    }
    if opts.ipxe.is_some() {
        return Err(Failure::Usage("--ipxe is only for --nic pci (or ipxe)".into()));
    }
    let (kpath, kernel) = input(
        opts.kernel.as_deref(),
        "MOSBOOT_FLOPPY_KERNEL",
        "--kernel",
        "floppy kernel",
        "KIT_FLOPPY_KERNEL",
    )?;
    let info = node_image::bzimage::inspect(&kernel)
        .map_err(|e| Failure::Usage(format!("floppy kernel {}: {e}", kpath.display())))?;
    let (bpath, busybox) = input(
        opts.busybox.as_deref(),
        "MOSBOOT_FLOPPY_BUSYBOX",
        "--busybox",
        "stage-1 busybox",
        "KIT_BUSYBOX_STAGE1",
    )?;
    node_image::elf::check_static_i386_named(&bpath.display().to_string(), &busybox)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let format = match opts.initrd {
        Stage1Format::Auto if info.is_2_4_or_older() => Stage1Format::Ext2,
        Stage1Format::Auto => Stage1Format::Cpio,
        Stage1Format::Cpio if info.is_2_4_or_older() => {
            return Err(Failure::Usage(format!(
                "floppy kernel {} is {}: a 2.4 kernel has no initramfs, so the stage-1 must be ext2 (--initrd ext2 or auto)",
                kpath.display(),
                info.release
            )));
        }
        f => f,
    };
    let stage1 = stage1_image(&busybox, format)?;
    let mut append =
        vec!["console=tty0".to_string(), "console=ttyS0,115200n8".to_string(), "panic=10".to_string()];
    if format == Stage1Format::Ext2 {
        append.extend(["root=/dev/ram0".into(), "init=/linuxrc".into(), "rw".into()]);
        append.push(format!("ramdisk_size={RAMDISK_KIB}"));
    }
    append.extend(opts.nic.boot_param());
    if let Some(extra) = opts.append.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        if extra.contains('\n') {
            return Err(Failure::Usage("--append must be one line".into()));
        }
        append.push(extra.to_string());
    }
    let cfg = format!(
        "DEFAULT mosboot\nPROMPT 0\nTIMEOUT 0\nLABEL mosboot\n  KERNEL vmlinuz\n  INITRD stage1.gz\n  APPEND {}\n",
        append.join(" ")
    );
    let line = format!(
        "SYSLINUX + kernel {} ({}, {} bytes) + {} stage-1 ({} bytes, busybox {}); NIC: {}",
        kpath.display(),
        info.release,
        kernel.len(),
        if format == Stage1Format::Ext2 { "ext2" } else { "cpio" },
        stage1.len(),
        bpath.display(),
        opts.nic
    );
    let files = vec![
        FloppyFile { name: "syslinux.cfg", what: "syslinux.cfg".into(), bytes: cfg.into_bytes() },
        FloppyFile { name: "vmlinuz", what: format!("floppy kernel {}", kpath.display()), bytes: kernel },
        FloppyFile { name: "stage1.gz", what: "stage-1 initrd".into(), bytes: stage1 },
    ];
    Ok((files, line))
}

/// Free bytes of a FAT image as `mdir` reports them ("1 278 464 bytes free").
fn free_bytes(img: &Path) -> Result<u64, Failure> {
    let out = tool(
        Command::new("mdir").env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(img).arg("::"),
        "read the floppy's free space (mdir)",
    )?;
    out.lines()
        .find(|l| l.trim_end().ends_with("bytes free"))
        .and_then(|l| l.chars().filter(char::is_ascii_digit).collect::<String>().parse().ok())
        .ok_or_else(|| {
            Failure::runtime("read the floppy's free space (mdir)", format!("no 'bytes free' in: {out}"))
        })
}

/// Sets every root directory entry's times to [`FAT_DATE`] 00:00: SYSLINUX and mcopy stamp
/// files with the clock, which would make two floppies of the same inputs differ.
pub fn fix_fat_times(img: &mut [u8]) -> Result<(), String> {
    let u16_at = |o: usize| img.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let (Some(bps), Some(reserved), Some(&fats), Some(entries), Some(spf)) =
        (u16_at(11), u16_at(14), img.get(16), u16_at(17), u16_at(22))
    else {
        return Err("no FAT boot sector".into());
    };
    let start = (reserved + fats as usize * spf) * bps;
    let end = start + entries * 32;
    if bps == 0 || end > img.len() {
        return Err(format!("root directory at {start}..{end} lies outside the {}-byte image", img.len()));
    }
    for e in img[start..end].chunks_exact_mut(32) {
        match (e[0], e[11]) {
            (0, _) => break,
            (0xe5, _) | (_, 0x0f) => continue,
            _ => {}
        }
        e[13] = 0;
        for (off, val) in [(14, 0), (16, FAT_DATE), (18, FAT_DATE), (22, 0), (24, FAT_DATE)] {
            e[off..off + 2].copy_from_slice(&val.to_le_bytes());
        }
    }
    Ok(())
}

/// Writes the floppy image to `opts.out` (through a temporary file, renamed when complete).
pub fn run(opts: &FloppyOptions) -> Result<String, Failure> {
    let (files, line) = contents(opts)?;
    let out = &opts.out;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".mosboot-floppy-")
        .tempdir_in(dir)
        .map_err(|e| Failure::runtime(format!("create a temporary folder in {}", dir.display()), e))?;
    let img = tmp.path().join("floppy.img");
    // --invariant and a fixed volume id: the same inputs give the same image.
    tool(
        Command::new("mkfs.fat")
            .args(["-C", "--invariant", "-i", "4d4f5342", "-n", "MOSBOOT", "-F", "12"])
            .arg(&img)
            .arg("1440"),
        "make the FAT12 filesystem (mkfs.fat)",
    )?;
    tool(Command::new("syslinux").arg("--install").arg(&img), "install SYSLINUX (syslinux --install)")?;

    let free = free_bytes(&img)?;
    let need: u64 = files.iter().map(|f| on_disk(f.bytes.len())).sum();
    if need > free {
        let parts: Vec<String> =
            files.iter().map(|f| format!("{} {} bytes", f.what, f.bytes.len())).collect();
        return Err(Failure::Usage(format!(
            "does not fit on a 1.44 MB floppy: {} need {need} bytes on disk, SYSLINUX leaves {free} of {FLOPPY_BYTES}: {} bytes too many (a smaller kernel: kernel-configs/floppy-i486)",
            parts.join(" + "),
            need - free
        )));
    }
    for f in &files {
        let path = tmp.path().join(f.name);
        std::fs::write(&path, &f.bytes)
            .map_err(|e| Failure::runtime(format!("write {}", path.display()), e))?;
        // 8.3 names keep old BIOSes and SYSLINUX's FAT driver happy.
        tool(
            Command::new("mcopy")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-o")
                .arg("-i")
                .arg(&img)
                .arg(&path)
                .arg("::"),
            "copy files onto the floppy (mcopy)",
        )?;
    }
    let mut bytes = std::fs::read(&img).map_err(|e| Failure::runtime("read the floppy image back", e))?;
    if bytes.len() as u64 != FLOPPY_BYTES {
        return Err(Failure::runtime(
            "make the floppy image",
            format!("it is {} bytes, not {FLOPPY_BYTES}", bytes.len()),
        ));
    }
    fix_fat_times(&mut bytes).map_err(|e| Failure::runtime("fix the floppy's file times", e))?;
    std::fs::write(&img, &bytes).map_err(|e| Failure::runtime("write the floppy image", e))?;
    std::fs::rename(&img, out)
        .map_err(|e| Failure::runtime(format!("move the image to {}", out.display()), e))?;
    Ok(format!("wrote {} (1.44 MB FAT12, {} bytes free): {line}", out.display(), free - need))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_debian_ipxe_versions() {
        assert_eq!(ipxe_build_date(b"xx1.21.1+git20250501.dad20602+dfsg-1\0"), Some(20250501));
        assert_eq!(ipxe_build_date(b"v 1.0.0+git-20190125.36a4c85-5.1\0"), Some(20190125));
        assert_eq!(ipxe_build_date(b"no version"), None);
        assert_eq!(ipxe_build_date(b"+git"), None);
    }

    #[test]
    fn nic_choices_become_boot_parameters() {
        assert_eq!(Nic::parse("auto"), Ok(Nic::Auto));
        assert_eq!(Nic::parse("ne2000").map(|n| n.boot_param()), Ok(None));
        assert_eq!(
            Nic::parse("ne2000:io=0x320,irq=10").map(|n| n.boot_param()),
            Ok(Some("ether=10,0x320,eth0".into()))
        );
        assert_eq!(
            Nic::parse("ultra:io=0x280").map(|n| n.boot_param()),
            Ok(Some("ether=0,0x280,eth0".into()))
        );
        assert_eq!(
            Nic::parse("wd:io=0x280,irq=3,mem=0xd0000").map(|n| n.boot_param()),
            Ok(Some("ether=3,0x280,0xd0000,0,eth0".into()))
        );
        assert_eq!(Nic::parse("3c509"), Ok(Nic::El3));
        for bad in [
            "ne2000:io=0x400",
            "ne2000:irq=16",
            "ne2000:irq=9",
            "3c509:io=0x300",
            "pci:mem=0xd0000",
            "tulip",
            "ne2000:io",
        ] {
            assert!(Nic::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn ipxe_and_kernel_floppies_take_their_own_inputs() {
        let opts = |nic: Nic, kernel: Option<&str>, ipxe: Option<&str>| FloppyOptions {
            out: "x.img".into(),
            nic,
            kernel: kernel.map(PathBuf::from),
            busybox: None,
            ipxe: ipxe.map(PathBuf::from),
            initrd: Stage1Format::Auto,
            append: None,
        };
        let msg = |o: FloppyOptions| contents(&o).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(opts(Nic::Pci, Some("k"), None)).contains("--kernel and --busybox do not apply"));
        assert!(msg(opts(Nic::Auto, None, Some("ipxe.lkrn"))).contains("--ipxe is only for --nic pci"));
        assert!(msg(opts(Nic::Auto, Some("/nonexistent/bzImage"), None)).contains("/nonexistent/bzImage"));
    }

    #[test]
    fn fixes_fat_directory_times() {
        let mut img = vec![0u8; 64 * 512];
        img[11..13].copy_from_slice(&512u16.to_le_bytes());
        img[14..16].copy_from_slice(&1u16.to_le_bytes());
        img[16] = 2;
        img[17..19].copy_from_slice(&16u16.to_le_bytes());
        img[22..24].copy_from_slice(&9u16.to_le_bytes());
        let root = 19 * 512;
        img[root..root + 11].copy_from_slice(b"LDLINUX SYS");
        img[root + 14..root + 26].fill(0x77);
        fix_fat_times(&mut img).expect("fat");
        assert_eq!(&img[root + 22..root + 26], &[0, 0, 33, 0]);
        assert_eq!(&img[root + 20..root + 22], &[0x77, 0x77], "the cluster-high field is not a time");
        assert!(fix_fat_times(&mut [0u8; 10]).is_err());
    }
}

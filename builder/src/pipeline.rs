//! `mosboot build`: config + plan + inputs -> the output tree, reproducibly and atomically.
//!
//! [`prepare`] reads and checks every input and renders every file in memory (so `check` can run
//! it and report all problems without writing anything); [`write_tree`] writes the prepared
//! files into a temporary folder beside the output and swaps it into place, so a failed build
//! never leaves a half-written tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use netboot::dhcp::BootFiles;
use node_image::bzimage;
use node_image::{InitrdKind, KernelInfo};
use sha2::{Digest, Sha256};

use crate::config::{Config, InitrdChoice};
use crate::diag::Diagnostics;
use crate::error::Failure;
use crate::manifest::{FileEntry, Manifest};
use crate::plan::Plan;
use crate::render::{self, BootCtx, BootSource, ImageCtx, Templates};
use crate::root::{self, RootInputs};

/// Where Debian's pxelinux and syslinux-common put the BIOS PXE loader and its library.
const PXELINUX_SEARCH: &[&str] = &["/usr/lib/PXELINUX/pxelinux.0", "/usr/share/syslinux/pxelinux.0"];
const LDLINUX_SEARCH: &[&str] =
    &["/usr/lib/syslinux/modules/bios/ldlinux.c32", "/usr/share/syslinux/ldlinux.c32"];

/// Where the boot files go in the output tree: the folder `serve` (or a site's TFTP server)
/// serves.
pub const TFTP_DIR: &str = "tftpboot";
/// The kernel and initrd in [`TFTP_DIR`], as the boot-loader configs name them.
pub const KERNEL_FILE: &str = "vmlinuz";
pub const INITRD_FILE: &str = "initrd.gz";
/// The library pxelinux.0 loads from its own folder (syslinux 5+).
pub const LDLINUX_FILE: &str = "ldlinux.c32";

/// `tftpboot/<name>`: a path of the output tree inside [`TFTP_DIR`].
fn in_tftp(name: &str) -> String {
    format!("{TFTP_DIR}/{name}")
}

/// The boot-loader facts for the templates: the names above, the kernel command line and where
/// boot.ipxe fetches the kernel and initrd from.
fn boot_ctx(cfg: &Config, plan: &Plan, append: String) -> BootCtx {
    BootCtx {
        kernel: KERNEL_FILE.into(),
        initrd: INITRD_FILE.into(),
        append,
        sources: boot_sources(cfg, plan),
    }
}

/// The one place that decides where iPXE nodes fetch the kernel and initrd, in the order boot.ipxe
/// tries them; plain TFTP relative to the script is always last, the path every node can take.
/// A new transport is one more entry.
pub fn boot_sources(cfg: &Config, plan: &Plan) -> Vec<BootSource> {
    let mut sources = Vec::new();
    // A site's own web server first: it is there because one boot server was not enough.
    if let Some(url) = &cfg.serve.http_url {
        sources.push(BootSource::both(url.clone()));
    }
    // Multicast next: one copy of the kernel for every node booting at once. PXE MTFTP, the
    // multicast iPXE can receive, for the kernel only: iPXE listens on one fixed group for
    // every MTFTP file, so the initrd (fetched while other nodes may still take the kernel)
    // comes by TFTP. Should MTFTP fail, iPXE falls back to TFTP itself, and then this list.
    if cfg.serve.multicast.is_some() {
        sources.push(BootSource {
            kernel: format!("mtftp://{}/", plan.server),
            initrd: String::new(),
            name: "multicast (kernel by PXE MTFTP, initrd by TFTP)".into(),
        });
    }
    if let Some(addr) = cfg.serve.http {
        let ip = if addr.ip().is_unspecified() { plan.server } else { *addr.ip() };
        sources.push(BootSource::both(match addr.port() {
            80 => format!("http://{ip}/"),
            port => format!("http://{ip}:{port}/"),
        }));
    }
    sources.push(BootSource::both(String::new()));
    sources
}

/// The initrd format a build makes: the config's choice, or for `auto` what the kernel can boot
/// (node-image decides that from the release).
pub fn initrd_format(choice: InitrdChoice, kernel: Option<&KernelInfo>) -> InitrdKind {
    match choice {
        InitrdChoice::Cpio => InitrdKind::Cpio,
        InitrdChoice::Ext2 => InitrdKind::Ext2,
        InitrdChoice::Auto => kernel.map(KernelInfo::initrd_kind).unwrap_or(InitrdKind::Cpio),
    }
}

/// The program the kernel starts: `/init` in an initramfs, `/linuxrc` on a 2.4 ramdisk root.
pub fn init_path(format: InitrdKind) -> &'static str {
    match format {
        InitrdKind::Cpio => "/init",
        InitrdKind::Ext2 => "/linuxrc",
    }
}

fn ser_kind<S: serde::Serializer>(kind: &InitrdKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

/// A fully prepared build: every output file's bytes, by path relative to the output root.
pub struct Prepared {
    pub files: BTreeMap<String, (Vec<u8>, u32)>,
    pub manifest: Manifest,
    pub summary: Summary,
}

/// What `build` prints when it is done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub nodes_in_map: usize,
    pub map_lines: usize,
    pub kernel_release: String,
    #[serde(serialize_with = "ser_kind")]
    pub initrd_format: InitrdKind,
    pub initrd_bytes: usize,
    pub initrd_uncompressed_bytes: usize,
    pub kernel_bytes: usize,
    pub root_files: usize,
}

fn first_existing(list: &[&str]) -> Option<PathBuf> {
    list.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// Reads an input file, recording a problem under `key` when it cannot be read.
fn read_input(cfg: &Config, key: &str, path: &Path, d: &mut Diagnostics) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(b) => Some(b),
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist".to_string()
            } else {
                e.to_string()
            };
            d.push(&cfg.path, cfg.line_of(key), key, format!("{}: {why}", path.display()));
            None
        }
    }
}

/// Options a command line may add on top of the config.
#[derive(Default, Clone)]
pub struct BuildOptions {
    /// Replaces `[image] templates`.
    pub templates: Option<PathBuf>,
}

/// The inputs of a build, read and checked. A field is `None` when its input is unusable (the
/// problem is in the diagnostics).
pub struct Inputs {
    pub kernel: Option<Vec<u8>>,
    pub kinfo: Option<bzimage::KernelInfo>,
    pub busybox: Option<Vec<u8>>,
    /// (display name, bytes): modules first, then userland in config order.
    pub tarballs: Vec<(String, Vec<u8>)>,
    pub templates: Option<Templates>,
    pub pxelinux: Option<PathBuf>,
    pub ldlinux: Option<PathBuf>,
    /// For the manifest.
    pub entries: Vec<FileEntry>,
}

/// Reads and checks every input that does not need the plan: kernel, busybox, tarballs,
/// overlay, templates, the PXE loader. Shared by `build` and `check`.
pub fn read_inputs(cfg: &Config, opts: &BuildOptions, d: &mut Diagnostics) -> Inputs {
    let img = &cfg.image;
    let mut inputs: Vec<FileEntry> = Vec::new();
    let base = cfg.path.parent().unwrap_or(Path::new("."));
    let mut note_input = |role: &str, path: &Path, bytes: &[u8]| {
        inputs.push(FileEntry::of(role, &display_rel(base, path), bytes));
    };

    // Kernel: must be a bzImage; its release picks the initrd format.
    let kernel = read_input(cfg, "image.kernel", &img.kernel, d);
    let kinfo = kernel.as_ref().and_then(|k| match bzimage::inspect(k) {
        Ok(info) => Some(info),
        Err(e) => {
            d.push(
                &cfg.path,
                cfg.line_of("image.kernel"),
                "image.kernel",
                format!("{}: {e}", img.kernel.display()),
            );
            None
        }
    });
    if let Some(k) = &kernel {
        note_input("kernel", &img.kernel, k);
    }

    let busybox = read_input(cfg, "image.busybox", &img.busybox, d);
    if let Some(b) = &busybox {
        if let Err(e) = node_image::elf::check_static_i386_named("busybox", b) {
            d.push(
                &cfg.path,
                cfg.line_of("image.busybox"),
                "image.busybox",
                format!("{}: {e}", img.busybox.display()),
            );
        }
        note_input("busybox", &img.busybox, b);
    }

    let mut tarballs = Vec::new();
    if let Some(m) = &img.modules
        && let Some(b) = read_input(cfg, "image.modules", m, d)
    {
        note_input("modules", m, &b);
        tarballs.push((m.display().to_string(), b));
    }
    for u in &img.userland {
        if let Some(b) = read_input(cfg, "image.userland", u, d) {
            note_input("userland", u, &b);
            tarballs.push((u.display().to_string(), b));
        }
    }
    if let Some(o) = &img.overlay
        && !o.is_dir()
    {
        d.push(
            &cfg.path,
            cfg.line_of("image.overlay"),
            "image.overlay",
            format!("{} is not a folder", o.display()),
        );
    }
    let pxelinux = first_existing(PXELINUX_SEARCH);
    let ldlinux = first_existing(LDLINUX_SEARCH);
    if pxelinux.is_none() || ldlinux.is_none() {
        d.push(
            Path::new("/usr/lib/PXELINUX"),
            0,
            "",
            "pxelinux.0 or ldlinux.c32 not found: install Debian's pxelinux and syslinux-common packages",
        );
    }

    let tpl_dir = opts.templates.clone().or_else(|| img.templates.clone());
    let templates = match Templates::load(tpl_dir.as_deref(), &cfg.path, cfg.line_of("image.templates")) {
        Ok(t) => Some(t),
        Err(e) => {
            d.extend(e);
            None
        }
    };

    Inputs { kernel, kinfo, busybox, tarballs, templates, pxelinux, ldlinux, entries: inputs }
}

/// Reads every input, checks it, and renders every output in memory. All problems come back at
/// once.
pub fn prepare(cfg: &Config, plan: &Plan, opts: &BuildOptions) -> Result<Prepared, Diagnostics> {
    let mut d = Diagnostics::default();
    let img = &cfg.image;
    let Inputs { kernel, kinfo, busybox, tarballs, templates, pxelinux, ldlinux, entries: mut inputs } =
        read_inputs(cfg, opts, &mut d);

    let format = initrd_format(img.initrd, kinfo.as_ref());
    let init_path = init_path(format);
    let image_ctx = ImageCtx {
        initrd_format: format.name().into(),
        init_path: init_path.into(),
        kernel_release: kinfo.as_ref().map(|k| k.release.clone()).unwrap_or_default(),
    };
    let (Some(templates), Some(busybox), Some(kernel), Some(kinfo)) = (templates, busybox, kernel, kinfo)
    else {
        return Err(d);
    };
    if !d.is_empty() {
        // Still render, to report template problems in the same run.
        let ctx = render::context(cfg, plan, &image_ctx, &boot_ctx(cfg, plan, String::new()));
        for name in templates.names().map(str::to_string).collect::<Vec<_>>() {
            if let Err(e) = templates.render(&name, &ctx) {
                d.extend(e);
            }
        }
        return Err(d);
    }

    // The node root does not depend on the boot line, so render it with an empty one first.
    let ctx = render::context(cfg, plan, &image_ctx, &boot_ctx(cfg, plan, String::new()));
    let map_files = render::map_files(cfg.openmosix.version_parts);
    let root_inputs = RootInputs {
        busybox: &busybox,
        tarballs,
        overlay: img.overlay.as_deref(),
        init_path,
        map_files: &map_files,
        mfs: cfg.openmosix.mfs,
    };
    let tree = root::assemble(&templates, &ctx, &root_inputs)?;

    let (raw, ramdisk_kib) = if format == InitrdKind::Cpio {
        let mut buf = Vec::new();
        if let Err(e) = node_image::cpio::write_newc(&tree, &mut buf) {
            d.push(Path::new("initrd"), 0, "", format!("cannot write the cpio archive: {e}"));
            return Err(d);
        }
        (buf, None)
    } else {
        let opts = node_image::ext2::Ext2Options::default();
        match node_image::ext2::write_ext2(&tree, &opts) {
            Ok(img) => {
                let kib = img.len().div_ceil(1024);
                (img, Some(kib))
            }
            Err(e) => {
                d.push(Path::new("initrd"), 0, "", format!("cannot write the ext2 image: {e}"));
                return Err(d);
            }
        }
    };
    let initrd = node_image::gzip::gzip_deterministic(&raw, 9);

    let mut append = vec!["console=tty0".to_string(), "console=ttyS0,115200n8".to_string()];
    if let Some(kib) = ramdisk_kib {
        append.push("root=/dev/ram0".into());
        append.push(format!("init={init_path}"));
        append.push("rw".into());
        append.push(format!("ramdisk_size={}", kib.max(4096)));
    }
    if !img.cmdline.trim().is_empty() {
        append.push(img.cmdline.trim().to_string());
    }
    let ctx = render::context(cfg, plan, &image_ctx, &boot_ctx(cfg, plan, append.join(" ")));

    let mut files: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    fn put(files: &mut BTreeMap<String, (Vec<u8>, u32)>, path: &str, bytes: Vec<u8>, mode: u32) {
        files.insert(path.to_string(), (bytes, mode));
    }
    let served = BootFiles::default();
    for (tpl, dest) in [
        ("boot/pxelinux.cfg", in_tftp("pxelinux.cfg/default")),
        ("boot/boot.ipxe", in_tftp(&served.ipxe)),
        ("server/hosts-block", "server/hosts-block".into()),
        ("server/NOTES", "server/NOTES".into()),
    ] {
        match templates.render(tpl, &ctx) {
            Ok(s) => put(&mut files, &dest, s.into_bytes(), 0o644),
            Err(e) => d.extend(e),
        }
    }
    match templates.render("node/openmosix.map", &ctx) {
        Ok(s) => {
            for f in &map_files {
                let name = f.rsplit('/').next().unwrap_or(f);
                put(&mut files, &format!("server/{name}"), s.clone().into_bytes(), 0o644);
            }
        }
        Err(e) => d.extend(e),
    }
    if !d.is_empty() {
        return Err(d);
    }
    let kernel_len = kernel.len();
    put(&mut files, &in_tftp(KERNEL_FILE), kernel, 0o644);
    let initrd_len = initrd.len();
    put(&mut files, &in_tftp(INITRD_FILE), initrd, 0o644);
    for (src, dest) in [(pxelinux, in_tftp(&served.pxe)), (ldlinux, in_tftp(LDLINUX_FILE))] {
        if let Some(src) = src {
            match std::fs::read(&src) {
                Ok(b) => {
                    inputs.push(FileEntry::of("bootloader", &src.display().to_string(), &b));
                    put(&mut files, &dest, b, 0o644);
                }
                Err(e) => d.push(&src, 0, "", format!("cannot read: {e}")),
            }
        }
    }
    if !d.is_empty() {
        return Err(d);
    }

    let summary = Summary {
        nodes_in_map: plan.node_count(),
        map_lines: plan.map.len(),
        kernel_release: kinfo.release.clone(),
        initrd_format: format,
        initrd_bytes: initrd_len,
        initrd_uncompressed_bytes: raw.len(),
        kernel_bytes: kernel_len,
        root_files: tree.len(),
    };
    let outputs = files.iter().map(|(p, (b, _))| FileEntry::of("output", p, b)).collect();
    let manifest = Manifest::new(plan, inputs, outputs, &summary);
    match manifest.to_json() {
        Ok(json) => put(&mut files, "manifest.json", json.into_bytes(), 0o644),
        Err(e) => {
            d.push(Path::new("manifest.json"), 0, "", e.to_string());
            return Err(d);
        }
    }
    Ok(Prepared { files, manifest, summary })
}

/// Shows an input path relative to the config's folder when it lies below it, so the manifest
/// does not change when the whole project folder moves.
fn display_rel(base: &Path, p: &Path) -> String {
    p.strip_prefix(base).unwrap_or(p).display().to_string()
}

/// Writes the prepared files into `<out>.tmp-<pid>` and swaps that folder into place.
pub fn write_tree(prep: &Prepared, out: &Path) -> Result<(), Failure> {
    let out = if out.is_absolute() {
        out.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| Failure::runtime("find the current folder", e))?.join(out)
    };
    let parent = out.parent().unwrap_or(Path::new("/")).to_path_buf();
    std::fs::create_dir_all(&parent)
        .map_err(|e| Failure::runtime(format!("create {}", parent.display()), e))?;
    let name =
        out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "mosboot-out".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = write_files(prep, &tmp).and_then(|()| swap_into_place(&tmp, &out));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn write_files(prep: &Prepared, dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(dir);
    for (rel, (bytes, mode)) in &prep.files {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|e| Failure::runtime(format!("create {}", p.display()), e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Failure::runtime(format!("write {}", path.display()), e))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| Failure::runtime(format!("set the mode of {}", path.display()), e))?;
    }
    // Flush the new tree before it replaces the old one: a crash must not leave empty files.
    for rel in prep.files.keys() {
        if let Ok(f) = std::fs::File::open(dir.join(rel)) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}

/// Atomically exchanges the new tree with the old one (renameat2 RENAME_EXCHANGE), then deletes
/// the old one; a first build is a plain rename.
fn swap_into_place(tmp: &Path, out: &Path) -> Result<(), Failure> {
    if out.exists() {
        if !out.is_dir() {
            return Err(Failure::Usage(format!(
                "{} exists and is not a folder; move it away or choose another --out",
                out.display()
            )));
        }
        nix::fcntl::renameat2(None, tmp, None, out, nix::fcntl::RenameFlags::RENAME_EXCHANGE)
            .map_err(|e| Failure::runtime(format!("swap the new tree into {}", out.display()), e))?;
        std::fs::remove_dir_all(tmp)
            .map_err(|e| Failure::runtime(format!("remove the old tree (now at {})", tmp.display()), e))?;
    } else {
        std::fs::rename(tmp, out)
            .map_err(|e| Failure::runtime(format!("move the new tree to {}", out.display()), e))?;
    }
    Ok(())
}

/// sha256 of bytes, hex.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_format_follows_the_choice_then_the_kernel() {
        let kernel = |major, minor| KernelInfo {
            protocol: (2, 3),
            release: format!("{major}.{minor}.0"),
            version_string: String::new(),
            major,
            minor,
        };
        let (k24, k26) = (kernel(2, 4), kernel(2, 6));
        assert_eq!(initrd_format(InitrdChoice::Auto, Some(&k24)), InitrdKind::Ext2);
        assert_eq!(initrd_format(InitrdChoice::Auto, Some(&k26)), InitrdKind::Cpio);
        assert_eq!(initrd_format(InitrdChoice::Auto, None), InitrdKind::Cpio);
        assert_eq!(initrd_format(InitrdChoice::Cpio, Some(&k24)), InitrdKind::Cpio);
        assert_eq!(initrd_format(InitrdChoice::Ext2, Some(&k26)), InitrdKind::Ext2);
        assert_eq!((init_path(InitrdKind::Cpio), init_path(InitrdKind::Ext2)), ("/init", "/linuxrc"));
        assert_eq!(in_tftp(KERNEL_FILE), "tftpboot/vmlinuz");
    }
}

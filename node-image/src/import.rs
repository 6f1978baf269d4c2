//! Layers that fill a [`Tree`]: tarballs (userland, modules) and the admin's overlay directory.
//!
//! Nothing is ever extracted to the host, but a tarball entry that would land outside the root
//! (absolute name, `..`, a link that climbs above `/`) still means the tarball was not built for
//! a node root, so it is refused with the tarball and entry named rather than silently mangled.
//!
//! Tarballs come from elsewhere (openMosix tools, modules), so they get no privileges the admin
//! did not grant: setuid/setgid bits are cleared and device nodes dropped (each with a warning;
//! mosboot makes the node's /dev itself), and what a tarball may expand to is bounded, so a gzip
//! or sparse bomb is an error instead of filling the build server's memory.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use tracing::{debug, warn};

use crate::error::ImageError;
use crate::tree::{Entry, EntryKind, Tree, link_escapes_root, normalize_path, parent_of};

/// Most content bytes one tarball may expand to (node roots live in 8-64 MB of RAM).
pub const MAX_TAR_CONTENT: u64 = 1 << 30;
/// Most bytes the decompressed tar stream may have (content plus headers and padding).
const MAX_TAR_STREAM: u64 = MAX_TAR_CONTENT + (256 << 20);

/// What one layer contributed, for the build summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub hard_links: usize,
    pub devices: usize,
    /// Entries ignored with a warning (fifos, sockets, device nodes, unknown tar types).
    pub skipped: usize,
    /// Files whose setuid/setgid bits were cleared (with a warning).
    pub setid_cleared: usize,
    /// Bytes of regular file content added.
    pub bytes: u64,
}

/// Linux `dev_t` split, as glibc's `gnu_dev_major`/`gnu_dev_minor` do it.
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

impl Tree {
    /// Unpacks a tar or tar.gz (detected by the gzip magic `1f 8b`) over the tree.
    /// `source_name` names the tarball in errors. Owners and modes come from the tar headers.
    /// The archive's own root entry ("./") is not applied: a tarball made from a private
    /// temp dir would otherwise turn the node root into mode 0700.
    pub fn import_tar<R: Read>(&mut self, reader: R, source_name: &str) -> Result<ImportStats, ImageError> {
        let mut buffered = BufReader::new(reader);
        let head = buffered
            .fill_buf()
            .map_err(|source| ImageError::TarRead { tarball: source_name.to_string(), source })?;
        if head.starts_with(&[0x1f, 0x8b]) {
            self.import_plain_tar(Bounded::new(MultiGzDecoder::new(buffered)), source_name)
        } else {
            self.import_plain_tar(Bounded::new(buffered), source_name)
        }
    }

    fn import_plain_tar<R: Read>(&mut self, reader: R, tarball: &str) -> Result<ImportStats, ImageError> {
        let read_err = |source| ImageError::TarRead { tarball: tarball.to_string(), source };
        let mut archive = tar::Archive::new(reader);
        let mut stats = ImportStats::default();
        for item in archive.entries().map_err(read_err)? {
            let mut entry = item.map_err(read_err)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let entry_err = |reason: String| ImageError::TarEntry {
                tarball: tarball.to_string(),
                entry: raw.clone(),
                reason,
            };
            let escape = |detail: &str| ImageError::TarEscape {
                tarball: tarball.to_string(),
                entry: raw.clone(),
                detail: detail.to_string(),
            };
            if std::str::from_utf8(&entry.path_bytes()).is_err() {
                return Err(entry_err("name is not valid UTF-8".to_string()));
            }
            let path = checked_member_path(&raw).map_err(|detail| escape(&detail))?;
            let header = entry.header();
            let mut mode = header.mode().map_err(read_err)? & 0o7777;
            if mode & 0o6000 != 0
                && matches!(
                    header.entry_type(),
                    tar::EntryType::Regular
                        | tar::EntryType::Continuous
                        | tar::EntryType::GNUSparse
                        | tar::EntryType::Link
                )
            {
                warn!(tarball, entry = %raw, mode = format!("{mode:o}"), "clearing setuid/setgid bits of a tarball file");
                mode &= !0o6000;
                stats.setid_cleared += 1;
            }
            let uid = owner_id(header.uid().map_err(read_err)?).map_err(&entry_err)?;
            let gid = owner_id(header.gid().map_err(read_err)?).map_err(&entry_err)?;
            let kind = header.entry_type();
            let make = |kind: EntryKind| Entry { kind, mode, uid, gid };

            let new_entry = match kind {
                tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                    // The header's size is the expanded size (sparse holes included).
                    let size = entry.size();
                    if stats.bytes.saturating_add(size) > MAX_TAR_CONTENT {
                        return Err(entry_err(format!(
                            "expands beyond {} MiB of content: not a node root",
                            MAX_TAR_CONTENT >> 20
                        )));
                    }
                    let mut data = Vec::new();
                    (&mut entry).take(size).read_to_end(&mut data).map_err(read_err)?;
                    stats.files += 1;
                    stats.bytes += data.len() as u64;
                    make(EntryKind::File(data))
                }
                tar::EntryType::Directory => {
                    stats.dirs += 1;
                    if path.is_empty() {
                        debug!(tarball, "not applying the archive's own root entry");
                        continue;
                    }
                    make(EntryKind::Directory)
                }
                tar::EntryType::Symlink => {
                    let target = link_name(&entry).map_err(&entry_err)?;
                    if link_escapes_root(parent_of(&path), &target) {
                        return Err(escape(&format!(" (symlink to '{target}' points above the root)")));
                    }
                    stats.symlinks += 1;
                    Entry { mode: 0o777, ..make(EntryKind::Symlink(target)) }
                }
                tar::EntryType::Link => {
                    let target = link_name(&entry).map_err(&entry_err)?;
                    let target_path = checked_member_path(&target)
                        .map_err(|detail| escape(&format!(" (hard link to '{target}'{detail})")))?;
                    let Some(existing) = self.get(&target_path) else {
                        return Err(entry_err(format!(
                            "hard link to '{target}', which is not in the node root \
                             (neither earlier in this tarball nor in a previous layer)"
                        )));
                    };
                    if existing.is_dir() {
                        return Err(entry_err(format!("hard link to directory '{target}'")));
                    }
                    stats.hard_links += 1;
                    stats.bytes += existing.data_len() as u64;
                    if stats.bytes > MAX_TAR_CONTENT {
                        return Err(entry_err(format!(
                            "expands beyond {} MiB of content: not a node root",
                            MAX_TAR_CONTENT >> 20
                        )));
                    }
                    let existing = match &existing.kind {
                        EntryKind::File(_) => Entry { mode: existing.mode & !0o6000, ..existing.clone() },
                        _ => existing.clone(),
                    };
                    // A copy: both names keep the same content, which is all a RAM root needs.
                    existing
                }
                tar::EntryType::Char | tar::EntryType::Block => {
                    // A device node from a tarball could expose the node's disks or memory to
                    // whoever uses that root; /dev is mosboot's own.
                    warn!(tarball, entry = %raw, "dropping a device node from a tarball (mosboot makes /dev itself)");
                    stats.skipped += 1;
                    continue;
                }
                tar::EntryType::XGlobalHeader => {
                    // pax global headers (e.g. from `git archive`) carry metadata, not files.
                    debug!(tarball, entry = %raw, "skipping pax global header");
                    continue;
                }
                other => {
                    warn!(tarball, entry = %raw, kind = ?other, "skipping tar entry of this type");
                    stats.skipped += 1;
                    continue;
                }
            };
            self.insert(&path, new_entry).map_err(|e| entry_err(e.to_string()))?;
        }
        Ok(stats)
    }

    /// Copies a host directory over the tree (the admin's overlay, applied last). Symlinks are
    /// copied as links, device nodes by their numbers, owners forced to root (the admin's files
    /// belong to the admin on the host, but to root on the node); fifos and sockets are skipped.
    pub fn import_dir(&mut self, dir: &Path) -> Result<ImportStats, ImageError> {
        let meta = fs::metadata(dir).map_err(|source| ImageError::Io { path: dir.to_path_buf(), source })?;
        if !meta.is_dir() {
            return Err(ImageError::Overlay {
                path: dir.to_path_buf(),
                reason: "is not a directory".to_string(),
            });
        }
        let mut stats = ImportStats::default();
        self.import_dir_rec(dir, "", &mut stats)?;
        Ok(stats)
    }

    fn import_dir_rec(
        &mut self,
        host_dir: &Path,
        node_dir: &str,
        stats: &mut ImportStats,
    ) -> Result<(), ImageError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageError::Io { path, source }
        };
        let mut names = Vec::new();
        for item in fs::read_dir(host_dir).map_err(io_err(host_dir))? {
            names.push(item.map_err(io_err(host_dir))?.file_name());
        }
        names.sort();
        for name in names {
            let host_path = host_dir.join(&name);
            let Some(name) = name.to_str() else {
                return Err(ImageError::Overlay {
                    path: host_path,
                    reason: "file name is not valid UTF-8".to_string(),
                });
            };
            let node_path = if node_dir.is_empty() { name.to_string() } else { format!("{node_dir}/{name}") };
            let meta = fs::symlink_metadata(&host_path).map_err(io_err(&host_path))?;
            let mode = meta.permissions().mode() & 0o7777;
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stats.dirs += 1;
                EntryKind::Directory
            } else if ft.is_file() {
                let data = read_plain_file(&host_path).map_err(io_err(&host_path))?;
                stats.files += 1;
                stats.bytes += data.len() as u64;
                EntryKind::File(data)
            } else if ft.is_symlink() {
                let target = fs::read_link(&host_path).map_err(io_err(&host_path))?;
                let Some(target) = target.to_str().map(str::to_string) else {
                    return Err(ImageError::Overlay {
                        path: host_path,
                        reason: "symlink target is not valid UTF-8".to_string(),
                    });
                };
                if link_escapes_root(node_dir, &target) {
                    return Err(ImageError::Overlay {
                        path: host_path,
                        reason: format!("symlink to '{target}' points above the node root"),
                    });
                }
                stats.symlinks += 1;
                EntryKind::Symlink(target)
            } else if ft.is_char_device() || ft.is_block_device() {
                let (major, minor) = split_dev(meta.rdev());
                stats.devices += 1;
                if ft.is_char_device() {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            } else {
                warn!(path = %host_path.display(), "skipping fifo or socket in the overlay");
                stats.skipped += 1;
                continue;
            };
            let is_dir = matches!(kind, EntryKind::Directory);
            let mode = if matches!(kind, EntryKind::Symlink(_)) { 0o777 } else { mode };
            self.insert(&node_path, Entry { kind, mode, uid: 0, gid: 0 })
                .map_err(|e| ImageError::Overlay { path: host_path.clone(), reason: e.to_string() })?;
            if is_dir {
                self.import_dir_rec(&host_path, &node_path, stats)?;
            }
        }
        Ok(())
    }
}

/// Reads a file that `symlink_metadata` called regular, opening it once without following a
/// symlink and checking the opened file, so a swap between the check and the read is refused
/// instead of reading whatever the name points to now.
fn read_plain_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("changed while being read (no longer a regular file)"));
    }
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(data)
}

/// A reader that fails once more than [`MAX_TAR_STREAM`] bytes came through (gzip bombs).
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R> Bounded<R> {
    fn new(inner: R) -> Self {
        Bounded { inner, left: MAX_TAR_STREAM }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| std::io::Error::other(format!("expands beyond {} MiB", MAX_TAR_STREAM >> 20)))?;
        Ok(n)
    }
}

/// Validates a tar member name (or hard-link target) and returns it normalized.
/// Err carries the detail appended to "escapes the node root".
fn checked_member_path(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err(" (absolute path)".to_string());
    }
    if raw.split('/').any(|c| c == "..") {
        return Err(" ('..' component)".to_string());
    }
    if raw.contains('\0') {
        return Err(" (NUL in name)".to_string());
    }
    // "./" and "." name the archive root.
    if raw.split('/').all(|c| c.is_empty() || c == ".") {
        return Ok(String::new());
    }
    normalize_path(raw).map_err(|e| format!(" ({e})"))
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, String> {
    match entry.link_name_bytes() {
        Some(bytes) if !bytes.is_empty() => {
            String::from_utf8(bytes.into_owned()).map_err(|_| "link target is not valid UTF-8".to_string())
        }
        _ => Err("link without a target".to_string()),
    }
}

fn owner_id(id: u64) -> Result<u32, String> {
    u32::try_from(id).map_err(|_| format!("owner id {id} does not fit in 32 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a tar whose names are written raw into the header, because the tar crate's
    /// safe setters refuse "..", which is exactly what these tests need to produce.
    fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(data.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn import(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Result<Tree, ImageError> {
        let mut t = Tree::new();
        t.import_tar(&raw_tar(entries)[..], "userland.tar.gz")?;
        Ok(t)
    }

    use tar::EntryType as T;

    #[test]
    fn refuses_dotdot_entry_naming_tarball_and_entry() {
        let err = import(&[("../../etc/passwd", T::Regular, "", b"root::0:0")]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("tarball userland.tar.gz: entry '../../etc/passwd' escapes the node root"),
            "{msg}"
        );
        let err = import(&[("ok/../../x", T::Regular, "", b"")]).unwrap_err();
        assert!(err.to_string().contains("'ok/../../x' escapes"));
    }

    #[test]
    fn refuses_absolute_entry() {
        let err = import(&[("/etc/passwd", T::Regular, "", b"x")]).unwrap_err();
        assert!(err.to_string().contains("entry '/etc/passwd' escapes the node root (absolute path)"));
    }

    #[test]
    fn refuses_escaping_symlink_but_accepts_absolute_target() {
        let err = import(&[("usr/lib/x", T::Symlink, "../../../etc", b"")]).unwrap_err();
        assert!(
            err.to_string().contains("entry 'usr/lib/x' escapes the node root (symlink to '../../../etc'")
        );
        let t = import(&[
            ("bin/sh", T::Symlink, "/bin/busybox", b""),
            ("usr/bin/env", T::Symlink, "../../bin/busybox", b""),
        ])
        .unwrap();
        assert_eq!(t.get("bin/sh").unwrap().kind, EntryKind::Symlink("/bin/busybox".into()));
    }

    #[test]
    fn hard_links_copy_content_and_refuse_outside_or_missing() {
        let t = import(&[("bin/busybox", T::Regular, "", b"ELF"), ("bin/sh", T::Link, "bin/busybox", b"")])
            .unwrap();
        assert_eq!(t.get("bin/sh").unwrap().kind, EntryKind::File(b"ELF".to_vec()));
        let err = import(&[("x", T::Link, "../etc/shadow", b"")]).unwrap_err();
        assert!(err.to_string().contains("entry 'x' escapes the node root (hard link to '../etc/shadow'"));
        let err = import(&[("x", T::Link, "/etc/shadow", b"")]).unwrap_err();
        assert!(err.to_string().contains("escapes"));
        let err = import(&[("x", T::Link, "nope", b"")]).unwrap_err();
        assert!(err.to_string().contains("hard link to 'nope', which is not in the node root"));
    }

    fn header() -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h
    }

    #[test]
    fn imports_gzip_devices_and_skips_fifos() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header();
        h.set_entry_type(T::Char);
        h.set_mode(0o600);
        h.set_size(0);
        h.set_device_major(5).unwrap();
        h.set_device_minor(1).unwrap();
        b.append_data(&mut h, "./dev/console", &[][..]).unwrap();
        let mut h = header();
        h.set_entry_type(T::Fifo);
        h.set_size(0);
        b.append_data(&mut h, "./dev/fifo", &[][..]).unwrap();
        let mut h = header();
        h.set_entry_type(T::Directory);
        h.set_mode(0o700);
        h.set_size(0);
        b.append_data(&mut h, "./", &[][..]).unwrap();
        let plain = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut t = Tree::new();
        let stats = t.import_tar(&gz[..], "dev.tar.gz").unwrap();
        assert_eq!((stats.devices, stats.skipped), (0, 2), "device node and fifo dropped");
        assert!(t.get("/dev/console").is_none());
        assert!(t.get("dev/fifo").is_none());
        assert_eq!(t.get("/").unwrap().mode, 0o755, "archive root mode not applied");
    }

    #[test]
    fn setuid_bits_are_cleared_and_bombs_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header();
        h.set_mode(0o4755);
        h.set_size(3);
        b.append_data(&mut h, "bin/su", &b"ELF"[..]).unwrap();
        let mut h = header();
        h.set_entry_type(T::Link);
        h.set_size(0);
        b.append_link(&mut h, "bin/su2", "bin/su").unwrap();
        let mut t = Tree::new();
        let stats = t.import_tar(&b.into_inner().unwrap()[..], "u.tar").unwrap();
        assert_eq!(stats.setid_cleared, 1);
        assert_eq!(t.get("bin/su").unwrap().mode, 0o755);
        assert_eq!(t.get("bin/su2").unwrap().mode, 0o755);
        // A header claiming more than the limit (a sparse or gzip bomb) is refused up front.
        let mut h = header();
        h.set_path("big").unwrap();
        h.set_size(MAX_TAR_CONTENT + 1);
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.resize(data.len() + 4096, 0);
        let err = Tree::new().import_tar(&data[..], "bomb.tar").unwrap_err();
        assert!(err.to_string().contains("expands beyond"), "{err}");
    }

    #[test]
    fn truncated_tarball_is_an_error_naming_it() {
        let mut data = raw_tar(&[("a", T::Regular, "", &[7u8; 2000])]);
        data.truncate(1000);
        let mut t = Tree::new();
        let err = t.import_tar(&data[..], "mods.tar").unwrap_err();
        assert!(err.to_string().starts_with("tarball mods.tar:"), "{err}");
    }

    #[test]
    fn imports_overlay_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc/init.d")).unwrap();
        fs::write(dir.path().join("etc/motd"), b"hello").unwrap();
        fs::set_permissions(dir.path().join("etc/motd"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", dir.path().join("etc/init.d/rc")).unwrap();
        let mut t = Tree::new();
        t.add_file("etc/motd", 0o644, b"old".to_vec()).unwrap();
        let stats = t.import_dir(dir.path()).unwrap();
        assert_eq!((stats.files, stats.dirs, stats.symlinks), (1, 2, 1));
        let motd = t.get("etc/motd").unwrap();
        assert_eq!((motd.mode, motd.uid), (0o640, 0));
        assert_eq!(motd.kind, EntryKind::File(b"hello".to_vec()));
        assert_eq!(t.get("etc/init.d/rc").unwrap().kind, EntryKind::Symlink("/bin/busybox".into()));

        std::os::unix::fs::symlink("../../..", dir.path().join("etc/up")).unwrap();
        let err = Tree::new().import_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("points above the node root"), "{err}");
    }

    #[test]
    fn splits_linux_dev_t() {
        assert_eq!(split_dev(0x0501), (5, 1));
        assert_eq!(split_dev((259 << 8) | 3 | ((0x12300u64) << 12)), (259, 0x12303));
    }
}

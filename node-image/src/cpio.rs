//! SVR4 "newc" cpio, the only archive format a 2.6+ kernel unpacks as initramfs.
//!
//! Names are relative ("bin/sh"), the root is ".", as `find . | cpio -o -H newc` would write;
//! the kernel and GNU cpio both accept that. Inode numbers follow iteration order and every
//! timestamp is the tree's fixed mtime, so equal trees give equal bytes.
//!
//! Written here rather than with a cpio crate because reproducibility is the point: every header
//! field (inode number, mtime, owner, device numbers of the nodes, padding) must be a choice we
//! make and test, not a crate's default or a value taken from the host; the format itself is
//! 110 bytes of hex per entry plus 4-byte alignment.
//!
//! The caller must put `/dev/console` (char 5,1) into the tree: the kernel opens it before it
//! runs `/init`, and an initramfs without it leaves init with no stdin/stdout/stderr.

use std::io::Write;

use crate::error::ImageError;
use crate::tree::{EntryKind, Tree};

const MAGIC: &[u8] = b"070701";
const TRAILER: &str = "TRAILER!!!";

/// The 13 header fields after the magic, in on-disk order.
struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    filesize: u32,
    rdevmajor: u32,
    rdevminor: u32,
}

/// Writes the whole tree as one newc archive ending in the `TRAILER!!!` record.
pub fn write_newc<W: Write>(tree: &Tree, out: W) -> Result<(), ImageError> {
    let mut out = Counting { inner: out, written: 0 };
    let mtime = u32::try_from(tree.mtime()).map_err(|_| ImageError::Options {
        format: "cpio",
        reason: format!("mtime {} does not fit in 32 bits", tree.mtime()),
    })?;
    let subdirs = tree.subdir_counts();
    for (index, (path, entry)) in tree.iter().enumerate() {
        let name = if path.is_empty() { "." } else { path };
        let (rdevmajor, rdevminor) = match entry.kind {
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                (major, minor)
            }
            _ => (0, 0),
        };
        let nlink = if entry.is_dir() { 2 + subdirs.get(path).copied().unwrap_or(0) } else { 1 };
        let data: &[u8] = match &entry.kind {
            EntryKind::File(d) => d,
            EntryKind::Symlink(t) => t.as_bytes(),
            _ => &[],
        };
        let filesize = u32::try_from(data.len()).map_err(|_| ImageError::Unrepresentable {
            format: "cpio",
            path: path.to_string(),
            reason: "file is 4 GiB or larger".to_string(),
        })?;
        let header = Header {
            ino: index as u32 + 1,
            mode: entry.full_mode(),
            uid: entry.uid,
            gid: entry.gid,
            nlink,
            mtime,
            filesize,
            rdevmajor,
            rdevminor,
        };
        write_record(&mut out, &header, name, data)?;
    }
    let trailer = Header {
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        rdevmajor: 0,
        rdevminor: 0,
    };
    write_record(&mut out, &trailer, TRAILER, &[])?;
    out.inner.flush().map_err(write_err)
}

fn write_err(source: std::io::Error) -> ImageError {
    ImageError::Write { what: "cpio archive", source }
}

/// One record: 110-byte header, NUL-terminated name padded so the data starts on a 4-byte
/// boundary, then the data padded to 4 bytes.
fn write_record<W: Write>(
    out: &mut Counting<W>,
    h: &Header,
    name: &str,
    data: &[u8],
) -> Result<(), ImageError> {
    let namesize = name.len() as u32 + 1;
    let mut head = Vec::with_capacity(112 + name.len());
    head.extend_from_slice(MAGIC);
    for field in [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.filesize,
        0, // devmajor
        0, // devminor
        h.rdevmajor,
        h.rdevminor,
        namesize,
        0, // check
    ] {
        head.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    head.extend_from_slice(name.as_bytes());
    head.push(0);
    pad4(&mut head, out.written);
    out.write(&head)?;
    out.write(data)?;
    let mut tail = Vec::new();
    pad4(&mut tail, out.written);
    out.write(&tail)
}

fn pad4(buf: &mut Vec<u8>, already: u64) {
    while (already + buf.len() as u64) % 4 != 0 {
        buf.push(0);
    }
}

/// Tracks the absolute offset, since padding is relative to the start of the archive.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Counting<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), ImageError> {
        self.inner.write_all(bytes).map_err(write_err)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(field: &[u8]) -> u32 {
        u32::from_str_radix(std::str::from_utf8(field).unwrap(), 16).unwrap()
    }

    #[test]
    fn tiny_tree_exact_bytes() {
        let mut t = Tree::new();
        t.add_file("a", 0o644, b"hi!".to_vec()).unwrap();
        let mut out = Vec::new();
        write_newc(&t, &mut out).unwrap();
        // "." record: 110 + 2 ("." NUL) = 112, already aligned; no data.
        assert_eq!(&out[..6], b"070701");
        assert_eq!(hex(&out[6..14]), 1, "ino");
        assert_eq!(hex(&out[14..22]), 0o040755, "mode");
        assert_eq!(hex(&out[38..46]), 2, "nlink of root");
        assert_eq!(hex(&out[94..102]), 2, "namesize");
        assert_eq!(&out[110..112], b".\0");
        // "a" record at 112: 110 + 2 = 112 -> 224, data "hi!" + 1 pad -> 228.
        let a = &out[112..];
        assert_eq!(hex(&a[6..14]), 2);
        assert_eq!(hex(&a[14..22]), 0o100644);
        assert_eq!(hex(&a[54..62]), 3, "filesize");
        assert_eq!(&a[110..112], b"a\0");
        assert_eq!(&a[112..116], b"hi!\0");
        // Trailer at 228: name "TRAILER!!!" (11 with NUL) -> 121, padded to 124.
        let tr = &out[228..];
        assert_eq!(&tr[110..120], b"TRAILER!!!");
        assert_eq!(hex(&tr[94..102]), 11);
        assert_eq!(out.len(), 228 + 124);
        assert_eq!(out.len() % 4, 0);
    }

    #[test]
    fn devices_and_symlinks() {
        let mut t = Tree::new();
        t.add_char_device("dev/console", 0o600, 5, 1).unwrap();
        t.add_symlink("sh", "/bin/busybox").unwrap();
        let mut out = Vec::new();
        write_newc(&t, &mut out).unwrap();
        let text = out.clone();
        let pos = text.windows(12).position(|w| w == b"dev/console\0").unwrap();
        let h = &out[pos - 110..pos];
        assert_eq!(hex(&h[14..22]), 0o020600);
        assert_eq!((hex(&h[78..86]), hex(&h[86..94])), (5, 1));
        let pos = text.windows(3).position(|w| w == b"sh\0").unwrap();
        let h = &out[pos - 110..pos];
        assert_eq!(hex(&h[14..22]), 0o120777);
        assert_eq!(hex(&h[54..62]), 12);
    }
}

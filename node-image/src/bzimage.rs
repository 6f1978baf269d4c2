//! Reads the kernel release out of a bzImage, because the initrd format depends on it: 2.4 and
//! older have no initramfs and need a filesystem image (ext2), 2.6+ unpack a newc cpio.

use crate::error::ImageError;

const MAGIC_OFFSET: usize = 0x202;
const PROTOCOL_OFFSET: usize = 0x206;
const VERSION_PTR_OFFSET: usize = 0x20E;
/// The version pointer counts from the end of the 512-byte boot sector.
const VERSION_PTR_BASE: usize = 0x200;
/// Version strings are short; stop looking for the NUL after this many bytes.
const MAX_VERSION_LEN: usize = 512;

/// Which initrd a kernel can boot from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitrdKind {
    /// newc cpio (initramfs), 2.6 and later.
    Cpio,
    /// A filesystem image loaded into /dev/ram0, 2.4 and older.
    Ext2,
}

/// What the boot header says about a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// Boot protocol (major, minor), e.g. (2, 3) for 2.4-era kernels.
    pub protocol: (u8, u8),
    /// The first word of the version string, e.g. "2.4.26-om1".
    pub release: String,
    /// The whole version string, e.g. "2.4.26-om1 (root@build) #1 Sat ...".
    pub version_string: String,
    pub major: u32,
    pub minor: u32,
}

impl InitrdKind {
    /// Its short name: `cpio` or `ext2`.
    pub fn name(self) -> &'static str {
        match self {
            InitrdKind::Cpio => "cpio",
            InitrdKind::Ext2 => "ext2",
        }
    }
}

impl std::fmt::Display for InitrdKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl KernelInfo {
    pub fn is_2_4_or_older(&self) -> bool {
        (self.major, self.minor) < (2, 6)
    }

    pub fn initrd_kind(&self) -> InitrdKind {
        if self.is_2_4_or_older() { InitrdKind::Ext2 } else { InitrdKind::Cpio }
    }
}

fn err(reason: impl Into<String>) -> ImageError {
    ImageError::Kernel { reason: reason.into() }
}

fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    let b = bytes.get(offset..offset + 2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// Parses the real-mode header of a bzImage (see the kernel's boot protocol document).
pub fn inspect(bytes: &[u8]) -> Result<KernelInfo, ImageError> {
    if bytes.len() < VERSION_PTR_OFFSET + 2 {
        return Err(err(format!(
            "truncated: {} bytes, a bzImage header needs at least {}",
            bytes.len(),
            VERSION_PTR_OFFSET + 2
        )));
    }
    if &bytes[MAGIC_OFFSET..MAGIC_OFFSET + 4] != b"HdrS" {
        return Err(err("not a bzImage (no HdrS magic at 0x202)"));
    }
    let protocol = u16_at(bytes, PROTOCOL_OFFSET).unwrap_or(0);
    let protocol = ((protocol >> 8) as u8, protocol as u8);
    let ptr = u16_at(bytes, VERSION_PTR_OFFSET).unwrap_or(0);
    if ptr == 0 {
        return Err(err(format!(
            "boot protocol {}.{:02} header has no kernel version string (0 at 0x20E)",
            protocol.0, protocol.1
        )));
    }
    let start = ptr as usize + VERSION_PTR_BASE;
    if start >= bytes.len() {
        return Err(err(format!(
            "version string offset 0x{start:x} (0x20E holds 0x{ptr:x}) is past the end of the \
             {}-byte file",
            bytes.len()
        )));
    }
    let window = &bytes[start..bytes.len().min(start + MAX_VERSION_LEN)];
    let Some(end) = window.iter().position(|&b| b == 0) else {
        return Err(err(format!("version string at 0x{start:x} has no terminating NUL")));
    };
    let version_string = String::from_utf8_lossy(&window[..end]).into_owned();
    let release = version_string.split_whitespace().next().unwrap_or("").to_string();
    let (major, minor) = parse_release(&release).ok_or_else(|| {
        err(format!(
            "version string at 0x{start:x} does not start with a release like 2.4.26: \
             '{version_string}'"
        ))
    })?;
    Ok(KernelInfo { protocol, release, version_string, major, minor })
}

/// "2.4.26-om1" -> (2, 4); "6.1.0" -> (6, 1).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(version: &str, protocol: u16) -> Vec<u8> {
        let mut b = vec![0u8; 0x1000];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        let at: u16 = 0x400;
        b[0x20E..0x210].copy_from_slice(&at.to_le_bytes());
        let start = at as usize + 0x200;
        b[start..start + version.len()].copy_from_slice(version.as_bytes());
        b
    }

    #[test]
    fn reads_openmosix_kernel() {
        let k = inspect(&fake("2.4.26-om1 (root@lab) #1 Sat Jul 3 2004", 0x0203)).unwrap();
        assert_eq!(k.protocol, (2, 3));
        assert_eq!(k.release, "2.4.26-om1");
        assert_eq!((k.major, k.minor), (2, 4));
        assert!(k.is_2_4_or_older());
        assert_eq!(k.initrd_kind(), InitrdKind::Ext2);
    }

    #[test]
    fn modern_kernel_takes_cpio() {
        let k = inspect(&fake("6.1.0 (b@h) #1", 0x020f)).unwrap();
        assert_eq!(k.initrd_kind(), InitrdKind::Cpio);
        let k = inspect(&fake("2.6.32", 0x020a)).unwrap();
        assert_eq!(k.initrd_kind(), InitrdKind::Cpio);
    }

    #[test]
    fn clear_errors() {
        let e = inspect(&[0u8; 100]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = inspect(&[0u8; 0x1000]).unwrap_err().to_string();
        assert!(e.contains("not a bzImage (no HdrS magic at 0x202)"), "{e}");
        let mut b = fake("2.4.26", 0x0203);
        b[0x20E..0x210].copy_from_slice(&0xff00u16.to_le_bytes());
        let e = inspect(&b).unwrap_err().to_string();
        assert!(e.contains("past the end"), "{e}");
        let mut b = fake("2.4.26", 0x0203);
        b.truncate(0x602);
        let e = inspect(&b).unwrap_err().to_string();
        assert!(e.contains("no terminating NUL"), "{e}");
        let e = inspect(&fake("garbage", 0x0203)).unwrap_err().to_string();
        assert!(e.contains("does not start with a release"), "{e}");
    }
}

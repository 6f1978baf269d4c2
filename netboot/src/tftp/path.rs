//! Root confinement: which file, if any, a requested name may open.
//!
//! Names from firmware come in every shape (`/pxelinux.0`, `pxelinux.cfg\default`), so they are
//! first normalised to a root-relative path without `.`/`..`. That path is then canonicalised
//! (symlinks resolved) and must still lie under the canonical root; only a regular file is
//! opened, with `O_NOFOLLOW`, and the opened descriptor is checked to be that very file, so a
//! symlink swapped in between the check and the open cannot leak anything.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a request is refused, with the TFTP error it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// ERROR 1: nothing by that name (quietly logged: pxelinux probes many names).
    NotFound(String),
    /// ERROR 2: the name exists or is well-formed but may not be served.
    Denied(String),
}

/// The canonical root of the boot files (TFTP's and HTTP's alike: errors name no protocol,
/// the server that uses it says which root it was).
#[derive(Clone, Debug)]
pub struct Root {
    canon: PathBuf,
}

/// An opened regular file under the root.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub size: u64,
}

impl Root {
    /// Canonicalises `root`; it must be a directory.
    pub fn new(root: &Path) -> io::Result<Root> {
        let canon = std::fs::canonicalize(root)?;
        if !std::fs::metadata(&canon)?.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(Root { canon })
    }

    pub fn path(&self) -> &Path {
        &self.canon
    }

    /// Maps a requested name to a root-relative path: `\` becomes `/`, leading slashes (and the
    /// root's own absolute path, which some configs put in front) are dropped, empty and `.`
    /// components vanish. `..` is refused outright rather than resolved, because no boot file
    /// needs it and resolving it invites escapes.
    pub fn normalize(&self, requested: &str) -> Result<String, Refusal> {
        let unified = requested.replace('\\', "/");
        let mut rest = unified.as_str();
        let root_prefix = self.canon.to_str().filter(|r| *r != "/");
        if let Some(stripped) =
            root_prefix.and_then(|root| rest.strip_prefix(root)).filter(|s| s.starts_with('/'))
        {
            rest = stripped;
        }
        let mut parts = Vec::new();
        for part in rest.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(Refusal::Denied("'..' in path".into())),
                p if p.chars().any(char::is_control) => {
                    return Err(Refusal::Denied("control character in path".into()));
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return Err(Refusal::Denied("names the root directory".into()));
        }
        Ok(parts.join("/"))
    }

    /// Opens the regular file at a normalised root-relative path.
    pub fn open(&self, relative: &str) -> Result<Opened, Refusal> {
        let joined = self.canon.join(relative);
        let canon = match std::fs::canonicalize(&joined) {
            Ok(p) => p,
            Err(e) => return Err(io_refusal(e)),
        };
        if !canon.starts_with(&self.canon) {
            return Err(Refusal::Denied("resolves outside the root (symlink)".into()));
        }
        // Check the type before opening: opening a device or FIFO can itself have effects.
        let meta = std::fs::symlink_metadata(&canon).map_err(io_refusal)?;
        check_type(&meta.file_type())?;
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&canon)
            .map_err(io_refusal)?;
        let meta = file.metadata().map_err(io_refusal)?;
        check_type(&meta.file_type())?;
        // The descriptor must be the file we checked: a path component swapped for a symlink
        // between canonicalize and open would show up as a different path here.
        let fd_path = std::fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file)))
            .map_err(io_refusal)?;
        if fd_path != canon {
            return Err(Refusal::Denied("file changed while being opened".into()));
        }
        Ok(Opened { file, size: meta.len() })
    }
}

fn check_type(ft: &std::fs::FileType) -> Result<(), Refusal> {
    if ft.is_file() {
        Ok(())
    } else if ft.is_dir() {
        Err(Refusal::Denied("is a directory".into()))
    } else if ft.is_block_device() || ft.is_char_device() {
        Err(Refusal::Denied("is a device".into()))
    } else if ft.is_fifo() || ft.is_socket() {
        Err(Refusal::Denied("is a FIFO or socket".into()))
    } else {
        Err(Refusal::Denied("is not a regular file".into()))
    }
}

fn io_refusal(e: io::Error) -> Refusal {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Refusal::NotFound("no such file".into()),
        io::ErrorKind::PermissionDenied => Refusal::Denied("permission denied".into()),
        _ if e.raw_os_error() == Some(libc::ELOOP) => Refusal::Denied("symlink loop".into()),
        _ => Refusal::Denied(format!("cannot open: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// `<tmp>/root` is served; `<tmp>/secret` and `<tmp>/etc/` lie outside it, so the links that
    /// climb out point at files the test made (no dependence on the host's /etc).
    fn setup() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path();
        std::fs::write(outside.join("secret"), b"outside the root").unwrap();
        std::fs::create_dir(outside.join("etc")).unwrap();
        std::fs::write(outside.join("etc/hostname"), b"host\n").unwrap();
        std::fs::write(outside.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        let r = &outside.join("root");
        std::fs::create_dir(r).unwrap();
        std::fs::write(r.join("pxelinux.0"), b"pxe").unwrap();
        std::fs::create_dir(r.join("pxelinux.cfg")).unwrap();
        std::fs::write(r.join("pxelinux.cfg/default"), b"DEFAULT x\n").unwrap();
        symlink("pxelinux.0", r.join("inside-rel")).unwrap();
        symlink(r.join("pxelinux.cfg/default"), r.join("inside-abs")).unwrap();
        symlink("pxelinux.cfg", r.join("cfgdir")).unwrap();
        symlink(outside.join("secret"), r.join("outside")).unwrap();
        symlink(outside.join("etc"), r.join("etcdir")).unwrap();
        symlink("../secret", r.join("outside-rel")).unwrap();
        symlink("/dev/null", r.join("null")).unwrap();
        symlink("loop2", r.join("loop1")).unwrap();
        symlink("loop1", r.join("loop2")).unwrap();
        symlink("../..", r.join("pxelinux.cfg/up")).unwrap();
        nix::unistd::mkfifo(&r.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let root = Root::new(r).unwrap();
        (dir, root)
    }

    fn fetch(root: &Root, name: &str) -> Result<Vec<u8>, Refusal> {
        use std::io::Read;
        let rel = root.normalize(name)?;
        let mut opened = root.open(&rel)?;
        let mut v = Vec::new();
        opened.file.read_to_end(&mut v).unwrap();
        assert_eq!(v.len() as u64, opened.size);
        Ok(v)
    }

    #[test]
    fn normalizes_firmware_names() {
        let (_d, root) = setup();
        assert_eq!(root.normalize("/pxelinux.0").unwrap(), "pxelinux.0");
        assert_eq!(root.normalize("\\pxelinux.cfg\\default").unwrap(), "pxelinux.cfg/default");
        assert_eq!(root.normalize("a//./b/").unwrap(), "a/b");
        let abs = format!("{}/pxelinux.0", root.path().display());
        assert_eq!(root.normalize(&abs).unwrap(), "pxelinux.0");
        assert!(matches!(root.normalize("../x"), Err(Refusal::Denied(_))));
        assert!(matches!(root.normalize("..\\x"), Err(Refusal::Denied(_))));
        assert!(matches!(root.normalize("a/../../x"), Err(Refusal::Denied(_))));
        assert!(matches!(root.normalize("/"), Err(Refusal::Denied(_))));
        assert!(matches!(root.normalize("a\nb"), Err(Refusal::Denied(_))));
    }

    #[test]
    fn serves_regular_files_and_inside_symlinks() {
        let (_d, root) = setup();
        assert_eq!(fetch(&root, "pxelinux.0").unwrap(), b"pxe");
        assert_eq!(fetch(&root, "/pxelinux.cfg/default").unwrap(), b"DEFAULT x\n");
        assert_eq!(fetch(&root, "inside-rel").unwrap(), b"pxe");
        assert_eq!(fetch(&root, "inside-abs").unwrap(), b"DEFAULT x\n");
        assert_eq!(fetch(&root, "cfgdir/default").unwrap(), b"DEFAULT x\n");
    }

    #[test]
    fn refuses_everything_else() {
        let (_d, root) = setup();
        for (name, not_found) in [
            ("missing", true),
            ("pxelinux.0/x", true),
            ("/etc/passwd", true),
            ("outside", false),
            ("outside-rel", false),
            ("etcdir/passwd", false),
            ("etcdir/hostname", false),
            ("null", false),
            ("fifo", false),
            ("pxelinux.cfg", false),
            ("cfgdir", false),
            ("loop1", false),
            ("pxelinux.cfg/up", false),
        ] {
            let got = fetch(&root, name);
            match (not_found, got) {
                (true, Err(Refusal::NotFound(_))) | (false, Err(Refusal::Denied(_))) => {}
                (_, other) => panic!("{name}: unexpected {other:?}"),
            }
        }
    }
}

//! The state directory (leases, stage log) and how its files are opened safely.
//!
//! Design (SECURITY.md, "privileges"): the directory stays owned by the user that starts
//! `mosboot serve` (root) and is writable by nobody else. Every file in it is opened once, before
//! privileges are dropped, relative to a directory descriptor, with `O_NOFOLLOW | O_CLOEXEC`, and
//! must be a plain file with one link; the unprivileged server then writes only through those
//! descriptors and never by path. So nothing an unprivileged process planted (a symlink, a hard
//! link) is ever followed by root.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// Why a state file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("state folder {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path} is {what}, not a plain file: refusing to follow it (someone may have planted it; remove it and restart)"
    )]
    NotPlain { path: PathBuf, what: &'static str },
}

/// An open state directory: all file access goes through its descriptor.
#[derive(Debug)]
pub struct StateDir {
    dir: File,
    path: PathBuf,
}

impl StateDir {
    /// Opens an existing folder without following a final symlink (no ownership checks: for
    /// folders the caller chose, like a test's lease file in a temporary folder).
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        let dir = open_dir(path)?;
        Ok(StateDir { dir, path: path.to_path_buf() })
    }

    /// The state folder of `mosboot serve`: creates `path` if missing (mode 0755), opens it
    /// without following a final symlink, and makes sure only the current user can write to it:
    /// a folder owned by someone else (an older mosboot handed it to `nobody`) is taken back when
    /// running as root, and group/other write bits are removed. Refuses a folder owned by another
    /// user when not root.
    pub fn secure(path: &Path) -> Result<StateDir, StateError> {
        let err = |source| StateError::Io { path: path.to_path_buf(), source };
        match std::fs::create_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path).map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
        let dir = open_dir(path)?;
        let meta = dir.metadata().map_err(err)?;
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if meta.uid() != uid {
            if uid != 0 {
                return Err(err(io::Error::other(format!(
                    "owned by uid {}, not by the user running mosboot (uid {uid})",
                    meta.uid()
                ))));
            }
            tracing::warn!(
                folder = %path.display(),
                owner = meta.uid(),
                "state folder was owned by another user; taking it back for root (files in it are checked before use)"
            );
            std::os::unix::fs::fchown(&dir, Some(uid), Some(gid)).map_err(err)?;
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 || meta.uid() != uid {
            dir.set_permissions(Permissions::from_mode(mode & !0o022 & 0o755)).map_err(err)?;
        }
        Ok(StateDir { dir, path: path.to_path_buf() })
    }

    /// The folder for `path`'s parent (`.` when it has none, opened with [`StateDir::open`]) and
    /// `path`'s file name.
    pub fn open_parent(path: &Path) -> Result<(StateDir, String), StateError> {
        let parent = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| StateError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        })?;
        Ok((StateDir::open(parent)?, name.to_string()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating, mode 0644) `name` in this folder for reading and writing (`append`:
    /// every write goes to the end), refusing symlinks, non-files and files with other links.
    pub fn open_file(&self, name: &str, append: bool) -> Result<File, StateError> {
        let path = self.path.join(name);
        let mut flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        if append {
            flags |= OFlag::O_APPEND;
        }
        let fd = openat(Some(self.dir.as_raw_fd()), name, flags, Mode::from_bits_truncate(0o644)).map_err(
            |e| match e {
                nix::errno::Errno::ELOOP => {
                    StateError::NotPlain { path: path.clone(), what: "a symbolic link" }
                }
                e => StateError::Io { path: path.clone(), source: e.into() },
            },
        )?;
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        let meta = file.metadata().map_err(|source| StateError::Io { path: path.clone(), source })?;
        if !meta.file_type().is_file() {
            return Err(StateError::NotPlain { path, what: "not a regular file" });
        }
        if meta.nlink() != 1 {
            return Err(StateError::NotPlain { path, what: "a file with other hard links" });
        }
        // O_NONBLOCK only kept a planted FIFO from blocking the open; regular files ignore it.
        Ok(file)
    }

    /// fsync of the folder itself (after creating files in it).
    pub fn sync(&self) -> io::Result<()> {
        self.dir.sync_all()
    }
}

fn open_dir(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => {
                StateError::NotPlain { path: path.to_path_buf(), what: "a symbolic link or not a folder" }
            }
            _ => StateError::Io { path: path.to_path_buf(), source: e },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_symlinks_and_hard_links() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let state = t.path().join("state");
        let dir = StateDir::secure(&state).unwrap();
        std::os::unix::fs::symlink(&victim, state.join("link")).unwrap();
        std::fs::hard_link(&victim, state.join("hard")).unwrap();
        assert!(matches!(dir.open_file("link", true), Err(StateError::NotPlain { .. })));
        assert!(matches!(dir.open_file("hard", false), Err(StateError::NotPlain { .. })));
        let mut f = dir.open_file("ok", true).unwrap();
        std::io::Write::write_all(&mut f, b"x").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::os::unix::fs::symlink(&state, t.path().join("statelink")).unwrap();
        assert!(matches!(StateDir::secure(&t.path().join("statelink")), Err(StateError::NotPlain { .. })));
        assert!(matches!(StateDir::open(&t.path().join("statelink")), Err(StateError::NotPlain { .. })));
    }
}

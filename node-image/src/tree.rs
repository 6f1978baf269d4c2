//! The node root as an in-memory tree, so images can be written without root rights, loop mounts
//! or a scratch directory on the host (which could not hold device nodes or foreign owners anyway).
//!
//! Paths are stored relative to the node root ("bin/sh"; the root itself is ""). Every timestamp
//! is one fixed value so that two builds from the same inputs give byte-identical images.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::error::ImageError;

/// Longest single path component; ext2 (and most filesystems) cannot store more.
pub const MAX_NAME_LEN: usize = 255;

/// What an entry is, with the data that belongs to that kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File(Vec<u8>),
    /// The target exactly as it will be stored; absolute targets mean "inside the node root".
    Symlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
}

/// One file, directory, symlink or device node of the node root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits only (including setuid/setgid/sticky): `mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// POSIX file type bits (the `S_IFMT` part of `st_mode`), as cpio and ext2 store them.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFBLK: u32 = 0o060000;

impl Entry {
    fn new(kind: EntryKind, mode: u32) -> Self {
        Entry { kind, mode: mode & 0o7777, uid: 0, gid: 0 }
    }

    /// The `S_IFMT` bits for this entry's kind.
    pub fn type_bits(&self) -> u32 {
        match self.kind {
            EntryKind::Directory => S_IFDIR,
            EntryKind::File(_) => S_IFREG,
            EntryKind::Symlink(_) => S_IFLNK,
            EntryKind::CharDevice { .. } => S_IFCHR,
            EntryKind::BlockDevice { .. } => S_IFBLK,
        }
    }

    /// Full `st_mode`: type bits plus permission bits.
    pub fn full_mode(&self) -> u32 {
        self.type_bits() | (self.mode & 0o7777)
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Directory)
    }

    /// Bytes of content: file data, or the symlink target; 0 for the rest.
    pub fn data_len(&self) -> usize {
        match &self.kind {
            EntryKind::File(data) => data.len(),
            EntryKind::Symlink(target) => target.len(),
            _ => 0,
        }
    }
}

/// Map key ordered component by component, so iteration is a depth-first walk in which every
/// directory comes right before its contents ("bin", "bin/sh", "bin-old", not "bin", "bin-old",
/// "bin/sh" as plain string order would give).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key(String);

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.0.is_empty() || other.0.is_empty() {
            return self.0.len().cmp(&other.0.len()).then(self.0.cmp(&other.0));
        }
        self.0.split('/').cmp(other.0.split('/'))
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The node root being assembled: busybox, rendered files, tarball layers, then the overlay.
#[derive(Debug, Clone)]
pub struct Tree {
    entries: BTreeMap<Key, Entry>,
    mtime: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

/// Turns "/bin//./sh", "bin/sh/" or "bin/sh" into "bin/sh"; "/" becomes "" (the root).
/// Refuses what could escape the root or cannot be stored: "..", NUL, empty input, long names.
pub fn normalize_path(path: &str) -> Result<String, ImageError> {
    let bad = |reason: &str| ImageError::InvalidPath { path: path.to_string(), reason: reason.to_string() };
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    if path.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err(bad("contains a '..' component")),
            name if name.len() > MAX_NAME_LEN => {
                return Err(bad("a component is longer than 255 bytes"));
            }
            name => parts.push(name),
        }
    }
    Ok(parts.join("/"))
}

/// The directory that holds `path` ("" for top-level entries and for the root itself).
pub fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(parent, _)| parent)
}

/// The last component of `path` ("" for the root).
pub fn name_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

/// True when a symlink stored in directory `dir` (normalized, "" = root) with `target` would
/// resolve above the node root. Absolute targets start at the node root, which is where the
/// kernel on the node will resolve them; only climbing above it with ".." escapes.
pub fn link_escapes_root(dir: &str, target: &str) -> bool {
    let mut depth: usize = if target.starts_with('/') || dir.is_empty() { 0 } else { dir.split('/').count() };
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

impl Tree {
    /// An empty tree holding only the root directory (mode 0755, owned by root).
    pub fn new() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(Key(String::new()), Entry::new(EntryKind::Directory, 0o755));
        Tree { entries, mtime: 0 }
    }

    /// Sets the single timestamp written for every entry (default 0, the epoch).
    pub fn set_mtime(&mut self, mtime: u64) {
        self.mtime = mtime;
    }

    pub fn mtime(&self) -> u64 {
        self.mtime
    }

    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<(), ImageError> {
        self.insert(path, Entry::new(EntryKind::Directory, mode))
    }

    pub fn add_file(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), ImageError> {
        self.insert(path, Entry::new(EntryKind::File(data), mode))
    }

    /// Adds a symlink (mode 0777, as Linux shows them). The target is stored verbatim; an empty
    /// target or one with a NUL byte is refused because no filesystem can hold it.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), ImageError> {
        if target.is_empty() || target.contains('\0') {
            return Err(ImageError::InvalidPath {
                path: path.to_string(),
                reason: format!("symlink target '{target}' is empty or contains NUL"),
            });
        }
        self.insert(path, Entry::new(EntryKind::Symlink(target.to_string()), 0o777))
    }

    pub fn add_char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), ImageError> {
        self.insert(path, Entry::new(EntryKind::CharDevice { major, minor }, mode))
    }

    pub fn add_block_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), ImageError> {
        self.insert(path, Entry::new(EntryKind::BlockDevice { major, minor }, mode))
    }

    /// Changes the owner of an existing entry (tarball layers carry their own owners).
    pub fn set_owner(&mut self, path: &str, uid: u32, gid: u32) -> Result<(), ImageError> {
        let key = Key(normalize_path(path)?);
        match self.entries.get_mut(&key) {
            Some(entry) => {
                entry.uid = uid;
                entry.gid = gid;
                Ok(())
            }
            None => {
                Err(ImageError::InvalidPath { path: path.to_string(), reason: "no such entry".to_string() })
            }
        }
    }

    /// Adds or replaces an entry, creating missing parent directories (0755, root-owned).
    /// Later additions win, like layers of an overlay, except that a directory cannot turn into
    /// a non-directory; a directory added over a directory only takes the new mode and owner.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<(), ImageError> {
        let norm = normalize_path(path)?;
        let mut entry = entry;
        entry.mode &= 0o7777;
        self.ensure_parents(&norm)?;
        let key = Key(norm);
        match self.entries.get_mut(&key) {
            Some(existing) if existing.is_dir() => {
                if !entry.is_dir() {
                    return Err(ImageError::ReplaceDirectory { path: key.0 });
                }
                existing.mode = entry.mode;
                existing.uid = entry.uid;
                existing.gid = entry.gid;
            }
            _ => {
                self.entries.insert(key, entry);
            }
        }
        Ok(())
    }

    fn ensure_parents(&mut self, norm: &str) -> Result<(), ImageError> {
        if norm.is_empty() {
            return Ok(());
        }
        let mut end = 0;
        while let Some(pos) = norm[end..].find('/') {
            let parent = &norm[..end + pos];
            match self.entries.get(&Key(parent.to_string())) {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    return Err(ImageError::ParentNotDirectory {
                        path: norm.to_string(),
                        parent: parent.to_string(),
                    });
                }
                None => {
                    self.entries.insert(Key(parent.to_string()), Entry::new(EntryKind::Directory, 0o755));
                }
            }
            end += pos + 1;
        }
        Ok(())
    }

    /// Looks up an entry; `path` is normalized first ("/bin/sh" and "bin/sh" are the same).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let norm = normalize_path(path).ok()?;
        self.entries.get(&Key(norm))
    }

    /// All entries, the root ("") first, each directory right before its contents, siblings
    /// sorted by name (bytewise). Paths are relative to the node root, without a leading '/'.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.0.as_str(), v))
    }

    /// Number of entries, the root included (so never 0).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: the root directory is always there. Present for API completeness.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of direct subdirectories of each directory (for link counts: 2 + subdirs).
    pub(crate) fn subdir_counts(&self) -> std::collections::HashMap<&str, u32> {
        let mut counts = std::collections::HashMap::new();
        for (path, entry) in self.iter() {
            if entry.is_dir() && !path.is_empty() {
                *counts.entry(parent_of(path)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Sum of regular file sizes, for size estimates and build summaries.
    pub fn total_file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                EntryKind::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path("/bin//./sh/").unwrap(), "bin/sh");
        assert_eq!(normalize_path("bin/sh").unwrap(), "bin/sh");
        assert_eq!(normalize_path("/").unwrap(), "");
        assert!(normalize_path("").is_err());
        assert!(normalize_path("a/../b").is_err());
        assert!(normalize_path("a\0b").is_err());
        assert!(normalize_path(&"x".repeat(256)).is_err());
    }

    #[test]
    fn creates_parents_and_orders_depth_first() {
        let mut t = Tree::new();
        t.add_file("/bin-old", 0o644, b"x".to_vec()).unwrap();
        t.add_file("/bin/sh", 0o755, b"y".to_vec()).unwrap();
        t.add_symlink("bin/ls", "sh").unwrap();
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["", "bin", "bin/ls", "bin/sh", "bin-old"]);
        assert_eq!(t.get("/bin").unwrap().mode, 0o755);
        assert_eq!(t.len(), 5);
        assert_eq!(t.total_file_bytes(), 2);
    }

    #[test]
    fn later_layers_win_but_directories_stay() {
        let mut t = Tree::new();
        t.add_file("etc/hosts", 0o644, b"a".to_vec()).unwrap();
        t.add_file("etc/hosts", 0o600, b"b".to_vec()).unwrap();
        let e = t.get("etc/hosts").unwrap();
        assert_eq!((e.mode, &e.kind), (0o600, &EntryKind::File(b"b".to_vec())));
        t.add_dir("etc", 0o700).unwrap();
        assert_eq!(t.get("etc").unwrap().mode, 0o700);
        assert!(t.get("etc/hosts").is_some(), "dir over dir keeps children");
        let err = t.add_file("etc", 0o644, vec![]).unwrap_err();
        assert!(err.to_string().contains("cannot replace directory '/etc'"));
        // A file may be replaced by a directory.
        t.add_file("x", 0o644, vec![]).unwrap();
        t.add_dir("x", 0o755).unwrap();
        assert!(t.get("x").unwrap().is_dir());
        let err = t.add_file("etc/hosts/sub", 0o644, vec![]).unwrap_err();
        assert!(err.to_string().contains("'/etc/hosts' exists and is not a directory"));
        assert!(t.add_file("/", 0o644, vec![]).is_err());
    }

    #[test]
    fn symlink_escape_detection() {
        assert!(!link_escapes_root("bin", "busybox"));
        assert!(!link_escapes_root("bin", "/bin/busybox"));
        assert!(!link_escapes_root("usr/bin", "../../bin/busybox"));
        assert!(link_escapes_root("usr/bin", "../../../etc"));
        assert!(link_escapes_root("", ".."));
        assert!(link_escapes_root("a", "b/../../.."));
        assert!(link_escapes_root("a/b", "/../etc"));
    }

    #[test]
    fn rejects_empty_symlink_target() {
        let mut t = Tree::new();
        assert!(t.add_symlink("a", "").is_err());
    }
}

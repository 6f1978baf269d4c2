//! One in-memory copy of a served file for all the transfers that send it at the same time.
//!
//! In a boot storm every node fetches the same kernel and initrd. Reading each file once into a
//! shared buffer turns per-block file reads (and their hand-over to the blocking pool) into
//! slice copies. The copy lives only as long as a transfer holds it (the cache keeps weak
//! references), so nothing is served stale: a file is found again by its identity (device,
//! inode, size, modification and change times) after it passed root confinement and was opened,
//! and a tree swapped in by a rebuild (builder's reload) has new inodes. Memory is bounded: files
//! above [`MAX_FILE`] and copies beyond [`MAX_TOTAL`] in use are read in chunks as before.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, Weak};

/// Largest file held in memory whole (a 2.4 kernel plus initrd is a few MB).
pub const MAX_FILE: u64 = 64 * 1024 * 1024;
/// Most bytes held by all shared copies in use at once.
pub const MAX_TOTAL: u64 = 256 * 1024 * 1024;

/// What makes two opened files the same content, as far as the file system tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Shared copies of the files being served, by identity.
#[derive(Debug, Default)]
pub struct FileCache {
    copies: Mutex<HashMap<Identity, Weak<[u8]>>>,
}

impl FileCache {
    /// The whole content of an opened regular file, shared with the other transfers of the same
    /// file; `None` when it is too large or the budget is spent (read it in chunks then).
    /// Blocking: call it off the async workers.
    pub fn get(&self, file: &File) -> io::Result<Option<Arc<[u8]>>> {
        let meta = file.metadata()?;
        if meta.len() > MAX_FILE {
            return Ok(None);
        }
        let id = Identity::of(&meta);
        if let Some(copy) = self.lock().get(&id).and_then(Weak::upgrade) {
            return Ok(Some(copy));
        }
        let Ok(len) = usize::try_from(meta.len()) else { return Ok(None) };
        {
            let mut copies = self.lock();
            copies.retain(|_, w| w.strong_count() > 0);
            let in_use: u64 = copies.values().filter_map(Weak::upgrade).map(|c| c.len() as u64).sum();
            if in_use + meta.len() > MAX_TOTAL {
                return Ok(None);
            }
        }
        // Read outside the lock: other files are served meanwhile. Two transfers that miss at
        // once both read; the later copy replaces the earlier in the map, both are correct.
        let data = super::transfer::read_full_at(file, 0, len)?;
        let got = data.len();
        if got != len || Identity::of(&file.metadata()?) != id {
            // Changed while being read: not a copy to share; this transfer reads in chunks.
            return Ok(None);
        }
        let copy: Arc<[u8]> = Arc::from(data);
        self.lock().insert(id, Arc::downgrade(&copy));
        Ok(Some(copy))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, Weak<[u8]>>> {
        // A poisoned map still holds only weak references to complete copies.
        self.copies.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_while_in_use_and_a_new_one_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first").unwrap();
        let cache = FileCache::default();
        let a = cache.get(&File::open(&path).unwrap()).unwrap().unwrap();
        let b = cache.get(&File::open(&path).unwrap()).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &b), "concurrent transfers share one copy");
        assert_eq!(&*a, b"first");
        // A rebuild writes a new file and renames it over the old one: a new inode.
        let tmp = dir.path().join("f.new");
        std::fs::write(&tmp, b"second!").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let c = cache.get(&File::open(&path).unwrap()).unwrap().unwrap();
        assert_eq!(&*c, b"second!");
        drop((a, b, c));
        assert!(cache.lock().values().all(|w| w.strong_count() == 0), "nothing kept after use");
    }
}

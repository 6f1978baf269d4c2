//! An ext2 image written byte by byte, for 2.4 kernels that cannot unpack a cpio initramfs and
//! instead mount a filesystem image from /dev/ram0. Writing it ourselves needs neither root,
//! nor loop mounts, nor mke2fs, and makes the bytes reproducible. (No crate writes ext2; mke2fs
//! stamps UUIDs, times and hash seeds into every image, and a loop mount needs root.)
//!
//! Deliberately old-fashioned so that Linux 2.4 mounts it: revision 1, 1024-byte blocks,
//! 128-byte inodes, 8192 blocks per group, only the `filetype` (incompat) and `sparse_super`
//! (ro_compat) features; no journal, no dir_index, no extents, no large files.
//! The result passes `e2fsck -fn` without a single remark (see tests/image_formats.rs).

use std::collections::HashMap;

use crate::error::ImageError;
use crate::tree::{Entry, EntryKind, Tree, name_of, parent_of};
#[cfg(test)]
use crate::tree::{S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG};

const BLOCK: usize = 1024;
const BLOCKS_PER_GROUP: u32 = 8192;
const INODE_SIZE: usize = 128;
const INODES_PER_BLOCK: u32 = (BLOCK / INODE_SIZE) as u32;
const DESC_SIZE: usize = 32;
const PTRS_PER_BLOCK: usize = BLOCK / 4;
const FIRST_INO: u32 = 11;
const ROOT_INO: u32 = 2;
const LOST_FOUND_INO: u32 = 11;
/// Pre-allocated lost+found blocks, so e2fsck can reconnect a few orphans without allocating.
const LOST_FOUND_BLOCKS: usize = 4;
/// Fast symlinks keep the target in i_block (60 bytes) and must leave room for a NUL.
const FAST_SYMLINK_MAX: usize = 59;
/// Without the large_file feature, i_size must stay below 2 GiB.
const MAX_FILE: u64 = (1 << 31) - 1;
/// Smallest data area we accept in the last group (mke2fs drops smaller tail groups).
const MIN_LAST_GROUP_DATA: u32 = 16;

const FEATURE_INCOMPAT_FILETYPE: u32 = 0x0002;
const FEATURE_RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;

const FT_REG: u8 = 1;
const FT_DIR: u8 = 2;
const FT_CHR: u8 = 3;
const FT_BLK: u8 = 4;
const FT_LNK: u8 = 7;

/// Knobs for [`write_ext2`]. The defaults give a small image with some room to spare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext2Options {
    /// Free space left beyond the contents (a RAM root needs a little for /etc, /var ...).
    pub extra_free_kib: u32,
    /// Free inodes left beyond the ones the tree uses.
    pub extra_inodes: u32,
    /// The image is never smaller than this (0 = as small as the contents allow).
    pub min_size_kib: u32,
    /// Up to 16 bytes.
    pub volume_label: String,
    /// Fixed, so that equal trees give equal images.
    pub uuid: [u8; 16],
    /// Superblock times (write, mkfs, last check); entry times come from [`Tree::mtime`].
    pub timestamp: u32,
}

impl Default for Ext2Options {
    fn default() -> Self {
        Ext2Options {
            extra_free_kib: 512,
            extra_inodes: 128,
            min_size_kib: 0,
            volume_label: "mosboot".to_string(),
            uuid: *b"mosboot-ext2-img",
            timestamp: 0,
        }
    }
}

/// Size in KiB of an ext2 image as its superblock states it (falls back to the buffer length),
/// i.e. the value for the kernel's `ramdisk_size=`.
pub fn ext2_size_kib(image: &[u8]) -> u32 {
    let field =
        |o: usize| image.get(BLOCK + o..BLOCK + o + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let magic = image.get(BLOCK + 56..BLOCK + 58).map(|b| u16::from_le_bytes([b[0], b[1]]));
    match (magic, field(4), field(24)) {
        (Some(0xEF53), Some(blocks), Some(log)) if log < 6 => blocks << log,
        _ => (image.len().div_ceil(1024)) as u32,
    }
}

/// Where everything lives; derived from the total block count and inode count.
#[derive(Debug, Clone, Copy)]
struct Layout {
    total_blocks: u32,
    groups: u32,
    inodes_per_group: u32,
    gdt_blocks: u32,
}

impl Layout {
    fn new(total_blocks: u32, inodes_wanted: u32) -> Layout {
        let groups = (total_blocks - 1).div_ceil(BLOCKS_PER_GROUP);
        let inodes_per_group = inodes_wanted.div_ceil(groups).div_ceil(8) * 8;
        let gdt_blocks = (groups as usize * DESC_SIZE).div_ceil(BLOCK) as u32;
        Layout { total_blocks, groups, inodes_per_group, gdt_blocks }
    }

    fn itable_blocks(&self) -> u32 {
        self.inodes_per_group / INODES_PER_BLOCK
    }

    fn group_start(&self, g: u32) -> u32 {
        1 + g * BLOCKS_PER_GROUP
    }

    fn group_len(&self, g: u32) -> u32 {
        (self.total_blocks - self.group_start(g)).min(BLOCKS_PER_GROUP)
    }

    /// sparse_super: backups of superblock and descriptors only in groups 0, 1 and powers of
    /// 3, 5 and 7.
    fn has_super(&self, g: u32) -> bool {
        fn power_of(mut n: u32, base: u32) -> bool {
            while n > 1 && n % base == 0 {
                n /= base;
            }
            n == 1
        }
        g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
    }

    fn block_bitmap(&self, g: u32) -> u32 {
        self.group_start(g) + if self.has_super(g) { 1 + self.gdt_blocks } else { 0 }
    }

    fn inode_bitmap(&self, g: u32) -> u32 {
        self.block_bitmap(g) + 1
    }

    fn inode_table(&self, g: u32) -> u32 {
        self.block_bitmap(g) + 2
    }

    /// Blocks at the start of the group taken by metadata.
    fn meta_blocks(&self, g: u32) -> u32 {
        self.inode_table(g) + self.itable_blocks() - self.group_start(g)
    }

    fn total_inodes(&self) -> u32 {
        self.inodes_per_group * self.groups
    }
}

/// Finds the smallest layout that holds `data_blocks` plus the requested slack.
fn plan_layout(data_blocks: u64, inodes_wanted: u32, opts: &Ext2Options) -> Result<Layout, ImageError> {
    let too_big = || ImageError::Options {
        format: "ext2",
        reason: "the node root is too large for a 1 KiB-block ext2 image".to_string(),
    };
    let wanted = data_blocks + u64::from(opts.extra_free_kib);
    let mut total: u64 = (1 + wanted + 64).max(u64::from(opts.min_size_kib));
    loop {
        let total32 = u32::try_from(total).map_err(|_| too_big())?;
        let layout = Layout::new(total32, inodes_wanted);
        if layout.inodes_per_group > BLOCKS_PER_GROUP {
            // More inodes than one group's bitmap can track: grow to get more groups.
            total += u64::from(BLOCKS_PER_GROUP);
            continue;
        }
        let meta: u64 = (0..layout.groups).map(|g| u64::from(layout.meta_blocks(g))).sum();
        let capacity = total - 1 - meta;
        if capacity < wanted {
            total += wanted - capacity;
            continue;
        }
        let last = layout.groups - 1;
        let last_need = layout.meta_blocks(last) + MIN_LAST_GROUP_DATA;
        if layout.group_len(last) < last_need {
            total += u64::from(last_need - layout.group_len(last));
            continue;
        }
        return Ok(layout);
    }
}

/// Data and indirect blocks a file of `n` data blocks needs.
fn blocks_with_indirect(n: usize) -> usize {
    let p = PTRS_PER_BLOCK;
    let mut rest = n.saturating_sub(12);
    let mut total = n;
    if rest > 0 {
        total += 1;
        rest -= rest.min(p);
    }
    if rest > 0 {
        let here = rest.min(p * p);
        total += 1 + here.div_ceil(p);
        rest -= here;
    }
    if rest > 0 {
        total += 1 + rest.div_ceil(p * p) + rest.div_ceil(p);
    }
    total
}

/// One directory entry before packing.
struct DirEntry<'a> {
    name: &'a str,
    ino: u32,
    file_type: u8,
}

/// Packs entries into 1 KiB blocks: an entry never crosses a block, and the last entry of
/// each block stretches (rec_len) to the block end. `min_blocks` pads with empty blocks whose
/// single entry has inode 0, as mke2fs does for lost+found.
fn pack_dir(entries: &[DirEntry<'_>], min_blocks: usize) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut block_start = 0;
    let mut last_entry: Option<usize> = None;
    for e in entries {
        let size = 8 + e.name.len().div_ceil(4) * 4;
        if out.len() + size > block_start + BLOCK {
            if let Some(last) = last_entry {
                let rec_len = (block_start + BLOCK - last) as u16;
                out[last + 4..last + 6].copy_from_slice(&rec_len.to_le_bytes());
            }
            out.resize(block_start + BLOCK, 0);
            block_start += BLOCK;
        }
        let at = out.len();
        out.extend_from_slice(&e.ino.to_le_bytes());
        out.extend_from_slice(&(size as u16).to_le_bytes());
        out.push(e.name.len() as u8);
        out.push(e.file_type);
        out.extend_from_slice(e.name.as_bytes());
        out.resize(at + size, 0);
        last_entry = Some(at);
    }
    if let Some(last) = last_entry {
        let rec_len = (block_start + BLOCK - last) as u16;
        out[last + 4..last + 6].copy_from_slice(&rec_len.to_le_bytes());
    }
    out.resize(block_start + BLOCK, 0);
    while out.len() < min_blocks * BLOCK {
        let at = out.len();
        out.resize(at + BLOCK, 0);
        out[at + 4..at + 6].copy_from_slice(&(BLOCK as u16).to_le_bytes());
    }
    out
}

fn file_type(entry: &Entry) -> u8 {
    match entry.kind {
        EntryKind::Directory => FT_DIR,
        EntryKind::File(_) => FT_REG,
        EntryKind::Symlink(_) => FT_LNK,
        EntryKind::CharDevice { .. } => FT_CHR,
        EntryKind::BlockDevice { .. } => FT_BLK,
    }
}

/// What goes into an inode's data blocks.
enum Content<'a> {
    None,
    Bytes(&'a [u8]),
    Owned(Vec<u8>),
}

impl Content<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Content::None => &[],
            Content::Bytes(b) => b,
            Content::Owned(v) => v,
        }
    }
}

/// One inode to write, with everything resolved except block numbers.
struct Node<'a> {
    path: &'a str,
    ino: u32,
    entry: &'a Entry,
    links: u16,
    content: Content<'a>,
    /// Bytes in i_size (dirs: whole blocks; symlinks: target length).
    size: u64,
}

/// The writer's state: the image buffer and the block allocator.
struct Writer {
    layout: Layout,
    image: Vec<u8>,
    used: Vec<bool>,
    next_free: u32,
}

impl Writer {
    fn alloc(&mut self) -> Result<u32, ImageError> {
        while (self.next_free as usize) < self.used.len() {
            let b = self.next_free;
            self.next_free += 1;
            if !self.used[b as usize] {
                self.used[b as usize] = true;
                return Ok(b);
            }
        }
        Err(ImageError::Options {
            format: "ext2",
            reason: "internal error: ran out of blocks after sizing the image".to_string(),
        })
    }

    fn block_mut(&mut self, b: u32) -> &mut [u8] {
        let at = b as usize * BLOCK;
        &mut self.image[at..at + BLOCK]
    }

    /// Allocates and fills the data of one inode; returns i_block and the blocks used
    /// (data plus indirect), which i_blocks counts.
    fn place(&mut self, data: &[u8], nblocks: usize) -> Result<([u32; 15], usize), ImageError> {
        let mut i_block = [0u32; 15];
        let mut logical = 0usize;
        let mut used = 0usize;
        for slot in i_block.iter_mut().take(12) {
            if logical == nblocks {
                break;
            }
            *slot = self.place_data(data, logical)?;
            logical += 1;
            used += 1;
        }
        for (slot, level) in [(12, 1), (13, 2), (14, 3)] {
            if logical == nblocks {
                break;
            }
            i_block[slot] = self.place_indirect(level, data, nblocks, &mut logical, &mut used)?;
        }
        if logical != nblocks {
            return Err(ImageError::Options {
                format: "ext2",
                reason: "internal error: file too large for triple indirect blocks".to_string(),
            });
        }
        Ok((i_block, used))
    }

    fn place_data(&mut self, data: &[u8], logical: usize) -> Result<u32, ImageError> {
        let b = self.alloc()?;
        let start = (logical * BLOCK).min(data.len());
        let end = ((logical + 1) * BLOCK).min(data.len());
        self.block_mut(b)[..end - start].copy_from_slice(&data[start..end]);
        Ok(b)
    }

    /// An indirect block sits before the blocks it maps, as the kernel allocates them.
    fn place_indirect(
        &mut self,
        level: u32,
        data: &[u8],
        nblocks: usize,
        logical: &mut usize,
        used: &mut usize,
    ) -> Result<u32, ImageError> {
        let me = self.alloc()?;
        *used += 1;
        let mut ptrs = [0u32; PTRS_PER_BLOCK];
        for ptr in ptrs.iter_mut() {
            if *logical == nblocks {
                break;
            }
            *ptr = if level == 1 {
                let b = self.place_data(data, *logical)?;
                *logical += 1;
                *used += 1;
                b
            } else {
                self.place_indirect(level - 1, data, nblocks, logical, used)?
            };
        }
        let block = self.block_mut(me);
        for (i, p) in ptrs.iter().enumerate() {
            block[i * 4..i * 4 + 4].copy_from_slice(&p.to_le_bytes());
        }
        Ok(me)
    }

    fn inode_mut(&mut self, ino: u32) -> &mut [u8] {
        let ipg = self.layout.inodes_per_group;
        let g = (ino - 1) / ipg;
        let index = ((ino - 1) % ipg) as usize;
        let at = self.layout.inode_table(g) as usize * BLOCK + index * INODE_SIZE;
        &mut self.image[at..at + INODE_SIZE]
    }
}

fn put16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn unrepresentable(path: &str, reason: String) -> ImageError {
    ImageError::Unrepresentable { format: "ext2", path: path.to_string(), reason }
}

/// Writes `tree` as a complete ext2 image (a multiple of 1 KiB; its KiB size is
/// [`ext2_size_kib`]). A `lost+found` directory is added when the tree has none.
pub fn write_ext2(tree: &Tree, opts: &Ext2Options) -> Result<Vec<u8>, ImageError> {
    if opts.volume_label.len() > 16 {
        return Err(ImageError::Options {
            format: "ext2",
            reason: format!("volume label '{}' is longer than 16 bytes", opts.volume_label),
        });
    }
    let mtime = u32::try_from(tree.mtime()).map_err(|_| ImageError::Options {
        format: "ext2",
        reason: format!("mtime {} does not fit in 32 bits", tree.mtime()),
    })?;

    // Inode numbers: root 2, lost+found 11, everything else from 12 in tree order.
    let lost_found = Entry { kind: EntryKind::Directory, mode: 0o700, uid: 0, gid: 0 };
    let mut items: Vec<(&str, &Entry)> = Vec::with_capacity(tree.len() + 1);
    match tree.get("lost+found") {
        Some(e) if e.is_dir() => {}
        Some(_) => {
            return Err(unrepresentable(
                "lost+found",
                "must be a directory in an ext2 image (e2fsck needs it)".to_string(),
            ));
        }
        None => items.push(("lost+found", &lost_found)),
    }
    items.extend(tree.iter());
    let mut inos: HashMap<&str, u32> = HashMap::with_capacity(items.len());
    let mut next_ino = FIRST_INO + 1;
    for (path, _) in &items {
        let ino = match *path {
            "" => ROOT_INO,
            "lost+found" => LOST_FOUND_INO,
            _ => {
                next_ino += 1;
                next_ino - 1
            }
        };
        inos.insert(path, ino);
    }
    let last_ino = next_ino - 1;

    // Directory listings, in tree order (sorted by name).
    let mut children: HashMap<&str, Vec<DirEntry<'_>>> = HashMap::new();
    let mut subdirs: HashMap<&str, u16> = HashMap::new();
    for (path, entry) in &items {
        if path.is_empty() {
            continue;
        }
        let parent = parent_of(path);
        children.entry(parent).or_default().push(DirEntry {
            name: name_of(path),
            ino: inos[path],
            file_type: file_type(entry),
        });
        if entry.is_dir() {
            *subdirs.entry(parent).or_default() += 1;
        }
    }

    let mut nodes: Vec<Node<'_>> = Vec::with_capacity(items.len());
    let mut data_blocks: u64 = 0;
    for (path, entry) in &items {
        let ino = inos[path];
        let (content, size, nblocks) = match &entry.kind {
            EntryKind::Directory => {
                let parent_ino = if path.is_empty() { ROOT_INO } else { inos[parent_of(path)] };
                let mut list = vec![
                    DirEntry { name: ".", ino, file_type: FT_DIR },
                    DirEntry { name: "..", ino: parent_ino, file_type: FT_DIR },
                ];
                list.extend(children.remove(path).unwrap_or_default());
                let min = if ino == LOST_FOUND_INO { LOST_FOUND_BLOCKS } else { 1 };
                let packed = pack_dir(&list, min);
                let n = packed.len() / BLOCK;
                (Content::Owned(packed), (n * BLOCK) as u64, n)
            }
            EntryKind::File(data) => {
                if data.len() as u64 > MAX_FILE {
                    return Err(unrepresentable(
                        path,
                        format!("{} bytes is over the 2 GiB limit", data.len()),
                    ));
                }
                (Content::Bytes(data), data.len() as u64, data.len().div_ceil(BLOCK))
            }
            EntryKind::Symlink(target) => {
                if target.len() >= BLOCK {
                    return Err(unrepresentable(
                        path,
                        format!("symlink target of {} bytes (limit 1023)", target.len()),
                    ));
                }
                let n = usize::from(target.len() > FAST_SYMLINK_MAX);
                (Content::Bytes(target.as_bytes()), target.len() as u64, n)
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                if *major > 0xfff || *minor > 0xfffff {
                    return Err(unrepresentable(
                        path,
                        format!("device {major}:{minor} is beyond 12-bit major / 20-bit minor"),
                    ));
                }
                (Content::None, 0, 0)
            }
        };
        data_blocks += blocks_with_indirect(nblocks) as u64;
        let links = if entry.is_dir() {
            let subs = subdirs.get(path).copied().unwrap_or(0);
            subs.checked_add(2)
                .ok_or_else(|| unrepresentable(path, "more than 65533 subdirectories".to_string()))?
        } else {
            1
        };
        nodes.push(Node { path, ino, entry, links, content, size });
    }

    let inodes_used = last_ino;
    let inodes_wanted = inodes_used + opts.extra_inodes;
    let layout = plan_layout(data_blocks, inodes_wanted, opts)?;
    let mut w = Writer {
        layout,
        image: vec![0u8; layout.total_blocks as usize * BLOCK],
        used: vec![false; layout.total_blocks as usize],
        next_free: 1,
    };
    w.used[0] = true;
    for g in 0..layout.groups {
        let start = layout.group_start(g);
        for b in start..start + layout.meta_blocks(g) {
            w.used[b as usize] = true;
        }
    }

    let mut dirs_per_group = vec![0u32; layout.groups as usize];
    // Root and lost+found first so they sit at the start of group 0, like mke2fs puts them.
    nodes.sort_by_key(|n| n.ino);
    for node in &nodes {
        let data = node.content.bytes();
        let nblocks = match &node.entry.kind {
            EntryKind::Directory => data.len() / BLOCK,
            EntryKind::File(d) => d.len().div_ceil(BLOCK),
            EntryKind::Symlink(t) => usize::from(t.len() > FAST_SYMLINK_MAX),
            _ => 0,
        };
        let (mut i_block, used) = w.place(data, nblocks)?;
        match &node.entry.kind {
            EntryKind::Symlink(t) if t.len() <= FAST_SYMLINK_MAX => {
                let mut raw = [0u8; 60];
                raw[..t.len()].copy_from_slice(t.as_bytes());
                for (i, slot) in i_block.iter_mut().enumerate() {
                    *slot = u32::from_le_bytes([raw[i * 4], raw[i * 4 + 1], raw[i * 4 + 2], raw[i * 4 + 3]]);
                }
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                // Old 16-bit encoding when it fits (all 2.4 understands), else the new one.
                if *major < 256 && *minor < 256 {
                    i_block[0] = (major << 8) | minor;
                } else {
                    i_block[1] = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                }
            }
            _ => {}
        }
        if node.entry.is_dir() {
            dirs_per_group[((node.ino - 1) / layout.inodes_per_group) as usize] += 1;
        }
        let entry = node.entry;
        let raw = w.inode_mut(node.ino);
        put16(raw, 0, entry.full_mode() as u16);
        put16(raw, 2, entry.uid as u16);
        put32(raw, 4, node.size as u32);
        put32(raw, 8, mtime);
        put32(raw, 12, mtime);
        put32(raw, 16, mtime);
        put16(raw, 24, entry.gid as u16);
        put16(raw, 26, node.links);
        put32(raw, 28, (used * (BLOCK / 512)) as u32);
        for (i, b) in i_block.iter().enumerate() {
            put32(raw, 40 + i * 4, *b);
        }
        put16(raw, 120, (entry.uid >> 16) as u16);
        put16(raw, 122, (entry.gid >> 16) as u16);
        tracing::trace!(path = node.path, ino = node.ino, blocks = used, "ext2 inode");
    }

    write_metadata(&mut w, last_ino, &dirs_per_group, opts);
    Ok(w.image)
}

/// Bitmaps, group descriptors and superblocks (primary and sparse backups).
fn write_metadata(w: &mut Writer, last_ino: u32, dirs_per_group: &[u32], opts: &Ext2Options) {
    let layout = w.layout;
    let ipg = layout.inodes_per_group;
    let mut descs = vec![0u8; layout.gdt_blocks as usize * BLOCK];
    let mut free_blocks_total = 0u32;
    let mut free_inodes_total = 0u32;
    for g in 0..layout.groups {
        let start = layout.group_start(g);
        let len = layout.group_len(g);
        let mut bitmap = vec![0xffu8; BLOCK];
        let mut free_blocks = 0u32;
        for i in 0..BLOCKS_PER_GROUP {
            let in_use = i >= len || w.used[(start + i) as usize];
            if !in_use {
                bitmap[(i / 8) as usize] &= !(1 << (i % 8));
                free_blocks += 1;
            }
        }
        let b = layout.block_bitmap(g);
        w.block_mut(b).copy_from_slice(&bitmap);

        let mut ibitmap = vec![0xffu8; BLOCK];
        let mut free_inodes = 0u32;
        for i in 0..ipg {
            let ino = g * ipg + i + 1;
            if ino > last_ino {
                ibitmap[(i / 8) as usize] &= !(1 << (i % 8));
                free_inodes += 1;
            }
        }
        let b = layout.inode_bitmap(g);
        w.block_mut(b).copy_from_slice(&ibitmap);

        let d = &mut descs[g as usize * DESC_SIZE..(g as usize + 1) * DESC_SIZE];
        put32(d, 0, layout.block_bitmap(g));
        put32(d, 4, layout.inode_bitmap(g));
        put32(d, 8, layout.inode_table(g));
        put16(d, 12, free_blocks as u16);
        put16(d, 14, free_inodes as u16);
        put16(d, 16, dirs_per_group[g as usize] as u16);
        free_blocks_total += free_blocks;
        free_inodes_total += free_inodes;
    }

    let mut sb = vec![0u8; BLOCK];
    put32(&mut sb, 0, layout.total_inodes());
    put32(&mut sb, 4, layout.total_blocks);
    put32(&mut sb, 8, 0); // reserved for root: none, it is a RAM disk
    put32(&mut sb, 12, free_blocks_total);
    put32(&mut sb, 16, free_inodes_total);
    put32(&mut sb, 20, 1); // first data block (1 KiB blocks)
    put32(&mut sb, 24, 0); // log2(block size) - 10
    put32(&mut sb, 28, 0); // fragment size, same
    put32(&mut sb, 32, BLOCKS_PER_GROUP);
    put32(&mut sb, 36, BLOCKS_PER_GROUP);
    put32(&mut sb, 40, ipg);
    put32(&mut sb, 44, 0); // last mount time
    put32(&mut sb, 48, opts.timestamp); // last write time
    put16(&mut sb, 52, 0); // mount count
    put16(&mut sb, 54, 0xffff); // max mount count: -1, never force a check
    put16(&mut sb, 56, 0xEF53);
    put16(&mut sb, 58, 1); // clean
    put16(&mut sb, 60, 1); // on errors: continue
    put32(&mut sb, 64, opts.timestamp); // last check
    put32(&mut sb, 72, 0); // creator OS: Linux
    put32(&mut sb, 76, 1); // revision 1 (dynamic inode sizes, features)
    put32(&mut sb, 84, FIRST_INO);
    put16(&mut sb, 88, INODE_SIZE as u16);
    put32(&mut sb, 96, FEATURE_INCOMPAT_FILETYPE);
    put32(&mut sb, 100, FEATURE_RO_COMPAT_SPARSE_SUPER);
    sb[104..120].copy_from_slice(&opts.uuid);
    sb[120..120 + opts.volume_label.len()].copy_from_slice(opts.volume_label.as_bytes());
    put32(&mut sb, 264, opts.timestamp); // mkfs time

    for g in 0..layout.groups {
        if !layout.has_super(g) {
            continue;
        }
        let start = layout.group_start(g);
        put16(&mut sb, 90, g as u16); // which group this copy lives in
        // Group 0's superblock is at byte 1024 = block 1 = the group start.
        w.block_mut(start).copy_from_slice(&sb);
        for (i, chunk) in descs.chunks(BLOCK).enumerate() {
            w.block_mut(start + 1 + i as u32).copy_from_slice(chunk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indirect_block_counts() {
        assert_eq!(blocks_with_indirect(0), 0);
        assert_eq!(blocks_with_indirect(12), 12);
        assert_eq!(blocks_with_indirect(13), 14);
        assert_eq!(blocks_with_indirect(12 + 256), 12 + 256 + 1);
        assert_eq!(blocks_with_indirect(12 + 256 + 1), 12 + 256 + 1 + 1 + 1 + 1);
        let n = 12 + 256 + 256 * 256 + 1;
        assert_eq!(blocks_with_indirect(n), n + 1 + (1 + 256) + (1 + 1 + 1));
    }

    #[test]
    fn sparse_super_groups() {
        let l = Layout::new(1 + 50 * 8192, 1000);
        let with: Vec<u32> = (0..50).filter(|g| l.has_super(*g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }

    #[test]
    fn dir_packing_never_crosses_blocks() {
        let names: Vec<String> = (0..300).map(|i| format!("file-number-{i:04}")).collect();
        let mut list = vec![];
        for (i, n) in names.iter().enumerate() {
            list.push(DirEntry { name: n, ino: 20 + i as u32, file_type: FT_REG });
        }
        let packed = pack_dir(&list, 1);
        assert_eq!(packed.len() % BLOCK, 0);
        let mut seen = 0;
        for block in packed.chunks(BLOCK) {
            let mut off = 0;
            while off < BLOCK {
                let rec = u16::from_le_bytes([block[off + 4], block[off + 5]]) as usize;
                assert!(rec >= 8 && off + rec <= BLOCK);
                seen += 1;
                off += rec;
            }
            assert_eq!(off, BLOCK);
        }
        assert_eq!(seen, 300);
        let lpf = pack_dir(&list[..2], 4);
        assert_eq!(lpf.len(), 4 * BLOCK);
        assert_eq!(u16::from_le_bytes([lpf[3 * BLOCK + 4], lpf[3 * BLOCK + 5]]), 1024);
    }

    #[test]
    fn layout_fits_contents_and_reports_size() {
        let mut t = Tree::new();
        t.add_file("big", 0o644, vec![7u8; 3 * 1024 * 1024]).unwrap();
        let img = write_ext2(&t, &Ext2Options::default()).unwrap();
        let kib = ext2_size_kib(&img);
        assert_eq!(kib as usize * 1024, img.len());
        assert!(kib > 3 * 1024 + 512 && kib < 3 * 1024 + 1024, "{kib}");
        assert_eq!(ext2_size_kib(&[0u8; 4096]), 4);
    }

    #[test]
    fn refuses_long_label_and_bad_lost_found() {
        let opts = Ext2Options { volume_label: "x".repeat(17), ..Ext2Options::default() };
        assert!(write_ext2(&Tree::new(), &opts).is_err());
        let mut t = Tree::new();
        t.add_file("lost+found", 0o644, vec![]).unwrap();
        assert!(write_ext2(&t, &Ext2Options::default()).is_err());
    }

    /// A minimal reader, independent of the writer's internals, so a round trip checks the
    /// on-disk structures (group descriptors, inode table, block maps, directories).
    mod reader {
        use super::super::*;

        pub struct Image<'a>(pub &'a [u8]);

        fn u16_at(b: &[u8], o: usize) -> u16 {
            u16::from_le_bytes([b[o], b[o + 1]])
        }

        fn u32_at(b: &[u8], o: usize) -> u32 {
            u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
        }

        impl Image<'_> {
            fn block(&self, n: u32) -> &[u8] {
                &self.0[n as usize * BLOCK..(n as usize + 1) * BLOCK]
            }

            pub fn inode(&self, ino: u32) -> &[u8] {
                let ipg = u32_at(self.0, BLOCK + 40);
                let g = (ino - 1) / ipg;
                let desc = 2 * BLOCK + g as usize * DESC_SIZE;
                let table = u32_at(self.0, desc + 8) as usize;
                let at = table * BLOCK + ((ino - 1) % ipg) as usize * INODE_SIZE;
                &self.0[at..at + INODE_SIZE]
            }

            /// Data block numbers in logical order, plus the count of indirect blocks.
            fn block_list(&self, inode: &[u8], n: usize) -> (Vec<u32>, usize) {
                let mut out = Vec::new();
                let mut indirect = 0;
                for i in 0..12 {
                    if out.len() < n {
                        out.push(u32_at(inode, 40 + 4 * i));
                    }
                }
                for (slot, level) in [(12, 1), (13, 2), (14, 3)] {
                    if out.len() < n {
                        self.walk(u32_at(inode, 40 + 4 * slot), level, n, &mut out, &mut indirect);
                    }
                }
                (out, indirect)
            }

            fn walk(&self, b: u32, level: u32, n: usize, out: &mut Vec<u32>, ind: &mut usize) {
                *ind += 1;
                let block = self.block(b);
                for i in 0..PTRS_PER_BLOCK {
                    if out.len() == n {
                        return;
                    }
                    let p = u32_at(block, i * 4);
                    if level == 1 {
                        out.push(p);
                    } else {
                        self.walk(p, level - 1, n, out, ind);
                    }
                }
            }

            /// Content and the i_blocks value it implies.
            pub fn data(&self, ino: u32) -> (Vec<u8>, u32) {
                let inode = self.inode(ino);
                let size = u32_at(inode, 4) as usize;
                let (blocks, indirect) = self.block_list(inode, size.div_ceil(BLOCK));
                let mut data: Vec<u8> = blocks.iter().flat_map(|b| self.block(*b).to_vec()).collect();
                data.truncate(size);
                (data, ((blocks.len() + indirect) * 2) as u32)
            }

            pub fn read_tree(&self) -> (Tree, Vec<String>) {
                let mut tree = Tree::new();
                let mut problems = Vec::new();
                self.read_dir(ROOT_INO, "", &mut tree, &mut problems);
                (tree, problems)
            }

            fn read_dir(&self, ino: u32, path: &str, tree: &mut Tree, problems: &mut Vec<String>) {
                let (data, _) = self.data(ino);
                let mut subdirs = 0;
                let mut off = 0;
                while off < data.len() {
                    let child = u32_at(&data, off);
                    let rec = u16_at(&data, off + 4) as usize;
                    let len = data[off + 6] as usize;
                    let name = String::from_utf8(data[off + 8..off + 8 + len].to_vec()).unwrap();
                    off += rec;
                    if child == 0 || name == "." || name == ".." {
                        continue;
                    }
                    let child_path = if path.is_empty() { name.clone() } else { format!("{path}/{name}") };
                    let inode = self.inode(child);
                    let mode = u16_at(inode, 0) as u32;
                    let uid = u16_at(inode, 2) as u32 | (u16_at(inode, 120) as u32) << 16;
                    let gid = u16_at(inode, 24) as u32 | (u16_at(inode, 122) as u32) << 16;
                    let size = u32_at(inode, 4) as usize;
                    let dev = |i: &[u8]| {
                        let (old, new) = (u32_at(i, 40), u32_at(i, 44));
                        if old != 0 {
                            (old >> 8, old & 0xff)
                        } else {
                            ((new >> 8) & 0xfff, (new & 0xff) | ((new >> 12) & 0xfff00))
                        }
                    };
                    let kind = match mode & 0o170000 {
                        S_IFDIR => EntryKind::Directory,
                        S_IFREG => EntryKind::File(self.data(child).0),
                        S_IFLNK if size <= FAST_SYMLINK_MAX => {
                            EntryKind::Symlink(String::from_utf8(inode[40..40 + size].to_vec()).unwrap())
                        }
                        S_IFLNK => EntryKind::Symlink(String::from_utf8(self.data(child).0).unwrap()),
                        S_IFCHR => {
                            let (major, minor) = dev(inode);
                            EntryKind::CharDevice { major, minor }
                        }
                        S_IFBLK => {
                            let (major, minor) = dev(inode);
                            EntryKind::BlockDevice { major, minor }
                        }
                        other => panic!("{child_path}: unknown type {other:o}"),
                    };
                    let expected_blocks = match kind {
                        EntryKind::File(_) | EntryKind::Directory => self.data(child).1,
                        EntryKind::Symlink(_) if size > FAST_SYMLINK_MAX => 2,
                        _ => 0,
                    };
                    if u32_at(inode, 28) != expected_blocks {
                        problems.push(format!("{child_path}: i_blocks {}", u32_at(inode, 28)));
                    }
                    let is_dir = matches!(kind, EntryKind::Directory);
                    tree.insert(&child_path, Entry { kind, mode: mode & 0o7777, uid, gid }).unwrap();
                    if is_dir {
                        subdirs += 1;
                        self.read_dir(child, &child_path, tree, problems);
                    } else if u16_at(inode, 26) != 1 {
                        problems.push(format!("{child_path}: links {}", u16_at(inode, 26)));
                    }
                }
                let links = u16_at(self.inode(ino), 26);
                if links != 2 + subdirs {
                    problems.push(format!("/{path}: links {links}, expected {}", 2 + subdirs));
                }
            }
        }
    }

    use proptest::prelude::*;

    fn arb_tree() -> impl Strategy<Value = Tree> {
        let names = prop::sample::select(vec!["a", "bb", "c.d", "e-f_g", "lib", "x"]);
        let op = (
            prop::collection::vec(names, 1..5),
            0u8..6,
            prop::sample::select(vec![0o755u32, 0o644, 0o4755, 0o1777, 0o600]),
            prop_oneof![Just(0usize), Just(1024), Just(12 * 1024 + 1), Just(268 * 1024 + 1), 0usize..5000,],
            (0u32..4096, 0u32..1_000_000),
            (0u32..70_000, 0u32..70_000),
        );
        prop::collection::vec(op, 0..40).prop_map(|ops| {
            let mut t = Tree::new();
            for (parts, kind, mode, size, (major, minor), (uid, gid)) in ops {
                let path = parts.join("/");
                let _ = match kind {
                    0 => t.add_dir(&path, mode),
                    1 => t.add_file(&path, mode, (0..size).map(|i| (i * 31 % 251) as u8).collect()),
                    2 => t.add_symlink(&path, &"t/".repeat(1 + size % 100)),
                    3 => t.add_char_device(&path, mode, major, minor),
                    4 => t.add_block_device(&path, mode, major % 256, minor % 256),
                    _ => t.add_file(&path, mode, Vec::new()),
                };
                let _ = t.set_owner(&path, uid, gid);
            }
            t
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trips_through_an_independent_reader(tree in arb_tree()) {
            let img = write_ext2(&tree, &Ext2Options::default()).unwrap();
            let (back, problems) = reader::Image(&img).read_tree();
            prop_assert!(problems.is_empty(), "{problems:?}");
            let want: Vec<(String, Entry)> = tree.iter().map(|(p, e)| (p.to_string(), e.clone())).collect();
            let got: Vec<(String, Entry)> = back
                .iter()
                .filter(|(p, _)| *p != "lost+found")
                .map(|(p, e)| (p.to_string(), e.clone()))
                .collect();
            prop_assert_eq!(want.len(), got.len());
            for (w, g) in want.iter().zip(&got) {
                if w.0.is_empty() {
                    continue; // the reader does not read the root's own mode
                }
                prop_assert_eq!(w, g);
            }
        }
    }
}

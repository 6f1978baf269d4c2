//! Root-free writers and readers for what a mosboot node boots from.
//!
//! The node root is assembled in memory ([`tree::Tree`]) from busybox, rendered files, tarball
//! layers and an overlay directory, then written either as a newc cpio ([`cpio`], 2.6+ kernels)
//! or as an ext2 image ([`ext2`], 2.4 kernels have no initramfs), and compressed reproducibly
//! ([`gzip`]). [`bzimage`] reads the kernel release to choose between the two; [`elf`] checks
//! that binaries can run on i386 nodes. Nothing here needs root, loop devices or mkfs.

pub mod bzimage;
pub mod cpio;
pub mod elf;
pub mod error;
pub mod ext2;
pub mod gzip;
pub mod import;
pub mod tree;

pub use bzimage::{InitrdKind, KernelInfo, inspect};
pub use cpio::write_newc;
pub use elf::{check_static_i386, check_static_i386_named};
pub use error::ImageError;
pub use ext2::{Ext2Options, ext2_size_kib, write_ext2};
pub use gzip::gzip_deterministic;
pub use import::ImportStats;
pub use tree::{Entry, EntryKind, Tree};

//! One error type for every image writer and reader, so callers can report a single message that
//! names the offending path, tarball entry or byte offset.

use std::path::PathBuf;

/// Everything that can go wrong while assembling or inspecting node images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// A path given to the tree (by code, a tarball or the overlay) is not acceptable.
    #[error("invalid path '{path}': {reason}")]
    InvalidPath { path: String, reason: String },

    /// A directory cannot be replaced by a file, symlink or device: its children would dangle.
    #[error("cannot replace directory '/{path}' with a non-directory")]
    ReplaceDirectory { path: String },

    /// Something that must be a directory (a parent of a new entry) is a file, symlink or device.
    #[error("cannot create '/{path}': '/{parent}' exists and is not a directory")]
    ParentNotDirectory { path: String, parent: String },

    /// A tarball entry would land outside the node root (absolute path, `..`, escaping link).
    #[error("tarball {tarball}: entry '{entry}' escapes the node root{detail}")]
    TarEscape { tarball: String, entry: String, detail: String },

    /// A tarball entry is readable but unusable (e.g. a hard link to a missing file).
    #[error("tarball {tarball}: entry '{entry}': {reason}")]
    TarEntry { tarball: String, entry: String, reason: String },

    /// The tarball itself could not be read (truncated, corrupt gzip, bad header).
    #[error("tarball {tarball}: {source}")]
    TarRead {
        tarball: String,
        #[source]
        source: std::io::Error,
    },

    /// The overlay directory contains something we will not copy.
    #[error("overlay {path}: {reason}")]
    Overlay { path: PathBuf, reason: String },

    /// Reading a host file or directory failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing an archive to the caller's writer failed.
    #[error("writing {what}: {source}")]
    Write {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The tree cannot be represented in the requested format (e.g. ext2 limits).
    #[error("{format}: '/{path}': {reason}")]
    Unrepresentable { format: &'static str, path: String, reason: String },

    /// Image options are out of range (e.g. a volume label longer than 16 bytes).
    #[error("{format} options: {reason}")]
    Options { format: &'static str, reason: String },

    /// A kernel image is not a bzImage or is damaged.
    #[error("kernel image: {reason}")]
    Kernel { reason: String },

    /// An executable is not what the nodes can run (see `elf::check_static_i386`).
    #[error("{name} {reason}")]
    Elf { name: String, reason: String },
}

//! `manifest.json`: what went into a build and what came out, with sizes and sha256, so an admin
//! can tell two builds apart (or prove they are the same) without diffing images.

use serde::Serialize;

use crate::pipeline::{Summary, sha256_hex};
use crate::plan::Plan;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileEntry {
    pub role: String,
    pub path: String,
    pub size: usize,
    pub sha256: String,
}

impl FileEntry {
    pub fn of(role: &str, path: &str, bytes: &[u8]) -> FileEntry {
        FileEntry { role: role.into(), path: path.into(), size: bytes.len(), sha256: sha256_hex(bytes) }
    }
}

/// No timestamps and no absolute paths of the build machine: the same inputs give the same bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub mosboot_version: String,
    pub cluster: String,
    pub nodes_in_map: usize,
    pub map: String,
    pub image: Summary,
    pub inputs: Vec<FileEntry>,
    pub outputs: Vec<FileEntry>,
}

impl Manifest {
    pub fn new(plan: &Plan, inputs: Vec<FileEntry>, outputs: Vec<FileEntry>, summary: &Summary) -> Manifest {
        Manifest {
            mosboot_version: env!("CARGO_PKG_VERSION").into(),
            cluster: plan.cluster.clone(),
            nodes_in_map: plan.node_count(),
            map: plan.map_text(),
            image: summary.clone(),
            inputs,
            outputs,
        }
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self).map(|s| s + "\n")
    }
}

//! `cluster.toml`: parsing with positions, so every problem names its key and line.
//!
//! The file is read into a spanned TOML tree and then walked key by key instead of going through
//! serde in one go: serde stops at the first error, but `mosboot check` must report all of them.
//! Unknown keys are errors (a typo must not silently fall back to a default), but they do not
//! stop the walk: a section is built whenever its known keys make sense, so `check` can go on to
//! the plan and the inputs and report their problems in the same run.
//!
//! [`types`] holds the sections, [`walk`] the typed TOML look-ups, [`sections`] one parser per
//! section.

mod sections;
mod types;
mod walk;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use crate::diag::{Diagnostics, LineIndex};
pub use sections::parse_version;
pub use types::*;
use walk::Walker;

/// A whole, syntactically valid configuration. Semantic checks live in the plan.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub cluster: ClusterSection,
    pub openmosix: OpenMosixSection,
    pub image: ImageSection,
    pub nodes: Vec<NodeSection>,
    pub serve: ServeSection,
    /// Line of every key that was present, e.g. `cluster.pool` or `node[1].ip`.
    lines: BTreeMap<String, usize>,
}

/// What reading a config gives: every problem, and the config itself whenever every section
/// could be built (even with problems such as an unknown key), so later checks can still run.
#[derive(Debug)]
pub struct Parsed {
    pub config: Option<Config>,
    pub problems: Diagnostics,
}

impl Parsed {
    /// The config only when there is no problem at all: what every command but `check` needs.
    pub fn into_result(self) -> Result<Config, Diagnostics> {
        match self.config {
            Some(cfg) if self.problems.is_empty() => Ok(cfg),
            _ => Err(self.problems),
        }
    }
}

impl Config {
    /// The line a key was written on (0 when it was left to its default).
    pub fn line_of(&self, key: &str) -> usize {
        self.lines.get(key).copied().unwrap_or(0)
    }

    /// Reads and parses a config file; every problem found is returned at once.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        Config::read(path).into_result()
    }

    /// Parses config text; `path` names the file in messages and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Diagnostics> {
        Config::parse_all(text, path).into_result()
    }

    /// Like [`Config::load`], but keeps the config when it could be built despite problems.
    pub fn read(path: &Path) -> Parsed {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse_all(&text, path),
            Err(e) => {
                let mut problems = Diagnostics::default();
                problems.push(path, 0, "", format!("cannot read the config: {e}"));
                Parsed { config: None, problems }
            }
        }
    }

    /// Like [`Config::parse`], but keeps the config when it could be built despite problems.
    pub fn parse_all(text: &str, path: &Path) -> Parsed {
        let index = LineIndex::new(text);
        let mut problems = Diagnostics::default();
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let line = e.span().map(|s| index.line(s.start)).unwrap_or(0);
                problems.push(path, line, "", format!("not valid TOML: {}", e.message().trim()));
                return Parsed { config: None, problems };
            }
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut w = Walker::new(path, &index, &mut problems);
        let root = doc.get_ref();
        w.unknown_keys(root, "", &["cluster", "openmosix", "image", "node", "serve"]);

        let empty = DeTable::default();
        let cluster_t = w.section(root, "cluster").unwrap_or(&empty);
        let cluster = w.cluster(cluster_t);
        let om_t = w.section(root, "openmosix").unwrap_or(&empty);
        let openmosix = w.openmosix(om_t);
        let image_t = w.section(root, "image").unwrap_or(&empty);
        let image = w.image(image_t, &base);
        let nodes = w.nodes(root);
        let serve_t = w.section(root, "serve").unwrap_or(&empty);
        let serve = w.serve(serve_t);

        let lines = w.into_lines();
        let config = match (cluster, openmosix, image, nodes, serve) {
            (Some(cluster), Some(openmosix), Some(image), Some(nodes), Some(serve)) => {
                Some(Config { path: path.to_path_buf(), cluster, openmosix, image, nodes, serve, lines })
            }
            _ => None,
        };
        Parsed { config, problems }
    }
}

#[cfg(test)]
mod tests;

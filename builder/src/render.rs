//! Renders the minijinja templates (built in, or replaced one by one from a user's folder) with
//! one context made from the plan, so every generated file tells the same story.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, MapMode};
use crate::diag::Diagnostics;
use crate::map::MapLine;
use crate::plan::{Plan, PlanNode};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// The templates compiled into the binary, by relative name (e.g. `node/init`).
pub fn builtin_templates() -> &'static [(&'static str, &'static str)] {
    embedded::TEMPLATES
}

/// The kernel config fragments compiled into the binary, by file name.
pub fn builtin_fragments() -> &'static [(&'static str, &'static str)] {
    embedded::KERNEL_FRAGMENTS
}

/// Built-in templates in this folder are the server configs of `mosboot export`: rendered from
/// their own context ([`Templates::export`]), never part of a build, not replaced by a user's.
pub const EXPORT_DIR: &str = "export/";

/// A template whose file name starts with this is a partial: never rendered on its own, but
/// `{% include %}`-able by the templates of its folder.
const PARTIAL_MARK: char = '_';

fn is_partial(name: &str) -> bool {
    name.rsplit('/').next().is_some_and(|f| f.starts_with(PARTIAL_MARK))
}

/// `export` for `export/dnsmasq.conf`; empty for a name without a folder.
fn folder_of(name: &str) -> &str {
    name.rsplit_once('/').map(|(f, _)| f).unwrap_or("")
}

/// Template sources: built-ins with user overrides applied.
pub struct Templates {
    sources: BTreeMap<String, (String, Option<PathBuf>)>,
}

impl Templates {
    /// Built-ins, overridden by same-named files under `dir`. A file in `dir` that matches no
    /// built-in is an error: it would otherwise be silently ignored.
    pub fn load(dir: Option<&Path>, key_file: &Path, key_line: usize) -> Result<Templates, Diagnostics> {
        let mut sources = builtin_sources(|n| !n.starts_with(EXPORT_DIR));
        let mut d = Diagnostics::default();
        if let Some(dir) = dir {
            if !dir.is_dir() {
                d.push(key_file, key_line, "image.templates", format!("{} is not a folder", dir.display()));
                return Err(d);
            }
            let mut files = Vec::new();
            walk(dir, Path::new(""), &mut files);
            for rel in files {
                let name = rel.to_string_lossy().replace('\\', "/");
                let path = dir.join(&rel);
                if name.ends_with(".md") {
                    continue;
                }
                if !sources.contains_key(&name) {
                    let known: Vec<&str> = sources.keys().map(String::as_str).collect();
                    d.push(
                        &path,
                        0,
                        "image.templates",
                        format!("no built-in template is called '{name}' (known: {})", known.join(", ")),
                    );
                    continue;
                }
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        sources.insert(name, (text, Some(path)));
                    }
                    Err(e) => d.push(&path, 0, "image.templates", format!("cannot read: {e}")),
                }
            }
        }
        if d.is_empty() { Ok(Templates { sources }) } else { Err(d) }
    }

    /// The built-in templates of `mosboot export`.
    pub fn export() -> Templates {
        Templates { sources: builtin_sources(|n| n.starts_with(EXPORT_DIR)) }
    }

    /// Renders one template; a failure names the template file and line.
    pub fn render(&self, name: &str, ctx: &Value) -> Result<String, Diagnostics> {
        let mut d = Diagnostics::default();
        let Some((src, path)) = self.sources.get(name) else {
            d.push(
                Path::new("templates"),
                0,
                "",
                format!("built-in template '{name}' is missing from this build"),
            );
            return Err(d);
        };
        let shown = path.clone().unwrap_or_else(|| PathBuf::from(format!("<built-in templates/{name}>")));
        let mut env = environment();
        for (n, (partial, _)) in &self.sources {
            if is_partial(n) && folder_of(n) == folder_of(name) {
                // A broken partial shows up as an error of the template that includes it.
                let _ = env.add_template(n, partial);
            }
        }
        if let Err(e) = env.add_template(name, src) {
            d.push(
                &shown,
                e.line().unwrap_or(0),
                "",
                format!("template error: {}", e.detail().unwrap_or(&e.to_string())),
            );
            return Err(d);
        }
        let result = env.get_template(name).and_then(|t| t.render(ctx));
        result.map_err(|e| {
            d.push(
                &shown,
                e.line().unwrap_or(0),
                "",
                format!(
                    "template error: {}",
                    e.detail().map(str::to_string).unwrap_or_else(|| e.to_string())
                ),
            );
            d
        })
    }

    /// The templates that render on their own (partials left out).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str).filter(|n| !is_partial(n))
    }
}

fn builtin_sources(keep: impl Fn(&str) -> bool) -> BTreeMap<String, (String, Option<PathBuf>)> {
    builtin_templates()
        .iter()
        .filter(|(n, _)| keep(n))
        .map(|(n, s)| (n.to_string(), (s.to_string(), None)))
        .collect()
}

fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            walk(&p, &rel.join(e.file_name()), out);
        } else {
            out.push(rel.join(e.file_name()));
        }
    }
}

/// The environment every template renders in: strict about undefined names (a typo in an
/// override must fail the build, not produce an empty string), with the `sh` quoting filter and
/// the `bullet` filter for comment notes.
fn environment<'s>() -> Environment<'s> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // Nothing we write is HTML; never escape, whatever a template's file name looks like.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("sh", shell_quote);
    env.add_filter("bullet", comment_bullet);
    env
}

/// `{% filter bullet %}...{% endfilter %}`: the text as one `# - ` comment bullet, its words
/// wrapped into lines of at most about 100 columns, continued with `#   `.
pub fn comment_bullet(text: &str) -> String {
    const WIDTH: usize = 100;
    // Each word is appended with a space before it, giving "# - word" and "#   word".
    const FIRST: &str = "# -";
    const REST: &str = "#  ";
    let mut out = String::new();
    let mut line = String::from(FIRST);
    for word in text.split_whitespace() {
        if line.len() > FIRST.len() && line.len() + 1 + word.len() > WIDTH {
            out.push_str(&line);
            out.push('\n');
            line = String::from(REST);
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
    out
}

/// Single-quotes a value for POSIX sh: every `'` becomes `'\''`. Used for every value that is
/// interpolated into shell code on the node.
pub fn shell_quote(v: Value) -> String {
    let s = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[derive(Serialize)]
struct ClusterCtx {
    name: String,
    interface: String,
    server_ip: String,
    prefix: u8,
    netmask: String,
    broadcast: String,
    node_count: usize,
}

#[derive(Serialize)]
struct NodeCtx {
    node: u32,
    ip: String,
    hostname: String,
    mac: String,
    yardstick: String,
}

#[derive(Serialize)]
struct MapCtx {
    lines: Vec<MapLine>,
    text: String,
    sha256: String,
}

#[derive(Serialize)]
struct OpenMosixCtx {
    version: String,
    proc: String,
    map_files: Vec<String>,
    mfs: bool,
    lstay: bool,
    map_mode: String,
}

/// Facts about the image that templates need; `boot` is filled once the initrd exists.
#[derive(Clone, Serialize)]
pub struct ImageCtx {
    pub initrd_format: String,
    pub init_path: String,
    pub kernel_release: String,
}

/// Boot-loader facts: file names on the TFTP server, the full kernel command line and the
/// sources boot.ipxe tries in turn (see [`crate::pipeline::boot_sources`]).
#[derive(Clone, Serialize)]
pub struct BootCtx {
    pub kernel: String,
    pub initrd: String,
    pub append: String,
    pub sources: Vec<BootSource>,
}

/// One way boot.ipxe fetches the kernel and the initrd: URL prefixes the file names are appended
/// to (`""` = TFTP relative to the script), and what its failure message calls it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BootSource {
    pub kernel: String,
    pub initrd: String,
    pub name: String,
}

impl BootSource {
    /// Both files from one URL prefix.
    pub fn both(prefix: String) -> Self {
        let name = if prefix.is_empty() { "TFTP".to_string() } else { prefix.clone() };
        BootSource { kernel: prefix.clone(), initrd: prefix, name }
    }
}

/// The map file names the node's openMosix userland looks for, by version: MOSIX-era kernels
/// (up to 2.4.16) read mosix.map (early openMosix: hpc.map); later userland reads openmosix.map
/// first. Writing every name a version may read, with the same bytes, is harmless.
pub fn map_files(version: (u32, u32, u32)) -> Vec<String> {
    if version < (2, 4, 17) {
        vec!["/etc/mosix.map".into(), "/etc/hpc.map".into()]
    } else {
        vec!["/etc/openmosix.map".into(), "/etc/mosix.map".into(), "/etc/hpc.map".into()]
    }
}

/// `/proc/hpc` from 2.4.17 on, `/proc/mosix` before.
pub fn proc_dir(version: (u32, u32, u32)) -> &'static str {
    if version < (2, 4, 17) { "/proc/mosix" } else { "/proc/hpc" }
}

/// Builds the template context from the plan (and the image facts, when known).
pub fn context(cfg: &Config, plan: &Plan, image: &ImageCtx, boot: &BootCtx) -> Value {
    let map_text = plan.map_text();
    let nodes: Vec<NodeCtx> = plan.nodes.iter().map(node_ctx).collect();
    let server = &plan.nodes[0];
    let om = &cfg.openmosix;
    Value::from_serialize(minijinja::context! {
        cluster => ClusterCtx {
            name: plan.cluster.clone(),
            interface: plan.interface.clone(),
            server_ip: plan.server.to_string(),
            prefix: plan.prefix_len,
            netmask: plan.netmask.to_string(),
            broadcast: plan.broadcast.to_string(),
            node_count: plan.node_count(),
        },
        server => minijinja::context! { ip => plan.server.to_string(), hostname => server.hostname.clone() },
        nodes => nodes,
        map => MapCtx { lines: plan.map.clone(), sha256: hex::encode(Sha256::digest(map_text.as_bytes())), text: map_text },
        openmosix => OpenMosixCtx {
            version: om.version.clone(),
            proc: proc_dir(om.version_parts).to_string(),
            map_files: map_files(om.version_parts),
            mfs: om.mfs,
            lstay: om.lstay,
            map_mode: match om.map { MapMode::Static => "static".into(), MapMode::Auto => "auto".into() },
        },
        image => image.clone(),
        boot => boot.clone(),
        report => minijinja::context! { path => netboot::tftp::REPORT_DIR, interval => netboot::node_report::REPORT_INTERVAL_SECS },
    })
}

fn node_ctx(n: &PlanNode) -> NodeCtx {
    NodeCtx {
        node: n.number,
        ip: n.ip.to_string(),
        hostname: n.hostname.clone(),
        mac: n.mac.map(|m| m.to_string()).unwrap_or_default(),
        yardstick: n.yardstick.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{PINNED_NODE, SAMPLE, load};

    /// Snapshots of every generated text for the SPEC's LTSP sample (with one pinned node), so a
    /// change to any template or to the context shows up as a reviewable diff.
    #[test]
    fn generated_files_for_the_ltsp_sample() {
        let text = SAMPLE.replace("192.168.0.1-192.168.0.253", "192.168.0.1-192.168.0.5").replace(
            "lease_time = \"12h\"",
            "lease_time = \"12h\"\nrouter = \"192.168.0.254\"\ndns = [\"192.168.0.254\"]",
        ) + PINNED_NODE;
        let (cfg, plan) = load(&text);
        let image = ImageCtx {
            initrd_format: "cpio".into(),
            init_path: "/init".into(),
            kernel_release: "6.1.0".into(),
        };
        // Every transport on, so the snapshot shows boot.ipxe's whole source list.
        let mut cfg = cfg;
        cfg.serve.http = Some("0.0.0.0:8080".parse().expect("addr"));
        cfg.serve.multicast = Some("239.255.69.1:1758".parse().expect("group"));
        let boot = BootCtx {
            kernel: "vmlinuz".into(),
            initrd: "initrd.gz".into(),
            append: "console=tty0 console=ttyS0,115200n8".into(),
            sources: crate::pipeline::boot_sources(&cfg, &plan),
        };
        let ctx = context(&cfg, &plan, &image, &boot);
        let t = Templates::load(None, Path::new("c"), 0).expect("templates");
        for name in t.names().map(str::to_string).collect::<Vec<_>>() {
            // The floppy's stage-1 scripts have their own, cluster-free context.
            let ctx = if name.starts_with("floppy/") { crate::floppy::stage1_context() } else { ctx.clone() };
            let out = t.render(&name, &ctx).expect("renders");
            insta::assert_snapshot!(name.replace('/', "__"), out);
        }
    }

    #[test]
    fn shell_quote_neutralises_everything() {
        assert_eq!(shell_quote(Value::from("a b")), "'a b'");
        assert_eq!(shell_quote(Value::from("it's $(rm -rf /)")), r"'it'\''s $(rm -rf /)'");
        assert_eq!(shell_quote(Value::from(7)), "'7'");
    }

    #[test]
    fn map_files_follow_the_version() {
        assert_eq!(map_files((2, 4, 26))[0], "/etc/openmosix.map");
        assert_eq!(map_files((2, 4, 16)), vec!["/etc/mosix.map".to_string(), "/etc/hpc.map".to_string()]);
        assert_eq!(proc_dir((2, 4, 16)), "/proc/mosix");
        assert_eq!(proc_dir((2, 4, 17)), "/proc/hpc");
    }
}

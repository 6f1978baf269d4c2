//! Embeds every file under `templates/` and `kernel-configs/` into the binary, so `mosboot` works
//! from anywhere while users can still override single templates from a folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, rel: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = rel.join(e.file_name());
        if path.is_dir() {
            collect(&path, &name, out);
        } else if path.is_file() {
            let n = name.to_string_lossy().to_string();
            if !n.ends_with(".md") && !n.starts_with('.') && !n.contains("/.") {
                out.push((n, path));
            }
        }
    }
}

fn table(name: &str, dir: &Path, code: &mut String) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    collect(dir, Path::new(""), &mut files);
    let _ = writeln!(code, "pub static {name}: &[(&str, &str)] = &[");
    for (n, p) in files {
        let _ = writeln!(code, "    ({n:?}, include_str!({:?})),", p.display().to_string());
    }
    let _ = writeln!(code, "];");
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let root = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut code = String::new();
    table("TEMPLATES", &root.join("templates"), &mut code);
    table("KERNEL_FRAGMENTS", &root.join("kernel-configs"), &mut code);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into())).join("embedded.rs");
    if let Err(e) = std::fs::write(&out, code) {
        panic!("cannot write {}: {e}", out.display());
    }
}

//! `mosboot kernel-config`: merges kernel config fragments (CPU class, NICs, netboot, openMosix)
//! into one fragment. Two fragments that set one symbol to different values is an error naming
//! both, because silently letting the last one win is how a kernel loses its NIC driver.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Failure;
use crate::render::builtin_fragments;

/// A symbol's value in a fragment: `y`, `m`, a string/number, or unset (`# CONFIG_X is not set`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub symbol: String,
    pub value: Option<String>,
    pub file: String,
    pub line: usize,
}

/// Parses a fragment: `CONFIG_X=value` lines and `# CONFIG_X is not set`; other `#` lines are
/// comments; anything else is an error with its line.
pub fn parse_fragment(name: &str, text: &str) -> Result<Vec<Setting>, Failure> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# CONFIG_") {
            if let Some(sym) = rest.strip_suffix(" is not set") {
                out.push(Setting {
                    symbol: format!("CONFIG_{sym}"),
                    value: None,
                    file: name.into(),
                    line: i + 1,
                });
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((sym, val)) if sym.starts_with("CONFIG_") && !sym.contains(' ') && !val.is_empty() => {
                out.push(Setting {
                    symbol: sym.into(),
                    value: Some(val.into()),
                    file: name.into(),
                    line: i + 1,
                });
            }
            _ => {
                return Err(Failure::Usage(format!("{name}:{}: not a kernel config line: '{line}'", i + 1)));
            }
        }
    }
    Ok(out)
}

/// Reads a fragment from `dir` when given, else from the built-in set.
fn fragment(dir: Option<&Path>, name: &str) -> Result<(String, String), Failure> {
    if let Some(dir) = dir {
        let p = dir.join(name);
        return match std::fs::read_to_string(&p) {
            Ok(t) => Ok((p.display().to_string(), t)),
            Err(e) => Err(Failure::Usage(format!("{}: {e}", p.display()))),
        };
    }
    builtin_fragments()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, t)| (format!("kernel-configs/{n}"), t.to_string()))
        .ok_or_else(|| {
            let known: Vec<&str> = builtin_fragments().iter().map(|(n, _)| *n).collect();
            Failure::Usage(format!("no kernel config fragment '{name}' (known: {})", known.join(", ")))
        })
}

/// The fragment names a request maps to, in merge order.
pub fn fragment_names(cpu: &str, nics: &[String], openmosix: bool) -> Vec<String> {
    let mut names = vec![format!("cpu-{cpu}"), "netboot-2.4".to_string()];
    names.extend(nics.iter().map(|n| format!("nic-{}", n.trim().to_ascii_lowercase())));
    if openmosix {
        names.push("openmosix-2.4".into());
    }
    names
}

/// Merges fragments; returns the merged text.
pub fn merge(fragments: &[(String, String)]) -> Result<String, Failure> {
    let mut merged: BTreeMap<String, Setting> = BTreeMap::new();
    let mut order = Vec::new();
    let mut conflicts = Vec::new();
    for (name, text) in fragments {
        for s in parse_fragment(name, text)? {
            match merged.get(&s.symbol) {
                Some(prev) if prev.value != s.value => conflicts.push(format!(
                    "{} is {} in {}:{} but {} in {}:{}",
                    s.symbol,
                    show(&prev.value),
                    prev.file,
                    prev.line,
                    show(&s.value),
                    s.file,
                    s.line
                )),
                Some(_) => {}
                None => {
                    order.push(s.symbol.clone());
                    merged.insert(s.symbol.clone(), s);
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(Failure::Usage(format!(
            "conflicting kernel config fragments:\n  {}",
            conflicts.join("\n  ")
        )));
    }
    let mut out = String::from("# merged by mosboot kernel-config from:");
    for (name, _) in fragments {
        out.push(' ');
        out.push_str(name);
    }
    out.push('\n');
    for sym in order {
        if let Some(s) = merged.get(&sym) {
            match &s.value {
                Some(v) => out.push_str(&format!("{sym}={v}\n")),
                None => out.push_str(&format!("# {sym} is not set\n")),
            }
        }
    }
    Ok(out)
}

fn show(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "not set".into())
}

/// The `kernel-config` command.
pub fn run(cpu: &str, nics: &[String], openmosix: bool, dir: Option<&Path>) -> Result<String, Failure> {
    if !["486", "586", "686"].contains(&cpu) {
        return Err(Failure::Usage(format!("--cpu must be 486, 586 or 686, not '{cpu}'")));
    }
    let frags = fragment_names(cpu, nics, openmosix)
        .iter()
        .map(|n| fragment(dir, n))
        .collect::<Result<Vec<_>, _>>()?;
    merge(&frags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_dedups() {
        let a = ("a".to_string(), "# cpu\nCONFIG_M486=y\n# CONFIG_SMP is not set\n".to_string());
        let b = ("b".to_string(), "CONFIG_M486=y\nCONFIG_NE2000=y\n".to_string());
        let out = merge(&[a, b]).expect("merge");
        assert!(out.contains("CONFIG_M486=y\n# CONFIG_SMP is not set\nCONFIG_NE2000=y\n"), "{out}");
    }

    #[test]
    fn conflicts_name_both_files() {
        let a = ("cpu-486".to_string(), "CONFIG_SMP=y\n".to_string());
        let b = ("openmosix-2.4".to_string(), "\n# CONFIG_SMP is not set\n".to_string());
        let err = merge(&[a, b]).expect_err("conflict").to_string();
        assert!(err.contains("cpu-486:1") && err.contains("openmosix-2.4:2"), "{err}");
    }

    #[test]
    fn garbage_lines_are_errors() {
        assert!(parse_fragment("x", "CONFIG_A=y\nhello\n").is_err());
    }
}

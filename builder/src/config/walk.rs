//! Typed look-ups in the spanned TOML tree. Each records the key's line and, on a wrong type,
//! records a problem and returns `None`; the walk itself always goes on.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostics, LineIndex};

/// Walks the spanned tree, recording lines and problems.
pub(super) struct Walker<'a> {
    path: &'a Path,
    index: &'a LineIndex,
    diags: &'a mut Diagnostics,
    lines: BTreeMap<String, usize>,
}

pub(super) type Val<'i> = Spanned<DeValue<'i>>;

impl<'a> Walker<'a> {
    pub(super) fn new(path: &'a Path, index: &'a LineIndex, diags: &'a mut Diagnostics) -> Self {
        Walker { path, index, diags, lines: BTreeMap::new() }
    }

    /// The line of every key seen, for [`super::Config::line_of`].
    pub(super) fn into_lines(self) -> BTreeMap<String, usize> {
        self.lines
    }

    /// The line a key was recorded on (0 when absent).
    pub(super) fn line_of(&self, full: &str) -> usize {
        self.lines.get(full).copied().unwrap_or(0)
    }

    pub(super) fn err(&mut self, line: usize, key: &str, msg: impl Into<String>) {
        self.diags.push(self.path, line, key, msg);
    }

    pub(super) fn line(&self, v: &Val<'_>) -> usize {
        self.index.line(v.span().start)
    }

    pub(super) fn unknown_keys(&mut self, table: &DeTable<'_>, prefix: &str, known: &[&str]) {
        for (k, _) in table.iter() {
            if !known.contains(&k.get_ref().as_ref()) {
                let line = self.index.line(k.span().start);
                let full = if prefix.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{prefix}.{}", k.get_ref())
                };
                self.err(line, &full, format!("unknown key (known here: {})", known.join(", ")));
            }
        }
    }

    pub(super) fn section<'t, 'i>(&mut self, root: &'t DeTable<'i>, name: &str) -> Option<&'t DeTable<'i>> {
        let v = root.get(name)?;
        match v.get_ref().as_table() {
            Some(t) => Some(t),
            None => {
                let line = self.line(v);
                self.err(line, name, format!("must be a table ([{name}])"));
                None
            }
        }
    }

    /// Looks a key up, records its line, and returns it.
    pub(super) fn get<'t, 'i>(&mut self, t: &'t DeTable<'i>, key: &str, full: &str) -> Option<&'t Val<'i>> {
        let v = t.get(key)?;
        let line = self.line(v);
        self.lines.insert(full.to_string(), line);
        Some(v)
    }

    /// Looks a key up and converts it with `as_type`; a value of another type is the problem
    /// "must be <what>, not <its type>". `Some(None)` when absent, `None` after a problem.
    fn typed<'t, 'i, T>(
        &mut self,
        t: &'t DeTable<'i>,
        key: &str,
        full: &str,
        what: &str,
        as_type: impl FnOnce(&'t DeValue<'i>) -> Option<T>,
    ) -> Option<Option<(T, usize)>> {
        let Some(v) = self.get(t, key, full) else { return Some(None) };
        let line = self.line(v);
        match as_type(v.get_ref()) {
            Some(x) => Some(Some((x, line))),
            None => {
                let ty = v.get_ref().type_str();
                self.err(line, full, format!("must be {what}, not {ty}"));
                None
            }
        }
    }

    pub(super) fn string(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        full: &str,
    ) -> Option<Option<(String, usize)>> {
        self.typed(t, key, full, "a string", |v| v.as_str().map(str::to_string))
    }

    pub(super) fn required_string(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        full: &str,
    ) -> Option<(String, usize)> {
        match self.string(t, key, full) {
            Some(Some(s)) => Some(s),
            Some(None) => {
                self.err(0, full, "is required");
                None
            }
            None => None,
        }
    }

    pub(super) fn boolean(&mut self, t: &DeTable<'_>, key: &str, full: &str, default: bool) -> Option<bool> {
        let found = self.typed(t, key, full, "true or false", DeValue::as_bool)?;
        Some(found.map_or(default, |(b, _)| b))
    }

    /// A whole number in `min..=max` (`default` when absent); out of range is the problem
    /// "must be from MIN to MAX" plus `why`.
    pub(super) fn count(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        full: &str,
        default: u64,
        (min, max): (u64, u64),
        why: &str,
    ) -> Option<(u64, usize)> {
        let found = self.typed(t, key, full, "a whole number", DeValue::as_integer)?;
        let Some((n, line)) = found else { return Some((default, 0)) };
        match u64::from_str_radix(n.as_str(), n.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some((n, line)),
            _ => {
                self.err(line, full, format!("must be from {min} to {max}{why}"));
                None
            }
        }
    }

    pub(super) fn string_list(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        full: &str,
    ) -> Option<Vec<(String, usize)>> {
        let Some((arr, _)) = self.typed(t, key, full, "a list of strings", DeValue::as_array)? else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in arr.iter() {
            let l = self.line(item);
            match item.get_ref().as_str() {
                Some(s) => out.push((s.to_string(), l)),
                None => {
                    self.err(l, full, "must be a list of strings");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    pub(super) fn ip(&mut self, s: &str, line: usize, full: &str) -> Option<Ipv4Addr> {
        match s.trim().parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(line, full, format!("'{s}' is not an IPv4 address"));
                None
            }
        }
    }

    /// One of a fixed set of words, `default` when the key is absent.
    pub(super) fn choice<T: Copy>(
        &mut self,
        t: &DeTable<'_>,
        key: &str,
        full: &str,
        default: T,
        options: &[(&str, T)],
    ) -> Option<T> {
        let (s, l) = match self.string(t, key, full)? {
            None => return Some(default),
            Some(found) => found,
        };
        if let Some((_, v)) = options.iter().find(|(name, _)| *name == s) {
            return Some(*v);
        }
        let names: Vec<String> = options.iter().map(|(name, _)| format!("\"{name}\"")).collect();
        self.err(l, full, format!("'{s}' is not one of {}", names.join(", ")));
        None
    }
}

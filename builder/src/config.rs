//! `cluster.toml`: parsing with positions, so every problem names its key and line.
//!
//! The file is read into a spanned TOML tree and then walked key by key instead of going through
//! serde in one go: serde stops at the first error, but `mosboot check` must report all of them.
//! Unknown keys are errors (a typo must not silently fall back to a default).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netboot::mac::MacAddr;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostics, LineIndex};

/// How DHCP is served on the lab interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DhcpMode {
    /// mosboot hands out addresses and boot information.
    Full,
    /// Another server (a school's router) hands out addresses; mosboot only answers PXE clients.
    Proxy,
    /// No DHCP from mosboot (a site that keeps its own server, see `export`).
    Off,
}

/// How the cluster map reaches the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapMode {
    /// Written from the address plan; identical on every node.
    Static,
    /// Nodes discover each other with omdiscd (needs multicast).
    Auto,
}

/// The initrd format; `Auto` decides from the kernel release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitrdChoice {
    Auto,
    Cpio,
    Ext2,
}

/// How node hostnames are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostnameRule {
    /// `ws001`..`ws254` from the last octet (the LTSP dhcpd.conf expression).
    Ltsp,
    /// `mosix<N>` with N the node number.
    Mosix,
    /// A minijinja template over `ip`, `octets`, `node`, `mac`.
    Template(String),
}

/// `[cluster]`.
#[derive(Clone, Debug)]
pub struct ClusterSection {
    pub name: String,
    pub interface: String,
    pub server: Ipv4Addr,
    pub prefix_len: u8,
    /// Pool ranges (inclusive), in the order written.
    pub pool: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub hostname: HostnameRule,
    pub lease_time: Duration,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub dhcp: DhcpMode,
}

/// `[openmosix]`.
#[derive(Clone, Debug)]
pub struct OpenMosixSection {
    pub version: String,
    /// (major, minor, patch) parsed from `version`.
    pub version_parts: (u32, u32, u32),
    pub mfs: bool,
    pub lstay: bool,
    pub map: MapMode,
}

/// `[image]`; relative paths are already resolved against the config file's folder.
#[derive(Clone, Debug)]
pub struct ImageSection {
    pub kernel: PathBuf,
    pub modules: Option<PathBuf>,
    pub busybox: PathBuf,
    pub userland: Vec<PathBuf>,
    pub overlay: Option<PathBuf>,
    pub templates: Option<PathBuf>,
    pub initrd: InitrdChoice,
    pub cmdline: String,
    pub out: PathBuf,
}

/// One `[[node]]` (a pinned node).
#[derive(Clone, Debug)]
pub struct NodeSection {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
    pub yardstick: Option<String>,
}

/// `[serve]`: options of `mosboot serve` that belong with the cluster.
#[derive(Clone, Debug, Default)]
pub struct ServeSection {
    /// Where the status page listens (off when absent).
    pub status: Option<std::net::SocketAddr>,
    /// Allow a status address other than loopback.
    pub status_public: bool,
}

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

impl Config {
    /// The line a key was written on (0 when it was left to its default).
    pub fn line_of(&self, key: &str) -> usize {
        self.lines.get(key).copied().unwrap_or(0)
    }

    /// Reads and parses a config file; every problem found is returned at once.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let mut d = Diagnostics::default();
            d.push(path, 0, "", format!("cannot read the config: {e}"));
            d
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` names the file in messages and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, Diagnostics> {
        let index = LineIndex::new(text);
        let mut diags = Diagnostics::default();
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(e) => {
                let line = e.span().map(|s| index.line(s.start)).unwrap_or(0);
                diags.push(path, line, "", format!("not valid TOML: {}", e.message().trim()));
                return Err(diags);
            }
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut w = Walker { path, index: &index, diags: &mut diags, lines: BTreeMap::new() };
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

        let lines = std::mem::take(&mut w.lines);
        match (cluster, openmosix, image, nodes, serve) {
            (Some(cluster), Some(openmosix), Some(image), Some(nodes), Some(serve)) if diags.is_empty() => {
                Ok(Config { path: path.to_path_buf(), cluster, openmosix, image, nodes, serve, lines })
            }
            _ => Err(diags),
        }
    }
}

/// Walks the spanned tree, recording lines and problems.
struct Walker<'a> {
    path: &'a Path,
    index: &'a LineIndex,
    diags: &'a mut Diagnostics,
    lines: BTreeMap<String, usize>,
}

type Val<'i> = Spanned<DeValue<'i>>;

impl<'a> Walker<'a> {
    fn err(&mut self, line: usize, key: &str, msg: impl Into<String>) {
        self.diags.push(self.path, line, key, msg);
    }

    fn line(&self, v: &Val<'_>) -> usize {
        self.index.line(v.span().start)
    }

    fn unknown_keys(&mut self, table: &DeTable<'_>, prefix: &str, known: &[&str]) {
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

    fn section<'t, 'i>(&mut self, root: &'t DeTable<'i>, name: &str) -> Option<&'t DeTable<'i>> {
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
    fn get<'t, 'i>(&mut self, t: &'t DeTable<'i>, key: &str, full: &str) -> Option<&'t Val<'i>> {
        let v = t.get(key)?;
        let line = self.line(v);
        self.lines.insert(full.to_string(), line);
        Some(v)
    }

    fn string(&mut self, t: &DeTable<'_>, key: &str, full: &str) -> Option<Option<(String, usize)>> {
        match self.get(t, key, full) {
            None => Some(None),
            Some(v) => {
                let line = self.line(v);
                match v.get_ref().as_str() {
                    Some(s) => Some(Some((s.to_string(), line))),
                    None => {
                        let ty = v.get_ref().type_str();
                        self.err(line, full, format!("must be a string, not {ty}"));
                        None
                    }
                }
            }
        }
    }

    fn required_string(&mut self, t: &DeTable<'_>, key: &str, full: &str) -> Option<(String, usize)> {
        match self.string(t, key, full) {
            Some(Some(s)) => Some(s),
            Some(None) => {
                self.err(0, full, "is required");
                None
            }
            None => None,
        }
    }

    fn boolean(&mut self, t: &DeTable<'_>, key: &str, full: &str, default: bool) -> Option<bool> {
        match self.get(t, key, full) {
            None => Some(default),
            Some(v) => match v.get_ref().as_bool() {
                Some(b) => Some(b),
                None => {
                    let line = self.line(v);
                    let ty = v.get_ref().type_str();
                    self.err(line, full, format!("must be true or false, not {ty}"));
                    None
                }
            },
        }
    }

    fn string_list(&mut self, t: &DeTable<'_>, key: &str, full: &str) -> Option<Vec<(String, usize)>> {
        let Some(v) = self.get(t, key, full) else { return Some(Vec::new()) };
        let line = self.line(v);
        let Some(arr) = v.get_ref().as_array() else {
            let ty = v.get_ref().type_str();
            self.err(line, full, format!("must be a list of strings, not {ty}"));
            return None;
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

    fn ip(&mut self, s: &str, line: usize, full: &str) -> Option<Ipv4Addr> {
        match s.trim().parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(line, full, format!("'{s}' is not an IPv4 address"));
                None
            }
        }
    }

    fn cluster(&mut self, t: &DeTable<'_>) -> Option<ClusterSection> {
        self.unknown_keys(
            t,
            "cluster",
            &["name", "interface", "server", "pool", "hostname", "lease_time", "router", "dns", "dhcp"],
        );
        let name = self.string(t, "name", "cluster.name");
        let name = name.map(|n| n.unwrap_or(("mosboot".into(), 0)));
        if let Some((n, l)) = &name {
            let valid = !n.is_empty()
                && n.len() <= 32
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                self.err(*l, "cluster.name", "must be 1-32 letters, digits, '-' or '_'");
            }
        }
        let interface = self.required_string(t, "interface", "cluster.interface");
        if let Some((i, l)) = &interface
            && (i.is_empty() || i.len() > 15 || i.contains(['/', ' ']))
        {
            self.err(*l, "cluster.interface", format!("'{i}' is not a network interface name"));
        }
        let server = self.required_string(t, "server", "cluster.server").and_then(|(s, l)| {
            match s.parse::<ipnet::Ipv4Net>() {
                Ok(net) if net.prefix_len() >= 8 && net.prefix_len() <= 30 => {
                    Some((net.addr(), net.prefix_len()))
                }
                Ok(_) => {
                    self.err(l, "cluster.server", "the prefix must be between /8 and /30");
                    None
                }
                Err(_) => {
                    self.err(
                        l,
                        "cluster.server",
                        format!("'{s}' is not an address with prefix, like 192.168.0.254/24"),
                    );
                    None
                }
            }
        });
        let pool = self.required_string(t, "pool", "cluster.pool").and_then(|(s, l)| self.pool(&s, l));
        let hostname = self.string(t, "hostname", "cluster.hostname").map(|h| match h {
            None => HostnameRule::Ltsp,
            Some((s, _)) if s == "ltsp" => HostnameRule::Ltsp,
            Some((s, _)) if s == "mosix" => HostnameRule::Mosix,
            Some((s, _)) => HostnameRule::Template(s),
        });
        let lease_time = match self.string(t, "lease_time", "cluster.lease_time") {
            None => None,
            Some(None) => Some(Duration::from_secs(12 * 3600)),
            Some(Some((s, l))) => match parse_duration(&s) {
                Some(d) if d >= Duration::from_secs(60) => Some(d),
                Some(_) => {
                    self.err(l, "cluster.lease_time", "must be at least 1m");
                    None
                }
                None => {
                    self.err(
                        l,
                        "cluster.lease_time",
                        format!("'{s}' is not a duration like 12h, 30m, 1d or 3600s"),
                    );
                    None
                }
            },
        };
        let router = match self.string(t, "router", "cluster.router") {
            None => None,
            Some(None) => Some(None),
            Some(Some((s, l))) => self.ip(&s, l, "cluster.router").map(Some),
        };
        let dns = self.string_list(t, "dns", "cluster.dns").and_then(|list| {
            let parsed: Vec<Option<Ipv4Addr>> =
                list.iter().map(|(s, l)| self.ip(s, *l, "cluster.dns")).collect();
            parsed.into_iter().collect::<Option<Vec<_>>>()
        });
        let dhcp = match self.string(t, "dhcp", "cluster.dhcp") {
            None => None,
            Some(None) => Some(DhcpMode::Full),
            Some(Some((s, l))) => match s.as_str() {
                "full" => Some(DhcpMode::Full),
                "proxy" => Some(DhcpMode::Proxy),
                "off" => Some(DhcpMode::Off),
                _ => {
                    self.err(l, "cluster.dhcp", format!("'{s}' is not one of \"full\", \"proxy\", \"off\""));
                    None
                }
            },
        };
        if let (Some((srv, plen)), Some(Some(r))) = (&server, &router)
            && let Ok(net) = ipnet::Ipv4Net::new(*srv, *plen)
            && !net.contains(r)
        {
            let line = self.lines.get("cluster.router").copied().unwrap_or(0);
            self.err(line, "cluster.router", format!("{r} is outside the server's subnet {}", net.trunc()));
        }
        let (name, _) = name?;
        let (interface, _) = interface?;
        let (server, prefix_len) = server?;
        Some(ClusterSection {
            name,
            interface,
            server,
            prefix_len,
            pool: pool?,
            hostname: hostname?,
            lease_time: lease_time?,
            router: router?,
            dns: dns?,
            dhcp: dhcp?,
        })
    }

    /// `a.b.c.d-e.f.g.h`, a single address, or a comma-separated list of those.
    fn pool(&mut self, s: &str, line: usize) -> Option<Vec<(Ipv4Addr, Ipv4Addr)>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part, part),
            };
            let (Ok(a), Ok(b)) = (a.parse::<Ipv4Addr>(), b.parse::<Ipv4Addr>()) else {
                self.err(
                    line,
                    "cluster.pool",
                    format!("'{part}' is not an address range like 192.168.0.1-192.168.0.253"),
                );
                return None;
            };
            if u32::from(a) > u32::from(b) {
                self.err(line, "cluster.pool", format!("range '{part}' runs backwards"));
                return None;
            }
            out.push((a, b));
        }
        if out.is_empty() {
            self.err(line, "cluster.pool", "is empty");
            return None;
        }
        Some(out)
    }

    fn serve(&mut self, t: &DeTable<'_>) -> Option<ServeSection> {
        self.unknown_keys(t, "serve", &["status", "status_public"]);
        let status = match self.string(t, "status", "serve.status")? {
            None => None,
            Some((s, l)) => match s.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    self.err(l, "serve.status", format!("'{s}' is not an address:port like 127.0.0.1:8067"));
                    return None;
                }
            },
        };
        let status_public = self.boolean(t, "status_public", "serve.status_public", false)?;
        Some(ServeSection { status, status_public })
    }

    fn openmosix(&mut self, t: &DeTable<'_>) -> Option<OpenMosixSection> {
        self.unknown_keys(t, "openmosix", &["version", "mfs", "lstay", "map"]);
        let version = match self.string(t, "version", "openmosix.version") {
            None => None,
            Some(None) => Some(("2.4.26".to_string(), (2, 4, 26))),
            Some(Some((s, l))) => match parse_version(&s) {
                Some(p) => Some((s, p)),
                None => {
                    self.err(l, "openmosix.version", format!("'{s}' is not a kernel version like 2.4.26"));
                    None
                }
            },
        };
        let mfs = self.boolean(t, "mfs", "openmosix.mfs", false);
        let lstay = self.boolean(t, "lstay", "openmosix.lstay", true);
        let map = match self.string(t, "map", "openmosix.map") {
            None => None,
            Some(None) => Some(MapMode::Static),
            Some(Some((s, l))) => match s.as_str() {
                "static" => Some(MapMode::Static),
                "auto" => Some(MapMode::Auto),
                _ => {
                    self.err(l, "openmosix.map", format!("'{s}' is not one of \"static\", \"auto\""));
                    None
                }
            },
        };
        if let (Some((_, v)), Some(true)) = (&version, mfs)
            && *v >= (2, 4, 26)
        {
            let line = self.lines.get("openmosix.mfs").copied().unwrap_or(0);
            self.err(
                line,
                "openmosix.mfs",
                "oMFS was removed in openMosix 2.4.26; set mfs = false or an older version",
            );
        }
        let (version, version_parts) = version?;
        Some(OpenMosixSection { version, version_parts, mfs: mfs?, lstay: lstay?, map: map? })
    }

    fn path(&mut self, t: &DeTable<'_>, key: &str, base: &Path) -> Option<Option<PathBuf>> {
        let full = format!("image.{key}");
        match self.string(t, key, &full)? {
            None => Some(None),
            Some((s, _)) if s.is_empty() => Some(None),
            Some((s, _)) => Some(Some(base.join(s))),
        }
    }

    fn image(&mut self, t: &DeTable<'_>, base: &Path) -> Option<ImageSection> {
        self.unknown_keys(
            t,
            "image",
            &["kernel", "modules", "busybox", "userland", "overlay", "templates", "initrd", "cmdline", "out"],
        );
        let kernel = self.path(t, "kernel", base).map(|p| p.unwrap_or_else(|| base.join("kernels/bzImage")));
        let modules = self.path(t, "modules", base);
        let busybox =
            self.path(t, "busybox", base).map(|p| p.unwrap_or_else(|| base.join("node-kit/busybox")));
        let userland = self
            .string_list(t, "userland", "image.userland")
            .map(|l| l.into_iter().map(|(s, _)| base.join(s)).collect::<Vec<_>>());
        let overlay = self.path(t, "overlay", base);
        let templates = self.path(t, "templates", base);
        let initrd = match self.string(t, "initrd", "image.initrd") {
            None => None,
            Some(None) => Some(InitrdChoice::Auto),
            Some(Some((s, l))) => match s.as_str() {
                "auto" => Some(InitrdChoice::Auto),
                "cpio" => Some(InitrdChoice::Cpio),
                "ext2" => Some(InitrdChoice::Ext2),
                _ => {
                    self.err(l, "image.initrd", format!("'{s}' is not one of \"auto\", \"cpio\", \"ext2\""));
                    None
                }
            },
        };
        let cmdline =
            self.string(t, "cmdline", "image.cmdline").map(|c| c.map(|(s, _)| s).unwrap_or_default());
        if let Some(c) = &cmdline
            && c.contains(['\n', '\r'])
        {
            let line = self.lines.get("image.cmdline").copied().unwrap_or(0);
            self.err(line, "image.cmdline", "must be one line");
        }
        let out = self.path(t, "out", base).map(|p| p.unwrap_or_else(|| base.join("mosboot-out")));
        Some(ImageSection {
            kernel: kernel?,
            modules: modules?,
            busybox: busybox?,
            userland: userland?,
            overlay: overlay?,
            templates: templates?,
            initrd: initrd?,
            cmdline: cmdline?,
            out: out?,
        })
    }

    fn nodes(&mut self, root: &DeTable<'_>) -> Option<Vec<NodeSection>> {
        let Some(v) = root.get("node") else { return Some(Vec::new()) };
        let Some(arr) = v.get_ref().as_array() else {
            let line = self.line(v);
            self.err(line, "node", "must be written as [[node]] sections");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in arr.iter().enumerate() {
            let n = i + 1;
            let Some(t) = item.get_ref().as_table() else {
                let line = self.line(item);
                self.err(line, &format!("node[{n}]"), "must be a table");
                ok = false;
                continue;
            };
            let prefix = format!("node[{n}]");
            self.unknown_keys(t, &prefix, &["mac", "ip", "hostname", "yardstick"]);
            let mac = self.required_string(t, "mac", &format!("{prefix}.mac")).and_then(|(s, l)| match s
                .parse::<MacAddr>(
            ) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.err(l, &format!("{prefix}.mac"), e.to_string());
                    None
                }
            });
            let ip = self
                .required_string(t, "ip", &format!("{prefix}.ip"))
                .and_then(|(s, l)| self.ip(&s, l, &format!("{prefix}.ip")));
            let hostname = self.string(t, "hostname", &format!("{prefix}.hostname"));
            let yardstick = self.string(t, "yardstick", &format!("{prefix}.yardstick"));
            if let Some(Some((y, l))) = &yardstick
                && (y.is_empty()
                    || y.len() > 32
                    || !y.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)))
            {
                self.err(
                    *l,
                    &format!("{prefix}.yardstick"),
                    format!("'{y}' is not a CPU yardstick like P/133"),
                );
            }
            match (mac, ip, hostname, yardstick) {
                (Some(mac), Some(ip), Some(hostname), Some(yardstick)) => out.push(NodeSection {
                    mac,
                    ip,
                    hostname: hostname.map(|(s, _)| s),
                    yardstick: yardstick.map(|(s, _)| s),
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// `12h`, `30m`, `45s`, `1d`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

/// `2.4.26` (a suffix like `-om1` is allowed and ignored).
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let core = s.split(['-', ' ']).next()?;
    let mut it = core.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = it.next().map(|c| c.parse().ok()).unwrap_or(Some(0))?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SAMPLE: &str = r#"
[cluster]
name = "lab"
interface = "eth1"
server = "192.168.0.254/24"
pool = "192.168.0.1-192.168.0.253"
hostname = "ltsp"
lease_time = "12h"

[openmosix]
version = "2.4.26"

[image]
kernel = "kernels/bzImage"
busybox = "node-kit/busybox"
"#;

    #[test]
    fn parses_the_sample() {
        let cfg = Config::parse(SAMPLE, Path::new("/lab/cluster.toml")).expect("valid");
        assert_eq!(cfg.cluster.server, Ipv4Addr::new(192, 168, 0, 254));
        assert_eq!(cfg.cluster.prefix_len, 24);
        assert_eq!(cfg.cluster.pool, vec![(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(192, 168, 0, 253))]);
        assert_eq!(cfg.cluster.lease_time, Duration::from_secs(43200));
        assert_eq!(cfg.image.kernel, PathBuf::from("/lab/kernels/bzImage"));
        assert_eq!(cfg.image.out, PathBuf::from("/lab/mosboot-out"));
        assert_eq!(cfg.line_of("cluster.pool"), 6);
        assert!(cfg.openmosix.lstay);
    }

    #[test]
    fn serve_status_is_off_unless_set_and_checked() {
        let cfg = Config::parse(SAMPLE, Path::new("/lab/cluster.toml")).expect("valid");
        assert_eq!(cfg.serve.status, None);
        let text = format!("{SAMPLE}\n[serve]\nstatus = \"127.0.0.1:8067\"\n");
        let cfg = Config::parse(&text, Path::new("/lab/cluster.toml")).expect("valid");
        assert_eq!(cfg.serve.status, Some("127.0.0.1:8067".parse().unwrap()));
        let text = format!("{SAMPLE}\n[serve]\nstatus = \"localhost\"\nstatuss = 1\n");
        let err = Config::parse(&text, Path::new("c.toml")).expect_err("invalid").to_string();
        assert!(err.contains("serve.status") && err.contains("serve.statuss"), "{err}");
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = r#"
[cluster]
interface = "eth1"
server = "192.168.0.254"
pool = "192.168.0.1-192.168.0.253"
lease_time = "forever"
colour = "blue"
dhcp = "maybe"

[image]
initrd = 5
"#;
        let err = Config::parse(text, Path::new("c.toml")).expect_err("invalid");
        let lines: Vec<(usize, &str)> = err.items.iter().map(|d| (d.line, d.key.as_str())).collect();
        assert!(lines.contains(&(4, "cluster.server")), "{err}");
        assert!(lines.contains(&(6, "cluster.lease_time")), "{err}");
        assert!(lines.contains(&(7, "cluster.colour")), "{err}");
        assert!(lines.contains(&(8, "cluster.dhcp")), "{err}");
        assert!(lines.contains(&(11, "image.initrd")), "{err}");
        assert_eq!(err.len(), 5, "{err}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = Config::parse("[cluster]\nname = = 3\n", Path::new("c.toml")).expect_err("bad");
        assert_eq!(err.items[0].line, 2, "{err}");
    }

    #[test]
    fn pinned_nodes_are_parsed() {
        let text = format!(
            "{SAMPLE}\n[[node]]\nmac = \"00:0c:29:aa:bb:01\"\nip = \"192.168.0.101\"\nhostname = \"mosix1\"\nyardstick = \"P/133\"\n[[node]]\nmac = \"nope\"\nip = \"192.168.0.102\"\n"
        );
        let err = Config::parse(&text, Path::new("c.toml")).expect_err("bad mac");
        assert_eq!(err.items.len(), 1);
        assert_eq!(err.items[0].key, "node[2].mac");
    }

    #[test]
    fn durations_and_versions() {
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43200)));
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_version("2.4.26-om1"), Some((2, 4, 26)));
        assert_eq!(parse_version("2.6"), Some((2, 6, 0)));
        assert_eq!(parse_version("two"), None);
    }
}

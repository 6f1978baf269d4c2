//! One parser per section of `cluster.toml`: each checks its own keys and returns the section
//! whenever its values make sense, recording every problem on the way.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netboot::dhcp::NewMacLimits;
use netboot::mac::MacAddr;
use toml::de::DeTable;

use super::types::*;
use super::walk::Walker;

impl Walker<'_> {
    pub(super) fn cluster(&mut self, t: &DeTable<'_>) -> Option<ClusterSection> {
        self.unknown_keys(
            t,
            "cluster",
            &[
                "name",
                "interface",
                "server",
                "pool",
                "hostname",
                "lease_time",
                "router",
                "dns",
                "dhcp",
                "bootp",
            ],
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
            Some(Some((s, l))) => match crate::duration::parse(&s) {
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
        let dhcp = self.choice(
            t,
            "dhcp",
            "cluster.dhcp",
            DhcpMode::Full,
            &[("full", DhcpMode::Full), ("proxy", DhcpMode::Proxy), ("off", DhcpMode::Off)],
        );
        let bootp_dynamic =
            self.choice(t, "bootp", "cluster.bootp", false, &[("pinned", false), ("dynamic", true)]);
        if let (Some((srv, plen)), Some(Some(r))) = (&server, &router)
            && let Ok(net) = ipnet::Ipv4Net::new(*srv, *plen)
            && !net.contains(r)
        {
            let line = self.line_of("cluster.router");
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
            bootp_dynamic: bootp_dynamic?,
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

    pub(super) fn serve(&mut self, t: &DeTable<'_>) -> Option<ServeSection> {
        self.unknown_keys(
            t,
            "serve",
            &[
                "status",
                "status_public",
                "http",
                "http_url",
                "multicast",
                "dhcp_new_mac_burst",
                "dhcp_new_macs_per_second",
            ],
        );
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
        let http = match self.string(t, "http", "serve.http") {
            None => None,
            Some(None) => Some(None),
            Some(Some((s, l))) => match s.parse::<std::net::SocketAddrV4>() {
                Ok(a) if a.port() == 0 => {
                    self.err(l, "serve.http", "needs a port (80, or 8080 and the like)");
                    None
                }
                Ok(a) if a.ip().is_loopback() || a.ip().is_multicast() || a.ip().is_broadcast() => {
                    self.err(
                        l,
                        "serve.http",
                        format!(
                            "{} cannot be reached by the nodes; use the server's address or 0.0.0.0",
                            a.ip()
                        ),
                    );
                    None
                }
                Ok(a) => Some(Some(a)),
                Err(_) => {
                    self.err(
                        l,
                        "serve.http",
                        format!("'{s}' is not an IPv4 address:port like 0.0.0.0:8080 or 192.168.0.254:80"),
                    );
                    None
                }
            },
        };
        let http_url = match self.string(t, "http_url", "serve.http_url") {
            None => None,
            Some(None) => Some(None),
            Some(Some((s, _))) if s.is_empty() => Some(None),
            Some(Some((s, l))) => match check_http_url(&s) {
                Ok(()) => Some(Some(s)),
                Err(why) => {
                    self.err(l, "serve.http_url", why);
                    None
                }
            },
        };
        let multicast = match self.string(t, "multicast", "serve.multicast") {
            None => None,
            Some(None) => Some(None),
            Some(Some((s, l))) => match super::types::parse_multicast(&s) {
                Ok(a) => Some(Some(a)),
                Err(why) => {
                    self.err(l, "serve.multicast", why);
                    None
                }
            },
        };
        let dhcp_new_macs = self.new_mac_limits(t);
        Some(ServeSection {
            status,
            status_public,
            http: http?,
            http_url: http_url?,
            multicast: multicast?,
            dhcp_new_macs: dhcp_new_macs?,
        })
    }

    /// `dhcp_new_mac_burst` and `dhcp_new_macs_per_second`: the DHCP flood limit on MACs the
    /// server has never seen. Zero is refused (it would lock out every PC that is not pinned);
    /// a rate above the burst would make the burst meaningless.
    fn new_mac_limits(&mut self, t: &DeTable<'_>) -> Option<NewMacLimits> {
        let default = NewMacLimits::default();
        let range = (1, MAX_NEW_MACS);
        let zero = " (0 would answer no PC that is not pinned)";
        let burst =
            self.count(t, "dhcp_new_mac_burst", "serve.dhcp_new_mac_burst", default.burst, range, zero);
        let per_sec = self.count(
            t,
            "dhcp_new_macs_per_second",
            "serve.dhcp_new_macs_per_second",
            default.per_sec,
            range,
            zero,
        );
        let ((burst, _), (per_sec, line)) = (burst?, per_sec?);
        if per_sec > burst {
            let line = if line == 0 { self.line_of("serve.dhcp_new_mac_burst") } else { line };
            self.err(
                line,
                "serve.dhcp_new_macs_per_second",
                format!("{per_sec} is more than dhcp_new_mac_burst ({burst}): raise the burst too"),
            );
            return None;
        }
        Some(NewMacLimits { burst, per_sec })
    }

    pub(super) fn openmosix(&mut self, t: &DeTable<'_>) -> Option<OpenMosixSection> {
        self.unknown_keys(t, "openmosix", &["version", "mfs", "lstay", "map"]);
        let version = match self.string(t, "version", "openmosix.version") {
            None => None,
            Some(None) => Some(("2.4.26".to_string(), (2, 4, 26))),
            Some(Some((s, l))) => match parse_version(&s) {
                Some(p) => Some((s, p)),
                None => {
                    self.err(
                        l,
                        "openmosix.version",
                        format!("{s:?} is not a kernel version like 2.4.26 or 2.4.26-om1"),
                    );
                    None
                }
            },
        };
        let mfs = self.boolean(t, "mfs", "openmosix.mfs", false);
        let lstay = self.boolean(t, "lstay", "openmosix.lstay", true);
        let map = self.choice(
            t,
            "map",
            "openmosix.map",
            MapMode::Static,
            &[("static", MapMode::Static), ("auto", MapMode::Auto)],
        );
        if let (Some((_, v)), Some(true)) = (&version, mfs)
            && *v >= (2, 4, 26)
        {
            let line = self.line_of("openmosix.mfs");
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

    pub(super) fn image(&mut self, t: &DeTable<'_>, base: &Path) -> Option<ImageSection> {
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
        let initrd = self.choice(
            t,
            "initrd",
            "image.initrd",
            InitrdChoice::Auto,
            &[("auto", InitrdChoice::Auto), ("cpio", InitrdChoice::Cpio), ("ext2", InitrdChoice::Ext2)],
        );
        let cmdline =
            self.string(t, "cmdline", "image.cmdline").map(|c| c.map(|(s, _)| s).unwrap_or_default());
        if let Some(c) = &cmdline
            && c.contains(['\n', '\r'])
        {
            let line = self.line_of("image.cmdline");
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

    pub(super) fn nodes(&mut self, root: &DeTable<'_>) -> Option<Vec<NodeSection>> {
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

/// A URL prefix for boot.ipxe: `http://HOST[:PORT]/[PATH/]`. Strict, because it is written into
/// the iPXE script as is: a space would split the command, `$`/`{` would expand iPXE settings.
pub fn check_http_url(s: &str) -> Result<(), String> {
    let Some(rest) = s.strip_prefix("http://") else {
        return Err(format!("'{s}' must start with http:// (the nodes' iPXE fetches it)"));
    };
    if !s.ends_with('/') {
        return Err(format!("'{s}' must end with '/' (the file names are appended)"));
    }
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("'{s}' names no host"));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "-._~:/@%+=,;!*".contains(*c))) {
        return Err(format!("'{s}' holds {c:?}, which iPXE would not pass through as part of a URL"));
    }
    Ok(())
}

/// `2.4.26` or `2.4.26-om1`: `MAJOR.MINOR[.PATCH]` of 1-3 digits each, then optionally `-` and
/// 1-32 letters, digits, `.` or `_` (the suffix is ignored). Strict, because the version reaches
/// node scripts: anything else (a newline, a quote, a space) is a config error.
pub fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let (core, suffix) = match s.split_once('-') {
        Some((c, suf)) => (c, Some(suf)),
        None => (s, None),
    };
    if let Some(suf) = suffix
        && (suf.is_empty()
            || suf.len() > 32
            || !suf.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_'))
    {
        return None;
    }
    if core.split('.').any(|n| n.is_empty() || n.len() > 3 || !n.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let mut it = core.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    let c = it.next().map(|c| c.parse().ok()).unwrap_or(Some(0))?;
    if it.next().is_some() {
        return None;
    }
    Some((a, b, c))
}

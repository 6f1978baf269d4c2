//! `mosboot export dnsmasq|isc-dhcpd`: the same DHCP/TFTP behaviour as `mosboot serve`, written
//! as a config for a site that keeps its own server. Both texts come from the address plan, so a
//! node gets the same address, hostname and boot file whichever server answers.
//!
//! The hard part is option 12 for pool addresses whose MAC nobody knows in advance: dnsmasq names
//! a client after the DNS host record of the address it leases (only while its DNS is on), and
//! ISC dhcpd evaluates `option host-name` per lease, where `leased-address` is known.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netboot::dhcp::BootFiles;

use crate::config::{Config, DhcpMode, HostnameRule};
use crate::error::Failure;
use crate::plan::{Plan, PlanNode, Role};

/// PXE vendor option 43 as serve sends it: PXE_DISCOVERY_CONTROL (6) = 8, "boot the file named
/// in this reply", then END.
const PXE_VENDOR_OPTIONS_HEX: &str = "06:01:08:ff";
/// dnsmasq's shortest lease; it raises shorter ones to this.
const DNSMASQ_MIN_LEASE_SECS: u64 = 120;
/// dnsmasq's default `dhcp-lease-max`.
const DNSMASQ_DEFAULT_LEASE_MAX: usize = 1000;

/// The server programs `export` writes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Dnsmasq,
    IscDhcpd,
}

impl Format {
    /// The name on the command line.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "dnsmasq" => Some(Format::Dnsmasq),
            "isc-dhcpd" => Some(Format::IscDhcpd),
            _ => None,
        }
    }
}

/// Loads the config and the plan and returns the config text for `format`.
pub fn run(config: &Path, format: &str) -> Result<String, Failure> {
    let fmt = Format::parse(format)
        .ok_or_else(|| Failure::Usage(format!("unknown export format '{format}' (dnsmasq, isc-dhcpd)")))?;
    let cfg = Config::load(config)?;
    let plan = Plan::new(&cfg)?;
    render(&cfg, &plan, fmt)
}

/// The config text for one format.
pub fn render(cfg: &Config, plan: &Plan, fmt: Format) -> Result<String, Failure> {
    check_interface(&plan.interface)?;
    match fmt {
        Format::Dnsmasq => dnsmasq(cfg, plan),
        Format::IscDhcpd => isc_dhcpd(cfg, plan),
    }
}

/// The interface name lands in config lines and on a command line: keep it to what Linux allows
/// and what cannot break a line.
fn check_interface(name: &str) -> Result<(), Failure> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_graphic() && !b",#;/\"'\\{}".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "cluster.interface '{}' is not an interface name that can go into a server config",
            printable(name)
        )))
    }
}

/// Control characters out, so a value can sit in a comment line.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// An absolute form of a path (relative to the working directory), without touching the disk.
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `<out>/tftpboot`, absolute; it must fit on one dnsmasq line (no comma: dnsmasq splits there).
fn tftp_root(cfg: &Config) -> Result<String, Failure> {
    let root = absolute(&cfg.image.out).join("tftpboot");
    match root.to_str() {
        Some(s) if !s.contains([',', '\n', '\r']) => Ok(s.to_string()),
        _ => Err(Failure::Usage(format!(
            "image.out: {} cannot be written into a server config (needs UTF-8, no comma or newline)",
            printable(&root.to_string_lossy())
        ))),
    }
}

/// Consecutive runs of the pool, in pool order: what a `range` line can say.
pub fn ranges(pool: &[Ipv4Addr]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut out: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
    for &ip in pool {
        match out.last_mut() {
            Some((_, end)) if u32::from(*end).checked_add(1) == Some(u32::from(ip)) => *end = ip,
            _ => out.push((ip, ip)),
        }
    }
    out
}

fn network(plan: &Plan) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(plan.server) & u32::from(plan.netmask))
}

fn pool_nodes(plan: &Plan) -> impl Iterator<Item = &PlanNode> {
    plan.nodes.iter().filter(|n| n.role == Role::Pool)
}

fn pinned_nodes(plan: &Plan) -> impl Iterator<Item = (&PlanNode, netboot::mac::MacAddr)> {
    plan.nodes.iter().filter(|n| n.role == Role::Pinned).filter_map(|n| n.mac.map(|m| (n, m)))
}

/// The comment block every export starts with.
fn header(cfg: &Config, plan: &Plan, fmt: Format, comment: &str) -> String {
    let tool = match fmt {
        Format::Dnsmasq => "dnsmasq",
        Format::IscDhcpd => "isc-dhcpd",
    };
    let pinned = plan.nodes.iter().filter(|n| n.role == Role::Pinned).count();
    let mut h = String::new();
    let mut line = |s: &str| {
        if s.is_empty() {
            h.push_str(comment.trim_end());
        } else {
            h.push_str(comment);
            h.push_str(s);
        }
        h.push('\n');
    };
    line(&format!(
        "Generated by mosboot {} from {}",
        env!("CARGO_PKG_VERSION"),
        printable(&absolute(&cfg.path).to_string_lossy())
    ));
    line(&format!(
        "Cluster \"{}\": server {}/{} on {}, {} pool address(es), {} pinned node(s), {} nodes in the map.",
        printable(&plan.cluster),
        plan.server,
        plan.prefix_len,
        plan.interface,
        plan.pool.len(),
        pinned,
        plan.node_count()
    ));
    line(&format!("Do not edit by hand: change the cluster config and run `mosboot export {tool}` again."));
    line("Only one DHCP server may hand out addresses on the lab interface: do not run `mosboot serve`");
    line("(full or proxy) there while this server answers.");
    h
}

/// dnsmasq: DHCP (full or proxy) and TFTP in one file.
pub fn dnsmasq(cfg: &Config, plan: &Plan) -> Result<String, Failure> {
    let root = tftp_root(cfg)?;
    let boot = BootFiles::default();
    let iface = &plan.interface;
    let mut o = header(cfg, plan, Format::Dnsmasq, "# ");
    let w = &mut o;
    let _ = writeln!(w, "#");
    let _ = writeln!(w, "# Use: run `mosboot build` first (the TFTP root below must exist), then either");
    let _ = writeln!(w, "#   dnsmasq --keep-in-foreground --conf-file=THIS_FILE");
    let _ = writeln!(
        w,
        "# or save it as /etc/dnsmasq.d/mosboot-{}.conf and restart dnsmasq. Options such as",
        file_safe(&plan.cluster)
    );
    let _ = writeln!(w, "# bind-interfaces, no-hosts and dhcp-sequential-ip apply to the whole dnsmasq.");

    if plan.dhcp == DhcpMode::Off {
        let _ = writeln!(w, "#");
        let _ = writeln!(
            w,
            "# dhcp = \"off\" in the config: like `mosboot serve`, this serves TFTP only. The site's"
        );
        let _ = writeln!(
            w,
            "# DHCP server must send next-server {} and file {} ({} to iPXE clients).",
            plan.server, boot.pxe, boot.ipxe
        );
        let _ = writeln!(w);
        let _ = writeln!(w, "interface={iface}");
        let _ = writeln!(w, "bind-interfaces");
        let _ = writeln!(w, "port=0");
        tftp_lines(w, &root);
        return Ok(o);
    }

    let mut notes: Vec<String> = Vec::new();
    if plan.dhcp == DhcpMode::Full {
        notes.push(
            "Pool hostnames (option 12) come from the host-record lines: dnsmasq names a client after the DNS \
             record of the address it leases, and only while its DNS is on. So DNS stays enabled here (port 53, \
             on the lab interface only); port=0 would lose the hostnames."
                .into(),
        );
        notes.push(
            "dnsmasq puts option 12 into the ACK (not the OFFER) and only for clients that ask for it; PXE ROMs, \
             udhcpc and dhclient ask."
                .into(),
        );
        if plan.lease_time.as_secs() < DNSMASQ_MIN_LEASE_SECS {
            notes.push(format!(
                "lease_time is {} s; dnsmasq raises leases under {DNSMASQ_MIN_LEASE_SECS} s to {DNSMASQ_MIN_LEASE_SECS} s.",
                plan.lease_time.as_secs()
            ));
        }
        let dotted: Vec<&str> =
            pool_nodes(plan).filter(|n| n.hostname.contains('.')).map(|n| n.hostname.as_str()).collect();
        if let Some(first) = dotted.first() {
            notes.push(format!(
                "{} pool hostname(s) contain a dot (first: {first}); dnsmasq hands out a dotted DNS name only \
                 when its domain part equals `domain=`, which this file does not set: those nodes get no option 12.",
                dotted.len()
            ));
        }
    } else {
        notes.push(
            "proxy mode: dnsmasq answers PXE clients with the boot menu entry (pxe-service) on ports 67 and 4011; \
             the site's DHCP server hands out addresses and hostnames."
                .into(),
        );
    }
    notes.push("No boot-stage log and no `mosboot nodes` view: leases live in dnsmasq's lease file.".into());
    let _ = writeln!(w, "#");
    let _ = writeln!(w, "# Differences from `mosboot serve`:");
    for n in &notes {
        wrap_comment(w, "# - ", "#   ", n);
    }

    let _ = writeln!(w);
    let _ = writeln!(w, "# Answer only on the lab interface.");
    let _ = writeln!(w, "interface={iface}");
    let _ = writeln!(w, "bind-interfaces");

    if plan.dhcp == DhcpMode::Proxy {
        let _ = writeln!(w);
        let _ = writeln!(w, "# proxyDHCP: boot information only, never an address.");
        let _ = writeln!(w, "port=0");
        let _ = writeln!(w, "dhcp-range={},proxy,{}", network(plan), plan.netmask);
        ipxe_tags(w);
        let pxe_base = boot.pxe.strip_suffix(".0").unwrap_or(&boot.pxe);
        let _ = writeln!(
            w,
            "# dnsmasq adds the PXE layer suffix \".0\" to the first name; a name with a dot is used as is."
        );
        let _ = writeln!(
            w,
            "pxe-service=tag:!mosboot_ipxe,x86PC,\"mosboot {}\",{pxe_base}",
            file_safe(&plan.cluster)
        );
        let _ = writeln!(w, "pxe-service=tag:mosboot_ipxe,x86PC,\"mosboot iPXE\",{}", boot.ipxe);
        tftp_lines(w, &root);
        return Ok(o);
    }

    let lease = plan.lease_time.as_secs().max(1);
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "# Addresses: the pool in plan order, lowest free address first, no ping before an offer"
    );
    let _ = writeln!(
        w,
        "# (serve does not ping; a ping stalls a boot storm), and this server is the authority here."
    );
    for (a, b) in ranges(&plan.pool) {
        let _ = writeln!(w, "dhcp-range={a},{b},{},{lease}", plan.netmask);
    }
    let _ = writeln!(w, "dhcp-sequential-ip");
    let _ = writeln!(w, "no-ping");
    let _ = writeln!(w, "dhcp-authoritative");
    let _ = writeln!(w, "bootp-dynamic");
    let _ = writeln!(
        w,
        "dhcp-lease-max={}",
        (plan.pool.len() + plan.pinned.len()).max(DNSMASQ_DEFAULT_LEASE_MAX)
    );
    let _ = writeln!(w, "# Old PXE ROMs often ignore unicast replies before they have an address.");
    let _ = writeln!(w, "dhcp-broadcast");

    let _ = writeln!(w);
    let _ =
        writeln!(w, "# Network options. An empty value stops dnsmasq from offering itself as router or DNS,");
    let _ = writeln!(w, "# as serve offers neither unless cluster.toml names one.");
    let _ = writeln!(w, "dhcp-option=option:netmask,{}", plan.netmask);
    match plan.router {
        Some(r) => {
            let _ = writeln!(w, "dhcp-option=option:router,{r}");
        }
        None => {
            let _ = writeln!(w, "dhcp-option=option:router");
        }
    }
    let dns: Vec<String> = plan.dns.iter().map(|d| d.to_string()).collect();
    if dns.is_empty() {
        let _ = writeln!(w, "dhcp-option=option:dns-server");
    } else {
        let _ = writeln!(w, "dhcp-option=option:dns-server,{}", dns.join(","));
    }

    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "# Boot: iPXE clients get the script (else they chainload forever), everyone else pxelinux."
    );
    let _ =
        writeln!(w, "# File and next-server go into the fixed BOOTP fields (no option overload) and also as");
    let _ =
        writeln!(w, "# options 66/67; PXE ROMs get option 60 echoed and option 43 (discovery control 8).");
    ipxe_tags(w);
    let _ = writeln!(w, "dhcp-vendorclass=set:mosboot_pxe,PXEClient");
    let _ = writeln!(w, "dhcp-boot=tag:!mosboot_ipxe,{},,{}", boot.pxe, plan.server);
    let _ = writeln!(w, "dhcp-boot=tag:mosboot_ipxe,{},,{}", boot.ipxe, plan.server);
    let _ = writeln!(w, "dhcp-no-override");
    let _ = writeln!(w, "dhcp-option-force=66,{}", plan.server);
    let _ = writeln!(w, "dhcp-option-force=tag:!mosboot_ipxe,67,{}", boot.pxe);
    let _ = writeln!(w, "dhcp-option-force=tag:mosboot_ipxe,67,{}", boot.ipxe);
    let _ = writeln!(w, "dhcp-option-force=tag:mosboot_pxe,60,PXEClient");
    let _ = writeln!(w, "dhcp-option-force=tag:mosboot_pxe,43,{PXE_VENDOR_OPTIONS_HEX}");
    tftp_lines(w, &root);

    let _ = writeln!(w);
    let _ = writeln!(w, "# Pinned nodes: their MAC always gets this address and name.");
    let mut any = false;
    for (n, mac) in pinned_nodes(plan) {
        any = true;
        let _ = writeln!(w, "dhcp-host={mac},{},{},{lease}", n.ip, n.hostname);
    }
    if !any {
        let _ = writeln!(w, "# (none)");
    }

    let _ = writeln!(w);
    let _ =
        writeln!(w, "# Hostnames of pool addresses (option 12 and DNS). Names come only from here, not from");
    let _ = writeln!(w, "# /etc/hosts (no-hosts), so a stray hosts entry cannot rename a node.");
    let _ = writeln!(w, "no-hosts");
    for n in pool_nodes(plan) {
        let _ = writeln!(w, "host-record={},{}", n.hostname, n.ip);
    }
    Ok(o)
}

fn ipxe_tags(w: &mut String) {
    let _ = writeln!(w, "dhcp-userclass=set:mosboot_ipxe,iPXE");
    let _ = writeln!(w, "dhcp-match=set:mosboot_ipxe,175");
}

fn tftp_lines(w: &mut String, root: &str) {
    let _ = writeln!(w);
    let _ = writeln!(w, "# TFTP from the output tree of `mosboot build`.");
    let _ = writeln!(w, "enable-tftp");
    let _ = writeln!(w, "tftp-root={root}");
}

/// A cluster name as part of a file name.
fn file_safe(s: &str) -> String {
    let t: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if t.is_empty() { "cluster".into() } else { t }
}

/// Writes `text` as comment lines of at most ~100 columns.
fn wrap_comment(w: &mut String, first: &str, rest: &str, text: &str) {
    let mut line = String::from(first);
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && line.len() + 1 + word.len() > 100 {
            let _ = writeln!(w, "{line}");
            line = String::from(rest);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    let _ = writeln!(w, "{line}");
}

/// An address as a dhcpd data constant (colon-separated hex octets), for `leased-address = ...`.
fn hex_ip(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// Whether every pool node's name is the LTSP `ws` + three-digit last octet, so the classic
/// dhcpd.conf expression gives exactly the plan's names.
fn ltsp_expression_fits(cfg: &Config, plan: &Plan) -> bool {
    cfg.cluster.hostname == HostnameRule::Ltsp
        && pool_nodes(plan).all(|n| n.hostname == format!("ws{:03}", n.ip.octets()[3]))
}

/// ISC dhcpd: full mode only (it cannot proxy, and serves no TFTP).
pub fn isc_dhcpd(cfg: &Config, plan: &Plan) -> Result<String, Failure> {
    match plan.dhcp {
        DhcpMode::Full => {}
        DhcpMode::Proxy => {
            return Err(Failure::Usage(
                "cluster.dhcp = \"proxy\": ISC dhcpd cannot act as a proxyDHCP server (it hands out addresses or \
                 nothing). Use `mosboot export dnsmasq`, which can, or point the site's DHCP server at this \
                 server (next-server, filename pxelinux.0)"
                    .into(),
            ));
        }
        DhcpMode::Off => {
            return Err(Failure::Usage(
                "cluster.dhcp = \"off\": mosboot serves no DHCP, so there is no dhcpd config to export; set \
                 dhcp = \"full\" to get one for the site's own dhcpd"
                    .into(),
            ));
        }
    }
    let root = tftp_root(cfg)?;
    let boot = BootFiles::default();
    let iface = &plan.interface;
    let lease = plan.lease_time.as_secs().max(1);
    let mut o = header(cfg, plan, Format::IscDhcpd, "# ");
    let w = &mut o;
    let _ = writeln!(w, "#");
    let _ = writeln!(w, "# Use: dhcpd listens on every interface that has a subnet declaration unless told");
    let _ = writeln!(w, "# otherwise, so name the lab interface on the command line:");
    let _ = writeln!(
        w,
        "#   dhcpd -4 -f -cf THIS_FILE -lf /var/lib/dhcp/dhcpd-{}.leases {iface}",
        file_safe(&plan.cluster)
    );
    let _ = writeln!(w, "# (Debian's service: INTERFACESv4=\"{iface}\" in /etc/default/isc-dhcp-server.)");
    let _ = writeln!(
        w,
        "# dhcpd serves no files: run a TFTP server (e.g. tftpd-hpa) on {} with root",
        plan.server
    );
    let _ = writeln!(w, "#   {root}");
    let _ = writeln!(w, "# after `mosboot build`.");
    let _ = writeln!(w, "#");
    let _ = writeln!(w, "# Differences from `mosboot serve`:");
    let mut notes = vec![
        "dhcpd picks the free pool address itself (a fresh dhcpd hands out the lowest first), which may differ \
         from serve's order once leases have expired."
            .to_string(),
        "No boot-stage log and no `mosboot nodes` view: leases live in dhcpd's lease file.".to_string(),
    ];
    if !ltsp_expression_fits(cfg, plan) {
        notes.insert(
            0,
            "Hostnames of pool addresses are set by one `if leased-address = ...` per address: dhcpd has no \
             per-address declaration without a MAC."
                .into(),
        );
    }
    for n in &notes {
        wrap_comment(w, "# - ", "#   ", n);
    }

    let _ = writeln!(w);
    let _ = writeln!(w, "authoritative;");
    let _ = writeln!(w, "ddns-update-style none;");
    let _ = writeln!(w, "# serve does not ping before an offer (a ping stalls a boot storm).");
    let _ = writeln!(w, "ping-check false;");
    let _ = writeln!(w, "# Old PXE ROMs often ignore unicast replies before they have an address.");
    let _ = writeln!(w, "always-broadcast on;");
    let _ = writeln!(w, "# Every lease lasts exactly lease_time, whatever the client asks for.");
    let _ = writeln!(w, "default-lease-time {lease};");
    let _ = writeln!(w, "min-lease-time {lease};");
    let _ = writeln!(w, "max-lease-time {lease};");
    let _ = writeln!(
        w,
        "# Option 175: clients already running iPXE send it (merge with an existing definition)."
    );
    let _ = writeln!(w, "option mosboot-ipxe-encap code 175 = string;");

    let _ = writeln!(w);
    let _ = writeln!(w, "subnet {} netmask {} {{", network(plan), plan.netmask);
    for (a, b) in ranges(&plan.pool) {
        let _ = writeln!(w, "  range dynamic-bootp {a} {b};");
    }
    let _ = writeln!(w, "  option subnet-mask {};", plan.netmask);
    let _ = writeln!(w, "  option broadcast-address {};", plan.broadcast);
    if let Some(r) = plan.router {
        let _ = writeln!(w, "  option routers {r};");
    }
    if !plan.dns.is_empty() {
        let dns: Vec<String> = plan.dns.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(w, "  option domain-name-servers {};", dns.join(", "));
    }
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "  # Boot: iPXE clients get the script (else they chainload forever), everyone else pxelinux."
    );
    let _ = writeln!(w, "  next-server {};", plan.server);
    let _ = writeln!(w, "  option tftp-server-name \"{}\";", plan.server);
    let _ = writeln!(w, "  if option user-class = \"iPXE\" or exists mosboot-ipxe-encap {{");
    let _ = writeln!(w, "    filename \"{}\";", boot.ipxe);
    let _ = writeln!(w, "    option bootfile-name \"{}\";", boot.ipxe);
    let _ = writeln!(w, "  }} else {{");
    let _ = writeln!(w, "    filename \"{}\";", boot.pxe);
    let _ = writeln!(w, "    option bootfile-name \"{}\";", boot.pxe);
    let _ = writeln!(w, "  }}");
    let _ =
        writeln!(w, "  # PXE ROMs: echo option 60 and send option 43 (discovery control 8: boot this file).");
    let _ = writeln!(w, "  if substring(option vendor-class-identifier, 0, 9) = \"PXEClient\" {{");
    let _ = writeln!(w, "    option vendor-class-identifier \"PXEClient\";");
    let _ = writeln!(w, "    option vendor-encapsulated-options {PXE_VENDOR_OPTIONS_HEX};");
    let _ = writeln!(w, "  }}");
    let _ =
        writeln!(w, "  # Send hostname, vendor and boot options even to clients that do not ask for them.");
    let _ = writeln!(w, "  if exists dhcp-parameter-request-list {{");
    let _ = writeln!(
        w,
        "    option dhcp-parameter-request-list = concat(option dhcp-parameter-request-list, 0c, 2b, 3c, 42, 43);"
    );
    let _ = writeln!(w, "  }}");
    let _ = writeln!(w);
    if ltsp_expression_fits(cfg, plan) {
        let _ = writeln!(
            w,
            "  # Hostnames: the LTSP rule, ws + the last octet of the leased address in three digits."
        );
        let _ = writeln!(
            w,
            "  option host-name = concat(\"ws\", suffix(concat(\"00\", binary-to-ascii(10, 8, \"\", substring(leased-address, 3, 1))), 3));"
        );
    } else {
        let _ = writeln!(w, "  # Hostnames of pool addresses, as the plan gives them.");
        for n in pool_nodes(plan) {
            let _ = writeln!(
                w,
                "  if leased-address = {} {{ option host-name \"{}\"; }}  # {}",
                hex_ip(n.ip),
                n.hostname,
                n.ip
            );
        }
    }
    let _ = writeln!(w, "}}");

    let mut any = false;
    for (n, mac) in pinned_nodes(plan) {
        if !any {
            let _ = writeln!(w);
            let _ = writeln!(
                w,
                "# Pinned nodes: their MAC always gets this address and name (outside every range)."
            );
            any = true;
        }
        let _ = writeln!(w, "host mosboot-node{} {{", n.number);
        let _ = writeln!(w, "  hardware ethernet {mac};");
        let _ = writeln!(w, "  fixed-address {};", n.ip);
        let _ = writeln!(w, "  option host-name \"{}\";", n.hostname);
        let _ = writeln!(w, "}}");
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LTSP: &str = r#"
[cluster]
name = "lab"
interface = "eth1"
server = "192.168.0.254/24"
pool = "192.168.0.1-192.168.0.253"
hostname = "ltsp"
lease_time = "12h"

[image]
kernel = "kernels/bzImage"
out = "mosboot-out"
"#;

    fn load(text: &str) -> (Config, Plan) {
        let cfg = Config::parse(text, Path::new("/lab/cluster.toml")).expect("valid config");
        let plan = Plan::new(&cfg).expect("valid plan");
        (cfg, plan)
    }

    fn lines(s: &str) -> Vec<&str> {
        s.lines().collect()
    }

    #[test]
    fn ranges_follow_pool_order_and_gaps() {
        let ip = |d: u8| Ipv4Addr::new(10, 0, 0, d);
        assert_eq!(
            ranges(&[ip(1), ip(2), ip(3), ip(5), ip(9), ip(8)]),
            vec![(ip(1), ip(3)), (ip(5), ip(5)), (ip(9), ip(9)), (ip(8), ip(8))]
        );
        assert!(ranges(&[]).is_empty());
    }

    #[test]
    fn ltsp_sample_dnsmasq() {
        let (cfg, plan) = load(LTSP);
        let t = dnsmasq(&cfg, &plan).expect("export");
        let l = lines(&t);
        assert!(t.starts_with("# Generated by mosboot "), "{t}");
        assert!(l[0].ends_with("from /lab/cluster.toml"), "{}", l[0]);
        assert!(t.contains("Cluster \"lab\": server 192.168.0.254/24 on eth1, 253 pool address(es)"));
        assert!(t.contains("Do not edit by hand"));
        for want in [
            "interface=eth1",
            "bind-interfaces",
            "dhcp-range=192.168.0.1,192.168.0.253,255.255.255.0,43200",
            "dhcp-sequential-ip",
            "no-ping",
            "dhcp-option=option:router",
            "dhcp-option=option:dns-server",
            "dhcp-userclass=set:mosboot_ipxe,iPXE",
            "dhcp-match=set:mosboot_ipxe,175",
            "dhcp-boot=tag:!mosboot_ipxe,pxelinux.0,,192.168.0.254",
            "dhcp-boot=tag:mosboot_ipxe,boot.ipxe,,192.168.0.254",
            "enable-tftp",
            "tftp-root=/lab/mosboot-out/tftpboot",
            "no-hosts",
            "host-record=ws001,192.168.0.1",
            "host-record=ws012,192.168.0.12",
            "host-record=ws253,192.168.0.253",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{t}");
        }
        // The server (node 1) is not a pool address; DNS is not switched off (it carries the names).
        assert!(!t.contains("host-record=ws254"), "{t}");
        assert!(!l.contains(&"port=0"), "{t}");
        assert_eq!(l.iter().filter(|x| x.starts_with("host-record=")).count(), 253);
        assert_eq!(l.iter().filter(|x| x.starts_with("dhcp-range=")).count(), 1);
        // Every line is a comment, blank, or key[=value]: nothing a dnsmasq parser would trip on.
        assert!(l.iter().all(|x| x.is_empty()
            || x.starts_with('#')
            || !x.contains(char::is_whitespace)
            || x.starts_with("pxe-service")));
    }

    #[test]
    fn ltsp_sample_dhcpd_uses_the_classic_expression() {
        let (cfg, plan) = load(LTSP);
        let t = isc_dhcpd(&cfg, &plan).expect("export");
        for want in [
            "authoritative;",
            "subnet 192.168.0.0 netmask 255.255.255.0 {",
            "  range dynamic-bootp 192.168.0.1 192.168.0.253;",
            "  next-server 192.168.0.254;",
            "  if option user-class = \"iPXE\" or exists mosboot-ipxe-encap {",
            "    filename \"boot.ipxe\";",
            "    filename \"pxelinux.0\";",
            "  option host-name = concat(\"ws\", suffix(concat(\"00\", binary-to-ascii(10, 8, \"\", substring(leased-address, 3, 1))), 3));",
            "default-lease-time 43200;",
            "max-lease-time 43200;",
            "option mosboot-ipxe-encap code 175 = string;",
        ] {
            assert!(lines(&t).contains(&want), "missing {want:?} in\n{t}");
        }
        assert!(t.contains("dhcpd -4 -f -cf THIS_FILE -lf /var/lib/dhcp/dhcpd-lab.leases eth1"), "{t}");
        assert!(t.contains("/lab/mosboot-out/tftpboot"), "{t}");
        assert!(!t.contains("leased-address = "), "{t}");
        assert!(!t.contains("option routers"), "{t}");
        assert_eq!(t.matches('{').count(), t.matches('}').count());
    }

    const SMALL: &str = r#"
[cluster]
name = "t"
interface = "veth0"
server = "10.61.0.254/24"
pool = "10.61.0.10-10.61.0.20"
hostname = "mosix"
lease_time = "1h"
router = "10.61.0.1"
dns = ["10.61.0.2", "10.61.0.3"]

[image]
kernel = "k"

[[node]]
mac = "02:00:00:00:00:99"
ip = "10.61.0.15"
hostname = "big"
"#;

    #[test]
    fn pinned_address_splits_the_range_and_gets_a_host_entry() {
        let (cfg, plan) = load(SMALL);
        let d = dnsmasq(&cfg, &plan).expect("dnsmasq");
        let l = lines(&d);
        for want in [
            "dhcp-range=10.61.0.10,10.61.0.14,255.255.255.0,3600",
            "dhcp-range=10.61.0.16,10.61.0.20,255.255.255.0,3600",
            "dhcp-host=02:00:00:00:00:99,10.61.0.15,big,3600",
            "dhcp-option=option:router,10.61.0.1",
            "dhcp-option=option:dns-server,10.61.0.2,10.61.0.3",
            "host-record=mosix2,10.61.0.10",
            "host-record=mosix8,10.61.0.16",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{d}");
        }
        assert!(!d.contains("host-record=big"), "{d}");
        let i = isc_dhcpd(&cfg, &plan).expect("dhcpd");
        let l = lines(&i);
        for want in [
            "  range dynamic-bootp 10.61.0.10 10.61.0.14;",
            "  range dynamic-bootp 10.61.0.16 10.61.0.20;",
            "  option routers 10.61.0.1;",
            "  option domain-name-servers 10.61.0.2, 10.61.0.3;",
            "  if leased-address = 0a:3d:00:0a { option host-name \"mosix2\"; }  # 10.61.0.10",
            "  if leased-address = 0a:3d:00:14 { option host-name \"mosix12\"; }  # 10.61.0.20",
            "host mosboot-node7 {",
            "  hardware ethernet 02:00:00:00:00:99;",
            "  fixed-address 10.61.0.15;",
            "  option host-name \"big\";",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{i}");
        }
        assert!(!i.contains("leased-address = 0a:3d:00:0f"), "pinned address is not a pool rule:\n{i}");
    }

    #[test]
    fn proxy_mode() {
        let (cfg, plan) =
            load(&SMALL.replace("lease_time = \"1h\"", "lease_time = \"1h\"\ndhcp = \"proxy\""));
        let d = dnsmasq(&cfg, &plan).expect("dnsmasq proxies");
        let l = lines(&d);
        for want in [
            "dhcp-range=10.61.0.0,proxy,255.255.255.0",
            "pxe-service=tag:!mosboot_ipxe,x86PC,\"mosboot t\",pxelinux",
            "pxe-service=tag:mosboot_ipxe,x86PC,\"mosboot iPXE\",boot.ipxe",
            "port=0",
            "enable-tftp",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{d}");
        }
        assert!(!d.contains("dhcp-range=10.61.0.10"), "{d}");
        assert!(!d.contains("host-record="), "{d}");
        let e = isc_dhcpd(&cfg, &plan).expect_err("dhcpd cannot proxy");
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("cannot act as a proxyDHCP server"), "{e}");
    }

    #[test]
    fn off_mode_is_tftp_only() {
        let (cfg, plan) = load(&SMALL.replace("lease_time = \"1h\"", "lease_time = \"1h\"\ndhcp = \"off\""));
        let d = dnsmasq(&cfg, &plan).expect("dnsmasq");
        assert!(lines(&d).contains(&"port=0") && lines(&d).contains(&"enable-tftp"), "{d}");
        assert!(!d.contains("dhcp-range"), "{d}");
        assert!(isc_dhcpd(&cfg, &plan).is_err());
    }

    #[test]
    fn dotted_template_names_and_short_leases_are_noted() {
        let text = SMALL
            .replace("hostname = \"mosix\"", "hostname = \"n{{ node }}.lab\"")
            .replace("lease_time = \"1h\"", "lease_time = \"60s\"");
        let (cfg, plan) = load(&text);
        let d = dnsmasq(&cfg, &plan).expect("dnsmasq");
        assert!(d.contains("contain a dot (first: n2.lab)"), "{d}");
        assert!(d.contains("raises leases under 120 s"), "{d}");
    }

    #[test]
    fn bad_interface_or_out_path_is_a_user_error() {
        let (cfg, mut plan) = load(SMALL);
        plan.interface = "eth1\ndhcp-range=evil".into();
        let e = render(&cfg, &plan, Format::Dnsmasq).expect_err("refused");
        assert_eq!(e.exit_code(), 1);
        let (mut cfg, plan) = load(SMALL);
        cfg.image.out = PathBuf::from("/a,b");
        assert!(render(&cfg, &plan, Format::Dnsmasq).is_err());
    }

    /// The exact text of every variant, so a change to a template shows as a reviewable diff.
    #[test]
    fn snapshots_of_every_variant() {
        let proxy = SMALL.replace("lease_time = \"1h\"", "lease_time = \"1h\"\ndhcp = \"proxy\"");
        let off = SMALL.replace("lease_time = \"1h\"", "lease_time = \"1h\"\ndhcp = \"off\"");
        let dotted = SMALL
            .replace("hostname = \"mosix\"", "hostname = \"n{{ node }}.lab\"")
            .replace("lease_time = \"1h\"", "lease_time = \"60s\"");
        for (name, text) in [("ltsp", LTSP), ("small", SMALL), ("proxy", &proxy), ("off", &off), ("dotted", &dotted)] {
            let (cfg, plan) = load(text);
            for fmt in [Format::Dnsmasq, Format::IscDhcpd] {
                let out = match render(&cfg, &plan, fmt) {
                    Ok(t) => t,
                    Err(e) => format!("refused (exit {}): {e}\n", e.exit_code()),
                };
                insta::assert_snapshot!(format!("export__{name}__{fmt:?}"), out);
            }
        }
    }
}

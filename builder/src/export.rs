//! `mosboot export dnsmasq|isc-dhcpd`: the same DHCP/TFTP behaviour as `mosboot serve`, written
//! as a config for a site that keeps its own server. Both texts come from the address plan, so a
//! node gets the same address, hostname and boot file whichever server answers.
//!
//! The hard part is option 12 for pool addresses whose MAC nobody knows in advance: dnsmasq names
//! a client after the DNS host record of the address it leases (only while its DNS is on), and
//! ISC dhcpd evaluates `option host-name` per lease, where `leased-address` is known.
//!
//! The texts are the templates `templates/export/*`; this module only gathers the facts they
//! need (plan, netboot's option numbers and bytes) and refuses what a server config cannot hold.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use minijinja::Value;
use netboot::dhcp::packet::{PXE_VENDOR_OPTIONS, code};
use netboot::dhcp::{BootFiles, PXE_SERVICE_PORT};
use serde::Serialize;

use crate::config::{Config, DhcpMode, HostnameRule};
use crate::error::Failure;
use crate::hostname;
use crate::plan::{Plan, PlanNode, Role};
use crate::render::{EXPORT_DIR, Templates};

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

    /// The name on the command line and in the header.
    pub fn name(self) -> &'static str {
        match self {
            Format::Dnsmasq => "dnsmasq",
            Format::IscDhcpd => "isc-dhcpd",
        }
    }

    /// The template under `templates/export/`.
    fn template(self) -> &'static str {
        match self {
            Format::Dnsmasq => "dnsmasq.conf",
            Format::IscDhcpd => "isc-dhcpd.conf",
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
    let root = absolute(&cfg.image.out).join(crate::pipeline::TFTP_DIR);
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

/// Option numbers the texts name, from netboot's table (the wire facts live there).
#[derive(Serialize)]
struct OptionCodes {
    hostname: u8,
    vendor_specific: u8,
    vendor_class: u8,
    tftp_server: u8,
    bootfile: u8,
    ipxe_encap: u8,
}

#[derive(Serialize)]
struct BootCtx {
    pxe: String,
    /// The PXE name without dnsmasq's implied layer suffix `.0`.
    pxe_base: String,
    ipxe: String,
}

#[derive(Serialize)]
struct DnsmasqCtx {
    min_lease: u64,
    lease_max: usize,
}

#[derive(Serialize)]
struct HostCtx {
    number: u32,
    ip: Ipv4Addr,
    hex_ip: String,
    hostname: String,
    mac: String,
}

impl HostCtx {
    fn of(n: &PlanNode) -> HostCtx {
        HostCtx {
            number: n.number,
            ip: n.ip,
            hex_ip: hex_ip(n.ip),
            hostname: n.hostname.clone(),
            mac: n.mac.map(|m| m.to_string()).unwrap_or_default(),
        }
    }
}

/// Everything the `export/` templates read; the templates hold the text, this only facts.
#[derive(Serialize)]
struct ExportCtx {
    version: &'static str,
    tool: &'static str,
    config_path: String,
    cluster: String,
    cluster_file: String,
    interface: String,
    mode: &'static str,
    server: Ipv4Addr,
    prefix: u8,
    netmask: Ipv4Addr,
    broadcast: Ipv4Addr,
    network: Ipv4Addr,
    pool_count: usize,
    node_count: usize,
    ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The lease as written (at least 1 s); `lease_secs` is the config's value.
    lease: u64,
    lease_secs: u64,
    router: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    tftp_root: String,
    boot: BootCtx,
    opt: OptionCodes,
    /// Option 43 as colon-separated hex, exactly the bytes serve sends.
    pxe_vendor_options: String,
    /// Options sent even when not asked for, as dhcpd hex constants.
    forced_options: Vec<String>,
    pxe_service_port: u16,
    dnsmasq: DnsmasqCtx,
    pool: Vec<HostCtx>,
    pinned: Vec<HostCtx>,
    /// Pool hostnames with a dot (dnsmasq gives them no option 12).
    dotted: Vec<String>,
    /// Whether the classic LTSP dhcpd expression gives exactly the plan's pool names.
    ltsp_expression: bool,
}

fn context(cfg: &Config, plan: &Plan, fmt: Format) -> Result<ExportCtx, Failure> {
    let boot = BootFiles::default();
    let pool: Vec<HostCtx> = pool_nodes(plan).map(HostCtx::of).collect();
    Ok(ExportCtx {
        version: env!("CARGO_PKG_VERSION"),
        tool: fmt.name(),
        config_path: printable(&absolute(&cfg.path).to_string_lossy()),
        cluster: printable(&plan.cluster),
        cluster_file: file_safe(&plan.cluster),
        interface: plan.interface.clone(),
        mode: match plan.dhcp {
            DhcpMode::Full => "full",
            DhcpMode::Proxy => "proxy",
            DhcpMode::Off => "off",
        },
        server: plan.server,
        prefix: plan.prefix_len,
        netmask: plan.netmask,
        broadcast: plan.broadcast,
        network: network(plan),
        pool_count: plan.pool.len(),
        node_count: plan.node_count(),
        ranges: ranges(&plan.pool),
        lease: plan.lease_time.as_secs().max(1),
        lease_secs: plan.lease_time.as_secs(),
        router: plan.router,
        dns: plan.dns.clone(),
        tftp_root: tftp_root(cfg)?,
        boot: BootCtx {
            pxe_base: boot.pxe.strip_suffix(".0").unwrap_or(&boot.pxe).to_string(),
            pxe: boot.pxe,
            ipxe: boot.ipxe,
        },
        opt: OptionCodes {
            hostname: code::HOSTNAME,
            vendor_specific: code::VENDOR_SPECIFIC,
            vendor_class: code::VENDOR_CLASS,
            tftp_server: code::TFTP_SERVER,
            bootfile: code::BOOTFILE,
            ipxe_encap: code::IPXE_ENCAP,
        },
        pxe_vendor_options: hex_bytes(&PXE_VENDOR_OPTIONS),
        forced_options: [
            code::HOSTNAME,
            code::VENDOR_SPECIFIC,
            code::VENDOR_CLASS,
            code::TFTP_SERVER,
            code::BOOTFILE,
        ]
        .iter()
        .map(|c| format!("{c:02x}"))
        .collect(),
        pxe_service_port: PXE_SERVICE_PORT,
        dnsmasq: DnsmasqCtx {
            min_lease: DNSMASQ_MIN_LEASE_SECS,
            lease_max: (plan.pool.len() + plan.pinned.len()).max(DNSMASQ_DEFAULT_LEASE_MAX),
        },
        dotted: pool.iter().filter(|n| n.hostname.contains('.')).map(|n| n.hostname.clone()).collect(),
        ltsp_expression: ltsp_expression_fits(cfg, plan),
        pool,
        pinned: pinned_nodes(plan).map(|(n, _)| HostCtx::of(n)).collect(),
    })
}

fn render_template(cfg: &Config, plan: &Plan, fmt: Format) -> Result<String, Failure> {
    let ctx = Value::from_serialize(context(cfg, plan, fmt)?);
    Ok(Templates::export().render(&format!("{EXPORT_DIR}{}", fmt.template()), &ctx)?)
}

/// dnsmasq: DHCP (full or proxy) and TFTP in one file.
pub fn dnsmasq(cfg: &Config, plan: &Plan) -> Result<String, Failure> {
    render_template(cfg, plan, Format::Dnsmasq)
}

/// A cluster name as part of a file name.
fn file_safe(s: &str) -> String {
    let t: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if t.is_empty() { "cluster".into() } else { t }
}

/// Bytes as a dhcpd/dnsmasq data constant: colon-separated hex octets.
fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// An address as a dhcpd data constant, for `leased-address = ...`.
fn hex_ip(ip: Ipv4Addr) -> String {
    hex_bytes(&ip.octets())
}

/// Whether every pool node's name is what the LTSP rule gives, so the classic dhcpd.conf
/// expression gives exactly the plan's names.
fn ltsp_expression_fits(cfg: &Config, plan: &Plan) -> bool {
    cfg.cluster.hostname == HostnameRule::Ltsp
        && pool_nodes(plan).all(|n| {
            hostname::render(&HostnameRule::Ltsp, n.ip, n.number, n.mac).is_ok_and(|h| h == n.hostname)
        })
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
    render_template(cfg, plan, Format::IscDhcpd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::{SAMPLE as LTSP, load};

    fn lines(s: &str) -> Vec<&str> {
        s.lines().collect()
    }

    /// Every line of `want` is a whole line of `text`.
    fn assert_has_lines(text: &str, want: &[&str]) {
        let have = lines(text);
        for w in want {
            assert!(have.contains(w), "missing {w:?} in\n{text}");
        }
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
        assert_has_lines(
            &t,
            &[
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
            ],
        );
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
        assert_has_lines(
            &t,
            &[
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
            ],
        );
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
        assert_has_lines(
            &d,
            &[
                "dhcp-range=10.61.0.10,10.61.0.14,255.255.255.0,3600",
                "dhcp-range=10.61.0.16,10.61.0.20,255.255.255.0,3600",
                "dhcp-host=02:00:00:00:00:99,10.61.0.15,big,3600",
                "dhcp-option=option:router,10.61.0.1",
                "dhcp-option=option:dns-server,10.61.0.2,10.61.0.3",
                "host-record=mosix2,10.61.0.10",
                "host-record=mosix8,10.61.0.16",
            ],
        );
        assert!(!d.contains("host-record=big"), "{d}");
        let i = isc_dhcpd(&cfg, &plan).expect("dhcpd");
        assert_has_lines(
            &i,
            &[
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
            ],
        );
        assert!(!i.contains("leased-address = 0a:3d:00:0f"), "pinned address is not a pool rule:\n{i}");
    }

    #[test]
    fn proxy_mode() {
        let (cfg, plan) =
            load(&SMALL.replace("lease_time = \"1h\"", "lease_time = \"1h\"\ndhcp = \"proxy\""));
        let d = dnsmasq(&cfg, &plan).expect("dnsmasq proxies");
        assert_has_lines(
            &d,
            &[
                "dhcp-range=10.61.0.0,proxy,255.255.255.0",
                "pxe-service=tag:!mosboot_ipxe,x86PC,\"mosboot t\",pxelinux",
                "pxe-service=tag:mosboot_ipxe,x86PC,\"mosboot iPXE\",boot.ipxe",
                "port=0",
                "enable-tftp",
            ],
        );
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
        for (name, text) in
            [("ltsp", LTSP), ("small", SMALL), ("proxy", &proxy), ("off", &off), ("dotted", &dotted)]
        {
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

//! The address plan: node number <-> IP <-> hostname <-> MAC. One module owns it; the map, the
//! node files, the DHCP server and the `nodes` table all ask it, so they can never disagree.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use netboot::mac::MacAddr;

use crate::config::{Config, DhcpMode, MapMode};
use crate::diag::Diagnostics;
use crate::hostname;
use crate::map::{self, MapLine};

/// Why a node is in the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The server itself, always node 1.
    Server,
    /// An address from the pool, handed out by DHCP.
    Pool,
    /// A `[[node]]` with a fixed MAC and address.
    Pinned,
}

/// One node of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PlanNode {
    pub number: u32,
    pub ip: Ipv4Addr,
    pub hostname: String,
    #[serde(serialize_with = "ser_mac")]
    pub mac: Option<MacAddr>,
    pub yardstick: Option<String>,
    pub role: Role,
}

fn ser_mac<S: serde::Serializer>(mac: &Option<MacAddr>, s: S) -> Result<S::Ok, S::Error> {
    match mac {
        Some(m) => s.serialize_str(&m.to_string()),
        None => s.serialize_none(),
    }
}

/// The whole plan, derived only from the config: the same config always gives the same plan.
#[derive(Clone, Debug)]
pub struct Plan {
    pub cluster: String,
    pub interface: String,
    pub server: Ipv4Addr,
    pub prefix_len: u8,
    pub netmask: Ipv4Addr,
    pub broadcast: Ipv4Addr,
    /// Every node, ordered by number; `nodes[0]` is the server (node 1).
    pub nodes: Vec<PlanNode>,
    /// Pool addresses in allocation order (the order the config lists them), pinned ones removed.
    pub pool: Vec<Ipv4Addr>,
    pub pinned: Vec<(MacAddr, Ipv4Addr)>,
    pub lease_time: Duration,
    /// `bootp = "dynamic"`: BOOTP-only clients get pool addresses, not only pinned ones.
    pub bootp_dynamic: bool,
    /// `[serve] dhcp_new_mac_burst`/`dhcp_new_macs_per_second`: the DHCP new-MAC flood limit.
    pub new_macs: netboot::dhcp::NewMacLimits,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub dhcp: DhcpMode,
    pub map_mode: MapMode,
    pub map: Vec<MapLine>,
    by_ip: HashMap<Ipv4Addr, usize>,
}

impl Plan {
    /// Builds the plan and checks everything that depends on more than one key.
    pub fn new(cfg: &Config) -> Result<Plan, Diagnostics> {
        let mut d = Diagnostics::default();
        let file = cfg.path.as_path();
        let c = &cfg.cluster;
        let net = ipnet::Ipv4Net::new(c.server, c.prefix_len).map_err(|e| {
            let mut d = Diagnostics::default();
            d.push(file, cfg.line_of("cluster.server"), "cluster.server", e.to_string());
            d
        })?;
        let (network, broadcast) = (net.network(), net.broadcast());
        let pool_line = cfg.line_of("cluster.pool");
        if c.server == network || c.server == broadcast {
            d.push(
                file,
                cfg.line_of("cluster.server"),
                "cluster.server",
                format!("{} is the network or broadcast address of {}", c.server, net.trunc()),
            );
        }

        // Count before expanding, so a /8 typo is an error and not 16 million allocations.
        let total: u64 = c.pool.iter().map(|(a, b)| u64::from(u32::from(*b) - u32::from(*a)) + 1).sum();
        if total + cfg.nodes.len() as u64 + 1 > u64::from(map::MAX_NODE_ID) {
            d.push(
                file,
                pool_line,
                "cluster.pool",
                format!(
                    "holds {total} addresses; node IDs would pass openMosix's limit of {}",
                    map::MAX_NODE_ID
                ),
            );
            return Err(d);
        }

        let mut pool = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for &(a, b) in &c.pool {
            for n in u32::from(a)..=u32::from(b) {
                let ip = Ipv4Addr::from(n);
                if !net.contains(&ip) {
                    d.push(
                        file,
                        pool_line,
                        "cluster.pool",
                        format!("{ip} is outside the server's subnet {}", net.trunc()),
                    );
                    break;
                }
                if ip == c.server {
                    d.push(
                        file,
                        pool_line,
                        "cluster.pool",
                        format!("contains the server's own address {ip}"),
                    );
                    continue;
                }
                if ip == network || ip == broadcast {
                    let what = if ip == network { "network" } else { "broadcast" };
                    d.push(file, pool_line, "cluster.pool", format!("contains the {what} address {ip}"));
                    continue;
                }
                if !seen.insert(ip) {
                    d.push(file, pool_line, "cluster.pool", format!("lists {ip} twice (ranges overlap)"));
                    continue;
                }
                pool.push(ip);
            }
        }

        let mut pinned = Vec::new();
        let mut macs: HashMap<MacAddr, usize> = HashMap::new();
        let mut pinned_ips: HashMap<Ipv4Addr, usize> = HashMap::new();
        for (i, n) in cfg.nodes.iter().enumerate() {
            let k = i + 1;
            let key_mac = format!("node[{k}].mac");
            let key_ip = format!("node[{k}].ip");
            if let Some(first) = macs.insert(n.mac, k) {
                d.push(
                    file,
                    cfg.line_of(&key_mac),
                    &key_mac,
                    format!("MAC {} is already pinned by node[{first}]", n.mac),
                );
            }
            if let Some(first) = pinned_ips.insert(n.ip, k) {
                d.push(
                    file,
                    cfg.line_of(&key_ip),
                    &key_ip,
                    format!("address {} is already pinned by node[{first}]", n.ip),
                );
            }
            if !net.contains(&n.ip) || n.ip == network || n.ip == broadcast {
                d.push(
                    file,
                    cfg.line_of(&key_ip),
                    &key_ip,
                    format!("{} is not a host address of the server's subnet {}", n.ip, net.trunc()),
                );
                // Left out of the numbering so one mistake does not cascade into others.
                pinned_ips.remove(&n.ip);
                continue;
            } else if n.ip == c.server {
                d.push(file, cfg.line_of(&key_ip), &key_ip, format!("{} is the server's own address", n.ip));
                pinned_ips.remove(&n.ip);
                continue;
            }
            pinned.push((n.mac, n.ip));
        }
        pool.retain(|ip| !pinned_ips.contains_key(ip));

        // Numbering: server is 1, then every address a node may hold, ascending.
        let mut addrs: Vec<Ipv4Addr> =
            pool.iter().copied().chain(pinned_ips.keys().copied()).filter(|ip| *ip != c.server).collect();
        addrs.sort();
        addrs.dedup();
        let pinned_by_ip: HashMap<Ipv4Addr, &crate::config::NodeSection> =
            cfg.nodes.iter().map(|n| (n.ip, n)).collect();

        let mut nodes = Vec::with_capacity(addrs.len() + 1);
        let rule_line = cfg.line_of("cluster.hostname");
        let mut rule_failed = false;
        let mut make_name =
            |ip: Ipv4Addr, number: u32, mac: Option<MacAddr>, d: &mut Diagnostics| -> String {
                match hostname::render(&c.hostname, ip, number, mac) {
                    Ok(h) => h,
                    Err(e) => {
                        if !rule_failed {
                            d.push(file, rule_line, "cluster.hostname", format!("{e} (node {number}, {ip})"));
                            rule_failed = true;
                        }
                        format!("node{number}")
                    }
                }
            };
        let server_name = make_name(c.server, 1, None, &mut d);
        nodes.push(PlanNode {
            number: 1,
            ip: c.server,
            hostname: server_name,
            mac: None,
            yardstick: None,
            role: Role::Server,
        });
        for (i, ip) in addrs.iter().enumerate() {
            let number = i as u32 + 2;
            match pinned_by_ip.get(ip) {
                Some(p) => {
                    let k = cfg.nodes.iter().position(|n| n.ip == *ip).map(|x| x + 1).unwrap_or(0);
                    let name = match &p.hostname {
                        Some(h) => {
                            let key = format!("node[{k}].hostname");
                            if let Err(e) = hostname::validate(h) {
                                d.push(file, cfg.line_of(&key), &key, e);
                            }
                            h.clone()
                        }
                        None => make_name(*ip, number, Some(p.mac), &mut d),
                    };
                    nodes.push(PlanNode {
                        number,
                        ip: *ip,
                        hostname: name,
                        mac: Some(p.mac),
                        yardstick: p.yardstick.clone(),
                        role: Role::Pinned,
                    });
                }
                None => {
                    let name = make_name(*ip, number, None, &mut d);
                    nodes.push(PlanNode {
                        number,
                        ip: *ip,
                        hostname: name,
                        mac: None,
                        yardstick: None,
                        role: Role::Pool,
                    });
                }
            }
        }

        // Hostnames must be unique: the map and /etc/hosts key on them.
        let mut names: BTreeMap<&str, &PlanNode> = BTreeMap::new();
        let mut dup_reported = 0;
        for n in &nodes {
            if let Some(first) = names.insert(n.hostname.as_str(), n) {
                if dup_reported < 3 {
                    let (key, line) = match n.role {
                        Role::Pinned => {
                            let k = cfg.nodes.iter().position(|x| x.ip == n.ip).map(|x| x + 1).unwrap_or(0);
                            let key = format!("node[{k}].hostname");
                            let line = cfg.line_of(&key).max(cfg.line_of(&format!("node[{k}].ip")));
                            (key, line)
                        }
                        _ => ("cluster.hostname".to_string(), rule_line),
                    };
                    d.push(
                        file,
                        line,
                        &key,
                        format!(
                            "hostname '{}' is given to both node {} ({}) and node {} ({})",
                            n.hostname, first.number, first.ip, n.number, n.ip
                        ),
                    );
                }
                dup_reported += 1;
            }
        }
        if dup_reported > 3 {
            d.push(
                file,
                rule_line,
                "cluster.hostname",
                format!("... and {} more duplicate hostnames", dup_reported - 3),
            );
        }

        let pairs: Vec<(u32, Ipv4Addr)> = nodes.iter().map(|n| (n.number, n.ip)).collect();
        let map = map::compact(&pairs);
        if map.len() > map::MAX_LINES {
            d.push(file, pool_line, "cluster.pool", format!("the cluster map would need {} lines; openMosix reads at most {} (use fewer, more contiguous ranges)", map.len(), map::MAX_LINES));
        }
        if !d.is_empty() {
            return Err(d);
        }
        let by_ip = nodes.iter().enumerate().map(|(i, n)| (n.ip, i)).collect();
        Ok(Plan {
            cluster: c.name.clone(),
            interface: c.interface.clone(),
            server: c.server,
            prefix_len: c.prefix_len,
            netmask: net.netmask(),
            broadcast,
            nodes,
            pool,
            pinned,
            lease_time: c.lease_time,
            bootp_dynamic: c.bootp_dynamic,
            new_macs: cfg.serve.dhcp_new_macs,
            router: c.router,
            dns: c.dns.clone(),
            dhcp: c.dhcp,
            map_mode: cfg.openmosix.map,
            map,
            by_ip,
        })
    }

    /// The node that holds (or may hold) an address.
    pub fn node_by_ip(&self, ip: Ipv4Addr) -> Option<&PlanNode> {
        self.by_ip.get(&ip).map(|&i| &self.nodes[i])
    }

    /// The pinned node of a MAC, if any.
    pub fn node_by_mac(&self, mac: MacAddr) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.mac == Some(mac))
    }

    /// The map file's exact bytes.
    pub fn map_text(&self) -> String {
        map::text(&self.map)
    }

    /// Number of nodes in the map, the server included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(extra: &str, cluster: &str) -> Result<Plan, Diagnostics> {
        let text = format!(
            "[cluster]\nname = \"lab\"\ninterface = \"eth1\"\n{cluster}\n[image]\nkernel = \"k\"\n{extra}"
        );
        let cfg = Config::parse(&text, Path::new("c.toml"))?;
        Plan::new(&cfg)
    }

    const LTSP: &str = "server = \"192.168.0.254/24\"\npool = \"192.168.0.1-192.168.0.253\"\n";

    #[test]
    fn ltsp_example() {
        let p = plan("", LTSP).expect("valid");
        assert_eq!(p.map_text(), "1 192.168.0.254 1\n2 192.168.0.1 253\n");
        assert_eq!(p.nodes[1].hostname, "ws001");
        assert_eq!(p.nodes[1].number, 2);
        assert_eq!(
            p.node_by_ip("192.168.0.12".parse().expect("ip")).map(|n| n.hostname.as_str()),
            Some("ws012")
        );
        assert_eq!(p.nodes[0].hostname, "ws254");
        assert_eq!(p.node_count(), 254);
        assert_eq!(p.netmask, Ipv4Addr::new(255, 255, 255, 0));
    }

    #[test]
    fn pinned_outside_pool_gets_its_own_number_and_line() {
        let p = plan(
            "[[node]]\nmac = \"00:0c:29:aa:bb:01\"\nip = \"10.0.0.50\"\nhostname = \"big\"\nyardstick = \"P/133\"\n",
            "server = \"10.0.0.1/24\"\npool = \"10.0.0.10-10.0.0.12\"\n",
        )
        .expect("valid");
        assert_eq!(p.map_text(), "1 10.0.0.1 1\n2 10.0.0.10 3\n5 10.0.0.50 1\n");
        let big = p.node_by_mac("00:0c:29:aa:bb:01".parse().expect("mac")).expect("pinned");
        assert_eq!((big.number, big.hostname.as_str(), big.yardstick.as_deref()), (5, "big", Some("P/133")));
    }

    #[test]
    fn pinned_inside_pool_is_reserved() {
        let p = plan(
            "[[node]]\nmac = \"00:0c:29:aa:bb:01\"\nip = \"10.0.0.11\"\n",
            "server = \"10.0.0.1/24\"\npool = \"10.0.0.10-10.0.0.12\"\nhostname = \"mosix\"\n",
        )
        .expect("valid");
        assert_eq!(p.pool, vec![Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 12)]);
        assert_eq!(p.map_text(), "1 10.0.0.1 1\n2 10.0.0.10 3\n");
        assert_eq!(p.nodes[2].hostname, "mosix3");
    }

    #[test]
    fn five_mistakes_five_messages() {
        let err = plan(
            "[[node]]\nmac = \"00:0c:29:aa:bb:01\"\nip = \"10.9.0.5\"\n[[node]]\nmac = \"00:0c:29:aa:bb:01\"\nip = \"10.0.0.7\"\n",
            "server = \"10.0.0.1/24\"\npool = \"10.0.0.0-10.0.0.5,10.0.0.3\"\n",
        )
        .expect_err("invalid");
        // network address in pool, server in pool, overlapping ranges, pinned ip outside subnet,
        // duplicate MAC
        assert_eq!(err.len(), 5, "{err}");
        assert!(err.items.iter().all(|d| d.line > 0), "{err}");
    }

    #[test]
    fn duplicate_hostnames_are_reported() {
        let err =
            plan("", "server = \"10.0.0.1/16\"\npool = \"10.0.0.2-10.0.1.2\"\n").expect_err("ws002 twice");
        assert!(err.to_string().contains("hostname 'ws002' is given to both"), "{err}");
    }

    #[test]
    fn huge_pools_fail_fast() {
        let err =
            plan("", "server = \"10.0.0.1/8\"\npool = \"10.0.0.2-10.255.255.254\"\n").expect_err("too big");
        assert!(err.to_string().contains("limit of 65535"), "{err}");
    }

    #[test]
    fn too_many_map_lines() {
        let ranges: Vec<String> =
            (0..300).map(|i| format!("10.0.{}.{}", i / 100, (i % 100) * 2 + 1)).collect();
        let err = plan(
            "",
            &format!("server = \"10.0.200.1/16\"\npool = \"{}\"\nhostname = \"mosix\"\n", ranges.join(",")),
        )
        .expect_err("lines");
        assert!(err.to_string().contains("at most 256"), "{err}");
    }
}

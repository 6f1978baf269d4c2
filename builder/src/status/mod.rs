//! What `mosboot serve` knows about its nodes while it runs, and the status page that shows it.
//!
//! serve's event recorder feeds [`Live`]: boot stages (also appended to the stage log) and the
//! nodes' alive reports, admitted by [`Gate`] only from an address that holds a lease for the
//! node the report names, at most a few per second per address. The page and its JSON API
//! ([`http`]) read the same inputs `mosboot nodes` reads from files, through the same
//! [`crate::nodes::rows`]. Memory is bounded by the plan: one alive record and one rate bucket per
//! plan node, and a capped list of recent stage events.

pub mod http;
pub mod timeline;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use netboot::mac::MacAddr;
use netboot::node_report::{NodeReport, Vitals};

use crate::nodes::Inputs;
use crate::plan::{Plan, Role};
use crate::serve::StageRecord;

/// serve's copy of the last alive report of every node, for `mosboot nodes` (a JSON array).
pub const ALIVE_FILE: &str = "alive.json";
/// Stage events kept in memory for the page (a boot is about ten per node).
pub const MAX_EVENTS: usize = 8192;
/// The address README and `mosboot init` suggest for `[serve] status`.
pub const DEFAULT_STATUS: &str = "127.0.0.1:8067";

/// A node's last alive report, as received.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Alive {
    pub ip: Ipv4Addr,
    /// Unix milliseconds when it arrived.
    pub at_ms: u64,
    #[serde(flatten)]
    pub vitals: Vitals,
}

/// Why a report was dropped (logged at debug level, counted).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("{0} holds no lease")]
    NoLease(Ipv4Addr),
    #[error("{0} is not an address of the plan")]
    NotInPlan(Ipv4Addr),
    #[error("{ip} claims node {claimed}, the plan has node {planned} there")]
    WrongNode { ip: Ipv4Addr, claimed: u32, planned: u32 },
    #[error("{ip} reports MAC {claimed}, its lease is for {leased}")]
    WrongMac { ip: Ipv4Addr, claimed: MacAddr, leased: MacAddr },
    #[error("{0} reports faster than allowed")]
    TooFast(Ipv4Addr),
}

/// Token bucket per address: a burst of this many reports, then one per second.
const BURST: f64 = 4.0;
const PER_SEC: f64 = 1.0;

/// Decides whether a report's sender may speak for the node it names.
#[derive(Debug)]
pub struct Gate {
    /// Full DHCP mode: reports need a bound lease. In proxy/off mode another server hands out
    /// addresses, so the sender must hold a plan address (and a pinned node's MAC).
    full: bool,
    /// Bound leases: address → (MAC, expiry in unix seconds).
    leases: HashMap<Ipv4Addr, (MacAddr, u64)>,
    /// Per plan address: (tokens, last refill in ms).
    buckets: HashMap<Ipv4Addr, (f64, u64)>,
    lease_secs: u64,
}

impl Gate {
    pub fn new(plan: &Plan, full: bool, leases: &[netboot::leases::Lease]) -> Gate {
        let mut g = Gate {
            full,
            leases: HashMap::new(),
            buckets: HashMap::new(),
            lease_secs: plan.lease_time.as_secs(),
        };
        for l in leases {
            if l.state == netboot::leases::LeaseState::Bound {
                g.leases.insert(l.ip, (l.mac, l.expires));
            } else {
                g.leases.remove(&l.ip);
            }
        }
        g
    }

    /// The DHCP server acknowledged `ip` to `mac` just now.
    pub fn leased(&mut self, ip: Ipv4Addr, mac: MacAddr, now_s: u64) {
        self.leases.insert(ip, (mac, now_s + self.lease_secs));
    }

    /// The lease of `ip` ended (released, declined, refused).
    pub fn ended(&mut self, ip: Ipv4Addr) {
        self.leases.remove(&ip);
    }

    /// Admits a report from `ip` (the packet's source address) or says why not.
    pub fn admit(
        &mut self,
        plan: &Plan,
        ip: Ipv4Addr,
        report: &NodeReport,
        now_ms: u64,
    ) -> Result<(), Refused> {
        let node = plan.node_by_ip(ip).filter(|n| n.role != Role::Server).ok_or(Refused::NotInPlan(ip))?;
        let mac = match report {
            NodeReport::Alive(v) => Some(v.mac),
            NodeReport::Joined { .. } | NodeReport::FloppyStage1 => None,
        };
        if self.full {
            let (leased, expires) = *self.leases.get(&ip).ok_or(Refused::NoLease(ip))?;
            if expires <= now_ms / 1000 {
                return Err(Refused::NoLease(ip));
            }
            if let Some(claimed) = mac.filter(|m| *m != leased) {
                return Err(Refused::WrongMac { ip, claimed, leased });
            }
        } else if let (Some(claimed), Some(pinned)) = (mac, node.mac)
            && claimed != pinned
        {
            return Err(Refused::WrongMac { ip, claimed, leased: pinned });
        }
        // A floppy's stage-1 names no node: its lease (checked above) is what speaks for it.
        if *report != NodeReport::FloppyStage1 && report.node() != node.number {
            return Err(Refused::WrongNode { ip, claimed: report.node(), planned: node.number });
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((BURST, now_ms));
        *tokens = (*tokens + now_ms.saturating_sub(*last) as f64 / 1000.0 * PER_SEC).min(BURST);
        *last = now_ms;
        if *tokens < 1.0 {
            return Err(Refused::TooFast(ip));
        }
        *tokens -= 1.0;
        Ok(())
    }
}

/// One message for the page's live stream.
#[derive(Clone, Debug)]
pub struct LiveEvent {
    /// SSE event name: `stage` or `alive`.
    pub kind: &'static str,
    /// JSON.
    pub data: String,
}

/// serve's live inputs; the lease file is read again whenever rows are built, like `mosboot
/// nodes` does, so there is one source of truth for leases.
#[derive(Debug, Default)]
pub struct Live {
    pub inputs: Inputs,
    /// Whether the alive reports changed since they were last written to [`ALIVE_FILE`].
    pub dirty: bool,
    /// Reports refused since serve started.
    pub refused: u64,
}

impl Live {
    /// Starts from the tail of the stage log and the alive file of an earlier run.
    pub fn load(state: &Path) -> Live {
        let mut warnings = Vec::new();
        let mut inputs = Inputs::load(state, &mut warnings).unwrap_or_default();
        let skip = inputs.stages.len().saturating_sub(MAX_EVENTS);
        inputs.stages.drain(..skip);
        Live { inputs, dirty: false, refused: 0 }
    }

    pub fn push_stage(&mut self, rec: StageRecord) {
        if self.inputs.stages.len() >= MAX_EVENTS {
            self.inputs.stages.pop_front();
        }
        self.inputs.stages.push_back(rec);
    }

    /// The rows of [`crate::nodes::rows`], with the lease file as it is now.
    pub fn rows(&mut self, plan: &Plan, state: &Path, now_ms: u64) -> Vec<crate::nodes::NodeRow> {
        if let Ok((leases, _)) = netboot::leases::read_leases(&state.join(crate::serve::LEASE_FILE)) {
            self.inputs.leases = leases;
        }
        crate::nodes::rows(plan, &self.inputs, now_ms)
    }

    /// Rewrites [`ALIVE_FILE`] when it changed, through the descriptor serve opened before it
    /// dropped privileges (the state folder is root's; see `netboot::statedir`). A reader may
    /// catch it half-written; it then reads no alive reports until the next write.
    pub fn save_alive(&mut self, file: &mut std::fs::File) -> std::io::Result<()> {
        use std::io::{Seek, Write};
        if !self.dirty {
            return Ok(());
        }
        let mut list: Vec<&Alive> = self.inputs.alive.values().collect();
        list.sort_by_key(|a| a.ip);
        let text = serde_json::to_vec(&list).map_err(std::io::Error::other)?;
        file.set_len(0)?;
        file.rewind()?;
        file.write_all(&text)?;
        self.dirty = false;
        Ok(())
    }
}

/// Where the status page listens: `--status ADDR` over `[serve] status`; off when neither is set.
/// An address other than loopback is refused unless `[serve] status_public = true` (or
/// `--status-public`): the page shows every MAC and address of a LAN the threat model calls
/// untrusted, so exposing it must be a decision, not a typo.
pub fn listen_addr(
    flag: Option<SocketAddr>,
    flag_public: bool,
    cfg: &crate::config::ServeSection,
) -> Result<Option<SocketAddr>, crate::error::Failure> {
    let Some(addr) = flag.or(cfg.status) else { return Ok(None) };
    if !(addr.ip().is_loopback() || flag_public || cfg.status_public) {
        return Err(crate::error::Failure::Usage(format!(
            "the status page would listen on {addr}, which is not loopback: use 127.0.0.1 and an SSH tunnel \
             (ssh -L 8067:127.0.0.1:8067 server), or set status_public = true in [serve] (or --status-public)"
        )));
    }
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn plan() -> Plan {
        let cfg = Config::parse(
            "[cluster]\nname = \"lab\"\ninterface = \"br0\"\nserver = \"192.168.0.254/24\"\n\
             pool = \"192.168.0.10-192.168.0.20\"\n\n[[node]]\nmac = \"52:54:00:00:00:99\"\nip = \"192.168.0.99\"\n",
            Path::new("/x/cluster.toml"),
        )
        .unwrap();
        Plan::new(&cfg).unwrap()
    }

    fn alive(node: u32, mac: &str) -> NodeReport {
        NodeReport::Alive(Vitals {
            node,
            hostname: "ws010".into(),
            mac: mac.parse().unwrap(),
            load: 0.5,
            mem_free_kb: 1000,
            uptime_s: 10,
            openmosix: "on".into(),
        })
    }

    #[test]
    fn reports_need_a_lease_the_right_node_and_mac() {
        let plan = plan();
        let ip = Ipv4Addr::new(192, 168, 0, 10);
        let number = plan.node_by_ip(ip).unwrap().number;
        let mac: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let mut g = Gate::new(&plan, true, &[]);
        let now = 1_700_000_000_000;
        let r = alive(number, "02:00:00:00:00:01");
        assert_eq!(g.admit(&plan, ip, &r, now), Err(Refused::NoLease(ip)));
        let stranger = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(g.admit(&plan, stranger, &r, now), Err(Refused::NotInPlan(stranger)));
        g.leased(ip, mac, now / 1000);
        assert_eq!(g.admit(&plan, ip, &r, now), Ok(()));
        assert!(matches!(
            g.admit(&plan, ip, &alive(number + 1, "02:00:00:00:00:01"), now),
            Err(Refused::WrongNode { .. })
        ));
        assert!(matches!(
            g.admit(&plan, ip, &alive(number, "02:00:00:00:00:02"), now),
            Err(Refused::WrongMac { .. })
        ));
        let joined = NodeReport::Joined { node: number, hostname: "ws010".into() };
        assert_eq!(g.admit(&plan, ip, &joined, now), Ok(()));
        // Past its expiry the lease no longer vouches for the sender.
        let later = now + plan.lease_time.as_millis() as u64 + 1000;
        assert_eq!(g.admit(&plan, ip, &r, later), Err(Refused::NoLease(ip)));
        g.ended(ip);
        assert_eq!(g.admit(&plan, ip, &r, now), Err(Refused::NoLease(ip)));
    }

    #[test]
    fn proxy_mode_needs_a_plan_address_and_the_pinned_mac() {
        let plan = plan();
        let mut g = Gate::new(&plan, false, &[]);
        let pinned = Ipv4Addr::new(192, 168, 0, 99);
        let number = plan.node_by_ip(pinned).unwrap().number;
        let now = 1_700_000_000_000;
        assert_eq!(g.admit(&plan, pinned, &alive(number, "52:54:00:00:00:99"), now), Ok(()));
        assert!(matches!(
            g.admit(&plan, pinned, &alive(number, "52:54:00:00:00:98"), now),
            Err(Refused::WrongMac { .. })
        ));
        let server = plan.server;
        assert_eq!(
            g.admit(&plan, server, &alive(1, "52:54:00:00:00:98"), now),
            Err(Refused::NotInPlan(server))
        );
    }

    #[test]
    fn a_flooding_node_is_held_to_one_report_a_second() {
        let plan = plan();
        let ip = Ipv4Addr::new(192, 168, 0, 10);
        let number = plan.node_by_ip(ip).unwrap().number;
        let mut g = Gate::new(&plan, false, &[]);
        let r = alive(number, "02:00:00:00:00:01");
        let now = 1_700_000_000_000;
        let admitted = (0..100).filter(|_| g.admit(&plan, ip, &r, now).is_ok()).count();
        assert_eq!(admitted, BURST as usize);
        assert_eq!(g.admit(&plan, ip, &r, now + 999), Err(Refused::TooFast(ip)));
        assert_eq!(g.admit(&plan, ip, &r, now + 2000), Ok(()));
    }

    #[test]
    fn status_page_stays_on_loopback_unless_asked() {
        let mut cfg = crate::config::ServeSection::default();
        assert_eq!(listen_addr(None, false, &cfg).unwrap(), None);
        cfg.status = Some(DEFAULT_STATUS.parse().unwrap());
        assert_eq!(listen_addr(None, false, &cfg).unwrap(), cfg.status);
        let public: SocketAddr = "0.0.0.0:8067".parse().unwrap();
        let e = listen_addr(Some(public), false, &cfg).unwrap_err().to_string();
        assert!(e.contains("not loopback") && e.contains("status_public"), "{e}");
        assert_eq!(listen_addr(Some(public), true, &cfg).unwrap(), Some(public));
        cfg.status_public = true;
        assert_eq!(listen_addr(Some(public), false, &cfg).unwrap(), Some(public));
    }
}

//! `mosboot nodes [--json] [--all] [--watch]`: every node of the plan with its lease, its boot
//! and, once joined, whether it still reports. Reads the lease log, the stage log and serve's
//! alive file without locking, so it works while serve runs. The status page's `/api/nodes` is
//! built by the same [`rows`] from serve's live copy of the same inputs.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netboot::leases::{Lease, LeaseState, read_leases};

use crate::config::Config;
use crate::error::Failure;
use crate::plan::{Plan, Role};
use crate::serve::{LEASE_FILE, STAGE_LOG, StageRecord, default_state_dir};
use crate::status::timeline::{self, BootNames, NodeState, Step, Timeline};
use crate::status::{ALIVE_FILE, Alive};

/// Options of `mosboot nodes`.
#[derive(clap::Args, Debug, Clone)]
pub struct NodesArgs {
    /// Machine-readable output: a JSON array, one object per node.
    #[arg(long)]
    pub json: bool,
    /// The state folder serve uses (default /var/lib/mosboot/<cluster name>).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// List every node of the plan in the table, also those never seen (a /24 pool has 253).
    #[arg(long)]
    pub all: bool,
    /// Refresh the table every two seconds (in place on a terminal) until Ctrl-C.
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
}

/// What the table says about a node's lease: netboot's state, seen at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseView {
    Bound,
    /// Bound, but past its expiry.
    Expired,
    Released,
    Declined,
    /// No lease on record.
    None,
    /// The server holds no lease.
    #[serde(rename = "-")]
    Server,
}

impl LeaseView {
    fn of(lease: Option<&Lease>, now: u64) -> LeaseView {
        match lease.map(|l| (l.state, l.expires)) {
            Option::None => LeaseView::None,
            Some((LeaseState::Bound, expires)) if expires <= now => LeaseView::Expired,
            Some((LeaseState::Bound, _)) => LeaseView::Bound,
            Some((LeaseState::Released, _)) => LeaseView::Released,
            Some((LeaseState::Declined, _)) => LeaseView::Declined,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LeaseView::Bound => "bound",
            LeaseView::Expired => "expired",
            LeaseView::Released => "released",
            LeaseView::Declined => "declined",
            LeaseView::None => "none",
            LeaseView::Server => "-",
        }
    }

    /// Whether the expiry time means something for this state.
    fn has_expiry(self) -> bool {
        matches!(self, LeaseView::Bound | LeaseView::Expired | LeaseView::Declined)
    }
}

/// One row of the table, one object of `--json` and of `/api/nodes`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeRow {
    pub node: u32,
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub role: Role,
    pub mac: Option<String>,
    pub lease: LeaseView,
    pub expires: Option<u64>,
    pub last_stage: Option<String>,
    pub last_stage_at: Option<u64>,
    /// never-seen, booting, up or down.
    pub state: NodeState,
    /// From the node's last alive report.
    pub load: Option<f32>,
    pub mem_free_kb: Option<u64>,
    pub uptime_s: Option<u64>,
    pub openmosix: Option<String>,
    pub last_report_at: Option<u64>,
    /// The steps of its latest boot, oldest first.
    pub boot: Vec<Step>,
    /// Where it seems to have stopped, when it did.
    pub hint: Option<String>,
}

/// Everything the table is made from.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub leases: Vec<Lease>,
    /// Oldest first.
    pub stages: VecDeque<StageRecord>,
    pub alive: HashMap<Ipv4Addr, Alive>,
}

impl Inputs {
    /// Reads the state folder; `warnings` collects damaged lines.
    pub fn load(state: &Path, warnings: &mut Vec<String>) -> Result<Inputs, Failure> {
        let (leases, w) =
            read_leases(&state.join(LEASE_FILE)).map_err(|e| Failure::runtime("read the lease file", e))?;
        warnings.extend(w);
        let read = |name: &str| -> Result<Option<Vec<u8>>, Failure> {
            let path = state.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Failure::runtime(format!("read {}", path.display()), e)),
            }
        };
        let stages = read(STAGE_LOG)?
            .map(|b| String::from_utf8_lossy(&b).lines().filter_map(StageRecord::parse).collect())
            .unwrap_or_default();
        let alive = match read(ALIVE_FILE)? {
            // Empty: serve opened it but no node has reported yet.
            None => HashMap::new(),
            Some(b) if b.is_empty() => HashMap::new(),
            Some(b) => match serde_json::from_slice::<Vec<Alive>>(&b) {
                Ok(list) => list.into_iter().map(|a| (a.ip, a)).collect(),
                Err(e) => {
                    warnings.push(format!("{}: {e}", state.join(ALIVE_FILE).display()));
                    HashMap::new()
                }
            },
        };
        Ok(Inputs { leases, stages, alive })
    }
}

/// Builds one row per node of the plan.
pub fn rows(plan: &Plan, inputs: &Inputs, now_ms: u64) -> Vec<NodeRow> {
    let now = now_ms / 1000;
    let names = BootNames::default();
    let by_ip: HashMap<Ipv4Addr, &Lease> = inputs.leases.iter().map(|l| (l.ip, l)).collect();
    let mut stages: HashMap<Ipv4Addr, Vec<&StageRecord>> = HashMap::new();
    for r in &inputs.stages {
        stages.entry(r.ip).or_default().push(r);
    }
    plan.nodes
        .iter()
        .map(|n| {
            let lease = by_ip.get(&n.ip);
            let lease_view =
                if n.role == Role::Server { LeaseView::Server } else { LeaseView::of(lease.copied(), now) };
            let recs = stages.get(&n.ip).map(Vec::as_slice).unwrap_or_default();
            let last = recs.last();
            let alive = inputs.alive.get(&n.ip);
            let report_ms = alive.map(|a| a.at_ms);
            let tl = Timeline::from_records(recs.iter().copied(), &names);
            let mut state = timeline::state(&tl, report_ms, now_ms);
            if n.role == Role::Server {
                state = NodeState::Up;
            } else if state == NodeState::Up && matches!(lease_view, LeaseView::Released | LeaseView::Expired)
            {
                state = NodeState::Down;
            }
            let current = |a: &&Alive| state == NodeState::Up || tl.alive_ms(report_ms) == Some(a.at_ms);
            let vitals = alive.filter(current).map(|a| &a.vitals);
            NodeRow {
                node: n.number,
                hostname: n.hostname.clone(),
                ip: n.ip,
                role: n.role,
                mac: n.mac.map(|m| m.to_string()).or_else(|| lease.map(|l| l.mac.to_string())),
                lease: lease_view,
                expires: lease.map(|l| l.expires),
                last_stage: last.map(|s| s.stage.clone()),
                last_stage_at: last.map(|s| s.at),
                state,
                load: vitals.map(|v| v.load),
                mem_free_kb: vitals.map(|v| v.mem_free_kb),
                uptime_s: vitals.map(|v| v.uptime_s),
                openmosix: vitals.map(|v| v.openmosix.clone()),
                last_report_at: alive.map(|a| a.at_ms / 1000),
                hint: if n.role == Role::Server { None } else { timeline::hint(&tl, report_ms, now_ms) },
                boot: tl.steps,
            }
        })
        .collect()
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The command: prints the table (or JSON), once or until interrupted.
pub fn run(cfg_path: &Path, args: &NodesArgs) -> Result<(), Failure> {
    let cfg = Config::load(cfg_path)?;
    let plan = Plan::new(&cfg)?;
    let state = args.state.clone().unwrap_or_else(|| default_state_dir(&plan.cluster));
    let tty = std::io::stdout().is_terminal();
    loop {
        let text = render(&plan, &state, args)?;
        if args.watch && tty {
            // Home, clear, then the table: the terminal shows one table that changes.
            print!("\x1b[H\x1b[2J{text}");
        } else if args.watch {
            println!("{text}");
        } else {
            print!("{text}");
        }
        if !args.watch {
            return Ok(());
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}

/// One rendering of the table or the JSON.
fn render(plan: &Plan, state: &Path, args: &NodesArgs) -> Result<String, Failure> {
    let now = now_ms();
    let mut warnings = Vec::new();
    let inputs = Inputs::load(state, &mut warnings)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let rows = rows(plan, &inputs, now);
    if args.json {
        return serde_json::to_string_pretty(&rows)
            .map(|s| s + "\n")
            .map_err(|e| Failure::runtime("write JSON", e));
    }
    // The table shows what an admin looks for: the server, pinned nodes and every node that has
    // been seen; the rest of a big pool is one line at the end.
    let seen: Vec<NodeRow> = rows
        .iter()
        .filter(|r| {
            args.all
                || r.role != Role::Pool
                || r.lease != LeaseView::None
                || r.last_stage.is_some()
                || r.state != NodeState::NeverSeen
        })
        .cloned()
        .collect();
    let mut out = table(&seen, now / 1000);
    let hidden = rows.len() - seen.len();
    if hidden > 0 {
        out.push_str(&format!("({hidden} more node(s) of the plan not seen yet; --all lists them)\n"));
    }
    Ok(out)
}

fn table(rows: &[NodeRow], now: u64) -> String {
    let head = ["NODE", "HOSTNAME", "IP", "MAC", "STATE", "LOAD", "LEASE", "EXPIRES", "LAST STAGE", "WHEN"];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.node.to_string(),
                r.hostname.clone(),
                r.ip.to_string(),
                r.mac.clone().unwrap_or_else(|| "-".into()),
                r.state.label().to_string(),
                r.load.map(|l| format!("{l:.2}")).unwrap_or_else(|| "-".into()),
                r.lease.as_str().to_string(),
                match r.expires {
                    Some(t) if r.lease.has_expiry() => relative(t, now),
                    _ => "-".into(),
                },
                r.last_stage.clone().unwrap_or_else(|| "-".into()),
                r.last_stage_at.map(|t| relative(t, now)).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cols: &[String]| {
        let mut l = String::new();
        for (i, (s, w)) in cols.iter().zip(width).enumerate() {
            if i + 1 == cols.len() {
                l.push_str(s);
            } else {
                l.push_str(&format!("{s:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&head.map(String::from));
    for c in &cells {
        line(c);
    }
    out
}

/// "in 3h12m" / "5m ago": what an admin scanning the table wants.
pub(crate) fn relative(t: u64, now: u64) -> String {
    let (d, future) = if t >= now { (t - now, true) } else { (now - t, false) };
    let s = if d >= 86_400 {
        format!("{}d{}h", d / 86_400, d % 86_400 / 3600)
    } else if d >= 3600 {
        format!("{}h{:02}m", d / 3600, d % 3600 / 60)
    } else if d >= 60 {
        format!("{}m{:02}s", d / 60, d % 60)
    } else {
        format!("{d}s")
    };
    if future { format!("in {s}") } else { format!("{s} ago") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_views_read_as_before() {
        let lease = |state, expires| Lease {
            mac: "02:00:00:00:00:01".parse().expect("mac"),
            ip: Ipv4Addr::new(10, 0, 0, 1),
            hostname: "ws001".into(),
            expires,
            state,
            at: 0,
        };
        let now = 1000;
        for (view, text) in [
            (LeaseView::of(Some(&lease(LeaseState::Bound, 2000)), now), "bound"),
            (LeaseView::of(Some(&lease(LeaseState::Bound, 1000)), now), "expired"),
            (LeaseView::of(Some(&lease(LeaseState::Released, 2000)), now), "released"),
            (LeaseView::of(Some(&lease(LeaseState::Declined, 2000)), now), "declined"),
            (LeaseView::of(None, now), "none"),
            (LeaseView::Server, "-"),
        ] {
            assert_eq!(view.as_str(), text);
            assert_eq!(serde_json::to_value(view).expect("json"), serde_json::Value::from(text));
        }
    }

    /// The JSON of `mosboot nodes --json` and `/api/nodes` (one builder): a node that joined and
    /// reports, one stuck after its boot file, one never seen.
    #[test]
    fn rows_json_shape() {
        let cfg = Config::parse(
            "[cluster]\nname = \"lab\"\ninterface = \"br0\"\nserver = \"192.168.0.254/24\"\npool = \"192.168.0.1-192.168.0.3\"\n",
            Path::new("/x/cluster.toml"),
        )
        .unwrap();
        let plan = Plan::new(&cfg).unwrap();
        let t0 = 1_700_000_000_000u64;
        let mac = |i: u8| netboot::mac::MacAddr([2, 0, 0, 0, 0, i]);
        let ip = |i: u8| Ipv4Addr::new(192, 168, 0, i);
        let lease = |i: u8| Lease {
            mac: mac(i),
            ip: ip(i),
            hostname: format!("ws00{i}"),
            expires: t0 / 1000 + 3600,
            state: LeaseState::Bound,
            at: t0 / 1000,
        };
        let rec = |i: u8, ms: u64, stage: &str| StageRecord {
            at: (t0 + ms) / 1000,
            at_ms: t0 + ms,
            node: plan.node_by_ip(ip(i)).map(|n| n.number),
            hostname: format!("ws00{i}"),
            ip: ip(i),
            mac: Some(mac(i).to_string()),
            stage: stage.into(),
        };
        let mut stages = VecDeque::new();
        for (ms, stage) in
            [(0, "offered"), (50, "acked"), (400, "fetched pxelinux.0"), (1200, "fetched vmlinuz")]
        {
            stages.push_back(rec(1, ms, stage));
        }
        for (ms, stage) in
            [(1900, "fetched initrd.gz"), (6000, "offered"), (6100, "acked"), (9000, "joined as node 2")]
        {
            stages.push_back(rec(1, ms, stage));
        }
        for (ms, stage) in [(300, "offered"), (350, "acked"), (700, "fetched pxelinux.0")] {
            stages.push_back(rec(2, ms, stage));
        }
        let vitals = netboot::node_report::Vitals {
            node: 2,
            hostname: "ws001".into(),
            mac: mac(1),
            load: 0.25,
            mem_free_kb: 9876,
            uptime_s: 40,
            openmosix: "on".into(),
        };
        let alive = HashMap::from([(ip(1), Alive { ip: ip(1), at_ms: t0 + 40_000, vitals })]);
        let inputs = Inputs { leases: vec![lease(1), lease(2)], stages, alive };
        let rows = rows(&plan, &inputs, t0 + 45_000);
        insta::assert_snapshot!(serde_json::to_string_pretty(&rows).unwrap());
    }

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(super::relative(1000 + 3 * 3600 + 12 * 60, 1000), "in 3h12m");
        assert_eq!(super::relative(1000, 1300), "5m00s ago");
        assert_eq!(super::relative(1000, 1000), "in 0s");
    }
}

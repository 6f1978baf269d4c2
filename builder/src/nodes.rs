//! `mosboot nodes [--json]`: every node of the plan with its lease and its last boot stage.
//! Reads the lease log and the stage log without locking, so it works while serve runs.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netboot::leases::{Lease, LeaseState, read_leases, unix_now};

use crate::config::Config;
use crate::error::Failure;
use crate::plan::{Plan, Role};
use crate::serve::{LEASE_FILE, STAGE_LOG, StageRecord, default_state_dir};

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

/// One row of the table.
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
}

/// Builds the rows; `warnings` collects damaged lease lines.
pub fn rows(
    plan: &Plan,
    state: &Path,
    now: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<NodeRow>, Failure> {
    let (leases, w) =
        read_leases(&state.join(LEASE_FILE)).map_err(|e| Failure::runtime("read the lease file", e))?;
    warnings.extend(w);
    let by_ip: HashMap<Ipv4Addr, _> = leases.into_iter().map(|l| (l.ip, l)).collect();
    let mut last: HashMap<Ipv4Addr, StageRecord> = HashMap::new();
    let stage_path = state.join(STAGE_LOG);
    match std::fs::read(&stage_path) {
        Ok(bytes) => {
            for line in String::from_utf8_lossy(&bytes).lines() {
                if let Some(r) = StageRecord::parse(line) {
                    last.insert(r.ip, r);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Failure::runtime(format!("read {}", stage_path.display()), e)),
    }
    Ok(plan
        .nodes
        .iter()
        .map(|n| {
            let lease = by_ip.get(&n.ip);
            let stage = last.get(&n.ip);
            NodeRow {
                node: n.number,
                hostname: n.hostname.clone(),
                ip: n.ip,
                role: n.role,
                mac: n.mac.map(|m| m.to_string()).or_else(|| lease.map(|l| l.mac.to_string())),
                lease: if n.role == Role::Server { LeaseView::Server } else { LeaseView::of(lease, now) },
                expires: lease.map(|l| l.expires),
                last_stage: stage.map(|s| s.stage.clone()),
                last_stage_at: stage.map(|s| s.at),
            }
        })
        .collect())
}

/// The command: returns what to print.
pub fn run(cfg_path: &Path, args: &NodesArgs) -> Result<String, Failure> {
    let cfg = Config::load(cfg_path)?;
    let plan = Plan::new(&cfg)?;
    let state = args.state.clone().unwrap_or_else(|| default_state_dir(&plan.cluster));
    let now = unix_now();
    let mut warnings = Vec::new();
    let rows = rows(&plan, &state, now, &mut warnings)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if args.json {
        return serde_json::to_string_pretty(&rows)
            .map(|s| s + "\n")
            .map_err(|e| Failure::runtime("write JSON", e));
    }
    // The table shows what an admin looks for: the server, pinned nodes and every node that has
    // been seen; the rest of a big pool is one line at the end.
    let seen: Vec<NodeRow> = rows
        .iter()
        .filter(|r| args.all || r.role != Role::Pool || r.lease != LeaseView::None || r.last_stage.is_some())
        .cloned()
        .collect();
    let mut out = table(&seen, now);
    let hidden = rows.len() - seen.len();
    if hidden > 0 {
        out.push_str(&format!("({hidden} more node(s) of the plan not seen yet; --all lists them)\n"));
    }
    Ok(out)
}

fn table(rows: &[NodeRow], now: u64) -> String {
    let head = ["NODE", "HOSTNAME", "IP", "MAC", "LEASE", "EXPIRES", "LAST STAGE", "WHEN"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.node.to_string(),
                r.hostname.clone(),
                r.ip.to_string(),
                r.mac.clone().unwrap_or_else(|| "-".into()),
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
fn relative(t: u64, now: u64) -> String {
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

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(super::relative(1000 + 3 * 3600 + 12 * 60, 1000), "in 3h12m");
        assert_eq!(super::relative(1000, 1300), "5m00s ago");
        assert_eq!(super::relative(1000, 1000), "in 0s");
    }
}

//! `mosboot serve`: DHCP (full or proxy) and TFTP for the output tree, in the foreground.
//!
//! Order matters for safety: load config and plan; look for a rival DHCP server (full mode);
//! bind every socket and open the lease log (needs root); then drop to an unprivileged user, so
//! nothing that parses packets from the network runs as root. Every boot event becomes one log
//! line and one line in `<state>/stages.log`, which `mosboot nodes` reads. Nodes' alive reports
//! update [`crate::status::Live`] (and `<state>/alive.json`); with `--status` / `[serve] status`
//! the status page shows it all ([`crate::status::http`]).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use netboot::dhcp::{BootFiles, DhcpConfig, DhcpServer, HostInfo, probe_rival};
use netboot::events::{BootEvent, EventReceiver, Stage};
use netboot::mac::MacAddr;
use netboot::node_report::NodeReport;
use netboot::tftp::{TftpConfig, TftpServer};

use crate::config::{Config, DhcpMode};
use crate::error::Failure;
use crate::plan::Plan;
use crate::status::{Alive, Gate, Live, LiveEvent};

/// File names inside the state directory.
pub const LEASE_FILE: &str = "leases";
pub const STAGE_LOG: &str = "stages.log";

/// Options of `mosboot serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where leases and the stage log live (default /var/lib/mosboot/<cluster name>).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The output tree to serve (default: [image] out).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Serve addresses even though another DHCP server answers on the interface.
    #[arg(long)]
    pub force: bool,
    /// User to run as once the sockets are open (when started as root).
    #[arg(long, default_value = "nobody")]
    pub user: String,
    /// How long to listen for a rival DHCP server before serving (full mode).
    #[arg(long, default_value = "3s", value_parser = parse_secs)]
    pub probe: Duration,
    /// Serve the status page on ADDR (e.g. 127.0.0.1:8067); overrides [serve] status.
    #[arg(long, value_name = "ADDR")]
    pub status: Option<SocketAddr>,
    /// Allow a status address other than loopback (the page shows the lab's MACs and addresses).
    #[arg(long)]
    pub status_public: bool,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s).ok_or_else(|| format!("'{s}' is not a duration like 3s or 500ms"))
}

/// The default state directory for a cluster.
pub fn default_state_dir(cluster: &str) -> PathBuf {
    Path::new("/var/lib/mosboot").join(cluster)
}

/// Builds the DHCP server's view of the plan: every node address with its hostname and number.
pub fn dhcp_config(plan: &Plan, lease_file: PathBuf) -> DhcpConfig {
    let hosts: HashMap<Ipv4Addr, HostInfo> = plan
        .nodes
        .iter()
        .filter(|n| n.ip != plan.server)
        .map(|n| {
            (
                n.ip,
                HostInfo { hostname: n.hostname.clone(), node: u16::try_from(n.number).unwrap_or(u16::MAX) },
            )
        })
        .collect();
    DhcpConfig {
        interface: plan.interface.clone(),
        server: plan.server,
        prefix_len: plan.prefix_len,
        mode: match plan.dhcp {
            DhcpMode::Proxy => netboot::dhcp::DhcpMode::Proxy,
            _ => netboot::dhcp::DhcpMode::Full,
        },
        pool: plan.pool.clone(),
        pinned: plan.pinned.clone(),
        hosts,
        lease_time: plan.lease_time,
        router: plan.router,
        dns: plan.dns.clone(),
        boot: BootFiles::default(),
        lease_file,
    }
}

/// Runs until SIGINT/SIGTERM.
pub fn run(cfg_path: &Path, args: &ServeArgs) -> Result<(), Failure> {
    let cfg = Config::load(cfg_path)?;
    let plan = Plan::new(&cfg)?;
    let out = args.out.clone().unwrap_or_else(|| cfg.image.out.clone());
    let root = out.join("tftpboot");
    if !root.join("pxelinux.0").is_file() {
        return Err(Failure::Usage(format!(
            "{} has no pxelinux.0: run `mosboot build` first (or pass --out DIR)",
            root.display()
        )));
    }
    let status = crate::status::listen_addr(args.status, args.status_public, &cfg.serve)?;
    let state = args.state.clone().unwrap_or_else(|| default_state_dir(&plan.cluster));
    std::fs::create_dir_all(&state)
        .map_err(|e| Failure::runtime(format!("create state folder {}", state.display()), e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime("start the async runtime", e))?;
    rt.block_on(serve(plan, root, state, status, args))
}

async fn serve(
    plan: Plan,
    root: PathBuf,
    state: PathBuf,
    status: Option<SocketAddr>,
    args: &ServeArgs,
) -> Result<(), Failure> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();

    let dhcp = if plan.dhcp == DhcpMode::Off {
        tracing::info!("dhcp = \"off\": serving TFTP only");
        None
    } else {
        if plan.dhcp == DhcpMode::Full && !args.force {
            match probe_rival(&plan.interface, plan.server, args.probe).await {
                Ok(None) => {}
                Ok(Some(rival)) => {
                    return Err(Failure::Usage(format!(
                        "another DHCP server ({rival}) answers on {}: two servers handing out addresses fight. \
                         Set dhcp = \"proxy\" in [cluster] to boot nodes beside it, or pass --force",
                        plan.interface
                    )));
                }
                Err(e) => return Err(startup(e)),
            }
        }
        let cfg = dhcp_config(&plan, state.join(LEASE_FILE));
        Some(DhcpServer::bind(cfg, Some(tx.clone())).map_err(startup)?)
    };
    let tftp_cfg = TftpConfig {
        bind: SocketAddr::V4(SocketAddrV4::new(plan.server, 69)),
        root: root.clone(),
        interface: Some(plan.interface.clone()),
        ..TftpConfig::default()
    };
    let tftp = TftpServer::bind(tftp_cfg, Some(tx))
        .map_err(|e| Failure::Usage(format!("cannot start TFTP: {e}")))?;
    let stage_path = state.join(STAGE_LOG);
    let stage_log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stage_path)
        .map_err(|e| Failure::runtime(format!("open {}", stage_path.display()), e))?;

    let status_listener = match status {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::Usage(format!("cannot serve the status page on {addr}: {e}")))?,
        ),
    };

    drop_privileges(&args.user, &state)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let signals = tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match term {
            Ok(mut term) => {
                tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    });
    let live = Arc::new(Mutex::new(Live::load(&state)));
    let (live_tx, _) = tokio::sync::broadcast::channel(256);
    let recorder =
        Recorder { plan: plan.clone(), state: state.clone(), live: live.clone(), tx: live_tx.clone() };
    let events = tokio::spawn(recorder.run(rx, stage_log));
    let status_task = status_listener.map(|listener| {
        let app = Arc::new(crate::status::http::App::new(plan.clone(), state.clone(), live, live_tx));
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        eprintln!("mosboot serve: status page on http://{addr}/");
        tracing::info!(%addr, "status page");
        let stop = stopped(stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) =
                axum::serve(listener, crate::status::http::router(app)).with_graceful_shutdown(stop).await
            {
                tracing::warn!(error = %e, "status page stopped");
            }
        })
    });
    tracing::info!(
        cluster = %plan.cluster,
        interface = %plan.interface,
        server = %plan.server,
        dhcp = ?plan.dhcp,
        root = %root.display(),
        state = %state.display(),
        "mosboot serve: ready"
    );
    eprintln!(
        "mosboot serve: {} on {} ({}), DHCP {:?}, TFTP from {}",
        plan.cluster,
        plan.interface,
        plan.server,
        plan.dhcp,
        root.display()
    );

    let tftp_task = tokio::spawn(tftp.run(stopped(stop_rx.clone())));
    let dhcp_result = match dhcp {
        Some(d) => d.run(stopped(stop_rx.clone())).await.map_err(|e| Failure::runtime("serve DHCP", e)),
        None => {
            stopped(stop_rx.clone()).await;
            Ok(())
        }
    };
    signals.abort();
    let tftp_result = match tftp_task.await {
        Ok(r) => r.map_err(|e| Failure::runtime("serve TFTP", e)),
        Err(e) => Err(Failure::runtime("serve TFTP", e)),
    };
    events.abort();
    if let Some(t) = status_task {
        // Open event streams never end by themselves; the page reconnects to the next serve.
        t.abort();
    }
    dhcp_result.and(tftp_result)
}

/// Startup problems the admin can fix (interface, address, port in use) exit with 1.
fn startup(e: netboot::dhcp::DhcpError) -> Failure {
    match e {
        netboot::dhcp::DhcpError::Lease(_) => Failure::runtime("open the lease file", e),
        _ => Failure::Usage(format!("cannot start DHCP: {e}")),
    }
}

/// Switches to `user` (when root): its primary group only, no supplementary groups. The state
/// folder is handed to that user first so a later start without root can still use it.
fn drop_privileges(user: &str, state: &Path) -> Result<(), Failure> {
    use nix::unistd::{Uid, User, chown, setgid, setgroups, setuid};
    if !Uid::effective().is_root() || user == "root" {
        return Ok(());
    }
    let u = User::from_name(user)
        .map_err(|e| Failure::runtime(format!("look up user '{user}'"), e))?
        .ok_or_else(|| Failure::Usage(format!("user '{user}' does not exist (pass --user NAME)")))?;
    let chown_one = |p: &Path| {
        chown(p, Some(u.uid), Some(u.gid)).map_err(|e| Failure::runtime(format!("chown {}", p.display()), e))
    };
    chown_one(state)?;
    for name in [LEASE_FILE, STAGE_LOG, crate::status::ALIVE_FILE] {
        let p = state.join(name);
        if p.exists() {
            chown_one(&p)?;
        }
    }
    setgroups(&[u.gid]).map_err(|e| Failure::runtime("drop supplementary groups", e))?;
    setgid(u.gid).map_err(|e| Failure::runtime(format!("switch to group of '{user}'"), e))?;
    setuid(u.uid).map_err(|e| Failure::runtime(format!("switch to user '{user}'"), e))?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(Failure::runtime("drop root", "could regain uid 0"));
    }
    tracing::info!(user, uid = u.uid.as_raw(), "dropped root privileges");
    Ok(())
}

/// Turns server events into stage log lines, live page updates and alive reports.
struct Recorder {
    plan: Plan,
    state: PathBuf,
    live: Arc<Mutex<Live>>,
    tx: tokio::sync::broadcast::Sender<LiveEvent>,
}

impl Recorder {
    async fn run(self, mut rx: EventReceiver, mut stage_log: File) {
        // TFTP only knows IPs; DHCP events and the lease log say which MAC holds which IP.
        let mut mac_of: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
        let leases =
            netboot::leases::read_leases(&self.state.join(LEASE_FILE)).map(|(l, _)| l).unwrap_or_default();
        for l in &leases {
            mac_of.insert(l.ip, l.mac);
        }
        for n in &self.plan.nodes {
            if let Some(m) = n.mac {
                mac_of.entry(n.ip).or_insert(m);
            }
        }
        let mut gate = Gate::new(&self.plan, self.plan.dhcp == DhcpMode::Full, &leases);
        let mut save = tokio::time::interval(Duration::from_secs(netboot::node_report::REPORT_INTERVAL_SECS));
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        // Alive reports go to the page once a second, together (254 nodes send 50 a second).
        let mut alive_batch: HashMap<Ipv4Addr, serde_json::Value> = HashMap::new();
        let mut last_refusal_log = 0u64;
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev { Some(ev) => ev, None => break },
                _ = save.tick() => {
                    self.save_alive();
                    continue;
                }
                _ = flush.tick() => {
                    if !alive_batch.is_empty() {
                        let mut batch: Vec<serde_json::Value> = alive_batch.drain().map(|(_, v)| v).collect();
                        batch.sort_by_key(|v| v["node"].as_u64());
                        let data = serde_json::Value::Array(batch).to_string();
                        let _ = self.tx.send(LiveEvent { kind: "alive", data });
                    }
                    continue;
                }
            };
            let now = crate::nodes::now_ms();
            match (&ev.stage, ev.mac) {
                (Stage::Acked, Some(m)) if !ev.ip.is_unspecified() => {
                    mac_of.insert(ev.ip, m);
                    gate.leased(ev.ip, m, now / 1000);
                }
                (Stage::Offered, Some(m)) if !ev.ip.is_unspecified() => {
                    mac_of.insert(ev.ip, m);
                }
                (Stage::Released | Stage::Declined | Stage::Nak, _) => gate.ended(ev.ip),
                _ => {}
            }
            if let Stage::Joined(text) = &ev.stage {
                // A node report: only from a sender that may speak for the node it names.
                let admitted = NodeReport::parse(text).map_err(|e| e.to_string()).and_then(|r| {
                    gate.admit(&self.plan, ev.ip, &r, now).map(|()| r).map_err(|e| e.to_string())
                });
                match admitted {
                    Ok(NodeReport::Alive(v)) => {
                        alive_batch.insert(
                            ev.ip,
                            serde_json::json!({ "ip": ev.ip, "node": v.node, "load": v.load }),
                        );
                        self.alive(ev.ip, v, now);
                        continue;
                    }
                    Ok(_) => {}
                    Err(why) => {
                        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                        live.refused += 1;
                        // One line every 10 s at most: a flood must not flood the log.
                        if now / 1000 >= last_refusal_log + 10 {
                            last_refusal_log = now / 1000;
                            tracing::warn!(from = %ev.ip, refused = live.refused, "node report refused: {why}");
                        } else {
                            tracing::debug!(from = %ev.ip, "node report refused: {why}");
                        }
                        continue;
                    }
                }
            }
            let mac = ev.mac.or_else(|| mac_of.get(&ev.ip).copied());
            let rec = StageRecord::from_event(&ev, mac, &self.plan);
            let line = rec.to_line();
            if !matches!(
                ev.stage,
                Stage::Offered | Stage::Acked | Stage::Nak | Stage::Declined | Stage::Released
            ) {
                // DHCP logs its own events; TFTP fetches and joins are logged here.
                tracing::info!("{}", line.trim_end());
            }
            if let Err(e) = stage_log.write_all(line.as_bytes()) {
                tracing::warn!(error = %e, "cannot append to the stage log");
            }
            if let Ok(data) = serde_json::to_string(&rec) {
                let _ = self.tx.send(LiveEvent { kind: "stage", data });
            }
            self.live.lock().unwrap_or_else(|p| p.into_inner()).push_stage(rec);
        }
        self.save_alive();
    }

    fn alive(&self, ip: Ipv4Addr, v: netboot::node_report::Vitals, now: u64) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.inputs.alive.insert(ip, Alive { ip, at_ms: now, vitals: v });
        live.dirty = true;
    }

    fn save_alive(&self) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = live.save_alive(&self.state) {
            tracing::warn!(error = %e, "cannot write {}", crate::status::ALIVE_FILE);
        }
    }
}

/// One line of `stages.log`: `at=<unix>[.<ms>] node=<n> host=<name> ip=<ip> mac=<mac> stage=<label>`;
/// the stage comes last because its label may hold spaces (`fetched vmlinuz`). Milliseconds are
/// there for the boot timeline (a PXE step often takes well under a second).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StageRecord {
    /// Unix seconds.
    pub at: u64,
    /// Unix milliseconds (the same instant).
    pub at_ms: u64,
    pub node: Option<u32>,
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub mac: Option<String>,
    pub stage: String,
}

impl StageRecord {
    pub fn from_event(ev: &BootEvent, mac: Option<MacAddr>, plan: &Plan) -> StageRecord {
        let node = plan.node_by_ip(ev.ip);
        let mut stage = ev.stage.label();
        if let Stage::Joined(text) = &ev.stage {
            // Only admitted `joined` reports get here (see netboot::node_report).
            stage = match NodeReport::parse(text) {
                Ok(NodeReport::Joined { node, .. }) if node != 0 => format!("joined as node {node}"),
                Ok(NodeReport::Joined { .. }) => "joined (not in the map)".to_string(),
                _ => "reported".to_string(),
            };
        }
        let at_ms = ev.at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        StageRecord {
            at: at_ms / 1000,
            at_ms,
            node: node.map(|n| n.number),
            hostname: node.map(|n| n.hostname.clone()).unwrap_or_default(),
            ip: ev.ip,
            mac: mac.map(|m| m.to_string()),
            stage,
        }
    }

    pub fn to_line(&self) -> String {
        let dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
        format!(
            "at={}.{:03} node={} host={} ip={} mac={} stage={}\n",
            self.at_ms / 1000,
            self.at_ms % 1000,
            dash(self.node.map(|n| n.to_string())),
            if self.hostname.is_empty() { "-" } else { &self.hostname },
            self.ip,
            dash(self.mac.clone()),
            self.stage
        )
    }

    pub fn parse(line: &str) -> Option<StageRecord> {
        let (head, stage) = line.split_once(" stage=")?;
        let mut rec = StageRecord {
            at: 0,
            at_ms: 0,
            node: None,
            hostname: String::new(),
            ip: Ipv4Addr::UNSPECIFIED,
            mac: None,
            stage: stage.trim_end().to_string(),
        };
        for f in head.split(' ') {
            let (k, v) = f.split_once('=')?;
            match (k, v) {
                (_, "-") => {}
                ("at", v) => {
                    let (secs, ms) = v.split_once('.').unwrap_or((v, "0"));
                    let ms: u64 =
                        if ms.len() <= 3 { format!("{ms:0<3}").parse().ok()? } else { return None };
                    rec.at = secs.parse().ok()?;
                    rec.at_ms = rec.at.checked_mul(1000)?.checked_add(ms)?;
                }
                ("node", v) => rec.node = v.parse().ok(),
                ("host", v) => rec.hostname = v.to_string(),
                ("ip", v) => rec.ip = v.parse().ok()?,
                ("mac", v) => rec.mac = Some(v.to_string()),
                _ => {}
            }
        }
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_record_round_trips() {
        let r = StageRecord {
            at: 1_700_000_000,
            at_ms: 1_700_000_000_042,
            node: Some(3),
            hostname: "ws002".into(),
            ip: Ipv4Addr::new(192, 168, 0, 2),
            mac: Some("52:54:00:00:00:02".into()),
            stage: "fetched vmlinuz".into(),
        };
        assert_eq!(StageRecord::parse(&r.to_line()), Some(r));
        assert_eq!(StageRecord::parse("garbage"), None);
        // Lines written before milliseconds were logged still read.
        let old =
            StageRecord::parse("at=1700000000 node=3 host=ws002 ip=192.168.0.2 mac=- stage=acked").unwrap();
        assert_eq!((old.at, old.at_ms), (1_700_000_000, 1_700_000_000_000));
    }
}

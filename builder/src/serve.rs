//! `mosboot serve`: DHCP (full or proxy) and TFTP for the output tree, in the foreground.
//!
//! Order matters for safety: load config and plan; look for a rival DHCP server (full mode);
//! bind every socket and open the lease log (needs root); then drop to an unprivileged user, so
//! nothing that parses packets from the network runs as root. Every boot event becomes one log
//! line and one line in `<state>/stages.log`, which `mosboot nodes` reads.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use netboot::dhcp::{BootFiles, DhcpConfig, DhcpError, DhcpServer, HostInfo, probe_rival};
use netboot::events::{BootEvent, EventReceiver, Stage};
use netboot::mac::MacAddr;
use netboot::tftp::{NodeReport, TftpConfig, TftpServer};

use crate::config::{Config, DhcpMode};
use crate::error::Failure;
use crate::plan::Plan;

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
    #[arg(long, default_value = "3s", value_parser = parse_probe)]
    pub probe: Duration,
}

fn parse_probe(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).ok_or_else(|| format!("'{s}' is not a duration like 3s or 500ms"))
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
    let root = out.join(crate::pipeline::TFTP_DIR);
    let pxe = BootFiles::default().pxe;
    if !root.join(&pxe).is_file() {
        return Err(Failure::Usage(format!(
            "{} has no {pxe}: run `mosboot build` first (or pass --out DIR)",
            root.display()
        )));
    }
    let state = args.state.clone().unwrap_or_else(|| default_state_dir(&plan.cluster));
    std::fs::create_dir_all(&state)
        .map_err(|e| Failure::runtime(format!("create state folder {}", state.display()), e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime("start the async runtime", e))?;
    rt.block_on(serve(plan, root, state, args))
}

async fn serve(plan: Plan, root: PathBuf, state: PathBuf, args: &ServeArgs) -> Result<(), Failure> {
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

    drop_privileges(&args.user, &state)?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let signals = tokio::spawn(async move {
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        // SIGHUP is `systemctl reload` (ExecReload in mosboot@.service); until serve can reload,
        // it must not end the daemon (SIGHUP's default action), so it is logged and ignored.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let hangup = async move {
            while let Some(h) = hup.as_mut() {
                if h.recv().await.is_none() {
                    break;
                }
                tracing::warn!(
                    "SIGHUP: reload is not implemented yet; still serving the config loaded at start (restart to apply a rebuild)"
                );
            }
            std::future::pending::<()>().await
        };
        match term {
            Ok(mut term) => {
                tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {}, _ = hangup => {} }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("stopping");
        crate::sd_notify::notify(crate::sd_notify::STOPPING);
        let _ = stop_tx.send(true);
    });
    let events = tokio::spawn(record_events(rx, plan.clone(), state.join(LEASE_FILE), stage_log));
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
    crate::sd_notify::notify(crate::sd_notify::READY);

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
    dhcp_result.and(tftp_result)
}

/// Startup problems the admin can fix (interface, address, port in use) exit with 1; the
/// message names the `cluster.toml` key behind the problem, which netboot cannot know.
fn startup(e: DhcpError) -> Failure {
    let hint = match &e {
        DhcpError::Lease(_) => return Failure::runtime("open the lease file", e),
        DhcpError::NoInterface(_) => " (check `interface` in cluster.toml and `ip link`)".to_string(),
        DhcpError::NoServerAddress { interface, server, .. } => format!(
            "; add it with `ip addr add {server}/<prefix> dev {interface}` or fix `server` in cluster.toml"
        ),
        _ => String::new(),
    };
    Failure::Usage(format!("cannot start DHCP: {e}{hint}"))
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
    for name in [LEASE_FILE, STAGE_LOG] {
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

/// One line per event to the log and to the stage log.
async fn record_events(mut rx: EventReceiver, plan: Plan, lease_file: PathBuf, mut stage_log: File) {
    // TFTP only knows IPs; DHCP events and the lease log say which MAC holds which IP.
    let mut mac_of: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
    if let Ok((leases, _)) = netboot::leases::read_leases(&lease_file) {
        for l in leases {
            mac_of.insert(l.ip, l.mac);
        }
    }
    for n in &plan.nodes {
        if let Some(m) = n.mac {
            mac_of.entry(n.ip).or_insert(m);
        }
    }
    while let Some(ev) = rx.recv().await {
        if let (Some(m), Stage::Acked | Stage::Offered) = (ev.mac, &ev.stage)
            && !ev.ip.is_unspecified()
        {
            mac_of.insert(ev.ip, m);
        }
        let mac = ev.mac.or_else(|| mac_of.get(&ev.ip).copied());
        let line = StageRecord::from_event(&ev, mac, &plan).to_line();
        if !matches!(ev.stage, Stage::Offered | Stage::Acked | Stage::Nak | Stage::Declined | Stage::Released)
        {
            // DHCP logs its own events; TFTP fetches and joins are logged here.
            tracing::info!("{}", line.trim_end());
        }
        if let Err(e) = stage_log.write_all(line.as_bytes()) {
            tracing::warn!(error = %e, "cannot append to the stage log");
        }
    }
}

/// One line of `stages.log`: `at=<unix> node=<n> host=<name> ip=<ip> mac=<mac> stage=<label>`;
/// the stage comes last because its label may hold spaces (`fetched vmlinuz`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StageRecord {
    pub at: u64,
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
            let clean: String = text.chars().filter(|c| !c.is_control()).take(120).collect();
            stage = match NodeReport::parse(&clean) {
                NodeReport::Joined { node: Some(n), .. } => format!("joined as node {n}"),
                NodeReport::Joined { node: None, .. } => "joined (not in the map)".to_string(),
                _ => format!("reported {clean}"),
            };
        }
        StageRecord {
            at: ev.at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
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
            "at={} node={} host={} ip={} mac={} stage={}\n",
            self.at,
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
                ("at", v) => rec.at = v.parse().ok()?,
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
            node: Some(3),
            hostname: "ws002".into(),
            ip: Ipv4Addr::new(192, 168, 0, 2),
            mac: Some("52:54:00:00:00:02".into()),
            stage: "fetched vmlinuz".into(),
        };
        assert_eq!(StageRecord::parse(&r.to_line()), Some(r));
        assert_eq!(StageRecord::parse("garbage"), None);
    }

    #[test]
    fn node_reports_become_stage_labels() {
        let text =
            "[cluster]\ninterface = \"eth1\"\nserver = \"10.0.0.254/24\"\npool = \"10.0.0.1-10.0.0.3\"\n";
        let cfg = Config::parse(text, Path::new("c.toml")).expect("config");
        let plan = Plan::new(&cfg).expect("plan");
        let label = |said: &str| {
            let ev = BootEvent {
                at: UNIX_EPOCH,
                ip: Ipv4Addr::new(10, 0, 0, 1),
                mac: None,
                stage: Stage::Joined(said.into()),
            };
            StageRecord::from_event(&ev, None, &plan).stage
        };
        assert_eq!(label("joined/2/ws001"), "joined as node 2");
        assert_eq!(label("joined/0/stray"), "joined (not in the map)");
        assert_eq!(label("hello\nthere"), "reported hellothere");
    }

    #[test]
    fn startup_problems_name_the_config_key() {
        let e = startup(DhcpError::NoInterface("eth9".into()));
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.to_string(),
            "cannot start DHCP: interface 'eth9' does not exist (check `interface` in cluster.toml and `ip link`)"
        );
        let e = startup(DhcpError::NoServerAddress {
            interface: "eth1".into(),
            server: Ipv4Addr::new(10, 0, 0, 254),
            has: "none".into(),
        });
        assert_eq!(
            e.to_string(),
            "cannot start DHCP: interface 'eth1' does not have the server address 10.0.0.254 (has: none); \
             add it with `ip addr add 10.0.0.254/<prefix> dev eth1` or fix `server` in cluster.toml"
        );
    }
}

//! `mosboot serve`: DHCP (full or proxy), TFTP and (with `[serve] http`) HTTP for the output
//! tree, in the foreground.
//!
//! Order matters for safety: load config and plan; bind every socket (the rival probe's and the
//! status page's too) and open every state file (needs root or capabilities); then drop to an
//! unprivileged user with no capability left (`privilege`), so nothing that parses packets from
//! the network runs privileged; only then look for a rival DHCP server (full mode) and serve. The
//! state folder stays owned by root and its files are opened with `O_NOFOLLOW` before the drop
//! (see `netboot::statedir`): the unprivileged server writes only through descriptors it
//! inherited, so it cannot plant a link that root follows on the next start. Every boot event
//! becomes one log line and one line in `<state>/stages.log` (size-capped), which `mosboot nodes`
//! reads. Nodes' alive reports update [`crate::status::Live`] (and `<state>/alive.json`); with
//! `--status` / `[serve] status` the status page shows it all ([`crate::status::http`]).
//! SIGHUP and a swapped-in output tree reload the config, plan and tree as one unit
//! ([`crate::reload`]); leases and running transfers are untouched.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use netboot::dhcp::{BootFiles, DhcpConfig, DhcpError, DhcpServer, HostInfo, RivalProbe};
use netboot::events::{BootEvent, EventReceiver, Stage};
use netboot::http::{HttpConfig, HttpServer};
use netboot::mac::MacAddr;
use netboot::node_report::NodeReport;
use netboot::statedir::StateDir;
use netboot::tftp::{TftpConfig, TftpServer};

use crate::config::{Config, DhcpMode};
use crate::error::Failure;
use crate::plan::Plan;
use crate::status::{Alive, Gate, Live, LiveEvent};

/// File names inside the state directory.
pub const LEASE_FILE: &str = "leases";
pub const STAGE_LOG: &str = "stages.log";
/// The stage log is cut to its newest half when it grows past this (a flood adds a line per
/// DISCOVER).
pub const STAGE_LOG_MAX: u64 = 4 << 20;

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
    /// Serve the status page on ADDR (e.g. 127.0.0.1:8067); overrides [serve] status.
    #[arg(long, value_name = "ADDR")]
    pub status: Option<SocketAddr>,
    /// Allow a status address other than loopback (the page shows the lab's MACs and addresses).
    #[arg(long)]
    pub status_public: bool,
    /// RFC 2090 multicast TFTP to GROUP[:PORT] (239.x.y.z); overrides [serve] multicast.
    #[arg(long, value_name = "GROUP", value_parser = crate::config::parse_multicast)]
    pub multicast: Option<std::net::SocketAddrV4>,
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
        bootp_dynamic: plan.bootp_dynamic,
        new_macs: plan.new_macs,
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
    let status = crate::status::listen_addr(args.status, args.status_public, &cfg.serve)?;
    let fixed = crate::reload::Fixed::of(&cfg, &plan, args).map_err(Failure::Usage)?;
    let state = args.state.clone().unwrap_or_else(|| default_state_dir(&plan.cluster));
    let state_dir = StateDir::secure(&state).map_err(|e| Failure::runtime("open the state folder", e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime("start the async runtime", e))?;
    let http = http_config(&cfg, &plan, &root);
    let reload = Reload { cfg_path: cfg_path.to_path_buf(), fixed, out };
    let multicast = args.multicast.or(cfg.serve.multicast);
    rt.block_on(serve(plan, root, state_dir, (status, http), multicast, args, reload))
}

/// What a reload needs to know about how serve was started.
struct Reload {
    cfg_path: PathBuf,
    fixed: crate::reload::Fixed,
    /// The output tree watched for swaps.
    out: PathBuf,
}

async fn serve(
    plan: Plan,
    root: PathBuf,
    state_dir: StateDir,
    (status, http): (Option<SocketAddr>, Option<HttpConfig>),
    multicast: Option<SocketAddrV4>,
    args: &ServeArgs,
    reload: Reload,
) -> Result<(), Failure> {
    let state = state_dir.path().to_path_buf();
    let (tx, rx) = netboot::events::channel();
    let mut stage_log =
        state_dir.open_file(STAGE_LOG, true).map_err(|e| Failure::runtime("open the stage log", e))?;
    let alive_file = state_dir
        .open_file(crate::status::ALIVE_FILE, false)
        .map_err(|e| Failure::runtime("open the alive file", e))?;

    let mut probe = None;
    let dhcp = if plan.dhcp == DhcpMode::Off {
        tracing::info!("dhcp = \"off\": serving TFTP only");
        None
    } else {
        if plan.dhcp == DhcpMode::Full && !args.force {
            // Bound now (port 68 needs privilege); its answers are parsed after the drop.
            probe = Some(RivalProbe::open(&plan.interface, plan.server).map_err(startup)?);
        }
        let cfg = dhcp_config(&plan, state.join(LEASE_FILE));
        let mut server = DhcpServer::bind(cfg, Some(tx.clone())).map_err(startup)?;
        server.booted_before(booted_macs(&mut stage_log));
        Some(server)
    };
    let fetches = dhcp.as_ref().map(DhcpServer::boot_fetches);
    let reconfigure = dhcp.as_ref().map(DhcpServer::reconfigure);
    let tftp_cfg = TftpConfig {
        bind: SocketAddr::V4(SocketAddrV4::new(plan.server, 69)),
        root: root.clone(),
        interface: Some(plan.interface.clone()),
        multicast: multicast.map(|g| netboot::tftp::MulticastConfig {
            max_sessions: usize::from(crate::config::MULTICAST_PORTS),
            ..netboot::tftp::MulticastConfig::new(*g.ip(), g.port())
        }),
        ..TftpConfig::default()
    };
    let http = match http {
        None => None,
        Some(cfg) => Some(HttpServer::bind(cfg, Some(tx.clone())).map_err(|e| {
            Failure::Usage(format!("cannot start HTTP: {e} (check `http` in [serve] of cluster.toml)"))
        })?),
    };
    let tftp = TftpServer::bind(tftp_cfg, Some(tx))
        .map_err(|e| Failure::Usage(format!("cannot start TFTP: {e}")))?;
    let mac_of = known_macs(&state.join(LEASE_FILE), &plan);

    let status_listener = match status {
        None => None,
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Failure::Usage(format!("cannot serve the status page on {addr}: {e}")))?,
        ),
    };

    crate::privilege::drop_privileges(&args.user)?;
    if let Some(probe) = probe {
        match probe.run(args.probe).await {
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
        crate::sd_notify::notify(crate::sd_notify::STOPPING);
        let _ = stop_tx.send(true);
    });
    // SIGHUP is `systemctl reload` (ExecReload in mosboot@.service); registered before READY so
    // that it never ends the daemon (SIGHUP's default action).
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Failure::runtime("listen for SIGHUP", e))?;
    let (plan_tx, plan_rx) = tokio::sync::watch::channel(Arc::new(plan.clone()));
    let reloader = crate::reload::Reloader {
        cfg_path: reload.cfg_path,
        args: args.clone(),
        fixed: reload.fixed,
        dhcp: reconfigure,
        plan: plan_tx,
        lease_file: state.join(LEASE_FILE),
    };
    let reload_task = tokio::spawn(reloads(reloader, hup, crate::reload::TreeWatch::new(&reload.out)));
    let live = Arc::new(Mutex::new(Live::load(&state)));
    let (live_tx, _) = tokio::sync::broadcast::channel(256);
    let recorder =
        Recorder { plan: plan_rx.clone(), live: live.clone(), tx: live_tx.clone(), alive_file, fetches };
    let stage_log = netboot::spool::Spool::start(
        "stage-log",
        STAGE_QUEUE,
        StageLog { file: stage_log, failing: false, len: None },
    )
    .map_err(|e| Failure::runtime("start the stage log writer", e))?;
    let events = tokio::spawn(recorder.run(rx, mac_of, stage_log.clone()));
    let status_task = status_listener.map(|listener| {
        let app = Arc::new(crate::status::http::App::new(plan_rx, state.clone(), live, live_tx));
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
    if let Some(h) = &http {
        eprintln!("mosboot serve: HTTP for iPXE on {} from {}", h.local_addr(), root.display());
    }
    crate::sd_notify::notify(crate::sd_notify::READY);

    let http_task = http.map(|h| tokio::spawn(h.run(stopped(stop_rx.clone()))));
    let tftp_task = tokio::spawn(tftp.run(stopped(stop_rx.clone())));
    let dhcp_result = match dhcp {
        Some(d) => d.run(stopped(stop_rx.clone())).await.map_err(|e| Failure::runtime("serve DHCP", e)),
        None => {
            stopped(stop_rx.clone()).await;
            Ok(())
        }
    };
    signals.abort();
    reload_task.abort();
    let tftp_result = match tftp_task.await {
        Ok(r) => r.map_err(|e| Failure::runtime("serve TFTP", e)),
        Err(e) => Err(Failure::runtime("serve TFTP", e)),
    };
    let http_result = match http_task {
        None => Ok(()),
        Some(t) => match t.await {
            Ok(r) => r.map_err(|e| Failure::runtime("serve HTTP", e)),
            Err(e) => Err(Failure::runtime("serve HTTP", e)),
        },
    };
    events.abort();
    stage_log.flush(Duration::from_secs(2));
    if let Some(t) = status_task {
        // Open event streams never end by themselves; the page reconnects to the next serve.
        t.abort();
    }
    dhcp_result.and(tftp_result).and(http_result)
}

/// The HTTP server for iPXE nodes (`[serve] http`), on the lab interface like TFTP; `None` when
/// off. The file names boot.ipxe asks for are the TFTP tree's, so the root is the same.
pub fn http_config(cfg: &Config, plan: &Plan, root: &Path) -> Option<HttpConfig> {
    let addr = cfg.serve.http?;
    Some(HttpConfig {
        bind: SocketAddr::V4(addr),
        root: root.to_path_buf(),
        interface: Some(plan.interface.clone()),
        ..HttpConfig::default()
    })
}

/// Reloads on every SIGHUP and every swapped-in output tree, one at a time.
async fn reloads(
    mut reloader: crate::reload::Reloader,
    mut hup: tokio::signal::unix::Signal,
    mut tree: crate::reload::TreeWatch,
) {
    loop {
        let why = tokio::select! {
            got = hup.recv() => match got {
                Some(()) => "SIGHUP",
                None => break,
            },
            () = tree.swapped() => "a new output tree",
        };
        reloader.reload(why).await;
    }
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

/// TFTP only knows IPs; DHCP events and the lease log say which MAC holds which IP.
fn known_macs(lease_file: &Path, plan: &Plan) -> (HashMap<Ipv4Addr, MacAddr>, Vec<netboot::leases::Lease>) {
    let mut mac_of: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
    let leases = netboot::leases::read_leases(lease_file).map(|(l, _)| l).unwrap_or_default();
    for l in &leases {
        mac_of.insert(l.ip, l.mac);
    }
    for n in &plan.nodes {
        if let Some(m) = n.mac {
            mac_of.entry(n.ip).or_insert(m);
        }
    }
    (mac_of, leases)
}

/// MACs the stage log saw fetch a boot file (real PCs, whose leases are never reclaimed early).
fn booted_macs(stage_log: &mut File) -> Vec<MacAddr> {
    let mut text = String::new();
    if stage_log.seek(SeekFrom::Start(0)).and_then(|_| stage_log.read_to_string(&mut text)).is_err() {
        return Vec::new();
    }
    text.lines()
        .filter_map(StageRecord::parse)
        .filter(|r| r.stage.starts_with("fetched "))
        .filter_map(|r| r.mac.and_then(|m| m.parse().ok()))
        .collect()
}

/// Keeps the newest half of an append-only log that grew past `max`, in place (through the
/// descriptor: the unprivileged server cannot rename in the root-owned state folder). Returns
/// the length it leaves.
fn trim_log(file: &mut File, max: u64) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len <= max {
        return Ok(len);
    }
    let keep = max / 2;
    file.seek(SeekFrom::Start(len - keep))?;
    let mut tail = Vec::with_capacity(keep as usize);
    file.take(keep).read_to_end(&mut tail)?;
    // Start on a whole line.
    let start = tail.iter().position(|&b| b == b'\n').map(|i| i + 1).unwrap_or(tail.len());
    file.set_len(0)?;
    file.write_all(&tail[start..])?;
    Ok((tail.len() - start) as u64)
}

/// Stage log lines that may wait for the disk; beyond this they are dropped (and counted).
const STAGE_QUEUE: usize = 4096;

/// The recorder looks at its queue at most this often: an event waits up to this long (alive
/// reports reach the page once a second anyway; a stage reaches it well inside the ~300 ms the
/// page promises), and 254 nodes reporting every 5 s (50 reports a second) wake it ten times a
/// second instead of once per report, each wakeup a thread switch. A full queue still moves at
/// once; in the pause at most a boot storm's few hundred events queue up (EVENT_QUEUE: 4096).
const RECORDER_PACE: Duration = Duration::from_millis(100);

/// The stage log's end of its spool: appends and the size cap run on the spool's own thread,
/// through the descriptor opened before the privilege drop.
struct StageLog {
    file: File,
    /// In a failing stretch (one warning per stretch: a full disk would add one per event).
    failing: bool,
    /// The file's length as last seen plus what was appended since (`None`: look again), so
    /// the size is asked of the file system only when the cap may have been passed.
    len: Option<u64>,
}

impl netboot::spool::Sink for StageLog {
    fn write(&mut self, data: &[u8]) {
        let appended = self.file.write_all(data).and_then(|()| match self.len {
            Some(len) if len + data.len() as u64 <= STAGE_LOG_MAX => Ok(len + data.len() as u64),
            _ => trim_log(&mut self.file, STAGE_LOG_MAX),
        });
        self.len = appended.as_ref().ok().copied();
        match appended.map(|_| ()) {
            Err(e) if !self.failing => {
                tracing::warn!(error = %e, "cannot append to the stage log (lines are lost until it works again)");
                self.failing = true;
            }
            Err(_) => {}
            Ok(()) => self.failing = false,
        }
    }

    fn dropped(&mut self, n: u64) {
        tracing::warn!(dropped = n, "the stage log could not keep up (disk busy?); lines dropped");
    }
}

/// Turns server events into stage log lines, live page updates and alive reports.
struct Recorder {
    /// The plan being served (a reload sends the next one).
    plan: tokio::sync::watch::Receiver<Arc<Plan>>,
    live: Arc<Mutex<Live>>,
    tx: tokio::sync::broadcast::Sender<LiveEvent>,
    /// `<state>/alive.json`, opened before the drop and rewritten through this descriptor.
    alive_file: File,
    /// Tells DHCP which addresses fetched a boot file (their leases are not reclaimed early).
    fetches: Option<netboot::dhcp::BootFetches>,
}

impl Recorder {
    async fn run(
        mut self,
        mut rx: EventReceiver,
        (mut mac_of, leases): (HashMap<Ipv4Addr, MacAddr>, Vec<netboot::leases::Lease>),
        stage_log: netboot::spool::Spool,
    ) {
        let first = self.plan.borrow_and_update().clone();
        let mut gate = Gate::new(&first, first.dhcp == DhcpMode::Full, &leases);
        let mut save = tokio::time::interval(Duration::from_secs(netboot::node_report::REPORT_INTERVAL_SECS));
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        // Alive reports go to the page once a second, together (254 nodes send 50 a second).
        let mut alive_batch: HashMap<Ipv4Addr, serde_json::Value> = HashMap::new();
        let mut last_refusal_log = 0u64;
        let mut woke = tokio::time::Instant::now();
        loop {
            if rx.is_empty() {
                tokio::time::sleep_until(woke + RECORDER_PACE).await;
            }
            // Events first: the timers are polled only while none is queued (the task budget
            // makes `recv` pause now and then in a flood, so they still fire).
            let ev = tokio::select! {
                biased;
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        woke = tokio::time::Instant::now();
                        ev
                    }
                    None => break,
                },
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
            let reloaded = self.plan.has_changed().unwrap_or(false);
            let plan = self.plan.borrow_and_update().clone();
            if reloaded {
                // Pinned nodes the reload added are known by MAC from now on.
                for n in &plan.nodes {
                    if let Some(m) = n.mac {
                        mac_of.entry(n.ip).or_insert(m);
                    }
                }
            }
            if let (Stage::Fetched(_), Some(f)) = (&ev.stage, &self.fetches) {
                f.fetched(ev.ip);
            }
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
                let admitted = NodeReport::parse(text)
                    .map_err(|e| e.to_string())
                    .and_then(|r| gate.admit(&plan, ev.ip, &r, now).map(|()| r).map_err(|e| e.to_string()));
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
            let rec = StageRecord::from_event(&ev, mac, &plan);
            let line = rec.to_line();
            if !matches!(
                ev.stage,
                Stage::Offered | Stage::Acked | Stage::Nak | Stage::Declined | Stage::Released
            ) {
                // DHCP logs its own events; TFTP fetches and joins are logged here.
                tracing::info!("{}", line.trim_end());
            }
            stage_log.write(line.into_bytes());
            // Only an open page listens; a boot storm without one pays no JSON per event.
            if self.tx.receiver_count() > 0
                && let Ok(data) = serde_json::to_string(&rec)
            {
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

    fn save_alive(&mut self) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = live.save_alive(&mut self.alive_file) {
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
            // Only admitted reports get here (see netboot::node_report).
            stage = match NodeReport::parse(text) {
                Ok(NodeReport::Joined { node, .. }) if node != 0 => format!("joined as node {node}"),
                Ok(NodeReport::Joined { .. }) => "joined (not in the map)".to_string(),
                Ok(report @ NodeReport::FloppyStage1) => format!("reported {report}"),
                _ => "reported".to_string(),
            };
        }
        // One event, one line: nothing from the network may start another.
        stage.retain(|c| !c.is_control());
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
    fn stage_log_is_cut_to_its_newest_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        let mut f = sd.open_file(STAGE_LOG, true).unwrap();
        for i in 0..1000 {
            writeln!(f, "line {i:04}").unwrap();
        }
        trim_log(&mut f, 4000).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STAGE_LOG)).unwrap();
        assert!(text.len() <= 2000 && text.starts_with("line ") && text.ends_with("line 0999\n"), "{text}");
        writeln!(f, "after").unwrap();
        assert!(std::fs::read_to_string(dir.path().join(STAGE_LOG)).unwrap().ends_with("0999\nafter\n"));
    }

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
        assert_eq!(label("floppy-stage1"), "reported floppy-stage1");
        // Unknown reports are refused before they get here; if one did, it adds no text of its own.
        assert_eq!(label("hello\nthere"), "reported");
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

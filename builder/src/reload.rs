//! Live reload for `mosboot serve`: on SIGHUP (`systemctl reload`) and whenever `mosboot build`
//! swaps in a new output tree, the config is read and checked exactly as `mosboot check` does,
//! and the new plan goes to DHCP (a message to its task), the stage recorder and the status page
//! together, so a node never gets a hostname from one plan and a map from another. A config that
//! fails the check, or changes what only a restart can change, is refused whole and the old one
//! keeps serving. Leases are untouched (the DHCP task keeps its table and store). The TFTP root
//! is a path, resolved per request: the swapped-in tree is served from the next request on, and
//! a transfer already running keeps reading the file it opened.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use netboot::dhcp::Reconfigure;
use tokio::sync::watch;

use crate::config::{Config, DhcpMode};
use crate::plan::Plan;
use crate::serve::ServeArgs;

/// How often the output tree is looked at for a swap.
pub const POLL: Duration = Duration::from_secs(1);

/// What the running sockets, listeners and open files were set up for: a reload that changes
/// any of it is refused ("needs a restart").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fixed {
    interface: String,
    server: (Ipv4Addr, u8),
    dhcp: DhcpMode,
    status: Option<SocketAddr>,
    http: Option<std::net::SocketAddrV4>,
    state: PathBuf,
    out: PathBuf,
}

impl Fixed {
    /// What `serve` binds and opens for `cfg`/`plan` with `args` (flags win over the config).
    pub fn of(cfg: &Config, plan: &Plan, args: &ServeArgs) -> Result<Fixed, String> {
        let status = crate::status::listen_addr(args.status, args.status_public, &cfg.serve)
            .map_err(|e| e.to_string())?;
        Ok(Fixed {
            interface: plan.interface.clone(),
            server: (plan.server, plan.prefix_len),
            dhcp: plan.dhcp,
            status,
            http: cfg.serve.http,
            state: args.state.clone().unwrap_or_else(|| crate::serve::default_state_dir(&plan.cluster)),
            out: args.out.clone().unwrap_or_else(|| cfg.image.out.clone()),
        })
    }

    /// One message per setting that differs, naming its key.
    pub fn changes(&self, new: &Fixed) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |key: &str, was: String, now: String| {
            if was != now {
                out.push(format!("{key} changed from {was} to {now}: that needs a restart"));
            }
        };
        differ("cluster.interface", self.interface.clone(), new.interface.clone());
        differ(
            "cluster.server",
            format!("{}/{}", self.server.0, self.server.1),
            format!("{}/{}", new.server.0, new.server.1),
        );
        differ("cluster.dhcp", format!("{:?}", self.dhcp), format!("{:?}", new.dhcp));
        let addr = |a: Option<SocketAddr>| a.map_or("none".to_string(), |a| a.to_string());
        differ("serve.status", addr(self.status), addr(new.status));
        let http = |a: Option<std::net::SocketAddrV4>| a.map_or("none".to_string(), |a| a.to_string());
        differ("serve.http", http(self.http), http(new.http));
        differ(
            "cluster.name (the state folder)",
            self.state.display().to_string(),
            new.state.display().to_string(),
        );
        differ("image.out", self.out.display().to_string(), new.out.display().to_string());
        out
    }
}

/// Loads the next config as one unit and hands it to the running parts.
pub struct Reloader {
    pub cfg_path: PathBuf,
    pub args: ServeArgs,
    pub fixed: Fixed,
    pub dhcp: Option<Reconfigure>,
    pub plan: watch::Sender<Arc<Plan>>,
    pub lease_file: PathBuf,
}

impl Reloader {
    /// Checks the config; returns its plan, or every reason it is refused (one line each).
    fn load(&self) -> Result<Plan, Vec<String>> {
        let (cfg, plan, _) = crate::check::full(&self.cfg_path, &crate::pipeline::BuildOptions::default())
            .map_err(|d| d.items.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        let fixed = Fixed::of(&cfg, &plan, &self.args).map_err(|e| vec![e])?;
        let changes = self.fixed.changes(&fixed);
        if !changes.is_empty() {
            return Err(changes);
        }
        Ok(plan)
    }

    /// Reloads (`why` says what asked); tells systemd RELOADING=1 before and READY=1 after.
    pub async fn reload(&mut self, why: &str) {
        crate::sd_notify::notify(&crate::sd_notify::reloading());
        let path = self.cfg_path.clone();
        tracing::info!(config = %path.display(), "reloading ({why})");
        // Reading and checking the inputs is blocking file work.
        let this = &*self;
        let loaded = tokio::task::block_in_place(|| this.load());
        match loaded {
            Ok(plan) => {
                if let Some(d) = &self.dhcp {
                    d.send(crate::serve::dhcp_config(&plan, self.lease_file.clone())).await;
                }
                let (nodes, pinned) = (plan.nodes.len(), plan.pinned.len());
                self.plan.send_replace(Arc::new(plan));
                tracing::info!("reloaded: {nodes} nodes in the map, {pinned} pinned");
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!("{p}");
                }
                tracing::error!(
                    "reload refused ({} problem(s) in {}): still serving the previous config",
                    problems.len(),
                    path.display()
                );
            }
        }
        crate::sd_notify::notify(crate::sd_notify::READY);
    }
}

/// Identity of the output tree: `mosboot build` exchanges the whole folder, so its inode (and
/// its manifest's) changes with every swap.
pub fn tree_id(out: &Path) -> Option<TreeId> {
    let dir = std::fs::metadata(out).ok()?;
    let m = std::fs::metadata(out.join("manifest.json")).ok();
    Some((
        dir.dev(),
        dir.ino(),
        m.as_ref().map_or(0, MetadataExt::ino),
        m.as_ref().map_or(0, MetadataExt::mtime),
        m.as_ref().map_or(0, MetadataExt::mtime_nsec),
    ))
}

/// (device, folder inode, manifest inode, manifest mtime seconds, nanoseconds).
pub type TreeId = (u64, u64, u64, i64, i64);

/// Watches `out` for swaps; yields once a new tree has stayed the same for one more poll (a
/// second build right behind the first gives one reload, not two).
pub struct TreeWatch {
    out: PathBuf,
    seen: Option<TreeId>,
    pending: Option<TreeId>,
}

impl TreeWatch {
    pub fn new(out: &Path) -> TreeWatch {
        TreeWatch { out: out.to_path_buf(), seen: tree_id(out), pending: None }
    }

    /// Returns when a new tree is in place.
    pub async fn swapped(&mut self) {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            let now = tree_id(&self.out);
            if now.is_none() || now == self.seen {
                self.pending = None;
                continue;
            }
            if self.pending == now {
                self.seen = now;
                self.pending = None;
                return;
            }
            self.pending = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Fixed {
        Fixed {
            interface: "eth1".into(),
            server: (Ipv4Addr::new(10, 0, 0, 254), 24),
            dhcp: DhcpMode::Full,
            status: None,
            http: None,
            state: "/var/lib/mosboot/lab".into(),
            out: "/srv/out".into(),
        }
    }

    #[test]
    fn restart_only_settings_are_named_by_key() {
        let a = fixed();
        assert!(a.changes(&a.clone()).is_empty());
        let b = Fixed { interface: "eth2".into(), dhcp: DhcpMode::Proxy, ..fixed() };
        assert_eq!(
            a.changes(&b),
            vec![
                "cluster.interface changed from eth1 to eth2: that needs a restart".to_string(),
                "cluster.dhcp changed from Full to Proxy: that needs a restart".to_string(),
            ]
        );
        let c = Fixed { http: Some("0.0.0.0:8080".parse().unwrap()), ..fixed() };
        assert_eq!(a.changes(&c), vec!["serve.http changed from none to 0.0.0.0:8080: that needs a restart"]);
    }

    #[test]
    fn a_swapped_tree_has_a_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let before = tree_id(&out);
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        nix::fcntl::renameat2(None, &tmp, None, &out, nix::fcntl::RenameFlags::RENAME_EXCHANGE).unwrap();
        assert!(before.is_some() && tree_id(&out).is_some() && before != tree_id(&out));
    }
}

//! A node's boot as the server saw it: milestones from the stage log, the node's state, and a hint
//! where it stopped. Pure functions over records and a clock, so every rule has a unit test.

use netboot::dhcp::BootFiles;
use netboot::node_report::{MISSED_REPORTS, REPORT_INTERVAL_SECS};

use crate::serve::StageRecord;

/// The steps of one boot, in the order a healthy node reaches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Milestone {
    /// The firmware's DHCP DISCOVER got an offer.
    Offered,
    /// The firmware took the address (the lease is on disk).
    Acked,
    /// The boot loader (`pxelinux.0`, or `boot.ipxe` for iPXE) was fetched.
    BootFile,
    Kernel,
    Initrd,
    /// The node's own kernel asked for its address (udhcpc in the node's init).
    Up,
    /// The node reported itself joined.
    Joined,
}

impl Milestone {
    pub const ALL: [Milestone; 7] = [
        Milestone::Offered,
        Milestone::Acked,
        Milestone::BootFile,
        Milestone::Kernel,
        Milestone::Initrd,
        Milestone::Up,
        Milestone::Joined,
    ];

    /// The label the page and the table show.
    pub fn label(self) -> &'static str {
        match self {
            Milestone::Offered => "offered",
            Milestone::Acked => "acked",
            Milestone::BootFile => "boot file",
            Milestone::Kernel => "kernel",
            Milestone::Initrd => "initrd",
            Milestone::Up => "up",
            Milestone::Joined => "joined",
        }
    }
}

/// File names the node fetches, so a `fetched X` stage maps to a milestone.
#[derive(Clone, Debug)]
pub struct BootNames {
    pub boot: Vec<String>,
    pub kernel: String,
    pub initrd: String,
}

impl Default for BootNames {
    fn default() -> Self {
        let files = BootFiles::default();
        // The kernel and initrd names `mosboot build` writes under tftpboot/.
        BootNames { boot: vec![files.pxe, files.ipxe], kernel: "vmlinuz".into(), initrd: "initrd.gz".into() }
    }
}

impl BootNames {
    fn of_stage(&self, stage: &str) -> Option<Milestone> {
        match stage {
            "offered" => Some(Milestone::Offered),
            "acked" => Some(Milestone::Acked),
            s if s.starts_with("joined") => Some(Milestone::Joined),
            s => {
                let path = s.strip_prefix("fetched ")?;
                let name = path.rsplit('/').next().unwrap_or(path);
                if self.boot.iter().any(|b| b == path || b == name) {
                    Some(Milestone::BootFile)
                } else if name == self.kernel {
                    Some(Milestone::Kernel)
                } else if name == self.initrd {
                    Some(Milestone::Initrd)
                } else {
                    None
                }
            }
        }
    }
}

/// One reached milestone of the current boot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub stage: Milestone,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// Since the previous reached step (none for the first).
    pub took_ms: Option<u64>,
}

/// The current (latest) boot of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeline {
    pub steps: Vec<Step>,
}

impl Timeline {
    /// The latest boot in one node's records (oldest first). A new boot starts when the firmware
    /// asks again after the previous boot got past its boot file; the node kernel's own DHCP after
    /// the initrd is the "up" step, and lease renewals of a running node change nothing.
    pub fn from_records<'a>(
        records: impl IntoIterator<Item = &'a StageRecord>,
        names: &BootNames,
    ) -> Timeline {
        use Milestone::*;
        let mut cur: Vec<(Milestone, u64)> = Vec::new();
        // DHCP seen after the initrd: the node kernel's (the "up" step), or the firmware of the
        // next boot; a boot file fetched next decides that it was the latter.
        let mut pending: Vec<(Milestone, u64)> = Vec::new();
        let has = |cur: &[(Milestone, u64)], m: Milestone| cur.iter().any(|(c, _)| *c == m);
        for r in records {
            let Some(m) = names.of_stage(&r.stage) else { continue };
            let at = r.at_ms;
            let past_boot_file = cur.iter().any(|(c, _)| *c >= BootFile);
            match m {
                Offered | Acked if has(&cur, Joined) => {
                    if m == Acked {
                        continue; // a renewal
                    }
                    cur.clear();
                    pending.clear();
                    cur.push((Offered, at));
                }
                Offered | Acked if has(&cur, Initrd) => {
                    if !has(&cur, Up) {
                        cur.push((Up, at));
                    }
                    pending.retain(|(p, _)| *p != m);
                    pending.push((m, at));
                }
                Offered | Acked if past_boot_file => {
                    cur.clear();
                    pending.clear();
                    cur.push((m, at));
                }
                BootFile if past_boot_file => {
                    cur = std::mem::take(&mut pending);
                    cur.push((BootFile, at));
                }
                m if !has(&cur, m) => cur.push((m, at)),
                _ => {}
            }
        }
        cur.sort_by_key(|(m, _)| *m);
        let mut steps = Vec::with_capacity(cur.len());
        let mut prev: Option<u64> = None;
        for (m, at) in cur {
            steps.push(Step { stage: m, at_ms: at, took_ms: prev.map(|p| at.saturating_sub(p)) });
            prev = Some(at);
        }
        Timeline { steps }
    }

    pub fn last(&self) -> Option<&Step> {
        self.steps.last()
    }

    pub fn started_ms(&self) -> Option<u64> {
        self.steps.first().map(|s| s.at_ms)
    }

    pub fn reached(&self, m: Milestone) -> Option<u64> {
        self.steps.iter().find(|s| s.stage == m).map(|s| s.at_ms)
    }

    /// The last sign of life of this boot: the joined report or a later alive report.
    pub fn alive_ms(&self, last_report_ms: Option<u64>) -> Option<u64> {
        let joined = self.reached(Milestone::Joined);
        let report = last_report_ms.filter(|r| self.started_ms().is_none_or(|s| *r >= s));
        joined.max(report)
    }
}

/// What the page and the table say about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// No boot event since the stage log began.
    NeverSeen,
    /// On its way, not reported yet.
    Booting,
    /// Reported, and its last report is recent.
    Up,
    /// Reported once, then missed its reports (or gave its lease back).
    Down,
}

impl NodeState {
    pub fn label(self) -> &'static str {
        match self {
            NodeState::NeverSeen => "never seen",
            NodeState::Booting => "booting",
            NodeState::Up => "up",
            NodeState::Down => "down",
        }
    }
}

/// Silence after which a reporting node counts as down.
pub const DOWN_AFTER_MS: u64 = MISSED_REPORTS * REPORT_INTERVAL_SECS * 1000;

/// The state from the timeline, the last alive report and the clock.
pub fn state(t: &Timeline, last_report_ms: Option<u64>, now_ms: u64) -> NodeState {
    match t.alive_ms(last_report_ms) {
        Some(alive) if now_ms.saturating_sub(alive) <= DOWN_AFTER_MS => NodeState::Up,
        Some(_) => NodeState::Down,
        None if t.steps.is_empty() => NodeState::NeverSeen,
        None => NodeState::Booting,
    }
}

/// How long each step may take before the page points at it.
const DHCP_WAIT_MS: u64 = 10_000;
const LOADER_WAIT_MS: u64 = 20_000;
const KERNEL_WAIT_MS: u64 = 60_000;

/// Where a node stopped, from what the server saw; none while it is on time or up.
pub fn hint(t: &Timeline, last_report_ms: Option<u64>, now_ms: u64) -> Option<String> {
    let last = t.last()?;
    let waited = now_ms.saturating_sub(last.at_ms);
    let secs = |ms: u64| ms / 1000;
    if let Some(alive) = t.alive_ms(last_report_ms) {
        let silent = now_ms.saturating_sub(alive);
        return (silent > DOWN_AFTER_MS).then(|| {
            format!(
                "no report for {} s (it reports every {} s): powered off, hung, or its network is down",
                secs(silent),
                REPORT_INTERVAL_SECS
            )
        });
    }
    let (limit, text) = match last.stage {
        Milestone::Offered => (
            DHCP_WAIT_MS,
            "offered an address, never took it: another DHCP server may have answered first".to_string(),
        ),
        Milestone::Acked => (
            DHCP_WAIT_MS,
            "acked but never asked for its boot file: is TFTP reachable from it (firewall, next-server)?"
                .to_string(),
        ),
        Milestone::BootFile => (
            LOADER_WAIT_MS,
            "fetched its boot file, never the kernel: look at the boot loader's messages on its screen"
                .to_string(),
        ),
        Milestone::Kernel => (
            LOADER_WAIT_MS,
            "fetched the kernel, never the initrd: the boot loader stopped (too little RAM?)".to_string(),
        ),
        Milestone::Initrd => (
            KERNEL_WAIT_MS,
            format!(
                "initrd fetched, no report in {} s: look at its console (kernel panic, no NIC driver?)",
                secs(KERNEL_WAIT_MS)
            ),
        ),
        Milestone::Up => (
            KERNEL_WAIT_MS,
            format!(
                "its kernel got an address, no report in {} s: look at its console (init stopped before the report)",
                secs(KERNEL_WAIT_MS)
            ),
        ),
        Milestone::Joined => return None,
    };
    (waited > limit).then_some(text)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn rec(at_ms: u64, stage: &str) -> StageRecord {
        StageRecord {
            at: at_ms / 1000,
            at_ms,
            node: Some(2),
            hostname: "ws010".into(),
            ip: Ipv4Addr::new(192, 168, 0, 10),
            mac: None,
            stage: stage.into(),
        }
    }

    /// A timeline reaching `stages` one second apart from T0.
    fn reached(stages: &[&str]) -> Timeline {
        let recs: Vec<StageRecord> =
            stages.iter().enumerate().map(|(i, s)| rec(T0 + i as u64 * 1000, s)).collect();
        Timeline::from_records(&recs, &BootNames::default())
    }

    fn labels(t: &Timeline) -> Vec<&'static str> {
        t.steps.iter().map(|s| s.stage.label()).collect()
    }

    const FULL: [&str; 10] = [
        "offered",
        "acked",
        "fetched pxelinux.0",
        "fetched pxelinux.cfg/default",
        "fetched vmlinuz",
        "fetched initrd.gz",
        "offered",
        "acked",
        "joined as node 2",
        "acked",
    ];

    #[test]
    fn a_whole_boot_has_every_step_with_durations() {
        let t = reached(&FULL);
        assert_eq!(labels(&t), ["offered", "acked", "boot file", "kernel", "initrd", "up", "joined"]);
        assert_eq!(t.steps[0].took_ms, None);
        assert_eq!(t.steps[3].took_ms, Some(2000)); // the pxelinux.cfg fetch in between
        assert_eq!(t.steps[5].took_ms, Some(1000)); // the node kernel's offer
    }

    #[test]
    fn a_reboot_starts_a_new_timeline_and_a_renewal_does_not() {
        let mut stages = FULL.to_vec();
        stages.extend(["offered", "acked", "fetched pxelinux.0"]);
        let t = reached(&stages);
        assert_eq!(labels(&t), ["offered", "acked", "boot file"]);
        assert_eq!(t.started_ms(), Some(T0 + 10_000));
        // A boot that stopped at the kernel and starts over.
        let t = reached(&["offered", "acked", "fetched pxelinux.0", "fetched vmlinuz", "offered"]);
        assert_eq!(labels(&t), ["offered"]);
        // A node that reboots after its kernel asked for an address but before it reported.
        let t = reached(&[
            "offered",
            "acked",
            "fetched pxelinux.0",
            "fetched vmlinuz",
            "fetched initrd.gz",
            "offered",
            "acked",
            "offered",
            "acked",
            "fetched pxelinux.0",
        ]);
        assert_eq!(labels(&t), ["offered", "acked", "boot file"]);
        assert_eq!(t.started_ms(), Some(T0 + 7000));
        // iPXE (or proxy DHCP that saw no lease): the boot file alone starts over too.
        let t = reached(&["fetched boot.ipxe", "fetched vmlinuz", "fetched boot.ipxe"]);
        assert_eq!(labels(&t), ["boot file"]);
    }

    #[test]
    fn states_follow_reports() {
        let never = Timeline::default();
        assert_eq!(state(&never, None, T0), NodeState::NeverSeen);
        let booting = reached(&FULL[..5]);
        assert_eq!(state(&booting, None, T0 + 5000), NodeState::Booting);
        let joined = reached(&FULL);
        let joined_at = T0 + 8000;
        assert_eq!(state(&joined, None, joined_at + DOWN_AFTER_MS), NodeState::Up);
        assert_eq!(state(&joined, None, joined_at + DOWN_AFTER_MS + 1), NodeState::Down);
        let report = joined_at + 60_000;
        assert_eq!(state(&joined, Some(report), report + 5000), NodeState::Up);
        assert_eq!(state(&joined, Some(report), report + DOWN_AFTER_MS + 1), NodeState::Down);
        // A report from before this boot began does not make the rebooting node up.
        let mut stages = FULL.to_vec();
        stages.push("offered");
        let rebooting = reached(&stages);
        assert_eq!(state(&rebooting, Some(T0 + 9000), T0 + 11_000), NodeState::Booting);
    }

    /// The hint for a boot that stopped after `stages`, `wait_ms` after its last step.
    fn hint_after(stages: &[&str], wait_ms: u64) -> Option<String> {
        let t = reached(stages);
        let last = t.last().unwrap().at_ms;
        hint(&t, None, last + wait_ms)
    }

    #[test]
    fn hint_offered_never_acked() {
        assert_eq!(hint_after(&FULL[..1], DHCP_WAIT_MS), None);
        assert!(hint_after(&FULL[..1], DHCP_WAIT_MS + 1).unwrap().contains("never took it"));
    }

    #[test]
    fn hint_acked_never_asked_for_boot_file() {
        assert_eq!(hint_after(&FULL[..2], DHCP_WAIT_MS), None);
        assert!(
            hint_after(&FULL[..2], DHCP_WAIT_MS + 1)
                .unwrap()
                .starts_with("acked but never asked for its boot file")
        );
    }

    #[test]
    fn hint_boot_file_never_kernel() {
        assert_eq!(hint_after(&FULL[..4], LOADER_WAIT_MS), None);
        assert!(hint_after(&FULL[..4], LOADER_WAIT_MS + 1).unwrap().contains("never the kernel"));
    }

    #[test]
    fn hint_kernel_never_initrd() {
        assert_eq!(hint_after(&FULL[..5], LOADER_WAIT_MS), None);
        assert!(
            hint_after(&FULL[..5], LOADER_WAIT_MS + 1)
                .unwrap()
                .starts_with("fetched the kernel, never the initrd")
        );
    }

    #[test]
    fn hint_initrd_no_report() {
        assert_eq!(hint_after(&FULL[..6], KERNEL_WAIT_MS), None);
        let h = hint_after(&FULL[..6], KERNEL_WAIT_MS + 1).unwrap();
        assert!(h.starts_with("initrd fetched, no report in 60 s: look at its console"), "{h}");
    }

    #[test]
    fn hint_up_no_report() {
        assert_eq!(hint_after(&FULL[..8], KERNEL_WAIT_MS), None);
        assert!(
            hint_after(&FULL[..8], KERNEL_WAIT_MS + 1).unwrap().contains("init stopped before the report")
        );
    }

    #[test]
    fn hint_reports_stopped() {
        let t = reached(&FULL);
        let report = T0 + 30_000;
        assert_eq!(hint(&t, Some(report), report + DOWN_AFTER_MS), None);
        let h = hint(&t, Some(report), report + 20_000).unwrap();
        assert!(h.starts_with("no report for 20 s (it reports every 5 s)"), "{h}");
    }
}

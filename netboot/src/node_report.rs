//! The node report channel, on the wire, defined once: a booted node tells `mosboot serve` how it
//! is by asking the TFTP server for `mosboot-report/<report>` ([`REPORT_PREFIX`]). The server
//! answers `ok` from memory and writes nothing; the request itself is the message. TFTP is used
//! because every node already has busybox `tftp` and the server already listens on port 69, so
//! the channel needs no new port, no new privilege and no new applet.
//!
//! Three reports exist:
//! - `floppy-stage1`: a boot floppy's stage-1 has its lease and is fetching the node image;
//! - `joined/<N>/<hostname>`: once, after openMosix started (N is 0 when the node's address is not
//!   in the map);
//! - `alive/<N>/<hostname>/<mac>/<load1>/<memfree kB>/<uptime s>/<openmosix>`: every
//!   [`REPORT_INTERVAL_SECS`]; `<openmosix>` is `on` when `/proc/hpc` (or `/proc/mosix`) exists,
//!   `-` when the kernel has no openMosix.
//!
//! Reports come from an untrusted LAN: this module only parses; whoever receives them decides
//! whether the sender may speak for that node (a lease, a matching MAC) and how often.

use std::fmt;

use crate::mac::MacAddr;

/// The directory every report is fetched under (the builder writes it into the node's config).
pub const REPORT_DIR: &str = "mosboot-report";
/// [`REPORT_DIR`] with its slash: how a report's request name starts.
pub const REPORT_PREFIX: &str = "mosboot-report/";

/// How often a node reports itself alive.
pub const REPORT_INTERVAL_SECS: u64 = 5;
/// A node that misses this many reports in a row counts as down.
pub const MISSED_REPORTS: u64 = 3;
/// The first path segment of each report kind.
pub const JOINED: &str = "joined";
pub const ALIVE: &str = "alive";
pub const FLOPPY_STAGE1: &str = "floppy-stage1";

/// What a node said.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeReport {
    /// A boot floppy's stage-1 got its lease and fetches the node image.
    FloppyStage1,
    /// Up and in the cluster (or standalone).
    Joined { node: u32, hostname: String },
    /// Still alive, with its vitals.
    Alive(Vitals),
}

/// A node's periodic vitals.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Vitals {
    pub node: u32,
    pub hostname: String,
    #[serde(with = "mac_text")]
    pub mac: MacAddr,
    /// One-minute load average.
    pub load: f32,
    pub mem_free_kb: u64,
    pub uptime_s: u64,
    /// `on` or `-` (no openMosix in the kernel).
    pub openmosix: String,
}

/// Why a report was not understood.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    #[error("unknown report kind '{0}' (floppy-stage1, joined, alive)")]
    Kind(String),
    #[error("report field {field}: '{value}' is not valid")]
    Field { field: &'static str, value: String },
    #[error("report has {0} fields, expected {1}")]
    Count(usize, usize),
}

impl NodeReport {
    /// Parses the text after the report prefix.
    pub fn parse(text: &str) -> Result<NodeReport, ReportError> {
        let parts: Vec<&str> = text.split('/').collect();
        let want = |n: usize| if parts.len() == n { Ok(()) } else { Err(ReportError::Count(parts.len(), n)) };
        let bad = |field: &'static str, value: &str| ReportError::Field { field, value: value.to_string() };
        let node = |s: &str| s.parse::<u32>().map_err(|_| bad("node", s));
        let hostname = |s: &str| {
            let ok = !s.is_empty()
                && s.len() <= 63
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if ok { Ok(s.to_string()) } else { Err(bad("hostname", s)) }
        };
        match parts[0] {
            FLOPPY_STAGE1 => {
                want(1)?;
                Ok(NodeReport::FloppyStage1)
            }
            JOINED => {
                want(3)?;
                Ok(NodeReport::Joined { node: node(parts[1])?, hostname: hostname(parts[2])? })
            }
            ALIVE => {
                want(8)?;
                let load = parts[4]
                    .parse::<f32>()
                    .ok()
                    .filter(|l| l.is_finite() && (0.0..100_000.0).contains(l))
                    .ok_or_else(|| bad("load", parts[4]))?;
                let num = |field, s: &str| s.parse::<u64>().map_err(|_| bad(field, s));
                let openmosix = match parts[7] {
                    "on" | "-" => parts[7].to_string(),
                    other => return Err(bad("openmosix", other)),
                };
                Ok(NodeReport::Alive(Vitals {
                    node: node(parts[1])?,
                    hostname: hostname(parts[2])?,
                    mac: parts[3].parse().map_err(|_| bad("mac", parts[3]))?,
                    load,
                    mem_free_kb: num("memfree", parts[5])?,
                    uptime_s: num("uptime", parts[6])?,
                    openmosix,
                }))
            }
            other => Err(ReportError::Kind(other.chars().take(16).collect())),
        }
    }

    /// The node number the report claims (0: not in the map or not said).
    pub fn node(&self) -> u32 {
        match self {
            NodeReport::FloppyStage1 => 0,
            NodeReport::Joined { node, .. } => *node,
            NodeReport::Alive(v) => v.node,
        }
    }
}

impl fmt::Display for NodeReport {
    /// The wire form, as a node sends it (after the prefix).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeReport::FloppyStage1 => f.write_str(FLOPPY_STAGE1),
            NodeReport::Joined { node, hostname } => write!(f, "{JOINED}/{node}/{hostname}"),
            NodeReport::Alive(v) => write!(
                f,
                "{ALIVE}/{}/{}/{}/{:.2}/{}/{}/{}",
                v.node, v.hostname, v.mac, v.load, v.mem_free_kb, v.uptime_s, v.openmosix
            ),
        }
    }
}

mod mac_text {
    use crate::mac::MacAddr;

    pub fn serialize<S: serde::Serializer>(m: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(m)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let alive = NodeReport::Alive(Vitals {
            node: 3,
            hostname: "ws002".into(),
            mac: "52:54:00:12:34:56".parse().unwrap(),
            load: 0.25,
            mem_free_kb: 12_345,
            uptime_s: 61,
            openmosix: "on".into(),
        });
        let text = alive.to_string();
        assert_eq!(text, "alive/3/ws002/52:54:00:12:34:56/0.25/12345/61/on");
        assert_eq!(NodeReport::parse(&text), Ok(alive));
        let joined = NodeReport::parse("joined/3/ws001").unwrap();
        assert_eq!(joined, NodeReport::Joined { node: 3, hostname: "ws001".into() });
        assert_eq!(joined.to_string(), "joined/3/ws001");
        assert_eq!(NodeReport::parse("floppy-stage1"), Ok(NodeReport::FloppyStage1));
        assert_eq!(NodeReport::FloppyStage1.to_string(), "floppy-stage1");
        assert_eq!(REPORT_PREFIX, format!("{REPORT_DIR}/"));
    }

    #[test]
    fn bad_reports_name_the_field() {
        let cases = [
            ("hello/1", "unknown report kind 'hello'"),
            ("floppy-stage1/x", "2 fields"),
            ("joined/3", "2 fields"),
            ("joined/x/ws001", "field node"),
            ("joined/3/ws<b>", "field hostname"),
            ("alive/3/ws002/nope/0.1/1/1/on", "field mac"),
            ("alive/3/ws002/52:54:00:12:34:56/NaN/1/1/on", "field load"),
            ("alive/3/ws002/52:54:00:12:34:56/0.1/-1/1/on", "field memfree"),
            ("alive/3/ws002/52:54:00:12:34:56/0.1/1/1/maybe", "field openmosix"),
        ];
        for (text, want) in cases {
            let e = NodeReport::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}

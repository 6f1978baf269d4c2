//! The names of the node report channel, defined once: a booted node fetches
//! `mosboot-report/joined/<N>/<hostname>` over TFTP to say it is up (N is 0 when its address is
//! not in the map), and the server answers from memory ([`super::server`]). The builder writes
//! [`REPORT_DIR`] into the node's config and reads reports back with [`NodeReport::parse`].

/// The directory every report is fetched under.
pub const REPORT_DIR: &str = "mosboot-report";

/// [`REPORT_DIR`] with its slash: how a report's request name starts.
pub const REPORT_PREFIX: &str = "mosboot-report/";

/// The first part of a join report.
const JOINED: &str = "joined";

/// What a node reported: the request name after [`REPORT_PREFIX`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeReport {
    /// `joined/<N>/<hostname>`; `node` is `None` for N = 0 (an address outside the map).
    Joined { node: Option<u32>, hostname: String },
    /// Anything else fetched under the report directory, as sent.
    Other(String),
}

impl NodeReport {
    /// Reads the text after [`REPORT_PREFIX`]. Never fails: what is not a join is `Other`.
    pub fn parse(text: &str) -> NodeReport {
        let other = || NodeReport::Other(text.to_string());
        let Some(rest) = text.strip_prefix(JOINED).and_then(|r| r.strip_prefix('/')) else {
            return other();
        };
        let (number, hostname) = rest.split_once('/').unwrap_or((rest, ""));
        match number.parse::<u32>() {
            Ok(0) => NodeReport::Joined { node: None, hostname: hostname.to_string() },
            Ok(n) => NodeReport::Joined { node: Some(n), hostname: hostname.to_string() },
            Err(_) => other(),
        }
    }

    /// The full request name a node fetches for this report.
    pub fn path(&self) -> String {
        match self {
            NodeReport::Joined { node, hostname } => {
                format!("{REPORT_PREFIX}{JOINED}/{}/{hostname}", node.unwrap_or(0))
            }
            NodeReport::Other(text) => format!("{REPORT_PREFIX}{text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_the_directory_and_a_slash() {
        assert_eq!(REPORT_PREFIX, format!("{REPORT_DIR}/"));
    }

    #[test]
    fn join_reports_round_trip() {
        for (text, report) in [
            ("joined/3/ws001", NodeReport::Joined { node: Some(3), hostname: "ws001".into() }),
            ("joined/0/stray", NodeReport::Joined { node: None, hostname: "stray".into() }),
        ] {
            assert_eq!(NodeReport::parse(text), report);
            assert_eq!(report.path(), format!("mosboot-report/{text}"));
        }
        assert_eq!(
            NodeReport::parse("joined/7"),
            NodeReport::Joined { node: Some(7), hostname: String::new() }
        );
    }

    #[test]
    fn anything_else_is_other() {
        for text in ["hello", "joined", "joined/", "joined/x/ws001", "joinedx/3/a", "joined/-1/a"] {
            assert_eq!(NodeReport::parse(text), NodeReport::Other(text.into()), "{text}");
        }
    }
}

//! One lease record = one line of the lease log, e.g.
//! `lease mac=00:0c:29:aa:bb:01 ip=192.168.0.1 host=ws001 expires=1790000000 state=bound at=1789956800 crc32=1a2b3c4d`.
//! Plain text so an admin can read it with `less`; the CRC-32 (IEEE, the zlib one, from crc32fast)
//! tells a torn or bit-flipped line apart.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::mac::MacAddr;

/// Why a line of the lease log is not a record; the messages name the field.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("no crc32 field")]
    NoCrc,
    #[error("crc32 '{0}' is not hex")]
    CrcNotHex(String),
    #[error("crc32 mismatch (damaged or torn record)")]
    CrcMismatch,
    #[error("does not start with 'lease'")]
    NotLease,
    #[error("field '{0}' has no '='")]
    NoEquals(String),
    #[error("mac: {0}")]
    Mac(#[source] crate::mac::ParseMacError),
    #[error("ip '{value}': {source}")]
    Ip { value: String, source: std::net::AddrParseError },
    #[error("host '{0}' is badly escaped")]
    Host(String),
    #[error("{field} '{value}': {source}")]
    Number { field: &'static str, value: String, source: std::num::ParseIntError },
    #[error("unknown state '{0}'")]
    State(String),
    #[error("missing {0}")]
    Missing(&'static str),
}

/// What became of an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Acknowledged to the client; valid until `expires`.
    Bound,
    /// The client gave it back; the MAC still gets it first next time.
    Released,
    /// The client said someone else uses it; nobody gets it until `expires` (quarantine).
    Declined,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "bound" => Some(LeaseState::Bound),
            "released" => Some(LeaseState::Released),
            "declined" => Some(LeaseState::Declined),
            _ => None,
        }
    }
}

/// One address's binding to one MAC at one moment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Lease {
    #[serde(serialize_with = "ser_display")]
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// The plan's hostname for `ip` (what option 12 carried).
    pub hostname: String,
    /// Unix seconds when the lease (or a decline quarantine) ends.
    pub expires: u64,
    pub state: LeaseState,
    /// Unix seconds when this record was written.
    pub at: u64,
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Seconds since the Unix epoch, 0 if the clock is before it.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `SystemTime` for a unix-seconds value.
pub fn to_system_time(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

impl Lease {
    /// Still held (bound and not expired, or quarantined) at `now`.
    pub fn active_at(&self, now: u64) -> bool {
        self.expires > now && self.state != LeaseState::Released
    }

    /// The line as written to the log, with its trailing newline.
    pub fn to_line(&self) -> String {
        let mut body = String::with_capacity(128);
        let _ = write!(
            body,
            "lease mac={} ip={} host={} expires={} state={} at={}",
            self.mac,
            self.ip,
            escape(&self.hostname),
            self.expires,
            self.state.as_str(),
            self.at
        );
        let crc = crc32fast::hash(body.as_bytes());
        let _ = writeln!(body, " crc32={crc:08x}");
        body
    }

    /// Parses one line (without its newline). Errors say which field is wrong.
    pub fn parse_line(line: &str) -> Result<Lease, RecordError> {
        use RecordError as E;
        let (body, crc) = line.rsplit_once(" crc32=").ok_or(E::NoCrc)?;
        let want = u32::from_str_radix(crc, 16).map_err(|_| E::CrcNotHex(crc.to_string()))?;
        if crc32fast::hash(body.as_bytes()) != want {
            return Err(E::CrcMismatch);
        }
        let mut fields = body.split(' ');
        if fields.next() != Some("lease") {
            return Err(E::NotLease);
        }
        let number = |field: &'static str, v: &str| {
            v.parse::<u64>().map_err(|source| E::Number { field, value: v.to_string(), source })
        };
        let (mut mac, mut ip, mut host, mut expires, mut state, mut at) =
            (None, None, None, None, None, None);
        for f in fields {
            let (k, v) = f.split_once('=').ok_or_else(|| E::NoEquals(f.to_string()))?;
            match k {
                "mac" => mac = Some(v.parse::<MacAddr>().map_err(E::Mac)?),
                "ip" => {
                    ip = Some(v.parse::<Ipv4Addr>().map_err(|source| E::Ip { value: v.to_string(), source })?)
                }
                "host" => host = Some(unescape(v).ok_or_else(|| E::Host(v.to_string()))?),
                "expires" => expires = Some(number("expires", v)?),
                "state" => state = Some(LeaseState::parse(v).ok_or_else(|| E::State(v.to_string()))?),
                "at" => at = Some(number("at", v)?),
                // Unknown keys are skipped so a newer mosboot's log still reads here.
                _ => {}
            }
        }
        Ok(Lease {
            mac: mac.ok_or(E::Missing("mac"))?,
            ip: ip.ok_or(E::Missing("ip"))?,
            hostname: host.unwrap_or_default(),
            expires: expires.ok_or(E::Missing("expires"))?,
            state: state.ok_or(E::Missing("state"))?,
            at: at.unwrap_or(0),
        })
    }
}

/// Hostnames come from the plan, but keep the line format unambiguous whatever they hold.
fn escape(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || (b == b'-' && s.len() > 1) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02x}");
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    if s == "-" {
        return Some(String::new());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(host: &str) -> Lease {
        Lease {
            mac: "00:0c:29:aa:bb:01".parse().unwrap(),
            ip: Ipv4Addr::new(192, 168, 0, 1),
            hostname: host.into(),
            expires: 1_790_000_000,
            state: LeaseState::Bound,
            at: 1_789_956_800,
        }
    }

    #[test]
    fn round_trips_including_odd_hostnames() {
        for host in ["ws001", "", "-", "a b=c%", "ünï"] {
            let l = sample(host);
            let line = l.to_line();
            assert!(line.ends_with('\n'));
            assert_eq!(line.matches('\n').count(), 1);
            assert_eq!(Lease::parse_line(line.trim_end()).unwrap(), l, "{line}");
        }
    }

    /// Lines as mosboot wrote them before the CRC came from crc32fast (the hand-written table
    /// era): they must still read back, and the same leases must encode to the same bytes.
    #[test]
    fn records_written_by_earlier_versions_stay_byte_identical() {
        let written = [
            (
                "lease mac=00:0c:29:aa:bb:01 ip=192.168.0.1 host=ws001 expires=1790000000 state=bound \
                 at=1789956800 crc32=34ec9115",
                sample("ws001"),
            ),
            (
                "lease mac=02:00:00:00:00:63 ip=10.61.0.15 host=a%20b%3dc%25 expires=1790003600 \
                 state=declined at=1789999999 crc32=b76c8291",
                Lease {
                    mac: "02:00:00:00:00:63".parse().unwrap(),
                    ip: Ipv4Addr::new(10, 61, 0, 15),
                    hostname: "a b=c%".into(),
                    expires: 1_790_003_600,
                    state: LeaseState::Declined,
                    at: 1_789_999_999,
                },
            ),
            (
                "lease mac=00:0c:29:aa:bb:02 ip=192.168.0.2 host=- expires=0 state=released at=0 crc32=1f2f1e28",
                Lease {
                    mac: "00:0c:29:aa:bb:02".parse().unwrap(),
                    ip: Ipv4Addr::new(192, 168, 0, 2),
                    hostname: String::new(),
                    expires: 0,
                    state: LeaseState::Released,
                    at: 0,
                },
            ),
        ];
        for (line, lease) in written {
            assert_eq!(Lease::parse_line(line).as_ref(), Ok(&lease), "{line}");
            assert_eq!(lease.to_line(), format!("{line}\n"));
        }
    }

    #[test]
    fn flipped_byte_is_caught() {
        let line = sample("ws001").to_line();
        let bad = line.trim_end().replace("ip=192.168.0.1", "ip=192.168.0.2");
        assert_eq!(Lease::parse_line(&bad), Err(RecordError::CrcMismatch));
    }

    #[test]
    fn a_bad_field_is_named_with_its_cause() {
        let body = "lease mac=00:0c:29:aa:bb:01 ip=192.168.0.1 expires=soon state=bound";
        let line = format!("{body} crc32={:08x}", crc32fast::hash(body.as_bytes()));
        let e = Lease::parse_line(&line).expect_err("bad expires");
        assert!(matches!(e, RecordError::Number { field: "expires", .. }), "{e:?}");
        assert_eq!(e.to_string(), "expires 'soon': invalid digit found in string");
        assert!(std::error::Error::source(&e).is_some());
    }
}

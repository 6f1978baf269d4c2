//! Ethernet hardware addresses, the key every lease and pinned node is filed under.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address, printed in the lower-case colon form dhcpd and the map tools use.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("'{0}' is not a MAC address (expected six hex pairs like 00:0c:29:aa:bb:01)")]
#[non_exhaustive]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(ParseMacError(s.to_string()));
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(ParseMacError(s.to_string()));
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| ParseMacError(s.to_string()))?;
        }
        Ok(MacAddr(out))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl MacAddr {
    /// The pxelinux per-client config name, `01-aa-bb-cc-dd-ee-ff` (ARP type 1 = Ethernet).
    pub fn pxelinux_name(&self) -> String {
        format!("01-{}", self.to_string().replace(':', "-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_separators() {
        let m: MacAddr = "00:0C:29:aa:bb:01".parse().expect("valid");
        assert_eq!(m.to_string(), "00:0c:29:aa:bb:01");
        let d: MacAddr = "00-0c-29-aa-bb-01".parse().expect("valid");
        assert_eq!(m, d);
        assert_eq!(m.pxelinux_name(), "01-00-0c-29-aa-bb-01");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "00:0c:29:aa:bb", "00:0c:29:aa:bb:01:02", "0:0c:29:aa:bb:01", "zz:0c:29:aa:bb:01"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}

//! The in-memory view of the lease log: the latest record per address, and which address each
//! MAC last held. Replaying the log into a table gives the same state the server had.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::record::{Lease, LeaseState};
use crate::mac::MacAddr;

/// Latest lease per address plus a MAC -> address index.
#[derive(Clone, Debug, Default)]
pub struct LeaseTable {
    by_ip: HashMap<Ipv4Addr, Lease>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
}

impl LeaseTable {
    /// Applies one record as the newest fact about its address.
    pub fn apply(&mut self, lease: Lease) {
        // The MAC's previous address is no longer its own.
        if let Some(old_ip) = self.by_mac.get(&lease.mac).copied()
            && old_ip != lease.ip
            && let Some(old) = self.by_ip.get(&old_ip)
            && old.mac == lease.mac
            && old.state == LeaseState::Bound
        {
            // Keep the record (history) but mark it given back.
            if let Some(old) = self.by_ip.get_mut(&old_ip) {
                old.state = LeaseState::Released;
            }
        }
        // Whoever held this address before loses its claim on it.
        if let Some(prev) = self.by_ip.get(&lease.ip)
            && prev.mac != lease.mac
            && self.by_mac.get(&prev.mac) == Some(&lease.ip)
        {
            self.by_mac.remove(&prev.mac);
        }
        match lease.state {
            LeaseState::Declined => {
                if self.by_mac.get(&lease.mac) == Some(&lease.ip) {
                    self.by_mac.remove(&lease.mac);
                }
            }
            LeaseState::Bound | LeaseState::Released => {
                self.by_mac.insert(lease.mac, lease.ip);
            }
        }
        self.by_ip.insert(lease.ip, lease);
    }

    /// The newest record about `ip`.
    pub fn get(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.by_ip.get(&ip)
    }

    /// The address `mac` held last (bound, released or expired), with its record.
    pub fn of_mac(&self, mac: MacAddr) -> Option<&Lease> {
        self.by_mac.get(&mac).and_then(|ip| self.by_ip.get(ip))
    }

    /// Every address's newest record, sorted by address.
    pub fn all(&self) -> Vec<Lease> {
        let mut v: Vec<Lease> = self.by_ip.values().cloned().collect();
        v.sort_by_key(|l| l.ip);
        v
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(mac: u8, ip: u8, state: LeaseState) -> Lease {
        Lease {
            mac: MacAddr([0, 0, 0, 0, 0, mac]),
            ip: Ipv4Addr::new(10, 0, 0, ip),
            hostname: format!("ws{ip:03}"),
            expires: 100,
            state,
            at: 1,
        }
    }

    #[test]
    fn later_holder_takes_over_and_mac_moves() {
        let mut t = LeaseTable::default();
        t.apply(lease(1, 5, LeaseState::Bound));
        t.apply(lease(2, 5, LeaseState::Bound));
        assert!(t.of_mac(MacAddr([0, 0, 0, 0, 0, 1])).is_none());
        assert_eq!(t.get(Ipv4Addr::new(10, 0, 0, 5)).unwrap().mac.0[5], 2);
        t.apply(lease(2, 6, LeaseState::Bound));
        assert_eq!(t.get(Ipv4Addr::new(10, 0, 0, 5)).unwrap().state, LeaseState::Released);
        assert_eq!(t.of_mac(MacAddr([0, 0, 0, 0, 0, 2])).unwrap().ip, Ipv4Addr::new(10, 0, 0, 6));
    }

    #[test]
    fn decline_drops_the_macs_claim() {
        let mut t = LeaseTable::default();
        t.apply(lease(1, 5, LeaseState::Bound));
        t.apply(lease(1, 5, LeaseState::Declined));
        assert!(t.of_mac(MacAddr([0, 0, 0, 0, 0, 1])).is_none());
        assert_eq!(t.get(Ipv4Addr::new(10, 0, 0, 5)).unwrap().state, LeaseState::Declined);
    }
}

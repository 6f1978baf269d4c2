//! Which address a client gets. Order of preference: its pinned address; the address it held
//! before (even expired, if nobody else holds it); the lowest never-used pool address; when none
//! is left, the address whose lease ended longest ago; and when the pool is dry, the oldest lease
//! of a MAC that never fetched a boot file (a flood's fake clients never do; a real PC fetches
//! pxelinux.0 seconds after its ACK). Offers hold their address for a short while so concurrent
//! DISCOVERs get distinct offers.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::leases::{Lease, LeaseState, LeaseTable};
use crate::mac::MacAddr;

/// How long an OFFER reserves its address for the client it was made to.
pub const OFFER_HOLD_SECS: u64 = 30;
/// A lease younger than this is never reclaimed: its client may still be fetching.
pub const RECLAIM_GRACE_SECS: u64 = 20;

pub struct Allocator {
    pool: Vec<Ipv4Addr>,
    pinned_by_mac: HashMap<MacAddr, Ipv4Addr>,
    pinned_by_ip: HashMap<Ipv4Addr, MacAddr>,
    ours: HashSet<Ipv4Addr>,
    table: LeaseTable,
    offers: HashMap<Ipv4Addr, (MacAddr, u64)>,
    offer_of: HashMap<MacAddr, Ipv4Addr>,
    /// Pool index before which every address has a lease record (records are never removed,
    /// so this only moves up): keeps "lowest never-used address" O(1) in a boot storm.
    first_fresh: std::cell::Cell<usize>,
    /// MACs that fetched a boot file (told by TFTP via the server): their leases are never
    /// reclaimed early.
    booted: HashSet<MacAddr>,
}

/// Why an address cannot go to a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotOurs,
    PinnedToOther,
    ClientIsPinnedElsewhere,
    HeldByOther(MacAddr),
    Quarantined,
    OfferedToOther,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotOurs => write!(f, "not an address of this plan"),
            Refusal::PinnedToOther => write!(f, "pinned to another MAC"),
            Refusal::ClientIsPinnedElsewhere => write!(f, "this MAC is pinned to another address"),
            Refusal::HeldByOther(m) => write!(f, "leased to {m}"),
            Refusal::Quarantined => write!(f, "quarantined after a DECLINE"),
            Refusal::OfferedToOther => write!(f, "just offered to another client"),
        }
    }
}

impl Allocator {
    pub fn new(pool: Vec<Ipv4Addr>, pinned: &[(MacAddr, Ipv4Addr)], table: LeaseTable) -> Self {
        let mut a = Allocator {
            pool: Vec::new(),
            pinned_by_mac: HashMap::new(),
            pinned_by_ip: HashMap::new(),
            ours: HashSet::new(),
            table,
            offers: HashMap::new(),
            offer_of: HashMap::new(),
            first_fresh: std::cell::Cell::new(0),
            booted: HashSet::new(),
        };
        a.set_plan(pool, pinned);
        a
    }

    /// Takes a new pool and new pins (a reload) while keeping the lease table, the booted MACs
    /// and the live offers that the new plan still allows: leases survive a rebuild.
    pub fn set_plan(&mut self, pool: Vec<Ipv4Addr>, pinned: &[(MacAddr, Ipv4Addr)]) {
        self.pinned_by_mac = pinned.iter().copied().collect();
        self.pinned_by_ip = pinned.iter().map(|&(m, ip)| (ip, m)).collect();
        self.ours = pool.iter().copied().collect();
        self.ours.extend(self.pinned_by_ip.keys().copied());
        // Pinned addresses never come from the pool, even if the pool range covers them.
        self.pool = pool.into_iter().filter(|ip| !self.pinned_by_ip.contains_key(ip)).collect();
        self.first_fresh.set(0);
        let (ours, by_ip, by_mac) = (&self.ours, &self.pinned_by_ip, &self.pinned_by_mac);
        self.offers.retain(|ip, (mac, _)| {
            ours.contains(ip)
                && by_ip.get(ip).is_none_or(|m| m == mac)
                && by_mac.get(mac).is_none_or(|p| p == ip)
        });
        let offers = &self.offers;
        self.offer_of.retain(|mac, ip| offers.get(ip).is_some_and(|(m, _)| m == mac));
    }

    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    pub fn is_ours(&self, ip: Ipv4Addr) -> bool {
        self.ours.contains(&ip)
    }

    /// The holder of `ip` fetched a boot file: its lease is a real node's.
    pub fn mark_booted_ip(&mut self, ip: Ipv4Addr) {
        if let Some(l) = self.table.get(ip) {
            let mac = l.mac;
            self.booted.insert(mac);
        }
    }

    /// `mac` fetched a boot file (e.g. recorded in the stage log before a restart).
    pub fn mark_booted(&mut self, mac: MacAddr) {
        self.booted.insert(mac);
    }

    pub fn is_pinned(&self, mac: MacAddr) -> bool {
        self.pinned_by_mac.contains_key(&mac)
    }

    /// A MAC this server has no record of (no lease, no pin, no live offer).
    pub fn is_new(&self, mac: MacAddr, now: u64) -> bool {
        !self.pinned_by_mac.contains_key(&mac)
            && self.table.of_mac(mac).is_none()
            && !self.offer_of.get(&mac).is_some_and(|ip| self.offered_to(*ip, mac, now))
    }

    /// Whether `mac` holds a live offer of `ip`.
    pub fn offered_to(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        self.offers.get(&ip).is_some_and(|&(m, until)| m == mac && until > now)
    }

    /// Whether `mac` may take `ip` in a REQUEST: we offered it, or it is (or was) its lease, or
    /// its pin. A REQUEST for any other free address is not an answer to anything we said.
    pub fn was_given(&self, mac: MacAddr, ip: Ipv4Addr, now: u64) -> bool {
        self.offered_to(ip, mac, now)
            || self.pinned_by_mac.get(&mac) == Some(&ip)
            || self.table.get(ip).is_some_and(|l| l.mac == mac)
    }

    /// A bound lease that may be taken over when the pool is dry.
    fn reclaimable(&self, l: &Lease, now: u64) -> bool {
        l.state == LeaseState::Bound
            && !self.booted.contains(&l.mac)
            && !self.pinned_by_mac.contains_key(&l.mac)
            && l.at + RECLAIM_GRACE_SECS <= now
    }

    /// Whether `ip` may be (or stay) `mac`'s at `now`.
    pub fn check(&self, mac: MacAddr, ip: Ipv4Addr, now: u64) -> Result<(), Refusal> {
        if !self.ours.contains(&ip) {
            return Err(Refusal::NotOurs);
        }
        if let Some(&owner) = self.pinned_by_ip.get(&ip)
            && owner != mac
        {
            return Err(Refusal::PinnedToOther);
        }
        if let Some(&pin) = self.pinned_by_mac.get(&mac)
            && pin != ip
        {
            return Err(Refusal::ClientIsPinnedElsewhere);
        }
        if let Some(l) = self.table.get(ip)
            && l.active_at(now)
        {
            if l.state == LeaseState::Declined {
                return Err(Refusal::Quarantined);
            }
            // An offer made by reclaiming (see `choose`) lets the new client take it over.
            if l.mac != mac && !(self.offered_to(ip, mac, now) && self.reclaimable(l, now)) {
                return Err(Refusal::HeldByOther(l.mac));
            }
        }
        if let Some(&(m, until)) = self.offers.get(&ip)
            && m != mac
            && until > now
        {
            return Err(Refusal::OfferedToOther);
        }
        Ok(())
    }

    /// The address to offer `mac`, if any is left.
    pub fn choose(&self, mac: MacAddr, now: u64) -> Option<Ipv4Addr> {
        if let Some(&pin) = self.pinned_by_mac.get(&mac) {
            return self.check(mac, pin, now).ok().map(|_| pin);
        }
        if let Some(prev) = self.table.of_mac(mac)
            && self.check(mac, prev.ip, now).is_ok()
        {
            return Some(prev.ip);
        }
        if let Some(&ip) = self.offer_of.get(&mac)
            && self.offers.get(&ip).is_some_and(|(m, until)| *m == mac && *until > now)
        {
            return Some(ip);
        }
        // Never-used addresses first, in pool order.
        let mut start = self.first_fresh.get();
        while start < self.pool.len() && self.table.get(self.pool[start]).is_some() {
            start += 1;
        }
        self.first_fresh.set(start);
        let fresh = self.pool[start..]
            .iter()
            .copied()
            .find(|&ip| self.table.get(ip).is_none() && self.check(mac, ip, now).is_ok());
        if fresh.is_some() {
            return fresh;
        }
        // Then the one whose lease ended longest ago.
        let expired = self
            .pool
            .iter()
            .copied()
            .filter(|&ip| self.check(mac, ip, now).is_ok())
            .min_by_key(|&ip| self.table.get(ip).map(|l| l.expires).unwrap_or(0));
        if expired.is_some() {
            return expired;
        }
        // Dry: the oldest lease of a MAC that never fetched a boot file.
        self.pool
            .iter()
            .filter_map(|&ip| self.table.get(ip).map(|l| (ip, l)))
            .filter(|(ip, l)| {
                l.active_at(now)
                    && self.reclaimable(l, now)
                    && !self.offers.get(ip).is_some_and(|&(m, until)| m != mac && until > now)
            })
            .min_by_key(|(_, l)| l.at)
            .map(|(ip, _)| ip)
    }

    /// The MAC that holds `ip` now, if `choose` picked it by reclaiming.
    pub fn reclaimed_from(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> Option<MacAddr> {
        self.table
            .get(ip)
            .filter(|l| l.mac != mac && l.active_at(now) && l.state == LeaseState::Bound)
            .map(|l| l.mac)
    }

    /// Holds `ip` for `mac` for [`OFFER_HOLD_SECS`].
    pub fn reserve(&mut self, mac: MacAddr, ip: Ipv4Addr, now: u64) {
        self.drop_offer(mac);
        if self.offers.len() > 4096 {
            self.offers.retain(|_, (_, until)| *until > now);
            self.offer_of.retain(|_, ip| self.offers.contains_key(ip));
        }
        self.offers.insert(ip, (mac, now + OFFER_HOLD_SECS));
        self.offer_of.insert(mac, ip);
    }

    /// The client chose another server (or took its lease): let the offer go.
    pub fn drop_offer(&mut self, mac: MacAddr) {
        if let Some(ip) = self.offer_of.remove(&mac)
            && self.offers.get(&ip).is_some_and(|(m, _)| *m == mac)
        {
            self.offers.remove(&ip);
        }
    }

    /// Records a new fact (ACK, release, decline) in memory; the caller persists it.
    pub fn record(&mut self, lease: Lease) {
        if lease.state == LeaseState::Bound {
            self.drop_offer(lease.mac);
        }
        self.table.apply(lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }
    fn bound(m: u8, i: u8, expires: u64) -> Lease {
        Lease { mac: mac(m), ip: ip(i), hostname: String::new(), expires, state: LeaseState::Bound, at: 0 }
    }

    #[test]
    fn dry_pool_reclaims_the_oldest_lease_of_a_mac_that_never_booted() {
        let mut t = LeaseTable::default();
        for (m, i, at) in [(1, 1, 100), (2, 2, 50), (3, 3, 10)] {
            t.apply(Lease { at, ..bound(m, i, 10_000) });
        }
        let mut a = Allocator::new((1..=3).map(ip).collect(), &[], t);
        a.mark_booted(mac(3));
        // Too young: nothing yet (ip 2's lease is 5 s old at 55).
        assert_eq!(a.choose(mac(9), 55), None);
        // ip 3 is the oldest but its MAC booted; ip 2 goes next.
        let now = 50 + RECLAIM_GRACE_SECS;
        assert_eq!(a.choose(mac(9), now), Some(ip(2)));
        assert_eq!(a.check(mac(9), ip(2), now), Err(Refusal::HeldByOther(mac(2))));
        a.reserve(mac(9), ip(2), now);
        assert_eq!(a.check(mac(9), ip(2), now), Ok(()));
        assert_eq!(a.reclaimed_from(ip(2), mac(9), now), Some(mac(2)));
        a.mark_booted_ip(ip(1));
        assert_eq!(a.choose(mac(8), now + 1), None, "ip 1 booted, ip 2 offered, ip 3 booted");
    }

    #[test]
    fn pinned_mac_gets_its_address_and_nobody_else_does() {
        let a = Allocator::new((1..=5).map(ip).collect(), &[(mac(9), ip(1))], LeaseTable::default());
        assert_eq!(a.choose(mac(9), 100), Some(ip(1)));
        assert_eq!(a.choose(mac(1), 100), Some(ip(2)));
        assert_eq!(a.check(mac(1), ip(1), 100), Err(Refusal::PinnedToOther));
        assert_eq!(a.check(mac(9), ip(2), 100), Err(Refusal::ClientIsPinnedElsewhere));
    }

    #[test]
    fn offers_are_distinct_and_lowest_first() {
        let mut a = Allocator::new((1..=5).map(ip).collect(), &[], LeaseTable::default());
        let mut got = Vec::new();
        for m in 1..=5 {
            let i = a.choose(mac(m), 100).unwrap();
            a.reserve(mac(m), i, 100);
            got.push(i);
        }
        assert_eq!(got, (1..=5).map(ip).collect::<Vec<_>>());
        assert_eq!(a.choose(mac(6), 100), None);
        // Offers lapse.
        assert_eq!(a.choose(mac(6), 100 + OFFER_HOLD_SECS + 1), Some(ip(1)));
    }

    #[test]
    fn previous_address_even_expired_then_fresh_then_oldest_expired() {
        let mut t = LeaseTable::default();
        t.apply(bound(1, 3, 50)); // expired at 100
        t.apply(bound(2, 1, 80)); // expired, older... no: newer than 50
        let a = Allocator::new((1..=4).map(ip).collect(), &[], t.clone());
        assert_eq!(a.choose(mac(1), 100), Some(ip(3)));
        assert_eq!(a.choose(mac(7), 100), Some(ip(2)));
        let mut t2 = t;
        t2.apply(bound(3, 2, 500));
        t2.apply(bound(4, 4, 500));
        let a = Allocator::new((1..=4).map(ip).collect(), &[], t2);
        // Nothing fresh left: the oldest expiry (ip 3, expired at 50) goes first.
        assert_eq!(a.choose(mac(7), 100), Some(ip(3)));
    }
}

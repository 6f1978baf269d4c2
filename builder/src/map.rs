//! The openMosix cluster map: `FIRST_ID ADDRESS COUNT` lines compacted from the plan.

use std::net::Ipv4Addr;

/// One map line: nodes `first..first+count` at consecutive addresses from `ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MapLine {
    pub first: u32,
    pub ip: Ipv4Addr,
    pub count: u32,
}

/// The openMosix limit on entry lines.
pub const MAX_LINES: usize = 256;
/// The largest node ID openMosix accepts.
pub const MAX_NODE_ID: u32 = 65535;

/// Collapses (node, ip) pairs, sorted by node number, into map lines: a line grows while both the
/// node number and the address go up by one and the address stays within the same /24 (COUNT
/// counts the last byte upward, so a line can never run past .255).
pub fn compact(nodes: &[(u32, Ipv4Addr)]) -> Vec<MapLine> {
    let mut lines: Vec<MapLine> = Vec::new();
    for &(node, ip) in nodes {
        if let Some(last) = lines.last_mut() {
            let next_node = last.first + last.count;
            let next_ip = u32::from(last.ip) + last.count;
            let same_24 = u32::from(last.ip) >> 8 == u32::from(ip) >> 8;
            if node == next_node && u32::from(ip) == next_ip && same_24 {
                last.count += 1;
                continue;
            }
        }
        lines.push(MapLine { first: node, ip, count: 1 });
    }
    lines
}

/// Expands map lines back into (node, ip) pairs: what openMosix reads from the file.
pub fn expand(lines: &[MapLine]) -> Vec<(u32, Ipv4Addr)> {
    lines
        .iter()
        .flat_map(|l| (0..l.count).map(move |i| (l.first + i, Ipv4Addr::from(u32::from(l.ip) + i))))
        .collect()
}

/// The file's bytes: one line each, no comments (some tool versions choke on them).
pub fn text(lines: &[MapLine]) -> String {
    lines.iter().map(|l| format!("{} {} {}\n", l.first, l.ip, l.count)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test ip")
    }

    #[test]
    fn ltsp_example_is_two_lines() {
        let mut nodes = vec![(1, ip("192.168.0.254"))];
        for i in 1..=253u32 {
            nodes.push((i + 1, Ipv4Addr::new(192, 168, 0, i as u8)));
        }
        assert_eq!(text(&compact(&nodes)), "1 192.168.0.254 1\n2 192.168.0.1 253\n");
    }

    #[test]
    fn lines_never_cross_255() {
        let nodes: Vec<(u32, Ipv4Addr)> =
            (0..10u32).map(|i| (i + 2, Ipv4Addr::from(u32::from(ip("10.0.0.250")) + i))).collect();
        let lines = compact(&nodes);
        assert_eq!(text(&lines), "2 10.0.0.250 6\n8 10.0.1.0 4\n");
    }

    #[test]
    fn gaps_split_lines() {
        let nodes = vec![(1, ip("10.0.0.1")), (2, ip("10.0.0.2")), (3, ip("10.0.0.9")), (4, ip("10.0.0.10"))];
        assert_eq!(text(&compact(&nodes)), "1 10.0.0.1 2\n3 10.0.0.9 2\n");
    }

    proptest! {
        /// Expanding the written map gives back exactly the plan, for any set of addresses.
        #[test]
        fn expand_inverts_compact(mut addrs in proptest::collection::btree_set(0u32..4096, 1..300)) {
            let base = u32::from(ip("10.20.0.0"));
            let server = base + 5000;
            addrs.remove(&5000);
            let mut nodes = vec![(1u32, Ipv4Addr::from(server))];
            nodes.extend(addrs.iter().enumerate().map(|(i, a)| (i as u32 + 2, Ipv4Addr::from(base + a))));
            let lines = compact(&nodes);
            prop_assert_eq!(expand(&lines), nodes);
            for l in &lines {
                prop_assert!(u32::from(l.ip) % 256 + l.count <= 256);
            }
        }
    }
}

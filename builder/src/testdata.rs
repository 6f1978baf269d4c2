//! Inputs the unit tests share: the SPEC's LTSP sample config (tests/fixtures/cluster.toml) and stand-ins for a kernel and a
//! busybox (the build reads only their headers).

use std::path::Path;

use crate::config::Config;
use crate::plan::Plan;

/// The SPEC's LTSP sample: a /24 with 253 pool addresses named ws001..ws253. The one sample
/// file the integration tests, README checks, demo and bench start from too.
pub const SAMPLE: &str = include_str!("../../tests/fixtures/cluster.toml");

/// The pinned node the samples add: a P/133 with its own name.
pub const PINNED_NODE: &str = r#"
[[node]]
mac = "00:0c:29:aa:bb:01"
ip = "192.168.0.101"
hostname = "mosix1"
yardstick = "P/133"
"#;

/// Config and plan of a valid config text, read as `/lab/cluster.toml`.
pub fn load(text: &str) -> (Config, Plan) {
    let cfg = Config::parse(text, Path::new("/lab/cluster.toml")).expect("valid config");
    let plan = Plan::new(&cfg).expect("valid plan");
    (cfg, plan)
}

/// A file that passes as a bzImage of `release`: boot-sector signature, setup header magic,
/// protocol 2.15 and the version string the header points at.
pub fn synthetic_kernel(release: &str) -> Vec<u8> {
    let mut k = vec![0u8; 0x2000];
    k[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    k[0x20e..0x210].copy_from_slice(&0x0400u16.to_le_bytes());
    let s = format!("{release} (builder@lab) #1\0");
    k[0x600..0x600 + s.len()].copy_from_slice(s.as_bytes());
    k
}

/// The header of a static ELF executable for `machine` (3 = i386, 62 = x86-64), one PT_LOAD.
pub fn synthetic_elf(machine: u16) -> Vec<u8> {
    let mut e = vec![0u8; 52 + 32];
    e[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
    e[16..18].copy_from_slice(&2u16.to_le_bytes());
    e[18..20].copy_from_slice(&machine.to_le_bytes());
    e[28..32].copy_from_slice(&52u32.to_le_bytes());
    e[42..44].copy_from_slice(&32u16.to_le_bytes());
    e[44..46].copy_from_slice(&1u16.to_le_bytes());
    e[52..56].copy_from_slice(&1u32.to_le_bytes());
    e
}

//! Lease log tests: crash shapes (torn tail, damaged middle, kill -9 at every byte) and group commit.

use std::net::Ipv4Addr;
use std::path::Path;

use super::*;
use crate::mac::MacAddr;

fn lease(n: u8, state: LeaseState) -> Lease {
    Lease {
        mac: MacAddr([0x52, 0x54, 0, 0, 0, n]),
        ip: Ipv4Addr::new(10, 9, 0, n),
        hostname: format!("ws{n:03}"),
        expires: 2_000_000_000,
        state,
        at: 1_700_000_000,
    }
}

fn write_log(path: &Path, leases: &[Lease]) -> Vec<u8> {
    let mut text = String::new();
    for l in leases {
        text.push_str(&l.to_line());
    }
    std::fs::write(path, &text).unwrap();
    text.into_bytes()
}

#[test]
fn torn_last_record_is_a_warning_and_others_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let leases: Vec<Lease> = (1..=5).map(|n| lease(n, LeaseState::Bound)).collect();
    let data = write_log(&path, &leases);
    std::fs::write(&path, &data[..data.len() - 20]).unwrap();
    let (_store, table, warnings) = LeaseStore::open(&path).unwrap();
    assert_eq!(table.len(), 4);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("torn"), "{warnings:?}");
    // The torn tail is gone from the file, so the next append starts on a clean line.
    let (all, w2) = read_leases(&path).unwrap();
    assert_eq!(all.len(), 4);
    assert!(w2.is_empty(), "{w2:?}");
}

#[test]
fn bad_crc_in_the_middle_skips_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let leases: Vec<Lease> = (1..=5).map(|n| lease(n, LeaseState::Bound)).collect();
    let text = String::from_utf8(write_log(&path, &leases)).unwrap();
    let damaged = text.replacen("host=ws003", "host=ws00X", 1);
    std::fs::write(&path, damaged).unwrap();
    let (all, warnings) = read_leases(&path).unwrap();
    assert_eq!(all.len(), 4);
    assert!(warnings[0].contains(":3:") && warnings[0].contains("crc32"), "{warnings:?}");
    let (_s, table, w) = LeaseStore::open(&path).unwrap();
    assert_eq!(table.len(), 4);
    assert_eq!(w.len(), 1);
    assert!(table.get(Ipv4Addr::new(10, 9, 0, 3)).is_none());
    assert!(table.get(Ipv4Addr::new(10, 9, 0, 5)).is_some());
}

#[test]
fn kill_at_every_byte_of_the_last_record_always_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let leases: Vec<Lease> = (1..=4).map(|n| lease(n, LeaseState::Bound)).collect();
    let data = write_log(&path, &leases);
    let last_start = data.len() - leases[3].to_line().len();
    for cut in last_start..=data.len() {
        std::fs::write(&path, &data[..cut]).unwrap();
        let (_store, table, warnings) = LeaseStore::open(&path).unwrap();
        for l in &leases[..3] {
            assert_eq!(table.get(l.ip), Some(l), "cut at {cut}");
        }
        let complete = cut >= data.len() - 1; // all but the newline is a whole record
        assert_eq!(table.get(leases[3].ip).is_some(), complete, "cut at {cut}");
        assert_eq!(warnings.is_empty(), complete || cut == last_start, "cut at {cut}: {warnings:?}");
        // Whatever was cut, the file is appendable and clean afterwards.
        let (_, w2) = read_leases(&path).unwrap();
        assert!(w2.is_empty(), "cut at {cut}: {w2:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_persists_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let (store, table, warnings) = LeaseStore::open(&path).unwrap();
    assert!(table.is_empty() && warnings.is_empty());
    let mut tasks = Vec::new();
    for n in 1..=200u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.commit(&lease(n, LeaseState::Bound)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (all, w) = read_leases(&path).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(all.len(), 200);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# mosboot lease log"));
}

#[test]
fn grown_log_is_compacted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let mut leases = Vec::new();
    for i in 0..1000u32 {
        let mut l = lease((i % 3) as u8 + 1, LeaseState::Bound);
        l.at = i as u64;
        leases.push(l);
    }
    write_log(&path, &leases);
    let before = std::fs::metadata(&path).unwrap().len();
    let (_s, table, _) = LeaseStore::open(&path).unwrap();
    assert_eq!(table.len(), 3);
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < before / 100, "{before} -> {after}");
    let (all, _) = read_leases(&path).unwrap();
    assert_eq!(all.iter().map(|l| l.at).max(), Some(999));
}

#[test]
fn missing_file_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let (all, w) = read_leases(&dir.path().join("nope")).unwrap();
    assert!(all.is_empty() && w.is_empty());
}

#[test]
fn complete_journal_is_the_truth_after_a_crash_mid_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    // Crash shape: the journal holds a complete snapshot, the log was cut half-way.
    let leases: Vec<Lease> = (1..=3).map(|n| lease(n, LeaseState::Bound)).collect();
    let mut snap = String::new();
    for l in &leases {
        snap.push_str(&l.to_line());
    }
    std::fs::write(dir.path().join("leases.tmp"), format!("{snap}# end of snapshot\n")).unwrap();
    std::fs::write(&path, &snap[..10]).unwrap();
    let (_s, table, warnings) = LeaseStore::open(&path).unwrap();
    assert_eq!(table.len(), 3, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("interrupted compaction")), "{warnings:?}");
    assert_eq!(std::fs::read(dir.path().join("leases.tmp")).unwrap(), b"");
    let (again, w) = read_leases(&path).unwrap();
    assert_eq!((again.len(), w.len()), (3, 0));
    // An incomplete journal (crash while writing it) is ignored: the log is intact.
    std::fs::write(dir.path().join("leases.tmp"), &snap[..20]).unwrap();
    let (_s, table, _) = LeaseStore::open(&path).unwrap();
    assert_eq!(table.len(), 3);
}

#[test]
fn planted_symlink_is_refused_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let path = dir.path().join("leases");
    std::os::unix::fs::symlink(&victim, dir.path().join("leases.tmp")).unwrap();
    let err = LeaseStore::open(&path).err().expect("refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
}

#[tokio::test]
async fn log_is_compacted_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let (store, _, _) = LeaseStore::open(&path).unwrap();
    for i in 0..2000u32 {
        let mut l = lease((i % 4) as u8, LeaseState::Bound);
        l.at = 1_700_000_000 + u64::from(i);
        store.commit(&l).await.unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.lines().count() < 600, "{} lines", text.lines().count());
    let (all, w) = read_leases(&path).unwrap();
    assert_eq!((all.len(), w.len()), (4, 0));
    assert!(all.iter().any(|l| l.at == 1_700_000_000 + 1999));
}

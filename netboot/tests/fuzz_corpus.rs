//! The fuzz corpus (fuzz/corpus, kept in the repo) replayed through the fuzz targets' entry
//! points: the seconds-long smoke of `make fuzz` that runs in `make test`.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus {}", dir.display());
}

#[test]
fn dhcp_corpus() {
    replay("dhcp", netboot::fuzzing::dhcp);
}

#[test]
fn tftp_corpus() {
    replay("tftp", netboot::fuzzing::tftp);
}

#[test]
fn lease_log_corpus() {
    replay("lease_log", netboot::fuzzing::lease_log);
}

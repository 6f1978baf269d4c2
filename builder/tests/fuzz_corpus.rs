//! The `config` fuzz corpus (fuzz/corpus/config) replayed through the target's entry point:
//! the seconds-long smoke of `make fuzz` that runs in `make test`.

#[test]
fn config_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        mosboot::fuzzing::config(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0, "empty corpus");
}

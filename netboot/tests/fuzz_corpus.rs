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

#[test]
fn http_corpus() {
    replay("http", netboot::fuzzing::http);
}

/// The HTTP target reaches the real answers (a target that only ever sees refusals would fuzz
/// nothing): a GET is answered with the file, a link out of the root is refused.
#[test]
fn http_target_answers_like_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("vmlinuz"), b"kernel bytes").unwrap();
    std::fs::write(dir.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), root.join("out")).unwrap();
    let cfg = netboot::http::HttpConfig { root, ..netboot::http::HttpConfig::default() };
    let server = netboot::http::InMemory::new(cfg).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let out =
        rt.block_on(server.exchange(b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\n\r\nGET /out HTTP/1.1\r\n\r\n"));
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("kernel bytes"), "{text}");
    assert!(text.contains("HTTP/1.1 403 Forbidden") && !text.contains("outside"), "{text}");
}

/// An input that ends inside a request head ends the exchange at once (the fuzz target must
/// not sit out the 10 s header timeout).
#[test]
fn http_target_does_not_wait_for_a_truncated_head() {
    let t = std::time::Instant::now();
    netboot::fuzzing::http(b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\nX-a: b\r\n");
    netboot::fuzzing::http(b"GET /vmlinuz HTTP/1.1\r\nHost: x\r\n\r\nGET /vml");
    assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
}

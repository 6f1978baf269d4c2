//! Entry point of the `config` fuzz target in `fuzz/` (and of the corpus replay test in
//! `make test`): any bytes give a config and an address plan, or diagnostics; never a panic.

use std::path::Path;

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cfg) = crate::config::Config::parse(text, Path::new("/nonexistent/cluster.toml")) {
        // The plan renders every hostname and checks the pool: the rest of the untrusted path.
        let _ = crate::plan::Plan::new(&cfg);
    }
}

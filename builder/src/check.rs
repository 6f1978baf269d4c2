//! `mosboot check`: every problem with the config and its inputs, at once.

use std::path::Path;

use crate::config::Config;
use crate::diag::Diagnostics;
use crate::pipeline::{self, BuildOptions, Prepared};
use crate::plan::Plan;

/// Loads the config, plans, and prepares the whole build in memory. Returns the config, plan and
/// prepared build, or every problem found.
pub fn full(path: &Path, opts: &BuildOptions) -> Result<(Config, Plan, Prepared), Diagnostics> {
    let cfg = Config::load(path)?;
    let plan = match Plan::new(&cfg) {
        Ok(p) => p,
        Err(mut d) => {
            // The plan failed, but the inputs can still be checked on their own.
            d.extend(inputs_only(&cfg, opts));
            return Err(d.sorted());
        }
    };
    match pipeline::prepare(&cfg, &plan, opts) {
        Ok(prep) => Ok((cfg, plan, prep)),
        Err(d) => Err(d.sorted()),
    }
}

/// Checks the inputs that do not need a plan (kernel, busybox, tarballs, overlay, templates),
/// scanning tarballs for entries that escape the node root.
pub fn inputs_only(cfg: &Config, opts: &BuildOptions) -> Diagnostics {
    let mut d = Diagnostics::default();
    let inputs = pipeline::read_inputs(cfg, opts, &mut d);
    for (name, bytes) in &inputs.tarballs {
        let mut scratch = node_image::tree::Tree::new();
        if let Err(e) = scratch.import_tar(bytes.as_slice(), name) {
            d.push(Path::new(name), 0, "image", e.to_string());
        }
    }
    d
}

//! `mosboot check`: every problem with the config and its inputs, at once.

use std::path::Path;

use crate::config::Config;
use crate::diag::Diagnostics;
use crate::pipeline::{self, BuildOptions, Prepared};
use crate::plan::Plan;

/// Loads the config, plans, and prepares the whole build in memory. Returns the config, plan and
/// prepared build, or every problem found.
///
/// A config with problems (an unknown key, say) is still planned and its inputs still read
/// whenever its sections could be built, so one mistake does not hide the others.
pub fn full(path: &Path, opts: &BuildOptions) -> Result<(Config, Plan, Prepared), Diagnostics> {
    let parsed = Config::read(path);
    let (cfg, mut problems) = match parsed.config {
        Some(cfg) => (cfg, parsed.problems),
        None => return Err(parsed.problems.sorted()),
    };
    match Plan::new(&cfg) {
        Ok(plan) => match pipeline::prepare(&cfg, &plan, opts) {
            Ok(prep) if problems.is_empty() => return Ok((cfg, plan, prep)),
            Ok(_) => {}
            Err(d) => problems.extend(d),
        },
        Err(d) => {
            // The plan failed, but the inputs can still be checked on their own.
            problems.extend(d);
            problems.extend(inputs_only(&cfg, opts));
        }
    }
    Err(problems.sorted())
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

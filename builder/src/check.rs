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

/// Checks the inputs that do not need a plan: kernel, busybox, tarballs, overlay, templates.
pub fn inputs_only(cfg: &Config, opts: &BuildOptions) -> Diagnostics {
    let mut d = Diagnostics::default();
    let img = &cfg.image;
    let read = |key: &str, p: &Path, d: &mut Diagnostics| -> Option<Vec<u8>> {
        match std::fs::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                d.push(&cfg.path, cfg.line_of(key), key, format!("{}: {e}", p.display()));
                None
            }
        }
    };
    if let Some(k) = read("image.kernel", &img.kernel, &mut d)
        && let Err(e) = node_image::bzimage::inspect(&k)
    {
        d.push(
            &cfg.path,
            cfg.line_of("image.kernel"),
            "image.kernel",
            format!("{}: {e}", img.kernel.display()),
        );
    }
    if let Some(b) = read("image.busybox", &img.busybox, &mut d)
        && let Err(e) = node_image::elf::check_static_i386_named("busybox", &b)
    {
        d.push(
            &cfg.path,
            cfg.line_of("image.busybox"),
            "image.busybox",
            format!("{}: {e}", img.busybox.display()),
        );
    }
    let tars = img
        .modules
        .iter()
        .map(|m| ("image.modules", m))
        .chain(img.userland.iter().map(|u| ("image.userland", u)));
    for (key, p) in tars {
        if let Some(b) = read(key, p, &mut d) {
            let mut scratch = node_image::tree::Tree::new();
            if let Err(e) = scratch.import_tar(b.as_slice(), &p.display().to_string()) {
                d.push(&cfg.path, cfg.line_of(key), key, e.to_string());
            }
        }
    }
    if let Some(o) = &img.overlay
        && !o.is_dir()
    {
        d.push(
            &cfg.path,
            cfg.line_of("image.overlay"),
            "image.overlay",
            format!("{} is not a folder", o.display()),
        );
    }
    let tpl = opts.templates.clone().or_else(|| img.templates.clone());
    if let Err(e) = crate::render::Templates::load(tpl.as_deref(), &cfg.path, cfg.line_of("image.templates"))
    {
        d.extend(e);
    }
    d
}

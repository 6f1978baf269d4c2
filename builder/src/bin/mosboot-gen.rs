//! `mosboot-gen DIR`: the files the package ships that are derived from the program itself —
//! a man page per command and shell completions from the clap definitions in `cli.rs`, and the
//! example `/etc/mosboot/lab.toml` from `mosboot init`'s template — so none of them is written
//! by hand and none can drift from the binary. Run at package time (packaging/deb/build.sh).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> Result<()> {
    let out = std::env::args_os().nth(1).map(PathBuf::from).context("usage: mosboot-gen DIR")?;
    for (path, bytes) in files()? {
        let dest = out.join(&path);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(&dest, bytes).with_context(|| format!("write {}", dest.display()))?;
    }
    Ok(())
}

/// Every generated file as (path relative to the output folder, contents).
fn files() -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut cmd = mosboot::cli::Cli::command();
    cmd.build();
    let mut files = Vec::new();
    man_pages(&cmd, &mut files)?;
    for (shell, name) in
        [(Shell::Bash, "mosboot.bash"), (Shell::Zsh, "_mosboot"), (Shell::Fish, "mosboot.fish")]
    {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "mosboot", &mut buf);
        files.push((Path::new("completions").join(name), buf));
    }
    let example = mosboot::init::IfAddr {
        name: "eth1".into(),
        addr: std::net::Ipv4Addr::new(192, 168, 0, 254),
        prefix: 24,
    };
    let text = mosboot::init::config_text(&example, &mosboot::init::Layout::installed("lab"));
    files.push((PathBuf::from("lab.toml"), text.into_bytes()));
    Ok(files)
}

/// `man/<name>.1` for `cmd` and each visible subcommand; after `Command::build` clap names a
/// subcommand `mosboot-init` (display name) and `mosboot init` (usage), as man pages want.
fn man_pages(cmd: &clap::Command, files: &mut Vec<(PathBuf, Vec<u8>)>) -> Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_string();
    let mut buf = Vec::new();
    // One footer for every page (a subcommand has no version of its own).
    let source = format!("mosboot {}", env!("CARGO_PKG_VERSION"));
    clap_mangen::Man::new(cmd.clone())
        .source(source)
        .manual("mosboot manual")
        .render(&mut buf)
        .with_context(|| format!("render {name}.1"))?;
    files.push((Path::new("man").join(format!("{name}.1")), buf));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        man_pages(sub, files)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command of the CLI has a man page and appears in every completion script.
    #[test]
    fn a_man_page_per_command_and_completions_that_know_them() {
        let files = files().expect("generate");
        let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        let cmd = mosboot::cli::Cli::command();
        assert!(names.contains(&"man/mosboot.1".to_string()), "{names:?}");
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let page = format!("man/mosboot-{}.1", sub.get_name());
            assert!(names.contains(&page), "no {page} in {names:?}");
            for (path, bytes) in files.iter().filter(|(p, _)| p.starts_with("completions")) {
                let text = String::from_utf8_lossy(bytes);
                assert!(text.contains(sub.get_name()), "{} lacks {}", path.display(), sub.get_name());
            }
        }
        let (_, serve) = files.iter().find(|(p, _)| p.ends_with("mosboot-serve.1")).expect("serve page");
        assert!(String::from_utf8_lossy(serve).contains("\\-\\-state"), "serve page documents --state");
    }
}

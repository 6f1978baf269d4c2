//! The `mosboot` command: argument parsing and exit codes; the work is in the library.

use clap::Parser;

fn main() {
    let cli = mosboot::cli::Cli::parse();
    // serve is a foreground daemon whose log *is* its output: boot stages show without -v.
    let daemon = matches!(cli.command, mosboot::cli::Command::Serve(_));
    let verbose = if daemon { cli.verbose.max(1) } else { cli.verbose };
    mosboot::cli::init_logging(verbose, daemon);
    let result = mosboot::cli::run(cli);
    mosboot::cli::flush_logs();
    match result {
        Ok(()) => {}
        Err(e) => {
            eprintln!("{}", render(&e));
            std::process::exit(e.exit_code());
        }
    }
}

fn render(e: &mosboot::error::Failure) -> String {
    match e {
        mosboot::error::Failure::Invalid(_) => e.to_string(),
        _ => format!("error: {e}"),
    }
}

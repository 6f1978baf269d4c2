//! The `mosboot` command: argument parsing and exit codes; the work is in the library.

use clap::Parser;

fn main() {
    let cli = mosboot::cli::Cli::parse();
    // serve is a foreground daemon whose log *is* its output: boot stages show without -v.
    let verbose = match cli.command {
        mosboot::cli::Command::Serve(_) => cli.verbose.max(1),
        _ => cli.verbose,
    };
    mosboot::cli::init_logging(verbose);
    match mosboot::cli::run(cli) {
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

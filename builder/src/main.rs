//! The `mosboot` command: argument parsing and exit codes; the work is in the library.

use clap::Parser;

fn main() {
    let cli = mosboot::cli::Cli::parse();
    mosboot::cli::init_logging(cli.verbose);
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

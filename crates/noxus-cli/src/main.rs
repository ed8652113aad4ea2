//! `noxus`: run the Noxus platform and work with it from a terminal.

mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Noxus: workspace-scoped API keys for the Noxus AI platform.
#[derive(Debug, Parser)]
#[command(name = "noxus", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform (API and dashboard) on its embedded SQLite database.
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! `conveyor`: parse the configuration, set up logging, run the chosen mode.

use clap::Parser;
use conveyor::config::{Cli, Command};
use conveyor::{bench, embedded, server, shutdown, telemetry};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    telemetry::init();
    let common = &cli.common;
    let result = match cli.command.unwrap_or(Command::Embedded) {
        Command::Embedded => embedded::run(common, shutdown::on_signal()).await,
        Command::Gateway(args) => server::run_gateway(common, &args, shutdown::on_signal()).await,
        Command::WriteSide(args) => server::run_write_side(common, &args, shutdown::on_signal()).await,
        Command::ReadSide(args) => server::run_read_side(common, &args, shutdown::on_signal()).await,
        Command::All(args) => server::run_all(common, &args, shutdown::on_signal()).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Schema => {
            print!("{}", gateway::sdl());
            Ok(())
        }
    };
    if let Err(error) = result {
        // One clear line; the cause chain on the same line.
        eprintln!("conveyor: {error:#}");
        std::process::exit(1);
    }
}

//! `conveyor`: parse the configuration, set up logging, run the chosen mode.

use clap::Parser;
use conveyor::config::{Cli, Command};
use conveyor::{bench, embedded, server, shutdown, telemetry};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    telemetry::init();
    let result = match cli.command.unwrap_or(Command::Embedded) {
        Command::Bench(args) => bench::run(args).await,
        command => {
            let stop = shutdown::on_signal();
            match command {
                Command::Embedded | Command::Bench(_) => embedded::run(&cli.common, stop).await,
                Command::Gateway(args) => server::run_gateway(&cli.common, &args, stop).await,
                Command::WriteSide(args) => server::run_write_side(&cli.common, &args, stop).await,
                Command::ReadSide(args) => server::run_read_side(&cli.common, &args, stop).await,
                Command::All(args) => server::run_all(&cli.common, &args, stop).await,
            }
        }
    };
    if let Err(error) = result {
        // One clear line; the cause chain on the same line.
        eprintln!("conveyor: {error:#}");
        std::process::exit(1);
    }
}

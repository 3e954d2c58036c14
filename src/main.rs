//! `conveyor`: parse the configuration, set up logging, run the chosen mode.

use clap::Parser;
use conveyor::config::{Cli, Command, Common, TokenArgs, TokenRole};
use conveyor::{bench, embedded, migrate, projection, server, shutdown, telemetry};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let traced = |service, messaging_system| Some(telemetry::Traced { service, messaging_system });
    let traced = match &cli.command {
        None | Some(Command::Embedded) => traced("conveyor", "conveyor"),
        Some(Command::Gateway(_)) => traced("conveyor-gateway", "nats"),
        Some(Command::WriteSide(_)) => traced("conveyor-write-side", "nats"),
        Some(Command::ReadSide(_)) => traced("conveyor-read-side", "nats"),
        Some(Command::All(_)) => traced("conveyor-all", "nats"),
        Some(_) => None,
    };
    let _traces = match telemetry::init_with(cli.common.log_format, traced) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("conveyor: {error:#}");
            std::process::exit(1);
        }
    };
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
        Command::Token(args) => token(common, &args),
        Command::Migrate(args) => migrate::run(&args).await,
        Command::Projection(args) => projection::run(&args, common).await,
        Command::Dlq(args) => conveyor::dlq::run(common, &args).await,
    };
    if let Err(error) = result {
        // One clear line; the cause chain on the same line.
        eprintln!("conveyor: {error:#}");
        std::process::exit(1);
    }
}

/// `conveyor token`: signs a token with the configured HS256 secret.
fn token(common: &Common, args: &TokenArgs) -> anyhow::Result<()> {
    let secret = common
        .jwt_secret
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("set --jwt-secret (or CONVEYOR_JWT_SECRET) to sign tokens"))?;
    let (role, default_sub) = match args.role {
        TokenRole::Customer => (gateway::Role::Customer, None),
        TokenRole::Admin => (gateway::Role::Admin, Some("admin")),
        TokenRole::Service => (gateway::Role::Service, Some("service")),
    };
    let sub = args
        .sub
        .as_deref()
        .or(default_sub)
        .ok_or_else(|| anyhow::anyhow!("--sub <customer id> is required for a customer token"))?;
    let expires = std::time::SystemTime::now() + args.ttl;
    println!("{}", gateway::auth::issue_with(secret.as_bytes(), role, sub, expires, &common.token_claims())?);
    Ok(())
}

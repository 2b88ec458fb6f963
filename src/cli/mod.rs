//! Subcommands. `serve` runs the service; the others are gRPC clients.

mod alerts;
mod bench;
mod demo;
mod score;
mod send;
mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use gapwatch::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "gapwatch",
    version,
    about = "Real-time satisfaction, loyalty and service-gap scoring"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the service (embedded sled in --data-dir).
    Serve(ServeArgs),
    /// Streams JSON-lines events (a file or stdin) and prints a summary.
    Send(send::SendArgs),
    /// Prints the scores of a customer or a scope.
    Score(score::ScoreArgs),
    /// Sends a realistic synthetic workload, shows its alerts live and
    /// prints the scores.
    Demo(demo::DemoArgs),
    /// Lists, follows (--follow) or acknowledges (ack ID) alerts.
    Alerts(alerts::AlertsArgs),
    /// Measures ingest throughput, ack and alert latency, memory, disk per
    /// customer and restart time against the transport ceiling (see
    /// docs/PERFORMANCE.md).
    Bench(bench::BenchArgs),
    /// The transport ceiling `bench` compares against: decodes and acks.
    #[command(hide = true)]
    BenchCeilingServer(bench::ceiling::CeilingArgs),
}

/// The server a client subcommand talks to.
#[derive(clap::Args)]
pub struct ServerArg {
    /// gapwatch gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "GAPWATCH_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
}

impl ServerArg {
    pub fn endpoint(&self) -> anyhow::Result<tonic::transport::Endpoint> {
        tonic::transport::Endpoint::from_shared(self.server.clone())
            .map_err(|e| anyhow::anyhow!("bad --server {}: {e}", self.server))
    }

    pub async fn connect(&self) -> anyhow::Result<tonic::transport::Channel> {
        self.endpoint()?
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach gapwatch at {}: {e}", self.server))
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// sled data directory [default: ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML config file (then GAPWATCH__SECTION__KEY variables apply).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Send(args) => send::run(args).await,
        Command::Score(args) => score::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Alerts(args) => alerts::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::BenchCeilingServer(args) => bench::ceiling::serve(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.storage.data_dir = dir;
    }
    if args.log_json {
        config.log.format = LogFormat::Json;
    }
    let telemetry = gapwatch::telemetry::init(&config.log)?;
    let served = async {
        let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
        // A stable line on stdout, printed once the data dir is open: scripts
        // and tests started with port 0 read the bound address from it.
        let ready = |bound: &gapwatch::Bound| {
            println!("gapwatch listening on {}", bound.grpc);
            if let Some(health) = bound.health {
                println!("gapwatch health on {health}");
            }
            if let Some(admin) = bound.admin {
                println!("gapwatch admin on {admin}");
            }
        };
        let telemetry = telemetry.clone();
        gapwatch::run_with_telemetry(config, listener, shutdown_signal(), ready, telemetry).await
    }
    .await;
    // Exports what is still buffered, on success and on error alike.
    telemetry.shutdown().await;
    served?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

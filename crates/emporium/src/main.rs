//! `emporium`: the one binary. `up` (the default) runs the whole platform in one process; `serve
//! <service>` and `gateway` run one part each, for the distributed mode; `migrate` prepares the
//! databases.

mod bench;
mod dashboard;
mod load;
mod openapi;
mod operations;
mod platform;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use emporium_platform::{
    config::{Config, Sources},
    telemetry,
};

/// See `mimalloc` in the workspace's Cargo.toml for why not the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "emporium",
    version,
    about = "An event-driven e-commerce backend"
)]
struct Cli {
    #[command(flatten)]
    config: ConfigFlags,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Where configuration comes from; each flag overrides its `EMPORIUM_*` variable.
#[derive(Args, Clone, Default)]
struct ConfigFlags {
    /// Profile file to layer over the defaults: embedded, distributed or test.
    #[arg(long, global = true)]
    profile: Option<String>,
    /// An extra TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Gateway address (EMPORIUM_LISTEN); port 0 picks a free port.
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Data directory (EMPORIUM_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log filter (EMPORIUM_LOG).
    #[arg(long, global = true)]
    log: Option<String>,
}

impl ConfigFlags {
    fn load(&self) -> anyhow::Result<Config> {
        let mut overrides = Vec::new();
        if let Some(listen) = &self.listen {
            overrides.push(("listen".to_owned(), listen.clone()));
        }
        if let Some(dir) = &self.data_dir {
            overrides.push(("data_dir".to_owned(), dir.display().to_string()));
        }
        if let Some(log) = &self.log {
            overrides.push(("log".to_owned(), log.clone()));
        }
        Ok(Config::load(&Sources {
            profile: self.profile.clone(),
            file: self.config.clone(),
            overrides,
        })?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process (the default).
    Up,
    /// Run one service as its own process: its `/api` routes, consumers, relay, `/health`, `/metrics`.
    Serve {
        /// users, catalog, inventory, orders, payments, shipping, notifications, recommendations,
        /// promotions or operations.
        service: String,
    },
    /// Run the gateway alone, in front of services running as their own processes
    /// (their addresses are `[gateway.services]` in the configuration).
    Gateway,
    /// Create or update the databases' schemas, then exit.
    Migrate {
        /// Only this service's database (default: every one).
        #[arg(long)]
        service: Option<String>,
    },
    /// List, replay or delete dead letters (with the platform stopped: it owns the data directory).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Measure the embedded event log against the raw SQLite insert rate.
    BenchBus(bench::BusArgs),
    /// Place orders against a running platform over HTTP; report throughput, latency and invariants.
    Load(load::LoadArgs),
}

#[derive(Subcommand)]
enum DlqAction {
    /// Print dead letters as JSON lines, pending first.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish a dead letter's original event to its topic again.
    Replay { id: String },
    /// Forget a dead letter.
    Delete { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("emporium: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emporium: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = cli.config.load()?;
    telemetry::init_logging(&config.log).map_err(anyhow::Error::msg)?;
    match cli.command.unwrap_or(Command::Up) {
        Command::Up => up(config, platform::Part::Everything, started).await,
        Command::Serve { service } => {
            let name = platform::service_name(&service)?;
            up(config, platform::Part::Service(name), started).await
        }
        Command::Gateway => up(config, platform::Part::Gateway, started).await,
        Command::Migrate { service } => {
            let names = match service {
                Some(name) => vec![platform::service_name(&name)?],
                None => platform::service_names(),
            };
            platform::migrate(&config, &names).await?;
            eprintln!("Migrated: {}.", names.join(", "));
            Ok(())
        }
        Command::Dlq { action } => dead_letters(config, action).await,
        Command::BenchBus(args) => bench::bus(args).await,
        Command::Load(args) => load::run(args).await,
    }
}

async fn up(config: Config, part: platform::Part, started: Instant) -> anyhow::Result<()> {
    let data_dir = config.data_dir.clone();
    let running = platform::start(config, part).await?;
    let what = match part {
        platform::Part::Everything => "Emporium".to_owned(),
        platform::Part::Service(name) => format!("The {name} service"),
        platform::Part::Gateway => "The gateway".to_owned(),
    };
    tracing::info!(address = %running.addr, data_dir = %data_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64, "{what} is up");
    eprintln!(
        "{what} is up on http://{} (data in {}, started in {} ms). Ctrl-C stops it.",
        running.addr,
        data_dir.display(),
        started.elapsed().as_millis()
    );
    shutdown_signal().await;
    eprintln!("Emporium is stopping: finishing requests and event batches…");
    running.shutdown().await?;
    eprintln!("Emporium stopped.");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

async fn dead_letters(config: Config, action: DlqAction) -> anyhow::Result<()> {
    let stores = platform::Stores::open(&config, &[platform::OPERATIONS]).await?;
    let store = &stores
        .dead_letters()
        .context("the operations database holds the dead letters")?;
    // Take in what reached the dead-letter topics since the platform last ran.
    let collecting = store
        .collect(&[])
        .await
        .context("cannot read the dead-letter topics")?;
    let lag_zero = async {
        for _ in 0..200 {
            let lag: u64 = stores
                .bus
                .lag()
                .await
                .map(|l| {
                    l.iter()
                        .filter(|l| l.group == "dead-letters")
                        .map(|l| l.lag())
                        .sum()
                })
                .unwrap_or(0);
            if lag == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    lag_zero.await;
    collecting.stop().await;
    match action {
        DlqAction::List { limit } => {
            for entry in store.list(limit).await? {
                println!("{}", serde_json::to_string(&entry)?);
            }
        }
        DlqAction::Replay { id } => {
            let entry = store.replay(&id).await?;
            println!("{}", serde_json::to_string(&entry)?);
        }
        DlqAction::Delete { id } => store.delete(&id).await?,
    }
    Ok(())
}

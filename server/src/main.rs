//! `medpo`: the MedPO Arena server and command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medpo_server::{config::Settings, users::{ApiKeyCommand, UserCommand}};

/// MedPO Arena: compare medical vision-language models side by side, collect clinicians'
/// votes, turn them into preference datasets, train DPO-family variants and rank them.
///
/// Without a command, `medpo` runs the web server (same as `medpo serve`). The server's
/// settings (`medpo serve --help`) come from flags, then environment variables (MEDPO_*),
/// then ./medpo.toml, then defaults; the engine commands (`generate`, `eval`, `train`, …)
/// take only their own options.
#[derive(Debug, Parser)]
#[command(name = "medpo", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

/// A command of the server side plus the server's settings.
#[derive(Debug, clap::Args)]
struct WithSettings<C: clap::Subcommand> {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: C,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the web server (the default)
    Serve(Settings),
    /// Run only the job queue (training and evaluation workers), without the web server:
    /// for a separate training machine sharing the database and data folder, or to finish
    /// queued jobs. Jobs left running by a killed process resume from their last checkpoint
    Worker(Settings),
    /// Create or upgrade the database schema, then exit
    Migrate(Settings),
    /// Print the resolved configuration, then exit
    Config(Settings),
    /// Manage user accounts (`medpo user add NAME --admin` makes the first admin)
    User(WithSettings<UserCommand>),
    /// API keys for the OpenAI-compatible API (`medpo api-key create NAME` prints a new key)
    ApiKey(WithSettings<ApiKeyCommand>),
    #[command(flatten)]
    Engine(medpo_cli::EngineCommand),
}

fn main() -> ExitCode {
    medpo_models::alloc::retain_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap's message is several lines; keep the first (it names the flag and value).
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            return fail(&format!("{first} (see `medpo --help`)"));
        }
    };
    let command = match cli.command {
        Some(c) => c,
        // `medpo` alone is `medpo serve` (parsed, so that MEDPO_* variables apply).
        None => match Cli::try_parse_from(["medpo", "serve"]).map(|c| c.command) {
            Ok(Some(c)) => c,
            _ => return fail(&"cannot read the server's settings from the environment"),
        },
    };
    let settings = match &command {
        Command::Engine(_) => None,
        Command::Serve(s) | Command::Worker(s) | Command::Migrate(s) | Command::Config(s) => Some(s),
        Command::User(a) => Some(&a.settings),
        Command::ApiKey(a) => Some(&a.settings),
    };
    let Some(settings) = settings else {
        // Engine commands: their own options only; the log filter from MEDPO_LOG or RUST_LOG.
        let filter = std::env::var("MEDPO_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "info".into());
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")))
            .with_writer(std::io::stderr)
            .init();
        let Command::Engine(cmd) = command else { unreachable!("only engine commands have no settings") };
        return match medpo_cli::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("{e:#}")),
        };
    };
    let config = match settings.resolve() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result: anyhow::Result<()> = rt.block_on(async move {
        match command {
            Command::Serve(_) => medpo_server::serve(config).await,
            Command::Worker(_) => medpo_server::work(config).await,
            Command::Migrate(_) => {
                config.prepare_data_dir()?;
                let store = medpo_server::open_store(&config).await?;
                println!("database `{}` is at the latest schema", config.database_url_redacted());
                store.close().await;
                Ok(())
            }
            Command::Config(_) => {
                println!("config file   {}", config.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into()));
                println!("bind          {}", config.bind);
                println!("database-url  {}", config.database_url_redacted());
                println!("data-dir      {}", config.data_dir.display());
                println!("models-dir    {}", config.models_dir.display());
                println!("site-root     {}", config.site_root.display());
                println!("max-upload    {} MB", config.max_upload_bytes >> 20);
                println!("log           {}", config.log);
                println!("workers       {}", config.workers);
                Ok(())
            }
            Command::User(WithSettings { command: cmd, .. }) => {
                config.prepare_data_dir()?;
                let store = medpo_server::open_store(&config).await?;
                let r = medpo_server::users::run(&store, cmd).await;
                store.close().await;
                r
            }
            Command::ApiKey(WithSettings { command: cmd, .. }) => {
                config.prepare_data_dir()?;
                let store = medpo_server::open_store(&config).await?;
                let r = medpo_server::users::run_api_key(&store, cmd).await;
                store.close().await;
                r
            }
            Command::Engine(_) => unreachable!("handled above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

/// Prints one `error: …` line and exits with status 2.
fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    let msg = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    eprintln!("error: {msg}");
    ExitCode::from(2)
}

//! `medpo`: the MedPO Arena server and command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use medpo_server::{config::Settings, users::{ApiKeyCommand, UserCommand}};

/// MedPO Arena: compare medical vision-language models side by side, collect clinicians'
/// votes, turn them into preference datasets, train DPO-family variants and rank them.
///
/// Without a command, `medpo` runs the web server (same as `medpo serve`). Settings come
/// from flags, then environment variables (MEDPO_*), then ./medpo.toml, then defaults.
#[derive(Debug, Parser)]
#[command(name = "medpo", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    settings: Settings,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the web server (the default)
    Serve,
    /// Run only the job queue (training and evaluation workers), without the web server:
    /// for a separate training machine sharing the database and data folder, or to finish
    /// queued jobs. Jobs left running by a killed process resume from their last checkpoint
    Worker,
    /// Create or upgrade the database schema, then exit
    Migrate,
    /// Print the resolved configuration, then exit
    Config,
    /// Manage user accounts (`medpo user add NAME --admin` makes the first admin)
    #[command(subcommand)]
    User(UserCommand),
    /// API keys for the OpenAI-compatible API (`medpo api-key create NAME` prints a new key)
    #[command(subcommand)]
    ApiKey(ApiKeyCommand),
    #[command(flatten)]
    Engine(medpo_cli::EngineCommand),
}

fn main() -> ExitCode {
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
    let config = match cli.settings.resolve() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log))
        .with_writer(std::io::stderr)
        .init();
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Engine(cmd) = command {
        return match medpo_cli::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("{e:#}")),
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result: anyhow::Result<()> = rt.block_on(async move {
        match command {
            Command::Serve => medpo_server::serve(config).await,
            Command::Worker => medpo_server::work(config).await,
            Command::Migrate => {
                config.prepare_data_dir()?;
                let store = medpo_server::open_store(&config).await?;
                println!("database `{}` is at the latest schema", config.database_url_redacted());
                store.close().await;
                Ok(())
            }
            Command::Config => {
                println!("config file   {}", config.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into()));
                println!("bind          {}", config.bind);
                println!("database-url  {}", config.database_url_redacted());
                println!("data-dir      {}", config.data_dir.display());
                println!("models-dir    {}", config.models_dir.display());
                println!("site-root     {}", config.site_root.display());
                println!("max-upload    {} MB", config.max_upload_bytes >> 20);
                println!("log           {}", config.log);
                Ok(())
            }
            Command::User(cmd) => {
                config.prepare_data_dir()?;
                let store = medpo_server::open_store(&config).await?;
                let r = medpo_server::users::run(&store, cmd).await;
                store.close().await;
                r
            }
            Command::ApiKey(cmd) => {
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

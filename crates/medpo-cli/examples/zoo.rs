//! `medpo zoo` without the web server linked in (faster to rebuild while working on the
//! pipeline): `cargo run --release -p medpo-cli --example zoo -- build --quick --work /tmp/zoo`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: medpo_cli::zoo::ZooCommand,
}

fn main() -> anyhow::Result<()> {
    medpo_models::alloc::retain_freed_memory();
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    medpo_cli::zoo::run(Cli::parse().cmd)
}

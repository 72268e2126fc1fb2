//! The engine half of the `medpo` command line: model, training and evaluation subcommands.
//!
//! The `medpo` binary (in `server/`) flattens [`EngineCommand`] next to its own `serve` and
//! `user` subcommands. Nothing here touches the web or the database.

use clap::Subcommand;

pub mod eval;
pub mod models;
pub mod phantom;
pub mod train;
pub mod zoo;

/// Engine subcommands. Each family lives in its own module.
#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    #[command(flatten)]
    Models(models::ModelsCommand),
    #[command(flatten)]
    Eval(eval::EvalCommand),
    #[command(flatten)]
    Train(train::TrainCommand),
    /// Phantom scans: a deterministic synthetic benchmark with ground truth (`generate`).
    #[command(subcommand)]
    Phantom(phantom::PhantomCommand),
    /// The phantom model zoo: data, SFT from scratch, every preference variant, evaluation and
    /// the benchmark table, in one command (`build`).
    #[command(subcommand)]
    Zoo(zoo::ZooCommand),
}

/// Runs one engine subcommand.
pub fn run(cmd: EngineCommand) -> anyhow::Result<()> {
    match cmd {
        EngineCommand::Models(c) => models::run(c),
        EngineCommand::Eval(c) => eval::run(c),
        EngineCommand::Train(c) => train::run(c),
        EngineCommand::Phantom(c) => phantom::run(c),
        EngineCommand::Zoo(c) => zoo::run(c),
    }
}

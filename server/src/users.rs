//! `medpo user …`: account management from the command line (the first admin is made here).

use std::io::BufRead;

use clap::Subcommand;
use medpo_types::Role;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account. The password is read from MEDPO_PASSWORD, or prompted for (or read
    /// from the first line of standard input when it is not a terminal).
    Add {
        /// Login name (1 to 64 characters)
        username: String,
        /// Role: admin, clinician (votes), researcher (trains, exports) or viewer
        #[arg(long, default_value = "clinician")]
        role: String,
        /// Shorthand for --role admin
        #[arg(long)]
        admin: bool,
    },
    /// List accounts
    List,
    /// Set a new password (read as for `add`)
    Passwd { username: String },
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    app::auth::ssr::hash_password(password).map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))
}

fn read_password() -> anyhow::Result<String> {
    let pw = if let Ok(p) = std::env::var("MEDPO_PASSWORD") {
        p
    } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let a = rpassword::prompt_password("Password: ")?;
        let b = rpassword::prompt_password("Repeat: ")?;
        anyhow::ensure!(a == b, "the two passwords differ");
        a
    } else {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    anyhow::ensure!(pw.chars().count() >= 8, "the password must have at least 8 characters");
    Ok(pw)
}

pub async fn run(store: &medpo_store::Store, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { username, role, admin } => {
            let role: Role = if admin { Role::Admin } else { role.parse().map_err(anyhow::Error::msg)? };
            let hash = hash_password(&read_password()?)?;
            let u = store.create_user(&username, &hash, role).await?;
            println!("created user `{}` with role {}", u.username, u.role.as_str());
        }
        UserCommand::List => {
            for u in store.list_users().await? {
                println!("{:>4}  {:<24} {}", u.id, u.username, u.role.as_str());
            }
        }
        UserCommand::Passwd { username } => {
            let hash = hash_password(&read_password()?)?;
            store.set_password_hash(&username, &hash).await?;
            println!("password of `{username}` changed");
        }
    }
    Ok(())
}

//! `medpo user …` and `medpo api-key …`: account management from the command line (the first
//! admin is made here; API keys for scripts too).

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

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for a user; the key is printed once (only its hash is stored). It
    /// acts with the user's role on the OpenAI-compatible API (`/v1`).
    Create {
        /// The key's owner
        username: String,
        /// A label to recognise the key by
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List a user's keys (prefix, label, created, last used, revoked)
    List { username: String },
    /// Revoke a key by its id (see `list`)
    Revoke { id: i64 },
}

async fn user_named(store: &medpo_store::Store, username: &str) -> anyhow::Result<medpo_types::User> {
    store.user_with_hash(username).await?.map(|(u, _)| u).ok_or_else(|| anyhow::anyhow!("no user `{username}` (see `medpo user list`)"))
}

fn when(ms: Option<i64>) -> String {
    ms.map_or("-".into(), medpo_types::format_time)
}

pub async fn run_api_key(store: &medpo_store::Store, cmd: ApiKeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCommand::Create { username, name } => {
            let user = user_named(store, &username).await?;
            let (secret, prefix, hash) = crate::api::openai::new_key();
            let key = store.create_api_key(user.id, &name, &prefix, &hash).await?;
            eprintln!("created API key {} (`{}`, id {}) for `{}` ({}); it is shown only now:", key.prefix, key.name, key.id, user.username, user.role.as_str());
            println!("{secret}");
        }
        ApiKeyCommand::List { username } => {
            let user = user_named(store, &username).await?;
            println!("{:>4}  {:<14} {:<20} {:<18} {:<18} revoked", "id", "prefix", "name", "created", "last used");
            for k in store.api_keys_of(user.id).await? {
                println!(
                    "{:>4}  {:<14} {:<20} {:<18} {:<18} {}",
                    k.id,
                    k.prefix,
                    k.name,
                    when(Some(k.created_at)),
                    when(k.last_used_at),
                    when(k.revoked_at)
                );
            }
        }
        ApiKeyCommand::Revoke { id } => {
            let k = store.revoke_api_key(id, None).await?;
            println!("API key {} (`{}`) is revoked", k.prefix, k.name);
        }
    }
    Ok(())
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

//! The `medpo` binary's configuration errors: each bad value exits with status 2 and one
//! line `error: <setting> `<value>`: <cause>` on stderr, never a panic or backtrace.

use std::process::Command;

fn medpo(args: &[&str], data_dir: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_medpo"))
        .args(args)
        .current_dir(data_dir) // no ./medpo.toml here
        .env_remove("MEDPO_DATABASE_URL")
        .env_remove("MEDPO_BIND")
        .env_remove("MEDPO_DATA_DIR")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run medpo");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn assert_one_error_line(stderr: &str, starts: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or("");
    assert!(last.starts_with(starts), "expected `{starts}…`, got:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("error:")).count(), 1, "{stderr}");
}

#[test]
fn help_explains_every_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = medpo(&["--help"], dir.path());
    assert_eq!(code, 0);
    for cmd in ["serve", "worker", "migrate", "user", "generate", "eval", "train"] {
        assert!(out.contains(cmd), "--help lacks the `{cmd}` command:\n{out}");
    }
    let (code, out, _) = medpo(&["serve", "--help"], dir.path());
    assert_eq!(code, 0);
    for flag in ["--bind", "--database-url", "--data-dir", "--models-dir", "--config", "--max-upload-mb", "MEDPO_DATABASE_URL"] {
        assert!(out.contains(flag), "serve --help lacks {flag}:\n{out}");
    }
    // Engine commands list only the options they use, not the web server's.
    for cmd in [&["train", "--help"][..], &["eval", "--help"], &["generate", "--help"]] {
        let (code, out, err) = medpo(cmd, dir.path());
        assert_eq!(code, 0, "{cmd:?}: {err}");
        for flag in ["--bind", "--secure-cookies", "--max-upload-mb", "--database-url", "--api-rate-limit"] {
            assert!(!out.contains(flag), "{cmd:?} lists the server's {flag}:\n{out}");
        }
    }
}

/// `medpo train --config FILE` is the training file, not the server's settings file.
#[test]
fn train_config_is_the_training_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.toml"), "dataset_path = \"missing.jsonl\"\n").unwrap();
    let (code, _, err) = medpo(&["train", "--config", "t.toml"], dir.path());
    assert_eq!(code, 2);
    assert!(!err.contains("unknown field `dataset_path`"), "{err}");
    assert!(err.contains("missing.jsonl") || err.contains("model_name_or_path"), "{err}");
}

#[test]
fn unparsable_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = medpo(&["migrate", "--database-url", "mysql://root:hunter2@db/x"], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, "error: --database-url `mysql://root:***@db/x`: unsupported scheme `mysql`");
    assert!(!err.contains("hunter2"));
}

#[test]
fn unreachable_postgres() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1.
    let (code, _, err) = medpo(&["migrate", "--database-url", "postgres://medpo:secret@127.0.0.1:1/medpo"], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, "error: --database-url `postgres://medpo:***@127.0.0.1:1/medpo`: cannot connect:");
    assert!(!err.contains("secret"));
}

#[test]
fn bad_bind_value() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = medpo(&["serve", "--bind", "localhost"], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, "error: --bind `localhost`: not a socket address");
}

#[test]
fn port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let (code, _, err) = medpo(&["serve", "--bind", &addr, "--data-dir", data.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, &format!("error: --bind `{addr}`: the address is already in use"));
}

#[test]
fn data_dir_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let (code, _, err) = medpo(&["migrate", "--data-dir", file.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, &format!("error: --data-dir `{}`: exists and is not a folder", file.display()));
    // Inside a file: cannot be created.
    let below = file.join("sub");
    let (code, _, err) = medpo(&["migrate", "--data-dir", below.to_str().unwrap()], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, &format!("error: --data-dir `{}`: cannot create it:", below.display()));
}

#[test]
fn values_clap_rejects_are_one_line_too() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = medpo(&["config", "--max-upload-mb", "abc"], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, "error: invalid value 'abc' for '--max-upload-mb <MB>'");
    let (code, _, err) = medpo(&["frobnicate"], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, "error: unrecognized subcommand 'frobnicate'");
}

#[test]
fn bad_config_file_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("medpo.toml"), "databse_url = \"sqlite://x.db\"\n").unwrap();
    let (code, _, err) = medpo(&["config"], dir.path());
    assert_eq!(code, 2);
    assert_one_error_line(&err, "error: --config `medpo.toml`: unknown field `databse_url`");
}

#[test]
fn migrate_creates_the_sqlite_database_and_users_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, out, err) = medpo(&["migrate", "--data-dir", data.to_str().unwrap()], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("latest schema"));
    assert!(data.join("medpo.db").is_file());
    let add = Command::new(env!("CARGO_BIN_EXE_medpo"))
        .args(["user", "add", "root", "--admin", "--data-dir", data.to_str().unwrap()])
        .current_dir(dir.path())
        .env("MEDPO_PASSWORD", "correct horse battery")
        .output()
        .unwrap();
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let (code, out, _) = medpo(&["user", "list", "--data-dir", data.to_str().unwrap()], dir.path());
    assert_eq!(code, 0);
    assert!(out.contains("root") && out.contains("admin"), "{out}");
    // Short passwords are refused, nothing is created.
    let short = Command::new(env!("CARGO_BIN_EXE_medpo"))
        .args(["user", "add", "bob", "--data-dir", data.to_str().unwrap()])
        .current_dir(dir.path())
        .env("MEDPO_PASSWORD", "short")
        .output()
        .unwrap();
    assert_eq!(short.status.code(), Some(2));
    let (_, out, _) = medpo(&["user", "list", "--data-dir", data.to_str().unwrap()], dir.path());
    assert!(!out.contains("bob"));
}

/// The job queue runs in `serve` unless turned off (one process per database runs it).
#[test]
fn workers_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = medpo(&["config"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["workers", "true"]), "{out}");
    let (code, out, err) = medpo(&["config", "--workers", "false"], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["workers", "false"]), "{out}");
    let (code, _, err) = medpo(&["config", "--workers", "maybe"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--workers"), "{err}");
}

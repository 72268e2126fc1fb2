-- OpenAI-compatible servers registered from the Models page (admins); `[[remote]]` tables in
-- medpo.toml are not stored. The API key is never stored: only the name of the server-side
-- environment variable that holds it. Keep in step with ../sqlite/20261203000004_remotes.sql.
CREATE TABLE remotes (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT    COLLATE "C" NOT NULL UNIQUE,
    base_url         TEXT    NOT NULL,
    api_key_env      TEXT,
    models           TEXT    NOT NULL,
    timeout_s        BIGINT  NOT NULL,
    max_concurrency  BIGINT  NOT NULL,
    created_by       BIGINT  REFERENCES users(id) ON DELETE SET NULL,
    created_at       BIGINT  NOT NULL
);

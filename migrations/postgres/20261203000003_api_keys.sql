-- API keys for the OpenAI-compatible API (/v1) and the log of its calls. Keep in step with
-- ../sqlite/20261203000003_api_keys.sql.
-- A key is shown once; only its SHA-256 (hex) is stored, with a short prefix to recognise it.
CREATE TABLE api_keys (
    id            BIGSERIAL PRIMARY KEY,
    user_id       BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name          TEXT    COLLATE "C" NOT NULL,
    prefix        TEXT    NOT NULL,
    key_hash      TEXT    NOT NULL UNIQUE,
    created_at    BIGINT  NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_user ON api_keys(user_id);

-- One row per API call: who (key), which model, tokens and latency. Never image bytes.
CREATE TABLE api_calls (
    id                 BIGSERIAL PRIMARY KEY,
    key_id             BIGINT  NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    endpoint           TEXT    NOT NULL,
    model              TEXT,
    status             BIGINT  NOT NULL,
    prompt_tokens      BIGINT,
    completion_tokens  BIGINT,
    latency_ms         BIGINT  NOT NULL,
    error              TEXT,
    created_at         BIGINT  NOT NULL
);
CREATE INDEX api_calls_key ON api_calls(key_id, created_at);

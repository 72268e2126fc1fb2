-- MedPO Arena schema v1 (Postgres). Keep in step with ../sqlite/20261128000001_schema_v1.sql:
-- the same tables, columns and constraints; only the id and type spellings differ.
-- Text that is sorted uses COLLATE "C" (bytewise, as SQLite sorts), whatever the server's locale.
-- Times are UTC milliseconds since the Unix epoch (BIGINT). JSON is stored as TEXT.

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT    COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'clinician', 'researcher', 'viewer')),
    created_at    BIGINT  NOT NULL
);

CREATE TABLE sessions (
    token_hash  TEXT    PRIMARY KEY,
    user_id     BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_token  TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE models (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT    COLLATE "C" NOT NULL UNIQUE,
    base        TEXT    COLLATE "C" NOT NULL,
    variant     TEXT    COLLATE "C" NOT NULL,
    layout      TEXT    NOT NULL,
    parent_id   BIGINT  REFERENCES models(id) ON DELETE SET NULL,
    path        TEXT    NOT NULL,
    files_json  TEXT    NOT NULL DEFAULT '[]',
    card        TEXT    NOT NULL DEFAULT '',
    params      BIGINT,
    enabled     BIGINT  NOT NULL DEFAULT 1,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE scans (
    id            BIGSERIAL PRIMARY KEY,
    sha256        TEXT    NOT NULL UNIQUE,
    path          TEXT    NOT NULL,
    size_bytes    BIGINT  NOT NULL,
    width         BIGINT  NOT NULL,
    height        BIGINT  NOT NULL,
    source_format TEXT    NOT NULL CHECK (source_format IN ('png', 'jpeg', 'dicom')),
    modality      TEXT,
    body_part     TEXT,
    view          TEXT,
    uploaded_by   BIGINT  REFERENCES users(id) ON DELETE SET NULL,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE comparisons (
    id          BIGSERIAL PRIMARY KEY,
    scan_id     BIGINT  NOT NULL REFERENCES scans(id),
    question    TEXT    NOT NULL,
    blind       BIGINT  NOT NULL DEFAULT 0,
    created_by  BIGINT  REFERENCES users(id) ON DELETE SET NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX comparisons_scan ON comparisons(scan_id);

CREATE TABLE answers (
    id             BIGSERIAL PRIMARY KEY,
    comparison_id  BIGINT  NOT NULL REFERENCES comparisons(id) ON DELETE CASCADE,
    position       BIGINT  NOT NULL,
    model_id       BIGINT  NOT NULL REFERENCES models(id),
    text           TEXT    NOT NULL,
    settings_json  TEXT    NOT NULL DEFAULT '{}',
    latency_ms     BIGINT,
    status         TEXT    NOT NULL CHECK (status IN ('ok', 'error')),
    error          TEXT,
    UNIQUE (comparison_id, position)
);

CREATE TABLE votes (
    id                BIGSERIAL PRIMARY KEY,
    comparison_id     BIGINT  NOT NULL REFERENCES comparisons(id),
    rater_id          BIGINT  NOT NULL REFERENCES users(id),
    answer_a_id       BIGINT  NOT NULL REFERENCES answers(id),
    answer_b_id       BIGINT  NOT NULL REFERENCES answers(id),
    winner            TEXT    NOT NULL CHECK (winner IN ('a', 'b', 'tie', 'both_bad')),
    rationale         TEXT    NOT NULL DEFAULT '',
    corrected_answer  TEXT,
    region_json       TEXT,
    blind             BIGINT  NOT NULL,
    created_at        BIGINT  NOT NULL,
    CHECK (winner <> 'both_bad' OR corrected_answer IS NOT NULL)
);
CREATE INDEX votes_rater ON votes(rater_id);
CREATE INDEX votes_comparison ON votes(comparison_id);

CREATE TABLE vote_tags (
    id         BIGSERIAL PRIMARY KEY,
    vote_id    BIGINT  NOT NULL REFERENCES votes(id) ON DELETE CASCADE,
    answer_id  BIGINT  REFERENCES answers(id),
    tag        TEXT    NOT NULL,
    severity   TEXT    NOT NULL CHECK (severity IN ('minor', 'major', 'critical'))
);
CREATE INDEX vote_tags_vote ON vote_tags(vote_id);

CREATE TABLE preference_pairs (
    id                 BIGSERIAL PRIMARY KEY,
    vote_id            BIGINT  REFERENCES votes(id) ON DELETE SET NULL,
    scan_id            BIGINT  REFERENCES scans(id),
    question           TEXT    NOT NULL,
    chosen             TEXT    NOT NULL,
    rejected           TEXT    NOT NULL,
    chosen_model_id    BIGINT  REFERENCES models(id) ON DELETE SET NULL,
    rejected_model_id  BIGINT  REFERENCES models(id) ON DELETE SET NULL,
    region_json        TEXT,
    tags_json          TEXT    NOT NULL DEFAULT '[]',
    source             TEXT    NOT NULL CHECK (source IN ('vote', 'import')),
    created_at         BIGINT  NOT NULL
);

CREATE TABLE datasets (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT    NOT NULL UNIQUE,
    description  TEXT    NOT NULL DEFAULT '',
    created_by   BIGINT  REFERENCES users(id) ON DELETE SET NULL,
    created_at   BIGINT  NOT NULL
);

CREATE TABLE dataset_snapshots (
    id          BIGSERIAL PRIMARY KEY,
    dataset_id  BIGINT  NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
    version     BIGINT  NOT NULL,
    pair_count  BIGINT  NOT NULL,
    sha256      TEXT    NOT NULL,
    note        TEXT    NOT NULL DEFAULT '',
    created_by  BIGINT  REFERENCES users(id) ON DELETE SET NULL,
    created_at  BIGINT  NOT NULL,
    UNIQUE (dataset_id, version)
);

CREATE TABLE snapshot_pairs (
    snapshot_id  BIGINT  NOT NULL REFERENCES dataset_snapshots(id) ON DELETE CASCADE,
    pair_id      BIGINT  NOT NULL REFERENCES preference_pairs(id),
    PRIMARY KEY (snapshot_id, pair_id)
);

CREATE TABLE training_jobs (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT    NOT NULL,
    objective        TEXT    NOT NULL,
    config_json      TEXT    NOT NULL,
    base_model_id    BIGINT  NOT NULL REFERENCES models(id),
    snapshot_id      BIGINT  REFERENCES dataset_snapshots(id),
    device           TEXT    NOT NULL DEFAULT 'cpu',
    status           TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    step             BIGINT  NOT NULL DEFAULT 0,
    total_steps      BIGINT  NOT NULL DEFAULT 0,
    result_model_id  BIGINT  REFERENCES models(id) ON DELETE SET NULL,
    error            TEXT,
    created_by       BIGINT  REFERENCES users(id) ON DELETE SET NULL,
    created_at       BIGINT  NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);

CREATE TABLE training_metrics (
    job_id        BIGINT  NOT NULL REFERENCES training_jobs(id) ON DELETE CASCADE,
    step          BIGINT  NOT NULL,
    metrics_json  TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    PRIMARY KEY (job_id, step)
);

CREATE TABLE eval_runs (
    id                BIGSERIAL PRIMARY KEY,
    model_id          BIGINT  NOT NULL REFERENCES models(id),
    benchmark         TEXT    COLLATE "C" NOT NULL,
    protocol_version  TEXT    NOT NULL,
    status            TEXT    NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    n_items           BIGINT  NOT NULL DEFAULT 0,
    metrics_json      TEXT    NOT NULL DEFAULT '{}',
    error             TEXT,
    created_at        BIGINT  NOT NULL,
    finished_at       BIGINT
);
CREATE INDEX eval_runs_bench ON eval_runs(benchmark);

CREATE TABLE eval_items (
    run_id       BIGINT  NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
    item_id      TEXT    COLLATE "C" NOT NULL,
    answer_type  TEXT    NOT NULL,
    category     TEXT    NOT NULL,
    question     TEXT    NOT NULL,
    gold         TEXT    NOT NULL,
    prediction   TEXT    NOT NULL,
    score        DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, item_id)
);

-- The persistent job queue: a cancel request the worker reads at step boundaries, what an
-- evaluation run was asked to do and how far it got, and who launched, cancelled or exported
-- what. Keep in step with ../postgres/20261203000005_job_queue.sql.
ALTER TABLE training_jobs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
ALTER TABLE eval_runs ADD COLUMN config_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE eval_runs ADD COLUMN done_items BIGINT NOT NULL DEFAULT 0;
ALTER TABLE eval_runs ADD COLUMN total_items BIGINT NOT NULL DEFAULT 0;
ALTER TABLE eval_runs ADD COLUMN created_by BIGINT REFERENCES users(id) ON DELETE SET NULL;
ALTER TABLE eval_runs ADD COLUMN started_at BIGINT;
CREATE INDEX training_jobs_queue ON training_jobs(status, device, id);
CREATE INDEX eval_runs_queue ON eval_runs(status, id);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     BIGINT  REFERENCES users(id) ON DELETE SET NULL,
    username    TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);
CREATE INDEX audit_log_time ON audit_log(created_at);

-- One running training job per device, whatever the number of workers or servers.
CREATE UNIQUE INDEX training_jobs_one_running ON training_jobs(device) WHERE status = 'running';

-- Snapshots made from an uploaded preference file hold only that file's pairs; those pairs
-- never enter the snapshots of votes. Keep in step with ../sqlite/20261203000006_uploaded_snapshots.sql.
ALTER TABLE dataset_snapshots ADD COLUMN origin TEXT NOT NULL DEFAULT 'votes';

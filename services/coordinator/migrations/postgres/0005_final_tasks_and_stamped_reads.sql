-- Tasks end (OK, FAILED or SUPERSEDED); a retry waits as READY. Reads are stamped so an older
-- read never replaces a newer truth; leases are renewed while work runs, and a replica that
-- restarts under its name takes its claims back at once.

-- The stamp of the read whose truth is stored (0: stored before stamps existed).
ALTER TABLE projects ADD COLUMN read_stamp BIGINT NOT NULL DEFAULT 0;

-- The fingerprint of the desired state a task last ran with, and the items it reported as
-- failing for good (one per line): resync expects those missing while the project is unchanged.
ALTER TABLE tasks ADD COLUMN desired_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN residue TEXT NOT NULL DEFAULT '';

-- A retry waiting is READY now; FAILED is final.
UPDATE tasks SET state = 'READY' WHERE state = 'FAILED' AND pending = 1;

-- Backoff belongs to a task now: a new task never inherits it.
DROP TABLE sync_state;
-- Recorded and never read.
DROP TABLE analysis_jobs;

-- One increasing sequence of read stamps, shared by every replica.
CREATE SEQUENCE read_stamps;

-- Coordinator processes by replica name, for telling a restart from a second process.
CREATE TABLE replicas (
    name         TEXT   PRIMARY KEY,
    instance     TEXT   NOT NULL,
    host         TEXT   NOT NULL,
    boot_id      TEXT   NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Analysis jobs of SMRT Link, followed until their state is final; the outputs of finished ones
-- are staged in their project's directory.
CREATE TABLE analysis_jobs (
    job_id           INTEGER PRIMARY KEY,
    project_id       INTEGER NOT NULL,
    name             TEXT    NOT NULL,
    -- SMRT Link's state text; SUCCESSFUL jobs have their outputs below.
    state            TEXT    NOT NULL,
    -- SMRT Link's error message, or why the job could not be read.
    message          TEXT    NOT NULL DEFAULT '',
    -- Looks taken while the job was pending (the schedule backs off with them).
    checks           INTEGER NOT NULL DEFAULT 0,
    -- When it is looked at again; 0 once its state is final.
    next_check_at    INTEGER NOT NULL,
    -- A follower's claim while it reads the job (renewed; fenced by `checks`).
    check_owner      TEXT    NOT NULL DEFAULT '',
    check_expires_at INTEGER NOT NULL DEFAULT 0,
    -- The stamp of the read whose state is stored (as for projects).
    read_stamp       INTEGER NOT NULL DEFAULT 0,
    checked_at       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX analysis_jobs_project ON analysis_jobs (project_id);
CREATE INDEX analysis_jobs_due ON analysis_jobs (next_check_at) WHERE next_check_at > 0;

CREATE TABLE analysis_outputs (
    job_id       INTEGER NOT NULL REFERENCES analysis_jobs (job_id) ON DELETE CASCADE,
    path         TEXT    NOT NULL,
    file_type_id TEXT    NOT NULL,
    source_id    TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, path)
);

-- Coordinator tables (PostgreSQL). Times are milliseconds since the Unix epoch; flags are 0/1.
-- Everything here is renewable from SMRT Link except the history of changes and tasks.

-- Projects as last read from SMRT Link (renewable copies).
CREATE TABLE projects (
    project_id   BIGINT PRIMARY KEY,
    name         TEXT    NOT NULL,
    directory    TEXT    NOT NULL,
    deleted      BIGINT NOT NULL DEFAULT 0,
    updated_at   TEXT    NOT NULL DEFAULT '',
    read_at      BIGINT NOT NULL
);

CREATE TABLE project_members (
    project_id BIGINT NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    login      TEXT    NOT NULL,
    role       TEXT    NOT NULL,
    PRIMARY KEY (project_id, login)
);

CREATE TABLE project_datasets (
    project_id   BIGINT NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    uuid         TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    parent_uuid  TEXT    NOT NULL DEFAULT '',
    num_children BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, uuid)
);
CREATE INDEX project_datasets_uuid ON project_datasets (uuid);

-- Changes: why something happened, and whether SMRT Link has been read for it yet.
-- read_state: SETTLING (waiting for settle_until), READING (a reader holds it until
-- read_lease_expires_at), READ, FAILED (SMRT Link could not be read).
CREATE TABLE changes (
    change_id             BIGSERIAL PRIMARY KEY,
    project_id            BIGINT NOT NULL,
    reason                TEXT    NOT NULL,
    kind                  TEXT    NOT NULL,
    status                TEXT    NOT NULL,
    message               TEXT    NOT NULL DEFAULT '',
    caused_by             BIGINT NOT NULL DEFAULT 0,
    request               TEXT    NOT NULL DEFAULT '',
    read_state            TEXT    NOT NULL,
    settle_until          BIGINT NOT NULL,
    read_attempts         BIGINT NOT NULL DEFAULT 0,
    read_owner            TEXT    NOT NULL DEFAULT '',
    read_lease_expires_at BIGINT NOT NULL DEFAULT 0,
    created_at            BIGINT NOT NULL,
    read_at               BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX changes_project ON changes (project_id, change_id);
CREATE INDEX changes_status ON changes (status, change_id);
CREATE INDEX changes_reading ON changes (read_state, settle_until);
-- Events for the same project merge while the change waits to be read.
CREATE UNIQUE INDEX changes_one_settling ON changes (project_id, kind) WHERE read_state = 'SETTLING';

-- Tasks: one project's desired state to one target. pending = 1 while the task will still run
-- (READY, or FAILED with a retry scheduled); at most one pending task per (project, target).
CREATE TABLE tasks (
    task_id          BIGSERIAL PRIMARY KEY,
    project_id       BIGINT NOT NULL,
    target           TEXT    NOT NULL,
    operation        TEXT    NOT NULL DEFAULT '',
    state            TEXT    NOT NULL,
    pending          BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_run_at      BIGINT NOT NULL,
    lease_owner      TEXT    NOT NULL DEFAULT '',
    lease_expires_at BIGINT NOT NULL DEFAULT 0,
    last_message     TEXT    NOT NULL DEFAULT '',
    report           BYTEA,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT NOT NULL DEFAULT 0,
    superseded_by    BIGINT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX tasks_one_pending ON tasks (project_id, target) WHERE pending = 1;
CREATE INDEX tasks_claim ON tasks (target, state, next_run_at);
CREATE INDEX tasks_project ON tasks (project_id, target, task_id);

CREATE TABLE change_tasks (
    change_id BIGINT NOT NULL REFERENCES changes (change_id) ON DELETE CASCADE,
    task_id   BIGINT NOT NULL REFERENCES tasks (task_id) ON DELETE CASCADE,
    PRIMARY KEY (change_id, task_id)
);
CREATE INDEX change_tasks_task ON change_tasks (task_id);

-- Per (project, target): consecutive failures (the backoff exponent) and the latest task.
CREATE TABLE sync_state (
    project_id   BIGINT NOT NULL,
    target       TEXT    NOT NULL,
    failures     BIGINT NOT NULL DEFAULT 0,
    last_task_id BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, target)
);

-- Analysis jobs seen at SMRT Link (read now; staged in a later issue).
CREATE TABLE analysis_jobs (
    job_id     BIGINT PRIMARY KEY,
    project_id BIGINT NOT NULL,
    state      TEXT    NOT NULL,
    name       TEXT    NOT NULL DEFAULT '',
    seen_at    BIGINT NOT NULL
);

-- Named singleton leases (resync): owner, expiry, version for compare-and-set.
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    owner      TEXT    NOT NULL,
    expires_at BIGINT NOT NULL,
    version    BIGINT NOT NULL
);

-- The rules smrtshare means to hold on the collection: one row per (member identity, path).
-- Rules smrtshare did not create never get a row, except as state 'external': a member whose
-- access already comes from someone else's rule, recorded so applies need no Globus call.
CREATE TABLE access_rules (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL,
    login       TEXT   NOT NULL,
    username    TEXT   NOT NULL,
    identity_id TEXT   NOT NULL,
    path        TEXT   NOT NULL,
    permissions TEXT   NOT NULL,
    -- The Globus rule id; NULL while the intent is open (state 'pending').
    access_id   TEXT,
    state       TEXT   NOT NULL CHECK (state IN ('pending', 'active', 'deleting', 'external')),
    -- Expiry at Globus (for 'pending': the expiry the create asks for), milliseconds.
    expires_at  BIGINT,
    -- When the open intent was written: a rule at Globus older than this is not ours.
    intent_at   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    last_error  TEXT
);

CREATE UNIQUE INDEX access_rules_identity_path ON access_rules (identity_id, path);
CREATE UNIQUE INDEX access_rules_access_id ON access_rules (access_id) WHERE access_id IS NOT NULL;
CREATE INDEX access_rules_project ON access_rules (project_id, login);
CREATE INDEX access_rules_state_expiry ON access_rules (state, expires_at);

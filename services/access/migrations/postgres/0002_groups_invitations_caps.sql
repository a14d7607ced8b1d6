-- Group sharing, invitations and unresolved members (issue 17).

-- A rule's principal: a member's identity, or the project's group (identity_id then holds
-- the group id, login is empty and username holds the group's name).
ALTER TABLE access_rules ADD COLUMN principal_type TEXT NOT NULL DEFAULT 'identity'
    CHECK (principal_type IN ('identity', 'group'));

-- The Globus group smrtshare keeps for a project (group sharing): one per project. An intent
-- row (state 'pending', no group_id) is written before the create; the nonce, written into
-- the group's description, proves after a crash that a group found at Globus is this one.
CREATE TABLE access_groups (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL,
    group_id    TEXT,
    name        TEXT    NOT NULL,
    nonce       TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'deleting')),
    intent_at   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    last_error  TEXT
);
CREATE UNIQUE INDEX access_groups_project ON access_groups (project_id);
CREATE UNIQUE INDEX access_groups_group ON access_groups (group_id) WHERE group_id IS NOT NULL;

-- The members smrtshare added to a project's group ('pending': the add is sent or about to
-- be; 'removing': the remove is sent or about to be).
CREATE TABLE access_group_members (
    id          BIGSERIAL PRIMARY KEY,
    project_id  BIGINT NOT NULL,
    login       TEXT    NOT NULL,
    username    TEXT    NOT NULL,
    identity_id TEXT    NOT NULL,
    state       TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'removing')),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    last_error  TEXT
);
CREATE UNIQUE INDEX access_group_members_identity ON access_group_members (project_id, identity_id);
CREATE INDEX access_group_members_by_identity ON access_group_members (identity_id);

-- Invitations sent (a rule created with notify_email): once per member and project, kept
-- when the rule goes, so a rename or a re-grant does not invite again.
CREATE TABLE access_invitations (
    project_id  BIGINT NOT NULL,
    login       TEXT    NOT NULL,
    email       TEXT    NOT NULL,
    sent_at     BIGINT NOT NULL,
    PRIMARY KEY (project_id, login)
);

-- Members of a project the last apply could not resolve to a Globus identity.
CREATE TABLE access_unresolved (
    project_id  BIGINT NOT NULL,
    login       TEXT    NOT NULL,
    username    TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    since       BIGINT NOT NULL,
    PRIMARY KEY (project_id, login)
);

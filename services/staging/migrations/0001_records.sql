-- The staging service's records of what it staged. Renewable: when lost, they are rebuilt from
-- the markers (user.smrtshare extended attributes) on the directories smrtshare created.

-- One row per staged project: its directory directly under the collection root.
CREATE TABLE projects (
    id          INTEGER PRIMARY KEY,            -- SMRT Link project id (> 1)
    directory   TEXT    NOT NULL UNIQUE,        -- directory name under the root
    updated_at  INTEGER NOT NULL                -- ms since the Unix epoch of the last change
);

-- One row per dataset directory in a project directory (plain datasets, orphaned children and
-- demultiplexed parents; a parent's children live inside its directory). Directory names are
-- unique within a project on disk; no constraint here, so two datasets can swap names in one
-- transaction.
CREATE TABLE datasets (
    uuid        TEXT    PRIMARY KEY,            -- SMRT Link dataset UUID
    project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    directory   TEXT    NOT NULL,               -- directory name inside the project directory
    xml_path    TEXT    NOT NULL,               -- the dataset XML as SMRT Link reports it
    kind        TEXT    NOT NULL CHECK (kind IN ('plain', 'parent'))
);

-- Every entry smrtshare made inside a dataset directory: sub-directories (a parent's children and
-- supplemental data) and hard links, with the identity of the source they link to.
CREATE TABLE entries (
    dataset_uuid TEXT    NOT NULL REFERENCES datasets(uuid) ON DELETE CASCADE,
    path         TEXT    NOT NULL,              -- relative to the dataset directory, '/'-separated
    kind         TEXT    NOT NULL CHECK (kind IN ('dir', 'file')),
    source       TEXT,                          -- files: canonical path of the source
    dev          INTEGER,                       -- files: device and inode of the source
    ino          INTEGER,
    size         INTEGER,                       -- files: size in bytes when staged
    PRIMARY KEY (dataset_uuid, path)
) WITHOUT ROWID;

CREATE INDEX datasets_by_project ON datasets (project_id);

-- Analysis jobs whose outputs smrtshare staged: one directory per job in a project directory
-- (`Analysis {id}: {name}` by default) holding hard links to the job's output files. A job
-- belongs to one project at a time and moves with it. `entries` as in `datasets.entries` (one JSON
-- array of [path, 'file', source, dev, ino, size]; a job's directory has no sub-directories).
CREATE TABLE analysis_jobs (
    job_id      INTEGER PRIMARY KEY,            -- SMRT Link job id (> 0)
    project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    directory   TEXT    NOT NULL,               -- directory name inside the project directory
    entries     TEXT    NOT NULL DEFAULT '[]'
);

CREATE INDEX analysis_jobs_by_project ON analysis_jobs (project_id);

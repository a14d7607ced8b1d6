-- Indexes for the hot paths, which 0001 left scanning a table that only grows.

-- Claiming a task, its "is anything due" pre-read and a worker's "when is the next one due" all
-- ask for the pending tasks of one target by due time. With only tasks_claim (target, state,
-- next_run_at) they read every task the target ever had; this index holds pending tasks only.
CREATE INDEX tasks_due ON tasks (target, next_run_at, task_id) WHERE pending = 1;

-- GetChange lists the changes a change caused (effects and discoveries).
CREATE INDEX changes_caused_by ON changes (caused_by);

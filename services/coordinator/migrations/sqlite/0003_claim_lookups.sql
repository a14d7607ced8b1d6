-- Lookups made on every claim (PostgreSQL's 0003 tells what scanned there).

-- Claiming a settled change needs no new index here: changes_reading (read_state, settle_until)
-- ends with the rowid (change_id), so it already hands out settling changes in claim order.

-- A task's claim answers its newest change (MAX(change_id) of its links): with change_id in
-- the index the answer is its first entry, read from the index alone.
DROP INDEX change_tasks_task;
CREATE INDEX change_tasks_task ON change_tasks (task_id, change_id);

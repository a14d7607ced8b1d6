-- Lookups made on every claim, which scanned more the longer the tables grew.

-- Claiming a settled change asks for the first SETTLING change by (settle_until, change_id).
-- changes_reading (read_state, settle_until) found every settled change and sorted them, per
-- claim: after a burst of a thousand mirrored changes, a thousand rows read per claim. This
-- index holds settling changes only, in claim order.
CREATE INDEX changes_settled ON changes (settle_until, change_id) WHERE read_state = 'SETTLING';

-- A task's claim answers its newest change (MAX(change_id) of its links). With change_tasks_task
-- on (task_id) alone, the planner walked the primary key (change_id, task_id) backwards until
-- it met the task: every link ever made, for a task whose changes are recent. With change_id
-- in this index the answer is its first entry.
DROP INDEX change_tasks_task;
CREATE INDEX change_tasks_task ON change_tasks (task_id, change_id);

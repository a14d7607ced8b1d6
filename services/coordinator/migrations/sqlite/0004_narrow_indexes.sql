-- Indexes on the hot tables hold only the rows their lookups ask for. A change's row gets a new
-- version at its intake, its read claim, its read and its final status, and a task's at its
-- creation, claim and finish; each version is entered in every index whose predicate it meets
-- (its indexed columns change, so no update is HOT). These three indexes held every version.

-- Expired read leases: only READING changes are looked up (was every change, by read state).
DROP INDEX changes_reading;
CREATE INDEX changes_read_leases ON changes (read_lease_expires_at) WHERE read_state = 'READING';

-- A change's effects: only changes that have a cause (most have none: caused_by = 0).
DROP INDEX changes_caused_by;
CREATE INDEX changes_caused_by ON changes (caused_by) WHERE caused_by <> 0;

-- Running tasks: a claim checks for one of the same project and target, and expired leases are
-- looked for per target. Only WORKING tasks are asked for (was every task, by target and state).
DROP INDEX tasks_claim;
CREATE INDEX tasks_working ON tasks (target, project_id) WHERE state = 'WORKING';

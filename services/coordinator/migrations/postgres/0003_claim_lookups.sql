-- Claiming a settled change asks for the first SETTLING change by (settle_until, change_id).
-- changes_reading (read_state, settle_until) found every settled change and sorted them, per
-- claim: after a burst of a thousand mirrored changes, a thousand rows read per claim. This
-- index holds settling changes only, in claim order.
CREATE INDEX changes_settled ON changes (settle_until, change_id) WHERE read_state = 'SETTLING';

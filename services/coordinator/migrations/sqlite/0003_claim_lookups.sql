-- Nothing to do on SQLite. PostgreSQL's 0003 adds an index so that claiming a settled change
-- does not read and sort every settled change; here changes_reading (read_state, settle_until)
-- already ends with the rowid (change_id), so it hands out settling changes in claim order.
SELECT 1;

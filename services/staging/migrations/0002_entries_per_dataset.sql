-- A dataset's entries move into its row, as one JSON array: writing a new dataset is then one row
-- (the entries table took a row per file, inserted at random places in its key order, and the
-- pages those inserts touched were most of what each commit wrote).
--
-- Each element is [path, kind, source, dev, ino, size]: path relative to the dataset directory
-- ('/'-separated), kind 'dir' or 'file'; the rest for files only (source: canonical path of the
-- source; dev and ino: its identity; size in bytes when staged), absent or null for directories.
ALTER TABLE datasets ADD COLUMN entries TEXT NOT NULL DEFAULT '[]';

UPDATE datasets SET entries = (
    SELECT json_group_array(json_array(path, kind, source, dev, ino, size))
    FROM (SELECT path, kind, source, dev, ino, size FROM entries
          WHERE entries.dataset_uuid = datasets.uuid ORDER BY path)
);

DROP TABLE entries;

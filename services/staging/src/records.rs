//! The service's records of what it staged, in an embedded SQLite database (sqlx, migrations in
//! `services/staging/migrations`), with a copy in memory that every read uses.
//!
//! All writes for a project happen under that project's lock, database first and then the copy,
//! so the copy never shows what the database does not hold. Only what changed is written: an apply
//! that finds everything in place writes nothing. A dataset's entries (its links and
//! sub-directories) are kept in its row as one JSON array, rewritten whole when any of them
//! changes.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, QueryBuilder, Row as _, SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::model::{
    EntryRecord, FileRecord, ItemId, ItemRecord, ItemSource, JobId, Kind, ProjectId, ProjectRecord,
};

mod rows;

use rows::Rows;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, Default)]
struct Cache {
    projects: BTreeMap<ProjectId, Arc<ProjectRecord>>,
    by_item: HashMap<ItemId, ProjectId>,
    by_directory: HashMap<String, ProjectId>,
}

impl Cache {
    fn put(&mut self, record: ProjectRecord) {
        self.remove(record.id);
        for item in record.items.keys() {
            self.by_item.insert(*item, record.id);
        }
        self.by_directory
            .insert(record.directory.clone(), record.id);
        self.projects.insert(record.id, Arc::new(record));
    }

    fn remove(&mut self, id: ProjectId) {
        if let Some(old) = self.projects.remove(&id) {
            for item in old.items.keys() {
                if self.by_item.get(item) == Some(&id) {
                    self.by_item.remove(item);
                }
            }
            if self.by_directory.get(&old.directory) == Some(&id) {
                self.by_directory.remove(&old.directory);
            }
        }
    }
}

/// The records.
#[derive(Debug)]
pub struct Records {
    pool: SqlitePool,
    cache: RwLock<Cache>,
    /// First and last write since the last checkpoint.
    dirty: Mutex<Option<(Instant, Instant)>>,
    /// Changes waiting for the writer.
    queue: Mutex<Vec<Queued>>,
    /// The writer's turn, and its own connection (opened again after a failed write).
    writer: tokio::sync::Mutex<Option<SqliteConnection>>,
    /// How the writer's connection is opened.
    options: SqliteConnectOptions,
}

impl Records {
    /// Opens (creating when missing) the database at `path`, runs the migrations and loads every
    /// record. A new database's directory is created private (0700).
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(parent) = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the records directory {}", parent.display()))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            // Commits never checkpoint (a checkpoint's fsync waits for the filesystem journal,
            // full of fresh links, and would stall an apply); `checkpoint` runs in the background.
            .pragma("wal_autocheckpoint", "0");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening the records database {}", path.display()))?;
        MIGRATOR
            .run(&pool)
            .await
            .with_context(|| format!("migrating the records database {}", path.display()))?;
        let records = Self {
            pool,
            cache: RwLock::new(Cache::default()),
            dirty: Mutex::new(None),
            queue: Mutex::new(Vec::new()),
            writer: tokio::sync::Mutex::new(None),
            options,
        };
        records
            .load()
            .await
            .with_context(|| format!("loading the records from {}", path.display()))?;
        Ok(records)
    }

    async fn load(&self) -> Result<(), sqlx::Error> {
        let mut projects: BTreeMap<i64, ProjectRecord> = BTreeMap::new();
        for row in sqlx::query("SELECT id, directory, updated_at FROM projects")
            .fetch_all(&self.pool)
            .await?
        {
            let id: i64 = row.try_get(0)?;
            let Ok(pid) = ProjectId::new(id) else {
                continue;
            };
            projects.insert(
                id,
                ProjectRecord {
                    id: pid,
                    directory: row.try_get(1)?,
                    updated_at: row.try_get(2)?,
                    items: BTreeMap::new(),
                },
            );
        }
        let mut owners: HashMap<ItemId, i64> = HashMap::new();
        let mut add = |item: ItemId, project_id: i64, directory: String, source: ItemSource| {
            if let Some(project) = projects.get_mut(&project_id) {
                owners.insert(item, project_id);
                project.items.insert(
                    item,
                    ItemRecord {
                        item,
                        directory,
                        source,
                        entries: Arc::new(BTreeMap::new()),
                    },
                );
            }
        };
        for row in sqlx::query("SELECT uuid, project_id, directory, xml_path, kind FROM datasets")
            .fetch_all(&self.pool)
            .await?
        {
            let (Ok(uuid), Some(kind)) = (
                Uuid::parse_str(row.try_get::<&str, _>(0)?),
                Kind::parse(row.try_get::<&str, _>(4)?),
            ) else {
                continue;
            };
            let source = ItemSource::Dataset {
                xml_path: row.try_get(3)?,
                kind,
            };
            add(
                ItemId::Dataset(uuid),
                row.try_get(1)?,
                row.try_get(2)?,
                source,
            );
        }
        for row in sqlx::query("SELECT job_id, project_id, directory FROM analysis_jobs")
            .fetch_all(&self.pool)
            .await?
        {
            let Ok(id) = JobId::new(row.try_get(0)?) else {
                continue;
            };
            add(
                ItemId::Job(id),
                row.try_get(1)?,
                row.try_get(2)?,
                ItemSource::Job,
            );
        }
        // A dataset or job whose entries are not valid JSON (never written so) loads without
        // entries: its next apply finds the links in place and records them again.
        for row in sqlx::query(
            "SELECT d.uuid, NULL, e.value ->> 0, e.value ->> 1, e.value ->> 2, e.value ->> 3, e.value ->> 4, e.value ->> 5 \
             FROM (SELECT uuid, entries FROM datasets WHERE json_valid(entries)) AS d, json_each(d.entries) AS e \
             UNION ALL \
             SELECT NULL, j.job_id, e.value ->> 0, e.value ->> 1, e.value ->> 2, e.value ->> 3, e.value ->> 4, e.value ->> 5 \
             FROM (SELECT job_id, entries FROM analysis_jobs WHERE json_valid(entries)) AS j, json_each(j.entries) AS e",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let item = match (
                row.try_get::<Option<&str>, _>(0)?,
                row.try_get::<Option<i64>, _>(1)?,
            ) {
                (Some(uuid), _) => Uuid::parse_str(uuid).ok().map(ItemId::Dataset),
                (None, Some(job)) => JobId::new(job).ok().map(ItemId::Job),
                (None, None) => None,
            };
            let Some(record) = item.and_then(|item| {
                owners
                    .get(&item)
                    .and_then(|p| projects.get_mut(p))
                    .and_then(|p| p.items.get_mut(&item))
            }) else {
                continue;
            };
            let entry = match row.try_get::<&str, _>(3)? {
                "dir" => EntryRecord::Dir,
                _ => EntryRecord::File(FileRecord {
                    source: row.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                    dev: row.try_get::<Option<i64>, _>(5)?.unwrap_or_default() as u64,
                    ino: row.try_get::<Option<i64>, _>(6)?.unwrap_or_default() as u64,
                    size: row.try_get::<Option<i64>, _>(7)?.unwrap_or_default() as u64,
                }),
            };
            Arc::make_mut(&mut record.entries).insert(row.try_get(2)?, entry);
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        *cache = Cache::default();
        for record in projects.into_values() {
            cache.put(record);
        }
        Ok(())
    }

    /// Copies the write-ahead log into the database (passive: never waits for or blocks other
    /// connections) when something was written and writing paused for `idle` (or has gone on for
    /// `max`). Returns whether it checkpointed. Nothing is done while nothing is written.
    pub async fn checkpoint(&self, idle: Duration, max: Duration) -> Result<bool, sqlx::Error> {
        let due = {
            let dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            dirty.is_some_and(|(first, last)| last.elapsed() >= idle || first.elapsed() >= max)
        };
        if !due {
            return Ok(false);
        }
        *self.dirty.lock().unwrap_or_else(|e| e.into_inner()) = None;
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// One project's record.
    pub fn project(&self, id: ProjectId) -> Option<Arc<ProjectRecord>> {
        self.read().projects.get(&id).cloned()
    }

    /// Every project, ordered by id.
    pub fn all(&self) -> Vec<Arc<ProjectRecord>> {
        self.read().projects.values().cloned().collect()
    }

    /// How many projects are recorded (without copying the records).
    pub fn project_count(&self) -> usize {
        self.read().projects.len()
    }

    /// The project whose records hold a dataset.
    pub fn holder_of(&self, item: &ItemId) -> Option<ProjectId> {
        self.read().by_item.get(item).copied()
    }

    /// The project whose directory has this name.
    pub fn holder_of_directory(&self, directory: &str) -> Option<ProjectId> {
        self.read().by_directory.get(directory).copied()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the new state of some projects (`None`: no records any more), writing only what
    /// differs from the current records, then updates the copy in memory. The caller holds the
    /// locks of every project named.
    ///
    /// Writers share transactions (group commit): a call queues its changes and the first to get
    /// the writer's turn writes everything queued in one transaction (the projects of concurrent
    /// calls are disjoint: each holds its projects' locks until it returns). Each call returns
    /// once its changes are committed and in the copy. When a shared transaction fails, each
    /// call's changes are written again in a transaction of their own, so that one call's failure
    /// is never another's.
    pub async fn store(
        &self,
        changes: Vec<(ProjectId, Option<ProjectRecord>)>,
    ) -> Result<(), sqlx::Error> {
        let (done, mut answer) = tokio::sync::oneshot::channel();
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Queued { changes, done });
        let mut turn = self.writer.lock().await;
        match answer.try_recv() {
            Ok(result) => return result,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        let group = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
        self.write_group(&mut turn, group).await;
        drop(turn);
        answer.await.unwrap_or_else(|_| Err(abandoned()))
    }

    /// Writes a group of queued changes (one transaction, or one each when that fails) and
    /// answers every member.
    async fn write_group(&self, conn: &mut Option<SqliteConnection>, group: Vec<Queued>) {
        if group.len() > 1 {
            let all: Vec<&(ProjectId, Option<ProjectRecord>)> =
                group.iter().flat_map(|q| &q.changes).collect();
            match self.write(conn, &all).await {
                Ok(()) => {
                    let mut dones = Vec::with_capacity(group.len());
                    let mut changes = Vec::new();
                    for q in group {
                        dones.push(q.done);
                        changes.extend(q.changes);
                    }
                    self.publish(changes);
                    for done in dones {
                        let _ = done.send(Ok(()));
                    }
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, members = group.len(), "a shared records transaction failed; writing its members one by one");
                }
            }
        }
        for q in group {
            let result = self
                .write(conn, &q.changes.iter().collect::<Vec<_>>())
                .await;
            if result.is_ok() {
                self.publish(q.changes);
            }
            let _ = q.done.send(result);
        }
    }

    /// Writes changes in one transaction (only what differs from the copy in memory), sent to
    /// the writer's connection as one batch of statements (each statement sent on its own waits
    /// for the connection's thread to be scheduled: under load that wait, not SQLite, was most of
    /// a write). After a failure the connection is closed (rolling back whatever the batch left
    /// open) and the next write opens a new one.
    async fn write(
        &self,
        conn: &mut Option<SqliteConnection>,
        changes: &[&(ProjectId, Option<ProjectRecord>)],
    ) -> Result<(), sqlx::Error> {
        let olds: Vec<Option<Arc<ProjectRecord>>> =
            changes.iter().map(|(id, _)| self.project(*id)).collect();
        let mut rows = Rows::default();
        // Deletions first, guarded by owner, so a dataset moving between the projects of this
        // transaction is never deleted from its new owner.
        for ((id, new), old) in changes.iter().zip(&olds) {
            let Some(old) = old else { continue };
            match new {
                None => rows.project_deletes.push(id.get()),
                Some(new) => rows.item_deletes.extend(
                    old.items
                        .keys()
                        .filter(|i| !new.items.contains_key(i))
                        .map(|i| (*i, id.get())),
                ),
            }
        }
        for ((id, new), old) in changes.iter().zip(&olds) {
            let Some(new) = new else { continue };
            if old
                .as_deref()
                .is_none_or(|o| o.directory != new.directory || o.updated_at != new.updated_at)
            {
                rows.projects
                    .push((id.get(), &new.directory, new.updated_at));
            }
            for item in new.items.values() {
                let before = old.as_ref().and_then(|o| o.items.get(&item.item));
                rows.item(*id, item, before);
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut batch = QueryBuilder::new("BEGIN IMMEDIATE; ");
        rows.push_statements(&mut batch);
        batch.push("COMMIT");
        let connection = match conn {
            Some(c) => c,
            None => conn.insert(SqliteConnection::connect_with(&self.options).await?),
        };
        let result = batch
            .build()
            .persistent(false)
            .execute(&mut *connection)
            .await;
        if result.is_err()
            && let Some(failed) = conn.take()
        {
            let _ = failed.close().await;
        }
        result.map(|_| ())
    }

    /// Puts committed changes into the copy in memory.
    fn publish(&self, changes: Vec<(ProjectId, Option<ProjectRecord>)>) {
        {
            let now = Instant::now();
            let mut dirty = self.dirty.lock().unwrap_or_else(|e| e.into_inner());
            *dirty = Some((dirty.map_or(now, |(first, _)| first), now));
        }
        let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
        for (id, new) in changes {
            match new {
                Some(record) => cache.put(record),
                None => cache.remove(id),
            }
        }
        // A dataset that moved points at its new owner, whichever of its two projects came
        // first: `put` points a record's datasets at it, and `remove` forgets only the datasets
        // still pointing at the project removed.
    }
}

/// The error of a call whose queued changes were dropped unwritten (its writer was cancelled).
fn abandoned() -> sqlx::Error {
    sqlx::Error::Protocol("the records writer was cancelled before writing these changes".into())
}

/// One call's changes waiting for the writer.
#[derive(Debug)]
struct Queued {
    changes: Vec<(ProjectId, Option<ProjectRecord>)>,
    done: tokio::sync::oneshot::Sender<Result<(), sqlx::Error>>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn project(id: i64, dir: &str, datasets: &[(Uuid, &str, usize)]) -> ProjectRecord {
        ProjectRecord {
            id: ProjectId::new(id).unwrap(),
            directory: dir.into(),
            updated_at: 1,
            items: datasets
                .iter()
                .map(|(uuid, name, files)| {
                    let mut entries = BTreeMap::new();
                    entries.insert("sub".to_owned(), EntryRecord::Dir);
                    for i in 0..*files {
                        entries.insert(
                            format!("sub/f{i}"),
                            EntryRecord::File(FileRecord {
                                source: format!("/s/f{i}"),
                                dev: 7,
                                ino: u64::MAX - i as u64,
                                size: 3,
                            }),
                        );
                    }
                    (
                        ItemId::Dataset(*uuid),
                        ItemRecord {
                            item: ItemId::Dataset(*uuid),
                            directory: (*name).into(),
                            source: ItemSource::Dataset {
                                xml_path: "/s/x.xml".into(),
                                kind: Kind::Plain,
                            },
                            entries: Arc::new(entries),
                        },
                    )
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn entries_with_any_text_survive_a_reopen() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let path = dir.path().join("records.sqlite3");
        let records = Records::open(&path).await.unwrap();
        let uuid = Uuid::new_v4();
        let mut p = project(2, "P \"2\"", &[(uuid, "A", 2)]);
        let dataset = p.items.get_mut(&ItemId::Dataset(uuid)).unwrap();
        let entries = Arc::make_mut(&mut dataset.entries);
        for odd in [
            "quote\"d",
            "back\\slash",
            "new\nline\ttab\u{1}",
            "ünï ☃ 𝄞",
            "[x,\"y\"]",
        ] {
            entries.insert(format!("sub/{odd}"), EntryRecord::Dir);
            entries.insert(
                format!("{odd}.bam"),
                EntryRecord::File(FileRecord {
                    source: format!("/s/{odd}"),
                    dev: u64::MAX,
                    ino: 1 << 63,
                    size: 0,
                }),
            );
        }
        records.store(vec![(p.id, Some(p.clone()))]).await.unwrap();
        drop(records);
        let reopened = Records::open(&path).await.unwrap();
        assert_eq!(*reopened.project(p.id).unwrap(), p);
    }

    #[tokio::test]
    async fn records_of_the_first_schema_are_carried_over() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let path = dir.path().join("records.sqlite3");
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.unwrap();
        let first = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(MIGRATOR.migrations[..1].to_vec()),
            ignore_missing: false,
            locking: true,
            no_tx: false,
        };
        first.run(&pool).await.unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        sqlx::raw_sql(&format!(
            "INSERT INTO projects VALUES (2, 'P2', 5); \
             INSERT INTO datasets VALUES ('{a}', 2, 'A', '/s/a.xml', 'parent'), ('{b}', 2, 'B', '/s/b.xml', 'plain'); \
             INSERT INTO entries VALUES ('{a}', 'sub', 'dir', NULL, NULL, NULL, NULL), \
               ('{a}', 'sub/f.bam', 'file', '/s/f.bam', 7, -2, 3), ('{a}', 'a.bam', 'file', '/s/a.bam', 7, 9, 4);"
        ))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let records = Records::open(&path).await.unwrap();
        let p = records.project(ProjectId::new(2).unwrap()).unwrap();
        assert_eq!((p.directory.as_str(), p.updated_at), ("P2", 5));
        let file = |source: &str, ino: u64, size: u64| {
            EntryRecord::File(FileRecord {
                source: source.into(),
                dev: 7,
                ino,
                size,
            })
        };
        let want: BTreeMap<String, EntryRecord> = [
            ("a.bam".to_owned(), file("/s/a.bam", 9, 4)),
            ("sub".to_owned(), EntryRecord::Dir),
            ("sub/f.bam".to_owned(), file("/s/f.bam", u64::MAX - 1, 3)),
        ]
        .into();
        assert_eq!(*p.items[&ItemId::Dataset(a)].entries, want);
        assert_eq!(
            p.items[&ItemId::Dataset(a)].source,
            ItemSource::Dataset {
                xml_path: "/s/a.xml".into(),
                kind: Kind::Parent
            }
        );
        assert!(p.items[&ItemId::Dataset(b)].entries.is_empty());
        assert_eq!(records.holder_of(&ItemId::Dataset(b)), Some(p.id));
    }

    #[tokio::test]
    async fn a_dataset_whose_entries_cannot_be_read_loads_without_them() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let path = dir.path().join("records.sqlite3");
        let records = Records::open(&path).await.unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let p = project(2, "P2", &[(a, "A", 2), (b, "B", 2)]);
        records.store(vec![(p.id, Some(p.clone()))]).await.unwrap();
        sqlx::query("UPDATE datasets SET entries = '[[\"x\",' WHERE uuid = $1")
            .bind(a.to_string())
            .execute(&records.pool)
            .await
            .unwrap();
        drop(records);
        let reopened = Records::open(&path).await.unwrap();
        let loaded = reopened.project(p.id).unwrap();
        assert!(loaded.items[&ItemId::Dataset(a)].entries.is_empty());
        assert_eq!(
            loaded.items[&ItemId::Dataset(b)],
            p.items[&ItemId::Dataset(b)]
        );
    }

    #[tokio::test]
    async fn queued_writers_share_a_transaction_and_a_failing_one_fails_alone() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let path = dir.path().join("records.sqlite3");
        let records = Records::open(&path).await.unwrap();
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let p2 = project(2, "P2", &[(a, "A", 150)]);
        let p3 = project(3, "P3", &[(b, "B", 3)]);
        // A directory name another project holds breaks the table's UNIQUE constraint.
        let clash = project(4, "P2", &[(c, "C", 2)]);
        let p5 = project(5, "P5", &[(c, "C", 2)]);

        // Two writers queue while the writer's turn is taken: one transaction writes both.
        let turn = records.writer.lock().await;
        let release = async {
            tokio::task::yield_now().await;
            assert_eq!(records.queue.lock().unwrap().len(), 2, "both queued");
            drop(turn);
        };
        let (r2, r3, ()) = tokio::join!(
            records.store(vec![(p2.id, Some(p2.clone()))]),
            records.store(vec![(p3.id, Some(p3.clone()))]),
            release,
        );
        r2.unwrap();
        r3.unwrap();

        // A failing member of a group fails alone; the others are written.
        let turn = records.writer.lock().await;
        let release = async {
            tokio::task::yield_now().await;
            drop(turn);
        };
        let (bad, good, ()) = tokio::join!(
            records.store(vec![(clash.id, Some(clash.clone()))]),
            records.store(vec![(p5.id, Some(p5.clone()))]),
            release,
        );
        assert!(bad.is_err(), "the clashing directory name is refused");
        good.unwrap();
        assert!(records.project(clash.id).is_none());
        assert_eq!(records.holder_of(&ItemId::Dataset(c)), Some(p5.id));

        drop(records);
        let reopened = Records::open(&path).await.unwrap();
        assert_eq!(*reopened.project(p2.id).unwrap(), p2);
        assert_eq!(*reopened.project(p3.id).unwrap(), p3);
        assert_eq!(*reopened.project(p5.id).unwrap(), p5);
        assert!(reopened.project(clash.id).is_none());
        assert_eq!(reopened.all().len(), 3);
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_datasets_move_between_projects() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("records.sqlite3");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let records = Records::open(&path).await.unwrap();
        let p2 = project(2, "P2", &[(a, "A", 250), (b, "B", 1)]);
        let p3 = project(3, "P3", &[]);
        records
            .store(vec![(p2.id, Some(p2.clone())), (p3.id, Some(p3.clone()))])
            .await
            .unwrap();
        // b moves from 2 to 3 in one transaction, listed in either order.
        let mut p2b = p2.clone();
        let moved = p2b.items.remove(&ItemId::Dataset(b)).unwrap();
        let mut p3b = p3.clone();
        p3b.items.insert(ItemId::Dataset(b), moved);
        records
            .store(vec![
                (p3b.id, Some(p3b.clone())),
                (p2b.id, Some(p2b.clone())),
            ])
            .await
            .unwrap();
        assert_eq!(records.holder_of(&ItemId::Dataset(b)), Some(p3b.id));
        assert_eq!(records.holder_of_directory("P2"), Some(p2b.id));
        // And back, listed the other way round.
        records
            .store(vec![(p2.id, Some(p2.clone())), (p3.id, Some(p3.clone()))])
            .await
            .unwrap();
        assert_eq!(records.holder_of(&ItemId::Dataset(b)), Some(p2.id));
        records
            .store(vec![
                (p2b.id, Some(p2b.clone())),
                (p3b.id, Some(p3b.clone())),
            ])
            .await
            .unwrap();
        assert_eq!(records.holder_of(&ItemId::Dataset(b)), Some(p3b.id));
        assert_eq!(records.holder_of(&ItemId::Dataset(a)), Some(p2b.id));
        drop(records);
        let reopened = Records::open(&path).await.unwrap();
        assert_eq!(*reopened.project(p2b.id).unwrap(), p2b);
        assert_eq!(*reopened.project(p3b.id).unwrap(), p3b);
        reopened.store(vec![(p2b.id, None)]).await.unwrap();
        assert!(reopened.project(p2b.id).is_none());
        assert_eq!(reopened.holder_of(&ItemId::Dataset(a)), None);
        assert_eq!(reopened.all().len(), 1);
    }

    #[tokio::test]
    async fn analysis_jobs_survive_a_reopen_and_move_between_projects() {
        let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
        let path = dir.path().join("records.sqlite3");
        let records = Records::open(&path).await.unwrap();
        let job = ItemId::Job(JobId::new(1589).unwrap());
        let mut p2 = project(2, "P2", &[(Uuid::new_v4(), "A", 1)]);
        let entries: BTreeMap<String, EntryRecord> = [(
            "contigs.fasta".to_owned(),
            EntryRecord::File(FileRecord {
                source: "/jobs/0000001589/contigs.fasta".into(),
                dev: 7,
                ino: 42,
                size: 9,
            }),
        )]
        .into();
        p2.items.insert(
            job,
            ItemRecord {
                item: job,
                directory: "Analysis 1589: Assembly".into(),
                source: ItemSource::Job,
                entries: Arc::new(entries),
            },
        );
        let p3 = project(3, "P3", &[]);
        records
            .store(vec![(p2.id, Some(p2.clone())), (p3.id, Some(p3.clone()))])
            .await
            .unwrap();
        drop(records);
        let records = Records::open(&path).await.unwrap();
        assert_eq!(*records.project(p2.id).unwrap(), p2);
        assert_eq!(records.holder_of(&job), Some(p2.id));

        // The job moves to project 3 in one transaction, listed before the project it leaves.
        let (mut p2b, mut p3b) = (p2.clone(), p3.clone());
        let moved = p2b.items.remove(&job).unwrap();
        p3b.items.insert(job, moved);
        records
            .store(vec![
                (p3b.id, Some(p3b.clone())),
                (p2b.id, Some(p2b.clone())),
            ])
            .await
            .unwrap();
        drop(records);
        let records = Records::open(&path).await.unwrap();
        assert_eq!(*records.project(p3b.id).unwrap(), p3b);
        assert_eq!(*records.project(p2b.id).unwrap(), p2b);
        assert_eq!(records.holder_of(&job), Some(p3b.id));
        records.store(vec![(p3b.id, None)]).await.unwrap();
        assert_eq!(records.holder_of(&job), None);
    }
}

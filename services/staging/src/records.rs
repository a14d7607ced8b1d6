//! The service's records of what it staged, in an embedded SQLite database (sqlx, migrations in
//! `services/staging/migrations`), with a copy in memory that every read uses.
//!
//! All writes for a project happen under that project's lock, database first and then the copy,
//! so the copy never shows what the database does not hold. Only what changed is written: an apply
//! that finds everything in place writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, QueryBuilder, Row as _, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::model::{DatasetRecord, EntryRecord, FileRecord, Kind, ProjectId, ProjectRecord};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows per multi-row insert.
const BATCH: usize = 100;

#[derive(Debug, Default)]
struct Cache {
    projects: BTreeMap<ProjectId, Arc<ProjectRecord>>,
    by_dataset: HashMap<Uuid, ProjectId>,
    by_directory: HashMap<String, ProjectId>,
}

impl Cache {
    fn put(&mut self, record: ProjectRecord) {
        self.remove(record.id);
        for uuid in record.datasets.keys() {
            self.by_dataset.insert(*uuid, record.id);
        }
        self.by_directory
            .insert(record.directory.clone(), record.id);
        self.projects.insert(record.id, Arc::new(record));
    }

    fn remove(&mut self, id: ProjectId) {
        if let Some(old) = self.projects.remove(&id) {
            for uuid in old.datasets.keys() {
                if self.by_dataset.get(uuid) == Some(&id) {
                    self.by_dataset.remove(uuid);
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
                    datasets: BTreeMap::new(),
                },
            );
        }
        let mut owners: HashMap<Uuid, i64> = HashMap::new();
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
            let project_id: i64 = row.try_get(1)?;
            let Some(project) = projects.get_mut(&project_id) else {
                continue;
            };
            owners.insert(uuid, project_id);
            project.datasets.insert(
                uuid,
                DatasetRecord {
                    uuid,
                    directory: row.try_get(2)?,
                    xml_path: row.try_get(3)?,
                    kind,
                    entries: Arc::new(BTreeMap::new()),
                },
            );
        }
        for row in
            sqlx::query("SELECT dataset_uuid, path, kind, source, dev, ino, size FROM entries")
                .fetch_all(&self.pool)
                .await?
        {
            let Ok(uuid) = Uuid::parse_str(row.try_get::<&str, _>(0)?) else {
                continue;
            };
            let Some(dataset) = owners
                .get(&uuid)
                .and_then(|p| projects.get_mut(p))
                .and_then(|p| p.datasets.get_mut(&uuid))
            else {
                continue;
            };
            let entry = match row.try_get::<&str, _>(2)? {
                "dir" => EntryRecord::Dir,
                _ => EntryRecord::File(FileRecord {
                    source: row.try_get::<Option<String>, _>(3)?.unwrap_or_default(),
                    dev: row.try_get::<Option<i64>, _>(4)?.unwrap_or_default() as u64,
                    ino: row.try_get::<Option<i64>, _>(5)?.unwrap_or_default() as u64,
                    size: row.try_get::<Option<i64>, _>(6)?.unwrap_or_default() as u64,
                }),
            };
            Arc::make_mut(&mut dataset.entries).insert(row.try_get(1)?, entry);
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
    pub fn holder_of_dataset(&self, uuid: &Uuid) -> Option<ProjectId> {
        self.read().by_dataset.get(uuid).copied()
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
                Some(new) => rows.dataset_deletes.extend(
                    old.datasets
                        .keys()
                        .filter(|u| !new.datasets.contains_key(u))
                        .map(|u| (u.to_string(), id.get())),
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
            for dataset in new.datasets.values() {
                let before = old.as_ref().and_then(|o| o.datasets.get(&dataset.uuid));
                rows.dataset(*id, dataset, before);
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
        // A dataset that moved keeps pointing at its new owner.
        let owners: Vec<(Uuid, ProjectId)> = cache
            .projects
            .values()
            .flat_map(|p| p.datasets.keys().map(move |u| (*u, p.id)))
            .collect();
        cache.by_dataset = owners.into_iter().collect();
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

/// The rows one transaction writes, gathered so that each kind goes in as few statements as
/// possible.
#[derive(Debug, Default)]
struct Rows<'a> {
    project_deletes: Vec<i64>,
    /// (dataset, owner)
    dataset_deletes: Vec<(String, i64)>,
    /// (id, directory, updated_at)
    projects: Vec<(i64, &'a str, i64)>,
    /// (uuid, project, directory, xml path, kind)
    datasets: Vec<(String, i64, &'a str, &'a str, &'static str)>,
    /// Datasets new to their project: their entries start from nothing.
    entry_resets: Vec<String>,
    /// (dataset, path)
    entry_deletes: Vec<(String, &'a str)>,
    /// (dataset, path, entry)
    entries: Vec<(String, &'a str, &'a EntryRecord)>,
}

impl<'a> Rows<'a> {
    fn dataset(
        &mut self,
        project: ProjectId,
        new: &'a DatasetRecord,
        old: Option<&'a DatasetRecord>,
    ) {
        let uuid = new.uuid.to_string();
        let same_row = old.is_some_and(|o| {
            o.directory == new.directory && o.xml_path == new.xml_path && o.kind == new.kind
        });
        if !same_row {
            self.datasets.push((
                uuid.clone(),
                project.get(),
                &new.directory,
                &new.xml_path,
                new.kind.as_str(),
            ));
        }
        let old_entries = match old {
            Some(o) => Some(&*o.entries),
            None => {
                // New to this project (possibly moved from another): start from nothing.
                self.entry_resets.push(uuid.clone());
                None
            }
        };
        if let Some(old_entries) = old_entries {
            self.entry_deletes.extend(
                old_entries
                    .iter()
                    .filter(|(k, v)| new.entries.get(*k) != Some(*v))
                    .map(|(k, _)| (uuid.clone(), k.as_str())),
            );
        }
        self.entries.extend(
            new.entries
                .iter()
                .filter(|(k, v)| old_entries.is_none_or(|o| o.get(*k) != Some(*v)))
                .map(|(k, v)| (uuid.clone(), k.as_str(), v)),
        );
    }

    fn is_empty(&self) -> bool {
        self.project_deletes.is_empty()
            && self.dataset_deletes.is_empty()
            && self.projects.is_empty()
            && self.datasets.is_empty()
            && self.entry_resets.is_empty()
            && self.entry_deletes.is_empty()
            && self.entries.is_empty()
    }

    /// Appends the statements (each ended by `; `) to `q`.
    fn push_statements<'q>(&'q self, q: &mut QueryBuilder<'q, Sqlite>) {
        for id in &self.project_deletes {
            q.push("DELETE FROM projects WHERE id = ")
                .push_bind(*id)
                .push("; ");
        }
        for (uuid, project) in &self.dataset_deletes {
            q.push("DELETE FROM datasets WHERE uuid = ")
                .push_bind(uuid.as_str())
                .push(" AND project_id = ")
                .push_bind(*project)
                .push("; ");
        }
        for chunk in self.projects.chunks(BATCH) {
            q.push("INSERT INTO projects (id, directory, updated_at) ");
            q.push_values(chunk, |mut row, (id, directory, updated_at)| {
                row.push_bind(*id)
                    .push_bind(*directory)
                    .push_bind(*updated_at);
            });
            q.push(
                " ON CONFLICT (id) DO UPDATE SET directory = excluded.directory, updated_at = excluded.updated_at; ",
            );
        }
        for chunk in self.datasets.chunks(BATCH) {
            q.push("INSERT INTO datasets (uuid, project_id, directory, xml_path, kind) ");
            q.push_values(chunk, |mut row, (uuid, project, directory, xml, kind)| {
                row.push_bind(uuid.as_str())
                    .push_bind(*project)
                    .push_bind(*directory)
                    .push_bind(*xml)
                    .push_bind(*kind);
            });
            q.push(
                " ON CONFLICT (uuid) DO UPDATE SET project_id = excluded.project_id, directory = excluded.directory, \
                 xml_path = excluded.xml_path, kind = excluded.kind; ",
            );
        }
        for chunk in self.entry_resets.chunks(BATCH) {
            q.push("DELETE FROM entries WHERE dataset_uuid IN (");
            let mut list = q.separated(", ");
            for uuid in chunk {
                list.push_bind(uuid.as_str());
            }
            q.push("); ");
        }
        for (uuid, path) in &self.entry_deletes {
            q.push("DELETE FROM entries WHERE dataset_uuid = ")
                .push_bind(uuid.as_str())
                .push(" AND path = ")
                .push_bind(*path)
                .push("; ");
        }
        for chunk in self.entries.chunks(BATCH) {
            q.push("INSERT INTO entries (dataset_uuid, path, kind, source, dev, ino, size) ");
            q.push_values(chunk, |mut row, (uuid, path, entry)| {
                row.push_bind(uuid.as_str()).push_bind(*path);
                match entry {
                    EntryRecord::Dir => {
                        row.push_bind("dir")
                            .push_bind(None::<&str>)
                            .push_bind(None::<i64>)
                            .push_bind(None::<i64>)
                            .push_bind(None::<i64>);
                    }
                    EntryRecord::File(f) => {
                        row.push_bind("file")
                            .push_bind(f.source.as_str())
                            .push_bind(f.dev as i64)
                            .push_bind(f.ino as i64)
                            .push_bind(f.size as i64);
                    }
                }
            });
            q.push("; ");
        }
    }
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
            datasets: datasets
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
                        *uuid,
                        DatasetRecord {
                            uuid: *uuid,
                            directory: (*name).into(),
                            xml_path: "/s/x.xml".into(),
                            kind: Kind::Plain,
                            entries: Arc::new(entries),
                        },
                    )
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn queued_writers_share_a_transaction_and_a_failing_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
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
        assert_eq!(records.holder_of_dataset(&c), Some(p5.id));

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
        let dir = tempfile::tempdir().unwrap();
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
        let moved = p2b.datasets.remove(&b).unwrap();
        let mut p3b = p3.clone();
        p3b.datasets.insert(b, moved);
        records
            .store(vec![
                (p3b.id, Some(p3b.clone())),
                (p2b.id, Some(p2b.clone())),
            ])
            .await
            .unwrap();
        assert_eq!(records.holder_of_dataset(&b), Some(p3b.id));
        assert_eq!(records.holder_of_directory("P2"), Some(p2b.id));
        drop(records);
        let reopened = Records::open(&path).await.unwrap();
        assert_eq!(*reopened.project(p2b.id).unwrap(), p2b);
        assert_eq!(*reopened.project(p3b.id).unwrap(), p3b);
        reopened.store(vec![(p2b.id, None)]).await.unwrap();
        assert!(reopened.project(p2b.id).is_none());
        assert_eq!(reopened.holder_of_dataset(&a), None);
        assert_eq!(reopened.all().len(), 1);
    }
}

//! The rows one records transaction writes, and a dataset's or job's entries as JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::{QueryBuilder, Sqlite};

use crate::model::{EntryRecord, ItemId, ItemRecord, ItemSource, ProjectId};

/// Rows per multi-row insert.
const BATCH: usize = 100;

/// The rows one transaction writes, gathered so that each kind goes in as few statements as
/// possible.
#[derive(Debug, Default)]
pub(super) struct Rows<'a> {
    pub(super) project_deletes: Vec<i64>,
    /// (dataset or job, owner)
    pub(super) item_deletes: Vec<(ItemId, i64)>,
    /// (id, directory, updated_at)
    pub(super) projects: Vec<(i64, &'a str, i64)>,
    /// (uuid, project, directory, xml path, kind, entries as JSON)
    pub(super) datasets: Vec<(String, i64, &'a str, &'a str, &'static str, String)>,
    /// (job id, project, directory, entries as JSON)
    pub(super) jobs: Vec<(i64, i64, &'a str, String)>,
}

impl<'a> Rows<'a> {
    /// A dataset's or job's row, unless it is recorded as it is.
    pub(super) fn item(
        &mut self,
        project: ProjectId,
        new: &'a ItemRecord,
        old: Option<&'a ItemRecord>,
    ) {
        let same = old.is_some_and(|o| {
            o.directory == new.directory
                && o.source == new.source
                && (Arc::ptr_eq(&o.entries, &new.entries) || o.entries == new.entries)
        });
        if same {
            return;
        }
        match (new.item, &new.source) {
            (ItemId::Dataset(uuid), ItemSource::Dataset { xml_path, kind }) => {
                self.datasets.push((
                    uuid.to_string(),
                    project.get(),
                    &new.directory,
                    xml_path,
                    kind.as_str(),
                    entries_json(&new.entries),
                ))
            }
            (ItemId::Job(id), _) => self.jobs.push((
                id.get(),
                project.get(),
                &new.directory,
                entries_json(&new.entries),
            )),
            // Not made: a dataset's record always comes from its XML.
            (ItemId::Dataset(_), ItemSource::Job) => {}
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.project_deletes.is_empty()
            && self.item_deletes.is_empty()
            && self.projects.is_empty()
            && self.datasets.is_empty()
            && self.jobs.is_empty()
    }

    /// Appends the statements (each ended by `; `) to `q`.
    pub(super) fn push_statements<'q>(&'q self, q: &mut QueryBuilder<'q, Sqlite>) {
        for id in &self.project_deletes {
            q.push("DELETE FROM projects WHERE id = ")
                .push_bind(*id)
                .push("; ");
        }
        for (item, project) in &self.item_deletes {
            match item {
                ItemId::Dataset(uuid) => q
                    .push("DELETE FROM datasets WHERE uuid = ")
                    .push_bind(uuid.to_string()),
                ItemId::Job(id) => q
                    .push("DELETE FROM analysis_jobs WHERE job_id = ")
                    .push_bind(id.get()),
            };
            q.push(" AND project_id = ").push_bind(*project).push("; ");
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
            q.push("INSERT INTO datasets (uuid, project_id, directory, xml_path, kind, entries) ");
            q.push_values(
                chunk,
                |mut row, (uuid, project, directory, xml, kind, entries)| {
                    row.push_bind(uuid.as_str())
                        .push_bind(*project)
                        .push_bind(*directory)
                        .push_bind(*xml)
                        .push_bind(*kind)
                        .push_bind(entries.as_str());
                },
            );
            q.push(
                " ON CONFLICT (uuid) DO UPDATE SET project_id = excluded.project_id, directory = excluded.directory, \
                 xml_path = excluded.xml_path, kind = excluded.kind, entries = excluded.entries; ",
            );
        }
        for chunk in self.jobs.chunks(BATCH) {
            q.push("INSERT INTO analysis_jobs (job_id, project_id, directory, entries) ");
            q.push_values(chunk, |mut row, (id, project, directory, entries)| {
                row.push_bind(*id)
                    .push_bind(*project)
                    .push_bind(*directory)
                    .push_bind(entries.as_str());
            });
            q.push(
                " ON CONFLICT (job_id) DO UPDATE SET project_id = excluded.project_id, \
                 directory = excluded.directory, entries = excluded.entries; ",
            );
        }
    }
}

/// A dataset's entries as the JSON array its row holds (see migration 0002): `[path, "dir"]` or
/// `[path, "file", source, dev, ino, size]` each (dev, ino and size as the signed 64-bit integers
/// SQLite stores).
fn entries_json(entries: &BTreeMap<String, EntryRecord>) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(entries.len() * 160 + 2);
    out.push('[');
    for (i, (path, entry)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('[');
        json_string(&mut out, path);
        match entry {
            EntryRecord::Dir => out.push_str(",\"dir\"]"),
            EntryRecord::File(f) => {
                out.push_str(",\"file\",");
                json_string(&mut out, &f.source);
                let _ = write!(out, ",{},{},{}]", f.dev as i64, f.ino as i64, f.size as i64);
            }
        }
    }
    out.push(']');
    out
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

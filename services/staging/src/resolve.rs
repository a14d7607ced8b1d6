//! From a dataset XML to the desired content of its directory: which files, under which names.
//!
//! Sources must lie under a configured source root and be regular files; their directories are
//! opened as [`crate::sources`] says. The final component is never followed: a symlinked XML or
//! data file is refused.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::FileType;
use rustix::io::Errno;
use uuid::Uuid;

use crate::budget::ParseBudget;
use crate::fault::{Fault, Faults};
use crate::fs::{self, describe};
use crate::model::{DatasetSpec, Kind, join};
use crate::names::{self, Namer, Values};
use crate::sourcecache::{SourceCache, Stamp};
pub use crate::sources::{SourceDir, SourceRoots};
use crate::xml::{self, DataSetDoc, Limits};

/// Bytes read from a dataset XML at a time.
const READ_BUFFER: usize = 64 * 1024;

/// A source file found and checked: a regular file under a source root.
#[derive(Debug)]
pub struct Source {
    /// Canonical absolute path.
    pub path: String,
    /// Where its base name starts in `path`.
    name_at: usize,
    /// Its directory's canonical path (the directory itself is opened by each request: see
    /// [`Layout::dir_of`]).
    pub dir: Arc<Path>,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size, when it was looked at (a directory listing does not tell).
    pub size: Option<u64>,
}

impl Source {
    /// Base name (the name it gets in the dataset directory).
    pub fn name(&self) -> &str {
        &self.path[self.name_at..]
    }
}

/// What a path in a dataset directory should be.
#[derive(Clone, Debug)]
pub enum Want {
    /// A sub-directory.
    Dir,
    /// A hard link to this source.
    File(Arc<Source>),
}

/// A child staged inside its parent's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildDir {
    /// The child's UUID, when its XML or the parent's reference carries one.
    pub uuid: Option<Uuid>,
    /// Its sub-directory name.
    pub dir: String,
    /// Files in it.
    pub files: u32,
}

/// The desired content of one dataset directory.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Plain or parent.
    pub kind: Kind,
    /// Directory name (before names are made unique within the project).
    pub name: String,
    /// Entries by '/'-separated path relative to the dataset directory (a directory sorts before
    /// what it holds). Shared with the source cache when the layout is kept there.
    pub entries: Arc<BTreeMap<String, Want>>,
    /// A parent's children.
    pub children: Vec<ChildDir>,
    /// The directories its files are in, opened by this request.
    pub dirs: Vec<Arc<SourceDir>>,
}

impl Layout {
    /// The opened directory `source` is in (`None` only if the layout was put together wrongly).
    pub fn dir_of(&self, source: &Source) -> Option<BorrowedFd<'_>> {
        self.dirs
            .iter()
            .find(|d| Arc::ptr_eq(&d.path, &source.dir) || d.path == source.dir)
            .map(|d| d.fd.as_fd())
    }

    /// Number of files.
    pub fn file_count(&self) -> u32 {
        u32::try_from(
            self.entries
                .values()
                .filter(|w| matches!(w, Want::File(_)))
                .count(),
        )
        .unwrap_or(u32::MAX)
    }
}

/// What a resolved layout is kept under: the dataset as a request describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LayoutKey {
    xml: PathBuf,
    uuid: Uuid,
    name: String,
    parent: bool,
    orphan: bool,
}

impl LayoutKey {
    fn new(spec: &DatasetSpec, parent: bool, orphan: bool) -> Self {
        Self {
            xml: spec.xml_path.clone(),
            uuid: spec.uuid,
            name: spec.name.clone(),
            parent,
            orphan,
        }
    }
}

/// A layout as it was resolved, kept between requests with the stamps of every dataset XML it
/// was read from and of every directory whose listing found its files. It holds no open
/// directory.
#[derive(Debug)]
pub struct Resolved {
    kind: Kind,
    name: String,
    entries: Arc<BTreeMap<String, Want>>,
    children: Vec<ChildDir>,
    xmls: Vec<(PathBuf, Stamp)>,
    dirs: Vec<(Arc<Path>, Stamp)>,
}

/// What the layout being resolved was read from.
#[derive(Debug, Default)]
struct Reads {
    /// The dataset XMLs read, with their stamps.
    xmls: Vec<(PathBuf, Stamp)>,
    /// The directories the files were found in.
    dirs: Vec<Arc<SourceDir>>,
    /// False once something was read that a kept layout could not be checked against (a file
    /// looked at on its own, not through its directory's listing; a stamp too recent).
    keepable: bool,
}

impl Reads {
    fn new() -> Self {
        Self {
            keepable: true,
            ..Self::default()
        }
    }

    fn dir(&mut self, dir: &Arc<SourceDir>) {
        if !self.dirs.iter().any(|d| Arc::ptr_eq(d, dir)) {
            self.dirs.push(dir.clone());
        }
    }
}

/// Resolves datasets for one request, caching opened directories.
#[derive(Debug)]
pub struct Resolver<'a> {
    roots: &'a SourceRoots,
    limits: Limits,
    namer: &'a Namer,
    cache: &'a SourceCache,
    budget: &'a ParseBudget,
    dirs: HashMap<PathBuf, Result<Arc<SourceDir>, Fault>>,
    /// When the resolver was made: everything it reads is read after this, so a stamp settled
    /// by then was settled when it was read (a layout is kept only then).
    since: SystemTime,
    reads: Reads,
}

impl<'a> Resolver<'a> {
    /// A resolver with an empty cache of opened directories, using the shared cache of what was
    /// read and the shared parsing budget.
    pub fn new(
        roots: &'a SourceRoots,
        limits: Limits,
        namer: &'a Namer,
        cache: &'a SourceCache,
        budget: &'a ParseBudget,
    ) -> Self {
        Self {
            roots,
            limits,
            namer,
            cache,
            budget,
            dirs: HashMap::new(),
            since: SystemTime::now(),
            reads: Reads::new(),
        }
    }

    /// Starts resolving one layout: what is read from here on is recorded.
    pub fn start(&mut self) {
        self.reads = Reads::new();
    }

    /// The directories the files found since [`Self::start`] are in (a layout's `dirs`).
    pub fn dirs_used(&mut self) -> Vec<Arc<SourceDir>> {
        std::mem::take(&mut self.reads.dirs)
    }

    /// The layout kept for `key`, when every XML and directory it was resolved from still has
    /// the stamp it had (each opened as a fresh resolution would open it).
    fn kept(&mut self, key: &LayoutKey) -> Option<Layout> {
        let Some(kept) = self.cache.layout(key) else {
            self.cache.count_layout(false);
            return None;
        };
        let dirs = self.still_valid(&kept);
        self.cache.count_layout(dirs.is_some());
        Some(Layout {
            kind: kept.kind,
            name: kept.name.clone(),
            entries: kept.entries.clone(),
            children: kept.children.clone(),
            dirs: dirs?,
        })
    }

    fn still_valid(&mut self, kept: &Resolved) -> Option<Vec<Arc<SourceDir>>> {
        for (path, stamp) in &kept.xmls {
            let (_, _, meta) = self.open_xml(path).ok()?;
            if Stamp::of(&meta) != *stamp {
                return None;
            }
        }
        let mut dirs = Vec::with_capacity(kept.dirs.len());
        for (path, stamp) in &kept.dirs {
            let dir = self.dir(path).ok()?;
            if dir.stamp() != Some(*stamp) {
                return None;
            }
            dirs.push(dir);
        }
        Some(dirs)
    }

    /// Finishes a layout resolved since [`Self::start`]: its directories, and the layout kept
    /// for the next request when everything it was read from was settled.
    fn finish(
        &mut self,
        key: LayoutKey,
        kind: Kind,
        name: String,
        entries: BTreeMap<String, Want>,
        children: Vec<ChildDir>,
    ) -> Layout {
        let reads = std::mem::replace(&mut self.reads, Reads::new());
        let entries = Arc::new(entries);
        let dirs: Option<Vec<(Arc<Path>, Stamp)>> = reads
            .dirs
            .iter()
            .map(|d| {
                d.stamp()
                    .filter(|s| s.settled(self.since))
                    .map(|s| (d.path.clone(), s))
            })
            .collect();
        if let Some(dirs) = dirs.filter(|_| reads.keepable) {
            let resolved = Resolved {
                kind,
                name: name.clone(),
                entries: entries.clone(),
                children: children.clone(),
                xmls: reads.xmls,
                dirs,
            };
            self.cache.keep_layout(key, Arc::new(resolved));
        }
        Layout {
            kind,
            name,
            entries,
            children,
            dirs: reads.dirs,
        }
    }

    /// The layout of a plain dataset (or an orphaned child, named after its sample): the files of
    /// its resources and of its supplemental resources.
    pub fn plain(&mut self, spec: &DatasetSpec, orphan: bool) -> Result<Layout, Fault> {
        let key = LayoutKey::new(spec, false, orphan);
        if let Some(layout) = self.kept(&key) {
            return Ok(layout);
        }
        self.start();
        let (dir, doc) = self.read_xml(&spec.xml_path)?;
        check_uuid(&spec.xml_path, &doc, spec.uuid)?;
        let mut entries = BTreeMap::new();
        let mut problems = Faults::default();
        self.add_files(
            &mut entries,
            "",
            &dir,
            &doc.files(),
            &spec.xml_path,
            &mut problems,
        );
        problems.result()?;
        let c = &doc.collection;
        let name = if orphan {
            c.sample.as_deref().unwrap_or(&spec.name)
        } else {
            &spec.name
        };
        let values = Values {
            movie: c.movie.as_deref().unwrap_or(names::UNKNOWN_MOVIE),
            name,
            well_sample: c.well_sample.as_deref().unwrap_or(name),
            sample: c.sample.as_deref().unwrap_or(name),
            barcode: c.barcode.as_deref().unwrap_or(names::NO_BARCODE),
            n: 0,
            uuid: Some(spec.uuid),
        };
        let name = self.namer.dataset(&values);
        Ok(self.finish(key, Kind::Plain, name, entries, Vec::new()))
    }

    /// The layout of a demultiplexed parent: one sub-directory per child (from the child's XML:
    /// its resources and supplemental resources), and the parent's supplemental run data.
    pub fn parent(&mut self, spec: &DatasetSpec) -> Result<Layout, Fault> {
        let key = LayoutKey::new(spec, true, false);
        if let Some(layout) = self.kept(&key) {
            return Ok(layout);
        }
        self.start();
        let (dir, doc) = self.read_xml(&spec.xml_path)?;
        check_uuid(&spec.xml_path, &doc, spec.uuid)?;
        let xml = &spec.xml_path;
        let mut entries = BTreeMap::new();
        let mut problems = Faults::default();
        let mut children = Vec::new();
        let mut child_names: Vec<(String, String)> = Vec::new();
        let mut child_files = Vec::new();
        for (index, resource) in doc.resources.iter().enumerate() {
            let Some(nested) = resource.nested_dataset() else {
                // A resource without a child XML: its files stay in the parent's own directory.
                let mut ids = Vec::new();
                resource.data_files(&mut ids);
                self.add_files(&mut entries, "", &dir, &ids, xml, &mut problems);
                continue;
            };
            let read = resolve_id(&dir.path, &nested.resource_id)
                .and_then(|path| Ok((self.read_xml(&path)?, path)));
            let ((child_dir, child_doc), child_path) = match read {
                Ok(read) => read,
                Err(e) => {
                    problems.push(e.context(format_args!(
                        "{}: child dataset #{} (ResourceId {:?})",
                        xml.display(),
                        index + 1,
                        nested.resource_id
                    )));
                    continue;
                }
            };
            let uuid = nested
                .unique_id
                .as_deref()
                .or(child_doc.uuid.as_deref())
                .and_then(|u| Uuid::parse_str(u).ok());
            let c = &child_doc.collection;
            let fallback = child_doc
                .name
                .clone()
                .unwrap_or_else(|| format!("sample {}", index + 1));
            let values = Values {
                movie: c.movie.as_deref().unwrap_or(names::UNKNOWN_MOVIE),
                name: &fallback,
                well_sample: c.well_sample.as_deref().unwrap_or(&fallback),
                sample: c.sample.as_deref().unwrap_or(&fallback),
                barcode: c.barcode.as_deref().unwrap_or(names::NO_BARCODE),
                n: 0,
                uuid,
            };
            let key = uuid
                .map(|u| u.to_string())
                .unwrap_or_else(|| format!("child{}", index + 1));
            child_names.push((key, self.namer.child(&values)));
            child_files.push((uuid, child_dir, child_doc.files(), child_path));
        }
        let supplemental_ids = doc.supplemental_files();
        if !supplemental_ids.is_empty() {
            child_names.push(("supplemental".into(), self.namer.supplemental().to_owned()));
        }
        names::disambiguate(&mut child_names);
        for ((_, name), (uuid, child_dir, ids, child_path)) in child_names.iter().zip(child_files) {
            if let Err(e) = insert_dir(&mut entries, name) {
                problems.push(e.context(xml.display()));
                continue;
            }
            self.add_files(
                &mut entries,
                name,
                &child_dir,
                &ids,
                &child_path,
                &mut problems,
            );
            let files = u32::try_from(
                entries
                    .range(format!("{name}/")..)
                    .take_while(|(k, _)| k.starts_with(&format!("{name}/")))
                    .count(),
            )
            .unwrap_or(u32::MAX);
            children.push(ChildDir {
                uuid,
                dir: name.clone(),
                files,
            });
        }
        if let Some((_, supplemental)) = child_names.last().filter(|_| !supplemental_ids.is_empty())
        {
            match insert_dir(&mut entries, supplemental) {
                Ok(()) => self.add_files(
                    &mut entries,
                    supplemental,
                    &dir,
                    &supplemental_ids,
                    xml,
                    &mut problems,
                ),
                Err(e) => problems.push(e.context(xml.display())),
            }
        }
        problems.result()?;
        let c = &doc.collection;
        let values = Values {
            movie: c.movie.as_deref().unwrap_or(names::UNKNOWN_MOVIE),
            name: &spec.name,
            well_sample: c.well_sample.as_deref().unwrap_or(&spec.name),
            sample: c.sample.as_deref().unwrap_or(&spec.name),
            barcode: c.barcode.as_deref().unwrap_or(names::NO_BARCODE),
            n: children.len(),
            uuid: Some(spec.uuid),
        };
        let name = self.namer.parent(&values);
        Ok(self.finish(key, Kind::Parent, name, entries, children))
    }

    /// Adds the files `ids` name (relative to `base`) under `dir_rel`; every id that does not
    /// resolve, and every name two files would share, is a problem of its own.
    fn add_files(
        &mut self,
        entries: &mut BTreeMap<String, Want>,
        dir_rel: &str,
        base: &SourceDir,
        ids: &[String],
        xml: &Path,
        problems: &mut Faults,
    ) {
        for id in ids {
            let source = match self.file(&base.path, id) {
                Ok(source) => source,
                Err(e) => {
                    problems.push(e.context(format_args!("{}: ResourceId {id:?}", xml.display())));
                    continue;
                }
            };
            let rel = join(&[dir_rel, source.name()]);
            let taken = match entries.entry(rel) {
                Entry::Vacant(place) => {
                    place.insert(Want::File(source));
                    continue;
                }
                Entry::Occupied(taken) => taken,
            };
            let rel = taken.key();
            match taken.get() {
                Want::File(existing) if existing.path == source.path => {}
                Want::File(existing) => problems.push(Fault::permanent(format!(
                    "{}: two different files would be named {rel:?} in the dataset directory: {} and {}",
                    xml.display(),
                    existing.path,
                    source.path
                ))),
                Want::Dir => problems.push(Fault::permanent(format!(
                    "{}: {rel:?} would be both a directory and the file {}",
                    xml.display(),
                    source.path
                ))),
            }
        }
    }

    /// Resolves a ResourceId (absolute, or relative to `base`) to a checked source file.
    pub fn file(&mut self, base: &Path, id: &str) -> Result<Arc<Source>, Fault> {
        let full = resolve_id(base, id)?;
        let (Some(parent), Some(name)) = (full.parent(), full.file_name().and_then(|n| n.to_str()))
        else {
            return Err(Fault::permanent(format!(
                "{} does not name a file",
                full.display()
            )));
        };
        if matches!(
            full.components().next_back(),
            Some(Component::ParentDir | Component::CurDir)
        ) {
            return Err(Fault::permanent(format!(
                "{} does not name a file",
                full.display()
            )));
        }
        let dir = self.dir(parent)?;
        self.reads.dir(&dir);
        let path = dir.path.join(name);
        let (kind, dev, ino, size) = match dir.lookup(self.cache, name) {
            Some(Some((dev, kind, ino))) => (kind, dev, ino, None),
            Some(None) => return Err(not_found(&path)),
            None => {
                self.reads.keepable = false;
                let meta = fs::lstat_at(dir.fd.as_fd(), name).map_err(|e| match e {
                    Errno::NOENT => not_found(&path),
                    other => {
                        Fault::errno(other, format!("{}: {}", path.display(), describe(other)))
                    }
                })?;
                (meta.kind, meta.dev, meta.ino, Some(meta.size))
            }
        };
        check_regular(&path, kind)?;
        let path = path
            .to_str()
            .ok_or_else(|| {
                Fault::permanent(format!("{}: path is not valid UTF-8", path.display()))
            })?
            .to_owned();
        // The directory's path joined with a single-component name: the name ends it.
        let name_at = path.strip_suffix(name).map_or(0, str::len);
        Ok(Arc::new(Source {
            path,
            name_at,
            dir: dir.path.clone(),
            dev,
            ino,
            size,
        }))
    }

    /// Reads and parses a dataset XML under the source roots (or takes the document parsed from the
    /// unchanged file before); returns its opened directory too.
    pub fn read_xml(&mut self, path: &Path) -> Result<(Arc<SourceDir>, Arc<DataSetDoc>), Fault> {
        let (dir, fd, meta) = self.open_xml(path)?;
        let stamp = Stamp::of(&meta);
        self.reads.keepable &= stamp.settled(self.since);
        self.reads.xmls.push((path.to_path_buf(), stamp));
        if let Some(doc) = self.cache.doc(&meta) {
            return Ok((dir, doc));
        }
        let shown = path.display();
        // Parsed as it is read: what a parse holds is what it keeps; the budget bounds that for
        // many large XMLs at once.
        let _memory = self.budget.take(meta.size, path);
        let read_at = SystemTime::now();
        let source = std::io::BufReader::with_capacity(
            READ_BUFFER,
            std::fs::File::from(fd).take(self.limits.max_bytes + 1),
        );
        let doc = Arc::new(
            xml::parse_from(source, &self.limits)
                .map_err(|e| e.context(format_args!("dataset XML {shown}")))?,
        );
        self.cache.keep_doc(&meta, doc.clone(), read_at);
        Ok((dir, doc))
    }

    /// Opens a dataset XML under the source roots and checks it is a regular file within the
    /// size limit.
    fn open_xml(&mut self, path: &Path) -> Result<(Arc<SourceDir>, OwnedFd, fs::Meta), Fault> {
        let shown = path.display();
        if !path.is_absolute() {
            return Err(Fault::permanent(format!(
                "{shown}: the dataset XML path must be absolute"
            )));
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return Err(Fault::permanent(format!("{shown}: does not name a file")));
        };
        let dir = self
            .dir(parent)
            .map_err(|e| e.context(format_args!("dataset XML {shown}")))?;
        let fd = fs::open_file(dir.fd.as_fd(), name).map_err(|e| match e {
            Errno::NOENT => Fault::permanent(format!("dataset XML {shown}: not found")),
            Errno::LOOP => Fault::permanent(format!(
                "dataset XML {shown}: is a symbolic link; only regular files are read"
            )),
            other => Fault::errno(other, format!("dataset XML {shown}: {}", describe(other))),
        })?;
        let meta = fs::fstat(fd.as_fd())
            .map_err(|e| Fault::errno(e, format!("dataset XML {shown}: {}", describe(e))))?;
        check_regular(path, meta.kind).map_err(|e| e.map_text(|t| format!("dataset XML {t}")))?;
        if meta.size > self.limits.max_bytes {
            return Err(Fault::permanent(format!(
                "dataset XML {shown}: {} bytes is more than the limit of {} bytes",
                meta.size, self.limits.max_bytes
            )));
        }
        Ok((dir, fd, meta))
    }

    fn dir(&mut self, dir: &Path) -> Result<Arc<SourceDir>, Fault> {
        if let Some(found) = self.dirs.get(dir) {
            return found.clone();
        }
        let result = self.roots.open_dir(dir).map(Arc::new);
        self.dirs.insert(dir.to_path_buf(), result.clone());
        result
    }
}

/// Joins a ResourceId to the XML's directory (absolute ids stand alone). A `file://` URL is
/// decoded as pbcore does (`file:///data/run%201/a.bam` is `/data/run 1/a.bam`).
fn resolve_id(base: &Path, id: &str) -> Result<PathBuf, Fault> {
    let path = if id.starts_with("file://") {
        let url = url::Url::parse(id)
            .map_err(|e| Fault::permanent(format!("not a valid file URL ({e})")))?;
        let path = url
            .to_file_path()
            .map_err(|()| Fault::permanent("not a local file URL (it names another host)"))?;
        if path.as_os_str().as_encoded_bytes().contains(&0) {
            return Err(Fault::permanent(
                "the file URL decodes to a path holding NUL",
            ));
        }
        path
    } else {
        PathBuf::from(id)
    };
    Ok(if path.is_absolute() {
        path
    } else {
        base.join(path)
    })
}

/// Checks that the XML is the dataset the request names.
fn check_uuid(xml: &Path, doc: &DataSetDoc, uuid: Uuid) -> Result<(), Fault> {
    let shown = xml.display();
    let refused = |text: String| Err(Fault::permanent(text));
    match doc.uuid.as_deref().map(|u| (u, Uuid::parse_str(u.trim()))) {
        Some((_, Ok(found))) if found == uuid => Ok(()),
        Some((_, Ok(found))) => refused(format!(
            "dataset XML {shown}: its UniqueId is {found}, not the requested dataset {uuid}; SMRT \
             Link and the file disagree (was the file replaced?)"
        )),
        Some((text, Err(_))) => refused(format!(
            "dataset XML {shown}: its UniqueId {text:?} is not a UUID, so it cannot be dataset {uuid}"
        )),
        None => refused(format!(
            "dataset XML {shown}: it has no UniqueId, so it cannot be told to be dataset {uuid}"
        )),
    }
}

fn check_regular(path: &Path, kind: FileType) -> Result<(), Fault> {
    let refused = |text: String| Err(Fault::permanent(text));
    match kind {
        FileType::RegularFile => Ok(()),
        FileType::Symlink => refused(format!(
            "{}: is a symbolic link; only regular files are staged",
            path.display()
        )),
        FileType::Directory => refused(format!(
            "{}: is a directory, not a regular file",
            path.display()
        )),
        _ => refused(format!("{}: is not a regular file", path.display())),
    }
}

fn insert_dir(entries: &mut BTreeMap<String, Want>, name: &str) -> Result<(), Fault> {
    match entries.insert(name.to_owned(), Want::Dir) {
        Some(Want::File(s)) => Err(Fault::permanent(format!(
            "{name:?} would be both a directory and the file {}",
            s.path
        ))),
        _ => Ok(()),
    }
}

fn not_found(path: &Path) -> Fault {
    Fault::permanent(format!("{}: file not found", path.display()))
}

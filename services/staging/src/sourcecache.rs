//! What staging reads from the source tree, kept between requests, each piece used only while
//! the file or directory it came from is unchanged: parsed dataset XMLs, source directory
//! listings (names, types and inode numbers), and resolved dataset layouts (what a dataset's
//! directory should hold), each with the stamps of every XML and directory it was resolved from.
//!
//! Every apply resolves every dataset of the project, and a resync re-applies every project;
//! SMRT Link writes a run's files once. A piece is reused when the file or directory just opened
//! has the same device, inode, size and change time (ctime) as when it was read: every write to a
//! file, every entry added to, removed from or renamed in a directory, and every metadata change
//! moves ctime, and no user can set it back. A file replaced by another (the usual
//! write-then-rename) has another inode, and its directory a new ctime.
//!
//! Nothing read within [`RACY`] of the file's or directory's ctime is kept: a second change in
//! the same timestamp tick could leave ctime where it was (git's "racily clean" index entries,
//! the same rule). Such a piece is read again on each use until it is old enough.
//!
//! A layout is made of the XMLs and listings it was resolved from and nothing else (the
//! configuration aside), so it is reused when every one of them still has its stamp: the request
//! opens each XML and directory as a fresh resolution would (the same checks: under a source
//! root, no symlink on the way) and compares. It holds no open directory; the request's own
//! handles go with it.
//!
//! Each kind holds at most `capacity` pieces; when full it is emptied and fills again (`0` turns
//! the cache off). Hits and misses are counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::FileType;

use crate::fs::Meta;
use crate::resolve::{LayoutKey, Resolved};
use crate::xml::DataSetDoc;

/// How recent a ctime may be, relative to the moment of the read, and what was read still kept.
pub const RACY: Duration = Duration::from_secs(2);

/// Default number of pieces kept of each kind.
pub const DEFAULT_CAPACITY: usize = 20_000;

/// A directory's entries: name to type and inode number.
pub type Listing = HashMap<String, (FileType, u64)>;

/// What tells an unchanged file or directory from a changed one: device, inode, size and ctime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, u64),
}

impl Stamp {
    /// The stamp of what `meta` describes.
    pub fn of(meta: &Meta) -> Self {
        Self {
            dev: meta.dev,
            ino: meta.ino,
            size: meta.size,
            ctime: meta.ctime,
        }
    }

    /// True when the change it stamps lies at least [`RACY`] before `read_at`.
    pub fn settled(&self, read_at: SystemTime) -> bool {
        settled(self.ctime, read_at)
    }
}

/// Pieces kept by a key of their own, each holding the stamps it is valid for (checked by the
/// caller).
#[derive(Debug)]
struct Keyed<K, T> {
    capacity: usize,
    kept: Mutex<HashMap<K, Arc<T>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<K: std::hash::Hash + Eq, T> Keyed<K, T> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            kept: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn get(&self, key: &K) -> Option<Arc<T>> {
        if self.capacity == 0 {
            return None;
        }
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(key).cloned()
    }

    fn put(&self, key: K, value: Arc<T>) {
        if self.capacity == 0 {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() >= self.capacity && !kept.contains_key(&key) {
            kept.clear();
        }
        kept.insert(key, value);
    }

    /// Counts a look-up (none while the cache is off).
    fn count(&self, hit: bool) {
        if self.capacity == 0 {
            return;
        }
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[derive(Debug)]
struct Kept<T> {
    size: u64,
    ctime: (i64, u64),
    value: Arc<T>,
}

/// Pieces of one kind by device and inode, each used while size and ctime are unchanged.
#[derive(Debug)]
struct Stamped<T>(Keyed<(u64, u64), Kept<T>>);

impl<T> Stamped<T> {
    fn new(capacity: usize) -> Self {
        Self(Keyed::new(capacity))
    }

    fn get(&self, meta: &Meta) -> Option<Arc<T>> {
        let found = self
            .0
            .get(&(meta.dev, meta.ino))
            .filter(|k| k.size == meta.size && k.ctime == meta.ctime)
            .map(|k| k.value.clone());
        self.0.count(found.is_some());
        found
    }

    fn put(&self, meta: &Meta, value: Arc<T>, read_at: SystemTime) {
        if !settled(meta.ctime, read_at) {
            return;
        }
        let kept = Kept {
            size: meta.size,
            ctime: meta.ctime,
            value,
        };
        self.0.put((meta.dev, meta.ino), Arc::new(kept));
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn counts(&self) -> (u64, u64) {
        self.0.counts()
    }
}

/// The cache (shared by every request).
#[derive(Debug)]
pub struct SourceCache {
    docs: Stamped<DataSetDoc>,
    listings: Stamped<Listing>,
    layouts: Keyed<LayoutKey, Resolved>,
}

impl Default for SourceCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl SourceCache {
    /// A cache of at most `capacity` documents and as many listings (`0`: nothing is kept).
    pub fn new(capacity: usize) -> Self {
        Self {
            docs: Stamped::new(capacity),
            listings: Stamped::new(capacity),
            layouts: Keyed::new(capacity),
        }
    }

    /// The layout last resolved for `key`, if kept; the caller checks its stamps and says
    /// whether it was used ([`Self::count_layout`]).
    pub fn layout(&self, key: &LayoutKey) -> Option<Arc<Resolved>> {
        self.layouts.get(key)
    }

    /// Counts a layout look-up: used, or resolved anew.
    pub fn count_layout(&self, hit: bool) {
        self.layouts.count(hit);
    }

    /// Keeps a resolved layout (the caller made sure every stamp in it was settled).
    pub fn keep_layout(&self, key: LayoutKey, resolved: Arc<Resolved>) {
        self.layouts.put(key, resolved);
    }

    /// Layout look-ups answered from the cache, and those that resolved anew.
    pub fn layout_counts(&self) -> (u64, u64) {
        self.layouts.counts()
    }

    /// The document parsed from the file `meta` describes (`fstat` of the opened file), if it
    /// is kept and the file is unchanged since.
    pub fn doc(&self, meta: &Meta) -> Option<Arc<DataSetDoc>> {
        self.docs.get(meta)
    }

    /// Keeps `doc`, parsed from the file `meta` describes (taken before the file was read),
    /// unless the file changed too shortly before `read_at` to tell it from a later change.
    pub fn keep_doc(&self, meta: &Meta, doc: Arc<DataSetDoc>, read_at: SystemTime) {
        self.docs.put(meta, doc, read_at);
    }

    /// The listing of the directory `meta` describes (`fstat` of the opened directory), if it is
    /// kept and the directory is unchanged since.
    pub fn listing(&self, meta: &Meta) -> Option<Arc<Listing>> {
        self.listings.get(meta)
    }

    /// Keeps `listing`, read from the directory `meta` describes (taken before it was read),
    /// unless the directory changed too shortly before `read_at`.
    pub fn keep_listing(&self, meta: &Meta, listing: Arc<Listing>, read_at: SystemTime) {
        self.listings.put(meta, listing, read_at);
    }

    /// Documents, listings and layouts kept now.
    pub fn len(&self) -> (usize, usize, usize) {
        (self.docs.len(), self.listings.len(), self.layouts.len())
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0, 0)
    }

    /// Document look-ups answered from the cache, and those that had to read and parse.
    pub fn doc_counts(&self) -> (u64, u64) {
        self.docs.counts()
    }

    /// Listing look-ups answered from the cache, and those that had to read the directory.
    pub fn listing_counts(&self) -> (u64, u64) {
        self.listings.counts()
    }
}

/// True when a ctime lies at least [`RACY`] before `read_at` (a ctime in the future, as a clock
/// skewed against a file server's can give, is never settled).
fn settled(ctime: (i64, u64), read_at: SystemTime) -> bool {
    let Ok(secs) = u64::try_from(ctime.0) else {
        return false;
    };
    let changed = UNIX_EPOCH + Duration::new(secs, u32::try_from(ctime.1).unwrap_or(0));
    read_at.duration_since(changed).is_ok_and(|age| age >= RACY)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::xml::Collection;

    fn meta(ino: u64, size: u64, ctime: i64) -> Meta {
        Meta {
            kind: FileType::RegularFile,
            dev: 1,
            ino,
            mode: 0o644,
            size,
            nlink: 1,
            ctime: (ctime, 0),
            uid: 0,
        }
    }

    fn doc(name: &str) -> Arc<DataSetDoc> {
        Arc::new(DataSetDoc {
            root: "ConsensusReadSet".into(),
            uuid: None,
            name: Some(name.into()),
            resources: Vec::new(),
            supplemental: Vec::new(),
            collection: Collection::default(),
        })
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_document_is_reused_only_while_size_and_ctime_are_unchanged() {
        let cache = SourceCache::new(10);
        cache.keep_doc(&meta(7, 100, 1000), doc("a"), at(1010));
        assert_eq!(
            cache.doc(&meta(7, 100, 1000)).unwrap().name.as_deref(),
            Some("a")
        );
        assert!(cache.doc(&meta(7, 101, 1000)).is_none(), "size changed");
        assert!(cache.doc(&meta(7, 100, 1001)).is_none(), "ctime changed");
        assert!(cache.doc(&meta(8, 100, 1000)).is_none(), "another inode");
        let mut other_dev = meta(7, 100, 1000);
        other_dev.dev = 2;
        assert!(cache.doc(&other_dev).is_none(), "another device");
        assert_eq!(cache.doc_counts(), (1, 4));
    }

    #[test]
    fn nothing_changed_just_before_it_was_read_is_kept() {
        let cache = SourceCache::new(10);
        cache.keep_doc(&meta(1, 10, 1000), doc("racy"), at(1001));
        assert!(cache.is_empty(), "ctime 1 s before the read");
        cache.keep_doc(&meta(2, 10, 1005), doc("future"), at(1000));
        assert!(cache.is_empty(), "ctime after the read (skewed clocks)");
        cache.keep_listing(&meta(4, 10, 1000), Arc::new(Listing::new()), at(1001));
        assert!(cache.is_empty(), "a listing follows the same rule");
        cache.keep_doc(&meta(3, 10, 1000), doc("settled"), at(1002));
        assert_eq!(cache.len(), (1, 0, 0));
    }

    #[test]
    fn a_full_cache_is_emptied_and_zero_capacity_keeps_nothing() {
        let cache = SourceCache::new(2);
        cache.keep_doc(&meta(1, 10, 0), doc("1"), at(100));
        cache.keep_doc(&meta(2, 10, 0), doc("2"), at(100));
        cache.keep_doc(&meta(2, 10, 0), doc("2 again"), at(100));
        assert_eq!(
            cache.len(),
            (2, 0, 0),
            "replacing a kept file does not empty it"
        );
        cache.keep_doc(&meta(3, 10, 0), doc("3"), at(100));
        assert_eq!(cache.len(), (1, 0, 0));
        assert!(cache.doc(&meta(3, 10, 0)).is_some());

        let off = SourceCache::new(0);
        off.keep_doc(&meta(1, 10, 0), doc("1"), at(100));
        off.keep_listing(&meta(2, 10, 0), Arc::new(Listing::new()), at(100));
        assert!(off.doc(&meta(1, 10, 0)).is_none());
        assert!(off.listing(&meta(2, 10, 0)).is_none());
        assert_eq!((off.doc_counts(), off.listing_counts()), ((0, 0), (0, 0)));
    }

    #[test]
    fn a_listing_is_reused_while_the_directory_is_unchanged() {
        let cache = SourceCache::new(10);
        let mut dir = Meta {
            kind: FileType::Directory,
            dev: 1,
            ino: 5,
            mode: 0o755,
            size: 4096,
            nlink: 2,
            ctime: (1000, 5),
            uid: 0,
        };
        let listing: Listing = [("a.bam".to_owned(), (FileType::RegularFile, 9))].into();
        cache.keep_listing(&dir, Arc::new(listing), at(1003));
        assert_eq!(
            cache.listing(&dir).unwrap()["a.bam"],
            (FileType::RegularFile, 9)
        );
        assert!(
            cache.doc(&dir).is_none(),
            "documents and listings are kept apart"
        );
        dir.ctime = (1000, 6);
        assert!(
            cache.listing(&dir).is_none(),
            "an entry added, removed or renamed moves ctime"
        );
        assert_eq!(cache.listing_counts(), (1, 1));
    }
}

//! The source cache: a settled, unchanged dataset XML is not parsed again and a settled source
//! directory is not listed again; an XML rewritten in place (same inode, same size) is parsed
//! again, and a directory whose entries changed is listed again.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use smrtshare_staging::budget::ParseBudget;
use smrtshare_staging::model::DatasetSpec;
use smrtshare_staging::names::{Namer, Templates};
use smrtshare_staging::resolve::{Resolver, SourceRoots};
use smrtshare_staging::sourcecache::{RACY, SourceCache};
use smrtshare_staging::xml::Limits;

const UUID: &str = "00000000-0000-4000-8000-00000000cace";

fn dataset_xml(files: &[&str]) -> String {
    let ids: Vec<String> = files.iter().map(|f| format!("../data/{f}")).collect();
    crate::harness::dataset_xml(UUID, &ids.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Waits until the file's ctime is older than the racy window.
fn settle(path: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).unwrap();
    let changed = SystemTime::UNIX_EPOCH
        + Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32)
        + RACY
        + Duration::from_millis(50);
    if let Ok(wait) = changed.duration_since(SystemTime::now()) {
        std::thread::sleep(wait);
    }
}

fn files(resolver: &mut Resolver<'_>, spec: &DatasetSpec) -> BTreeSet<String> {
    resolver
        .plain(spec, false)
        .unwrap()
        .entries
        .into_keys()
        .collect()
}

#[test]
fn an_unchanged_xml_is_parsed_once_and_a_rewritten_one_again() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let (pb_dir, data) = (
        dir.path().join("run/pb_formats"),
        dir.path().join("run/data"),
    );
    std::fs::create_dir_all(&pb_dir).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    for f in ["a.bam", "b.bam", "c.bam"] {
        std::fs::write(data.join(f), f).unwrap();
    }
    let xml = pb_dir.join("cached.consensusreadset.xml");
    std::fs::write(&xml, dataset_xml(&["a.bam", "b.bam"])).unwrap();
    let spec = DatasetSpec {
        uuid: UUID.parse().unwrap(),
        name: "cached".into(),
        xml_path: xml.clone(),
        parent: None,
        num_children: 0,
    };
    let roots = SourceRoots::open(&[dir.path().to_path_buf()]).unwrap();
    let namer = Namer::new(Templates::default()).unwrap();
    let cache = SourceCache::new(100);
    let budget = ParseBudget::default();
    let resolve = || {
        // A resolver per request, as the service makes them; the cache is shared.
        let mut resolver = Resolver::new(&roots, Limits::default(), &namer, &cache, &budget);
        files(&mut resolver, &spec)
    };
    let ab: BTreeSet<String> = ["a.bam".to_owned(), "b.bam".to_owned()].into();

    // Just written: parsed, and not kept (it could change again within the same tick).
    assert_eq!(resolve(), ab);
    assert_eq!((cache.doc_counts(), cache.len().0), ((0, 1), 0));

    settle(&xml);
    assert_eq!(resolve(), ab);
    assert_eq!(
        (cache.doc_counts(), cache.len().0),
        ((0, 2), 1),
        "parsed and kept"
    );
    assert_eq!(resolve(), ab);
    assert_eq!(cache.doc_counts(), (1, 2), "the second read is a hit");

    // Rewritten in place to the same size: same inode, new ctime, parsed again.
    let before = std::fs::metadata(&xml).unwrap();
    std::fs::write(&xml, dataset_xml(&["a.bam", "c.bam"])).unwrap();
    let after = std::fs::metadata(&xml).unwrap();
    {
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!((before.ino(), before.len()), (after.ino(), after.len()));
    }
    let ac: BTreeSet<String> = ["a.bam".to_owned(), "c.bam".to_owned()].into();
    assert_eq!(resolve(), ac);
    assert_eq!(cache.doc_counts(), (1, 3));

    // The data directory, settled too: once it has been listed, it is not listed again.
    settle(&xml);
    settle(&data);
    assert_eq!(resolve(), ac);
    let (docs, listings) = (cache.doc_counts(), cache.listing_counts());
    assert_eq!(resolve(), ac);
    assert_eq!(resolve(), ac);
    assert_eq!(
        cache.doc_counts(),
        (docs.0 + 2, docs.1),
        "documents are hits"
    );
    assert_eq!(
        cache.listing_counts(),
        (listings.0 + 2, listings.1),
        "listings are hits"
    );

    // A data file replaced by another under its name (a new inode): the directory's ctime moved,
    // so it is listed again and the new inode is what the layout links.
    let replacement = dir.path().join("run/c.bam.new");
    std::fs::write(&replacement, "new c").unwrap();
    std::fs::rename(&replacement, data.join("c.bam")).unwrap();
    let mut resolver = Resolver::new(&roots, Limits::default(), &namer, &cache, &budget);
    let layout = resolver.plain(&spec, false).unwrap();
    let Some(smrtshare_staging::resolve::Want::File(source)) = layout.entries.get("c.bam") else {
        panic!("c.bam is not a file of the layout");
    };
    {
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            source.ino,
            std::fs::metadata(data.join("c.bam")).unwrap().ino()
        );
    }

    // A data file it names removed: found missing, although the document is cached.
    std::fs::remove_file(data.join("c.bam")).unwrap();
    let mut resolver = Resolver::new(&roots, Limits::default(), &namer, &cache, &budget);
    let err = resolver.plain(&spec, false).unwrap_err();
    assert!(
        err.text.contains("c.bam: file not found") && err.permanent,
        "{err}"
    );
    assert_eq!(
        cache.doc_counts(),
        (docs.0 + 4, docs.1),
        "the document stayed a hit"
    );
}

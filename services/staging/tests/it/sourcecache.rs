//! The source cache: a settled, unchanged dataset XML is not parsed again, a settled source
//! directory is not listed again, and a dataset whose XML and directories are all settled and
//! unchanged is not resolved again; an XML rewritten in place (same inode, same size) is parsed
//! again, and a directory whose entries changed is listed again, each making the kept layout
//! stale.

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
        .keys()
        .cloned()
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
    assert_eq!(
        cache.len(),
        (1, 1, 1),
        "the listing and the layout are kept too"
    );
    assert_eq!(resolve(), ab);
    assert_eq!(
        (cache.layout_counts(), cache.doc_counts()),
        ((1, 2), (0, 2)),
        "the second resolution takes the kept layout and does not even look the document up"
    );

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
    assert_eq!(
        (cache.layout_counts(), cache.doc_counts()),
        ((1, 3), (0, 3)),
        "the kept layout is stale and the document is parsed again"
    );

    // Settled again: resolved once more, then kept; what it was read from is not looked at
    // again while it stays unchanged.
    settle(&xml);
    settle(&data);
    assert_eq!(resolve(), ac);
    let (docs, listings, layouts) = (
        cache.doc_counts(),
        cache.listing_counts(),
        cache.layout_counts(),
    );
    assert_eq!(resolve(), ac);
    assert_eq!(resolve(), ac);
    assert_eq!(
        cache.layout_counts(),
        (layouts.0 + 2, layouts.1),
        "layouts are hits"
    );
    assert_eq!(
        (cache.doc_counts(), cache.listing_counts()),
        (docs, listings),
        "documents and listings are not looked up"
    );

    // A data file replaced by another under its name (a new inode): the directory's ctime moved,
    // so it is listed again and the new inode is what the layout links.
    let replacement = dir.path().join("run/c.bam.new");
    std::fs::write(&replacement, "new c").unwrap();
    std::fs::rename(&replacement, data.join("c.bam")).unwrap();
    let mut resolver = Resolver::new(&roots, Limits::default(), &namer, &cache, &budget);
    let layout = resolver.plain(&spec, false).unwrap();
    assert_eq!(
        (cache.layout_counts(), cache.doc_counts()),
        ((layouts.0 + 2, layouts.1 + 1), (docs.0 + 1, docs.1)),
        "the kept layout is stale; the document is a hit"
    );
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
        (docs.0 + 2, docs.1),
        "the document stayed a hit"
    );
}

/// A kept layout holds no open directory: a link it wants again (the staged one was deleted) is
/// made from the directory the request itself opened, and a source replaced under its name
/// makes the kept layout stale, so the new file is what gets staged.
#[tokio::test]
async fn a_kept_layout_links_through_this_requests_handles_and_a_replaced_source_is_seen() {
    use crate::harness::{Env, assert_linked, ds, request};
    let mut env = Env::new().await;
    let a = env.plain("r1/1_A01", "Rice-Cell1", 3);
    for path in a.files.iter().chain([&a.xml_path]) {
        settle(path.parent().unwrap());
        settle(path);
    }
    let want = request(2, "Project 2", vec![ds(&a)]);
    let handle = env.handle.clone();
    let lookups = || handle.layout_lookups().unwrap();
    let dir = env.root.clone();
    let staged = |file: &Path| {
        dir.join("Project 2")
            .join(format!("Movie {} - Rice-Cell1", a.movie))
            .join(file.file_name().unwrap())
    };

    assert!(env.apply(want.clone()).await.complete);
    assert_eq!(
        lookups(),
        (0, 1),
        "resolved, and kept: everything was settled"
    );
    let answer = env.apply(want.clone()).await;
    assert!(answer.complete && answer.actions.is_empty(), "{answer:?}");
    assert_eq!(lookups(), (1, 1), "the kept layout was taken");

    // A staged link deleted: linked again from the kept layout.
    std::fs::remove_file(staged(&a.files[0])).unwrap();
    let answer = env.apply(want.clone()).await;
    assert!(answer.complete, "{answer:?}");
    assert_eq!(lookups(), (2, 1), "the kept layout was taken");
    assert_linked(&staged(&a.files[0]), &a.files[0]);

    // A source replaced under its name (a new inode): its directory changed, the layout is
    // resolved anew and the staged link replaced.
    let replacement = a.files[1].with_extension("new");
    std::fs::write(&replacement, "replaced").unwrap();
    std::fs::rename(&replacement, &a.files[1]).unwrap();
    let answer = env.apply(want.clone()).await;
    assert!(answer.complete, "{answer:?}");
    assert_eq!(lookups(), (2, 2), "the kept layout was stale");
    assert_linked(&staged(&a.files[1]), &a.files[1]);
    for file in &a.files {
        assert_linked(&staged(file), file);
    }
}

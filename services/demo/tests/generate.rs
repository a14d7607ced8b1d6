//! The generated XML parses, names only files that exist, and carries the naming metadata.

use std::path::Path;

fn resource_ids(xml: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(xml).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    doc.descendants()
        .filter(|n| n.tag_name().name() == "ExternalResource" || n.tag_name().name() == "FileIndex")
        .filter_map(|n| n.attribute("ResourceId").map(str::to_owned))
        .collect()
}

#[test]
fn demo_tree_is_complete_and_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let demo = smrtshare_demo::generate_demo(dir.path()).unwrap();
    let projects: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(demo.smrtlink_dir.join("projects.json")).unwrap(),
    )
    .unwrap();
    let datasets: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(demo.smrtlink_dir.join("datasets.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(projects.as_array().unwrap().len(), 4);
    for project in projects.as_array().unwrap() {
        for ds in project["datasets"].as_array().unwrap() {
            let uuid = ds["uuid"].as_str().unwrap();
            assert!(
                datasets.get(uuid).is_some(),
                "{uuid} missing from datasets.json"
            );
            let xml = Path::new(ds["path"].as_str().unwrap());
            assert!(xml.is_absolute() && xml.is_file(), "{}", xml.display());
            for id in resource_ids(xml) {
                let resolved = xml.parent().unwrap().join(&id);
                assert!(
                    resolved.is_file(),
                    "{} names missing {}",
                    xml.display(),
                    resolved.display()
                );
            }
        }
    }
    let tomato = &demo.projects[1];
    assert_eq!(tomato.datasets[0].num_children, 2);
    let text = std::fs::read_to_string(&tomato.datasets[0].xml_path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let context = doc
        .descendants()
        .find(|n| n.tag_name().name() == "CollectionMetadata")
        .unwrap();
    assert_eq!(
        context.attribute("Context"),
        Some("m84100_240301_194028_s1")
    );
    assert!(
        doc.descendants()
            .any(|n| n.tag_name().name() == "SupplementalResources")
    );
}

#[test]
fn synthetic_tree_has_the_requested_shape() {
    let dir = tempfile::tempdir().unwrap();
    let specs = smrtshare_demo::generate_synthetic(dir.path(), 3, 2, 25, 16).unwrap();
    assert_eq!(specs.len(), 3);
    for p in &specs {
        assert_eq!(p.datasets.len(), 2);
        for d in &p.datasets {
            assert_eq!(d.files.len(), 25);
            assert_eq!(resource_ids(&d.xml_path).len(), 25);
            assert!(d.files.iter().all(|f| f.is_file()));
        }
    }
}

//! PacBio dataset XML, read with roxmltree by local names (namespace prefixes and default
//! namespaces vary between files written by the instrument and by SMRT Link).
//!
//! Only what staging needs is kept: the resources (`ExternalResources`, recursively, with their
//! `FileIndices`), the `SupplementalResources`, and the naming metadata under
//! `DataSetMetadata/Collections/CollectionMetadata`. Size, node count and nesting are limited.

use roxmltree::{Document, Node, ParsingOptions};

/// MetaType prefix of resources that are dataset XML files themselves (read, never staged).
pub const DATASET_META_PREFIX: &str = "PacBio.DataSet.";

/// Limits on one dataset XML file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_bytes: u64,
    /// Most XML nodes parsed.
    pub max_nodes: u32,
    /// Deepest nesting of `ExternalResources`.
    pub max_resource_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 16 * 1024 * 1024,
            max_nodes: 2_000_000,
            max_resource_depth: 8,
        }
    }
}

/// One `ExternalResource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// `MetaType` (empty when absent).
    pub meta_type: String,
    /// `ResourceId`: a path, absolute or relative to the XML's directory.
    pub resource_id: String,
    /// `UniqueId`, when present.
    pub unique_id: Option<String>,
    /// `FileIndices/FileIndex@ResourceId`.
    pub indices: Vec<String>,
    /// Nested `ExternalResources/ExternalResource`.
    pub nested: Vec<Resource>,
}

impl Resource {
    /// True when the resource is a dataset XML (MetaType `PacBio.DataSet.*`).
    pub fn is_dataset(&self) -> bool {
        self.meta_type.starts_with(DATASET_META_PREFIX)
    }

    /// Every data file id of this resource and its nested resources, in document order; dataset
    /// XML resources are left out (they are read, never staged).
    pub fn data_files(&self, out: &mut Vec<String>) {
        if !self.is_dataset() {
            out.push(self.resource_id.clone());
            out.extend(self.indices.iter().cloned());
        }
        for nested in &self.nested {
            nested.data_files(out);
        }
    }

    /// The first nested dataset XML resource (a demultiplexed child's XML).
    pub fn nested_dataset(&self) -> Option<&Resource> {
        self.nested
            .iter()
            .find(|r| r.is_dataset() && r.resource_id.to_ascii_lowercase().ends_with(".xml"))
    }
}

/// Naming metadata from the first `CollectionMetadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Collection {
    /// Movie id (`Context`).
    pub movie: Option<String>,
    /// `WellSample@Name`.
    pub well_sample: Option<String>,
    /// First `BioSample@Name`.
    pub sample: Option<String>,
    /// First `DNABarcode@Name` (of the first bio sample that has one).
    pub barcode: Option<String>,
}

/// What staging reads from a dataset XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSetDoc {
    /// Root element's local name (`ConsensusReadSet`, `SubreadSet`, ...).
    pub root: String,
    /// Root `UniqueId`.
    pub uuid: Option<String>,
    /// Root `Name`.
    pub name: Option<String>,
    /// Top-level `ExternalResources`.
    pub resources: Vec<Resource>,
    /// `SupplementalResources`.
    pub supplemental: Vec<Resource>,
    /// Naming metadata.
    pub collection: Collection,
}

impl DataSetDoc {
    /// Every data file id of the top-level resources (children's files for a parent).
    pub fn data_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.resources {
            r.data_files(&mut out);
        }
        out
    }

    /// Every file id of a plain dataset or a child: its resources' and its supplemental
    /// resources' (pbcore counts both as the dataset's files).
    pub fn files(&self) -> Vec<String> {
        let mut out = self.data_files();
        out.extend(self.supplemental_files());
        out
    }

    /// Every data file id of the supplemental resources.
    pub fn supplemental_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.supplemental {
            r.data_files(&mut out);
        }
        out
    }
}

/// Parses a dataset XML document.
pub fn parse(text: &str, limits: &Limits) -> Result<DataSetDoc, String> {
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::NodesLimitReached => {
            format!("malformed XML: more than {} nodes", limits.max_nodes)
        }
        other => format!("malformed XML: {other}"),
    })?;
    let root = doc.root_element();
    let root_name = root.tag_name().name();
    if !root_name.ends_with("Set") {
        return Err(format!(
            "root element <{root_name}> is not a PacBio dataset (expected a *Set element such as ConsensusReadSet)"
        ));
    }
    let mut resources = Vec::new();
    let mut supplemental = Vec::new();
    let mut collection = Collection::default();
    for child in root.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "ExternalResources" => resources.extend(resource_list(child, 1, limits)?),
            "SupplementalResources" => supplemental.extend(resource_list(child, 1, limits)?),
            "DataSetMetadata" => collection = collection_of(child),
            _ => {}
        }
    }
    Ok(DataSetDoc {
        root: root_name.to_owned(),
        uuid: root.attribute("UniqueId").map(str::to_owned),
        name: root.attribute("Name").map(str::to_owned),
        resources,
        supplemental,
        collection,
    })
}

fn resource_list(
    list: Node<'_, '_>,
    depth: usize,
    limits: &Limits,
) -> Result<Vec<Resource>, String> {
    if depth > limits.max_resource_depth {
        return Err(format!(
            "ExternalResources nested more than {} deep",
            limits.max_resource_depth
        ));
    }
    let mut out = Vec::new();
    for (index, node) in list
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "ExternalResource")
        .enumerate()
    {
        out.push(resource(node, index, depth, limits)?);
    }
    Ok(out)
}

fn resource(
    node: Node<'_, '_>,
    index: usize,
    depth: usize,
    limits: &Limits,
) -> Result<Resource, String> {
    let resource_id = match node.attribute("ResourceId").map(str::trim) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => {
            return Err(format!(
                "ExternalResource #{} (line {}) has no ResourceId",
                index + 1,
                position(node).0
            ));
        }
    };
    let mut indices = Vec::new();
    let mut nested = Vec::new();
    for child in node.children().filter(Node::is_element) {
        match child.tag_name().name() {
            "FileIndices" => {
                for index_node in child
                    .children()
                    .filter(|n| n.is_element() && n.tag_name().name() == "FileIndex")
                {
                    match index_node.attribute("ResourceId").map(str::trim) {
                        Some(id) if !id.is_empty() => indices.push(id.to_owned()),
                        _ => {
                            return Err(format!(
                                "FileIndex (line {}) has no ResourceId",
                                position(index_node).0
                            ));
                        }
                    }
                }
            }
            "ExternalResources" => nested.extend(resource_list(child, depth + 1, limits)?),
            _ => {}
        }
    }
    Ok(Resource {
        meta_type: node.attribute("MetaType").unwrap_or_default().to_owned(),
        resource_id,
        unique_id: node.attribute("UniqueId").map(str::to_owned),
        indices,
        nested,
    })
}

fn position(node: Node<'_, '_>) -> (u32, u32) {
    let pos = node.document().text_pos_at(node.range().start);
    (pos.row, pos.col)
}

fn named<'a, 'i>(parent: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    parent
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == local)
}

fn collection_of(metadata: Node<'_, '_>) -> Collection {
    let Some(cm) = metadata
        .descendants()
        .find(|n| n.is_element() && n.tag_name().name() == "CollectionMetadata")
    else {
        return Collection::default();
    };
    let nonempty = |s: Option<&str>| {
        s.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let well = named(cm, "WellSample");
    let samples: Vec<Node<'_, '_>> = well
        .map(|w| {
            w.descendants()
                .filter(|n| n.is_element() && n.tag_name().name() == "BioSample")
                .collect()
        })
        .unwrap_or_default();
    let barcode = samples
        .iter()
        .find_map(|s| named(*s, "DNABarcode").and_then(|b| nonempty(b.attribute("Name"))))
        .or_else(|| named(cm, "DNABarcode").and_then(|b| nonempty(b.attribute("Name"))));
    Collection {
        movie: nonempty(cm.attribute("Context")),
        well_sample: well.and_then(|w| nonempty(w.attribute("Name"))),
        sample: samples.first().and_then(|s| nonempty(s.attribute("Name"))),
        barcode,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PLAIN: &str = r#"<?xml version="1.0"?>
<pbds:ConsensusReadSet xmlns:pbds="http://pacificbiosciences.com/PacBioDatasets.xsd"
    xmlns:pbbase="http://pacificbiosciences.com/PacBioBaseDataModel.xsd"
    xmlns:pbmeta="http://pacificbiosciences.com/PacBioCollectionMetadata.xsd"
    xmlns:pbsample="http://pacificbiosciences.com/PacBioSampleInfo.xsd"
    MetaType="PacBio.DataSet.ConsensusReadSet" Name="Rice-Cell1" UniqueId="u-1">
  <pbds:DataSetMetadata>
    <Collections xmlns="http://pacificbiosciences.com/PacBioCollectionMetadata.xsd">
      <CollectionMetadata Context="m1">
        <pbmeta:WellSample Name="Rice well">
          <pbsample:BioSamples>
            <pbsample:BioSample Name="Rice 1"><pbsample:DNABarcodes><pbsample:DNABarcode Name="bc1--bc1"/></pbsample:DNABarcodes></pbsample:BioSample>
          </pbsample:BioSamples>
        </pbmeta:WellSample>
      </CollectionMetadata>
    </Collections>
  </pbds:DataSetMetadata>
  <pbbase:ExternalResources>
    <pbbase:ExternalResource MetaType="PacBio.ConsensusReadFile.ConsensusReadBamFile" ResourceId="../hifi/a.bam">
      <pbbase:FileIndices><pbbase:FileIndex MetaType="PacBio.Index.PacBioIndex" ResourceId="../hifi/a.bam.pbi"/></pbbase:FileIndices>
      <pbbase:ExternalResources>
        <pbbase:ExternalResource MetaType="PacBio.DataSet.ConsensusReadSet" ResourceId="child.consensusreadset.xml" UniqueId="c-1"/>
      </pbbase:ExternalResources>
    </pbbase:ExternalResource>
  </pbbase:ExternalResources>
</pbds:ConsensusReadSet>"#;

    #[test]
    fn resources_and_metadata_are_read_by_local_name() {
        let doc = parse(PLAIN, &Limits::default()).unwrap();
        assert_eq!(doc.root, "ConsensusReadSet");
        assert_eq!(doc.uuid.as_deref(), Some("u-1"));
        assert_eq!(doc.data_files(), vec!["../hifi/a.bam", "../hifi/a.bam.pbi"]);
        assert_eq!(
            doc.resources[0]
                .nested_dataset()
                .unwrap()
                .unique_id
                .as_deref(),
            Some("c-1")
        );
        assert_eq!(doc.collection.movie.as_deref(), Some("m1"));
        assert_eq!(doc.collection.well_sample.as_deref(), Some("Rice well"));
        assert_eq!(doc.collection.sample.as_deref(), Some("Rice 1"));
        assert_eq!(doc.collection.barcode.as_deref(), Some("bc1--bc1"));
    }

    #[test]
    fn malformed_and_foreign_documents_are_refused_with_a_reason() {
        assert!(
            parse("<a><b></a>", &Limits::default())
                .unwrap_err()
                .starts_with("malformed XML")
        );
        assert!(
            parse("<html/>", &Limits::default())
                .unwrap_err()
                .contains("not a PacBio dataset")
        );
        let dtd = r#"<!DOCTYPE x [<!ENTITY a "aaaa">]><DataSet/>"#;
        assert!(
            parse(dtd, &Limits::default())
                .unwrap_err()
                .starts_with("malformed XML")
        );
        let no_id = "<DataSet><ExternalResources><ExternalResource MetaType=\"x\"/></ExternalResources></DataSet>";
        assert!(
            parse(no_id, &Limits::default())
                .unwrap_err()
                .contains("#1 (line 1) has no ResourceId")
        );
    }

    #[test]
    fn nesting_and_node_limits_hold() {
        let mut deep = String::from("<DataSet>");
        for _ in 0..20 {
            deep.push_str("<ExternalResources><ExternalResource ResourceId=\"f\">");
        }
        for _ in 0..20 {
            deep.push_str("</ExternalResource></ExternalResources>");
        }
        deep.push_str("</DataSet>");
        assert!(
            parse(&deep, &Limits::default())
                .unwrap_err()
                .contains("nested more than 8 deep")
        );
        let limits = Limits {
            max_nodes: 50,
            ..Limits::default()
        };
        let many = format!("<DataSet>{}</DataSet>", "<x/>".repeat(100));
        assert!(
            parse(&many, &limits)
                .unwrap_err()
                .contains("more than 50 nodes")
        );
        // Very deep element nesting outside resources parses without recursion trouble.
        let depth = 200_000;
        let nested = format!(
            "<DataSet>{}{}</DataSet>",
            "<a>".repeat(depth),
            "</a>".repeat(depth)
        );
        assert!(
            parse(&nested, &Limits::default())
                .unwrap()
                .resources
                .is_empty()
        );
    }
}

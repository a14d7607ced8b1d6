//! PacBio dataset XML, read as a stream (quick-xml) by local names (namespace prefixes and default
//! namespaces vary between files written by the instrument and by SMRT Link). Nothing but what is
//! kept is held in memory: no copy of the text, no document tree.
//!
//! Only what staging needs is kept: the resources (`ExternalResources`, recursively, with their
//! `FileIndices`), the `SupplementalResources`, and the naming metadata under
//! `DataSetMetadata/Collections/CollectionMetadata`. Size, node count and nesting are limited.

use std::io::BufRead;

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use rustix::io::Errno;

use crate::fault::Fault;

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

/// Parses a dataset XML document held in memory.
pub fn parse(text: &str, limits: &Limits) -> Result<DataSetDoc, String> {
    parse_from(text.as_bytes(), limits).map_err(|fault| fault.text)
}

/// Parses a dataset XML document as it is read (a streaming parse: memory grows with what is
/// kept, never with the file's size, and no large buffer is ever allocated). A document that is
/// not a dataset XML is a permanent failure; a read the filesystem failed is classified by its
/// errno.
pub fn parse_from(source: impl BufRead, limits: &Limits) -> Result<DataSetDoc, Fault> {
    let mut reader = Reader::from_reader(Lines {
        inner: source,
        newlines: 0,
        read: 0,
        failed: None,
    });
    read_doc(&mut reader, limits).map_err(|text| match reader.get_ref().failed {
        Some(errno) => Fault::errno(errno, text),
        None => Fault::permanent(text),
    })
}

fn read_doc<R: BufRead>(
    reader: &mut Reader<Lines<R>>,
    limits: &Limits,
) -> Result<DataSetDoc, String> {
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    let mut parser = Parser::default();
    let mut buf = Vec::new();
    let mut nodes: u32 = 0;
    loop {
        let line = reader.get_ref().newlines + 1;
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            format!(
                "malformed XML: {e} (line {})",
                reader.get_ref().newlines + 1
            )
        })?;
        if reader.get_ref().read > limits.max_bytes {
            return Err(format!(
                "grew past the limit of {} bytes while being read",
                limits.max_bytes
            ));
        }
        if matches!(event, Event::Start(_) | Event::Empty(_) | Event::Text(_)) {
            nodes += 1;
            if nodes > limits.max_nodes {
                return Err(format!(
                    "malformed XML: more than {} nodes",
                    limits.max_nodes
                ));
            }
        }
        match event {
            Event::Start(e) => parser.open(&e, line, limits, false)?,
            Event::Empty(e) => parser.open(&e, line, limits, true)?,
            Event::End(_) => parser.close(),
            Event::DocType(_) => {
                return Err(format!(
                    "malformed XML: a DTD (<!DOCTYPE>, line {line}) is not allowed in a dataset XML"
                ));
            }
            Event::GeneralRef(r) if !r.is_char_ref() && !PREDEFINED.contains(&&*r) => {
                return Err(format!(
                    "malformed XML: undefined entity &{}; (line {line})",
                    &*r
                ));
            }
            Event::Text(t) if parser.done && !t.trim().is_empty() => {
                return Err(format!(
                    "malformed XML: text after the root element (line {line})"
                ));
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    parser.finish()
}

/// Entities every XML parser knows.
const PREDEFINED: &[&str] = &["lt", "gt", "amp", "apos", "quot"];

/// A source that counts the newlines and bytes the parser consumed (for line numbers in messages
/// and the size limit).
struct Lines<R> {
    inner: R,
    newlines: u64,
    read: u64,
    /// The errno of a read that failed.
    failed: Option<Errno>,
}

impl<R> Lines<R> {
    fn note<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result
            && let Some(code) = e.raw_os_error()
        {
            self.failed = Some(Errno::from_raw_os_error(code));
        }
        result
    }
}

impl<R: BufRead> std::io::Read for Lines<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(out);
        let n = self.note(read)?;
        self.newlines += out[..n].iter().filter(|b| **b == b'\n').count() as u64;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Lines<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self.inner.fill_buf() {
            Ok(buf) => Ok(buf),
            Err(e) => {
                self.failed = e.raw_os_error().map(Errno::from_raw_os_error);
                Err(e)
            }
        }
    }

    fn consume(&mut self, amount: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            let amount = amount.min(buf.len());
            self.newlines += buf[..amount].iter().filter(|b| **b == b'\n').count() as u64;
            self.read += amount as u64;
        }
        self.inner.consume(amount);
    }
}

/// What an open element is to the parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frame {
    /// The root element.
    Root,
    /// An `ExternalResources` list (`Some(depth)`), under the root (main or supplemental) or
    /// under a resource.
    List { depth: usize, supplemental: bool },
    /// An `ExternalResource` being built (top of the builder stack).
    Resource,
    /// `FileIndices` of the resource being built.
    Indices,
    /// Anything else (inside `DataSetMetadata` it may still be looked at).
    Other,
}

/// Where the walk of `DataSetMetadata` is: the depth (stack length) at which the first
/// `CollectionMetadata`, its first `WellSample` and the current `BioSample` opened.
#[derive(Debug, Default)]
struct Meta {
    inside: Option<usize>,
    collection: Option<usize>,
    collection_done: bool,
    well: Option<usize>,
    well_done: bool,
    sample: Option<usize>,
    sample_seen: bool,
    sample_barcode: Option<String>,
    any_barcode: Option<String>,
}

#[derive(Debug, Default)]
struct Parser {
    stack: Vec<Frame>,
    /// Resources being built, innermost last, each with the count of its nested resources so far.
    building: Vec<Resource>,
    /// Resources seen per open list (for "ExternalResource #n").
    counts: Vec<usize>,
    root: Option<(String, Option<String>, Option<String>)>,
    resources: Vec<Resource>,
    supplemental: Vec<Resource>,
    meta: Meta,
    collection: Collection,
    done: bool,
}

fn attribute(e: &BytesStart<'_>, name: &str, line: u64) -> Result<Option<String>, String> {
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("malformed XML: {err} (line {line})"))?;
        if attr.key.local_name().into_inner() == name {
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|err| format!("malformed XML: {err} (line {line})"))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

fn nonempty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl Parser {
    fn open(
        &mut self,
        e: &BytesStart<'_>,
        line: u64,
        limits: &Limits,
        empty: bool,
    ) -> Result<(), String> {
        let name = e.local_name().into_inner().to_owned();
        let Some(parent) = self.stack.last().copied() else {
            if self.done {
                return Err(format!(
                    "malformed XML: a second root element <{name}> (line {line})"
                ));
            }
            if !name.ends_with("Set") {
                return Err(format!(
                    "root element <{name}> is not a PacBio dataset (expected a *Set element such as ConsensusReadSet)"
                ));
            }
            let uuid = attribute(e, "UniqueId", line)?;
            let title = attribute(e, "Name", line)?;
            self.root = Some((name, uuid, title));
            return self.push(Frame::Root, empty);
        };
        let frame = match (parent, name.as_str()) {
            (Frame::Root, "ExternalResources" | "SupplementalResources") => Frame::List {
                depth: 1,
                supplemental: name == "SupplementalResources",
            },
            (Frame::Root, "DataSetMetadata") => {
                self.meta.inside = Some(self.stack.len() + 1);
                Frame::Other
            }
            (Frame::List { .. }, "ExternalResource") => {
                let index = self.counts.last().copied().unwrap_or(0);
                if let Some(count) = self.counts.last_mut() {
                    *count += 1;
                }
                let resource_id = match attribute(e, "ResourceId", line)? {
                    Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
                    _ => {
                        return Err(format!(
                            "ExternalResource #{} (line {line}) has no ResourceId",
                            index + 1
                        ));
                    }
                };
                self.building.push(Resource {
                    meta_type: attribute(e, "MetaType", line)?.unwrap_or_default(),
                    resource_id,
                    unique_id: attribute(e, "UniqueId", line)?,
                    indices: Vec::new(),
                    nested: Vec::new(),
                });
                Frame::Resource
            }
            (Frame::Resource, "FileIndices") => Frame::Indices,
            (Frame::Indices, "FileIndex") => {
                match attribute(e, "ResourceId", line)? {
                    Some(id) if !id.trim().is_empty() => {
                        if let Some(r) = self.building.last_mut() {
                            r.indices.push(id.trim().to_owned());
                        }
                    }
                    _ => return Err(format!("FileIndex (line {line}) has no ResourceId")),
                }
                Frame::Other
            }
            (Frame::Resource, "ExternalResources") => {
                let depth = self
                    .stack
                    .iter()
                    .rev()
                    .find_map(|f| match f {
                        Frame::List { depth, .. } => Some(*depth),
                        _ => None,
                    })
                    .unwrap_or(0)
                    + 1;
                if depth > limits.max_resource_depth {
                    return Err(format!(
                        "ExternalResources nested more than {} deep",
                        limits.max_resource_depth
                    ));
                }
                Frame::List {
                    depth,
                    supplemental: false,
                }
            }
            _ => {
                self.metadata(e, &name, line)?;
                Frame::Other
            }
        };
        self.push(frame, empty)
    }

    fn push(&mut self, frame: Frame, empty: bool) -> Result<(), String> {
        self.stack.push(frame);
        if matches!(frame, Frame::List { .. }) {
            self.counts.push(0);
        }
        if empty {
            self.close();
        }
        Ok(())
    }

    /// Naming metadata: the first `CollectionMetadata` under `DataSetMetadata`, its first
    /// `WellSample`, that well's first `BioSample` and first barcode, and failing that the
    /// collection's first barcode.
    fn metadata(&mut self, e: &BytesStart<'_>, name: &str, line: u64) -> Result<(), String> {
        let m = &mut self.meta;
        if m.inside.is_none() {
            return Ok(());
        }
        let depth = self.stack.len() + 1;
        if m.collection.is_none() {
            if name == "CollectionMetadata" && !m.collection_done {
                m.collection = Some(depth);
                self.collection.movie = nonempty(attribute(e, "Context", line)?);
            }
            return Ok(());
        }
        match name {
            "WellSample" if m.well.is_none() && !m.well_done => {
                m.well = Some(depth);
                self.collection.well_sample = nonempty(attribute(e, "Name", line)?);
            }
            "BioSample" if m.well.is_some() && m.sample.is_none() => {
                m.sample = Some(depth);
                if !m.sample_seen {
                    m.sample_seen = true;
                    self.collection.sample = nonempty(attribute(e, "Name", line)?);
                }
            }
            "DNABarcode" => {
                let barcode = nonempty(attribute(e, "Name", line)?);
                if m.sample.is_some() && m.sample_barcode.is_none() {
                    m.sample_barcode.clone_from(&barcode);
                }
                if m.any_barcode.is_none() {
                    m.any_barcode = barcode;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self) {
        let depth = self.stack.len();
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let m = &mut self.meta;
        if m.sample == Some(depth) {
            m.sample = None;
        }
        if m.well == Some(depth) {
            m.well = None;
            m.well_done = true;
        }
        if m.collection == Some(depth) {
            m.collection = None;
            m.collection_done = true;
        }
        if m.inside == Some(depth) {
            m.inside = None;
        }
        match frame {
            Frame::Root => self.done = true,
            Frame::List { .. } => {
                self.counts.pop();
            }
            Frame::Resource => {
                let Some(done) = self.building.pop() else {
                    return;
                };
                // Its list's owner: the resource below it, or the root's main or supplemental list.
                match (self.stack.last(), self.building.last_mut()) {
                    (
                        Some(Frame::List {
                            depth: 1,
                            supplemental: true,
                        }),
                        _,
                    ) => self.supplemental.push(done),
                    (Some(Frame::List { depth: 1, .. }), _) => self.resources.push(done),
                    (_, Some(owner)) => owner.nested.push(done),
                    _ => {}
                }
            }
            Frame::Indices | Frame::Other => {}
        }
    }

    fn finish(self) -> Result<DataSetDoc, String> {
        if !self.stack.is_empty() {
            return Err("malformed XML: the document ends inside an element".to_owned());
        }
        let Some((root, uuid, name)) = self.root else {
            return Err("malformed XML: no root element".to_owned());
        };
        let mut collection = self.collection;
        collection.barcode = self.meta.sample_barcode.or(self.meta.any_barcode);
        Ok(DataSetDoc {
            root,
            uuid,
            name,
            resources: self.resources,
            supplemental: self.supplemental,
            collection,
        })
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
            parse("<DataSet><b></DataSet>", &Limits::default())
                .unwrap_err()
                .starts_with("malformed XML")
        );
        assert!(
            parse("<html/>", &Limits::default())
                .unwrap_err()
                .contains("not a PacBio dataset")
        );
        for broken in [
            "<DataSet><ExternalResources>",
            "<DataSet></DataSet><DataSet/>",
            "<DataSet>&undefined;</DataSet>",
            "<DataSet a=\"1\" a=\"2\"/>",
            "",
        ] {
            assert!(
                parse(broken, &Limits::default())
                    .unwrap_err()
                    .starts_with("malformed XML"),
                "{broken:?}"
            );
        }
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
    fn a_stream_names_lines_and_reads_the_first_collection_only() {
        let text = "<DataSet>\n<ExternalResources>\n<ExternalResource ResourceId=\"a\"/>\n<ExternalResource/>\n</ExternalResources></DataSet>";
        let err = parse(text, &Limits::default()).unwrap_err();
        assert_eq!(err, "ExternalResource #2 (line 4) has no ResourceId");
        let meta = r#"<DataSet><DataSetMetadata><Collections>
          <CollectionMetadata Context="m1"><WellSample Name="w1"><BioSamples>
            <BioSample Name=""><DNABarcodes><DNABarcode Name=""/><DNABarcode Name="bc2"/></DNABarcodes></BioSample>
            <BioSample Name="s2"/></BioSamples></WellSample><WellSample Name="w2"/></CollectionMetadata>
          <CollectionMetadata Context="m2"/></Collections></DataSetMetadata>
          <SupplementalResources><ExternalResource ResourceId="r.json"><ExternalResources>
            <ExternalResource ResourceId="n.json"><FileIndices><FileIndex ResourceId="n.idx"/></FileIndices></ExternalResource>
          </ExternalResources></ExternalResource></SupplementalResources></DataSet>"#;
        let doc = parse(meta, &Limits::default()).unwrap();
        assert_eq!(
            doc.collection,
            Collection {
                movie: Some("m1".into()),
                well_sample: Some("w1".into()),
                sample: None,
                barcode: Some("bc2".into()),
            }
        );
        assert_eq!(doc.supplemental_files(), ["r.json", "n.json", "n.idx"]);
        assert!(doc.resources.is_empty());
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

//! Dataset XML in the layout SMRT Link and the Revio instrument write (PacBioDatasets.xsd).

use std::fmt::Write as _;

/// Escapes text for an XML attribute value.
pub fn attr(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// One `ExternalResource`: a file, its indices, and nested resources.
#[derive(Clone, Debug)]
pub struct Resource {
    /// `MetaType`, for example `PacBio.ConsensusReadFile.ConsensusReadBamFile`.
    pub meta_type: String,
    /// `ResourceId`, relative to the XML's directory or absolute.
    pub resource_id: String,
    /// `FileIndex` resource ids (for example the `.pbi`).
    pub indices: Vec<String>,
    /// Nested `ExternalResources`.
    pub nested: Vec<Resource>,
    /// `UniqueId` (nested dataset resources carry the child dataset's UUID).
    pub unique_id: String,
}

impl Resource {
    /// A resource with a fresh UUID and nothing nested.
    pub fn new(meta_type: &str, resource_id: impl Into<String>) -> Self {
        Self {
            meta_type: meta_type.to_owned(),
            resource_id: resource_id.into(),
            indices: Vec::new(),
            nested: Vec::new(),
            unique_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = "\t".repeat(depth);
        let _ = writeln!(
            out,
            "{pad}<pbbase:ExternalResource CreatedAt=\"2024-03-03T11:58:47.590Z\" MetaType=\"{}\" ResourceId=\"{}\" TimeStampedName=\"{}-240303_115847590\" UniqueId=\"{}\" Version=\"3.0.1\">",
            attr(&self.meta_type),
            attr(&self.resource_id),
            attr(&self.meta_type.to_lowercase().replace('.', "_")),
            attr(&self.unique_id),
        );
        if self.indices.is_empty() {
            let _ = writeln!(out, "{pad}\t<pbbase:FileIndices/>");
        } else {
            let _ = writeln!(out, "{pad}\t<pbbase:FileIndices>");
            for index in &self.indices {
                let _ = writeln!(
                    out,
                    "{pad}\t\t<pbbase:FileIndex CreatedAt=\"2024-03-03T11:58:47.590Z\" MetaType=\"PacBio.Index.PacBioIndex\" ResourceId=\"{}\" UniqueId=\"{}\" Version=\"3.0.1\"/>",
                    attr(index),
                    uuid::Uuid::new_v4()
                );
            }
            let _ = writeln!(out, "{pad}\t</pbbase:FileIndices>");
        }
        if !self.nested.is_empty() {
            let _ = writeln!(out, "{pad}\t<pbbase:ExternalResources>");
            for nested in &self.nested {
                nested.write(out, depth + 2);
            }
            let _ = writeln!(out, "{pad}\t</pbbase:ExternalResources>");
        }
        let _ = writeln!(out, "{pad}</pbbase:ExternalResource>");
    }
}

/// The naming metadata of `DataSetMetadata/Collections/CollectionMetadata`.
#[derive(Clone, Debug)]
pub struct Collection {
    /// Movie id (`CollectionMetadata@Context`).
    pub movie: String,
    /// `WellSample@Name`.
    pub well_sample: String,
    /// `(BioSample@Name, DNABarcode@Name)`; the barcode may be absent.
    pub samples: Vec<(String, Option<String>)>,
}

/// A whole `ConsensusReadSet` document.
#[derive(Clone, Debug)]
pub struct DataSetXml {
    /// The dataset's UUID (`UniqueId`).
    pub uuid: String,
    /// The dataset's `Name`.
    pub name: String,
    /// Top-level `ExternalResources`.
    pub resources: Vec<Resource>,
    /// `SupplementalResources` (present on demultiplexed parents).
    pub supplemental: Vec<Resource>,
    /// Naming metadata.
    pub collection: Collection,
}

impl DataSetXml {
    /// Renders the document.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<pbds:ConsensusReadSet xmlns:pbbase=\"http://pacificbiosciences.com/PacBioBaseDataModel.xsd\" xmlns:pbds=\"http://pacificbiosciences.com/PacBioDatasets.xsd\" xmlns:pbmeta=\"http://pacificbiosciences.com/PacBioCollectionMetadata.xsd\" xmlns:pbsample=\"http://pacificbiosciences.com/PacBioSampleInfo.xsd\" CreatedAt=\"2024-03-03T11:58:47.590Z\" MetaType=\"PacBio.DataSet.ConsensusReadSet\" Name=\"{}\" Tags=\"ccs\" UniqueId=\"{}\" Version=\"3.0.1\">",
            attr(&self.name),
            attr(&self.uuid)
        );
        out.push_str("\t<pbbase:ExternalResources>\n");
        for resource in &self.resources {
            resource.write(&mut out, 2);
        }
        out.push_str("\t</pbbase:ExternalResources>\n");
        if !self.supplemental.is_empty() {
            out.push_str("\t<pbbase:SupplementalResources>\n");
            for resource in &self.supplemental {
                resource.write(&mut out, 2);
            }
            out.push_str("\t</pbbase:SupplementalResources>\n");
        }
        let c = &self.collection;
        out.push_str("\t<pbds:DataSetMetadata>\n\t\t<pbds:TotalLength>0</pbds:TotalLength>\n\t\t<pbds:NumRecords>0</pbds:NumRecords>\n");
        out.push_str("\t\t<Collections xmlns=\"http://pacificbiosciences.com/PacBioCollectionMetadata.xsd\">\n");
        let _ = writeln!(
            out,
            "\t\t\t<CollectionMetadata Context=\"{}\" InstrumentId=\"84100\" InstrumentName=\"84100\" MetaType=\"CollectionMetadata\" Status=\"Ready\" UniqueId=\"{}\">",
            attr(&c.movie),
            uuid::Uuid::new_v4()
        );
        let _ = writeln!(
            out,
            "\t\t\t\t<pbmeta:WellSample Name=\"{}\">",
            attr(&c.well_sample)
        );
        out.push_str(
            "\t\t\t\t\t<pbmeta:WellName>A01</pbmeta:WellName>\n\t\t\t\t\t<pbsample:BioSamples>\n",
        );
        for (sample, barcode) in &c.samples {
            let _ = writeln!(
                out,
                "\t\t\t\t\t\t<pbsample:BioSample Name=\"{}\">",
                attr(sample)
            );
            if let Some(barcode) = barcode {
                let _ = writeln!(
                    out,
                    "\t\t\t\t\t\t\t<pbsample:DNABarcodes>\n\t\t\t\t\t\t\t\t<pbsample:DNABarcode Name=\"{}\" UniqueId=\"{}\"/>\n\t\t\t\t\t\t\t</pbsample:DNABarcodes>",
                    attr(barcode),
                    uuid::Uuid::new_v4()
                );
            }
            out.push_str("\t\t\t\t\t\t</pbsample:BioSample>\n");
        }
        out.push_str("\t\t\t\t\t</pbsample:BioSamples>\n\t\t\t\t</pbmeta:WellSample>\n\t\t\t</CollectionMetadata>\n\t\t</Collections>\n\t</pbds:DataSetMetadata>\n</pbds:ConsensusReadSet>\n");
        out
    }
}

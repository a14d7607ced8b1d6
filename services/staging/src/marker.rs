//! Markers: the `user.smrtshare` extended attribute on every directory smrtshare creates. They
//! make the tree self-describing, so the records can be rebuilt from it, and they tell
//! smrtshare's directories from directories others made. Files carry no marker: a hard link
//! shares its inode, and so its attributes, with the source.
//!
//! Values are short text: `project 12`, `dataset <uuid> plain|parent <xml path>`, `part <uuid>`
//! (a child's or the supplemental directory inside a parent's), `analysis <job id>` (an analysis
//! job's outputs), `work` (the work area), and
//! `retired <marker>` for a directory smrtshare no longer tracks but kept because it holds files
//! others added.

use std::fmt;

use uuid::Uuid;

use crate::model::{ItemId, JobId, Kind, ProjectId};

/// The extended attribute name.
pub const XATTR: &str = "user.smrtshare";

/// What a directory is to smrtshare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marker {
    /// A project directory.
    Project(ProjectId),
    /// A dataset directory.
    Dataset {
        /// The dataset.
        uuid: Uuid,
        /// Plain or parent.
        kind: Kind,
        /// Its XML as SMRT Link reports it.
        xml: String,
    },
    /// A sub-directory of a parent's dataset directory.
    Part(Uuid),
    /// An analysis job's directory.
    Job(JobId),
    /// The hidden work area.
    Work,
    /// A directory no longer tracked, kept for the files others added to it.
    Retired(Box<Marker>),
}

impl Marker {
    /// Encodes the attribute value.
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// Decodes an attribute value; `None` for anything smrtshare did not write.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        Self::parse(text)
    }

    fn parse(text: &str) -> Option<Self> {
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        match word {
            "project" => ProjectId::new(rest.parse().ok()?).ok().map(Self::Project),
            "dataset" => {
                let mut parts = rest.splitn(3, ' ');
                let uuid = Uuid::parse_str(parts.next()?).ok()?;
                let kind = Kind::parse(parts.next()?)?;
                let xml = parts.next()?.to_owned();
                (!xml.is_empty()).then_some(Self::Dataset { uuid, kind, xml })
            }
            "part" => Uuid::parse_str(rest).ok().map(Self::Part),
            "analysis" => JobId::new(rest.parse().ok()?).ok().map(Self::Job),
            "work" if rest.is_empty() => Some(Self::Work),
            "retired" => match Self::parse(rest)? {
                Self::Retired(_) | Self::Work => None,
                inner => Some(Self::Retired(Box::new(inner))),
            },
            _ => None,
        }
    }

    /// The dataset or job whose own directory this marks (retired or not).
    pub fn item(&self) -> Option<ItemId> {
        match self {
            Self::Dataset { uuid, .. } => Some(ItemId::Dataset(*uuid)),
            Self::Job(id) => Some(ItemId::Job(*id)),
            Self::Retired(inner) => inner.item(),
            Self::Project(_) | Self::Part(_) | Self::Work => None,
        }
    }

    /// The marker of a sub-directory inside `item`'s directory (only a dataset has any).
    pub fn part_of(item: ItemId) -> Option<Self> {
        item.uuid().map(Self::Part)
    }

    /// The same marker, retired.
    pub fn retired(self) -> Self {
        match self {
            Self::Retired(_) => self,
            other => Self::Retired(Box::new(other)),
        }
    }
}

impl fmt::Display for Marker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Project(id) => write!(f, "project {id}"),
            Self::Dataset { uuid, kind, xml } => {
                write!(f, "dataset {uuid} {} {xml}", kind.as_str())
            }
            Self::Part(uuid) => write!(f, "part {uuid}"),
            Self::Job(id) => write!(f, "analysis {id}"),
            Self::Work => f.write_str("work"),
            Self::Retired(inner) => write!(f, "retired {inner}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip() {
        let uuid = Uuid::new_v4();
        for marker in [
            Marker::Project(ProjectId::new(12).unwrap()),
            Marker::Dataset {
                uuid,
                kind: Kind::Parent,
                xml: "/data/a b/x.xml".into(),
            },
            Marker::Part(uuid),
            Marker::Job(JobId::new(1589).unwrap()),
            Marker::Job(JobId::new(7).unwrap()).retired(),
            Marker::Work,
            Marker::Project(ProjectId::new(3).unwrap()).retired(),
            Marker::Dataset {
                uuid,
                kind: Kind::Plain,
                xml: "/x.xml".into(),
            }
            .retired(),
        ] {
            assert_eq!(
                Marker::decode(marker.encode().as_bytes()),
                Some(marker.clone()),
                "{marker}"
            );
        }
    }

    #[test]
    fn foreign_values_are_not_markers() {
        for value in [
            "",
            "project 1",
            "project x",
            "dataset nope plain /x",
            "retired work",
            "retired retired project 2",
            "work x",
            "analysis 0",
            "analysis x",
        ] {
            assert_eq!(Marker::decode(value.as_bytes()), None, "{value:?}");
        }
        assert_eq!(Marker::decode(&[0xff, 0xfe]), None);
    }
}

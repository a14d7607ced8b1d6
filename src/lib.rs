//! The smrtshare gRPC API, generated from `proto/` at build time.
//!
//! Each package is a module (`staging::v1`, `access::v1`, `coordinator::v1`) holding the messages,
//! the client (`*_client`) and the server trait (`*_server`). [`FILE_DESCRIPTOR_SET`] is the
//! encoded descriptor set of every package, served by gRPC reflection.

/// Encoded `FileDescriptorSet` of every smrtshare package (and the well-known types they import).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/smrtshare_descriptor.bin"));

/// Metadata key that carries a change id through every service's RPCs and logs.
pub const CHANGE_ID_METADATA: &str = "x-smrtshare-change-id";

/// The staging service: the tree of hard links under the collection root.
pub mod staging {
    /// Version 1.
    #[allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod v1 {
        tonic::include_proto!("smrtshare.staging.v1");
    }
}

/// The access service: the Globus rules smrtshare owns.
pub mod access {
    /// Version 1.
    #[allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod v1 {
        tonic::include_proto!("smrtshare.access.v1");
    }
}

/// The coordinator: changes, tasks and resync.
pub mod coordinator {
    /// Version 1.
    #[allow(missing_docs, clippy::all, missing_debug_implementations)]
    pub mod v1 {
        tonic::include_proto!("smrtshare.coordinator.v1");
    }
}

/// Fully qualified service names, as health and reflection report them.
pub mod service_names {
    /// `smrtshare.staging.v1.Staging`
    pub const STAGING: &str = "smrtshare.staging.v1.Staging";
    /// `smrtshare.access.v1.Access`
    pub const ACCESS: &str = "smrtshare.access.v1.Access";
    /// `smrtshare.coordinator.v1.Coordinator`
    pub const COORDINATOR: &str = "smrtshare.coordinator.v1.Coordinator";
}

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_holds_the_three_services_with_comments() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let services: Vec<String> = fds
            .file
            .iter()
            .flat_map(|f| {
                f.service
                    .iter()
                    .map(move |s| format!("{}.{}", f.package(), s.name()))
            })
            .collect();
        for name in [
            super::service_names::STAGING,
            super::service_names::ACCESS,
            super::service_names::COORDINATOR,
        ] {
            assert!(
                services.iter().any(|s| s == name),
                "{name} missing from {services:?}"
            );
        }
        // Comments must reach reflection (grpcurl describe): every smrtshare file keeps source info.
        for file in fds
            .file
            .iter()
            .filter(|f| f.package().starts_with("smrtshare."))
        {
            let info = file.source_code_info.as_ref().expect("source info kept");
            assert!(
                info.location.iter().any(|l| l.leading_comments.is_some()),
                "{} lost its comments",
                file.name()
            );
        }
    }
}

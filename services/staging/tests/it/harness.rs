//! A real staging server on 127.0.0.1:0 over real temporary trees, and helpers to look at them.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use smrtshare_api::staging::v1 as pb;
use smrtshare_api::staging::v1::staging_client::StagingClient;
use smrtshare_common::Secret;
use smrtshare_common::auth::ServerAuth;
use smrtshare_common::client::{PeerChannel, PeerOptions, peer_channel};
use smrtshare_common::server::ServerOptions;
use smrtshare_demo::{DatasetRecord, Ids, PlainSpec, RunSpec};
use smrtshare_staging::{Config, Handle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "staging-test-token";

/// A server and the trees it works on.
pub struct Env {
    pub dir: smrtshare_testkit::tempfile::TempDir,
    pub root: PathBuf,
    pub src: PathBuf,
    pub client: StagingClient<PeerChannel>,
    pub handle: Handle,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Env {
    /// A fresh root and source root in one temporary directory (same filesystem).
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// Like [`Env::new`], with the configuration adjusted first.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> Self {
        smrtshare_common::telemetry::init_for_tests();
        let dir = smrtshare_testkit::tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        let src = dir.path().join("src");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&src).unwrap();
        let mut config = Config::new(
            root.clone(),
            vec![src.clone()],
            ServerOptions::new(ServerAuth::Token(Secret::new(TOKEN))),
        );
        config.database = dir.path().join("state").join("staging.sqlite3");
        adjust(&mut config);
        let (handle, client, url, stop, serving) = start(config).await;
        Self {
            dir,
            root,
            src,
            client,
            handle,
            url,
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Stops the server (and waits for it).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving
                .await
                .expect("server task")
                .expect("server ends cleanly");
        }
        // The service's state (and with it the root's lock) goes with the last handle.
        self.handle = Handle::new();
    }

    /// Stops the server and starts a new one on the same root with the same settings.
    pub async fn restart(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.stop().await;
        let mut config = Config::new(
            self.root.clone(),
            vec![self.src.clone()],
            ServerOptions::new(ServerAuth::Token(Secret::new(TOKEN))),
        );
        config.database = self.database();
        adjust(&mut config);
        let (handle, client, url, stop, serving) = start(config).await;
        self.handle = handle;
        self.client = client;
        self.url = url;
        self.stop = Some(stop);
        self.serving = Some(serving);
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("state").join("staging.sqlite3")
    }

    pub async fn apply(&mut self, request: pb::ApplyProjectRequest) -> pb::ApplyProjectResponse {
        self.client
            .apply_project(request)
            .await
            .expect("apply")
            .into_inner()
    }

    pub async fn remove(&mut self, project_id: i64, dry_run: bool) -> pb::RemoveProjectResponse {
        self.client
            .remove_project(pb::RemoveProjectRequest {
                project_id,
                dry_run,
            })
            .await
            .expect("remove")
            .into_inner()
    }

    pub async fn get(&mut self, project_id: i64, verify: bool) -> pb::GetProjectResponse {
        self.client
            .get_project(pb::GetProjectRequest { project_id, verify })
            .await
            .expect("get")
            .into_inner()
    }

    pub async fn list(&mut self) -> Vec<pb::ListProjectsResponse> {
        let mut stream = self
            .client
            .list_projects(pb::ListProjectsRequest {})
            .await
            .expect("list")
            .into_inner();
        let mut out = Vec::new();
        while let Some(item) = stream.message().await.expect("list item") {
            out.push(item);
        }
        out
    }

    /// Writes a plain dataset of `files` data files under the source root.
    pub fn plain(&self, run: &str, name: &str, files: usize) -> DatasetRecord {
        let spec = PlainSpec {
            run_dir: run.into(),
            movie: format!("m84100_{}", run.replace(['/', ' '], "_")),
            well_sample: format!("{name} well"),
            sample: format!("{name} sample"),
            name: name.into(),
            data_files: files,
            bytes: 64,
        };
        smrtshare_demo::write_plain_dataset(&self.src, &spec, &mut Ids::starting_at(1))
            .expect("write dataset")
    }

    /// Writes a demultiplexed run with two barcoded children under the source root.
    pub fn barcoded(&self, run: &str, well: &str) -> smrtshare_demo::BarcodedRun {
        let spec = RunSpec {
            run_dir: run.into(),
            movie: format!("m84100_{}", run.replace('/', "_")),
            well_sample: well.into(),
            samples: vec![
                ("Sample A".into(), "bc2001--bc2001".into()),
                ("Sample B".into(), "bc2002--bc2002".into()),
            ],
            bytes: 64,
        };
        smrtshare_demo::write_barcoded_run(&self.src, &spec, &mut Ids::starting_at(1))
            .expect("write run")
    }
}

async fn start(
    config: Config,
) -> (
    Handle,
    StagingClient<PeerChannel>,
    String,
    tokio::sync::oneshot::Sender<()>,
    JoinHandle<anyhow::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let handle = Handle::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(smrtshare_staging::run_with(
        listener,
        config,
        handle.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let client = client(&url);
    wait_ready(&url).await;
    (handle, client, url, stop, serving)
}

/// A client of the server at `url`, sending [`TOKEN`].
pub fn client(url: &str) -> StagingClient<PeerChannel> {
    let options = PeerOptions {
        token: Some(Secret::new(TOKEN)),
        ..PeerOptions::default()
    };
    StagingClient::new(peer_channel(url, &options).expect("channel"))
}

/// What health says about `service` ("" for the server as a whole).
pub async fn health(url: &str, service: &str) -> i32 {
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_lazy();
    HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

/// Waits until health reports SERVING (start-up done).
pub async fn wait_ready(url: &str) {
    use tonic_health::pb::health_client::HealthClient;
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    for _ in 0..500 {
        if let Ok(answer) = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            && answer.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("staging at {url} never became ready");
}

/// A dataset for a request.
pub fn ds(record: &DatasetRecord) -> pb::Dataset {
    pb::Dataset {
        uuid: record.uuid.clone(),
        name: record.name.clone(),
        xml_path: record.xml_path.to_string_lossy().into_owned(),
        parent_uuid: record.parent_uuid.clone().unwrap_or_default(),
        num_children: record.num_children,
    }
}

pub fn request(
    project_id: i64,
    directory: &str,
    datasets: Vec<pb::Dataset>,
) -> pb::ApplyProjectRequest {
    pb::ApplyProjectRequest {
        project_id,
        directory: directory.into(),
        datasets,
        dry_run: false,
        analysis_jobs: Vec::new(),
    }
}

/// What `lstat` says about every entry under `root` except the hidden area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub ctime: (i64, i64),
    pub mtime: (i64, i64),
}

pub fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with(".smrtshare") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = if meta.file_type().is_symlink() {
                "symlink"
            } else if meta.is_dir() {
                "dir"
            } else {
                "file"
            };
            out.insert(
                rel,
                Entry {
                    kind,
                    dev: meta.dev(),
                    ino: meta.ino(),
                    mode: meta.mode() & 0o7777,
                    ctime: (meta.ctime(), meta.ctime_nsec()),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                },
            );
            if kind == "dir" {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Asserts that `staged` is a hard link to `source` (same device and inode).
pub fn assert_linked(staged: &Path, source: &Path) {
    let a =
        std::fs::symlink_metadata(staged).unwrap_or_else(|e| panic!("{}: {e}", staged.display()));
    let b =
        std::fs::symlink_metadata(source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    assert!(
        a.file_type().is_file(),
        "{} is not a regular file",
        staged.display()
    );
    assert_eq!(
        (a.dev(), a.ino()),
        (b.dev(), b.ino()),
        "{} is not a hard link to {}",
        staged.display(),
        source.display()
    );
}

pub fn state(d: &pb::DatasetResult) -> pb::DatasetState {
    pb::DatasetState::try_from(d.state).unwrap()
}

pub fn kinds(actions: &[pb::Action]) -> Vec<(pb::ActionKind, String)> {
    actions
        .iter()
        .map(|a| (pb::ActionKind::try_from(a.kind).unwrap(), a.path.clone()))
        .collect()
}

/// A hand-made ConsensusReadSet XML naming `ids` as its ResourceIds.
pub fn dataset_xml(uuid: &str, ids: &[&str]) -> String {
    dataset_xml_with(uuid, &format!("m_{uuid}"), ids, &[])
}

/// A hand-made ConsensusReadSet XML of movie `movie` naming `ids` as its ResourceIds and
/// `supplemental` as its SupplementalResources.
pub fn dataset_xml_with(uuid: &str, movie: &str, ids: &[&str], supplemental: &[&str]) -> String {
    let list = |ids: &[&str], meta: &str| -> String {
        ids.iter()
            .map(|id| format!(r#"<pbbase:ExternalResource MetaType="{meta}" ResourceId="{id}"/>"#))
            .collect()
    };
    let resources = list(ids, "PacBio.ConsensusReadFile.ConsensusReadBamFile");
    let supplemental = list(supplemental, "PacBio.FileTypes.JsonReport");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<pbds:ConsensusReadSet xmlns:pbds="http://pacificbiosciences.com/PacBioDatasets.xsd" xmlns:pbbase="http://pacificbiosciences.com/PacBioBaseDataModel.xsd" xmlns:pbmeta="http://pacificbiosciences.com/PacBioCollectionMetadata.xsd" MetaType="PacBio.DataSet.ConsensusReadSet" Name="handmade" UniqueId="{uuid}">
  <pbbase:ExternalResources>{resources}</pbbase:ExternalResources>
  <pbds:SupplementalResources>{supplemental}</pbds:SupplementalResources>
  <pbds:DataSetMetadata><pbmeta:Collections><pbmeta:CollectionMetadata Context="{movie}"/></pbmeta:Collections></pbds:DataSetMetadata>
</pbds:ConsensusReadSet>"#
    )
}

/// Gives `dir` a smrtshare marker (as the service writes it, or as someone forging one would).
pub fn mark(dir: &Path, value: &str) {
    rustix::fs::setxattr(
        dir,
        "user.smrtshare",
        value.as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
}

//! TLS between services: server certificates, the optional client-certificate requirement, and
//! the bearer token still checked on every RPC but health and reflection.

// Test code: a failed step is a failed test, helpers included.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use smrtshare_api::staging::v1 as pb;
use smrtshare_api::staging::v1::staging_client::StagingClient;
use smrtshare_api::staging::v1::staging_server::{Staging, StagingServer};
use smrtshare_common::Secret;
use smrtshare_common::auth::ServerAuth;
use smrtshare_common::client::{PeerOptions, peer_channel};
use smrtshare_common::server::{GrpcServer, ServerOptions, ServerTls};
use smrtshare_testkit::{Pki, PkiFiles};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

struct Empty;

#[tonic::async_trait]
impl Staging for Empty {
    async fn apply_project(
        &self,
        _: Request<pb::ApplyProjectRequest>,
    ) -> Result<Response<pb::ApplyProjectResponse>, Status> {
        Err(Status::failed_precondition("read-only"))
    }
    async fn remove_project(
        &self,
        _: Request<pb::RemoveProjectRequest>,
    ) -> Result<Response<pb::RemoveProjectResponse>, Status> {
        Err(Status::failed_precondition("read-only"))
    }
    async fn get_project(
        &self,
        r: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::GetProjectResponse>, Status> {
        Err(Status::not_found(format!(
            "project {} is not staged",
            r.get_ref().project_id
        )))
    }
    type ListProjectsStream = tokio_stream::Empty<Result<pb::ListProjectsResponse, Status>>;
    async fn list_projects(
        &self,
        _: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<Self::ListProjectsStream>, Status> {
        Ok(Response::new(tokio_stream::empty()))
    }
}

async fn serve(
    files: &PkiFiles,
    require_client_cert: bool,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let mut options = ServerOptions::new(ServerAuth::Token(Secret::new("tls-token")));
    options.tls = Some(ServerTls {
        cert: files.server_cert.clone(),
        key: files.server_key.clone(),
        client_ca: require_client_cert.then(|| files.ca.clone()),
    });
    let mut server = GrpcServer::new(options).unwrap();
    server.add_service(StagingServer::new(Empty));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async { Ok(()) }, async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

async fn call(url: &str, options: &PeerOptions) -> Result<(), Status> {
    let channel = peer_channel(url, options).map_err(|e| Status::unknown(e.to_string()))?;
    match StagingClient::new(channel)
        .get_project(pb::GetProjectRequest {
            project_id: 2,
            verify: false,
        })
        .await
    {
        Err(status) if status.code() == Code::NotFound => Ok(()),
        Err(status) => Err(status),
        Ok(_) => Err(Status::internal("unexpected answer")),
    }
}

fn options(files: &PkiFiles, identity: bool, token: &str) -> PeerOptions {
    PeerOptions {
        token: Some(Secret::new(token)),
        tls_ca: Some(files.ca.clone()),
        tls_identity: identity.then(|| (files.client_cert.clone(), files.client_key.clone())),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn server_tls_with_and_without_client_certificates() {
    smrtshare_common::telemetry::init_for_tests();
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let files = Pki::new("smrtshare test CA")
        .unwrap()
        .write(dir.path())
        .unwrap();
    let other_dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let other = Pki::new("some other CA")
        .unwrap()
        .write(other_dir.path())
        .unwrap();

    // Server certificate only: a client trusting the CA gets through (with the token).
    let (url, _stop) = serve(&files, false).await;
    call(&url, &options(&files, false, "tls-token"))
        .await
        .unwrap();
    let err = call(&url, &options(&files, false, "wrong"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unauthenticated,
        "the token is still checked over TLS"
    );
    // A client trusting another CA refuses the server; plain HTTP gets nowhere.
    assert!(
        call(
            &url,
            &PeerOptions {
                tls_ca: Some(other.ca.clone()),
                ..options(&files, false, "tls-token")
            }
        )
        .await
        .is_err()
    );
    let plain = url.replace("https://", "http://");
    assert!(
        call(
            &plain,
            &PeerOptions {
                tls_ca: None,
                ..options(&files, false, "tls-token")
            }
        )
        .await
        .is_err()
    );

    // Client certificates required: none, or one from another CA, is refused; ours works.
    let (url, _stop2) = serve(&files, true).await;
    assert!(
        call(&url, &options(&files, false, "tls-token"))
            .await
            .is_err(),
        "no client certificate"
    );
    let foreign = PeerOptions {
        tls_identity: Some((other.client_cert.clone(), other.client_key.clone())),
        ..options(&files, false, "tls-token")
    };
    assert!(
        call(&url, &foreign).await.is_err(),
        "client certificate from another CA"
    );
    call(&url, &options(&files, true, "tls-token"))
        .await
        .unwrap();

    // Health stays open (no token) over mutual TLS.
    let (channel, _) = smrtshare_common::client::connect_lazy(
        &url,
        &PeerOptions {
            token: None,
            ..options(&files, true, "")
        },
    )
    .unwrap();
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        answer.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[test]
fn peer_tls_files_need_an_https_url() {
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let files = Pki::new("ca").unwrap().write(dir.path()).unwrap();
    let err = peer_channel("http://127.0.0.1:1", &options(&files, false, "t")).unwrap_err();
    assert!(err.to_string().contains("not an https:// URL"), "{err}");
}

//! The runner against a real socket: health before and after readiness, the token check, and
//! reflection and health staying open without a token.

use std::time::Duration;

use smrtshare_api::staging::v1 as pb;
use smrtshare_api::staging::v1::staging_client::StagingClient;
use smrtshare_api::staging::v1::staging_server::{Staging, StagingServer};
use smrtshare_common::Secret;
use smrtshare_common::auth::ServerAuth;
use smrtshare_common::client::{PeerOptions, peer_channel};
use smrtshare_common::server::{GrpcServer, ServerOptions};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A Staging implementation that knows no project: enough to see whether a call got through.
struct Empty;

#[tonic::async_trait]
impl Staging for Empty {
    async fn apply_project(
        &self,
        _: Request<pb::ApplyProjectRequest>,
    ) -> Result<Response<pb::ApplyProjectResponse>, Status> {
        Err(Status::failed_precondition("read-only test service"))
    }
    async fn remove_project(
        &self,
        _: Request<pb::RemoveProjectRequest>,
    ) -> Result<Response<pb::RemoveProjectResponse>, Status> {
        Err(Status::failed_precondition("read-only test service"))
    }
    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::GetProjectResponse>, Status> {
        Err(Status::not_found(format!(
            "project {} is not staged",
            request.get_ref().project_id
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

#[tokio::test]
async fn health_follows_readiness_and_the_token_guards_every_other_rpc() {
    smrtshare_common::telemetry::init_for_tests();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = Secret::new("s3cret-token");
    let mut server = GrpcServer::new(ServerOptions::new(ServerAuth::Token(token.clone()))).unwrap();
    server.add_service(StagingServer::new(Empty));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(
        listener,
        async move {
            ready_rx.await.ok();
            Ok(())
        },
        async move {
            stop_rx.await.ok();
        },
    ));

    let url = format!("http://{addr}");
    let bare = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect_lazy();
    let mut health = HealthClient::new(bare.clone());
    let check = |service: &str| HealthCheckRequest {
        service: service.to_owned(),
    };

    // Before readiness: the server answers, but NOT_SERVING, overall and per service.
    for service in ["", "smrtshare.staging.v1.Staging"] {
        let status = health
            .check(check(service))
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::NotServing as i32,
            "{service:?} before ready"
        );
    }
    ready_tx.send(()).unwrap();
    let mut serving_now = false;
    for _ in 0..100 {
        let status = health
            .check(check("smrtshare.staging.v1.Staging"))
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == ServingStatus::Serving as i32 {
            serving_now = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(serving_now, "health never turned SERVING after readiness");

    // Without a token: UNAUTHENTICATED. With a wrong one: UNAUTHENTICATED. With the right one: the handler runs.
    let err = StagingClient::new(bare.clone())
        .get_project(pb::GetProjectRequest {
            project_id: 2,
            verify: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let wrong = peer_channel(
        &url,
        &PeerOptions {
            token: Some(Secret::new("nope")),
            ..Default::default()
        },
    )
    .unwrap();
    let err = StagingClient::new(wrong)
        .get_project(pb::GetProjectRequest {
            project_id: 2,
            verify: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // The scheme is case-insensitive (RFC 7235): `bearer` and `BEARER` pass like `Bearer`.
    for scheme in ["bearer", "BEARER"] {
        let mut request = tonic::Request::new(pb::GetProjectRequest {
            project_id: 2,
            verify: false,
        });
        request.metadata_mut().insert(
            "authorization",
            format!("{scheme} {}", token.expose()).parse().unwrap(),
        );
        let err = StagingClient::new(bare.clone())
            .get_project(request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{scheme}: {err:?}");
    }
    let good = peer_channel(
        &url,
        &PeerOptions {
            token: Some(token),
            ..Default::default()
        },
    )
    .unwrap();
    let err = StagingClient::new(good)
        .get_project(pb::GetProjectRequest {
            project_id: 2,
            verify: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("project 2"));

    // Reflection answers without a token.
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            bare.clone(),
        );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    let listed = format!("{answer:?}");
    assert!(listed.contains("smrtshare.staging.v1.Staging"), "{listed}");
    assert!(listed.contains("grpc.health.v1.Health"), "{listed}");

    // Shutdown: the server stops within the drain bound.
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(15), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[test]
fn secrets_never_print() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
    assert_eq!(secret.expose(), "hunter2");
}

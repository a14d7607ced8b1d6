//! The gRPC server runner every service uses.
//!
//! A service builds a [`GrpcServer`], adds its generated service, and calls [`GrpcServer::serve`]
//! with a bound listener, a readiness future and a shutdown future. The runner mounts
//! `grpc.health.v1` (NOT_SERVING until the readiness future succeeds, and again while draining),
//! reflection v1 and v1alpha built from the same descriptors, the bearer-token check, per-RPC time
//! limits and a concurrency limit, and drains in-flight RPCs for a bounded time on shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{AuthLayer, ServerAuth};

/// Server TLS files.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to; `None` accepts any client.
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    fn load(&self) -> anyhow::Result<ServerTlsConfig> {
        let cert = std::fs::read(&self.cert)
            .with_context(|| format!("reading TLS certificate {}", self.cert.display()))?;
        let key = std::fs::read(&self.key)
            .with_context(|| format!("reading TLS key {}", self.key.display()))?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            let ca = std::fs::read(ca)
                .with_context(|| format!("reading TLS client CA {}", ca.display()))?;
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false);
        }
        Ok(config)
    }
}

/// Everything the runner needs besides the services.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Who may call.
    pub auth: ServerAuth,
    /// TLS, when configured.
    pub tls: Option<ServerTls>,
    /// Largest message decoded or encoded; services apply it to their generated server.
    pub max_message_bytes: usize,
    /// Time limit on one RPC.
    pub request_timeout: Duration,
    /// Concurrent RPCs per connection.
    pub concurrency_limit: usize,
    /// Bound on draining after shutdown.
    pub drain_timeout: Duration,
}

impl ServerOptions {
    /// Defaults for tests and embedded use: the given auth, no TLS, 16 MiB messages.
    pub fn new(auth: ServerAuth) -> Self {
        Self {
            auth,
            tls: None,
            max_message_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(600),
            concurrency_limit: 256,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// A gRPC server being assembled: health and reflection are already mounted.
#[derive(Debug)]
pub struct GrpcServer {
    options: ServerOptions,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    health: HealthReporter,
}

impl GrpcServer {
    /// Starts a server with health (everything NOT_SERVING) mounted; reflection is mounted by
    /// [`serve`](Self::serve), once the services it advertises are known.
    pub fn new(options: ServerOptions) -> anyhow::Result<Self> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Ok(Self {
            options,
            routes,
            names: Vec::new(),
            health,
        })
    }

    /// The options the server was made with (services read `max_message_bytes` from it).
    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// A handle to change health statuses later (for example when a dependency is lost).
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Adds a generated service; its health status follows the server's readiness.
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Serves on `listener` until `shutdown` completes. Health reports NOT_SERVING until `ready`
    /// succeeds; if `ready` fails the server stops and the error is returned. On shutdown health
    /// turns NOT_SERVING, the listener closes, and in-flight RPCs get `drain_timeout` to finish.
    pub async fn serve<R, F>(
        self,
        listener: TcpListener,
        ready: R,
        shutdown: F,
    ) -> anyhow::Result<()>
    where
        R: Future<Output = anyhow::Result<()>> + Send,
        F: Future<Output = ()> + Send,
    {
        let Self {
            options,
            mut routes,
            names,
            health,
        } = self;
        add_reflection(&mut routes, &names)?;
        set_all(&health, &names, ServingStatus::NotServing).await;
        let local = listener
            .local_addr()
            .context("reading the listener's address")?;

        let mut builder = Server::builder()
            .timeout(options.request_timeout)
            .concurrency_limit_per_connection(options.concurrency_limit)
            .tcp_nodelay(true)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .trace_fn(|req| {
                let change_id = req
                    .headers()
                    .get(smrtshare_api::CHANGE_ID_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("rpc", method = %req.uri().path(), change_id)
            });
        if let Some(tls) = &options.tls {
            builder = builder.tls_config(tls.load()?).context("configuring TLS")?;
        }
        let server = builder.layer(AuthLayer::new(&options.auth));

        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = server.serve_with_incoming_shutdown(routes.routes(), incoming, async {
            let _ = drain_rx.await;
        });
        tokio::pin!(serving);
        tokio::pin!(ready);
        tokio::pin!(shutdown);

        let mut ready_done = false;
        tracing::info!(address = %local, tls = options.tls.is_some(), services = ?names, "grpc server listening");
        loop {
            tokio::select! {
                result = &mut serving => {
                    return result.context("grpc server failed");
                }
                result = &mut ready, if !ready_done => {
                    ready_done = true;
                    match result {
                        Ok(()) => {
                            set_all(&health, &names, ServingStatus::Serving).await;
                            crate::metrics::serving().inc();
                            tracing::info!(services = ?names, "ready: health reports SERVING");
                        }
                        Err(error) => {
                            tracing::error!(error = format!("{error:#}"), "start-up failed; stopping");
                            let _ = drain_tx.send(());
                            let _ = tokio::time::timeout(options.drain_timeout, &mut serving).await;
                            return Err(error.context("start-up failed"));
                        }
                    }
                }
                () = &mut shutdown => break,
            }
        }

        tracing::info!(drain_timeout = ?options.drain_timeout, "shutting down: draining in-flight rpcs");
        set_all(&health, &names, ServingStatus::NotServing).await;
        if ready_done {
            crate::metrics::serving().dec();
        }
        let _ = drain_tx.send(());
        match tokio::time::timeout(options.drain_timeout, &mut serving).await {
            Ok(result) => result.context("grpc server failed while draining"),
            Err(_) => {
                tracing::warn!("drain time limit reached; dropping remaining connections");
                Ok(())
            }
        }
    }
}

/// Mounts reflection (v1 and v1alpha) advertising exactly the services served here and health:
/// the descriptor set holds all three smrtshare APIs, and `grpcurl list` must name only this
/// server's.
fn add_reflection(routes: &mut RoutesBuilder, names: &[&'static str]) -> anyhow::Result<()> {
    let builder = |reflection: &str| {
        let mut builder = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(smrtshare_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
            .with_service_name(reflection);
        for name in names {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    routes.add_service(
        builder("grpc.reflection.v1.ServerReflection")
            .build_v1()
            .context("building reflection v1")?,
    );
    routes.add_service(
        builder("grpc.reflection.v1alpha.ServerReflection")
            .build_v1alpha()
            .context("building reflection v1alpha")?,
    );
    Ok(())
}

async fn set_all(health: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in names {
        health.set_service_status(*name, status).await;
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}

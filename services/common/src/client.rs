//! Channels to peer smrtshare services. Clients connect lazily, so start order does not matter.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::auth::{BearerInterceptor, Secret};

/// How to reach peers.
#[derive(Clone, Debug, Default)]
pub struct PeerOptions {
    /// Bearer token to send.
    pub token: Option<Secret>,
    /// CA bundle for `https://` peers (system roots are not used).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key, for peers that require one.
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// Time limit on one call.
    pub timeout: Duration,
}

/// A channel with the bearer token attached, ready for any generated client's `with_interceptor`.
pub type PeerChannel = InterceptedService<Channel, BearerInterceptor>;

/// Opens a lazily connected channel to `url` (`http://host:port` or `https://host:port`).
pub fn connect_lazy(
    url: &str,
    options: &PeerOptions,
) -> anyhow::Result<(Channel, BearerInterceptor)> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid peer URL {url:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    if !options.timeout.is_zero() {
        endpoint = endpoint.timeout(options.timeout);
    }
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &options.tls_ca {
            let pem =
                std::fs::read(ca).with_context(|| format!("reading peer CA {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &options.tls_identity {
            let cert = std::fs::read(cert)
                .with_context(|| format!("reading client certificate {}", cert.display()))?;
            let key = std::fs::read(key)
                .with_context(|| format!("reading client key {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls).context("configuring peer TLS")?;
    } else if options.tls_ca.is_some() || options.tls_identity.is_some() {
        anyhow::bail!("peer TLS files are set but {url} is not an https:// URL");
    }
    let interceptor = BearerInterceptor::new(options.token.as_ref())?;
    Ok((endpoint.connect_lazy(), interceptor))
}

/// Opens a lazily connected, token-carrying channel to `url`.
pub fn peer_channel(url: &str, options: &PeerOptions) -> anyhow::Result<PeerChannel> {
    let (channel, interceptor) = connect_lazy(url, options)?;
    Ok(InterceptedService::new(channel, interceptor))
}

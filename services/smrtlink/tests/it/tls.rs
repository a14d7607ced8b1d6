//! HTTPS: a CA file works, no CA is refused as untrusted, the insecure switch works and warns.

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use smrtshare_common::Secret;
use smrtshare_smrtlink::{Error, SmrtLinkClient};
use smrtshare_smrtlink_standin::{Endpoint, TlsIdentity};
use smrtshare_testkit::Pki;

use crate::support::{PASSWORD, USER, fixture_with};

/// The stand-in's certificate and key from a throwaway CA.
fn identity(pki: &Pki) -> TlsIdentity {
    TlsIdentity {
        cert_pem: pki.server_cert_pem.clone().into_bytes(),
        key_pem: Secret::new(pki.server_key_pem.clone()),
    }
}

/// Collects log lines written while a closure runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn tls_with_a_ca_file_works_without_one_is_refused_and_insecure_works_with_a_warning() {
    let pki = Pki::new("smrtshare test CA").unwrap();
    let identity = identity(&pki);
    let Some(fx) = fixture_with(move |o| o.tls = Some(identity)).await else {
        return;
    };
    assert_eq!(fx.standin.url().scheme(), "https");
    let dir = smrtshare_testkit::tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::File::create(&ca_file)
        .unwrap()
        .write_all(pki.ca_pem.as_bytes())
        .unwrap();

    // CA file: trusted.
    let mut config = fx.standin.client_config(USER, PASSWORD);
    config.ca_file = Some(ca_file.clone());
    let client = SmrtLinkClient::new(config).unwrap();
    assert_eq!(client.list_projects().await.unwrap().len(), 2);
    assert_eq!(fx.standin.count(Endpoint::Login), 1);

    // No CA file: the certificate is untrusted; a TLS error, not retried, nothing reaches SMRT Link.
    let client = SmrtLinkClient::new(fx.standin.client_config(USER, PASSWORD)).unwrap();
    let error = client.list_projects().await.unwrap_err();
    match &error {
        Error::Tls { message, .. } => {
            let lower = message.to_lowercase();
            assert!(
                lower.contains("certificate") || lower.contains("issuer"),
                "{message}"
            );
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(!error.is_retryable());
    assert_eq!(fx.standin.count(Endpoint::Login), 1);

    // Insecure: accepted, and said so in the log when the client is built.
    let mut config = fx.standin.client_config(USER, PASSWORD);
    config.insecure = true;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let client =
        tracing::subscriber::with_default(subscriber, || SmrtLinkClient::new(config).unwrap());
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN") && log.contains("insecure"), "{log}");
    assert_eq!(client.list_projects().await.unwrap().len(), 2);
    assert_eq!(fx.standin.count(Endpoint::Login), 2);

    // A CA file that is not PEM is a configuration error at build time.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut config = fx.standin.client_config(USER, PASSWORD);
    config.ca_file = Some(junk);
    assert!(matches!(SmrtLinkClient::new(config), Err(Error::Config(_))));
}

//! TLS on both sides of the proxy: the listener's certificate, which can be replaced
//! while connections stay open, and how the upstream's certificate is verified.
//!
//! One crypto provider (ring, which redis already brings) is named everywhere, so no
//! process-wide default is needed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig};
use serde::Serialize;

use crate::config::settings::UpstreamTls;

/// What went wrong reading a certificate, a key or a CA file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {cause}")]
    File {
        what: &'static str,
        path: PathBuf,
        cause: String,
    },
    #[error("{path} holds no {what} (expected PEM: -----BEGIN {pem}-----)")]
    Empty {
        what: &'static str,
        path: PathBuf,
        pem: &'static str,
    },
    #[error("the key {key} does not fit the certificate {cert}: {cause}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        cause: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |cause: String| TlsError::File {
        what,
        path: path.to_owned(),
        cause,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            pem: "CERTIFICATE",
        });
    }
    Ok(certs)
}

/// The listener's certificate chain and key, read from PEM files.
fn load_key_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(cert, "certificate")?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "private key",
            path: key.to_owned(),
            pem: "PRIVATE KEY",
        },
        e => TlsError::File {
            what: "private key",
            path: key.to_owned(),
            cause: e.to_string(),
        },
    })?;
    let mismatch = |cause: String| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        cause,
    };
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| mismatch(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| mismatch(e.to_string()))?;
    Ok(pair)
}

/// The listener's certificate as status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CertStatus {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Times the files were read again and taken (SIGHUP, `POST /proxy/tls/reload`).
    pub reloads: u64,
}

/// The listener's certificate: every handshake takes the current one, and
/// [`ListenerCert::reload`] swaps in what the files hold now without touching the
/// connections already open.
#[derive(Debug)]
pub struct ListenerCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    reloads: AtomicU64,
}

impl ListenerCert {
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let pair = load_key_pair(cert, key)?;
        Ok(Arc::new(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: ArcSwap::from_pointee(pair),
            reloads: AtomicU64::new(0),
        }))
    }

    /// Reads the files again. A file that cannot be used leaves the certificate in
    /// service as it was.
    pub fn reload(&self) -> Result<CertStatus, TlsError> {
        let pair = load_key_pair(&self.cert, &self.key)?;
        self.current.store(Arc::new(pair));
        self.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(cert = %self.cert.display(), "listener certificate reloaded");
        Ok(self.status())
    }

    pub fn status(&self) -> CertStatus {
        CertStatus {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reloads: self.reloads.load(Ordering::Relaxed),
        }
    }

    /// The server side of the listener: TLS 1.2 and 1.3, ALPN offering h2 then
    /// http/1.1.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ListenerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The roots an upstream's certificate must chain to: the CA file's, or the system's
/// (webpki's bundled roots when the system has none, as in a bare container).
fn roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = ca {
        for cert in read_certs(ca, "CA certificate")? {
            roots.add(cert).map_err(|e| TlsError::File {
                what: "CA certificate",
                path: ca.to_owned(),
                cause: e.to_string(),
            })?;
        }
        return Ok(roots);
    }
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be read");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::info!("no system root certificates found; using the bundled webpki roots");
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// The client side towards the upstream, offering `alpn`.
pub fn client_config(
    verification: &UpstreamTls,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let mut config = if verification.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(roots(verification.ca.as_deref())?)
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `--upstream-insecure`: any certificate is taken, though handshake signatures are
/// still checked (the peer holds the key of what it presented).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a failed handshake with the upstream means, in words for the 502's body and the
/// log line, with what to do about it.
pub fn describe_handshake_error(err: &std::io::Error, host: &str) -> String {
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return format!("the TLS handshake failed: {err}");
    };
    let unknown =
        "(trust its CA with --upstream-ca FILE, or, for a test service only, --upstream-insecure)";
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("the upstream's certificate has expired {unknown}")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the upstream's certificate is not valid yet (check the clocks)".to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the upstream's certificate is not valid for the name `{host}` (wrong name: \
                     use the name the certificate was issued for in --upstream)"
                )
            }
            CertificateError::UnknownIssuer => {
                format!("the upstream's certificate was issued by an unknown authority {unknown}")
            }
            CertificateError::BadSignature => {
                "the upstream's certificate has a bad signature".to_owned()
            }
            CertificateError::Revoked => "the upstream's certificate was revoked".to_owned(),
            other => format!("the upstream's certificate was refused: {other:?}"),
        },
        rustls::Error::NoApplicationProtocol
        | rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol) => {
            "the upstream agreed on no application protocol (ALPN): it does not speak what \
             upstream_protocol asks for (h2: HTTP/2 only; auto takes HTTP/1.1 too)"
                .to_owned()
        }
        other => format!("the TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let err = ListenerCert::load(Path::new("/nonexistent/c.pem"), Path::new("/k.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn certificate_errors_say_what_was_wrong() {
        let err = |e: CertificateError| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(e),
            )
        };
        let name = describe_handshake_error(&err(CertificateError::NotValidForName), "a.test");
        assert!(name.contains("not valid for the name `a.test`"), "{name}");
        let issuer = describe_handshake_error(&err(CertificateError::UnknownIssuer), "a.test");
        assert!(issuer.contains("unknown authority"), "{issuer}");
        assert!(issuer.contains("--upstream-ca"), "{issuer}");
        let expired = describe_handshake_error(&err(CertificateError::Expired), "a.test");
        assert!(expired.contains("expired"), "{expired}");
    }
}

//! HTTPS for the node's HTTP port: rustls on aws-lc-rs with ALPN `h2` and `http/1.1`, and the
//! development certificate generator behind `runnel cert`.
//!
//! Invariant: a node configured with a certificate serves only TLS on its HTTP port; a
//! certificate or key that cannot be read fails the start with a message naming the file.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads a PEM certificate chain and key into a server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls: cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls: cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls: cert {} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("tls: key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: certificate and key do not fit: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A self-signed development certificate for `hosts` (DNS names or IP addresses): returns
/// (certificate PEM, private key PEM).
pub fn generate_dev_cert(hosts: &[String]) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| e.to_string())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "runnel development certificate");
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) =
            generate_dev_cert(&["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let cfg = server_config(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
        assert_eq!(
            cfg.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let e =
            server_config(&dir.path().join("nope.pem"), &dir.path().join("key.pem")).unwrap_err();
        assert!(e.contains("nope.pem"), "{e}");
    }
}

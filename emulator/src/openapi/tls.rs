//! HTTPS for the cloud-compatible endpoint (and gRPC, which rides the same router).
//!
//! Terway talks HTTPS to `ECS_ENDPOINT`/`VPC_ENDPOINT` unless `ALICLOUD_CLIENT_SCHEME=HTTP`
//! (reference §1.1), so the emulator can serve TLS on a second listener (`--https-listen`). The
//! certificate is the user's (`--tls-cert`/`--tls-key`, PEM) or one enifab issues itself: on first
//! start it creates a local CA in `<data-dir>/tls/ca.pem` (key `ca.key`, mode 0600) and a server
//! certificate signed by it for `localhost`, `127.0.0.1`, `::1`, the listen address and every
//! `--tls-san`. Later starts reuse both; when the requested names change, a new server certificate
//! is issued by the same CA, so clients that trust `ca.pem` keep working. Only `ca.pem` has to be
//! given to a cluster (or `REQUESTS_CA_BUNDLE`, `SSL_CERT_FILE`, …).
//!
//! TLS is rustls with the ring provider (no C build of aws-lc); ALPN offers `h2` and `http/1.1`.
//! Nothing here knows about actions or signatures.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::listener::Limits;

/// The HTTPS listener's configuration.
#[derive(Clone, Debug)]
pub struct HttpsConfig {
    pub listen: SocketAddr,
    /// A PEM certificate chain and its PEM private key; both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Extra names (DNS names or IP addresses) for the certificate enifab issues itself.
    pub sans: Vec<String>,
}

/// The certificate files a listener serves, and the CA clients should trust (when enifab made
/// it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
}

impl HttpsConfig {
    /// The certificate to serve: the user's, or enifab's own under `data_dir/tls`.
    pub fn cert_files(&self, data_dir: &Path) -> Result<CertFiles> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(CertFiles { cert: cert.clone(), key: key.clone(), ca: None }),
            (None, None) => {
                let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
                if !self.listen.ip().is_unspecified() {
                    names.push(self.listen.ip().to_string());
                }
                names.extend(self.sans.iter().cloned());
                local_ca(&data_dir.join("tls"), &names)
            }
            _ => bail!("--tls-cert and --tls-key go together"),
        }
    }
}

/// The Distinguished Name and usages of enifab's CA; rebuilt the same way on every start, so
/// with the stored key it issues certificates that chain to the stored `ca.pem`.
fn ca_params() -> Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "enifab local CA");
    p.distinguished_name.push(DnType::OrganizationName, "enifab");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

/// Replaces `path` atomically. The new file starts as a fresh, uniquely named 0600 file (so a
/// key is never readable by others, whatever a crash left behind) and is opened up to 0644 only
/// if it is not private.
pub(crate) fn write_file(path: &Path, contents: &str, private: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut f = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    if !private {
        f.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    f.as_file().sync_all()?;
    f.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Make (or reuse) the local CA in `dir` and a server certificate for `names`.
pub fn local_ca(dir: &Path, names: &[String]) -> Result<CertFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    let ca_existed = ca_pem.exists() && ca_key_path.exists();
    let ca_key = if ca_existed {
        let pem =
            std::fs::read_to_string(&ca_key_path).with_context(|| format!("reading {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_file(&ca_key_path, &key.serialize_pem(), true)?;
        write_file(&ca_pem, &cert.pem(), false)?;
        tracing::info!(ca = %ca_pem.display(), "created a local CA for the HTTPS endpoint");
        key
    };
    let (cert_path, key_path, names_path) = (dir.join("server.pem"), dir.join("server.key"), dir.join("server.names"));
    let mut wanted: Vec<String> = names.to_vec();
    wanted.sort();
    wanted.dedup();
    let wanted_text = wanted.join("\n");
    let current = std::fs::read_to_string(&names_path).ok();
    // A new CA means a new issuer: a server certificate from the old one would not verify.
    let reissue = !ca_existed || current.as_deref() != Some(wanted_text.as_str());
    if reissue || !cert_path.exists() || !key_path.exists() {
        let mut params = CertificateParams::new(wanted.clone()).context("certificate names")?;
        params.distinguished_name.push(DnType::CommonName, "enifab");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params()?, &ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        let chain = format!("{}{}", cert.pem(), std::fs::read_to_string(&ca_pem)?);
        write_file(&key_path, &key.serialize_pem(), true)?;
        write_file(&cert_path, &chain, false)?;
        write_file(&names_path, &wanted_text, false)?;
        tracing::info!(names = ?wanted, "issued the HTTPS server certificate");
    }
    Ok(CertFiles { cert: cert_path, key: key_path, ca: Some(ca_pem) })
}

/// A rustls server configuration (ring provider, ALPN h2 + http/1.1) for PEM files.
pub fn server_config(files: &CertFiles) -> Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", files.cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| format!("reading {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not form a usable pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serve `app` over TLS on `listener` under `limits` until `shutdown` completes (the same
/// connection rules as the plain listener; the handshake counts against the header timeout).
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    super::listener::serve(listener, app, limits, Some(TlsAcceptor::from(config)), shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_ca_is_made_once_and_reissues_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = local_ca(dir.path(), &names).unwrap();
        let ca = std::fs::read_to_string(first.ca.as_ref().unwrap()).unwrap();
        let cert = std::fs::read_to_string(&first.cert).unwrap();
        assert!(cert.ends_with(&ca), "the served chain ends with the CA");
        server_config(&first).unwrap();

        let again = local_ca(dir.path(), &names).unwrap();
        assert_eq!(std::fs::read_to_string(&again.cert).unwrap(), cert, "nothing changes when nothing is asked");

        let more = vec!["localhost".to_string(), "127.0.0.1".to_string(), "10.0.4.1".to_string()];
        let third = local_ca(dir.path(), &more).unwrap();
        assert_eq!(std::fs::read_to_string(third.ca.as_ref().unwrap()).unwrap(), ca, "the CA stays");
        assert_ne!(std::fs::read_to_string(&third.cert).unwrap(), cert, "a new certificate for new names");
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode("ca.key"), mode("server.key")), (0o600, 0o600));
        assert_eq!((mode("ca.pem"), mode("server.pem")), (0o644, 0o644));
    }

    /// A lost CA is made anew, and the server certificate with it: one from the old CA would not
    /// verify against the new `ca.pem`.
    #[test]
    fn a_new_ca_reissues_the_server_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_string()];
        let first = local_ca(dir.path(), &names).unwrap();
        let cert = std::fs::read_to_string(&first.cert).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let second = local_ca(dir.path(), &names).unwrap();
        let ca = std::fs::read_to_string(second.ca.as_ref().unwrap()).unwrap();
        let reissued = std::fs::read_to_string(&second.cert).unwrap();
        assert_ne!(reissued, cert);
        assert!(reissued.ends_with(&ca), "the served chain ends with the new CA");
        // Nothing but the five files is left in the directory (no temporary files).
        let mut files: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, ["ca.key", "ca.pem", "server.key", "server.names", "server.pem"]);
    }
}

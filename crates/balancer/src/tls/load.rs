//! Reading a certificate chain and its private key from PEM files, and the
//! checks that turn a bad pair into a clear error at start (or a refused
//! reload) instead of failed handshakes later: a file that is missing or
//! unreadable, holds no certificate or no key, a key that does not belong
//! to the certificate, or a certificate outside its validity period.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use rustls::{
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

/// Why a certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("no certificate in {0}")]
    NoCertificate(PathBuf),
    #[error("no private key in {0}")]
    NoKey(PathBuf),
    #[error("the private key in {key} is not usable: {reason}")]
    BadKey { key: PathBuf, reason: String },
    #[error("the private key in {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("the certificate in {path} cannot be parsed: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("the certificate in {path} expired at Unix time {not_after}")]
    Expired { path: PathBuf, not_after: i64 },
    #[error("the certificate in {path} is not valid before Unix time {not_before}")]
    NotYetValid { path: PathBuf, not_before: i64 },
    #[error("--tls-listen needs --tls-cert and --tls-key, or --tls-self-signed")]
    Missing,
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The chain and key of `cert` and `key`, checked.
pub fn load(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certs(cert)?;
    let private = read_key(key)?;
    certified(certs, private, cert, key, provider)
}

/// A checked chain and key from DER (a loaded or a generated pair).
pub fn certified(
    certs: Vec<CertificateDer<'static>>,
    private: PrivateKeyDer<'static>,
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let leaf = certs
        .first()
        .ok_or_else(|| TlsError::NoCertificate(cert.to_owned()))?;
    check_validity(leaf, cert, unix_now())?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| TlsError::BadKey {
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|_| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
    })?;
    Ok(Arc::new(certified))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |reason: String| TlsError::Read {
        what: "--tls-cert",
        path: path.to_owned(),
        reason,
    };
    // Read first, so a missing file says so rather than "no certificate".
    let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read {
        what: "--tls-key",
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoKey(path.to_owned()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Refuses a leaf certificate outside its validity period at `now`.
fn check_validity(leaf: &CertificateDer<'_>, path: &Path, now: i64) -> Result<(), TlsError> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let validity = parsed.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if now > not_after {
        return Err(TlsError::Expired {
            path: path.to_owned(),
            not_after,
        });
    }
    if now < not_before {
        return Err(TlsError::NotYetValid {
            path: path.to_owned(),
            not_before,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::ring::default_provider()
    }

    fn pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names).expect("generate");
        (generated.cert.pem(), generated.signing_key.serialize_pem())
    }

    fn files(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert).expect("write cert");
        std::fs::write(&k, key).expect("write key");
        (c, k)
    }

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_matching_pair_loads() {
        let (cert, key) = pair(&["localhost"]);
        let (c, k) = files(&dir("ok"), &cert, &key);
        assert!(load(&c, &k, &provider()).is_ok());
    }

    #[test]
    fn every_bad_pair_is_a_clear_error() {
        let d = dir("bad");
        let (cert, key) = pair(&["localhost"]);
        let (_, other_key) = pair(&["localhost"]);
        let missing = d.join("missing.pem");
        let p = provider();
        let (c, k) = files(&d, &cert, &key);
        let err = load(&missing, &k, &p).expect_err("missing");
        assert!(err.to_string().contains("cannot read --tls-cert"), "{err}");
        let err = load(&c, &missing, &p).expect_err("missing key");
        assert!(err.to_string().contains("cannot read --tls-key"), "{err}");
        let (c2, k2) = files(&d, "not a pem", &other_key);
        assert!(matches!(
            load(&c2, &k2, &p),
            Err(TlsError::NoCertificate(_))
        ));
        let (c3, k3) = files(&d, &cert, "not a key");
        assert!(matches!(load(&c3, &k3, &p), Err(TlsError::NoKey(_))));
        let (c4, k4) = files(&d, &cert, &other_key);
        assert!(matches!(load(&c4, &k4, &p), Err(TlsError::Mismatch { .. })));
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let cert = params.self_signed(&key).expect("sign");
        let (c, k) = files(&dir("expired"), &cert.pem(), &key.serialize_pem());
        let err = load(&c, &k, &provider()).expect_err("expired");
        assert!(matches!(err, TlsError::Expired { .. }), "{err}");
    }
}

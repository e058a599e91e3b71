//! TLS termination with rustls: the `--tls-listen` listener's handshake,
//! ALPN (`h2`, `http/1.1`), TLS 1.2 and 1.3, and certificates reloaded
//! without a restart.
//!
//! The certificate is served by a resolver that holds the current chain and
//! key behind an atomic pointer; a reload (SIGHUP, or the files' modification
//! times changing, looked at every [`RELOAD_POLL`]) loads and checks the new
//! pair ([`load`]) and swaps it in. Handshakes from then on use the new
//! pair; connections already open keep theirs, so nothing is dropped. A pair
//! that fails its checks is logged and the old one kept. `--tls-self-signed`
//! generates a pair for `localhost` at start, for trying it out.

pub mod load;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_util::sync::CancellationToken;

pub use load::TlsError;

/// How often the certificate files' modification times are looked at.
pub const RELOAD_POLL: Duration = Duration::from_secs(2);

/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Flags of TLS termination.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Address of an HTTPS listener (beside --listen), with ALPN h2 and
    /// http/1.1, TLS 1.2 and 1.3.
    #[arg(long, env = "LB_TLS_LISTEN")]
    pub tls_listen: Option<String>,
    /// PEM file with the certificate chain, leaf first; reloaded on SIGHUP
    /// or when it changes.
    #[arg(long, env = "LB_TLS_CERT", value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LB_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Generate a self-signed certificate for localhost and 127.0.0.1 at
    /// start (for trying it out; clients must skip verification or trust
    /// the certificate written next to the log line).
    #[arg(long, env = "LB_TLS_SELF_SIGNED", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
}

/// The current certificate, swapped on reload.
#[derive(Debug)]
struct Current(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// A TLS listener's server side: the rustls configuration and what reloads
/// its certificate.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
    files: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// From the flags: the files' pair, checked, or a generated one.
    pub fn from_args(args: &TlsArgs) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (key, files) = match (&args.tls_cert, &args.tls_key, args.tls_self_signed) {
            (Some(cert), Some(key), false) => (
                load::load(cert, key, &provider)?,
                Some((cert.clone(), key.clone())),
            ),
            (None, None, true) => (self_signed(&provider)?, None),
            _ => return Err(TlsError::Missing),
        };
        let current = Arc::new(Current(ArcSwap::new(key)));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            current,
            provider,
            files,
        })
    }

    /// Loads the files again; on success new handshakes use the new pair.
    pub fn reload(&self) -> Result<(), TlsError> {
        let Some((cert, key)) = &self.files else {
            return Ok(());
        };
        let pair = load::load(cert, key, &self.provider)?;
        self.current.0.store(pair);
        Ok(())
    }

    /// Reloads on SIGHUP and when the files change, until `stop`.
    pub fn watch(&self, stop: CancellationToken) {
        let Some((cert, key)) = self.files.clone() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut seen = modified(&cert, &key);
            let mut poll = tokio::time::interval(RELOAD_POLL);
            loop {
                let why = tokio::select! {
                    () = stop.cancelled() => return,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => "SIGHUP",
                    _ = poll.tick() => {
                        let now = modified(&cert, &key);
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "the files changed"
                    }
                };
                match this.reload() {
                    Ok(()) => {
                        tracing::info!(why, cert = %cert.display(), "TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::error!(why, error = %e, "TLS certificate not reloaded; keeping the current one")
                    }
                }
            }
        });
    }
}

/// The files' modification times, to notice a change.
fn modified(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (at(cert), at(key))
}

/// A certificate for `localhost` and `127.0.0.1`, generated now; its PEM
/// is written to a temporary file so a client can trust it.
fn self_signed(provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let pem = std::env::temp_dir().join(format!("lb-self-signed-{}.pem", std::process::id()));
    if std::fs::write(&pem, generated.cert.pem()).is_ok() {
        tracing::warn!(
            cert = %pem.display(),
            "serving a self-signed certificate for localhost: clients must trust this file (curl --cacert) or skip verification"
        );
    }
    let key = rustls::pki_types::PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_owned()))?;
    load::certified(
        vec![generated.cert.der().clone()],
        key,
        &pem,
        Path::new("(generated)"),
        provider,
    )
}

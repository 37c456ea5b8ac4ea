//! TLS to PostgreSQL, with rustls: the URL's `sslmode` and `sslrootcert`, as libpq reads them.
//!
//! - no `sslmode`, or `disable`: plain TCP or a Unix socket (reach a remote server over a
//!   private network or a tunnel then);
//! - `require`: TLS; the server's certificate is checked against `sslrootcert` when one is
//!   given (as libpq does), and not at all otherwise;
//! - `verify-ca`: TLS, the certificate chain checked against `sslrootcert`;
//! - `verify-full`: that, and the certificate must name the host of the URL.
//!
//! `prefer` (libpq's default: TLS if the server offers it) is refused: a fleet's passwords and
//! bans should not depend on what a server happens to offer.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject as _},
};
use tokio_postgres::{Client, Config, NoTls, Socket, config::SslMode};

/// How connections are made.
#[derive(Clone)]
pub enum Tls {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// What is wrong with a URL's TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("sslmode={0} is not one of disable, require, verify-ca, verify-full")]
    Mode(String),
    #[error("sslmode={0} needs sslrootcert=<a file of PEM certificates of the CA>")]
    NoRoot(String),
    #[error("cannot read the CA certificates in {path}: {message}")]
    Root { path: PathBuf, message: String },
}

/// The URL without `sslmode` and `sslrootcert` (tokio-postgres knows only some of their
/// values), and the TLS they ask for.
pub fn split(url: &str) -> Result<(String, TlsSettings), TlsError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), TlsSettings::default()));
    };
    let mut settings = TlsSettings::default();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "sslmode" => {
                settings.mode = match value.as_str() {
                    "disable" => Mode::Disable,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => return Err(TlsError::Mode(other.to_owned())),
                }
            }
            "sslrootcert" => settings.root = Some(PathBuf::from(value)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, settings))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: Mode,
    pub root: Option<PathBuf>,
}

impl TlsSettings {
    /// The connector, and the `sslmode` tokio-postgres is to use with it.
    pub fn connector(&self) -> Result<(Tls, SslMode), TlsError> {
        let name = match self.mode {
            Mode::Disable => return Ok((Tls::Plain, SslMode::Disable)),
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        };
        let roots = match &self.root {
            Some(path) => Some(read_roots(path)?),
            None if self.mode == Mode::Require => None,
            None => return Err(TlsError::NoRoot(name.to_owned())),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions");
        let config = match (roots, self.mode) {
            (Some(roots), Mode::VerifyFull) => builder.with_root_certificates(roots),
            (Some(roots), _) => {
                let chain = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| TlsError::Root {
                    path: self.root.clone().unwrap_or_default(),
                    message: e.to_string(),
                })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(chain)))
            }
            (None, _) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider))),
        }
        .with_no_client_auth();
        Ok((
            Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config)),
            SslMode::Require,
        ))
    }
}

fn read_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, TlsError> {
    let failed = |message: String| TlsError::Root {
        path: path.to_path_buf(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(e.to_string()))? {
        let cert = cert.map_err(|e| failed(e.to_string()))?;
        roots.add(cert).map_err(|e| failed(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(failed("no certificate in it".into()));
    }
    Ok(roots)
}

impl Tls {
    /// A connection of its own (the listener's), with this TLS.
    pub async fn connect(
        &self,
        config: &Config,
    ) -> Result<(Client, Box<dyn Messages>), tokio_postgres::Error> {
        match self {
            Tls::Plain => {
                let (client, connection) = config.connect(NoTls).await?;
                Ok((client, Box::new(connection)))
            }
            Tls::Rustls(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                Ok((client, Box::new(connection)))
            }
        }
    }
}

/// A connection's stream of messages (notifications), whatever its TLS.
pub trait Messages: Send {
    fn poll_message(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>>;
}

impl<T> Messages for tokio_postgres::Connection<Socket, T>
where
    T: tokio_postgres::tls::TlsStream + Unpin + Send,
{
    fn poll_message(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>>> {
        tokio_postgres::Connection::poll_message(self, cx)
    }
}

/// `verify-ca`: the chain is checked, the name is not.
#[derive(Debug)]
struct AnyName(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` without a CA: encrypted, the server not identified (libpq's meaning of it).
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
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

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len() + 1
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_settings_are_taken_out_of_the_url() {
        let (url, settings) = split(
            "postgres://u:p@db.internal/tracking?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u:p@db.internal/tracking?application_name=x"
        );
        assert_eq!(settings.mode, Mode::VerifyFull);
        assert_eq!(settings.root, Some(PathBuf::from("/etc/ca.pem")));
        let (url, settings) = split("postgres://h/db").unwrap();
        assert_eq!(
            (url.as_str(), settings.mode),
            ("postgres://h/db", Mode::Disable)
        );
        assert!(split("postgres://h/db?sslmode=prefer").is_err());
    }

    #[test]
    fn verification_needs_a_ca() {
        let settings = TlsSettings {
            mode: Mode::VerifyFull,
            root: None,
        };
        let err = settings.connector().err().unwrap().to_string();
        assert!(err.contains("sslrootcert"), "{err}");
        let settings = TlsSettings {
            mode: Mode::Require,
            root: None,
        };
        assert!(matches!(settings.connector().unwrap().0, Tls::Rustls(_)));
    }
}

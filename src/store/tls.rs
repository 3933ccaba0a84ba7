//! TLS to PostgreSQL (managed services: RDS, Cloud SQL, Heroku), chosen by the URL's
//! `sslmode` with libpq's meaning, over rustls with the ring provider:
//!
//! | `sslmode` | TLS | server certificate |
//! | --- | --- | --- |
//! | absent, `disable` | never (plain TCP, as before TLS support) | — |
//! | `allow`, `prefer` | if the server offers it | not checked |
//! | `require` | always | not checked; with a CA file: chain checked (as libpq with a root cert) |
//! | `verify-ca` | always | chain checked against the CA file or the system trust store |
//! | `verify-full` | always | chain and host name checked |
//!
//! tokio-postgres itself knows only disable/prefer/require, so `sslmode` and `sslrootcert` are
//! taken out of the URL here and the rest is parsed as usual. The CA file is `sslrootcert` from
//! the URL, else `database.ca_file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::StoreError;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP (also when `sslmode` is absent: no surprise handshake on local databases).
    Disable,
    /// TLS when the server offers it, certificate not checked (`allow`, `prefer`).
    Prefer,
    /// TLS, certificate not checked unless a CA file is given.
    Require,
    /// TLS, certificate chain checked, host name not.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
    VerifyFull,
}

/// A parsed `DATABASE_URL` with the TLS connector its `sslmode` asks for.
pub struct PgTarget {
    /// Connection settings (its `ssl_mode` set from [`TlsMode`]).
    pub config: tokio_postgres::Config,
    /// The connector; never used when the mode is [`TlsMode::Disable`].
    pub tls: MakeRustlsConnect,
    /// The mode that was asked for.
    pub mode: TlsMode,
}

/// Parses `url` and builds its TLS connector; `ca_file` is `database.ca_file`.
pub fn target(url: &str, ca_file: Option<&Path>) -> Result<PgTarget, StoreError> {
    let (rest, mode, rootcert) = split_tls_params(url)?;
    let mut config = super::parse_url(&rest)?;
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        TlsMode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    let ca = rootcert.as_deref().or(ca_file);
    let tls = MakeRustlsConnect::new(client_config(mode, ca)?);
    Ok(PgTarget { config, tls, mode })
}

/// Takes `sslmode` and `sslrootcert` out of a URL (`postgres://…?a=b&sslmode=…`) or a
/// key/value string (`host=… sslmode=…`).
fn split_tls_params(url: &str) -> Result<(String, TlsMode, Option<PathBuf>), StoreError> {
    let mut mode = None;
    let mut rootcert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, StoreError> {
        match key {
            "sslmode" => {
                mode = Some(match value {
                    "disable" => TlsMode::Disable,
                    "allow" | "prefer" => TlsMode::Prefer,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    other => {
                        return Err(StoreError::Db(format!(
                            "DATABASE_URL has sslmode={other}; use disable, prefer, require, verify-ca or verify-full"
                        )))
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                rootcert = Some(PathBuf::from(value));
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let rest = if url.contains("://") {
        match url.split_once('?') {
            None => url.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = form_urlencoded::parse(format!("v={v}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                    if !take(k, &v)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        // key=value form; values with spaces would be quoted, which sslmode/sslrootcert paths
        // rarely need: unquoted ones are taken, everything else is left to tokio-postgres.
        let mut kept = Vec::new();
        for tok in url.split_whitespace() {
            let taken = match tok.split_once('=') {
                Some((k, v)) if !v.starts_with('\'') => take(k.trim(), v)?,
                _ => false,
            };
            if !taken {
                kept.push(tok);
            }
        }
        kept.join(" ")
    };
    Ok((rest, mode.unwrap_or(TlsMode::Disable), rootcert))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trust anchors: the CA file, else the system store (Debian: ca-certificates).
fn roots(ca: Option<&Path>) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let bad =
                |e: &dyn std::fmt::Display| StoreError::Db(format!("cannot read the CA file {}: {e}", path.display()));
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no PEM certificate in it"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

fn client_config(mode: TlsMode, ca: Option<&Path>) -> Result<ClientConfig, StoreError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Db(format!("TLS setup: {e}")))?;
    let verify = match (mode, ca) {
        // Never used for Disable; no trust store is loaded for it.
        (TlsMode::Disable, _) => {
            return Ok(builder.with_root_certificates(RootCertStore::empty()).with_no_client_auth())
        }
        (TlsMode::Prefer, _) | (TlsMode::Require, None) => Verify::Nothing,
        (TlsMode::Require, Some(_)) | (TlsMode::VerifyCa, _) => Verify::Chain,
        (TlsMode::VerifyFull, _) => Verify::Full,
    };
    let config = match verify {
        Verify::Full => builder.with_root_certificates(roots(ca)?).with_no_client_auth(),
        Verify::Chain => {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| StoreError::Db(format!("TLS setup: {e}")))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(inner))).with_no_client_auth()
        }
        Verify::Nothing => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(Unchecked(provider()))).with_no_client_auth()
        }
    };
    Ok(config)
}

enum Verify {
    Nothing,
    Chain,
    Full,
}

// === impl ChainOnly ===

/// `verify-ca`: the chain must lead to a trusted root; the name in it may differ from the
/// host (e.g. connecting through an IP or a tunnel).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
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

// === impl Unchecked ===

/// `prefer` / `require` without a CA: encrypted, server not authenticated (libpq's meaning;
/// the handshake signatures are still checked, so the session keys belong to the presented
/// certificate).
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_taken_out_of_urls() {
        let (rest, mode, ca) = split_tls_params(
            "postgres://u:p@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode, TlsMode::VerifyFull);
        assert_eq!(ca.as_deref(), Some(Path::new("/etc/ca.pem")));

        let (rest, mode, _) = split_tls_params("postgres://h/db").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgres://h/db", TlsMode::Disable));

        let (rest, mode, _) = split_tls_params("postgres://h/db?sslmode=require").unwrap();
        assert_eq!((rest.as_str(), mode), ("postgres://h/db", TlsMode::Require));

        let (rest, mode, _) = split_tls_params("host=h dbname=d sslmode=verify-ca").unwrap();
        assert_eq!((rest.as_str(), mode), ("host=h dbname=d", TlsMode::VerifyCa));

        assert!(split_tls_params("postgres://h/db?sslmode=bogus").is_err());
    }

    #[test]
    fn targets_build_for_every_mode() {
        for (q, mode, ssl) in [
            ("", TlsMode::Disable, SslMode::Disable),
            ("?sslmode=disable", TlsMode::Disable, SslMode::Disable),
            ("?sslmode=prefer", TlsMode::Prefer, SslMode::Prefer),
            ("?sslmode=require", TlsMode::Require, SslMode::Require),
            ("?sslmode=verify-ca", TlsMode::VerifyCa, SslMode::Require),
            ("?sslmode=verify-full", TlsMode::VerifyFull, SslMode::Require),
        ] {
            let t = target(&format!("postgres://u@127.0.0.1:5432/db{q}"), None).unwrap();
            assert_eq!(t.mode, mode, "{q}");
            assert_eq!(t.config.get_ssl_mode(), ssl, "{q}");
        }
        assert!(target("postgres://h/db?sslmode=verify-full", Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }
}

//! TLS 1.3 of the bulk endpoint: the node's libp2p identity, both sides
//! authenticated, members only.
//!
//! * Certificates are libp2p's (`libp2p::tls::certificate::generate`): a
//!   fresh P-256 key, self-signed, carrying the node's ed25519 public key
//!   and its signature over the certificate key. The remote's PeerId is
//!   read from that extension by `certificate::parse`, which also checks
//!   the validity period, the self-signature and the extension's
//!   signature.
//! * Exactly one certificate, TLS 1.3 only, handshake signatures checked
//!   against the certificate's key with the scheme it was made for. No
//!   session tickets, no resumption, no 0-RTT: every connection shows its
//!   certificate, so every connection meets the membership check.
//! * The client names the PeerId it means to reach; a server with another
//!   one fails the handshake. The server requires a client certificate and
//!   admits only a current member (its verifier reads the shared
//!   [`Membership`]); the accept loop checks again once the handshake is
//!   done, and every request is checked too (`super::server`).
//! * Ciphers: the aws-lc-rs provider (the one libp2p-tls compiles), AES-GCM
//!   first and ChaCha20-Poly1305 last (libp2p-tls puts ChaCha20 first).

use crate::config::BulkConfig;
use crate::error::BulkError;
use crate::gate::{Membership, Standing};
use libp2p::identity::Keypair;
use libp2p::tls::certificate;
use libp2p::PeerId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::aws_lc_rs::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use std::sync::Arc;
use std::time::Instant;

/// ALPN of the bulk endpoint: a peer speaking anything else fails the
/// handshake.
pub const ALPN: &[u8] = b"filesyncd-bulk/1";

/// Server name the client sends (never checked: the PeerId is).
pub(crate) const SERVER_NAME: &str = "filesyncd-bulk";

/// Handshake signature schemes accepted: those of libp2p certificates
/// (P-256 as generated here and by libp2p-tls; P-384; ed25519). RSA and
/// SHA-1 schemes are refused.
const SCHEMES: [SignatureScheme; 3] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
];

/// This node's certificate and the crypto provider, made once at start.
pub(crate) struct TlsIdentity {
    /// Loaded without rustls' own certificate checks, which refuse the
    /// libp2p extension (marked critical).
    certified: Arc<CertifiedKey>,
    provider: Arc<CryptoProvider>,
}

impl TlsIdentity {
    pub(crate) fn new(keypair: &Keypair, config: &BulkConfig) -> Result<TlsIdentity, BulkError> {
        let (cert, key) = certificate::generate(keypair)?;
        let provider = Arc::new(provider(config.prefer_chacha));
        let signing = provider.key_provider.load_private_key(key)?;
        Ok(TlsIdentity {
            certified: Arc::new(CertifiedKey::new(vec![cert], signing)),
            provider,
        })
    }

    fn resolver(&self) -> Arc<SingleCertAndKey> {
        Arc::new(SingleCertAndKey::from(self.certified.clone()))
    }

    #[cfg(test)]
    fn cert(&self) -> &CertificateDer<'static> {
        &self.certified.cert[0]
    }

    /// The server side: client certificates required, members only.
    pub(crate) fn server_config(
        &self,
        membership: Membership,
    ) -> Result<rustls::ServerConfig, BulkError> {
        let mut c = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(Arc::new(MemberVerifier { membership }))
            .with_cert_resolver(self.resolver());
        c.alpn_protocols = vec![ALPN.to_vec()];
        c.max_early_data_size = 0;
        c.send_tls13_tickets = 0;
        c.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        Ok(c)
    }

    /// The client side of one dial: the server must be `expected`.
    pub(crate) fn client_config(
        &self,
        expected: PeerId,
    ) -> Result<rustls::ClientConfig, BulkError> {
        let mut c = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpectedPeerVerifier { expected }))
            .with_client_cert_resolver(self.resolver());
        c.alpn_protocols = vec![ALPN.to_vec()];
        c.resumption = rustls::client::Resumption::disabled();
        c.enable_early_data = false;
        Ok(c)
    }
}

/// aws-lc-rs with TLS 1.3 suites only, in the configured order.
fn provider(prefer_chacha: bool) -> CryptoProvider {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = if prefer_chacha {
        vec![
            TLS13_CHACHA20_POLY1305_SHA256,
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
        ]
    } else {
        vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ]
    };
    p
}

fn invalid(e: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The PeerId a presented chain proves: exactly one libp2p certificate,
/// valid now, self-signed, with a valid libp2p extension.
fn peer_of_chain(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<PeerId, rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ));
    }
    Ok(certificate::parse(end_entity).map_err(invalid)?.peer_id())
}

/// A TLS 1.3 handshake signature by the certificate's key, with the
/// scheme the certificate was made for.
fn check_signature(
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    message: &[u8],
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if !SCHEMES.contains(&dss.scheme) {
        return Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::NoSignatureSchemesInCommon,
        ));
    }
    certificate::parse(cert)
        .map_err(invalid)?
        .verify_signature(dss.scheme, message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

fn no_tls12() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls13RequiredForQuic)
}

/// The client's check of the server: a libp2p certificate of `expected`.
#[derive(Debug)]
struct ExpectedPeerVerifier {
    expected: PeerId,
}

impl ServerCertVerifier for ExpectedPeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = peer_of_chain(end_entity, intermediates)?;
        if got != self.expected {
            tracing::warn!(expected = %self.expected, %got, "bulk endpoint answered with another PeerId: refused");
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(cert, dss, message)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

/// The server's check of the client: a libp2p certificate of a current
/// member. A stranger, a removed or revoked member fails the handshake.
#[derive(Debug)]
struct MemberVerifier {
    membership: Membership,
}

impl ClientCertVerifier for MemberVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let peer = peer_of_chain(end_entity, intermediates)?;
        match self.membership.standing(&peer, Instant::now()) {
            Standing::Member => Ok(ClientCertVerified::assertion()),
            standing => {
                tracing::debug!(%peer, ?standing, "bulk handshake from a non-member: refused");
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(no_tls12())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(cert, dss, message)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

/// The remote's PeerId on an established connection (its certificate was
/// verified during the handshake; parsed again here).
pub(crate) fn peer_of(conn: &quinn::Connection) -> Option<PeerId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    match certs.as_slice() {
        [one] => certificate::parse(one).ok().map(|c| c.peer_id()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_certificate_names_own_peer_id() {
        let kp = Keypair::generate_ed25519();
        let id = TlsIdentity::new(&kp, &BulkConfig::default()).unwrap();
        assert_eq!(
            peer_of_chain(id.cert(), &[]).unwrap(),
            kp.public().to_peer_id()
        );
        // A chain of two is refused.
        assert!(peer_of_chain(id.cert(), std::slice::from_ref(id.cert())).is_err());
        // Garbage is refused.
        assert!(peer_of_chain(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]), &[]).is_err());
    }

    #[test]
    fn aes_first_chacha_last() {
        let p = provider(false);
        assert_eq!(
            p.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        assert_eq!(
            p.cipher_suites.last().unwrap().suite(),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        );
        assert!(p.cipher_suites.iter().all(|s| s.tls13().is_some()));
    }

    #[test]
    fn server_refuses_strangers_and_client_checks_the_server() {
        let kp = Keypair::generate_ed25519();
        let me = kp.public().to_peer_id();
        let id = TlsIdentity::new(&kp, &BulkConfig::default()).unwrap();
        let membership = Membership::default();
        let server = MemberVerifier {
            membership: membership.clone(),
        };
        let now = UnixTime::now();
        assert!(server.verify_client_cert(id.cert(), &[], now).is_err());
        membership.set([me].into_iter().collect(), PeerId::random());
        assert!(server.verify_client_cert(id.cert(), &[], now).is_ok());

        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let right = ExpectedPeerVerifier { expected: me };
        assert!(right
            .verify_server_cert(id.cert(), &[], &name, &[], now)
            .is_ok());
        let wrong = ExpectedPeerVerifier {
            expected: PeerId::random(),
        };
        assert!(wrong
            .verify_server_cert(id.cert(), &[], &name, &[], now)
            .is_err());
    }
}

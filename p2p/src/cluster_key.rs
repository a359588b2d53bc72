//! The cluster key: an ed25519 key whose fingerprint pins a cluster for a
//! joiner (as kubeadm's CA hash pins a Kubernetes control plane).
//!
//! The secret seed lives in the replicated state (every member holds it, see
//! docs/ARCHITECTURE.md "Trust model"); `token create` prints the
//! fingerprint of its public half beside the token. The member that admits a
//! joiner signs ([`ClusterKey::prove`]) the cluster id, the joiner's PeerId
//! and its own PeerId (both authenticated by the connection's TLS), and the
//! joiner checks the signature and, given `--cluster-fingerprint`, that the
//! key is the pinned one ([`check_proof`]). A machine that knows the join
//! token but holds no member's state cannot pass for the cluster.
//!
//! # Format
//! The fingerprint is `blake3:` followed by the 64 lowercase hex digits of
//! BLAKE3 (keyed by derivation from [`FINGERPRINT_CONTEXT`]) of the 32-byte
//! public key. The proof is a 64-byte ed25519 signature over
//! [`PROOF_CONTEXT`] ‖ u16-LE length ‖ cluster id ‖ joiner PeerId bytes
//! (u16-LE length first) ‖ member PeerId bytes (likewise).

use libp2p::identity::ed25519;
use libp2p::PeerId;

/// Domain of the fingerprint hash.
pub const FINGERPRINT_CONTEXT: &str = "filesyncd 2026-12 cluster key fingerprint v1";
/// Domain of the admission proof.
pub const PROOF_CONTEXT: &[u8] = b"filesyncd cluster admission proof v1\0";

/// A cluster key pair, from its 32-byte seed.
#[derive(Clone)]
pub struct ClusterKey(ed25519::Keypair);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({})", self.fingerprint())
    }
}

/// The pin of a cluster: see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

/// A fingerprint that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a cluster fingerprint is `blake3:` and 64 hex digits (as `token create` prints it)")]
pub struct FingerprintParseError;

/// Why a joiner refuses the cluster that admitted it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClusterProofError {
    #[error("the cluster sent no cluster key proof, but --cluster-fingerprint {0} was given")]
    Missing(Fingerprint),
    #[error("the cluster's key proof is malformed or does not verify")]
    Invalid,
    #[error("the cluster's key has fingerprint {found}, not the pinned {pinned}: this is not the cluster you meant to join")]
    WrongCluster {
        found: Fingerprint,
        pinned: Fingerprint,
    },
}

impl ClusterKey {
    pub fn from_seed(seed: [u8; 32]) -> ClusterKey {
        let mut bytes = seed;
        // Infallible for 32 bytes; zeroes its input.
        let secret = ed25519::SecretKey::try_from_bytes(&mut bytes)
            .expect("any 32 bytes are an ed25519 secret key");
        ClusterKey(ed25519::Keypair::from(secret))
    }

    /// The public key, as the joiner receives it.
    pub fn public(&self) -> [u8; 32] {
        self.0.public().to_bytes()
    }

    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint_of(&self.public())
    }

    /// The admission proof that `member` (this node) gives `joiner`.
    pub fn prove(&self, cluster_id: &str, joiner: &PeerId, member: &PeerId) -> Vec<u8> {
        self.0.sign(&proof_message(cluster_id, joiner, member))
    }
}

pub fn fingerprint_of(public: &[u8; 32]) -> Fingerprint {
    let mut h = blake3::Hasher::new_derive_key(FINGERPRINT_CONTEXT);
    h.update(public);
    Fingerprint(*h.finalize().as_bytes())
}

fn proof_message(cluster_id: &str, joiner: &PeerId, member: &PeerId) -> Vec<u8> {
    let mut m = PROOF_CONTEXT.to_vec();
    for part in [
        cluster_id.as_bytes(),
        &joiner.to_bytes()[..],
        &member.to_bytes()[..],
    ] {
        let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(part);
    }
    m
}

/// The joiner's check of the member's answer: `public` and `proof` as
/// received (`None` when the member sent none), `pinned` the configured
/// fingerprint. Returns the cluster's fingerprint when there was a proof.
pub fn check_proof(
    public: Option<&[u8]>,
    proof: Option<&[u8]>,
    cluster_id: &str,
    joiner: &PeerId,
    member: &PeerId,
    pinned: Option<Fingerprint>,
) -> Result<Option<Fingerprint>, ClusterProofError> {
    let (public, proof) = match (public, proof) {
        (Some(k), Some(p)) => (k, p),
        (None, None) => {
            return match pinned {
                Some(pin) => Err(ClusterProofError::Missing(pin)),
                None => Ok(None),
            }
        }
        _ => return Err(ClusterProofError::Invalid),
    };
    let key: [u8; 32] = public.try_into().map_err(|_| ClusterProofError::Invalid)?;
    let pk = ed25519::PublicKey::try_from_bytes(&key).map_err(|_| ClusterProofError::Invalid)?;
    if !pk.verify(&proof_message(cluster_id, joiner, member), proof) {
        return Err(ClusterProofError::Invalid);
    }
    let found = fingerprint_of(&key);
    match pinned {
        Some(pin) if pin != found => Err(ClusterProofError::WrongCluster { found, pinned: pin }),
        _ => Ok(Some(found)),
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("blake3:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = FingerprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .trim()
            .strip_prefix("blake3:")
            .ok_or(FingerprintParseError)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(FingerprintParseError);
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| FingerprintParseError)?;
        }
        Ok(Fingerprint(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_verifies_only_for_its_cluster_joiner_member_and_key() {
        let key = ClusterKey::from_seed([7; 32]);
        let other = ClusterKey::from_seed([8; 32]);
        let (j, m, x) = (PeerId::random(), PeerId::random(), PeerId::random());
        let proof = key.prove("c1", &j, &m);
        let pin = key.fingerprint();
        let public = key.public();
        let check = |public: &[u8], proof: &[u8], cid, joiner, member, pin| {
            check_proof(Some(public), Some(proof), cid, joiner, member, pin)
        };
        assert_eq!(
            check(&public, &proof, "c1", &j, &m, Some(pin)),
            Ok(Some(pin))
        );
        assert_eq!(check(&public, &proof, "c1", &j, &m, None), Ok(Some(pin)));
        // Another cluster id, joiner or member: the proof is not theirs.
        for (cid, jj, mm) in [("c2", &j, &m), ("c1", &x, &m), ("c1", &j, &x)] {
            assert_eq!(
                check(&public, &proof, cid, jj, mm, None),
                Err(ClusterProofError::Invalid)
            );
        }
        // A valid proof by another key: refused under the pin only.
        let forged = other.prove("c1", &j, &m);
        assert_eq!(
            check(&other.public(), &forged, "c1", &j, &m, Some(pin)),
            Err(ClusterProofError::WrongCluster {
                found: other.fingerprint(),
                pinned: pin
            })
        );
        // Tampered bytes, wrong lengths, half an answer.
        let mut bad = proof.clone();
        bad[3] ^= 1;
        assert_eq!(
            check(&public, &bad, "c1", &j, &m, None),
            Err(ClusterProofError::Invalid)
        );
        assert_eq!(
            check(&public[..31], &proof, "c1", &j, &m, None),
            Err(ClusterProofError::Invalid)
        );
        assert_eq!(
            check_proof(Some(&public), None, "c1", &j, &m, None),
            Err(ClusterProofError::Invalid)
        );
        // No proof at all: fine unpinned, refused pinned.
        assert_eq!(check_proof(None, None, "c1", &j, &m, None), Ok(None));
        assert_eq!(
            check_proof(None, None, "c1", &j, &m, Some(pin)),
            Err(ClusterProofError::Missing(pin))
        );
    }

    #[test]
    fn fingerprints_print_and_parse() {
        let f = ClusterKey::from_seed([1; 32]).fingerprint();
        let text = f.to_string();
        assert!(
            text.starts_with("blake3:") && text.len() == 7 + 64,
            "{text}"
        );
        assert_eq!(text.parse::<Fingerprint>(), Ok(f));
        assert_eq!(
            text.to_uppercase()
                .replace("BLAKE3", "blake3")
                .parse::<Fingerprint>(),
            Ok(f)
        );
        for bad in [
            "",
            "blake3:",
            &text[7..],
            &text[..70],
            "sha256:00",
            &format!("{text}0"),
        ] {
            assert_eq!(
                bad.parse::<Fingerprint>(),
                Err(FingerprintParseError),
                "{bad}"
            );
        }
        assert_ne!(
            ClusterKey::from_seed([2; 32]).fingerprint(),
            f,
            "another seed, another pin"
        );
    }
}

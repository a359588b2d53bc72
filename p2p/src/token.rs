//! Join tokens and the proofs built from them.
//!
//! Format (kubeadm-like): `abcdef.0123456789abcdef`: a 6-character id, a dot,
//! a 16-character secret, both from `[a-z0-9]` (82.7 bits of secret).
//!
//! * The **id** names the token in the cluster's Raft state; it travels in
//!   clear and is not secret.
//! * The **secret** never leaves the joiner. Raft stores only
//!   [`Token::hash`] = `blake3::derive_key("filesyncd join token v1", "id.secret")`.
//! * The **proof key** is derived from that stored hash
//!   (`derive_key("filesyncd join proof key v1", hash)`), so a member can
//!   check a proof with what Raft stores and never needs the secret.
//!   Consequence (documented in `docs/PROTOCOL.md`): the stored hash is
//!   verifier-equivalent; it lives only in Raft state, which only members hold.
//! * Joiner proof: `keyed_blake3(proof key, "joiner" ‖ id ‖ joiner PeerId ‖ member nonce)`.
//!   Bound to the joiner's PeerId (a replay from another identity fails) and to
//!   a fresh single-use nonce of the member (a replay on another connection fails).
//! * Member proof: `keyed_blake3(proof key, "member" ‖ id ‖ member PeerId ‖
//!   joiner nonce ‖ blake3(accept payload))`: the joiner learns that the
//!   member it talks to knows the token too, and that the payload is theirs.
//!
//! Every variable-length field is length-prefixed so no two inputs collide.
//! MAC comparisons are constant-time (`blake3::Hash` equality).

use libp2p::PeerId;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

pub const TOKEN_ID_LEN: usize = 6;
pub const TOKEN_SECRET_LEN: usize = 16;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const TOKEN_HASH_CONTEXT: &str = "filesyncd join token v1";
const PROOF_KEY_CONTEXT: &str = "filesyncd join proof key v1";

/// A join token. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: String,
    secret: String,
}

/// What the cluster stores for a token: a one-way derivation of it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    #[error("a join token looks like `abcdef.0123456789abcdef` (6 + 16 characters of a-z0-9)")]
    Format,
}

impl Token {
    /// A fresh random token (OS randomness).
    pub fn generate() -> Token {
        let mut rng = rand::rngs::OsRng;
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
                .collect()
        };
        Token {
            id: pick(TOKEN_ID_LEN),
            secret: pick(TOKEN_SECRET_LEN),
        }
    }

    /// Parses `id.secret`; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Token, TokenParseError> {
        let s = s.trim();
        let (id, secret) = s.split_once('.').ok_or(TokenParseError::Format)?;
        if !is_token_id(id) || secret.len() != TOKEN_SECRET_LEN || !all_alphabet(secret) {
            return Err(TokenParseError::Format);
        }
        Ok(Token {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The full `id.secret` text, to show to an operator once.
    pub fn expose_secret(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// What Raft stores for this token.
    pub fn hash(&self) -> TokenHash {
        TokenHash(blake3::derive_key(
            TOKEN_HASH_CONTEXT,
            self.expose_secret().as_bytes(),
        ))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}.<secret>)", self.id)
    }
}

/// True if `id` has the shape of a token id.
pub fn is_token_id(id: &str) -> bool {
    id.len() == TOKEN_ID_LEN && all_alphabet(id)
}

fn all_alphabet(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn proof_key(hash: &TokenHash) -> [u8; 32] {
    blake3::derive_key(PROOF_KEY_CONTEXT, &hash.0)
}

fn put_field(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u32).to_le_bytes());
    h.update(bytes);
}

/// The joiner's proof of knowing the token, bound to its PeerId and the
/// member's nonce.
pub fn joiner_mac(
    hash: &TokenHash,
    token_id: &str,
    joiner: &PeerId,
    member_nonce: &[u8; 32],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&proof_key(hash));
    put_field(&mut h, b"joiner");
    put_field(&mut h, token_id.as_bytes());
    put_field(&mut h, &joiner.to_bytes());
    put_field(&mut h, member_nonce);
    *h.finalize().as_bytes()
}

/// The member's proof of knowing the token, bound to its PeerId, the
/// joiner's nonce and the accept payload.
pub fn member_mac(
    hash: &TokenHash,
    token_id: &str,
    member: &PeerId,
    joiner_nonce: &[u8; 32],
    payload: &[u8],
) -> [u8; 32] {
    member_side(
        b"member",
        hash,
        token_id,
        member,
        joiner_nonce,
        blake3::hash(payload).as_bytes(),
    )
}

/// The MAC a member puts on a leader redirect (`JoinResponse::Redirect`):
/// keyed like [`member_mac`] (so only a holder of the token's hash can make
/// it) but in its own domain, over the redirect's target.
pub fn redirect_mac(
    hash: &TokenHash,
    token_id: &str,
    member: &PeerId,
    joiner_nonce: &[u8; 32],
    target: &[u8],
) -> [u8; 32] {
    member_side(b"redirect", hash, token_id, member, joiner_nonce, target)
}

/// A member's MAC in `domain` over its identity, the joiner's nonce and
/// `last`.
fn member_side(
    domain: &[u8],
    hash: &TokenHash,
    token_id: &str,
    member: &PeerId,
    joiner_nonce: &[u8; 32],
    last: &[u8],
) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(&proof_key(hash));
    put_field(&mut h, domain);
    put_field(&mut h, token_id.as_bytes());
    put_field(&mut h, &member.to_bytes());
    put_field(&mut h, joiner_nonce);
    put_field(&mut h, last);
    *h.finalize().as_bytes()
}

/// Constant-time equality of two MACs.
pub fn mac_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    blake3::Hash::from_bytes(*a) == blake3::Hash::from_bytes(*b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_tokens_parse_and_differ() {
        let a = Token::generate();
        let b = Token::generate();
        assert_ne!(a, b);
        let text = a.expose_secret();
        assert_eq!(text.len(), 23);
        assert_eq!(Token::parse(&text).unwrap(), a);
        assert_eq!(Token::parse(&text).unwrap().hash(), a.hash());
        assert!(!format!("{a:?}").contains(&text[7..]));
    }

    #[test]
    fn bad_shapes_are_refused() {
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdeF",
            "abcdef-0123456789abcdef",
            "abcdef.0123456789abcdef.x",
            "abcdéf.0123456789abcdef",
        ] {
            assert_eq!(Token::parse(bad), Err(TokenParseError::Format), "{bad:?}");
        }
        assert!(Token::parse(" abcdef.0123456789abcdef\n").is_ok());
    }

    #[test]
    fn macs_bind_peer_nonce_and_token() {
        let t = Token::parse("abcdef.0123456789abcdef").unwrap();
        let other = Token::parse("abcdef.0123456789abcdeg").unwrap();
        let p1 = PeerId::random();
        let p2 = PeerId::random();
        let n = [7u8; 32];
        let m = joiner_mac(&t.hash(), t.id(), &p1, &n);
        assert!(mac_eq(&m, &joiner_mac(&t.hash(), t.id(), &p1, &n)));
        assert!(!mac_eq(&m, &joiner_mac(&t.hash(), t.id(), &p2, &n)));
        assert!(!mac_eq(&m, &joiner_mac(&t.hash(), t.id(), &p1, &[8u8; 32])));
        assert!(!mac_eq(&m, &joiner_mac(&other.hash(), t.id(), &p1, &n)));
        let mm = member_mac(&t.hash(), t.id(), &p1, &n, b"payload");
        assert!(!mac_eq(&m, &mm));
        assert!(!mac_eq(
            &mm,
            &member_mac(&t.hash(), t.id(), &p1, &n, b"payloaX")
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,40}") {
            let _ = Token::parse(&s);
        }

        #[test]
        fn valid_tokens_roundtrip(id in "[a-z0-9]{6}", secret in "[a-z0-9]{16}") {
            let text = format!("{id}.{secret}");
            let t = Token::parse(&text).unwrap();
            prop_assert_eq!(t.id(), id.as_str());
            prop_assert_eq!(t.expose_secret(), text);
        }
    }
}

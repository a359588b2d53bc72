//! Both sides of the join handshake (`/filesyncd/join/1`).
//!
//! Member side ([`JoinServer`], driven by the event loop):
//! * `Hello` → a fresh random 32-byte nonce is remembered for that peer
//!   (replacing any earlier one) and sent as `Challenge`. Nothing about the
//!   token is looked up yet: no oracle on token ids. At most
//!   [`MAX_CHALLENGES`] outstanding; each lives [`CHALLENGE_TTL`] and is
//!   dropped when the peer's last connection closes.
//! * `Proof` → the challenge is taken (single use: a second Proof finds
//!   none and is a `Protocol` rejection), then, on a spawned task, the
//!   verifier gives the stored hash, the MAC is checked in constant time,
//!   and only then is the verifier asked to admit. Wrong MAC and unknown id
//!   both answer `BadToken`. `max_join_failures` bad proofs from one peer
//!   ban it for `ban_duration`.
//!
//! Nonces are keyed by PeerId rather than by connection because the
//! request-response behaviour may spread two requests to the same peer over
//! different connections; the MAC binds the joiner's PeerId, so this loses
//! nothing.
//!
//! Joiner side: [`run_joiner`], see [`crate::P2pClient::join`].

use crate::error::{JoinError, RequestError};
use crate::hooks::{JoinApplication, JoinVerifier, Rejection};
use crate::protocol::{
    JoinRequest, JoinResponse, RejectReason, JOIN_VERSION, MAX_JOIN_ADDRS, MAX_JOIN_INFO,
};
use crate::token::{self, is_token_id, Token};
use libp2p::request_response::ResponseChannel;
use libp2p::{Multiaddr, PeerId};
use rand::RngCore;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const CHALLENGE_TTL: Duration = Duration::from_secs(30);
pub const MAX_CHALLENGES: usize = 256;

struct Challenge {
    token_id: String,
    nonce: [u8; 32],
    joiner_nonce: [u8; 32],
    issued: Instant,
}

/// A finished verification, handed back to the event loop.
pub(crate) struct JoinDone {
    pub peer: PeerId,
    pub channel: ResponseChannel<JoinResponse>,
    pub response: JoinResponse,
    pub outcome: JoinOutcome,
}

pub(crate) enum JoinOutcome {
    Admitted {
        token_id: String,
        addrs: Vec<Multiaddr>,
    },
    BadProof,
    Refused,
}

/// What the event loop should do with an inbound join request.
pub(crate) enum Action {
    Respond(ResponseChannel<JoinResponse>, JoinResponse),
    /// A verification task was spawned; it reports through `done`.
    Pending,
}

pub(crate) struct JoinServer {
    local: PeerId,
    verifier: Option<Arc<dyn JoinVerifier>>,
    challenges: HashMap<PeerId, Challenge>,
    done: mpsc::Sender<JoinDone>,
}

fn reject(reason: RejectReason) -> JoinResponse {
    JoinResponse::Rejected {
        reason,
        hint: Vec::new(),
    }
}

impl JoinServer {
    pub fn new(
        local: PeerId,
        verifier: Option<Arc<dyn JoinVerifier>>,
        done: mpsc::Sender<JoinDone>,
    ) -> JoinServer {
        JoinServer {
            local,
            verifier,
            challenges: HashMap::new(),
            done,
        }
    }

    pub fn forget_peer(&mut self, peer: &PeerId) {
        self.challenges.remove(peer);
    }

    pub fn on_request(
        &mut self,
        peer: PeerId,
        request: JoinRequest,
        channel: ResponseChannel<JoinResponse>,
        observed_addr: Option<Multiaddr>,
    ) -> Action {
        let now = Instant::now();
        self.challenges
            .retain(|_, c| now.duration_since(c.issued) < CHALLENGE_TTL);
        match request {
            JoinRequest::Hello {
                version,
                token_id,
                joiner_nonce,
            } => {
                if version != JOIN_VERSION || !is_token_id(&token_id) {
                    return Action::Respond(channel, reject(RejectReason::Protocol));
                }
                if self.verifier.is_none() {
                    return Action::Respond(channel, reject(RejectReason::Unavailable));
                }
                if self.challenges.len() >= MAX_CHALLENGES && !self.challenges.contains_key(&peer) {
                    return Action::Respond(channel, reject(RejectReason::Unavailable));
                }
                let mut nonce = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut nonce);
                self.challenges.insert(
                    peer,
                    Challenge {
                        token_id,
                        nonce,
                        joiner_nonce,
                        issued: now,
                    },
                );
                Action::Respond(channel, JoinResponse::Challenge { nonce })
            }
            JoinRequest::Proof {
                token_id,
                mac,
                listen_addrs,
                info,
            } => {
                let Some(challenge) = self.challenges.remove(&peer) else {
                    return Action::Respond(channel, reject(RejectReason::Protocol));
                };
                if challenge.token_id != token_id
                    || listen_addrs.len() > MAX_JOIN_ADDRS
                    || info.len() > MAX_JOIN_INFO
                {
                    return Action::Respond(channel, reject(RejectReason::Protocol));
                }
                let Some(verifier) = self.verifier.clone() else {
                    return Action::Respond(channel, reject(RejectReason::Unavailable));
                };
                let addrs = listen_addrs
                    .into_iter()
                    .filter_map(|b| Multiaddr::try_from(b).ok())
                    .collect();
                let local = self.local;
                let done = self.done.clone();
                tokio::spawn(async move {
                    let joiner = Joiner {
                        peer,
                        mac,
                        addrs,
                        observed_addr,
                        info,
                    };
                    let (response, outcome) = verify(verifier, local, challenge, joiner).await;
                    let _ = done
                        .send(JoinDone {
                            peer,
                            channel,
                            response,
                            outcome,
                        })
                        .await;
                });
                Action::Pending
            }
        }
    }
}

/// What a joiner sent with its `Proof`.
struct Joiner {
    peer: PeerId,
    mac: [u8; 32],
    addrs: Vec<Multiaddr>,
    observed_addr: Option<Multiaddr>,
    info: Vec<u8>,
}

async fn verify(
    verifier: Arc<dyn JoinVerifier>,
    local: PeerId,
    challenge: Challenge,
    joiner: Joiner,
) -> (JoinResponse, JoinOutcome) {
    let Joiner {
        peer,
        mac,
        addrs,
        observed_addr,
        info,
    } = joiner;
    let refused = |r: Rejection, outcome| {
        (
            JoinResponse::Rejected {
                reason: r.reason,
                hint: r.hint,
            },
            outcome,
        )
    };
    let token_id = challenge.token_id;
    let hash = match verifier.token_hash(&token_id).await {
        Ok(h) => h,
        Err(r) if r.reason == RejectReason::BadToken => return refused(r, JoinOutcome::BadProof),
        Err(r) => return refused(r, JoinOutcome::Refused),
    };
    let expected = token::joiner_mac(&hash, &token_id, &peer, &challenge.nonce);
    if !token::mac_eq(&expected, &mac) {
        return refused(
            Rejection::new(RejectReason::BadToken),
            JoinOutcome::BadProof,
        );
    }
    let application = JoinApplication {
        peer,
        token_id: token_id.clone(),
        listen_addrs: addrs.clone(),
        observed_addr: observed_addr.clone(),
        info,
    };
    // Announced addresses first, then where the connection came from (QUIC
    // dials from its listening port, so that one is usually dialable).
    let addrs: Vec<Multiaddr> = addrs.into_iter().chain(observed_addr).collect();
    match verifier.admit(application).await {
        Err(r) if r.reason == RejectReason::NotLeader && !r.hint.is_empty() => {
            let member_mac =
                token::redirect_mac(&hash, &token_id, &local, &challenge.joiner_nonce, &r.hint);
            (
                JoinResponse::Redirect {
                    target: r.hint,
                    member_mac,
                },
                JoinOutcome::Refused,
            )
        }
        Ok(payload) => {
            let member_mac =
                token::member_mac(&hash, &token_id, &local, &challenge.joiner_nonce, &payload);
            (
                JoinResponse::Accepted {
                    payload,
                    member_mac,
                },
                JoinOutcome::Admitted { token_id, addrs },
            )
        }
        Err(r) => refused(r, JoinOutcome::Refused),
    }
}

/// The joiner side, over any request function (the client's join request).
pub(crate) async fn run_joiner<F, Fut>(
    local: PeerId,
    member: PeerId,
    token: &Token,
    listen_addrs: Vec<Multiaddr>,
    info: Vec<u8>,
    mut request: F,
) -> Result<Vec<u8>, JoinError>
where
    F: FnMut(JoinRequest) -> Fut,
    Fut: Future<Output = Result<JoinResponse, RequestError>>,
{
    let mut joiner_nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut joiner_nonce);
    let hello = JoinRequest::Hello {
        version: JOIN_VERSION,
        token_id: token.id().to_owned(),
        joiner_nonce,
    };
    let nonce = match request(hello).await? {
        JoinResponse::Challenge { nonce } => nonce,
        JoinResponse::Rejected { reason, hint } => {
            return Err(JoinError::Rejected { reason, hint })
        }
        JoinResponse::Accepted { .. } => return Err(JoinError::Protocol("Accepted before Proof")),
        JoinResponse::Redirect { .. } => return Err(JoinError::Protocol("Redirect before Proof")),
    };
    let hash = token.hash();
    let proof = JoinRequest::Proof {
        token_id: token.id().to_owned(),
        mac: token::joiner_mac(&hash, token.id(), &local, &nonce),
        listen_addrs: listen_addrs
            .into_iter()
            .take(MAX_JOIN_ADDRS)
            .map(|a| a.to_vec())
            .collect(),
        info,
    };
    match request(proof).await? {
        JoinResponse::Accepted {
            payload,
            member_mac,
        } => {
            let expected = token::member_mac(&hash, token.id(), &member, &joiner_nonce, &payload);
            if token::mac_eq(&expected, &member_mac) {
                Ok(payload)
            } else {
                Err(JoinError::MemberProofInvalid)
            }
        }
        JoinResponse::Redirect { target, member_mac } => {
            let expected = token::redirect_mac(&hash, token.id(), &member, &joiner_nonce, &target);
            if !token::mac_eq(&expected, &member_mac) {
                return Err(JoinError::MemberProofInvalid);
            }
            String::from_utf8(target)
                .map(JoinError::Redirect)
                .map(Err)
                .unwrap_or(Err(JoinError::Protocol("redirect target is not UTF-8")))
        }
        // A redirect without a proof is not followed.
        JoinResponse::Rejected {
            reason: RejectReason::NotLeader,
            ..
        } => Err(JoinError::Rejected {
            reason: RejectReason::Unavailable,
            hint: b"named a leader without proving it knows the token".to_vec(),
        }),
        JoinResponse::Rejected { reason, hint } => Err(JoinError::Rejected { reason, hint }),
        JoinResponse::Challenge { .. } => Err(JoinError::Protocol("Challenge in reply to Proof")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use std::cell::RefCell;

    /// A fake member that answers with a fixed challenge and then `accept`.
    fn fake_member(
        accept: impl Fn(&JoinRequest, [u8; 32]) -> JoinResponse,
        token: &Token,
        joiner: PeerId,
        member: PeerId,
    ) -> Result<Vec<u8>, JoinError> {
        let joiner_nonce = RefCell::new([0u8; 32]);
        let nonce = [42u8; 32];
        block_on(run_joiner(
            joiner,
            member,
            token,
            Vec::new(),
            Vec::new(),
            |req| {
                let resp = match &req {
                    JoinRequest::Hello {
                        joiner_nonce: n, ..
                    } => {
                        *joiner_nonce.borrow_mut() = *n;
                        JoinResponse::Challenge { nonce }
                    }
                    JoinRequest::Proof { .. } => accept(&req, *joiner_nonce.borrow()),
                };
                async move { Ok(resp) }
            },
        ))
    }

    #[test]
    fn joiner_follows_only_proven_redirects() {
        let token = Token::generate();
        let joiner = PeerId::random();
        let member = PeerId::random();
        let hash = token.hash();
        let leader = b"/ip4/10.0.0.9/udp/7400/quic-v1".to_vec();
        let target = leader.clone();
        let honest = move |req: &JoinRequest, jn: [u8; 32]| {
            let JoinRequest::Proof { token_id, .. } = req else {
                unreachable!()
            };
            JoinResponse::Redirect {
                member_mac: token::redirect_mac(&hash, token_id, &member, &jn, &target),
                target: target.clone(),
            }
        };
        assert!(matches!(
            fake_member(honest, &token, joiner, member),
            Err(JoinError::Redirect(t)) if t.as_bytes() == leader
        ));
        // A spoofer at the --join address, without the token: a redirect with
        // a made-up proof, or the old unproven form, is not followed.
        let spoofed = |_: &JoinRequest, _: [u8; 32]| JoinResponse::Redirect {
            target: b"/ip4/6.6.6.6/udp/7400/quic-v1".to_vec(),
            member_mac: [7u8; 32],
        };
        assert!(matches!(
            fake_member(spoofed, &token, joiner, member),
            Err(JoinError::MemberProofInvalid)
        ));
        let unproven = |_: &JoinRequest, _: [u8; 32]| JoinResponse::Rejected {
            reason: RejectReason::NotLeader,
            hint: b"/ip4/6.6.6.6/udp/7400/quic-v1".to_vec(),
        };
        assert!(matches!(
            fake_member(unproven, &token, joiner, member),
            Err(JoinError::Rejected {
                reason: RejectReason::Unavailable,
                ..
            })
        ));
        // An accepted MAC does not pass as a redirect MAC (separate domains).
        let mixed = move |req: &JoinRequest, jn: [u8; 32]| {
            let JoinRequest::Proof { token_id, .. } = req else {
                unreachable!()
            };
            let t = b"/ip4/6.6.6.6/udp/7400/quic-v1".to_vec();
            JoinResponse::Redirect {
                member_mac: token::member_mac(&hash, token_id, &member, &jn, &t),
                target: t,
            }
        };
        assert!(matches!(
            fake_member(mixed, &token, joiner, member),
            Err(JoinError::MemberProofInvalid)
        ));
    }

    #[test]
    fn joiner_checks_the_member_proof() {
        let token = Token::generate();
        let joiner = PeerId::random();
        let member = PeerId::random();
        let hash = token.hash();
        let honest = |req: &JoinRequest, jn: [u8; 32]| {
            let JoinRequest::Proof { mac, token_id, .. } = req else {
                unreachable!()
            };
            assert!(token::mac_eq(
                mac,
                &token::joiner_mac(&hash, token_id, &joiner, &[42u8; 32])
            ));
            JoinResponse::Accepted {
                payload: b"info".to_vec(),
                member_mac: token::member_mac(&hash, token_id, &member, &jn, b"info"),
            }
        };
        assert_eq!(
            fake_member(honest, &token, joiner, member).unwrap(),
            b"info"
        );

        // An impostor that does not know the token cannot fake acceptance.
        let impostor = |_: &JoinRequest, _: [u8; 32]| JoinResponse::Accepted {
            payload: b"evil".to_vec(),
            member_mac: [0u8; 32],
        };
        assert!(matches!(
            fake_member(impostor, &token, joiner, member),
            Err(JoinError::MemberProofInvalid)
        ));
        // A proof made for another member identity does not pass either.
        let other = PeerId::random();
        let relayed = |req: &JoinRequest, jn: [u8; 32]| {
            let JoinRequest::Proof { token_id, .. } = req else {
                unreachable!()
            };
            JoinResponse::Accepted {
                payload: b"info".to_vec(),
                member_mac: token::member_mac(&hash, token_id, &other, &jn, b"info"),
            }
        };
        assert!(matches!(
            fake_member(relayed, &token, joiner, member),
            Err(JoinError::MemberProofInvalid)
        ));
    }
}

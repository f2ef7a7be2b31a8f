//! The decision for one request body from an admitted client: forward it to the node, or answer
//! it here. Sans-IO: the client's identity and certificate profile, the body and the time are
//! inputs; the verdict, with the answer to send, is the output.
//!
//! In order, each step refusing the whole body:
//! 1. The certificate's profile must be an API role ([`Role::of`]); otherwise -32007.
//! 2. The client's bucket must hold a token: one is taken before the body is read, so a
//!    client whose bucket is empty costs no parsing and every body costs at least 1, refused
//!    ones included (-32008 when empty).
//! 3. The body must be JSON-RPC the node would run ([`classify`]; -32700, -32600, -32601).
//! 4. Every request's method must be allowed to the role (-32007): a batch passes whole or not
//!    at all, so the node never runs part of a refused batch.
//! 5. The rest of the body's cost is taken (-32008 with the wait for the whole cost, or
//!    -32005 for a cost above the burst, which waiting never cures).
//!
//! Answers: before the body is read (steps 1–2) or when it cannot be (3), one error object
//! with a null id. After (4–5), one error object for each request with an id, the offending
//! method named in `data`: an object for a single request, an array for a batch, nothing
//! when every request was a notification.

use std::hash::Hash;

use serde_json::{Value, json};
use vpbox_ca::CertProfile;

use crate::code;
use crate::envelope::{Envelope, classify};
use crate::error::Error;
use crate::rate::{RateConfig, RateLimiter, RateRefusal};
use vpbox_api::{Method, Role};

/// Why a body was answered by the proxy instead of forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The client's certificate has no API role.
    #[error("a {} certificate has no API role", .0.name())]
    NoRole(CertProfile),
    /// The body is not JSON-RPC the node would run.
    #[error("{0}")]
    Malformed(Error),
    /// A request calls a method its client's role may not call.
    #[error("request {at}: method {} is not allowed for role {}", .method.name(), .role.name())]
    NotAllowed {
        /// The client's role.
        role: Role,
        /// The method refused (the first in the body).
        method: Method,
        /// Its position.
        at: usize,
    },
    /// The client's bucket does not hold the body's cost now.
    #[error("rate limited: retry in {retry_after_ms} ms")]
    RateLimited {
        /// Milliseconds until it will.
        retry_after_ms: u64,
    },
    /// The body costs more than the client's whole bucket: it can never pass.
    #[error("the body costs {cost}, above the burst of {burst}: split it")]
    OverBurst {
        /// The body's cost.
        cost: u64,
        /// The bucket's size.
        burst: u64,
    },
}

impl Refusal {
    /// The JSON-RPC error code of the answer.
    pub fn code(&self) -> i64 {
        match self {
            Self::NoRole(_) | Self::NotAllowed { .. } => code::NOT_ALLOWED,
            Self::Malformed(e) => e.code(),
            Self::RateLimited { .. } => code::RATE_LIMITED,
            Self::OverBurst { .. } => code::TOO_LARGE,
        }
    }

    /// The HTTP status of the answer: 200 for a body that is not JSON-RPC (the node answers it
    /// so too), 403 for a role, 429 for a rate, 413 for a cost above the burst.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::NoRole(_) | Self::NotAllowed { .. } => 403,
            Self::Malformed(_) => 200,
            Self::RateLimited { .. } => 429,
            Self::OverBurst { .. } => 413,
        }
    }

    /// The `Retry-After` header's value, in whole seconds (rounded up, at least 1), when
    /// waiting helps.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after_ms } => {
                RateRefusal::Wait { retry_after_ms: *retry_after_ms }.retry_after_s()
            }
            _ => None,
        }
    }

    /// The error's `data`: what the client needs to act on it.
    fn data(&self) -> Option<Value> {
        match self {
            Self::NoRole(profile) => Some(json!({"profile": profile.name()})),
            Self::Malformed(_) => None,
            Self::NotAllowed { role, method, at } => {
                Some(json!({"role": role.name(), "method": method.name(), "at": at}))
            }
            Self::RateLimited { retry_after_ms } => Some(json!({"retryAfterMs": retry_after_ms})),
            Self::OverBurst { cost, burst } => Some(json!({"cost": cost, "burst": burst})),
        }
    }

    fn error_object(&self, id: &Value) -> Value {
        let mut error = json!({"code": self.code(), "message": self.to_string()});
        if let (Some(data), Some(e)) = (self.data(), error.as_object_mut()) {
            e.insert("data".into(), data);
        }
        json!({"jsonrpc": "2.0", "id": id, "error": error})
    }

    /// The JSON-RPC answer to a refused body: for `envelope` (the body as read, if it was), one
    /// error per request with an id, or `None` if all were notifications; without it, one
    /// error with a null id.
    pub fn answer(&self, envelope: Option<&Envelope>) -> Option<Vec<u8>> {
        let value = match envelope {
            None => self.error_object(&Value::Null),
            Some(env) => {
                let mut errors: Vec<Value> = env
                    .requests()
                    .iter()
                    .filter_map(|r| r.id().map(|id| self.error_object(id)))
                    .collect();
                if errors.is_empty() {
                    return None;
                }
                if env.is_batch() { Value::Array(errors) } else { errors.swap_remove(0) }
            }
        };
        // Serialising a value built of strings and numbers cannot fail.
        Some(serde_json::to_vec(&value).unwrap_or_default())
    }
}

/// What to do with a body.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Verdict {
    /// Forward the body, unchanged, to the node; this is what it asks for.
    Forward(Envelope),
    /// Answer the client without forwarding.
    Refuse {
        /// Why.
        reason: Refusal,
        /// The JSON-RPC body to answer with (`None`: an empty body, only notifications came).
        answer: Option<Vec<u8>>,
    },
}

/// The API listener's request policy: roles, classification and the clients' buckets.
#[derive(Debug, Clone)]
pub struct Gate<K> {
    rate: RateLimiter<K>,
}

impl<K: Hash + Eq + Clone> Gate<K> {
    /// A gate whose clients' buckets follow `rate`.
    pub fn new(rate: RateConfig) -> Self {
        Self { rate: RateLimiter::new(rate) }
    }

    /// The clients' buckets.
    pub fn rate(&self) -> &RateLimiter<K> {
        &self.rate
    }

    /// Decides on `body` from `client`, admitted with a certificate of `profile`, at `now_ms`
    /// (the caller's monotonic clock): the steps of the module's documentation.
    pub fn admit(&mut self, client: &K, profile: CertProfile, body: &[u8], now_ms: u64) -> Verdict {
        let refuse = |reason: Refusal, envelope: Option<&Envelope>| Verdict::Refuse {
            answer: reason.answer(envelope),
            reason,
        };
        let Some(role) = Role::of(profile) else {
            return refuse(Refusal::NoRole(profile), None);
        };
        if let Err(e) = self.rate.take(client, 1, now_ms) {
            return refuse(rate_refusal(e), None);
        }
        let envelope = match classify(body) {
            Ok(env) => env,
            Err(e) => return refuse(Refusal::Malformed(e), None),
        };
        let denied = envelope.requests().iter().enumerate().find(|(_, r)| !role.allows(r.method()));
        if let Some((at, r)) = denied {
            let reason = Refusal::NotAllowed { role, method: r.method(), at };
            return refuse(reason, Some(&envelope));
        }
        let cost = envelope.cost();
        let burst = u64::from(self.rate.config().burst.get());
        if cost > burst {
            return refuse(Refusal::OverBurst { cost, burst }, Some(&envelope));
        }
        if self.rate.take(client, cost.saturating_sub(1), now_ms).is_err() {
            // The wait is for the whole cost, the token taken above included: that is what
            // the client's next attempt will take.
            let reason = match self.rate.wait_ms(client, cost, now_ms) {
                Some(retry_after_ms) => Refusal::RateLimited { retry_after_ms },
                None => Refusal::OverBurst { cost, burst },
            };
            return refuse(reason, Some(&envelope));
        }
        Verdict::Forward(envelope)
    }
}

fn rate_refusal(e: RateRefusal) -> Refusal {
    match e {
        RateRefusal::Wait { retry_after_ms } => Refusal::RateLimited { retry_after_ms },
        RateRefusal::OverBurst { cost, burst } => Refusal::OverBurst { cost, burst },
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU32, NonZeroUsize};

    use vpbox_ledger::tx::{Payload, TxBody};
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    use super::*;

    fn gate(per_s: u32, burst: u32) -> Gate<&'static str> {
        Gate::new(RateConfig {
            per_s: NonZeroU32::new(per_s).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            clients_max: NonZeroUsize::new(16).unwrap(),
        })
    }

    fn call(id: Value, method: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": []})
    }

    fn body(v: &Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    fn refusal(v: Verdict) -> (Refusal, Option<Value>) {
        match v {
            Verdict::Refuse { reason, answer } => {
                (reason, answer.map(|a| serde_json::from_slice(&a).unwrap()))
            }
            Verdict::Forward(env) => panic!("forwarded {env:?}"),
        }
    }

    fn batch_tx(pairs: usize) -> String {
        let s = SoftwareSigner::new(SecretKey::generate().unwrap());
        let body = TxBody {
            submitter: s.public_key().fingerprint(),
            nonce: 1,
            timestamp_ms: 1,
            payload: Payload::AnchorPutBatch(vec![([1; 32], [2; 32]); pairs]),
        };
        hex::encode(body.sign(&s).unwrap().encode())
    }

    #[test]
    fn posp_reads_and_anchors_pass_and_its_admin_calls_are_refused() {
        let mut g = gate(100, 100);
        for m in ["anchor_get", "anchor_put", "block_latestBlock", "gov_getState"] {
            let v = g.admit(&"posp", CertProfile::Posp, &body(&call(json!(1), m)), 0);
            assert!(matches!(v, Verdict::Forward(_)), "{m}");
        }
        for m in ["cert_enroll", "cert_publishCrl", "gov_submit"] {
            let (reason, answer) =
                refusal(g.admit(&"posp", CertProfile::Posp, &body(&call(json!("x"), m)), 0));
            assert_eq!(reason.code(), -32007, "{m}");
            assert_eq!(reason.http_status(), 403);
            let answer = answer.unwrap();
            assert_eq!(answer["id"], "x");
            assert_eq!(answer["error"]["code"], -32007);
            assert_eq!(answer["error"]["data"], json!({"role": "posp", "method": m, "at": 0}));
        }
    }

    #[test]
    fn admin_calls_everything_but_the_box_internal_long_poll() {
        let mut g = gate(100, 100);
        for m in Method::ALL {
            let v = g.admit(&"admin", CertProfile::Admin, &body(&call(json!(1), m.name())), 0);
            if m.is_internal() {
                let (reason, _) = refusal(v);
                assert_eq!(reason.code(), -32007, "{}", m.name());
            } else {
                assert!(matches!(v, Verdict::Forward(_)), "{}", m.name());
            }
        }
    }

    #[test]
    fn certificates_without_an_api_role_are_refused_unread() {
        let mut g = gate(100, 100);
        for profile in [CertProfile::VpNode, CertProfile::Root, CertProfile::Ca] {
            let (reason, answer) =
                refusal(g.admit(&"node", profile, &body(&call(json!(1), "anchor_get")), 0));
            assert_eq!(reason, Refusal::NoRole(profile));
            assert_eq!(reason.code(), -32007);
            assert_eq!(answer.unwrap()["id"], Value::Null);
        }
        assert!(g.rate().is_empty(), "no bucket made for a client without a role");
    }

    #[test]
    fn one_forbidden_request_refuses_the_whole_batch_answering_every_id() {
        let mut g = gate(100, 100);
        let batch = json!([
            call(json!(1), "anchor_put"),
            {"jsonrpc": "2.0", "method": "anchor_get", "params": []},
            call(json!("b"), "gov_submit"),
        ]);
        let (reason, answer) = refusal(g.admit(&"posp", CertProfile::Posp, &body(&batch), 0));
        assert_eq!(
            reason,
            Refusal::NotAllowed { role: Role::Posp, method: Method::GovSubmit, at: 2 }
        );
        let answer = answer.unwrap();
        let ids: Vec<&Value> = answer.as_array().unwrap().iter().map(|a| &a["id"]).collect();
        assert_eq!(ids, [&json!(1), &json!("b")], "the notification gets no answer");
        // A refused notification alone gets an empty answer.
        let note = json!({"jsonrpc": "2.0", "method": "gov_submit", "params": []});
        let (_, answer) = refusal(g.admit(&"posp", CertProfile::Posp, &body(&note), 0));
        assert_eq!(answer, None);
    }

    #[test]
    fn malformed_bodies_are_answered_with_the_nodes_codes_and_cost_a_token() {
        let mut g = gate(1, 3);
        let (reason, answer) = refusal(g.admit(&"posp", CertProfile::Posp, b"{", 0));
        assert_eq!((reason.code(), reason.http_status()), (-32700, 200));
        assert_eq!(answer.unwrap()["error"]["code"], -32700);
        let (reason, _) = refusal(g.admit(&"posp", CertProfile::Posp, b"[]", 0));
        assert_eq!(reason, Refusal::Malformed(Error::EmptyBatch));
        let (reason, _) =
            refusal(g.admit(&"posp", CertProfile::Posp, &body(&call(json!(1), "admin_x")), 0));
        assert_eq!(reason.code(), -32601);
        // Three refused bodies spent the bucket: the fourth is not even read.
        let (reason, answer) = refusal(g.admit(&"posp", CertProfile::Posp, b"{", 0));
        assert_eq!(reason, Refusal::RateLimited { retry_after_ms: 1_000 });
        assert_eq!(reason.retry_after_s(), Some(1));
        assert_eq!(answer.unwrap()["error"]["data"], json!({"retryAfterMs": 1000}));
    }

    #[test]
    fn a_batch_costs_its_pairs_and_waits_for_all_of_them() {
        let mut g = gate(100, 1_000);
        let put = |pairs| json!({"jsonrpc": "2.0", "id": 9, "method": "anchor_putBatch", "params": [batch_tx(pairs)]});
        let six_hundred = body(&put(600));
        assert!(matches!(
            g.admit(&"posp", CertProfile::Posp, &six_hundred, 0),
            Verdict::Forward(_)
        ));
        assert_eq!(g.rate().tokens(&"posp", 0), Some(400));
        // 400 left, 600 needed: 2 s at 100 a second; the refused body still took one token.
        let (reason, answer) = refusal(g.admit(&"posp", CertProfile::Posp, &six_hundred, 0));
        assert_eq!(reason, Refusal::RateLimited { retry_after_ms: 2_010 });
        assert_eq!(
            (reason.code(), reason.http_status(), reason.retry_after_s()),
            (-32008, 429, Some(3))
        );
        assert_eq!(answer.unwrap()["id"], 9);
        assert_eq!(g.rate().tokens(&"posp", 0), Some(399));
        let (reason, _) = refusal(g.admit(&"posp", CertProfile::Posp, &six_hundred, 2_009));
        assert!(matches!(reason, Refusal::RateLimited { .. }));
        // The previous refusal took a token too: the wait grew by 10 ms.
        assert!(matches!(
            g.admit(&"posp", CertProfile::Posp, &six_hundred, 2_020),
            Verdict::Forward(_)
        ));
        // Another client has its own bucket.
        assert!(matches!(
            g.admit(&"other", CertProfile::Posp, &six_hundred, 0),
            Verdict::Forward(_)
        ));
    }

    #[test]
    fn a_body_above_the_burst_is_too_large_not_rate_limited() {
        let mut g = gate(100, 1_000);
        let big = json!([
            {"jsonrpc": "2.0", "id": 1, "method": "anchor_putBatch", "params": [batch_tx(900)]},
            {"jsonrpc": "2.0", "id": 2, "method": "anchor_putBatch", "params": {"tx": batch_tx(101)}},
        ]);
        let (reason, answer) = refusal(g.admit(&"posp", CertProfile::Posp, &body(&big), 0));
        assert_eq!(reason, Refusal::OverBurst { cost: 1_001, burst: 1_000 });
        assert_eq!(
            (reason.code(), reason.http_status(), reason.retry_after_s()),
            (-32005, 413, None)
        );
        assert_eq!(answer.unwrap().as_array().unwrap().len(), 2);
    }
}

//! The peer-link handshake: before any frame, each end of a link proves which node it is, with
//! its consensus key answering the other's fresh challenge in the link signing domain
//! ([`vpbox_sm::Domain::LINK`]). It runs end to end over whatever carries the link (a Unix
//! socket today; the proxies' mutual-TLS tunnel between hosts), so it holds through a proxy.
//!
//! ```text
//! acceptor → dialer   hello(B)                      hello = "VPBOX-HELO/1" chain:[32] id:u32 nonce:[32]
//! dialer → acceptor   hello(A) sig_A(Dial, A→B, challenge nB, nonce nA)
//! acceptor → dialer   sig_B(Accept, B→A, challenge nA, nonce nB)
//! ```
//!
//! Each message travels in a frame of at most [`HANDSHAKE_MAX`] bytes; the whole exchange has
//! a deadline ([`HANDSHAKE_TIMEOUT`]) and the acceptor signs only after the dialer's proof
//! checked, so a stranger costs one verification and a few hundred bytes for at most 5 s. After
//! it, every frame on the link is the authenticated node's; links carry frames one way, from
//! dialer to acceptor. The proof payload is [`vpbox_signer_client::link::LinkProof`]: the
//! signer decodes it and refuses to sign one for another node.
//!
//! This module is the sans-IO core ([`Acceptor`], [`Dialer`]) and the shells that run it over a
//! stream ([`accept`], [`dial`]) with a deadline on every read.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use vpbox_consensus::NodeId;
use vpbox_signer_client::link::{HELLO_LEN, Hello, LinkProof, Role};
use vpbox_sm::Domain;
use vpbox_sm::sm2::{PublicKey, Signature};
use vpbox_sm::sm3::hash;

const SIG_LEN: usize = 64;
/// Longest handshake frame.
pub const HANDSHAKE_MAX: usize = 256;
/// The whole handshake must end within this, or the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// A message of the wrong shape.
    #[error("malformed handshake: {0}")]
    Malformed(&'static str),
    /// The other side runs another chain.
    #[error("the peer runs another chain")]
    WrongChain,
    /// The other side is not a member (or not the one dialled).
    #[error("node {0} is not who this link expects")]
    Unexpected(u32),
    /// Its proof does not verify under its consensus key.
    #[error("node {0}'s link proof does not verify")]
    BadProof(u32),
    /// This node's signer did not sign its proof.
    #[error("signing this node's link proof: {0}")]
    Prover(String),
    /// The stream failed or the deadline passed.
    #[error("link: {0}")]
    Io(String),
}

/// Signs link proofs with this node's consensus key (its signer, over its socket).
pub trait Prover: Send + Sync {
    /// The raw 64-byte SM2 signature of `payload` in [`Domain::LINK`].
    fn prove(&self, payload: &[u8]) -> Result<[u8; SIG_LEN], String>;
}

/// The consensus keys of the nodes this node links with (the committed membership), shared
/// between the listeners and the dialers.
#[derive(Clone, Default)]
pub struct Members(Arc<RwLock<HashMap<NodeId, PublicKey>>>);

impl Members {
    /// Makes `members` the set.
    pub fn set(&self, members: impl IntoIterator<Item = (NodeId, PublicKey)>) {
        if let Ok(mut m) = self.0.write() {
            *m = members.into_iter().collect();
        }
    }

    /// The key of `id`, if it is a member.
    pub fn key(&self, id: NodeId) -> Option<PublicKey> {
        self.0.read().ok()?.get(&id).cloned()
    }
}

/// Who this node is on its links.
#[derive(Clone)]
pub struct Identity {
    /// The chain (its genesis block's hash).
    pub chain: [u8; 32],
    /// This node.
    pub id: NodeId,
    /// Its consensus key's link proofs.
    pub prover: Arc<dyn Prover>,
}

fn verify(key: &PublicKey, proof: &LinkProof, sig: &[u8]) -> bool {
    Signature::from_raw(sig)
        .is_ok_and(|s| key.verify_in(Domain::LINK, &hash(proof.encode()).0, &s).is_valid())
}

fn prove(me: &Identity, proof: &LinkProof) -> Result<[u8; SIG_LEN], HandshakeError> {
    me.prover.prove(&proof.encode()).map_err(HandshakeError::Prover)
}

/// The accepting side's state: it has sent its hello and waits for the dialer's proof.
pub struct Acceptor {
    me: Identity,
    nonce: [u8; 32],
}

impl Acceptor {
    /// Starts with a fresh `nonce`; the bytes are the first message.
    pub fn start(me: Identity, nonce: [u8; 32]) -> (Self, Vec<u8>) {
        let hello = Hello { chain: me.chain, id: me.id.0, nonce }.encode();
        (Self { me, nonce }, hello)
    }

    /// Checks the dialer's hello and proof: the node it names must be a member other than this
    /// one, and its proof must verify. Then signs this node's proof: the bytes are the last
    /// message, and the link's peer is the node returned.
    pub fn finish(
        self,
        members: &Members,
        msg: &[u8],
    ) -> Result<(NodeId, Vec<u8>), HandshakeError> {
        if msg.len() != HELLO_LEN + SIG_LEN {
            return Err(HandshakeError::Malformed("not a hello and proof"));
        }
        let hello = Hello::decode(&msg[..HELLO_LEN])
            .map_err(|_| HandshakeError::Malformed("not a hello"))?;
        if hello.chain != self.me.chain {
            return Err(HandshakeError::WrongChain);
        }
        let peer = NodeId(hello.id);
        let key = members
            .key(peer)
            .filter(|_| peer != self.me.id)
            .ok_or(HandshakeError::Unexpected(hello.id))?;
        let theirs = LinkProof {
            role: Role::Dial,
            chain: self.me.chain,
            from: hello.id,
            to: self.me.id.0,
            challenge: self.nonce,
            nonce: hello.nonce,
        };
        if !verify(&key, &theirs, &msg[HELLO_LEN..]) {
            return Err(HandshakeError::BadProof(hello.id));
        }
        let mine = LinkProof {
            role: Role::Accept,
            chain: self.me.chain,
            from: self.me.id.0,
            to: hello.id,
            challenge: hello.nonce,
            nonce: self.nonce,
        };
        Ok((peer, prove(&self.me, &mine)?.to_vec()))
    }
}

/// The dialling side's state: it has answered the acceptor's hello and waits for its proof.
pub struct Dialer {
    expected: LinkProof,
    key: PublicKey,
}

impl Dialer {
    /// Answers the acceptor's `hello`: it must be `peer` (whose key is `key`) on this chain.
    /// The bytes are the second message.
    pub fn answer(
        me: &Identity,
        peer: NodeId,
        key: PublicKey,
        nonce: [u8; 32],
        hello: &[u8],
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let hello = Hello::decode(hello).map_err(|_| HandshakeError::Malformed("not a hello"))?;
        if hello.chain != me.chain {
            return Err(HandshakeError::WrongChain);
        }
        if hello.id != peer.0 || peer == me.id {
            return Err(HandshakeError::Unexpected(hello.id));
        }
        let mine = LinkProof {
            role: Role::Dial,
            chain: me.chain,
            from: me.id.0,
            to: peer.0,
            challenge: hello.nonce,
            nonce,
        };
        let mut msg = Hello { chain: me.chain, id: me.id.0, nonce }.encode();
        msg.extend_from_slice(&prove(me, &mine)?);
        let expected = LinkProof {
            role: Role::Accept,
            chain: me.chain,
            from: peer.0,
            to: me.id.0,
            challenge: nonce,
            nonce: hello.nonce,
        };
        Ok((Self { expected, key }, msg))
    }

    /// Checks the acceptor's proof.
    pub fn finish(self, msg: &[u8]) -> Result<(), HandshakeError> {
        if msg.len() != SIG_LEN {
            return Err(HandshakeError::Malformed("not a proof"));
        }
        if !verify(&self.key, &self.expected, msg) {
            return Err(HandshakeError::BadProof(self.expected.from));
        }
        Ok(())
    }
}

/// A fresh nonce from the operating system.
pub fn nonce() -> Result<[u8; 32], HandshakeError> {
    let mut n = [0; 32];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Io(format!("randomness: {e}")))?;
    Ok(n)
}

/// A stream a link runs over: a Unix socket, or TCP in development.
pub trait Conn: Read + Write + Send {
    /// Bounds each read; `None` waits forever.
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    /// Bounds each write.
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()>;
    /// Ends both directions (a reader blocked on it returns).
    fn shut(&self);
    /// Another handle on the same stream.
    fn handle(&self) -> std::io::Result<Box<dyn Conn>>;
}

impl Conn for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        Self::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        Self::set_write_timeout(self, t)
    }
    fn shut(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
    fn handle(&self) -> std::io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
}

/// Reads from `conn` until `deadline`: each read is bounded by the time left, so a peer that
/// trickles bytes cannot stretch the wait.
pub struct Deadline<'a> {
    conn: &'a mut dyn Conn,
    deadline: Instant,
}

impl<'a> Deadline<'a> {
    /// Reads from `conn` until `deadline`.
    pub fn new(conn: &'a mut dyn Conn, deadline: Instant) -> Self {
        Self { conn, deadline }
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline passed"));
        }
        self.conn.set_read_timeout(Some(left))?;
        self.conn.read(buf)
    }
}

fn io(e: impl std::fmt::Display) -> HandshakeError {
    HandshakeError::Io(e.to_string())
}

fn read_msg(conn: &mut dyn Conn, deadline: Instant) -> Result<Vec<u8>, HandshakeError> {
    match vpbox_wire::read_frame(&mut Deadline::new(conn, deadline), HANDSHAKE_MAX) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(HandshakeError::Io("closed during the handshake".into())),
        Err(e) => Err(io(e)),
    }
}

fn send_msg(conn: &mut dyn Conn, msg: &[u8]) -> Result<(), HandshakeError> {
    conn.set_write_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(io)?;
    vpbox_wire::write_frame(conn, msg, HANDSHAKE_MAX).and_then(|()| conn.flush()).map_err(io)
}

/// Runs the accepting side over `conn`; the authenticated peer on success.
pub fn accept(
    conn: &mut dyn Conn,
    me: &Identity,
    members: &Members,
) -> Result<NodeId, HandshakeError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let (state, hello) = Acceptor::start(me.clone(), nonce()?);
    send_msg(conn, &hello)?;
    let msg = read_msg(conn, deadline)?;
    let (peer, proof) = state.finish(members, &msg)?;
    send_msg(conn, &proof)?;
    Ok(peer)
}

/// Runs the dialling side over `conn` to `peer`, whose consensus key is `key`.
pub fn dial(
    conn: &mut dyn Conn,
    me: &Identity,
    peer: NodeId,
    key: PublicKey,
) -> Result<(), HandshakeError> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let hello = read_msg(conn, deadline)?;
    let (state, msg) = Dialer::answer(me, peer, key, nonce()?, &hello)?;
    send_msg(conn, &msg)?;
    let proof = read_msg(conn, deadline)?;
    state.finish(&proof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpbox_sm::sm2::SecretKey;
    use vpbox_sm::{Signer, SoftwareSigner};

    struct Soft(SoftwareSigner);

    impl Prover for Soft {
        fn prove(&self, payload: &[u8]) -> Result<[u8; SIG_LEN], String> {
            let sig = self.0.sign(Domain::LINK, &hash(payload).0).map_err(|e| e.to_string())?;
            Ok(sig.to_raw())
        }
    }

    fn node(id: u32, chain: u8) -> (Identity, PublicKey) {
        let key = SecretKey::from_bytes(&[id as u8 + 1; 32]).unwrap();
        let public = key.public_key().clone();
        let prover = Arc::new(Soft(SoftwareSigner::new(key)));
        (Identity { chain: [chain; 32], id: NodeId(id), prover }, public)
    }

    fn run(
        a: &Identity,
        members: &Members,
        d: &Identity,
        peer: NodeId,
        key: PublicKey,
    ) -> Result<NodeId, HandshakeError> {
        let (acc, hello) = Acceptor::start(a.clone(), [7; 32]);
        let (dialer, msg) = Dialer::answer(d, peer, key, [9; 32], &hello)?;
        let (who, proof) = acc.finish(members, &msg)?;
        dialer.finish(&proof)?;
        Ok(who)
    }

    #[test]
    fn both_ends_prove_who_they_are() {
        let (a, ka) = node(1, 0);
        let (d, kd) = node(2, 0);
        let members = Members::default();
        members.set([(NodeId(1), ka.clone()), (NodeId(2), kd.clone())]);
        assert_eq!(run(&a, &members, &d, NodeId(1), ka.clone()), Ok(NodeId(2)));

        // A stranger with its own key claiming to be node 2.
        let (mut stranger, _) = node(9, 0);
        stranger.id = NodeId(2);
        assert_eq!(
            run(&a, &members, &stranger, NodeId(1), ka.clone()),
            Err(HandshakeError::BadProof(2))
        );
        // A node that is not a member.
        let (outsider, _) = node(5, 0);
        assert_eq!(
            run(&a, &members, &outsider, NodeId(1), ka.clone()),
            Err(HandshakeError::Unexpected(5))
        );
        // Another chain.
        let (other, _) = node(2, 1);
        assert_eq!(
            run(&a, &members, &other, NodeId(1), ka.clone()),
            Err(HandshakeError::WrongChain)
        );
        // The acceptor is not the node dialled, or does not hold that node's key.
        assert_eq!(run(&a, &members, &d, NodeId(3), ka), Err(HandshakeError::Unexpected(1)));
        assert_eq!(run(&a, &members, &d, NodeId(1), kd), Err(HandshakeError::BadProof(1)));
    }

    /// Both shells over a real socket pair: the acceptor learns the dialer's id, the dialer
    /// the acceptor's proof; each acceptor's hello carries a fresh challenge (module docs: the
    /// other's fresh challenge), so two handshakes never share one.
    #[test]
    fn the_handshake_runs_over_a_socket_with_a_fresh_challenge_each_time() {
        let (a, ka) = node(1, 0);
        let (d, kd) = node(2, 0);
        let members = Members::default();
        members.set([(NodeId(1), ka.clone()), (NodeId(2), kd)]);
        let mut challenges = Vec::new();
        for _ in 0..2 {
            let (mut acc_end, mut dial_end) = UnixStream::pair().unwrap();
            let (a, m) = (a.clone(), members.clone());
            let acceptor = std::thread::spawn(move || accept(&mut acc_end, &a, &m));
            // The dialer's side, with the hello recorded on the way.
            let hello = read_msg(&mut dial_end, Instant::now() + HANDSHAKE_TIMEOUT).unwrap();
            challenges.push(Hello::decode(&hello).unwrap().nonce);
            let (state, msg) =
                Dialer::answer(&d, NodeId(1), ka.clone(), nonce().unwrap(), &hello).unwrap();
            send_msg(&mut dial_end, &msg).unwrap();
            let proof = read_msg(&mut dial_end, Instant::now() + HANDSHAKE_TIMEOUT).unwrap();
            assert_eq!(state.finish(&proof), Ok(()));
            assert_eq!(acceptor.join().unwrap(), Ok(NodeId(2)));
        }
        assert_ne!(challenges[0], challenges[1]);
        // And `dial` itself against `accept`.
        let (mut acc_end, mut dial_end) = UnixStream::pair().unwrap();
        let (a2, m) = (a, members);
        let acceptor = std::thread::spawn(move || accept(&mut acc_end, &a2, &m));
        assert_eq!(dial(&mut dial_end, &d, NodeId(1), ka), Ok(()));
        assert_eq!(acceptor.join().unwrap(), Ok(NodeId(2)));
    }

    /// HANDSHAKE_TIMEOUT bounds the whole exchange (module docs): a peer that says nothing, or
    /// trickles a byte at a time, is cut off at the deadline — not when it chooses to close.
    #[test]
    fn a_silent_or_trickling_peer_is_cut_off_at_the_deadline() {
        let (a, ka) = node(1, 0);
        let members = Members::default();
        members.set([(NodeId(1), ka)]);
        let cases = [("silent", false), ("trickling", true)].map(|(name, trickle)| {
            let (a, m) = (a.clone(), members.clone());
            std::thread::spawn(move || {
                let (mut acc_end, mut peer) = UnixStream::pair().unwrap();
                let writer = std::thread::spawn(move || {
                    let _ = read_msg(&mut peer, Instant::now() + HANDSHAKE_TIMEOUT);
                    if !trickle {
                        // Silent until the acceptor hangs up (or 12 s).
                        peer.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
                        let _ = peer.read(&mut [0u8; 1]);
                        return;
                    }
                    // A frame header promising 200 bytes, then a byte every 300 ms, until the
                    // acceptor hangs up (or 12 s).
                    let mut bytes = vec![0, 0, 0, 200];
                    bytes.extend_from_slice(&[0; 36]);
                    for b in bytes {
                        if peer.write_all(&[b]).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(300));
                    }
                });
                let start = Instant::now();
                let got = accept(&mut acc_end, &a, &m);
                let took = start.elapsed();
                drop(acc_end);
                writer.join().unwrap();
                (name, got, took)
            })
        });
        for case in cases {
            let (name, got, took) = case.join().unwrap();
            assert!(
                matches!(&got, Err(HandshakeError::Io(e)) if !e.contains("closed")),
                "{name}: {got:?}"
            );
            assert!(
                took >= HANDSHAKE_TIMEOUT - Duration::from_millis(100)
                    && took < HANDSHAKE_TIMEOUT + Duration::from_secs(2),
                "{name}: cut off after {took:?}"
            );
        }
    }

    /// `Conn::shut` ends both directions: a reader blocked on another handle of the stream
    /// returns (the peer links' teardown relies on it).
    #[test]
    fn shutting_a_stream_wakes_a_blocked_reader() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut other = Conn::handle(&ours).unwrap();
        // Bounded, so that a `shut` that does nothing fails the test instead of hanging it.
        other.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            other.read(&mut buf)
        });
        std::thread::sleep(Duration::from_millis(200));
        Conn::shut(&ours);
        assert_eq!(reader.join().unwrap().unwrap(), 0, "end of stream, not a timeout");
    }

    #[test]
    fn a_proof_is_bound_to_its_challenge() {
        let (a, ka) = node(1, 0);
        let (d, kd) = node(2, 0);
        let members = Members::default();
        members.set([(NodeId(1), ka.clone()), (NodeId(2), kd)]);
        // The dialer's message recorded on one connection is refused on the next (new nonce).
        let (_, hello1) = Acceptor::start(a.clone(), [1; 32]);
        let (_, msg1) = Dialer::answer(&d, NodeId(1), ka.clone(), [9; 32], &hello1).unwrap();
        let (acc2, _) = Acceptor::start(a.clone(), [2; 32]);
        assert_eq!(acc2.finish(&members, &msg1).unwrap_err(), HandshakeError::BadProof(2));
        // Every single-bit change of the dialer's message is refused.
        let (_, hello) = Acceptor::start(a.clone(), [3; 32]);
        let (_, msg) = Dialer::answer(&d, NodeId(1), ka, [9; 32], &hello).unwrap();
        for i in 0..msg.len() * 8 {
            let mut m = msg.clone();
            m[i / 8] ^= 1 << (i % 8);
            let (acc, _) = Acceptor::start(a.clone(), [3; 32]);
            assert!(acc.finish(&members, &m).is_err(), "bit {i}");
        }
    }
}

//! The TLS signing domain: TLS 1.3 CertificateVerify signatures for the box's proxy, made with
//! a key in the HSM so that the proxy holds no private key.
//!
//! A request in this domain ([`DOMAIN`]) carries the content RFC 8446 §4.4.3 signs: 64 spaces,
//! the context string of a server's or a client's CertificateVerify, a 0x00 byte and the
//! handshake's transcript hash (32 bytes for SM3 or SHA-256, 48 for SHA-384). The signer checks
//! that form ([`check_content`]) and signs `e = SM3(Z ‖ content)` with `Z` over the RFC 8998
//! §3.2.1 signer ID `TLSv1.3+GM+Cipher+Suite` (sm2sig_sm3), and only for the users the key's
//! `tls_uids` list. Neither the ID nor the content's form is shared by any other domain, so a
//! TLS signature is never a vote, a transaction, a link proof or an approval.
//!
//! What the domain cannot check: the transcript hash is opaque, so a caller allowed in it can
//! have any handshake signed — which is what it is allowed to do, and each signature is
//! written to the signer's audit log.

/// The domain's tag on the signer's wire.
pub const DOMAIN: &str = "TLS13/CertificateVerify";

/// The SM2 signer ID of TLS 1.3 CertificateVerify (RFC 8998 §3.2.1).
pub const SM2_ID: &[u8] = b"TLSv1.3+GM+Cipher+Suite";

/// `e = SM3(Z ‖ content)` with `Z` over [`SM2_ID`] for `key`: what a CertificateVerify signs.
pub fn digest(
    key: &vpbox_sm::sm2::PublicKey,
    content: &[u8],
) -> Result<vpbox_sm::sm3::Digest, vpbox_sm::Error> {
    let z = vpbox_sm::sm2::z_value(SM2_ID, key)?;
    Ok(vpbox_sm::sm2::message_digest(&z, &[content]))
}

/// RFC 8446 §4.4.3's context strings.
const SERVER: &[u8] = b"TLS 1.3, server CertificateVerify";
const CLIENT: &[u8] = b"TLS 1.3, client CertificateVerify";

/// Which end of the handshake signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server's CertificateVerify.
    Server,
    /// The client's CertificateVerify.
    Client,
}

/// Checks that `content` is a TLS 1.3 CertificateVerify content and says whose.
pub fn check_content(content: &[u8]) -> Result<Side, &'static str> {
    let Some(rest) = content.strip_prefix(&[b' '; 64][..]) else {
        return Err("not a TLS 1.3 CertificateVerify content: no 64-space prefix");
    };
    let (side, rest) = if let Some(r) = rest.strip_prefix(SERVER) {
        (Side::Server, r)
    } else if let Some(r) = rest.strip_prefix(CLIENT) {
        (Side::Client, r)
    } else {
        return Err("not a TLS 1.3 CertificateVerify content: unknown context string");
    };
    match rest.split_first() {
        Some((0, hash)) if hash.len() == 32 || hash.len() == 48 => Ok(side),
        Some((0, _)) => Err("the transcript hash is not 32 or 48 bytes"),
        _ => Err("no 0x00 separator after the context string"),
    }
}

/// The content a `side` signs for `transcript_hash` (what rustls hands a signer).
pub fn content(side: Side, transcript_hash: &[u8]) -> Vec<u8> {
    let mut out = vec![b' '; 64];
    out.extend_from_slice(match side {
        Side::Server => SERVER,
        Side::Client => CLIENT,
    });
    out.push(0);
    out.extend_from_slice(transcript_hash);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_certificate_verify_contents_pass() {
        assert_eq!(check_content(&content(Side::Server, &[7; 32])), Ok(Side::Server));
        assert_eq!(check_content(&content(Side::Client, &[7; 48])), Ok(Side::Client));
        for bad in [
            content(Side::Server, &[7; 31]),
            content(Side::Server, &[7; 33]),
            content(Side::Server, &[]),
            content(Side::Server, &[7; 32])[1..].to_vec(),
            [&content(Side::Client, &[7; 32])[..64], b"TLS 1.2, client CertificateVerify\0"]
                .concat(),
            b"VPBOX/consensus/v1\0".to_vec(),
            Vec::new(),
        ] {
            assert!(check_content(&bad).is_err(), "{bad:?}");
        }
        // The separator must be 0x00.
        let mut c = content(Side::Server, &[7; 32]);
        c[64 + SERVER.len()] = 1;
        assert!(check_content(&c).is_err());
    }
}

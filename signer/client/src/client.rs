use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use vpbox_sm::Domain;
use vpbox_sm::sm2::{PublicKey, Signature};

use crate::protocol::{PAYLOAD_MAX, Request, Response, Status, read_frame, write_frame};

/// A client error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket failed, or the signer hung up (as it does on an unauthorised UID).
    #[error("signer socket")]
    Io(#[from] std::io::Error),
    /// The signer refused or failed.
    #[error("signer refused ({0:?}): {1}")]
    Refused(Status, String),
    /// The signer's answer made no sense.
    #[error("signer protocol: {0}")]
    Protocol(String),
}

/// A connection to the signer.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects to the signer's socket.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self { stream })
    }

    /// Bounds each read and write of a request (30 s by default).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))?;
        Ok(())
    }

    /// Sends one request and reads its answer.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, &request.encode())?;
        let body = read_frame(&mut self.stream)?.ok_or_else(|| {
            ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the signer closed the connection",
            ))
        })?;
        let response =
            Response::decode(&body, request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        match response {
            Response::Error(status, msg) => Err(ClientError::Refused(status, msg)),
            ok => Ok(ok),
        }
    }

    /// The public key of `key`.
    pub fn public_key(&mut self, key: &str) -> Result<PublicKey, ClientError> {
        match self.call(&Request::PublicKey { key: key.into() })? {
            Response::PublicKey(p) => {
                PublicKey::from_sec1(&p).map_err(|e| ClientError::Protocol(e.to_string()))
            }
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Signs `payload` in `domain`: the signer hashes it (SM3) and, in the consensus domain,
    /// decodes it to decide whether its double-sign guard allows it.
    pub fn sign(
        &mut self,
        key: &str,
        domain: Domain,
        payload: &[u8],
    ) -> Result<Signature, ClientError> {
        if payload.len() > PAYLOAD_MAX {
            return Err(ClientError::Protocol(format!(
                "a payload of {} bytes is larger than the signer accepts",
                payload.len()
            )));
        }
        let req = Request::Sign {
            key: key.into(),
            domain: domain.tag().into(),
            payload: payload.to_vec(),
        };
        match self.call(&req)? {
            Response::Signature(s) => {
                Signature::from_raw(&s).map_err(|e| ClientError::Protocol(e.to_string()))
            }
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Signs a TLS 1.3 CertificateVerify `content` with `key` (sm2sig_sm3, RFC 8998): allowed
    /// only to the users the key's `tls_uids` lists (see [`crate::tls13`]).
    pub fn sign_tls13(&mut self, key: &str, content: &[u8]) -> Result<Signature, ClientError> {
        let req = Request::Sign {
            key: key.into(),
            domain: crate::tls13::DOMAIN.into(),
            payload: content.to_vec(),
        };
        match self.call(&req)? {
            Response::Signature(s) => {
                Signature::from_raw(&s).map_err(|e| ClientError::Protocol(e.to_string()))
            }
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// The double-sign guard's state and refusals for `key`, as JSON.
    pub fn guard(&mut self, key: &str) -> Result<String, ClientError> {
        match self.call(&Request::Guard { key: key.into() })? {
            Response::Guard(json) => Ok(json),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Asks the signer to sign and verify a self-test with every key.
    pub fn health(&mut self) -> Result<(), ClientError> {
        self.call(&Request::Health).map(|_| ())
    }
}

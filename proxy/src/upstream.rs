//! The node's JSON-RPC socket as the API's forwards reach it: HTTP/1.1 connections kept alive
//! and reused, at most [`IDLE_MAX`] idle, so a request costs no connect and no handshake.
//!
//! A kept connection the node has closed meanwhile (its idle timeout is 60 s) fails when used
//! before the request reaches the node; such a request is sent again once, on a new
//! connection. Sending again is safe for this API even had the node read it: reads are
//! idempotent, and a transaction is identified by its hash (a second `anchor_put` of the same
//! transaction answers as the first, `duplicate`).

use std::path::PathBuf;
use std::sync::Mutex;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// The most idle connections kept.
pub(crate) const IDLE_MAX: usize = 64;

/// The pool.
pub(crate) struct Upstream {
    socket: PathBuf,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Upstream {
    pub(crate) fn new(socket: PathBuf) -> Self {
        Self { socket, idle: Mutex::new(Vec::new()) }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < IDLE_MAX && !sender.is_closed() {
            idle.push(sender);
        }
    }

    /// POSTs `body` with the client identity `client`: the status and at most `max` bytes of
    /// the answer.
    pub(crate) async fn post(
        &self,
        body: Bytes,
        client: Option<String>,
        max: usize,
    ) -> Result<(u16, Bytes), String> {
        let request = |body: Bytes| {
            let mut r = hyper::Request::post("/")
                .header("host", "node")
                .header("content-type", "application/json");
            if let Some(c) = &client {
                r = r.header(vpbox_api::HEADER, c);
            }
            r.body(Full::new(body)).map_err(|e| e.to_string())
        };
        let (mut sender, answer) = match self.take_idle() {
            Some(mut kept) => match kept.send_request(request(body.clone())?).await {
                Ok(a) => (kept, a),
                // Closed by the node while idle: once more on a new connection.
                Err(_) => {
                    let mut fresh = self.connect().await?;
                    let a = fresh.send_request(request(body)?).await.map_err(|e| e.to_string())?;
                    (fresh, a)
                }
            },
            None => {
                let mut fresh = self.connect().await?;
                let a = fresh.send_request(request(body)?).await.map_err(|e| e.to_string())?;
                (fresh, a)
            }
        };
        let status = answer.status().as_u16();
        let bytes = Limited::new(answer.into_body(), max)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        // Whole answers only: the connection is then ready for the next request.
        if sender.ready().await.is_ok() {
            self.give_back(sender);
        }
        Ok((status, bytes))
    }
}

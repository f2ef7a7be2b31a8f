//! The node's JSON-RPC socket as the API's forwards reach it: HTTP/1.1 connections kept alive
//! and reused, at most [`IDLE_MAX`] idle, so a request costs no connect and no handshake.
//!
//! A kept connection the node has closed meanwhile (its idle timeout is 60 s) fails before the
//! request is written to it; only then, with the request given back unsent, is it sent again,
//! once, on a new connection. A request that failed after it was written is not sent again:
//! the client gets the error (503) and decides.

use std::path::PathBuf;
use std::sync::Mutex;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// The most idle connections kept.
pub(crate) const IDLE_MAX: usize = 512;

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
            Some(mut kept) => match kept.try_send_request(request(body)?).await {
                Ok(a) => (kept, a),
                Err(mut e) => match e.take_message() {
                    // Closed by the node while idle, the request unsent: once more on a new
                    // connection.
                    Some(unsent) => {
                        let mut fresh = self.connect().await?;
                        let a = fresh.send_request(unsent).await.map_err(|e| e.to_string())?;
                        (fresh, a)
                    }
                    None => return Err(e.into_error().to_string()),
                },
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

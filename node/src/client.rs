//! A JSON-RPC client (HTTP/1.1, keep-alive) over the node's Unix socket or any other stream a
//! [`Dial`] opens (the CLI's HTTPS to a box's proxy), for the CLI, the benchmark and the tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A byte stream a client talks HTTP over.
pub trait Stream: Read + Write + Send {}

impl<T: Read + Write + Send> Stream for T {}

/// Opens a client's connections: to a Unix socket, or (the CLI) over TLS to a proxy.
pub trait Dial: Send {
    /// A new connection whose reads and writes give up after `timeout`.
    fn dial(&self, timeout: Duration) -> std::io::Result<Box<dyn Stream>>;
}

/// Dials a Unix socket.
struct UnixDial(PathBuf);

impl Dial for UnixDial {
    fn dial(&self, timeout: Duration) -> std::io::Result<Box<dyn Stream>> {
        let s = UnixStream::connect(&self.0)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(Box::new(s))
    }
}

use serde_json::{Value, json};

/// A call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The socket failed.
    #[error("{path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The node answered with a JSON-RPC error.
    #[error("error {code}: {message}")]
    Rpc {
        /// The code.
        code: i64,
        /// The message.
        message: String,
        /// The error's `data`, if it has one (e.g. the proxy's `{"retryAfterMs"}`).
        data: Option<Value>,
    },
    /// The answer was not JSON-RPC.
    #[error("bad answer: {0}")]
    Protocol(String),
}

/// A connection to one node.
pub struct RpcClient {
    path: PathBuf,
    dial: Box<dyn Dial>,
    conn: Option<BufReader<Box<dyn Stream>>>,
    next_id: u64,
    timeout: Duration,
}

impl RpcClient {
    /// A client of the node at `path` (connects on first use).
    pub fn new(path: &Path) -> Self {
        Self::with_dial(path, Box::new(UnixDial(path.to_path_buf())))
    }

    /// A client whose connections `dial` opens; `name` names it in errors (a URL).
    pub fn with_dial(name: &Path, dial: Box<dyn Dial>) -> Self {
        Self {
            path: name.to_path_buf(),
            dial,
            conn: None,
            next_id: 1,
            timeout: Duration::from_secs(120),
        }
    }

    /// Bounds each read and write on the socket (default 120 s, above the node's 30 s wait for
    /// a commit). It does not bound `connect`, which blocks while a hung node's backlog is full:
    /// a caller that needs a hard deadline calls from a thread it can give up on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.conn = None;
    }

    /// The socket (or the name given to [`RpcClient::with_dial`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Calls `method` and returns its result.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let answer = self.post(body.to_string().as_bytes())?;
        let v: Value =
            serde_json::from_slice(&answer).map_err(|e| CallError::Protocol(e.to_string()))?;
        if let Some(e) = v.get("error") {
            return Err(CallError::Rpc {
                code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                data: e.get("data").cloned(),
            });
        }
        v.get("result").cloned().ok_or_else(|| CallError::Protocol("no result".into()))
    }

    /// Posts a raw body and returns the response body (any HTTP status).
    pub fn post(&mut self, body: &[u8]) -> Result<Vec<u8>, CallError> {
        // One retry on a fresh connection: a kept-alive one may have been closed by the node.
        match self.post_once(body) {
            Ok(b) => Ok(b),
            Err(_) => {
                self.conn = None;
                self.post_once(body)
            }
        }
    }

    fn post_once(&mut self, body: &[u8]) -> Result<Vec<u8>, CallError> {
        let io = |source| CallError::Io { path: self.path.clone(), source };
        if self.conn.is_none() {
            self.conn = Some(BufReader::new(self.dial.dial(self.timeout).map_err(io)?));
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(CallError::Protocol("no connection".into()));
        };
        let head = format!(
            "POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let s = conn.get_mut();
        s.write_all(head.as_bytes())
            .and_then(|()| s.write_all(body))
            .and_then(|()| s.flush())
            .map_err(io)?;
        let mut len = None;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if conn.read_line(&mut line).map_err(io)? == 0 {
                self.conn = None;
                return Err(CallError::Protocol("connection closed".into()));
            }
            let l = line.trim_end();
            if first {
                first = false;
                if !l.starts_with("HTTP/1.1 ") {
                    return Err(CallError::Protocol(format!("status line {l:?}")));
                }
                continue;
            }
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse::<usize>().ok();
                }
            }
        }
        let len = len.ok_or_else(|| CallError::Protocol("no Content-Length".into()))?;
        let mut out = vec![0; len];
        conn.read_exact(&mut out).map_err(io)?;
        Ok(out)
    }
}

//! A small HTTP/1.1 server over a Unix socket for JSON-RPC: `POST` with a `Content-Length`
//! body, keep-alive, bounded heads and bodies, a read timeout and a connection cap. The proxy
//! terminates TLS and speaks this to the node; nothing else does.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::rpc::{self, Methods, RpcError};

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body (a day-end batch of 10,000 anchors is ~1.4 MiB of JSON).
    pub body_max: usize,
    /// Largest request head (request line and headers).
    pub head_max: usize,
    /// Concurrent connections.
    pub connections_max: usize,
    /// Idle time before a connection is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_max: 4 << 20,
            head_max: 16 << 10,
            connections_max: 256,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves JSON-RPC on `listener` until `shutdown` is set.
pub fn serve(
    listener: UnixListener,
    methods: Arc<dyn Methods>,
    limits: Limits,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let active = Arc::new(AtomicUsize::new(0));
    while !shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                if active.fetch_add(1, Ordering::SeqCst) >= limits.connections_max {
                    active.fetch_sub(1, Ordering::SeqCst);
                    let _ = write_response(
                        &mut stream,
                        503,
                        "application/json",
                        br#"{"error":"too many connections"}"#,
                        false,
                    );
                    continue;
                }
                let (methods, active) = (Arc::clone(&methods), Arc::clone(&active));
                std::thread::spawn(move || {
                    let _ = connection(stream, methods.as_ref(), limits);
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_response(
    w: &mut impl Write,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        _ => "Service Unavailable",
    };
    let connection = if keep_alive { "keep-alive" } else { "close" };
    // One buffer, one write: a response is never split into many small segments.
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    w.write_all(&out)?;
    w.flush()
}

fn rpc_error_body(code: i64, message: &str) -> Vec<u8> {
    serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})
        .to_string()
        .into_bytes()
}

/// One connection: requests until the client closes, asks to close, errs or idles out.
fn connection(stream: UnixStream, methods: &dyn Methods, limits: Limits) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(limits.idle_timeout))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        // The head, line by line, bounded in total.
        let mut head = Vec::new();
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = (&mut reader)
                .take((limits.head_max - head.len().min(limits.head_max)) as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(()); // closed between requests
            }
            head.extend_from_slice(&line);
            if head.len() > limits.head_max {
                let body = rpc_error_body(RpcError::INVALID_REQUEST, "request head too large");
                return write_response(&mut writer, 431, "application/json", &body, false);
            }
            let text = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
            if text.is_empty() {
                if lines.is_empty() {
                    continue; // tolerate blank lines between requests (RFC 9112 §2.2)
                }
                break;
            }
            lines.push(text);
        }
        let request_line = lines[0].split_whitespace().collect::<Vec<_>>();
        let (method, version) = match request_line.as_slice() {
            [m, _target, v] => (*m, *v),
            _ => {
                let body = rpc_error_body(RpcError::INVALID_REQUEST, "malformed request line");
                return write_response(&mut writer, 400, "application/json", &body, false);
            }
        };
        let mut content_length: Option<usize> = None;
        let mut malformed_length = false;
        let mut close = version == "HTTP/1.0";
        for h in &lines[1..] {
            let Some((name, value)) = h.split_once(':') else { continue };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    // RFC 9110 §8.6: 1*DIGIT. A length too big for usize is still a length
                    // (413 below); anything else, or two different lengths, is a framing error.
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        malformed_length = true;
                        continue;
                    }
                    let len = value.parse().unwrap_or(usize::MAX);
                    malformed_length |= content_length.is_some_and(|l| l != len);
                    content_length = Some(len);
                }
                "connection" if value.eq_ignore_ascii_case("close") => close = true,
                "transfer-encoding" => {
                    let body = rpc_error_body(
                        RpcError::INVALID_REQUEST,
                        "chunked bodies are not accepted; send Content-Length",
                    );
                    return write_response(&mut writer, 501, "application/json", &body, false);
                }
                _ => {}
            }
        }
        if malformed_length {
            // The body's end is unknown, so the connection cannot be reused (RFC 9112 §6.3).
            let body = rpc_error_body(RpcError::INVALID_REQUEST, "malformed Content-Length");
            return write_response(&mut writer, 400, "application/json", &body, false);
        }
        if method != "POST" {
            let body = rpc_error_body(RpcError::INVALID_REQUEST, "JSON-RPC is POST");
            write_response(&mut writer, 405, "application/json", &body, !close)?;
            if close {
                return Ok(());
            }
            continue;
        }
        let Some(len) = content_length else {
            let body = rpc_error_body(RpcError::INVALID_REQUEST, "Content-Length required");
            return write_response(&mut writer, 411, "application/json", &body, false);
        };
        if len > limits.body_max {
            // Refused without reading it: the connection cannot be reused.
            let body = rpc_error_body(
                RpcError::TOO_LARGE,
                &format!("body larger than {} bytes", limits.body_max),
            );
            return write_response(&mut writer, 413, "application/json", &body, false);
        }
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        match rpc::handle(methods, &body) {
            Some(answer) => write_response(
                &mut writer,
                200,
                "application/json",
                answer.to_string().as_bytes(),
                !close,
            )?,
            None => write_response(&mut writer, 204, "application/json", b"", !close)?,
        }
        if close {
            return Ok(());
        }
    }
}

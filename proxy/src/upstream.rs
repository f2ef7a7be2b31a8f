//! The node's JSON-RPC socket as the API's forwards reach it: HTTP/1.1 connections kept alive
//! and reused, at most [`IDLE_MAX`] idle, so a request costs no connect.
//!
//! The exchange runs inside the request's own task: the request goes out in one write, the
//! answer is read and framed here (its head parsed by `httparse`), with no connection task and
//! no channel between them. (hyper's client connection did the same with a task and two
//! channels per request: three wake-ups where this has one. On this machine kind the proxy's
//! CPU per request fell from about 55 to 48 µs, `perf stat` at 16 connections.) The upstream is the box's own node,
//! whose answers always carry a `Content-Length`: an answer framed otherwise — chunked, with
//! no or two lengths, a 1xx, bytes beyond its body — is refused as a bad gateway and its
//! connection dropped.
//!
//! A kept connection the node has closed meanwhile (its idle timeout is 60 s; kept ones older
//! than [`IDLE_FOR`] are not reused) is seen closed before the request is written to it, or
//! the write itself fails: only then, the node having received no whole request, is the
//! request sent again, once, on a new connection. A request that failed after it was written
//! is not sent again: the client gets the error (503) and decides.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use hyper::body::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// The most idle connections kept, by all of a proxy's pools together (each worker's pool
/// keeps its share): well below the node's 2,048 connections, so its own callers (the trust
/// poll, a supervisor's probe) always find a slot.
pub(crate) const IDLE_MAX: usize = 512;

/// A kept connection idle longer than this is closed rather than reused (the node closes its
/// own after 60 s).
pub(crate) const IDLE_FOR: Duration = Duration::from_secs(30);

/// The most bytes of an answer's head.
const HEAD_MAX: usize = 16 << 10;

/// The most header fields in an answer's head.
const FIELDS_MAX: usize = 32;

/// A connection to the node, kept between requests.
struct Kept {
    stream: UnixStream,
    since: Instant,
}

/// The pool.
pub(crate) struct Upstream {
    socket: PathBuf,
    idle: Mutex<Vec<Kept>>,
    /// The most idle connections this pool keeps.
    idle_max: usize,
}

/// An answer's head, as framed here.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Bytes of the head, blank line included.
    len: usize,
    content_length: usize,
    /// The node asked to close the connection after this answer.
    close: bool,
}

/// Why a request to the node failed.
#[derive(Debug)]
enum Failed {
    /// Nothing of a whole request reached the node: it may be sent again.
    Unsent(String),
    /// The request was written: it is not sent again.
    Sent(String),
}

impl Upstream {
    /// A pool of the node at `socket`, one of `pools` sharing [`IDLE_MAX`].
    pub(crate) fn new(socket: PathBuf, pools: usize) -> Self {
        Self { socket, idle: Mutex::new(Vec::new()), idle_max: (IDLE_MAX / pools.max(1)).max(1) }
    }

    async fn connect(&self) -> Result<UnixStream, String> {
        UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("{}: {e}", self.socket.display()))
    }

    /// A kept connection still open, if any.
    fn take_idle(&self) -> Option<UnixStream> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(k) = idle.pop() {
            if k.since.elapsed() < IDLE_FOR && still_open(&k.stream) {
                return Some(k.stream);
            }
        }
        None
    }

    fn give_back(&self, stream: UnixStream) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The oldest, at the bottom, are closed once past their time rather than kept. The
        // stack is in the order connections were given back, so those are a prefix: one clock
        // read, not one per kept connection (at 256 client connections, a retain over the
        // whole stack made clock reads 5 % of the proxy's CPU).
        let now = Instant::now();
        let expired = idle.iter().take_while(|k| now.duration_since(k.since) >= IDLE_FOR).count();
        idle.drain(..expired);
        if idle.len() < self.idle_max {
            idle.push(Kept { stream, since: now });
        }
    }

    /// POSTs `body` with the client identity `client` (the value of [`vpbox_api::HEADER`]):
    /// the status and at most `max` bytes of the answer.
    pub(crate) async fn post(
        &self,
        body: &[u8],
        client: Option<&str>,
        max: usize,
    ) -> Result<(u16, Bytes), String> {
        let request = encode(body, client)?;
        if let Some(kept) = self.take_idle() {
            match self.exchange(kept, &request, max).await {
                Err(Failed::Unsent(_)) => {}
                Ok(answer) => return Ok(answer),
                Err(Failed::Sent(e)) => return Err(e),
            }
        }
        let fresh = self.connect().await?;
        self.exchange(fresh, &request, max).await.map_err(|(Failed::Unsent(e) | Failed::Sent(e))| e)
    }

    /// One request on `stream`: the answer, the connection kept if the node keeps it.
    async fn exchange(
        &self,
        mut stream: UnixStream,
        request: &[u8],
        max: usize,
    ) -> Result<(u16, Bytes), Failed> {
        stream.write_all(request).await.map_err(|e| Failed::Unsent(e.to_string()))?;
        let sent = |e: String| Failed::Sent(e);
        let mut buf = Vec::with_capacity(2048);
        let head = loop {
            if let Some(head) = parse_head(&buf).map_err(sent)? {
                break head;
            }
            if buf.len() >= HEAD_MAX {
                return Err(sent(format!("the node's answer head is over {HEAD_MAX} bytes")));
            }
            read_some(&mut stream, &mut buf, HEAD_MAX).await.map_err(sent)?;
        };
        if head.content_length > max {
            return Err(sent(format!("the node's answer is over {max} bytes")));
        }
        let whole = head.len + head.content_length;
        while buf.len() < whole {
            read_some(&mut stream, &mut buf, whole).await.map_err(sent)?;
        }
        if buf.len() > whole {
            return Err(sent("the node sent bytes past its answer".into()));
        }
        let body = Bytes::from(buf).slice(head.len..);
        if !head.close {
            self.give_back(stream);
        }
        Ok((head.status, body))
    }
}

/// Reads what the node has sent into `buf`, up to `limit` bytes in all; an end of stream is an
/// error (an answer is owed). The buffer grows by what is read, at most 64 KiB at a time: a
/// small answer costs no more than its own size.
async fn read_some(stream: &mut UnixStream, buf: &mut Vec<u8>, limit: usize) -> Result<(), String> {
    let want = limit.saturating_sub(buf.len()).min(64 << 10);
    if buf.capacity() == buf.len() {
        buf.reserve(want.min(buf.len().max(4096)));
    }
    let n = (&mut *stream).take(want as u64).read_buf(buf).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("the node closed the connection without a whole answer".into());
    }
    Ok(())
}

/// True unless the node has closed `stream` (or sent something unasked).
fn still_open(stream: &UnixStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The request's bytes: head and body in one buffer, so one write sends it.
fn encode(body: &[u8], client: Option<&str>) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(128 + client.map_or(0, str::len) + body.len());
    out.extend_from_slice(
        b"POST / HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: ",
    );
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(c) = client {
        // The header is built by `vpbox_api::Client` (percent-encoded); a byte that could end
        // the field or the head is refused all the same.
        if !c.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err("the client header has a byte a header field cannot carry".into());
        }
        out.extend_from_slice(vpbox_api::HEADER.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(c.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(out)
}

/// The answer's head if `buf` holds all of it; an error for an answer this pool does not take.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut fields = [httparse::EMPTY_HEADER; FIELDS_MAX];
    let mut answer = httparse::Response::new(&mut fields);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("the node's answer: {e}")),
    };
    let status = answer.code.unwrap_or(0);
    if !(200..=599).contains(&status) {
        return Err(format!("the node answered with status {status}"));
    }
    let (mut content_length, mut close) = (None, answer.version == Some(0));
    for f in answer.headers.iter() {
        if f.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(f.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok())
                .ok_or("the node's answer has a malformed Content-Length")?;
            if content_length.replace(n).is_some() {
                return Err("the node's answer has two Content-Length fields".into());
            }
        } else if f.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("the node's answer is not framed by a Content-Length".into());
        } else if f.name.eq_ignore_ascii_case("connection") {
            close |= f
                .value
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    let content_length = content_length.ok_or("the node's answer has no Content-Length")?;
    Ok(Some(Head { status, len, content_length, close }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_framed_by_one_content_length() {
        let ok =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(
            parse_head(ok).unwrap(),
            Some(Head { status: 200, len: ok.len() - 2, content_length: 2, close: false })
        );
        assert_eq!(parse_head(&ok[..20]).unwrap(), None, "a partial head waits");
        let close = b"HTTP/1.1 503 x\r\nContent-Length: 0\r\nConnection: keep-alive, Close\r\n\r\n";
        assert!(parse_head(close).unwrap().unwrap().close);
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(parse_head(old).unwrap().unwrap().close, "HTTP/1.0 does not keep alive");
        for bad in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 20 OK\r\ncontent-length: 0\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_request_is_one_head_and_its_body() {
        let r = encode(b"{}", Some("role=posp;bank=a")).unwrap();
        assert_eq!(
            r,
            b"POST / HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\n\
              content-length: 2\r\nx-vpbox-client: role=posp;bank=a\r\n\r\n{}"
                .to_vec()
        );
        assert!(encode(b"{}", Some("a\r\nx-evil: 1")).is_err(), "no field injected");
        assert!(!encode(b"", None).unwrap().windows(14).any(|w| w == b"x-vpbox-client"));
    }

    /// A real node server on a socket: answers, reuse, an idle connection the node closed
    /// (sent again), an answer past the limit, and a node gone.
    #[tokio::test]
    async fn the_pool_reuses_connections_and_resends_only_what_was_not_written() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("rpc.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let accepted = std::sync::Arc::new(AtomicUsize::new(0));
        let count = std::sync::Arc::clone(&accepted);
        // Answers every request, but closes connection 1 after its first answer (as a node
        // does to a connection idle past its deadline) and connection 3 without answering.
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let n = count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let mut got = 0;
                        loop {
                            let k = s.read(&mut buf[got..]).await.unwrap_or(0);
                            if k == 0 {
                                return;
                            }
                            got += k;
                            let text = String::from_utf8_lossy(&buf[..got]).to_string();
                            if let Some(i) = text.find("\r\n\r\n") {
                                if got >= i + 4 + 2 {
                                    break;
                                }
                            }
                        }
                        if n == 3 {
                            return; // takes the request and dies without an answer
                        }
                        let body = if buf[..got].windows(5).any(|w| w == b"\"big\"") {
                            "x".repeat(100)
                        } else {
                            format!("{{\"conn\":{n}}}")
                        };
                        let head =
                            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                        s.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
                        if n == 1 {
                            return;
                        }
                    }
                });
            }
        });
        let pool = Upstream::new(socket.clone(), 1);
        let (status, body) = pool.post(b"{}", Some("a=b"), 1000).await.unwrap();
        assert_eq!((status, &body[..]), (200, &b"{\"conn\":0}"[..]));
        let (_, body) = pool.post(b"{}", None, 1000).await.unwrap();
        assert_eq!(&body[..], b"{\"conn\":0}", "the kept connection is reused");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Connection 1 is closed by the node after its answer; the next request finds it
        // closed before writing and goes out on connection 2.
        drop(pool.idle.lock().unwrap().drain(..));
        let (_, body) = pool.post(b"{}", None, 1000).await.unwrap();
        assert_eq!(&body[..], b"{\"conn\":1}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, body) = pool.post(b"{}", None, 1000).await.unwrap();
        assert_eq!(&body[..], b"{\"conn\":2}", "the closed one was not used");
        let e = pool.post(br#"{"big"}"#, None, 10).await.unwrap_err();
        assert!(e.contains("over 10 bytes"), "{e}");
        // Connection 3 takes the request and closes: the request was written, so it is not
        // sent again (no connection 4).
        drop(pool.idle.lock().unwrap().drain(..));
        let e = pool.post(b"{}", None, 1000).await.unwrap_err();
        assert!(e.contains("without a whole answer"), "{e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 4, "not sent again");
        std::fs::remove_file(&socket).unwrap();
        let e = pool.post(b"{}", None, 1000).await.unwrap_err();
        assert!(e.contains("rpc.sock"), "{e}");
    }
}

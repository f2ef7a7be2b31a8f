//! JSON-RPC over HTTP/1.1 on a real Unix socket: bad input gets a clear answer and the server
//! keeps serving.

mod api;
mod docs;
mod limits;
#[path = "../support/openrpc.rs"]
mod openrpc;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use vpbox_node::http::{Limits, serve};
use vpbox_node::rpc::{Methods, RpcError, bytes32};

struct Anchors;

/// Set when a call with `sleepMs` has begun its wait (the request read, its answer to come).
static SLEEPING: AtomicBool = AtomicBool::new(false);

impl Methods for Anchors {
    fn call(&self, method: &str, params: &Value) -> Result<Value, RpcError> {
        match method {
            "anchor_get" => {
                let key = bytes32(params, 0, "key")?;
                Ok(json!({"ok": false, "message": "the key is not exist", "key": hex::encode(key)}))
            }
            // On a blocking thread (a batch's): says so.
            "anchor_put" | "cert_enroll" => Ok(json!({"later": false})),
            _ => Err(RpcError::new(RpcError::METHOD_NOT_FOUND, format!("no method {method}"))),
        }
    }

    /// `anchor_put` and `cert_enroll` answered later, after a wait no thread holds;
    /// `panic_checking` and `panic_waiting` panic before and after their wait.
    fn call_later(&self, method: &str, params: &Value) -> Option<vpbox_node::rpc::Later> {
        let params = params.clone();
        assert_ne!(method, "panic_checking", "a bug in a call's checks");
        let panics = method == "panic_waiting";
        self.ready_later(method).then(|| {
            // `{"sleepMs": N}` waits N ms instead of 5, and says it began ([`SLEEPING`]).
            let ms = params.get("sleepMs").and_then(Value::as_u64);
            Box::pin(async move {
                if ms.is_some() {
                    SLEEPING.store(true, Ordering::Release);
                }
                let ms = ms.unwrap_or(5);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                assert!(!panics, "a bug after the wait");
                Ok(json!({"later": true, "params": params}))
            }) as vpbox_node::rpc::Later
        })
    }

    fn ready_later(&self, method: &str) -> bool {
        matches!(method, "anchor_put" | "cert_enroll" | "panic_checking" | "panic_waiting")
    }
}

struct Server {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn start() -> Server {
    start_with(Limits { body_max: 1 << 20, ..Limits::default() })
}

fn start_with(limits: Limits) -> Server {
    start_forwarding(limits, vec![])
}

/// A server that believes a client identity from the users `forwarders`.
fn start_forwarding(limits: Limits, forwarders: Vec<u32>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rpc.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || serve(listener, Arc::new(Anchors), limits, forwarders, flag));
    Server { _dir: dir, socket, stop }
}

/// Sends raw bytes, reads the whole answer (the server closes or we stop after one response).
fn exchange(socket: &std::path::Path, raw: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    let _ = s.write_all(raw);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

fn post(body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn json_body(text: &str) -> Value {
    serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap()
}

/// A request carrying the client identity the proxy forwards.
fn post_as(client: &str, body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: node\r\nx-vpbox-client: {client}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn a_client_identity_is_believed_only_from_the_proxys_user_and_bounds_what_it_may_call() {
    let me = rustix::process::getuid().as_raw();
    let key = "ab".repeat(32);
    let posp = format!("role=posp; bank=bank-a; name=posp-1; key={key}");
    let admin = format!("role=admin; bank=bank-a; name=ops; key={key}");
    let read = format!(r#"{{"jsonrpc":"2.0","method":"anchor_get","params":["0x{key}"],"id":1}}"#);
    let enroll = r#"{"jsonrpc":"2.0","method":"cert_enroll","params":["00"],"id":2}"#;

    // The proxy runs as another user: the header from this one is refused, nothing runs.
    let srv = start_forwarding(Limits::default(), vec![me.wrapping_add(1)]);
    let (status, text) = exchange(&srv.socket, &post_as(&admin, &read));
    assert_eq!(status, 403, "{text}");
    let e = &json_body(&text)["error"];
    assert_eq!(e["code"], RpcError::NOT_ALLOWED);
    assert!(e["message"].as_str().unwrap().contains(&format!("uid {me}")), "{e}");
    // Without the header this user is the box's operator: every method.
    let (status, text) = exchange(&srv.socket, &post(&read));
    assert_eq!(
        (status, json_body(&text)["result"]["message"].clone()),
        (200, json!("the key is not exist"))
    );

    // From the proxy's user: a POSP reads, and an admin's method is -32007 at the node too
    // (a batch answers each request as the role may be answered).
    let srv = start_forwarding(Limits::default(), vec![me]);
    let (status, text) = exchange(&srv.socket, &post_as(&posp, &read));
    assert_eq!(
        (status, json_body(&text)["result"]["message"].clone()),
        (200, json!("the key is not exist"))
    );
    let (_, text) = exchange(&srv.socket, &post_as(&posp, enroll));
    let e = &json_body(&text)["error"];
    assert_eq!(e["code"], RpcError::NOT_ALLOWED, "{text}");
    assert!(e["message"].as_str().unwrap().contains("not allowed for role posp"), "{e}");
    let (_, text) = exchange(&srv.socket, &post_as(&posp, &format!("[{read},{enroll}]")));
    let answers = json_body(&text);
    assert_eq!(answers[0]["result"]["message"], "the key is not exist", "{answers}");
    assert_eq!(answers[1]["error"]["code"], RpcError::NOT_ALLOWED, "{answers}");

    // (Anchors answers `cert_enroll` later: the POSP's above was refused on that path, the
    // batch's on a blocking thread.) A POSP's `anchor_put` and an admin's `cert_enroll` are
    // answered later, unless in a batch: on a blocking thread.
    let put = r#"{"jsonrpc":"2.0","method":"anchor_put","params":["aa"],"id":3}"#;
    let (_, text) = exchange(&srv.socket, &post_as(&posp, put));
    assert_eq!(json_body(&text)["result"], json!({"later": true, "params": ["aa"]}), "{text}");
    let (_, text) = exchange(&srv.socket, &post_as(&admin, enroll));
    assert_eq!(json_body(&text)["result"]["later"], true, "{text}");
    let (_, text) = exchange(&srv.socket, &post_as(&posp, &format!("[{put}]")));
    assert_eq!(json_body(&text)[0]["result"], json!({"later": false}), "{text}");

    // A header not in its exact form, or given twice, is a bad request.
    for bad in [
        "role=root; bank=b; name=n; key=00".to_string(),
        posp.replace("; ", ";"),
        format!("{posp}\r\nx-vpbox-client: {admin}"),
    ] {
        let (status, text) = exchange(&srv.socket, &post_as(&bad, &read));
        assert_eq!(status, 400, "{bad}: {text}");
        assert_eq!(json_body(&text)["error"]["code"], RpcError::INVALID_REQUEST, "{bad}");
    }
}

#[test]
fn good_and_bad_requests_each_get_their_answer() {
    let srv = start();
    let key = "ab".repeat(32);
    let (status, text) = exchange(
        &srv.socket,
        &post(&format!(r#"{{"jsonrpc":"2.0","method":"anchor_get","params":["0x{key}"],"id":1}}"#)),
    );
    assert_eq!(status, 200);
    assert_eq!(json_body(&text)["result"]["message"], "the key is not exist");

    let cases: Vec<(Vec<u8>, u16, Option<i64>)> = vec![
        (post("{\"jsonrpc\":"), 200, Some(RpcError::PARSE)),
        (
            post(r#"{"jsonrpc":"2.0","method":"nope","id":1}"#),
            200,
            Some(RpcError::METHOD_NOT_FOUND),
        ),
        (
            post(r#"{"jsonrpc":"2.0","method":"anchor_get","params":["0x1234"],"id":1}"#),
            200,
            Some(RpcError::INVALID_PARAMS),
        ),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 10485760\r\n\r\n".to_vec(),
            413,
            Some(RpcError::TOO_LARGE),
        ),
        // Framing errors are hyper's (RFC 9112 §6.3): a length that is not 1*DIGIT or does not
        // fit in 64 bits, or two that disagree, is a bad request, answered without a body
        // and the connection closed, so nothing can be smuggled after it.
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(), 400, None),
        (b"POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n".to_vec(), 400, None),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(), 400, None),
        (b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n".to_vec(), 400, None),
        (
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}".to_vec(),
            400,
            None,
        ),
        // Both: the body's end would be ambiguous to a proxy; refused (and closed) as chunked.
        (
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"
                .to_vec(),
            501,
            Some(RpcError::INVALID_REQUEST),
        ),
        (
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
            405,
            Some(RpcError::INVALID_REQUEST),
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            501,
            Some(RpcError::INVALID_REQUEST),
        ),
        (b"POST / HTTP/1.1\r\n\r\n".to_vec(), 411, Some(RpcError::INVALID_REQUEST)),
        (
            format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431, // hyper's, without a body
            None,
        ),
    ];
    for (raw, want_status, want_code) in cases {
        let (status, text) = exchange(&srv.socket, &raw);
        assert_eq!(status, want_status, "{text}");
        if let Some(code) = want_code {
            assert_eq!(json_body(&text)["error"]["code"], code, "{text}");
        }
    }
    // Still serving.
    let (status, _) = exchange(
        &srv.socket,
        &post(r#"{"jsonrpc":"2.0","method":"anchor_get","params":{"key":"00"},"id":2}"#),
    );
    assert_eq!(status, 200);
}

/// Reads exactly one response: the head, then Content-Length bytes.
fn read_response(s: &mut UnixStream) -> String {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    data.extend(body);
    String::from_utf8_lossy(&data).into_owned()
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let srv = start();
    let mut s = UnixStream::connect(&srv.socket).unwrap();
    for id in 0..3 {
        s.write_all(&post(&format!(r#"{{"jsonrpc":"2.0","method":"nope","id":{id}}}"#))).unwrap();
        let text = read_response(&mut s);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert_eq!(json_body(&text)["id"], id);
    }
}

/// A stop lets the call in flight finish and write its answer, closes the connections (an
/// idle keep-alive one at once), takes no new one, and returns within its drain's bound.
#[test]
fn a_stop_answers_the_call_in_flight_closes_the_connections_and_returns() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("rpc.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, (done, returned)) = (Arc::clone(&stop), std::sync::mpsc::channel());
    std::thread::spawn(move || {
        let _ = done.send(serve(listener, Arc::new(Anchors), Limits::default(), vec![], flag));
    });
    let timeout = Some(std::time::Duration::from_secs(10));
    let key = "ab".repeat(32);
    let read = format!(r#"{{"jsonrpc":"2.0","method":"anchor_get","params":["0x{key}"],"id":1}}"#);
    let mut idle = UnixStream::connect(&socket).unwrap();
    idle.set_read_timeout(timeout).unwrap();
    idle.write_all(&post(&read)).unwrap();
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 200"));
    // Answered 800 ms after it arrives; the stop comes in between.
    let mut busy = UnixStream::connect(&socket).unwrap();
    busy.set_read_timeout(timeout).unwrap();
    let slow = r#"{"jsonrpc":"2.0","method":"anchor_put","params":{"sleepMs":800},"id":2}"#;
    busy.write_all(&post(slow)).unwrap();
    let begun = std::time::Instant::now();
    while !SLEEPING.load(Ordering::Acquire) {
        assert!(returned.try_recv().is_err(), "the server ended before the call began");
        assert!(begun.elapsed() < std::time::Duration::from_secs(10), "the call never began");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let asked = std::time::Instant::now();
    stop.store(true, Ordering::Relaxed);
    // The idle connection ends (EOF, not a timeout); the busy one gets its answer, then
    // ends; the server returns.
    assert_eq!(idle.read(&mut [0u8; 64]).unwrap(), 0, "the idle connection closed");
    let answer = read_response(&mut busy);
    assert_eq!(json_body(&answer)["result"]["later"], true, "{answer}");
    assert_eq!(busy.read(&mut [0u8; 64]).unwrap(), 0, "closed after its answer");
    returned.recv_timeout(std::time::Duration::from_secs(10)).unwrap().unwrap();
    assert!(asked.elapsed() < vpbox_node::http::DRAIN_MAX * 2, "{:?}", asked.elapsed());
    // Nothing listens any more.
    let again = UnixStream::connect(&socket).and_then(|mut s| {
        s.set_read_timeout(timeout)?;
        s.write_all(&post(&read))?;
        s.read(&mut [0u8; 64])
    });
    assert!(matches!(again, Err(_) | Ok(0)), "{again:?}");
}

/// A call answered on the event loop that panics, in its checks or after its wait, is answered
/// as one on a blocking thread would be: 500 and -32603 (and the connection closed); the
/// server goes on.
#[test]
fn a_panic_on_the_event_loop_is_a_500_and_the_server_goes_on() {
    let srv = start();
    for method in ["panic_checking", "panic_waiting", "anchor_put"] {
        let body = format!(r#"{{"jsonrpc":"2.0","method":"{method}","id":1}}"#);
        let (status, text) = exchange(&srv.socket, &post(&body));
        if method == "anchor_put" {
            assert_eq!(status, 200, "{text}");
            assert_eq!(json_body(&text)["result"]["later"], true, "{text}");
        } else {
            assert_eq!(status, 500, "{method}: {text}");
            assert_eq!(json_body(&text)["error"]["code"], RpcError::INTERNAL, "{text}");
        }
    }
}

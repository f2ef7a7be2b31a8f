//! Slow, hostile and too many clients: each costs bounded time and memory, and an honest client
//! is still answered.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vpbox_node::http::Limits;

use crate::{exchange, json_body, post, start_with};

/// The resident set of this process (nextest runs each test in a process of its own).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn honest(socket: &std::path::Path) -> (u16, Duration) {
    let t = Instant::now();
    let key = "ab".repeat(32);
    let (status, text) = exchange(
        socket,
        &post(&format!(r#"{{"jsonrpc":"2.0","method":"anchor_get","params":["{key}"],"id":1}}"#)),
    );
    assert_eq!(json_body(&text)["result"]["message"], "the key is not exist", "{text}");
    (status, t.elapsed())
}

#[test]
fn a_thousand_slow_clients_hold_no_honest_client_out_and_are_cut_off() {
    let limits = Limits { head_timeout: Duration::from_secs(2), ..Limits::default() };
    let srv = start_with(limits);
    // Each sends the start of a head and then nothing more (as a byte a second would, never
    // finishing): the old server gave each a thread and stopped accepting at 256.
    let mut slow: Vec<UnixStream> = (0..1000)
        .map(|_| {
            let mut s = UnixStream::connect(&srv.socket).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nHost: node\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    for s in slow.iter_mut().take(10) {
        s.write_all(b"a").unwrap();
    }
    let (status, took) = honest(&srv.socket);
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(5), "an honest client waited {took:?}");
    // Past the head deadline every slow connection is closed by the server.
    std::thread::sleep(Duration::from_secs(3));
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        // Closed: hyper may say 408 first, or close without a word.
        assert!(rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"), "{rest:?}");
    }
}

#[test]
fn past_the_connection_cap_a_client_gets_503_with_retry_after_and_a_json_rpc_error() {
    let srv = start_with(Limits { connections_max: 8, ..Limits::default() });
    let _held: Vec<UnixStream> =
        (0..8).map(|_| UnixStream::connect(&srv.socket).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, text) = exchange(&srv.socket, &post(r#"{"jsonrpc":"2.0","method":"x","id":1}"#));
    assert_eq!(status, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
    assert_eq!(json_body(&text)["error"]["code"], -32004, "{text}");
}

/// `[{"a":0},…]` of `n` bytes: about a hundred times its size as a value tree.
fn hostile_body(n: usize) -> Vec<u8> {
    let mut b = br#"{"jsonrpc":"2.0","method":"anchor_get","id":1,"params":["#.to_vec();
    while b.len() + 17 <= n {
        b.extend_from_slice(br#"{"a":0},"#);
    }
    b.extend_from_slice(br#"{"a":0}]}"#);
    b
}

#[test]
fn a_hostile_request_costs_a_few_times_its_size_and_is_refused() {
    let srv = start_with(Limits::default());
    let body = hostile_body(4 << 20);
    let raw =
        [format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes(), &body]
            .concat();
    let before = rss_bytes();
    let (status, text) = exchange(&srv.socket, &raw);
    let grew = rss_bytes().saturating_sub(before);
    assert_eq!(status, 200);
    assert_eq!(json_body(&text)["error"]["code"], -32600, "{text}");
    assert!(json_body(&text)["error"]["message"].as_str().unwrap().contains("too complex"));
    // The request's bytes (4 MiB) and its copy in the client; the old server built a
    // 700 MB tree for it.
    assert!(grew < 40 << 20, "RSS grew by {} MiB", grew >> 20);
}

#[test]
fn many_hostile_requests_at_once_stay_within_the_memory_bound_and_honest_clients_are_served() {
    let memory_max = 64 << 20;
    let srv = start_with(Limits { memory_max, ..Limits::default() });
    let body = std::sync::Arc::new(hostile_body(4 << 20));
    let before = rss_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let senders: Vec<_> = (0..64)
        .map(|_| {
            let (socket, body, peak) =
                (srv.socket.clone(), std::sync::Arc::clone(&body), std::sync::Arc::clone(&peak));
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(&socket).unwrap();
                let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
                s.write_all(head.as_bytes()).unwrap();
                let _ = s.write_all(&body);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out);
                peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
                String::from_utf8_lossy(&out).into_owned()
            })
        })
        .collect();
    let (status, _) = honest(&srv.socket);
    assert_eq!(status, 200, "an honest client is served meanwhile");
    for s in senders {
        let text = s.join().unwrap();
        // Refused as too complex, or told to come back when memory is scarce.
        assert!(text.contains("-32600") || text.contains("-32004"), "{text}");
    }
    let grew = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(before);
    // The bound: the reservations (64 MiB) plus the client threads' stacks and buffers.
    assert!(grew < (memory_max + (64 << 20)) as u64, "RSS grew by {} MiB", grew >> 20);
}

#[test]
fn heads_that_announce_large_bodies_and_stall_hold_no_memory_from_honest_clients() {
    // 64 MiB in all: 11 stalled 4 MiB announcements would have taken all of it had memory been
    // reserved for the length announced; 40 small ones all of the small requests' share.
    let srv = start_with(Limits { memory_max: 64 << 20, ..Limits::default() });
    let _stalled: Vec<UnixStream> = (0..40)
        .map(|i| {
            let mut s = UnixStream::connect(&srv.socket).unwrap();
            let len = if i % 2 == 0 { 4 << 20 } else { 196_608 };
            s.write_all(format!("POST / HTTP/1.1\r\nContent-Length: {len}\r\n\r\n{{").as_bytes())
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = honest(&srv.socket);
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(5), "an honest client waited {took:?}");
}

#[test]
fn long_ids_and_method_names_are_refused_not_echoed() {
    let srv = start_with(Limits::default());
    let id = "x".repeat(100_000);
    let (status, text) =
        exchange(&srv.socket, &post(&format!(r#"{{"jsonrpc":"2.0","method":"x","id":"{id}"}}"#)));
    assert_eq!(status, 200);
    assert_eq!(json_body(&text)["error"]["code"], -32600, "{}", &text[..200.min(text.len())]);
    assert!(text.len() < 1000, "the id was echoed");
    let method = "\u{e000}".repeat(100_000);
    let (_, text) =
        exchange(&srv.socket, &post(&format!(r#"{{"jsonrpc":"2.0","method":"{method}","id":1}}"#)));
    assert_eq!(json_body(&text)["error"]["code"], -32600);
    assert!(text.len() < 1000, "the method name was echoed");
}

//! Bad input at a box's API listener, as strangers and a compromised POSP would send it, each
//! with the proxy's memory and an honest POSP's latency measured while it goes on: 1,000
//! slowloris handshakes, 10,000 idle connections, TLS garbage, a ClientHello flood (each costs
//! the box's HSM a signature), malformed HTTP and a duplicate `Content-Length`. The proxy keeps
//! serving the honest client through all of them. The figures are printed (a functional test,
//! not a benchmark: the bounds asserted are generous).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::api::{api_address, posp, post};
use crate::p2p::proxy_rss_kib as rss_kib;

/// A TCP connection to `to` from the loopback address `from` (Linux routes all of 127/8 to
/// the loopback), so that one test can be many sources; within a second or not at all.
fn connect_from(from: Ipv4Addr, to: &str) -> Option<TcpStream> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket, sockopt};
    let to: SocketAddrV4 = to.parse().ok()?;
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).ok()?;
    bind(&fd, &SocketAddrV4::new(from, 0)).ok()?;
    // SO_SNDTIMEO bounds a blocking connect on Linux.
    sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, Some(Duration::from_secs(1))).ok()?;
    connect(&fd, &to).ok()?;
    Some(TcpStream::from(fd))
}

/// Source `n` of many: 127.10.x.y.
fn source(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 10, (n / 250) as u8, (n % 250 + 1) as u8)
}

/// An honest POSP's round trips (a fresh mutual-TLS connection and one read each) to box
/// `i`: the slowest, in ms. Each must be answered.
fn honest(dir: &Path, i: u32, what: &str) -> u128 {
    let client = posp(dir, "bank-a");
    let read = br#"{"jsonrpc":"2.0","id":1,"method":"block_getChainHeight","params":[]}"#;
    let mut slowest = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let (status, answer) = post(dir, i, "bank-a", &client, read)
            .unwrap_or_else(|e| panic!("the honest POSP was not served during {what}: {e}"));
        assert_eq!(status, 200, "during {what}: {answer}");
        slowest = slowest.max(start.elapsed().as_millis());
    }
    slowest
}

/// A POSP's raw bytes after its handshake: the status line's code of the answer, 0 if none.
fn raw_as_posp(dir: &Path, i: u32, raw: &[u8]) -> u16 {
    let tcp = TcpStream::connect(api_address(dir, i)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let name = ServerName::try_from(format!("node{i}.bank-a")).unwrap();
    let conn = rustls::ClientConnection::new(posp(dir, "bank-a"), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let _ = tls.write_all(raw);
    let _ = tls.flush();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Runs every attack on box `i`'s API, prints a table and checks the proxy kept serving.
pub(crate) fn api_abuse(dir: &Path, i: u32) {
    let address = api_address(dir, i);
    let base_rss = rss_kib(dir, i);
    let base_ms = honest(dir, i, "nothing");
    let mut rows = vec![("no attack".to_string(), 0usize, base_rss, base_ms)];
    let measure = |rows: &mut Vec<(String, usize, u64, u128)>, what: &str, held: usize| {
        let ms = honest(dir, i, what);
        let rss = rss_kib(dir, i);
        rows.push((what.to_string(), held, rss, ms));
        rss
    };

    // 1,000 slowloris handshakes from 125 sources: a TLS record header, then nothing.
    let mut held: Vec<TcpStream> = (0..1000)
        .filter_map(|n| {
            let mut c = connect_from(source(n / 8), &address)?;
            c.write_all(&[0x16, 0x03, 0x01]).ok()?;
            Some(c)
        })
        .collect();
    measure(&mut rows, "1,000 slowloris handshakes", held.len());
    held.clear();

    // 10,000 idle connections from 1,250 sources.
    held.extend((0..10_000).filter_map(|n| connect_from(source(n / 8), &address)));
    let rss = measure(&mut rows, "10,000 idle connections", held.len());
    assert!(rss < base_rss + 128 * 1024, "idle connections grew the proxy to {rss} KiB");
    held.clear();
    // The proxy made room for newer handshakes by closing the oldest silent ones.
    let (_, page) = crate::metrics::get(dir, i, "/metrics");
    let evicted = r#"vpbox_proxy_refusals_total{listener="api",reason="evicted"}"#;
    assert!(crate::metrics::sample(&page, evicted).is_some_and(|n| n > 0.0), "{page}");

    // TLS garbage: 500 connections of random-looking bytes.
    for n in 0..500 {
        if let Some(mut c) = connect_from(source(n / 8), &address) {
            let junk: Vec<u8> =
                (0..4096u32).map(|b| (b.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
            let _ = c.write_all(&junk);
            held.push(c);
        }
    }
    measure(&mut rows, "500 connections of TLS garbage", held.len());
    held.clear();

    // A ClientHello flood: 400 full handshakes without a client certificate, 8 at a time;
    // the proxy's CertificateVerify is signed in the HSM for each before it can refuse them.
    let anonymous = crate::api::anonymous(dir);
    let flood = std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let (anonymous, address) = (Arc::clone(&anonymous), address.clone());
                s.spawn(move || {
                    let mut refused = 0;
                    for n in 0..50 {
                        let Some(tcp) = connect_from(source(2000 + w * 50 + n), &address) else {
                            continue;
                        };
                        let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                        let name = ServerName::try_from(format!("node{i}.bank-a")).unwrap();
                        let conn = rustls::ClientConnection::new(Arc::clone(&anonymous), name);
                        let mut tls = rustls::StreamOwned::new(conn.unwrap(), tcp);
                        let _ = tls.write_all(b"POST / HTTP/1.1\r\n\r\n");
                        let mut sink = Vec::new();
                        if tls.read_to_end(&mut sink).is_err() || sink.is_empty() {
                            refused += 1;
                        }
                    }
                    refused
                })
            })
            .collect();
        let ms = honest(dir, i, "a ClientHello flood");
        let refused: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
        (ms, refused)
    });
    assert_eq!(flood.1, 400, "every anonymous handshake is refused");
    rows.push(("400 ClientHellos (no certificate)".into(), 400, rss_kib(dir, i), flood.0));

    // A compromised POSP: malformed HTTP, two Content-Lengths that disagree, a head over
    // 16 KiB. Each is refused by the HTTP layer and its connection closed. (A bare LF line end
    // is read as a line end, as RFC 9112 §2.2 allows: the proxy forwards a request it framed
    // itself, never the client's bytes, so no reading of them can differ downstream.)
    let head =
        |extra: &str| format!("POST / HTTP/1.1\r\nHost: n\r\n{extra}\r\n\r\n{{}}").into_bytes();
    for (what, raw, want) in [
        ("malformed request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        ("duplicate Content-Length", head("Content-Length: 2\r\nContent-Length: 3"), 400),
        (
            "a 20 KiB header",
            head(&format!("Content-Length: 2\r\nX-Big: {}", "a".repeat(20 << 10))),
            431,
        ),
    ] {
        let status = raw_as_posp(dir, i, &raw);
        assert_eq!(status, want, "{what}");
    }
    measure(&mut rows, "after malformed HTTP from a POSP", 0);

    println!(
        "\nbad input at node{i}'s API: the proxy's memory and an honest POSP's slowest of 5 calls"
    );
    println!("| attack | connections held | proxy RSS (MiB) | honest p100 (ms) |");
    println!("|---|---|---|---|");
    for (what, held, rss, ms) in &rows {
        println!("| {what} | {held} | {:.1} | {ms} |", *rss as f64 / 1024.0);
    }
}

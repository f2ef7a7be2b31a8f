//! The services as systemd runs them (`Type=notify`, `WatchdogSec=`): each reports `READY=1`
//! once it serves and then feeds its watchdog, over a datagram socket as systemd's own
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`). One service at a time is restarted with the socket, so
//! every message heard is that service's.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::{ClusterDir, Scratch, s, vpbox_env};

/// The messages heard on `socket` for `time`.
fn hear(socket: &UnixDatagram, time: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut heard = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < time {
        if let Ok(n) = socket.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    heard
}

fn stop(dir: &std::path::Path, pid_file: &str) {
    let pid: i32 =
        std::fs::read_to_string(dir.join("node1").join(pid_file)).unwrap().trim().parse().unwrap();
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    while std::path::Path::new(&format!("/proc/{}", pid.as_raw_nonzero())).exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_service_reports_ready_and_then_feeds_its_watchdog() {
    let c = ClusterDir::new();
    let scratch = Scratch::new();
    // A socket per start: a datagram queue nobody reads fills and blocks its senders (systemd
    // always reads), and a dropped one refuses them.
    let listen = |name: &str| {
        let path = scratch.path(name);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        (path, socket)
    };
    let module = crate::token::module();
    let up = |path: &std::path::Path, watchdog: bool| {
        let mut env = vec![("NOTIFY_SOCKET", s(path))];
        if watchdog {
            env.push(("WATCHDOG_USEC", "400000"));
        }
        let r = vpbox_env(
            &["cluster", "up", "--nodes", "1", "--dir", s(&c.dir), "--module", &module],
            &env,
        );
        assert_eq!(r.code, 0, "{}{}", r.text(), r.stderr);
    };
    // A first start: each of the three says it is ready, with what it serves; no watchdog
    // was asked for, so none is fed.
    let (path, socket) = listen("first");
    up(&path, false);
    let heard = hear(&socket, Duration::from_millis(500)).join("\n");
    drop(socket);
    for status in ["STATUS=serving 1 keys", "STATUS=JSON-RPC on ", "STATUS=P2P on 127.0.0.1:"] {
        assert!(heard.contains(status), "{status} not in {heard}");
    }
    assert_eq!(heard.matches("READY=1").count(), 3, "{heard}");
    assert!(!heard.contains("WATCHDOG=1"), "{heard}");
    // The node's sockets are open to its group (the proxy's user is in it under systemd), not
    // to its user alone, whatever the umask; the signer's likewise.
    use std::os::unix::fs::PermissionsExt;
    for socket in ["rpc.sock", "peer.sock", "signer.sock"] {
        let mode =
            std::fs::metadata(c.dir.join("node1").join(socket)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o660, "{socket}");
    }
    // Each service restarted alone under a 400 ms watchdog: ready, then fed every ~100 ms.
    for (pid_file, status) in
        [("proxy.pid", "P2P on"), ("node.pid", "JSON-RPC on"), ("signer.pid", "serving")]
    {
        stop(&c.dir, pid_file);
        let (path, socket) = listen(pid_file);
        up(&path, true);
        let heard = hear(&socket, Duration::from_millis(1500));
        drop(socket);
        let text = heard.join("\n");
        assert!(text.contains("READY=1") && text.contains(status), "{pid_file}: {text}");
        let fed = heard.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
        assert!(fed >= 5, "{pid_file}: fed {fed} times in 1.5 s: {text}");
    }
}

//! One client and one server over localhost TCP, a thread each, `rustls::StreamOwned`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{
    CertificateError, CipherSuite, ClientConfig, ClientConnection, HandshakeKind, NamedGroup,
    ServerConfig, ServerConnection, StreamOwned,
};
use vpbox_ca::policy::DenyReason;
use vpbox_tls::Denied;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes sent each way: several full records.
pub(crate) const DATA_LEN: usize = 100_000;

/// What one side saw of a successful connection.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) suite: Option<CipherSuite>,
    pub(crate) group: Option<NamedGroup>,
    pub(crate) kind: Option<HandshakeKind>,
    pub(crate) peer_cert: Option<Vec<u8>>,
    /// Every certificate the peer presented, as the host would re-admit them.
    pub(crate) peer_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
}

/// Why one side failed.
#[derive(Debug)]
pub(crate) enum Failure {
    Tls(rustls::Error),
    // Read only through `Debug`, in assertion messages.
    #[allow(dead_code)]
    Io(io::Error),
}

impl Failure {
    /// The admission policy's reason, if that is why the handshake failed.
    pub(crate) fn denied(&self) -> Option<DenyReason> {
        match self {
            Self::Tls(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
                other.0.downcast_ref::<Denied>().map(|d| d.reason.clone())
            }
            _ => None,
        }
    }

    pub(crate) fn tls(&self) -> Option<&rustls::Error> {
        match self {
            Self::Tls(e) => Some(e),
            Self::Io(_) => None,
        }
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => Self::Tls(tls.clone()),
            None => Self::Io(e),
        }
    }
}

impl From<rustls::Error> for Failure {
    fn from(e: rustls::Error) -> Self {
        Self::Tls(e)
    }
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..DATA_LEN).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn seen(conn: &rustls::CommonState) -> Seen {
    Seen {
        suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
        kind: conn.handshake_kind(),
        peer_cert: conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()),
        peer_chain: conn
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect(),
    }
}

/// After a failure, let the peer read our alert before the socket closes (closing with unread
/// input would reset the connection and could discard the alert).
fn linger(sock: &TcpStream) {
    let _ = sock.shutdown(Shutdown::Write);
    let _ = sock.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    let mut s = sock;
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

fn serve(sock: TcpStream, config: Arc<ServerConfig>) -> Result<Seen, Failure> {
    sock.set_read_timeout(Some(TIMEOUT))?;
    sock.set_nodelay(true)?;
    let mut tls = StreamOwned::new(ServerConnection::new(config)?, sock);
    let result = (|| {
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        let mut got = vec![0u8; DATA_LEN];
        tls.read_exact(&mut got)?;
        assert!(got == pattern(1), "server received corrupted data");
        tls.write_all(&pattern(2))?;
        tls.flush()?;
        tls.conn.send_close_notify();
        tls.conn.complete_io(&mut tls.sock)?;
        Ok(seen(&tls.conn))
    })();
    if result.is_err() {
        linger(&tls.sock);
    }
    result
}

fn dial(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> Result<Seen, Failure> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(TIMEOUT))?;
    sock.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_string()).expect("test server name");
    let mut tls = StreamOwned::new(ClientConnection::new(config, name)?, sock);
    let result = (|| {
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        tls.write_all(&pattern(1))?;
        tls.flush()?;
        let mut got = vec![0u8; DATA_LEN];
        tls.read_exact(&mut got)?;
        assert!(got == pattern(2), "client received corrupted data");
        Ok(seen(&tls.conn))
    })();
    if result.is_err() {
        linger(&tls.sock);
    }
    result
}

/// A server on a fresh localhost port, answering one connection on its own thread.
fn spawn_server(
    server: &Arc<ServerConfig>,
) -> (std::net::SocketAddr, thread::JoinHandle<Result<Seen, Failure>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server.clone();
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept().unwrap();
        serve(sock, server)
    });
    (addr, handle)
}

/// Connects `client` to `server` under `name`; returns what each side saw.
pub(crate) fn connect(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
    name: &str,
) -> (Result<Seen, Failure>, Result<Seen, Failure>) {
    let (addr, server_side) = spawn_server(server);
    let client_side = dial(addr, client.clone(), name);
    (server_side.join().unwrap(), client_side)
}

/// Runs `talk` against a server that expects a TLS client, returning the server's result: for
/// peers that are not TLS clients at all.
pub(crate) fn raw_client(
    server: &Arc<ServerConfig>,
    talk: impl FnOnce(&mut TcpStream),
) -> Result<Seen, Failure> {
    let (addr, server_side) = spawn_server(server);
    let mut sock = TcpStream::connect(addr).unwrap();
    talk(&mut sock);
    let _ = sock.shutdown(Shutdown::Write);
    let mut sink = Vec::new();
    let _ = sock.set_read_timeout(Some(TIMEOUT));
    let _ = sock.read_to_end(&mut sink);
    server_side.join().unwrap()
}

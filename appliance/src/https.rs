//! The CLI's HTTPS to a box's proxy: mutual TLS 1.3 (RFC 8998) with a client certificate,
//! the box's certificate admitted under the consortium's roots and named as dialled.

use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use vpbox_ca::CertProfile;
use vpbox_ca::policy::TrustStore;
use vpbox_node::client::{Dial, RpcClient, Stream};
use vpbox_sm::SoftwareSigner;
use vpbox_sm::sm2::SecretKey;
use vpbox_tls::{Admission, Credentials, Profile, client_config};

/// Dials one box's API.
struct TlsDial {
    address: String,
    name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl Dial for TlsDial {
    fn dial(&self, timeout: Duration) -> std::io::Result<Box<dyn Stream>> {
        let tcp = TcpStream::connect(&self.address)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        tcp.set_nodelay(true)?;
        let conn = rustls::ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map_err(std::io::Error::other)?;
        Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
    }
}

/// The certificates of a PEM file (a chain, end entity first).
fn chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let der = vpbox_ca::pem::chain_der(&pem).with_context(|| path.display().to_string())?;
    Ok(vpbox_ca::cert::split_der(&der)?.into_iter().map(|d| d.to_vec().into()).collect())
}

/// A trust store of the root certificates in `pems` (each a PEM certificate).
pub(crate) fn roots<'a>(pems: impl IntoIterator<Item = &'a str>) -> Result<TrustStore> {
    let mut ders = Vec::new();
    for pem in pems {
        let (_, der) = pem_rfc7468::decode_vec(pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("a root is not PEM: {e}"))?;
        ders.push(der);
    }
    roots_der(ders.iter().map(Vec::as_slice))
}

/// A trust store of the root certificates `ders` (DER).
pub(crate) fn roots_der<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> Result<TrustStore> {
    let mut store = TrustStore::new();
    for der in ders {
        store.add_root(der)?;
    }
    Ok(store)
}

/// A client's TLS configuration in `profile`: the box's certificate admitted under `trust`,
/// `cert` presented with the SM2 key in `key` (PKCS#8 PEM).
pub(crate) fn tls_config(
    profile: Profile,
    trust: TrustStore,
    cert: &Path,
    key: &Path,
) -> Result<Arc<ClientConfig>> {
    let pem = std::fs::read_to_string(key).with_context(|| key.display().to_string())?;
    let signer = SoftwareSigner::new(SecretKey::from_pem(&pem).context("the client key")?);
    let ours = Credentials::new(chain(cert)?, Arc::new(signer))?;
    let servers = Admission::new(Arc::new(RwLock::new(trust)), CertProfile::VpNode);
    Ok(Arc::new(client_config(profile, &ours, servers)?))
}

/// A client of the API at `address` (HOST:PORT), expecting the box's certificate to name
/// `name` and chain to `trust`, presenting `cert` with the SM2 key in `key` (PKCS#8 PEM).
pub(crate) fn client(
    address: &str,
    name: &str,
    trust: TrustStore,
    cert: &Path,
    key: &Path,
) -> Result<RpcClient> {
    let config = tls_config(Profile::Sm, trust, cert, key)?;
    let name = ServerName::try_from(name.to_string())
        .map_err(|e| anyhow::anyhow!("{name}: not a server name: {e}"))?;
    let url = format!("https://{address}");
    Ok(RpcClient::with_dial(
        Path::new(&url),
        Box::new(TlsDial { address: address.into(), name, config }),
    ))
}

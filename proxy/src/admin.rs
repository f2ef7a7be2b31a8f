//! The admin listener (`[proxy] admin`): plain HTTP/1.1 on the loopback or the management
//! network (the box's firewall admits only that network to it; `vpbox config check` refuses
//! a wildcard address), for the box's monitoring:
//!
//! - `GET /metrics`: Prometheus text format 0.0.4 ([`crate::metrics`]): the proxy's counters
//!   and the node's figures, asked of the node (`node_getNodes`) at each scrape;
//! - `GET /health`: 200 and `{"status": "ok", …}` when the box can serve, 503 and
//!   `{"status": "unhealthy", "problems": […], …}` when not ([`crate::metrics::health`]);
//! - `GET /status` (and `/`): the status page a person looks at ([`crate::status_page`]): the
//!   box's health, the alarms, the consortium's members and the node's figures.
//!
//! It reads and changes nothing else, and answers no JSON-RPC. Bounded: at most
//! [`ADMIN_CONNECTIONS`] connections (one more is closed at once), a head within 5 s, the
//! node's answer within 2 s (else the page says the node is down).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::net::{call_node, log};

/// The most admin connections at once.
pub(crate) const ADMIN_CONNECTIONS: usize = 16;
/// The longest the page waits for the node.
const NODE_DEADLINE: Duration = Duration::from_secs(2);
/// The largest `node_getNodes` answer read (a consortium of hundreds of nodes fits).
const NODES_MAX: usize = 1 << 20;

/// What the admin listener reads.
pub(crate) struct Admin {
    pub(crate) node_rpc: PathBuf,
    pub(crate) metrics: Arc<Metrics>,
}

/// Serves the admin listener until the process ends.
pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(ADMIN_CONNECTIONS));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(page(req, &admin).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            drop(slot);
        });
    }
}

/// The node's `node_getNodes`, or `None` if it does not answer in time.
async fn node_state(admin: &Admin) -> Option<Value> {
    let call = call_node(&admin.node_rpc, "node_getNodes", NODES_MAX);
    match tokio::time::timeout(NODE_DEADLINE, call).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            log("admin-node-unreachable", json!({"reason": e}));
            None
        }
        Err(_) => None,
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

async fn page(req: Request<Incoming>, admin: &Admin) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let node = node_state(admin).await;
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                admin.metrics.render(node.as_ref()),
            )
        }
        "/health" => {
            let node = node_state(admin).await;
            let (ok, body) = crate::metrics::health(node.as_ref(), admin.metrics.trust_loaded());
            let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            reply(status, "application/json", format!("{body}\n"))
        }
        "/status" | "/" => {
            let node = node_state(admin).await;
            let (crls, certificates) = admin.metrics.expiries();
            let inputs = crate::status_page::Inputs {
                crls: &crls,
                certificates: &certificates,
                trust_loaded: admin.metrics.trust_loaded(),
                now: crate::net::now(),
            };
            let page = crate::status_page::render(node.as_ref(), &inputs);
            reply(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "/status, /metrics or /health\n".into()),
    }
}

//! `/metrics` over HTTP: a listener task of its own, apart from the service's port.
//!
//! A scrape encodes the registry: counters and histograms are atomics, read without a
//! lock; collectors copy the little state they report under the same short locks the
//! process's `STATUS` and `STATS` take. Nothing here runs on a request's path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::MetricsAddr;

/// The OpenMetrics text format, which Prometheus asks for and reads.
const CONTENT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExporterError {
    /// The address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Serves `registry` where `addr` says for a service listening on `listen`: nowhere when
/// off; a derived address (`+N`) that is taken costs only the metrics (a warning), an
/// address given outright that cannot be bound is an error.
pub async fn start(
    addr: MetricsAddr,
    listen: SocketAddr,
    registry: Registry,
) -> Result<Option<(SocketAddr, JoinHandle<()>)>, ExporterError> {
    let Some(at) = addr.resolve(listen) else {
        if addr != MetricsAddr::Off {
            warn!(%listen, metrics_addr = %addr, "no port for metrics at that offset: not serving them");
        }
        return Ok(None);
    };
    match spawn(at, registry).await {
        Ok(served) => Ok(Some(served)),
        Err(e) if !addr.explicit() => {
            warn!(%e, "not serving metrics (give --metrics-addr HOST:PORT, or off)");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Binds `addr` and serves `registry` on `/metrics` until the task is aborted.
pub async fn spawn(addr: SocketAddr, registry: Registry) -> Result<(SocketAddr, JoinHandle<()>), ExporterError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| ExporterError::Bind { addr, source })?;
    let local = listener.local_addr().map_err(|source| ExporterError::Bind { addr, source })?;
    info!(metrics = %local, "serving /metrics");
    Ok((local, tokio::spawn(serve(listener, Arc::new(registry)))))
}

/// Serves `registry` on every connection `listener` accepts.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(%e, "metrics: accept failed");
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(request, registry.clone()));
            let served = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, %e, "metrics connection ended");
            }
        });
    }
}

async fn answer(request: Request<Incoming>, registry: Arc<Registry>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if path != "/metrics" {
        return Ok(reply(StatusCode::NOT_FOUND, "not found: metrics are on /metrics\n".into()));
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n".into()));
    }
    let mut body = String::with_capacity(16 * 1024);
    if let Err(e) = encode(&mut body, &registry) {
        return Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics failed: {e}\n")));
    }
    let mut response = reply(StatusCode::OK, body);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ops, RequestMetrics, OK};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_the_registry_on_metrics_only() {
        let mut registry = Registry::default();
        let m = RequestMetrics::new(ops::CLIENT);
        m.register(&mut registry);
        m.instant("read", OK);
        let (addr, task) = spawn("127.0.0.1:0".parse().unwrap(), registry).await.unwrap();
        let page = get(addr, "/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.contains("application/openmetrics-text"), "{page}");
        assert!(page.contains("shardline_requests_total{op=\"read\",code=\"ok\"} 1"), "{page}");
        assert!(page.trim_end().ends_with("# EOF"), "{page}");
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404"));
        task.abort();
    }

    #[tokio::test]
    async fn a_taken_address_is_an_error_only_when_given_outright() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let explicit = start(MetricsAddr::At(addr), addr, Registry::default()).await;
        assert!(matches!(explicit, Err(ExporterError::Bind { .. })));
        let derived = start(MetricsAddr::Offset(0), addr, Registry::default()).await;
        assert!(matches!(derived, Ok(None)));
        assert!(matches!(start(MetricsAddr::Off, addr, Registry::default()).await, Ok(None)));
    }
}

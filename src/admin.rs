//! The admin HTTP port (`server.admin_listen`): `GET /metrics` (Prometheus
//! text exposition) and `GET /healthz` (`200 ok`). Plain HTTP/1.1, no
//! authentication: bind it to a private interface.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{prometheus, Telemetry};

/// Binds `addr`; the returned task serves until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("server.admin_listen {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(accept(listener, telemetry, shutdown));
    Ok((bound, task))
}

async fn accept(listener: TcpListener, telemetry: Telemetry, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "admin port: accept failed");
                    continue;
                }
            },
        };
        let telemetry = telemetry.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let telemetry = telemetry.clone();
                async move { Ok::<_, Infallible>(handle(&request, &telemetry).await) }
            });
            let connection = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "admin port: connection ended");
                    }
                }
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

async fn handle(request: &Request<Incoming>, telemetry: &Telemetry) -> Response<Full<Bytes>> {
    let get = matches!(*request.method(), Method::GET | Method::HEAD);
    match request.uri().path() {
        "/metrics" if get => {
            let telemetry = telemetry.clone();
            // Observable callbacks read sled's size from disk: off the
            // async workers.
            let rendered = tokio::task::spawn_blocking(move || telemetry.render_prometheus())
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
            match rendered {
                Ok(text) => reply(StatusCode::OK, prometheus::CONTENT_TYPE, text),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    format!("{e:#}\n"),
                ),
            }
        }
        "/healthz" if get => reply(StatusCode::OK, "text/plain; charset=utf-8", "ok".into()),
        "/metrics" | "/healthz" => {
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                "GET only\n".into(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            response
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: try /metrics or /healthz\n".into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

//! gRPC-Web for browser dashboards: CORS preflight from configured origins.

mod common;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request and returns the response head, lowercased.
async fn http1(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 8192];
    let mut head = Vec::new();
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        head.extend_from_slice(&buf[..n]);
        if n == 0 || head.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

fn preflight(origin: &str) -> String {
    format!(
        "OPTIONS /gapwatch.v1.AlertService/Subscribe HTTP/1.1\r\nHost: localhost\r\n\
         Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type,x-grpc-web\r\nConnection: close\r\n\r\n"
    )
}

#[tokio::test]
async fn preflight_allows_only_configured_origins() {
    let server = TestServer::start_with(|c| {
        c.server.cors_allowed_origins = vec!["https://dash.example.com".into()];
    })
    .await;
    let allowed = http1(server.addr, &preflight("https://dash.example.com")).await;
    assert!(allowed.starts_with("http/1.1 200"), "{allowed}");
    assert!(
        allowed.contains("access-control-allow-origin: https://dash.example.com"),
        "{allowed}"
    );
    assert!(allowed.contains("x-grpc-web"), "{allowed}");

    let other = http1(server.addr, &preflight("https://evil.example.org")).await;
    assert!(!other.contains("access-control-allow-origin"), "{other}");
    server.stop().await;
}

#[tokio::test]
async fn no_cors_headers_by_default() {
    let server = TestServer::start().await;
    let head = http1(server.addr, &preflight("https://dash.example.com")).await;
    assert!(!head.contains("access-control-allow-origin"), "{head}");
    server.stop().await;
}

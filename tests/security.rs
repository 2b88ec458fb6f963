//! TLS, mutual TLS, bearer tokens with scopes, and the limits: a rogue
//! client without a certificate, a missing token, a wrong scope, an
//! oversized message, too many streams.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{csat, TestServer, T0};
use gapwatch::config::TlsConfig;
use gapwatch::proto;
use gapwatch::Config;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

/// A CA, a server certificate for `localhost` and a client certificate,
/// written as PEM files into `dir`.
struct Pki {
    ca_pem: String,
    client_cert: String,
    client_key: String,
}

fn make_pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["client.example".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    }
}

async fn tls_channel(
    addr: std::net::SocketAddr,
    pki: &Pki,
    with_client_cert: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .domain_name("localhost");
    if with_client_cert {
        tls = tls.identity(Identity::from_pem(&pki.client_cert, &pki.client_key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn tls_config(dir: &Path, mutual: bool) -> TlsConfig {
    TlsConfig {
        cert_file: dir.join("server.pem"),
        key_file: dir.join("server.key"),
        client_ca_file: mutual.then(|| dir.join("ca.pem")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki_dir = tempfile::tempdir().unwrap();
    let pki = make_pki(pki_dir.path());
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = data.path().to_path_buf();
    config.server.tls = Some(tls_config(pki_dir.path(), true));
    config.server.health_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TlsServer::start(config).await;

    // With a certificate signed by the CA: served.
    let channel = tls_channel(server.addr, &pki, true)
        .await
        .expect("mTLS connects");
    let reply = record_over(channel.clone(), "tls-1")
        .await
        .expect("accepted over mTLS");
    assert_eq!(reply.sequence, 1);

    // Without one: the handshake (or the first call) fails, nothing lands.
    if let Ok(rogue) = tls_channel(server.addr, &pki, false).await {
        let status = record_over(rogue, "rogue-1")
            .await
            .expect_err("a client without a certificate must not be served");
        // The server closes the connection during the handshake.
        assert_transport_failure(&status);
    }
    // Plaintext on the TLS port is refused too.
    let plain = Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await;
    if let Ok(plain) = plain {
        let status = record_over(plain, "plain-1")
            .await
            .expect_err("plaintext must not be served on the TLS port");
        assert_transport_failure(&status);
    }
    // Neither refused call landed: the next accepted event is sequence 2.
    let reply = record_over(channel, "tls-2")
        .await
        .expect("accepted over mTLS");
    assert_eq!(reply.sequence, 2);

    // Health stays reachable in plaintext on its own port (probes).
    let health_addr = server.bound.health.expect("health port");
    let channel = Endpoint::from_shared(format!("http://{health_addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
    server.stop().await;
}

async fn record_over(
    channel: Channel,
    id: &str,
) -> Result<proto::RecordEventResponse, tonic::Status> {
    proto::ingest_service_client::IngestServiceClient::new(channel)
        .record_survey(proto::RecordSurveyRequest {
            survey: Some(csat(id, "c-1", T0, 4)),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A refused connection surfaces as a transport-level failure (how varies:
/// the server closes the socket or answers a cleartext preface with
/// garbage), never as an application answer.
fn assert_transport_failure(status: &tonic::Status) {
    assert!(
        matches!(
            status.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown | Code::Internal
        ),
        "{status:?}"
    );
}

/// A server started with `run_with_ready`, to learn every bound port.
struct TlsServer {
    addr: std::net::SocketAddr,
    bound: gapwatch::Bound,
    stop: tokio::sync::oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TlsServer {
    async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let handle = tokio::spawn(gapwatch::run_with_ready(
            config,
            listener,
            async move {
                let _ = stopped.await;
            },
            move |bound| {
                let _ = ready_tx.send(*bound);
            },
        ));
        let bound = ready_rx.await.expect("server ready");
        Self {
            addr: bound.grpc,
            bound,
            stop,
            handle,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.handle.await.unwrap().expect("clean shutdown");
    }
}

const INGEST_TOKEN: &str = "ingest-secret-0123456789";
const READ_TOKEN: &str = "read-secret-0123456789";

fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn tokens_and_scopes() {
    let server = TestServer::start_with(|c| {
        c.auth.tokens = vec![
            gapwatch::auth::TokenSpec {
                name: "shop".into(),
                secret: INGEST_TOKEN.into(),
                scopes: [gapwatch::auth::Scope::Ingest].into(),
            },
            gapwatch::auth::TokenSpec {
                name: "dashboard".into(),
                secret: READ_TOKEN.into(),
                scopes: [gapwatch::auth::Scope::Read].into(),
            },
        ];
    })
    .await;
    let mut ingest = server.ingest.clone();
    let event = || proto::RecordSurveyRequest {
        survey: Some(csat("auth-1", "c-1", T0, 4)),
    };

    let missing = ingest.record_survey(event()).await.unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated, "{missing:?}");
    let wrong = ingest
        .record_survey(bearer(event(), "not-a-token-at-all"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let scope = ingest
        .record_survey(bearer(event(), READ_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(scope.code(), Code::PermissionDenied);
    assert!(scope.message().contains("ingest"), "{}", scope.message());

    // Nothing was recorded by the refused calls: the right token gets
    // sequence 1, not a duplicate.
    let ok = ingest
        .record_survey(bearer(event(), INGEST_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.sequence, 1);
    assert!(!ok.duplicate);

    // Reads need `read`; ingest tokens cannot read.
    let mut score = server.score.clone();
    let request = || proto::GetScopeScoreRequest {
        scope: "all".into(),
        as_of_time: None,
    };
    let denied = score
        .get_scope_score(bearer(request(), INGEST_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let scope_score = score
        .get_scope_score(bearer(request(), READ_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scope_score.response_count, 1);

    // Admin methods need `admin`.
    let mut config = server.config.clone();
    let put = config
        .put_dimension(bearer(
            proto::PutDimensionRequest {
                dimension: Some(proto::Dimension {
                    name: "speed".into(),
                    display_name: "Speed".into(),
                    predicted_expectation: None,
                    standard_level: None,
                }),
            },
            READ_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(put.code(), Code::PermissionDenied);

    // Health needs no token.
    let status = HealthClient::new(server.channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);
    server.stop().await;
}

#[tokio::test]
async fn oversized_message_is_refused() {
    let server = TestServer::start_with(|c| c.server.max_message_bytes = 4096).await;
    let events: Vec<proto::Event> = (0..200)
        .map(|i| proto::Event {
            kind: Some(proto::event::Kind::Survey(csat(
                &format!("big-{i}"),
                "c-1",
                T0,
                3,
            ))),
        })
        .collect();
    let err = server
        .ingest
        .clone()
        .record_batch(proto::RecordBatchRequest { events })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{err:?}"
    );
    // Nothing was applied.
    let one = server
        .record_survey(csat("small-1", "c-1", T0, 3))
        .await
        .unwrap();
    assert_eq!(one.sequence, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_streams_on_one_connection_wait_for_a_slot() {
    let server = TestServer::start_with(|c| c.server.max_concurrent_streams = 2).await;
    // Two open StreamEvents streams take both slots of the connection.
    let mut open = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::mpsc::channel::<proto::StreamEventsRequest>(1);
        let response = server
            .ingest
            .clone()
            .stream_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream opens");
        open.push((tx, response));
    }
    // A third RPC on the same connection cannot start while they are open.
    let mut third = server.score.clone();
    let mut request = tonic::Request::new(proto::ListScopesRequest::default());
    request.set_timeout(Duration::from_millis(500));
    let blocked = tokio::time::timeout(Duration::from_secs(3), third.list_scopes(request)).await;
    match blocked {
        Err(_) => {}
        Ok(Err(status)) => assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        ),
        Ok(Ok(_)) => panic!("a third stream must not be served while two are open"),
    }
    // Closing one frees a slot.
    drop(open.pop());
    let listed = tokio::time::timeout(
        Duration::from_secs(10),
        third.list_scopes(proto::ListScopesRequest::default()),
    )
    .await
    .expect("served once a slot is free")
    .expect("list scopes");
    assert!(listed.into_inner().scopes.is_empty());
    drop(open);
    server.stop().await;
}

#[tokio::test]
async fn idle_and_overlong_streams_are_ended_after_their_acks() {
    let server = TestServer::start_with(|c| {
        c.server.stream_idle_timeout_secs = 1;
        c.server.stream_max_duration_secs = 2;
    })
    .await;
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::StreamEventsRequest>(4);
    let mut acks = server
        .ingest
        .clone()
        .stream_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(proto::StreamEventsRequest {
        event: Some(proto::Event {
            kind: Some(proto::event::Kind::Survey(csat("idle-1", "c-1", T0, 4))),
        }),
    })
    .await
    .unwrap();
    let ack = acks.message().await.unwrap().expect("the ack comes first");
    assert_eq!(ack.sequence, 1);
    // The producer stays silent: the server ends the stream.
    let end = tokio::time::timeout(Duration::from_secs(30), acks.message())
        .await
        .expect("ended by the idle limit")
        .unwrap_err();
    assert_eq!(end.code(), Code::DeadlineExceeded, "{end:?}");
    assert!(end.message().contains("stream_idle_timeout_secs"));
    drop(tx);

    // Subscribe streams end at their maximum duration, naming where to
    // resume.
    let mut alerts = server
        .alerts
        .clone()
        .subscribe(proto::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(30), alerts.message())
            .await
            .expect("ended by the duration limit")
        {
            Ok(Some(_heartbeat)) => continue,
            Ok(None) => panic!("must end with a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(
        end.message().contains("resume from sequence 1"),
        "{}",
        end.message()
    );
    server.stop().await;
}

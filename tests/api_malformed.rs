//! Requests whose bytes are not the message they claim to be: refused as
//! INVALID_ARGUMENT naming the message (and the field, where prost can
//! tell), with nothing stored, and the server and an open stream's
//! earlier events unharmed.

mod common;

use common::{survey_event, TestServer, T0};
use gapwatch::api::codec::PreEncoded;
use gapwatch::proto::{
    EventResult, EventStatus, RecordBatchRequest, RecordBatchResponse, RecordEventResponse,
    RecordSurveyRequest, StreamEventsRequest,
};
use http::uri::PathAndQuery;
use prost::bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

const SURVEY: &str = "/gapwatch.v1.IngestService/RecordSurvey";
const BATCH: &str = "/gapwatch.v1.IngestService/RecordBatch";
const STREAM: &str = "/gapwatch.v1.IngestService/StreamEvents";

/// Not protobuf: wire type 7 does not exist.
const GARBAGE: &[u8] = &[0xff, 0xff, 0xff, 0x01, 0x02];

async fn send<U: Message + Default + Send + 'static>(
    server: &TestServer,
    path: &'static str,
    body: Vec<u8>,
) -> Result<U, Status> {
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.unwrap();
    grpc.unary::<_, U, _>(
        tonic::Request::new(Bytes::from(body)),
        PathAndQuery::from_static(path),
        PreEncoded::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

fn assert_refused(status: &Status, names: &[&str]) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    for name in names {
        assert!(status.message().contains(name), "{name} in {status:?}");
    }
}

/// A survey request whose `event_id` is not UTF-8.
fn survey_with_invalid_utf8_id() -> Vec<u8> {
    let survey = common::csat("XXXXXXXX", "alice", T0, 4);
    let mut bytes = RecordSurveyRequest {
        survey: Some(survey),
    }
    .encode_to_vec();
    let at = bytes
        .windows(8)
        .position(|w| w == b"XXXXXXXX")
        .expect("the id's bytes");
    bytes[at..at + 8].copy_from_slice(&[0xff, 0xfe, 0xfd, 0xfc, 0xc0, 0xc1, 0xf5, 0xf6]);
    bytes
}

async fn events_stored(server: &TestServer) -> u64 {
    server.scope("all", T0 + 60).await.event_count
}

#[tokio::test]
async fn undecodable_unary_and_batch_requests_are_invalid_arguments() {
    let server = TestServer::start().await;

    let garbage = send::<RecordEventResponse>(&server, SURVEY, GARBAGE.to_vec()).await;
    assert_refused(&garbage.unwrap_err(), &["RecordSurveyRequest", "wire type"]);

    let not_utf8 =
        send::<RecordEventResponse>(&server, SURVEY, survey_with_invalid_utf8_id()).await;
    assert_refused(
        &not_utf8.unwrap_err(),
        &["RecordSurveyRequest", "event_id", "UTF-8"],
    );

    let mut batch = RecordBatchRequest {
        events: vec![survey_event(common::csat("b-1", "bob", T0, 5))],
    }
    .encode_to_vec();
    batch.extend_from_slice(GARBAGE);
    let batch = send::<RecordBatchResponse>(&server, BATCH, batch).await;
    assert_refused(&batch.unwrap_err(), &["RecordBatchRequest"]);

    // Nothing of them was stored, and the server still takes events.
    server
        .accept_survey(common::csat("ok-1", "carol", T0, 3))
        .await;
    assert_eq!(events_stored(&server).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn an_undecodable_stream_message_ends_the_stream_after_the_earlier_acks() {
    let server = TestServer::start().await;
    let valid = StreamEventsRequest {
        event: Some(survey_event(common::csat("s-1", "dave", T0, 4))),
    }
    .encode_to_vec();
    let items = vec![Bytes::from(valid), Bytes::from_static(GARBAGE)];
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.unwrap();
    let mut results = grpc
        .streaming::<_, _, EventResult, _>(
            tonic::Request::new(tokio_stream::iter(items)),
            PathAndQuery::from_static(STREAM),
            PreEncoded::default(),
        )
        .await
        .expect("the stream opens")
        .into_inner();
    let first = results
        .message()
        .await
        .expect("an ack")
        .expect("one result");
    assert_eq!(first.status(), EventStatus::Accepted, "{first:?}");
    let end = results.message().await.expect_err("the stream ends");
    assert_refused(&end, &["StreamEventsRequest"]);
    // The acknowledged event is stored, the rest of the stream is not.
    assert_eq!(events_stored(&server).await, 1);
    server.stop().await;
}

//! Generated queries, configuration and alert requests with edge values in
//! every field (empty, overlong and control-character strings, any
//! integer for page sizes and enums, arbitrary page tokens, timestamps out
//! of range, NaN and infinities): each gets an answer or a client error
//! (INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE, FAILED_PRECONDITION) with a
//! reason, never a server fault (INTERNAL, UNKNOWN, UNAVAILABLE); a
//! customer id or scope name that ingest would refuse is INVALID_ARGUMENT,
//! not NOT_FOUND; and the server serves the same data afterwards.

mod common;

use std::time::Duration;

use common::generate::{bad_text, bad_timestamp, mostly};
use common::{attrs, csat, purchase, survey_in, TestServer, T0};
use gapwatch::domain::validate;
use gapwatch::proto;
use pbjson_types::Timestamp;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::Code;

/// Names the seeded data has (and near misses).
fn name(known: &'static [&'static str]) -> BoxedStrategy<String> {
    mostly(
        ODDS,
        prop_oneof![
            3 => prop::sample::select(known).prop_map(String::from),
            1 => "[a-z0-9=_-]{1,16}",
        ],
        bad_text(),
    )
}

/// Odds of a valid field against a bad one.
const ODDS: u32 = 8;

const SCOPES: &[&str] = &["all", "brand=acme", "region=east", "region=west"];
const CUSTOMERS: &[&str] = &["alice", "bob", "carol"];
const KEYS: &[&str] = &["brand", "region", "channel"];
const DIMENSIONS: &[&str] = &["responsiveness", "empathy", "speed", "tangibles"];

fn page_token() -> BoxedStrategy<String> {
    mostly(
        ODDS,
        Just(String::new()),
        prop_oneof!["[A-Za-z0-9+/=_-]{1,64}", "\\PC{1,32}", "[a-z]{1000,2000}",],
    )
}

fn page_size() -> BoxedStrategy<i32> {
    mostly(
        ODDS,
        0..200i32,
        prop_oneof![any::<i32>(), Just(i32::MAX), Just(i32::MIN), -5..0i32],
    )
}

/// An enum number: mostly one the proto defines (`0..=max`).
fn enum_number(max: i32) -> BoxedStrategy<i32> {
    mostly(
        ODDS,
        0..=max,
        prop_oneof![any::<i32>(), -3..0i32, max + 1..max + 10],
    )
}

fn number() -> BoxedStrategy<f64> {
    mostly(
        ODDS,
        1.0..7.0f64,
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            any::<f64>(),
            -10.0..20.0f64,
        ],
    )
}

fn as_of() -> BoxedStrategy<Option<Timestamp>> {
    mostly(
        ODDS,
        prop_oneof![
            3 => (T0 - 86_400 * 400..T0 + 86_400 * 400, 0..1_000_000_000i32)
                .prop_map(|(seconds, nanos)| Some(Timestamp { seconds, nanos })),
            1 => Just(None),
        ],
        prop_oneof![
            bad_timestamp(T0).prop_map(Some),
            Just(Some(Timestamp {
                seconds: -1,
                nanos: 0
            })),
        ],
    )
}

#[derive(Clone, Debug)]
enum Call {
    CustomerScore(proto::GetCustomerScoreRequest),
    ScopeScore(proto::GetScopeScoreRequest),
    ListScopes(proto::ListScopesRequest),
    AtRisk(proto::ListAtRiskCustomersRequest),
    PutDimension(proto::Dimension),
    ListAlerts(proto::ListAlertsRequest),
    Acknowledge(proto::AcknowledgeAlertRequest),
    Subscribe(proto::SubscribeRequest),
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (name(CUSTOMERS), as_of()).prop_map(|(customer_id, as_of_time)| {
            Call::CustomerScore(proto::GetCustomerScoreRequest {
                customer_id,
                as_of_time,
            })
        }),
        (name(SCOPES), as_of()).prop_map(|(scope, as_of_time)| {
            Call::ScopeScore(proto::GetScopeScoreRequest { scope, as_of_time })
        }),
        (name(KEYS), page_size(), page_token()).prop_map(
            |(attribute_key, page_size, page_token)| {
                Call::ListScopes(proto::ListScopesRequest {
                    attribute_key,
                    page_size,
                    page_token,
                })
            }
        ),
        (
            name(SCOPES),
            enum_number(3),
            page_size(),
            page_token(),
            as_of()
        )
            .prop_map(|(scope, tier, page_size, page_token, as_of_time)| {
                Call::AtRisk(proto::ListAtRiskCustomersRequest {
                    scope,
                    tier,
                    page_size,
                    page_token,
                    as_of_time,
                })
            }),
        (
            name(DIMENSIONS),
            name(DIMENSIONS),
            prop::option::of(number()),
            prop::option::of(number())
        )
            .prop_map(
                |(name, display_name, predicted_expectation, standard_level)| {
                    Call::PutDimension(proto::Dimension {
                        name,
                        display_name,
                        predicted_expectation,
                        standard_level,
                    })
                }
            ),
        (
            prop::collection::vec(enum_number(3), 0..4),
            prop::collection::vec(enum_number(5), 0..4),
            prop_oneof![Just(String::new()), name(SCOPES)],
            page_size(),
            page_token()
        )
            .prop_map(|(states, kinds, scope, page_size, page_token)| {
                Call::ListAlerts(proto::ListAlertsRequest {
                    states,
                    kinds,
                    scope,
                    page_size,
                    page_token,
                })
            }),
        (
            mostly(ODDS, prop_oneof!["[0-9]{1,3}", "[0-9]{4,25}"], bad_text()),
            prop_oneof![Just(String::new()), "\\PC{0,40}", "[a-z ]{2000,3000}"],
            any::<bool>()
        )
            .prop_map(|(id, note, rebaseline)| {
                Call::Acknowledge(proto::AcknowledgeAlertRequest {
                    id,
                    note,
                    rebaseline,
                })
            }),
        (
            prop::option::of(prop_oneof![0..50u64, any::<u64>()]),
            prop::collection::vec(enum_number(5), 0..3),
            prop::collection::vec(name(SCOPES), 0..3),
            prop::collection::vec(name(DIMENSIONS), 0..3),
            enum_number(3)
        )
            .prop_map(|(from_sequence, kinds, scopes, dimensions, min_severity)| {
                Call::Subscribe(proto::SubscribeRequest {
                    from_sequence,
                    kinds,
                    scopes,
                    dimensions,
                    min_severity,
                })
            }),
    ]
}

/// The call's outcome: `Ok` or the status it failed with.
async fn make(server: &TestServer, call: Call) -> Result<(), tonic::Status> {
    let mut score = server.score.clone();
    let mut alerts = server.alerts.clone();
    match call {
        Call::CustomerScore(r) => score.get_customer_score(r).await.map(drop),
        Call::ScopeScore(r) => score.get_scope_score(r).await.map(drop),
        Call::ListScopes(r) => score.list_scopes(r).await.map(drop),
        Call::AtRisk(r) => score.list_at_risk_customers(r).await.map(drop),
        Call::PutDimension(d) => server.put_dimension(d).await.map(drop),
        Call::ListAlerts(r) => alerts.list_alerts(r).await.map(drop),
        Call::Acknowledge(r) => alerts.acknowledge_alert(r).await.map(drop),
        Call::Subscribe(r) => {
            let mut stream = alerts.subscribe(r).await?.into_inner();
            // The first message, or none within a moment: a live feed.
            match tokio::time::timeout(Duration::from_millis(100), stream.message()).await {
                Ok(first) => first.map(drop),
                Err(_) => Ok(()),
            }
        }
    }
}

#[test]
fn generated_requests_get_an_answer_or_a_client_error_never_a_server_fault() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async {
        let server = TestServer::start().await;
        let region = |id, customer, at| survey_in(id, customer, at, &[("region", "east")]);
        server
            .accept_survey(proto::Survey {
                csat: Some(2),
                ..region("s-1", "alice", T0)
            })
            .await;
        server.accept_survey(csat("s-2", "bob", T0 + 60, 5)).await;
        server
            .accept_interaction(proto::Interaction {
                attributes: attrs(&[("brand", "acme")]),
                ..purchase("p-1", "alice", T0 + 120, 80.0)
            })
            .await;
        server
    });
    let before = runtime.block_on(server.scope("all", T0 + 3_600));
    let mut runner = TestRunner::new(Config {
        cases: 192,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&call(), |call| {
            let outcome = runtime.block_on(make(&server, call.clone()));
            // A name ingest would refuse is refused, not looked up.
            let unacceptable = match &call {
                Call::CustomerScore(r) => validate::check_id(&r.customer_id).is_err(),
                Call::ScopeScore(r) => validate::check_scope(&r.scope).is_err(),
                _ => false,
            };
            if unacceptable {
                let code = outcome.as_ref().err().map(tonic::Status::code);
                prop_assert_eq!(code, Some(Code::InvalidArgument), "{:?}", call);
            }
            if let Err(status) = outcome {
                prop_assert!(
                    matches!(
                        status.code(),
                        Code::InvalidArgument
                            | Code::NotFound
                            | Code::OutOfRange
                            | Code::FailedPrecondition
                    ),
                    "{call:?}: {status:?}"
                );
                prop_assert!(!status.message().is_empty(), "{call:?}: no reason");
            }
            Ok(())
        })
        .unwrap();
    let after = runtime.block_on(server.scope("all", T0 + 3_600));
    assert_eq!(after.event_count, before.event_count);
    assert_eq!(after.satisfaction_index, before.satisfaction_index);
    runtime.block_on(server.stop());
}

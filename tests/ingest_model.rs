//! Ingest against a model, over generated histories: unary calls, batches
//! and streams of events drawn from a small pool of customers and ids, some
//! of them invalid, retried and repeated within one call. Every answer is
//! what the model says: an invalid event is rejected (INVALID_ARGUMENT with
//! the field); the first valid event with a customer and id is accepted
//! with a new, larger sequence; any later one with the same customer and
//! id is a duplicate answered with that sequence, whatever its content.
//! The store counts exactly the accepted events. After a restart on the
//! same data dir, every event sent again is a duplicate with its original
//! sequence, and the counts are unchanged.

mod common;

use std::collections::HashMap;

use common::{csat, interaction_event, purchase, survey_event, TestServer, T0};
use gapwatch::proto::{self, EventResult, EventStatus};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::Code;

const CUSTOMERS: [&str; 2] = ["alice", "bob"];

/// One generated event: whose, which id, and what it carries.
#[derive(Clone, Debug)]
struct Draw {
    customer: usize,
    id: usize,
    /// 0..=4: a survey rating csat 1..=5; 5: a purchase; 6: an invalid
    /// survey (csat 9).
    body: u8,
}

impl Draw {
    fn valid(&self) -> bool {
        self.body != 6
    }

    fn key(&self) -> (usize, usize) {
        (self.customer, self.id)
    }

    fn event(&self) -> proto::Event {
        let customer = CUSTOMERS[self.customer];
        let id = format!("e-{}", self.id);
        let at = T0 + 60 * self.id as i64;
        match self.body {
            5 => interaction_event(purchase(&id, customer, at, 25.0)),
            6 => survey_event(csat(&id, customer, at, 9)),
            rating => survey_event(csat(&id, customer, at, i32::from(rating) + 1)),
        }
    }
}

#[derive(Clone, Debug)]
enum Call {
    Unary(Draw),
    Batch(Vec<Draw>),
    Stream(Vec<Draw>),
}

fn draw() -> impl Strategy<Value = Draw> {
    (0..CUSTOMERS.len(), 0..4usize, 0..7u8).prop_map(|(customer, id, body)| Draw {
        customer,
        id,
        body,
    })
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        draw().prop_map(Call::Unary),
        prop::collection::vec(draw(), 1..6).prop_map(Call::Batch),
        prop::collection::vec(draw(), 1..6).prop_map(Call::Stream),
    ]
}

/// What the server has accepted: each customer and id's sequence.
#[derive(Default)]
struct Model {
    accepted: HashMap<(usize, usize), u64>,
    last_sequence: u64,
}

impl Model {
    /// Checks one answer against the model and learns from it.
    fn answer(&mut self, draw: &Draw, answer: &Answer) -> Result<(), TestCaseError> {
        match (draw.valid(), self.accepted.get(&draw.key()), answer) {
            (false, _, Answer::Rejected(code, field)) => {
                prop_assert_eq!(*code, Code::InvalidArgument);
                prop_assert!(field.ends_with("csat"), "{}", field);
            }
            (true, Some(&sequence), Answer::Duplicate(s)) => {
                prop_assert_eq!(*s, sequence, "{:?}: the original sequence", draw);
            }
            (true, None, Answer::Accepted(s)) => {
                prop_assert!(
                    *s > self.last_sequence,
                    "{:?}: {} after {}",
                    draw,
                    s,
                    self.last_sequence
                );
                self.last_sequence = *s;
                self.accepted.insert(draw.key(), *s);
            }
            (valid, known, answer) => {
                return Err(TestCaseError::fail(format!(
                    "{draw:?} (valid {valid}, accepted as {known:?}) answered {answer:?}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
enum Answer {
    Accepted(u64),
    Duplicate(u64),
    Rejected(Code, String),
}

fn from_result(result: &EventResult) -> Answer {
    match result.status() {
        EventStatus::Accepted => Answer::Accepted(result.sequence),
        EventStatus::Duplicate => Answer::Duplicate(result.sequence),
        _ => {
            let error = result.error.clone().unwrap_or_default();
            Answer::Rejected(Code::from(error.code), error.field)
        }
    }
}

/// Makes the call; its answers, one per event in order.
async fn make(server: &TestServer, call: &Call) -> Vec<Answer> {
    match call {
        Call::Unary(draw) => {
            let answer = match draw.event().kind.expect("an event") {
                proto::event::Kind::Survey(s) => server.record_survey(s).await,
                proto::event::Kind::Interaction(i) => server.record_interaction(i).await,
            };
            vec![match answer {
                Ok(r) if r.duplicate => Answer::Duplicate(r.sequence),
                Ok(r) => Answer::Accepted(r.sequence),
                Err(status) => {
                    use tonic_types::StatusExt;
                    let field = status
                        .get_details_bad_request()
                        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
                        .unwrap_or_default();
                    Answer::Rejected(status.code(), field)
                }
            }]
        }
        Call::Batch(draws) => {
            let results = server
                .record_batch(draws.iter().map(Draw::event).collect())
                .await
                .expect("a batch is answered per event");
            results.iter().map(from_result).collect()
        }
        Call::Stream(draws) => server
            .stream_all(draws.iter().map(Draw::event).collect())
            .await
            .iter()
            .map(from_result)
            .collect(),
    }
}

fn draws(call: &Call) -> &[Draw] {
    match call {
        Call::Unary(draw) => std::slice::from_ref(draw),
        Call::Batch(draws) | Call::Stream(draws) => draws,
    }
}

async fn events_stored(server: &TestServer) -> u64 {
    server
        .try_scope("all", T0 + 86_400)
        .await
        .map_or(0, |scope| scope.event_count)
}

#[test]
fn ingest_answers_and_stores_what_the_model_says_across_a_restart() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(call(), 1..10), |calls| {
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let server = TestServer::start_at(dir.path(), |_| {}).await;
                let mut model = Model::default();
                for call in &calls {
                    let answers = make(&server, call).await;
                    prop_assert_eq!(answers.len(), draws(call).len(), "{:?}", call);
                    for (draw, answer) in draws(call).iter().zip(&answers) {
                        model.answer(draw, answer)?;
                    }
                }
                let stored = model.accepted.len() as u64;
                prop_assert_eq!(events_stored(&server).await, stored);
                server.stop().await;

                // Everything again, after a restart: duplicates and
                // rejections only, with the sequences first given.
                let server = TestServer::start_at(dir.path(), |_| {}).await;
                let accepted_before = model.accepted.len();
                for call in &calls {
                    for (draw, answer) in draws(call).iter().zip(&make(&server, call).await) {
                        model.answer(draw, answer)?;
                    }
                }
                prop_assert_eq!(model.accepted.len(), accepted_before);
                prop_assert_eq!(events_stored(&server).await, stored);
                server.stop().await;
                Ok(())
            })
        })
        .unwrap();
}

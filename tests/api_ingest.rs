//! IngestService over real gRPC: sequences and idempotency, validation
//! errors with google.rpc.BadRequest details, the attribute cap, batches,
//! streams, concurrency, persistence across restarts, health and
//! reflection.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use tonic::Code;

// ---------------------------------------------------------------------------
// Sequences and duplicates

#[tokio::test]
async fn unary_events_get_sequences_and_duplicates_change_nothing() {
    let server = TestServer::start().await;
    let east = [("region", "east")];
    let first = Survey {
        csat: Some(5),
        ..survey_in("s-1", "alice", T0, &east)
    };
    let r = server.record_survey(first.clone()).await.expect("s-1");
    assert_eq!((r.sequence, r.duplicate), (1, false));
    let r = server
        .record_interaction(purchase("p-1", "alice", T0 + HOUR, 40.0))
        .await
        .expect("p-1");
    assert_eq!((r.sequence, r.duplicate), (2, false));
    let r = server
        .record_survey(csat("s-2", "bob", T0 + 2 * HOUR, 2))
        .await
        .expect("s-2");
    assert_eq!((r.sequence, r.duplicate), (3, false));

    let as_of = T0 + DAY;
    let scope_before = server.scope("all", as_of).await;
    let east_before = server.scope("region=east", as_of).await;
    let alice_before = server.customer("alice", as_of).await;
    // csat 5 at T0 (satisfied) and 2 at T0+2h: the older answer weighs
    // w = 2^-(2h/720h) ≈ 0.99808, so 100·w/(w + 1) ≈ 49.952 %.
    let w = 2f64.powf(-2.0 / 720.0);
    assert_some_close(scope_before.csat_percent, 100.0 * w / (w + 1.0));
    assert_eq!(scope_before.event_count, 3);

    // The same id again, even with other content, is a duplicate of the
    // original and changes nothing.
    let replay = Survey {
        csat: Some(1),
        ..survey_in("s-1", "alice", T0 + 5 * HOUR, &east)
    };
    let r = server.record_survey(replay).await.expect("replay s-1");
    assert_eq!((r.sequence, r.duplicate), (1, true));
    let r = server.record_survey(first).await.expect("identical s-1");
    assert_eq!((r.sequence, r.duplicate), (1, true));
    let r = server
        .record_interaction(purchase("p-1", "alice", T0 + HOUR, 999.0))
        .await
        .expect("replay p-1");
    assert_eq!((r.sequence, r.duplicate), (2, true));
    // Event ids are one key space: a survey id sent as an interaction.
    let r = server
        .record_interaction(purchase("s-2", "bob", T0, 1.0))
        .await
        .expect("s-2 as interaction");
    assert_eq!((r.sequence, r.duplicate), (3, true));

    assert_eq!(server.scope("all", as_of).await, scope_before);
    assert_eq!(server.scope("region=east", as_of).await, east_before);
    assert_eq!(server.customer("alice", as_of).await, alice_before);
    assert_eq!(alice_before.survey_count, 1);
    assert_eq!(alice_before.purchase_count, 1);
    // value: 40 bought at T0+1h, as_of T0+1d is 23 h later, H = 720 h:
    // 40·2^-(23/720) ≈ 39.12.
    assert_close(alice_before.value, 40.0 * 2f64.powf(-23.0 / 720.0));

    // Duplicates do not consume sequences.
    let r = server
        .record_survey(csat("s-3", "bob", T0, 4))
        .await
        .expect("s-3");
    assert_eq!((r.sequence, r.duplicate), (4, false));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Validation

fn valid_survey() -> Survey {
    Survey {
        csat: Some(4),
        ..survey_in("v-1", "alice", T0, &[("region", "east")])
    }
}

fn valid_interaction(kind: InteractionKind) -> Interaction {
    interaction("v-2", "alice", T0, kind)
}

#[tokio::test]
async fn invalid_surveys_are_rejected_with_field_and_bound() {
    let server = TestServer::start().await;
    let long_id = "x".repeat(129);
    let nine_attributes: Vec<(String, String)> =
        (0..9).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let too_long_value = "v".repeat(65);
    let cases: Vec<(&str, Survey, &str, &str)> = vec![
        (
            "csat 0",
            Survey {
                csat: Some(0),
                ..valid_survey()
            },
            "survey.csat",
            "between 1 and 5, got 0",
        ),
        (
            "csat 6",
            Survey {
                csat: Some(6),
                ..valid_survey()
            },
            "survey.csat",
            "between 1 and 5, got 6",
        ),
        (
            "nps 11",
            Survey {
                nps: Some(11),
                ..valid_survey()
            },
            "survey.nps",
            "between 0 and 10, got 11",
        ),
        (
            "ces 8",
            Survey {
                ces: Some(8),
                ..valid_survey()
            },
            "survey.ces",
            "between 1 and 7, got 8",
        ),
        (
            "repurchase -1",
            Survey {
                repurchase: Some(-1),
                ..valid_survey()
            },
            "survey.repurchase",
            "between 0 and 10, got -1",
        ),
        (
            "expectation 0",
            Survey {
                ratings: vec![rating("empathy", 0, 4, None)],
                ..valid_survey()
            },
            "survey.ratings[0].expectation",
            "between 1 and 7, got 0",
        ),
        (
            "perception 8",
            Survey {
                ratings: vec![
                    rating("empathy", 4, 5, None),
                    rating("tangibles", 4, 8, None),
                ],
                ..valid_survey()
            },
            "survey.ratings[1].perception",
            "between 1 and 7, got 8",
        ),
        (
            "importance 9",
            Survey {
                ratings: vec![rating("empathy", 4, 4, Some(9))],
                ..valid_survey()
            },
            "survey.ratings[0].importance",
            "between 1 and 7, got 9",
        ),
        (
            "unknown dimension",
            Survey {
                ratings: vec![rating("speed", 4, 4, None)],
                ..valid_survey()
            },
            "survey.ratings[0].dimension",
            "unknown dimension `speed`",
        ),
        (
            "duplicate dimension",
            Survey {
                ratings: vec![rating("empathy", 4, 4, None), rating("empathy", 5, 5, None)],
                ..valid_survey()
            },
            "survey.ratings[1].dimension",
            "`empathy` rated twice",
        ),
        (
            "empty event_id",
            Survey {
                event_id: String::new(),
                ..valid_survey()
            },
            "survey.event_id",
            "must not be empty",
        ),
        (
            "129-byte event_id",
            Survey {
                event_id: long_id.clone(),
                ..valid_survey()
            },
            "survey.event_id",
            "at most 128 bytes, got 129",
        ),
        (
            "empty customer_id",
            Survey {
                customer_id: String::new(),
                ..valid_survey()
            },
            "survey.customer_id",
            "must not be empty",
        ),
        (
            "missing occur_time",
            Survey {
                occur_time: None,
                ..valid_survey()
            },
            "survey.occur_time",
            "is required",
        ),
        (
            "occur_time 10 minutes ahead",
            Survey {
                occur_time: Some(ts(now_secs() + 10 * MINUTE)),
                ..valid_survey()
            },
            "survey.occur_time",
            "5 minutes in the future",
        ),
        (
            "9 attributes",
            Survey {
                attributes: nine_attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ..valid_survey()
            },
            "survey.attributes",
            "at most 8 attributes, got 9",
        ),
        (
            "attribute key Brand",
            Survey {
                attributes: attrs(&[("Brand", "acme")]),
                ..valid_survey()
            },
            "survey.attributes",
            "key `Brand` must match [a-z0-9_]{1,32}",
        ),
        (
            "65-byte attribute value",
            Survey {
                attributes: attrs(&[("region", &too_long_value)]),
                ..valid_survey()
            },
            "survey.attributes[region]",
            "at most 64 bytes, got 65",
        ),
        (
            "no score at all",
            survey_in("v-1", "alice", T0, &[("region", "east")]),
            "survey",
            "at least one of csat, nps, ces, repurchase or ratings",
        ),
    ];
    for (name, s, field, reason) in cases {
        let status = server
            .record_survey(s)
            .await
            .expect_err(&format!("{name}: accepted"));
        assert_violation(&status, Code::InvalidArgument, field, reason);
        assert!(
            status.message().contains(field),
            "{name}: message {}",
            status.message()
        );
    }

    // The survey message itself missing.
    let status = server
        .ingest
        .clone()
        .record_survey(proto::RecordSurveyRequest { survey: None })
        .await
        .expect_err("missing survey accepted");
    assert_violation(&status, Code::InvalidArgument, "survey", "is required");

    // Several problems are reported at once.
    let status = server
        .record_survey(Survey {
            csat: Some(0),
            nps: Some(11),
            ..valid_survey()
        })
        .await
        .expect_err("two bad fields accepted");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = violations(&status).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["survey.csat", "survey.nps"]);

    // Nothing was recorded: the first valid event gets sequence 1 and no
    // scope other than the one it creates exists.
    assert_eq!(server.accept_survey(valid_survey()).await, 1);
    let scopes: Vec<String> = server
        .all_scopes("")
        .await
        .into_iter()
        .map(|s| s.scope)
        .collect();
    assert_eq!(scopes, ["all", "region=east"]);
    server.stop().await;
}

#[tokio::test]
async fn invalid_interactions_are_rejected_with_field_and_bound() {
    let server = TestServer::start().await;
    let cases: Vec<(&str, Interaction, &str, &str)> = vec![
        (
            "kind unspecified",
            valid_interaction(InteractionKind::Unspecified),
            "interaction.kind",
            "known interaction kind, got 0",
        ),
        (
            "purchase without amount",
            valid_interaction(InteractionKind::Purchase),
            "interaction.amount",
            "required for PURCHASE and RETURN",
        ),
        (
            "return without amount",
            valid_interaction(InteractionKind::Return),
            "interaction.amount",
            "required for PURCHASE and RETURN",
        ),
        (
            "negative amount",
            Interaction {
                amount: Some(-5.0),
                ..valid_interaction(InteractionKind::Purchase)
            },
            "interaction.amount",
            "must not be negative, got -5",
        ),
        (
            "NaN amount",
            Interaction {
                amount: Some(f64::NAN),
                ..valid_interaction(InteractionKind::Purchase)
            },
            "interaction.amount",
            "finite",
        ),
        (
            "infinite amount",
            Interaction {
                amount: Some(f64::INFINITY),
                ..valid_interaction(InteractionKind::Purchase)
            },
            "interaction.amount",
            "finite",
        ),
        (
            "complaint without case_id",
            valid_interaction(InteractionKind::ComplaintOpened),
            "interaction.case_id",
            "must not be empty",
        ),
        (
            "standard without actual",
            Interaction {
                standard: Some(30.0),
                dimension: "responsiveness".into(),
                ..valid_interaction(InteractionKind::Service)
            },
            "interaction.actual",
            "required with standard",
        ),
        (
            "delivered without promised",
            Interaction {
                delivered: Some(3.0),
                dimension: "reliability".into(),
                ..valid_interaction(InteractionKind::Service)
            },
            "interaction.promised",
            "required with delivered",
        ),
        (
            "measure without dimension",
            Interaction {
                standard: Some(30.0),
                actual: Some(45.0),
                ..valid_interaction(InteractionKind::Service)
            },
            "interaction.dimension",
            "required with standard/actual or promised/delivered",
        ),
        (
            "unknown dimension",
            Interaction {
                standard: Some(30.0),
                actual: Some(45.0),
                dimension: "speed".into(),
                ..valid_interaction(InteractionKind::Service)
            },
            "interaction.dimension",
            "unknown dimension `speed`",
        ),
        (
            "unknown severity",
            Interaction {
                case_id: "k".into(),
                severity: 7,
                ..valid_interaction(InteractionKind::ComplaintOpened)
            },
            "interaction.severity",
            "known severity, got 7",
        ),
        (
            "empty customer_id",
            Interaction {
                customer_id: String::new(),
                ..valid_interaction(InteractionKind::FollowUp)
            },
            "interaction.customer_id",
            "must not be empty",
        ),
        (
            "missing occur_time",
            Interaction {
                occur_time: None,
                ..valid_interaction(InteractionKind::FollowUp)
            },
            "interaction.occur_time",
            "is required",
        ),
    ];
    for (name, i, field, reason) in cases {
        let status = server
            .record_interaction(i)
            .await
            .expect_err(&format!("{name}: accepted"));
        assert_violation(&status, Code::InvalidArgument, field, reason);
    }
    let status = server
        .ingest
        .clone()
        .record_interaction(proto::RecordInteractionRequest { interaction: None })
        .await
        .expect_err("missing interaction accepted");
    assert_violation(&status, Code::InvalidArgument, "interaction", "is required");

    // Nothing was recorded by any of them.
    assert_eq!(
        server
            .accept_interaction(Interaction {
                amount: Some(0.0),
                ..valid_interaction(InteractionKind::Purchase)
            })
            .await,
        1
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Attribute cap

#[tokio::test]
async fn distinct_attribute_values_are_capped_per_key() {
    let server = TestServer::start_with(|c| c.ingest.max_distinct_values_per_key = 3).await;
    for (i, region) in ["east", "west", "north"].into_iter().enumerate() {
        let seq = server
            .accept_survey(Survey {
                csat: Some(5),
                ..survey_in(&format!("r-{region}"), "alice", T0, &[("region", region)])
            })
            .await;
        assert_eq!(seq, i as u64 + 1);
    }
    let fourth = Survey {
        csat: Some(5),
        ..survey_in("r-south", "alice", T0, &[("region", "south")])
    };
    let status = server
        .record_survey(fourth.clone())
        .await
        .expect_err("a 4th region accepted");
    assert_violation(
        &status,
        Code::ResourceExhausted,
        "attributes[region]",
        "limit 3",
    );
    // The refused event was not recorded: resending it is refused again,
    // not a duplicate, and no scope `region=south` exists.
    let status = server
        .record_survey(fourth)
        .await
        .expect_err("4th region resent");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        server
            .try_scope("region=south", T0)
            .await
            .expect_err("scope exists")
            .code(),
        Code::NotFound
    );

    // Existing values and other keys still work; no sequence was used.
    let seq = server
        .accept_survey(Survey {
            csat: Some(1),
            ..survey_in(
                "r-east-2",
                "bob",
                T0,
                &[("region", "east"), ("brand", "acme")],
            )
        })
        .await;
    assert_eq!(seq, 4);

    // In a batch the refusal is per event, with code 8.
    let results = server
        .record_batch(vec![
            survey_event(Survey {
                csat: Some(3),
                ..survey_in("r-b1", "carol", T0, &[("region", "west")])
            }),
            survey_event(Survey {
                csat: Some(3),
                ..survey_in("r-b2", "carol", T0, &[("region", "up")])
            }),
        ])
        .await
        .expect("batch");
    assert_eq!(results[0].status(), proto::EventStatus::Accepted);
    assert_eq!(results[0].sequence, 5);
    assert_eq!(results[1].status(), proto::EventStatus::Rejected);
    let error = results[1].error.as_ref().expect("error of r-b2");
    assert_eq!(error.code, Code::ResourceExhausted as i32);
    assert_eq!(error.field, "attributes[region]");

    let regions: Vec<String> = server
        .all_scopes("region")
        .await
        .into_iter()
        .map(|s| s.scope)
        .collect();
    assert_eq!(regions, ["region=east", "region=north", "region=west"]);
    // east: csat 5 (alice) and 1 (bob) → 50 %.
    let east = server.scope("region=east", T0).await;
    assert_some_close(east.csat_percent, 50.0);
    assert_eq!((east.response_count, east.customer_count), (2, 2));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Batches

#[tokio::test]
async fn batch_reports_one_result_per_event_in_order() {
    let server = TestServer::start_with(|c| c.ingest.max_batch_events = 8).await;
    let east = [("region", "east")];
    // Recorded before the batch: sequence 1.
    assert_eq!(server.accept_survey(csat("pre", "zoe", T0, 4)).await, 1);

    let events = vec![
        // 0: accepted, sequence 2
        survey_event(Survey {
            csat: Some(5),
            ..survey_in("b0", "alice", T0, &east)
        }),
        // 1: rejected, csat out of range
        survey_event(Survey {
            csat: Some(9),
            ..survey_in("b1", "alice", T0, &east)
        }),
        // 2: accepted, sequence 3
        interaction_event(purchase("b2", "bob", T0, 10.0)),
        // 3: duplicate of event 0 of this same batch
        survey_event(Survey {
            csat: Some(1),
            ..survey_in("b0", "alice", T0, &east)
        }),
        // 4: neither survey nor interaction
        Event { kind: None },
        // 5: duplicate of the event recorded before the batch
        survey_event(csat("pre", "zoe", T0, 1)),
        // 6: rejected, negative amount
        interaction_event(purchase("b6", "bob", T0, -1.0)),
        // 7: accepted, sequence 4
        survey_event(Survey {
            csat: Some(1),
            ..survey_in("b7", "carol", T0, &east)
        }),
    ];
    let results = server.record_batch(events).await.expect("batch");
    use proto::EventStatus::{Accepted, Duplicate, Rejected};
    let expected: [(&str, proto::EventStatus, u64, Option<&str>); 8] = [
        ("b0", Accepted, 2, None),
        ("b1", Rejected, 0, Some("events[1].survey.csat")),
        ("b2", Accepted, 3, None),
        ("b0", Duplicate, 2, None),
        ("", Rejected, 0, Some("events[4]")),
        ("pre", Duplicate, 1, None),
        ("b6", Rejected, 0, Some("events[6].interaction.amount")),
        ("b7", Accepted, 4, None),
    ];
    assert_eq!(results.len(), expected.len());
    for (i, (r, (id, status, seq, field))) in results.iter().zip(expected).enumerate() {
        assert_eq!(r.index, i as u64, "{r:?}");
        assert_eq!(r.event_id, id, "{r:?}");
        assert_eq!(r.status(), status, "{r:?}");
        assert_eq!(r.sequence, seq, "{r:?}");
        match field {
            None => assert!(r.error.is_none(), "{r:?}"),
            Some(field) => {
                let e = r.error.as_ref().expect("error");
                assert_eq!(e.code, Code::InvalidArgument as i32, "{r:?}");
                assert_eq!(e.field, field, "{r:?}");
                assert!(e.reason.starts_with(field), "{r:?}");
            }
        }
    }
    assert!(results[1]
        .error
        .as_ref()
        .is_some_and(|e| e.reason.contains("between 1 and 5, got 9")));
    assert!(results[4]
        .error
        .as_ref()
        .is_some_and(|e| e.reason.contains("survey or an interaction")));

    // Applied: pre, b0, b2, b7 — three surveys, one purchase.
    let all = server.scope("all", T0).await;
    assert_eq!(
        (all.event_count, all.response_count, all.customer_count),
        (4, 3, 4)
    );
    // csat 4 (pre), 5 (b0), 1 (b7): 2 of 3 satisfied.
    assert_some_close(all.csat_percent, 200.0 / 3.0);
    let east_scope = server.scope("region=east", T0).await;
    // b0 (5) and b7 (1): the duplicate's csat 1 was not applied → 50 %.
    assert_eq!((east_scope.event_count, east_scope.response_count), (2, 2));
    assert_some_close(east_scope.csat_percent, 50.0);
    assert_eq!(server.customer("bob", T0).await.purchase_count, 1);

    // Empty and oversized batches are refused as a whole.
    let status = server
        .record_batch(Vec::new())
        .await
        .expect_err("empty batch");
    assert_violation(
        &status,
        Code::InvalidArgument,
        "events",
        "must not be empty",
    );
    let nine = (0..9)
        .map(|i| survey_event(csat(&format!("n{i}"), "dan", T0, 3)))
        .collect();
    let status = server.record_batch(nine).await.expect_err("9 events");
    assert_violation(
        &status,
        Code::InvalidArgument,
        "events",
        "at most 8 events per batch, got 9",
    );
    // Nothing of the refused batch was applied.
    assert_eq!(server.scope("all", T0).await.event_count, 4);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Streams

#[tokio::test]
async fn stream_acks_every_event_in_order() {
    const N: usize = 2_000;
    let server = TestServer::start().await;
    // i % 10 == 7: invalid (csat 9); i % 10 == 3 (i >= 10): resends event
    // i - 3 (a valid one: same id, same customer); the rest: valid, unique.
    let original = |i: usize| if i % 10 == 3 && i >= 10 { i - 3 } else { i };
    let id = |i: usize| format!("st-{}", original(i));
    let events: Vec<Event> = (0..N)
        .map(|i| {
            let csat_value = if i % 10 == 7 { 9 } else { (i % 5) as i32 + 1 };
            survey_event(Survey {
                csat: Some(csat_value),
                ..survey(&id(i), &format!("c{}", original(i) % 40), T0 + i as i64)
            })
        })
        .collect();
    let results = server.stream_all(events).await;
    assert_eq!(results.len(), N);

    let mut next_sequence = 1;
    let mut sequence_of = std::collections::HashMap::new();
    let mut accepted = 0u64;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.index, i as u64);
        assert_eq!(r.event_id, id(i));
        if i % 10 == 7 {
            assert_eq!(r.status(), proto::EventStatus::Rejected, "{r:?}");
            assert_eq!(r.sequence, 0);
            let e = r.error.as_ref().expect("error");
            assert_eq!((e.code, e.field.as_str()), (3, "survey.csat"));
        } else if i % 10 == 3 && i >= 10 {
            assert_eq!(r.status(), proto::EventStatus::Duplicate, "{r:?}");
            assert_eq!(r.sequence, sequence_of[&id(i)], "{r:?}");
        } else {
            assert_eq!(r.status(), proto::EventStatus::Accepted, "{r:?}");
            // Accepted events get consecutive sequences in stream order.
            assert_eq!(r.sequence, next_sequence, "{r:?}");
            next_sequence += 1;
            accepted += 1;
            sequence_of.insert(id(i), r.sequence);
        }
    }
    // 2000 − 200 invalid − 199 resends (i = 13, 23, …, 1993) = 1601.
    assert_eq!(accepted, 1_601);
    let all = server.scope("all", T0 + DAY).await;
    assert_eq!(all.response_count, 1_601);
    assert_eq!(all.event_count, 1_601);
    // Customers c{i % 40}: c7, c17, c27, c37 only sent invalid events and
    // c13, c23, c33 only resends (c3 has the valid i = 3): 40 − 7 = 33.
    assert_eq!(all.customer_count, 33);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_after_their_acks() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let server = TestServer::start_at(dir.path(), |_| {}).await;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut acks = server
        .ingest
        .clone()
        .stream_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    for i in 0..10 {
        let s = csat(&format!("open-{i}"), "alice", T0 + i, 5);
        tx.send(proto::StreamEventsRequest {
            event: Some(survey_event(s)),
        })
        .await
        .expect("send");
    }
    for i in 0..10u64 {
        let ack = acks
            .message()
            .await
            .expect("ack")
            .expect("ack before shutdown");
        assert_eq!((ack.index, ack.sequence), (i, i + 1));
        assert_eq!(ack.status(), proto::EventStatus::Accepted);
    }
    // The producer keeps its side open; shutting down must still end the
    // stream (with UNAVAILABLE: reconnect and resend) and let `run` return.
    let stopping = tokio::spawn(server.stop());
    let end = acks.message().await;
    match end {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(other) => panic!("the stream did not end with UNAVAILABLE: {other:?}"),
    }
    stopping.await.expect("stop");
    drop(tx);

    let server = TestServer::start_at(dir.path(), |_| {}).await;
    let all = server.scope("all", T0 + DAY).await;
    assert_eq!((all.event_count, all.response_count), (10, 10));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Concurrency

/// Runs `callers` concurrent unary callers, each on its own client, each
/// sending `each` surveys built by `survey_for(caller, k)` one after the
/// other. Returns every caller's answers, (sequence, duplicate), in order.
async fn unary_callers(
    server: &TestServer,
    callers: usize,
    each: usize,
    survey_for: fn(usize, usize) -> Survey,
) -> Vec<Vec<(u64, bool)>> {
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let mut client = server.ingest.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::with_capacity(each);
            for k in 0..each {
                let r = client
                    .record_survey(proto::RecordSurveyRequest {
                        survey: Some(survey_for(caller, k)),
                    })
                    .await
                    .expect("record")
                    .into_inner();
                answers.push((r.sequence, r.duplicate));
            }
            answers
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await.expect("caller task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_unary_callers_get_distinct_sequences() {
    const CALLERS: usize = 32;
    const EACH: usize = 50;
    let server = TestServer::start().await;
    let answers = unary_callers(&server, CALLERS, EACH, |caller, n| Survey {
        csat: Some(4),
        ..survey(
            &format!("cc-{caller}-{n}"),
            &format!("caller-{caller}"),
            T0 + n as i64,
        )
    })
    .await;
    let mut all_sequences = HashSet::new();
    for answers in answers {
        assert!(answers.iter().all(|&(_, duplicate)| !duplicate));
        let sequences: Vec<u64> = answers.iter().map(|&(sequence, _)| sequence).collect();
        // One caller's events are sequential, so its sequences increase.
        assert!(sequences.windows(2).all(|w| w[0] < w[1]), "{sequences:?}");
        all_sequences.extend(sequences);
    }
    let expected: HashSet<u64> = (1..=(CALLERS * EACH) as u64).collect();
    assert_eq!(all_sequences, expected);
    let all = server.scope("all", T0 + DAY).await;
    assert_eq!(all.response_count, 1_600);
    assert_eq!(all.customer_count, 32);
    assert_some_close(all.csat_percent, 100.0);
    server.stop().await;
}

/// Commits are pipelined: a duplicate may arrive while the first copy of its
/// event is staged but not yet durable. Every copy must get the one sequence
/// the event was accepted under, and the event must count once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_copies_of_an_event_get_one_sequence_and_count_once() {
    const CALLERS: usize = 16;
    const EVENTS: usize = 200;
    let server = TestServer::start().await;
    // Half the callers walk the ids backwards, so copies of the same event
    // meet in different commits.
    fn event(caller: usize, k: usize) -> usize {
        if caller % 2 == 0 {
            k
        } else {
            EVENTS - 1 - k
        }
    }
    let answers = unary_callers(&server, CALLERS, EVENTS, |caller, k| {
        let n = event(caller, k);
        Survey {
            csat: Some(5),
            ..survey(
                &format!("race-{n}"),
                &format!("racer-{}", n % 7),
                T0 + n as i64,
            )
        }
    })
    .await;
    let mut sequence_of: HashMap<usize, u64> = HashMap::new();
    let mut accepted = HashMap::<usize, usize>::new();
    for (caller, answers) in answers.into_iter().enumerate() {
        for (k, (sequence, duplicate)) in answers.into_iter().enumerate() {
            let n = event(caller, k);
            let first = *sequence_of.entry(n).or_insert(sequence);
            assert_eq!(sequence, first, "event {n} answered with two sequences");
            if !duplicate {
                *accepted.entry(n).or_default() += 1;
            }
        }
    }
    assert_eq!(accepted.len(), EVENTS, "every event accepted once");
    assert!(accepted.values().all(|&count| count == 1), "{accepted:?}");
    let sequences: HashSet<u64> = sequence_of.values().copied().collect();
    assert_eq!(sequences, (1..=EVENTS as u64).collect::<HashSet<_>>());
    let all = server.scope("all", T0 + DAY).await;
    assert_eq!(all.response_count, EVENTS as u64);
    assert_eq!(all.customer_count, 7);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Persistence

#[tokio::test]
async fn scores_and_idempotency_survive_a_clean_restart() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let as_of = T0 + 40 * DAY;
    let server = TestServer::start_at(dir.path(), |_| {}).await;
    server
        .put_dimension(proto::Dimension {
            name: "delivery_speed".into(),
            standard_level: Some(5.0),
            ..proto::Dimension::default()
        })
        .await
        .expect("put dimension");
    let east = [("region", "east")];
    server
        .accept_survey(Survey {
            csat: Some(4),
            nps: Some(9),
            ratings: vec![rating("delivery_speed", 6, 4, Some(3))],
            ..survey_in("e1", "alice", T0, &east)
        })
        .await;
    server
        .accept_interaction(purchase("e2", "alice", T0 + DAY, 120.0))
        .await;
    server
        .accept_interaction(purchase("e3", "alice", T0 + 11 * DAY, 80.0))
        .await;
    server
        .accept_interaction(complaint(
            "e4",
            "bob",
            T0 + 2 * DAY,
            InteractionKind::ComplaintOpened,
            "case-1",
            Severity::Major,
        ))
        .await;
    let last = server
        .accept_survey(Survey {
            nps: Some(3),
            repurchase: Some(2),
            ..survey_in("e5", "bob", T0 + 3 * DAY, &east)
        })
        .await;
    assert_eq!(last, 5);

    let all = server.scope("all", as_of).await;
    let east_scope = server.scope("region=east", as_of).await;
    let alice = server.customer("alice", as_of).await;
    let bob = server.customer("bob", as_of).await;
    let scopes = server.all_scopes("").await;
    assert_eq!(all.event_count, 5);
    assert_eq!(bob.open_complaints, 1);
    server.stop().await;

    let server = TestServer::start_at(dir.path(), |_| {}).await;
    assert_eq!(server.scope("all", as_of).await, all);
    assert_eq!(server.scope("region=east", as_of).await, east_scope);
    assert_eq!(server.customer("alice", as_of).await, alice);
    assert_eq!(server.customer("bob", as_of).await, bob);
    assert_eq!(server.all_scopes("").await, scopes);
    assert!(server
        .dimension_names()
        .await
        .contains(&"delivery_speed".to_string()));
    // Duplicates are still recognised, with the original sequence.
    let r = server
        .record_survey(csat("e1", "alice", T0, 1))
        .await
        .expect("e1");
    assert_eq!((r.sequence, r.duplicate), (1, true));
    let r = server
        .record_interaction(purchase("e3", "alice", T0, 1.0))
        .await
        .expect("e3");
    assert_eq!((r.sequence, r.duplicate), (3, true));
    // The log continues after the last sequence.
    assert_eq!(server.accept_survey(csat("e6", "carol", T0, 5)).await, 6);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Health and reflection

#[tokio::test]
async fn health_reports_serving() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel.clone());
    // "" is the server as a whole.
    for service in [
        "",
        "gapwatch.v1.IngestService",
        "gapwatch.v1.ScoreService",
        "gapwatch.v1.ConfigService",
    ] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service}");
    }
    let status = health
        .check(HealthCheckRequest {
            service: "gapwatch.v1.NoSuchService".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await;
}

const EXPECTED_SERVICES: [&str; 4] = [
    "gapwatch.v1.ConfigService",
    "gapwatch.v1.IngestService",
    "gapwatch.v1.ScoreService",
    "grpc.health.v1.Health",
];

#[tokio::test]
async fn reflection_lists_the_services_on_v1_and_v1alpha() {
    let server = TestServer::start().await;

    use tonic_reflection::pb::v1 as r1;
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(r1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses =
        r1::server_reflection_client::ServerReflectionClient::new(server.channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1 reflection")
            .into_inner();
    let response = responses
        .message()
        .await
        .expect("v1 response")
        .expect("one response");
    let Some(r1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1 response {response:?}");
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in EXPECTED_SERVICES {
        assert!(names.contains(service), "v1 lists {names:?}");
    }

    use tonic_reflection::pb::v1alpha as ra;
    let request = ra::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(ra::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut responses =
        ra::server_reflection_client::ServerReflectionClient::new(server.channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1alpha reflection")
            .into_inner();
    let response = responses
        .message()
        .await
        .expect("v1alpha response")
        .expect("one response");
    let Some(ra::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1alpha response {response:?}");
    };
    let names: HashSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in EXPECTED_SERVICES {
        assert!(names.contains(service), "v1alpha lists {names:?}");
    }

    // The descriptors are served too: the file declaring IngestService.
    let request = r1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            r1::server_reflection_request::MessageRequest::FileContainingSymbol(
                "gapwatch.v1.IngestService".into(),
            ),
        ),
    };
    let mut responses =
        r1::server_reflection_client::ServerReflectionClient::new(server.channel.clone())
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .expect("v1 reflection")
            .into_inner();
    let response = responses
        .message()
        .await
        .expect("v1 response")
        .expect("one response");
    let Some(r1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        response.message_response
    else {
        panic!("unexpected v1 response {response:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    let declares = files.file_descriptor_proto.iter().any(|f| {
        f.windows(b"IngestService".len())
            .any(|w| w == b"IngestService")
    });
    assert!(declares, "no descriptor mentions IngestService");
    server.stop().await;
}

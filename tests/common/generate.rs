//! Strategies the property tests share for bad input.

use pbjson_types::Timestamp;
use proptest::prelude::*;

/// `valid` `odds` times out of `odds + 1`, otherwise `bad`: most generated
/// requests carry one or a few bad fields among valid ones, as a buggy
/// producer sends them, and many are wholly valid.
pub fn mostly<T: std::fmt::Debug + Clone + 'static>(
    odds: u32,
    valid: impl Strategy<Value = T> + 'static,
    bad: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    prop_oneof![odds => valid, 1 => bad].boxed()
}

/// Text no id or name may be: empty, over 128 bytes, with a control
/// character, or any printable Unicode (rarely a valid name).
pub fn bad_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{129,140}",
        "[a-z=]{200,400}",
        "[a-z]{0,4}[\\x00-\\x1f\\x7f][a-z]{0,4}",
        "\\PC{1,24}",
    ]
}

/// Timestamps no clock gives: any seconds and nanos, the extremes, and a
/// negative nano at `seconds`.
pub fn bad_timestamp(seconds: i64) -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
        Just(Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        }),
        Just(Timestamp {
            seconds: i64::MAX,
            nanos: 999_999_999,
        }),
        Just(Timestamp {
            seconds: i64::MIN,
            nanos: 0,
        }),
        Just(Timestamp { seconds, nanos: -1 }),
    ]
}

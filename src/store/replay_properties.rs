//! Damage to the write-ahead log, generated: a log of three commits cut
//! short at any byte, its tail zeroed from any byte (a file written over a
//! spare), or any one byte changed. In the newest file, a start must
//! restore exactly the commits whose records end before a cut or zeros
//! and nothing else: the damaged record is a write a crash interrupted,
//! never acknowledged; a changed byte with records after it is refused.
//! In an older file, only a clean end (at a record's end,
//! or zeros from there) is a file's end; anything else is refused, since
//! its records were acknowledged. Nothing panics, nothing half-applied is
//! read.

use proptest::prelude::*;

use super::tests::{
    dir_with_log, history, history_state, history_state_after, scope_batch, wal_files,
    without_checkpoints,
};
use super::{framed, wal, Store};

/// The log file holding the three commits (after what opening the store
/// wrote), and where each of its records ends.
fn written_log() -> (u64, Vec<u8>, Vec<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
    let pipelined = store.pipelined();
    for batch in history() {
        pipelined
            .commit_staged(pipelined.stage(batch), || ())
            .unwrap();
    }
    let generations = wal_files(dir.path());
    assert_eq!(generations.len(), 1, "one log file: {generations:?}");
    let log = std::fs::read(wal::path(&dir.path().join("wal"), generations[0])).unwrap();
    let mut ends = Vec::new();
    while let Some(record) = framed::read(&log, ends.last().copied().unwrap_or(0)) {
        ends.push(record.end);
    }
    assert_eq!(ends.last(), Some(&log.len()), "records only");
    assert!(ends.len() >= history().len());
    (generations[0], log, ends)
}

/// How many of the history's commits end at or before `changed`.
fn commits_intact(ends: &[usize], changed: usize) -> usize {
    let commits = &ends[ends.len() - history().len()..];
    commits.iter().filter(|&&end| end <= changed).count()
}

#[derive(Clone, Debug)]
enum Damage {
    /// The file ends at this byte.
    Cut(usize),
    /// Zeros from this byte on, the file's length kept.
    ZeroedFrom(usize),
    /// This byte XOR a non-zero mask.
    Flipped(usize, u8),
}

impl Damage {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match *self {
            Damage::Cut(at) => bytes.truncate(at),
            Damage::ZeroedFrom(at) => bytes[at..].fill(0),
            Damage::Flipped(at, mask) => bytes[at] ^= mask,
        }
    }
}

/// The first byte `damaged` does not have as `original` had it (zeroing
/// bytes that were zeros already changes nothing).
fn first_changed(original: &[u8], damaged: &[u8]) -> usize {
    original
        .iter()
        .zip(damaged)
        .position(|(a, b)| a != b)
        .unwrap_or(damaged.len())
}

/// Damage anywhere in a file of `len` bytes, often right at a record's
/// start (`starts`), where a cut or zeros are a clean end.
fn damage(len: usize, starts: Vec<usize>) -> impl Strategy<Value = Damage> {
    let at = prop_oneof![3 => 0..len, 1 => prop::sample::select(starts)];
    let mask = 1..=255u8;
    prop_oneof![
        at.clone().prop_map(Damage::Cut),
        at.clone().prop_map(Damage::ZeroedFrom),
        (at, mask).prop_map(|(at, mask)| Damage::Flipped(at, mask)),
    ]
}

/// Where each record of the log starts.
fn starts(ends: &[usize]) -> Vec<usize> {
    std::iter::once(0)
        .chain(ends[..ends.len() - 1].iter().copied())
        .collect()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

#[test]
fn a_damaged_newest_log_file_restores_the_commits_before_the_damage() {
    let (generation, log, ends) = written_log();
    let starts = starts(&ends);
    proptest!(config(), |(damage in damage(log.len(), starts.clone()))| {
        let mut bytes = log.clone();
        damage.apply(&mut bytes);
        let changed = first_changed(&log, &bytes);
        let intact = commits_intact(&ends, changed);
        // The record the damage is in, counting from the first.
        let damaged = ends.iter().filter(|&&end| end <= changed).count();
        let not_last = damaged + 1 < ends.len();
        // A changed byte inside a record that is not the last: no crash
        // does that, and acknowledged commits follow it. Refused, unless
        // the byte is in the record's length (then where the next record
        // starts is unknown, and it reads as a cut).
        let corrupted = match damage {
            Damage::Flipped(at, _) if not_last => at - starts[damaged] >= 4,
            _ => false,
        };
        let dir = dir_with_log(&[(generation, bytes.clone())]);
        match Store::open(dir.path(), &without_checkpoints()) {
            Ok(store) => {
                prop_assert!(!corrupted, "{:?}: the commits after it were dropped", damage);
                prop_assert_eq!(
                    history_state(&store),
                    history_state_after(intact),
                    "{:?}: {} commits intact",
                    damage,
                    intact
                );
            }
            Err(e) => {
                let in_length = matches!(damage, Damage::Flipped(..)) && not_last;
                prop_assert!(corrupted || in_length, "{:?}: refused: {}", damage, e);
                prop_assert!(e.to_string().contains("write-ahead log"), "{}", e);
            }
        }
    });
}

#[test]
fn an_older_log_file_ends_only_cleanly_and_is_refused_otherwise() {
    let (generation, log, ends) = written_log();
    // A newer generation with one more commit: "all" at 9 customers.
    let mut newer = Vec::new();
    wal::record_into(&scope_batch("all", 9).writes, &mut newer);
    proptest!(config(), |(damage in damage(log.len(), starts(&ends)))| {
        let mut bytes = log.clone();
        damage.apply(&mut bytes);
        let changed = first_changed(&log, &bytes);
        let intact = commits_intact(&ends, changed);
        // Records, then nothing or zeros: a file that ends cleanly.
        let clean_end = bytes == log
            || ((changed == 0 || ends.contains(&changed))
                && !matches!(damage, Damage::Flipped(..)));
        let dir = dir_with_log(&[(generation, bytes), (generation + 1, newer.clone())]);
        match Store::open(dir.path(), &without_checkpoints()) {
            Ok(store) => {
                prop_assert!(clean_end, "{:?}: damage in an older file accepted", damage);
                let (_, gone, alice) = history_state_after(intact);
                prop_assert_eq!(history_state(&store), (Some(9), gone, alice), "{:?}", damage);
            }
            Err(e) => {
                prop_assert!(!clean_end, "{:?}: a clean end refused: {}", damage, e);
                prop_assert!(e.to_string().contains("write-ahead log"), "{}", e);
            }
        }
    });
}

use super::*;
use crate::domain::{Body, Survey};

fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        customer: "c".into(),
        at: 0,
        attributes: Vec::new(),
        body: Body::Survey(Survey {
            csat: Some(4),
            ..Survey::default()
        }),
    }
}

pub(super) fn options() -> StoreOptions {
    StoreOptions {
        cache_capacity: 1 << 20,
        half_life_ms: crate::scoring::Params::default().half_life_ms(),
        sync_to_device: true,
        checkpoint_interval: Duration::from_secs(1),
    }
}

pub(super) fn scope_batch(name: &str, customers: u64) -> WriteBatch {
    let mut state = ScopeState::default();
    for _ in 0..customers {
        state.add_customer();
    }
    let mut batch = WriteBatch::default();
    batch.put_scope(name, &state).unwrap();
    batch
}

fn record_with_churn_alert(alert: u64) -> CustomerRecord {
    let mut record = CustomerRecord {
        churn_alert: Some(alert),
        ..CustomerRecord::default()
    };
    record.ids.remember(RecentIds::digest("e-1"), 1, 10);
    record
}

fn customers_of(store: &Store, name: &str) -> Option<u64> {
    store.scope(name).unwrap().map(|s| s.customer_count())
}

#[test]
fn staged_writes_are_read_by_the_pipelined_handle_only_until_committed() {
    let dir = tempfile::tempdir().unwrap();
    let committed = Store::open(dir.path(), &options()).unwrap();
    let pipelined = committed.pipelined();
    let first = pipelined.stage(scope_batch("all", 1));
    let second = pipelined.stage(scope_batch("all", 2));
    assert_eq!(customers_of(&pipelined, "all"), Some(2), "latest staged");
    assert_eq!(customers_of(&committed, "all"), None, "nothing committed");

    pipelined.commit_staged(first, || ()).unwrap();
    assert_eq!(customers_of(&committed, "all"), Some(1));
    // The second batch's write is still the one the writer must see.
    assert_eq!(customers_of(&pipelined, "all"), Some(2));
    pipelined.commit_staged(second, || ()).unwrap();
    assert_eq!(customers_of(&committed, "all"), Some(2));
    assert!(pipelined.staged.as_ref().unwrap().lock().is_empty());
}

#[test]
fn a_commit_is_read_by_every_handle_from_its_answer_on() {
    let dir = tempfile::tempdir().unwrap();
    let public = Store::open(dir.path(), &options()).unwrap();
    let pipelined = public.pipelined();
    let mut batch = scope_batch("brand=acme", 3);
    batch.put_events(1, vec![event("e-1")]);
    batch.put_attribute_values("brand", 1).unwrap();
    let attribute_key = keys::with_prefix(keys::ATTRIBUTE_KEY, "brand");
    let staged = pipelined.stage(batch);
    let mut listing = None;
    pipelined
        .commit_staged(staged, || {
            // Answered, not applied yet: sled lacks the writes (the
            // scope, a hot key, until a checkpoint or a listing).
            assert!(public.tree.get(&attribute_key).unwrap().is_none());
            assert_eq!(public.attribute_values("brand").unwrap(), 1);
            let key = keys::with_prefix(keys::SCOPE, "brand=acme");
            assert!(public.tree.get(key).unwrap().is_none());
            assert_eq!(customers_of(&public, "brand=acme"), Some(3));
            // A range read waits for the apply (on another thread:
            // this one applies once the answer returns).
            let reader = public.clone();
            listing = Some(std::thread::spawn(move || {
                let scopes = reader.scopes("brand=", None, 10).unwrap();
                (scopes.len(), reader.last_sequence().unwrap())
            }));
        })
        .unwrap();
    let (scopes, last_sequence) = listing.unwrap().join().unwrap();
    assert_eq!((scopes, last_sequence), (1, 1));
    // Applied: read from sled, no longer held.
    assert_eq!(public.applying.get(&attribute_key), None);
    assert_eq!(public.attribute_values("brand").unwrap(), 1);
    assert_eq!(customers_of(&public, "brand=acme"), Some(3));
}

#[test]
fn scope_states_reach_sled_at_checkpoints_and_listings_and_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let key = keys::with_prefix(keys::SCOPE, "region=west");
    {
        let public = Store::open(dir.path(), &without_checkpoints()).unwrap();
        let pipelined = public.pipelined();
        let staged = pipelined.stage(scope_batch("region=west", 2));
        pipelined.commit_staged(staged, || ()).unwrap();
        assert!(public.tree.get(&key).unwrap().is_none(), "held back");
        assert_eq!(customers_of(&public, "region=west"), Some(2));
        assert_eq!(customers_of(&pipelined, "region=west"), Some(2));
        // A listing writes them first.
        assert_eq!(public.scopes("region=", None, 10).unwrap().len(), 1);
        assert!(public.tree.get(&key).unwrap().is_some());

        let staged = pipelined.stage(scope_batch("region=west", 5));
        pipelined.commit_staged(staged, || ()).unwrap();
        // Dropped without a checkpoint: a crash, as far as sled knows.
    }
    {
        let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
        assert_eq!(customers_of(&store, "region=west"), Some(5), "replayed");
        let pipelined = store.pipelined();
        let staged = pipelined.stage(scope_batch("region=west", 7));
        pipelined.commit_staged(staged, || ()).unwrap();
        store.close_wal().unwrap();
        assert_eq!(store.wal_pending_bytes(), 0, "checkpointed");
    }
    let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
    let stored = store.tree.get(&key).unwrap().expect("in sled");
    let state: ScopeState = codec::decode_versioned(codec::SCOPE_VERSION, &stored).unwrap();
    assert_eq!(state.customer_count(), 7, "written before the checkpoint");
}

#[test]
fn a_commits_writes_reach_sled_with_the_last_write_of_a_key_winning() {
    let dir = tempfile::tempdir().unwrap();
    let public = Store::open(dir.path(), &options()).unwrap();
    let pipelined = public.pipelined();
    // Small (applied after the answer) and large (before it): the key
    // `b` is written 50 times among keys on both sides of it.
    for writes_per_key in [1, ANSWER_BEFORE_APPLY_MAX_WRITES / 40] {
        let mut batch = WriteBatch::default();
        for n in 1..=50 {
            for other in ["c", "a"].into_iter().cycle().take(2 * writes_per_key) {
                batch.put_attribute_values(other, n).unwrap();
            }
            batch.put_attribute_values("b", n).unwrap();
        }
        pipelined
            .commit_staged(pipelined.stage(batch), || ())
            .unwrap();
        for key in ["a", "b", "c"] {
            let stored = public
                .tree
                .get(keys::with_prefix(keys::ATTRIBUTE_KEY, key))
                .unwrap()
                .map(|v| codec::decode::<u64>(&v).unwrap());
            assert_eq!(stored, Some(50), "{key} after {writes_per_key} per key");
        }
    }
}

#[test]
fn a_large_commit_is_applied_before_it_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let public = Store::open(dir.path(), &options()).unwrap();
    let pipelined = public.pipelined();
    let mut batch = WriteBatch::default();
    for n in 0..=ANSWER_BEFORE_APPLY_MAX_WRITES {
        batch.put_attribute_values(&format!("key-{n}"), 1).unwrap();
    }
    let mut answered = false;
    pipelined
        .commit_staged(pipelined.stage(batch), || {
            let key = keys::with_prefix(keys::ATTRIBUTE_KEY, "key-0");
            assert!(public.tree.get(key).unwrap().is_some());
            answered = true;
        })
        .unwrap();
    assert!(answered);
    assert_eq!(public.attribute_values("key-2048").unwrap(), 1);

    // Its hot keys wait for the checkpoint, readable meanwhile.
    let mut batch = scope_batch("region=north", 3);
    for n in 0..=ANSWER_BEFORE_APPLY_MAX_WRITES {
        batch
            .put_attribute_values(&format!("other-{n}"), 1)
            .unwrap();
    }
    pipelined
        .commit_staged(pipelined.stage(batch), || ())
        .unwrap();
    let key = keys::with_prefix(keys::SCOPE, "region=north");
    assert_eq!(public.tree.get(&key).unwrap(), None, "held");
    assert_eq!(customers_of(&public, "region=north"), Some(3));
    public.close_wal().unwrap();
    assert!(public.tree.get(&key).unwrap().is_some(), "checkpointed");
}

#[test]
fn a_large_commits_held_hot_keys_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let large = |customers| {
        let mut batch = scope_batch("region=south", customers);
        for n in 0..=ANSWER_BEFORE_APPLY_MAX_WRITES {
            batch.put_attribute_values(&format!("key-{n}"), 1).unwrap();
        }
        batch
    };
    {
        let public = Store::open(dir.path(), &without_checkpoints()).unwrap();
        let pipelined = public.pipelined();
        pipelined
            .commit_staged(pipelined.stage(large(4)), || ())
            .unwrap();
        let key = keys::with_prefix(keys::SCOPE, "region=south");
        assert_eq!(public.tree.get(&key).unwrap(), None, "held");
        // Dropped without a checkpoint: a crash, as far as sled knows.
    }
    let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
    assert_eq!(customers_of(&store, "region=south"), Some(4), "replayed");
    assert_eq!(store.attribute_values("key-2048").unwrap(), 1);
}

/// Options under which nothing is checkpointed before a close.
pub(super) fn without_checkpoints() -> StoreOptions {
    StoreOptions {
        checkpoint_interval: Duration::from_secs(3_600),
        ..options()
    }
}

pub(super) fn wal_files(dir: &Path) -> Vec<u64> {
    wal::generations(&dir.join("wal"))
        .unwrap()
        .into_iter()
        .map(|(generation, _)| generation)
        .collect()
}

/// Three commits: "gone"; then "gone" deleted, "all" (1 customer) and
/// alice written; then "all" (3).
pub(super) fn history() -> Vec<WriteBatch> {
    let mut second = scope_batch("all", 1);
    second.delete(keys::with_prefix(keys::SCOPE, "gone"));
    second.put_customer("alice", Arc::new(record_with_churn_alert(7)));
    vec![scope_batch("gone", 1), second, scope_batch("all", 3)]
}

fn commit_a_history(store: &Store) {
    for batch in history() {
        store.commit_staged(store.stage(batch), || ()).unwrap();
    }
}

fn assert_history(store: &Store) {
    assert_eq!(customers_of(store, "all"), Some(3), "applied in order");
    let alice = store.customer_record("alice").unwrap().expect("replayed");
    assert_eq!(alice, record_with_churn_alert(7), "records are logged");
    assert_eq!(customers_of(store, "gone"), None, "deletes replayed");
}

/// What a store holds after the first `commits` of [`history`]: the
/// customers of "all" and of "gone", and whether alice is there.
pub(super) fn history_state(store: &Store) -> (Option<u64>, Option<u64>, bool) {
    let alice = store.customer_record("alice").unwrap();
    if let Some(alice) = &alice {
        assert_eq!(alice, &record_with_churn_alert(7));
    }
    (
        customers_of(store, "all"),
        customers_of(store, "gone"),
        alice.is_some(),
    )
}

/// [`history_state`] after its first `commits` commits.
pub(super) fn history_state_after(commits: usize) -> (Option<u64>, Option<u64>, bool) {
    match commits {
        0 => (None, None, false),
        1 => (None, Some(1), false),
        2 => (Some(1), None, true),
        _ => (Some(3), None, true),
    }
}

#[test]
fn the_write_ahead_log_alone_restores_every_commit() {
    let written = tempfile::tempdir().unwrap();
    let store = Store::open(written.path(), &without_checkpoints()).unwrap();
    commit_a_history(&store.pipelined());
    assert!(store.wal_pending_bytes() > 0);
    let crashed = dir_with_log(&log_copy(written.path()));
    let restored = Store::open(crashed.path(), &without_checkpoints()).unwrap();
    assert_history(&restored);
    // The start handed the replayed files to the checkpoint thread;
    // a close waits for it.
    restored.close_wal().unwrap();
    assert_eq!(restored.wal_pending_bytes(), 0, "replayed, checkpointed");
    let generation = wal_files(crashed.path());
    assert_eq!(generation.len(), 1, "one new, empty file: {generation:?}");
}

/// The log files of `dir`, by generation, with their bytes.
fn log_copy(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    wal_files(dir)
        .into_iter()
        .map(|g| (g, std::fs::read(wal::path(&dir.join("wal"), g)).unwrap()))
        .collect()
}

/// A data dir whose sled never saw anything: only these log files.
pub(super) fn dir_with_log(files: &[(u64, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("wal")).unwrap();
    for (generation, bytes) in files {
        std::fs::write(wal::path(&dir.path().join("wal"), *generation), bytes).unwrap();
    }
    dir
}

#[test]
fn a_crash_before_a_replay_is_checkpointed_replays_it_again_then_the_commits_after_it() {
    let written = tempfile::tempdir().unwrap();
    let store = Store::open(written.path(), &without_checkpoints()).unwrap();
    commit_a_history(&store.pipelined());
    let history = log_copy(written.path());
    let crashed = dir_with_log(&history);
    let after_replay = {
        let store = Store::open(crashed.path(), &without_checkpoints()).unwrap();
        store.commit(scope_batch("all", 9)).unwrap();
        // The generation this commit went to, whatever the checkpoint
        // of the replayed ones has done by now.
        let newest = *wal_files(crashed.path()).last().unwrap();
        let bytes = std::fs::read(wal::path(&crashed.path().join("wal"), newest)).unwrap();
        assert!(!bytes.is_empty());
        (newest, bytes)
    };
    assert!(
        history.iter().all(|(g, _)| *g < after_replay.0),
        "a start's commits go to a newer generation than it replayed"
    );
    // The worst crash: sled kept nothing, every file is left.
    let mut files = history;
    files.push(after_replay);
    let store = Store::open(dir_with_log(&files).path(), &without_checkpoints()).unwrap();
    assert_eq!(
        customers_of(&store, "all"),
        Some(9),
        "the later commit last"
    );
    let alice = store.customer_record("alice").unwrap().expect("replayed");
    assert_eq!(alice, record_with_churn_alert(7));
    assert_eq!(customers_of(&store, "gone"), None);
}

#[test]
fn a_record_cut_short_ends_the_replay_and_damage_before_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = without_checkpoints();
    let newest = {
        let store = Store::open(dir.path(), &options).unwrap().pipelined();
        commit_a_history(&store);
        let newest = *wal_files(dir.path()).last().unwrap();
        wal::path(&dir.path().join("wal"), newest)
    };
    // A commit cut short after the history: never acknowledged.
    let mut cut = Vec::new();
    let writes = [(keys::with_prefix(keys::SCOPE, "all").into(), None)];
    wal::record_into(&writes, &mut cut);
    cut.truncate(cut.len() - 1);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    std::io::Write::write_all(&mut file, &cut).unwrap();
    drop(file);
    let history = std::fs::read(&newest).unwrap();
    {
        let store = Store::open(dir.path(), &options).unwrap();
        assert_history(&store);
    }
    // The same bytes in an older generation, before a newer one: damage.
    std::fs::write(wal::path(&dir.path().join("wal"), 1), &history).unwrap();
    let refused = Store::open(dir.path(), &options).err().expect("refused");
    assert!(refused.to_string().contains("write-ahead log"), "{refused}");
}

#[test]
fn checkpoints_empty_the_log_and_a_clean_close_leaves_nothing_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    {
        let every_commit = StoreOptions {
            checkpoint_interval: Duration::ZERO,
            ..options()
        };
        let store = Store::open(dir.path(), &every_commit).unwrap().pipelined();
        for n in 1..=5 {
            store
                .commit_staged(store.stage(scope_batch("all", n)), || ())
                .unwrap();
        }
        // A commit hands its generation over when the last is done.
        assert!(
            wal_files(dir.path()).len() <= 3,
            "{:?}",
            wal_files(dir.path())
        );
        store.close_wal().unwrap();
        assert_eq!(store.wal_pending_bytes(), 0, "nothing to replay");
        assert_eq!(wal_files(dir.path()).len(), 1, "the empty active file");
    }
    {
        let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
        assert_eq!(customers_of(&store, "all"), Some(5), "every commit kept");
        // Commits after a close are logged as before.
        store.commit(scope_batch("all", 6)).unwrap();
        assert!(store.wal_pending_bytes() > 0);
        store.close_wal().unwrap();
        assert_eq!(store.wal_pending_bytes(), 0);
    }
    let store = Store::open(dir.path(), &options()).unwrap();
    assert_eq!(customers_of(&store, "all"), Some(6));
}

#[test]
fn entries_a_crash_left_in_the_journal_of_an_earlier_build_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &options()).unwrap();
        store.commit(scope_batch("gone", 1)).unwrap();
        store.close_wal().unwrap();
        // What the earlier build left: two entries, never applied.
        let mut first = scope_batch("all", 1);
        first.delete(keys::with_prefix(keys::SCOPE, "gone"));
        first.put_customer("alice", Arc::new(record_with_churn_alert(7)));
        let journal = store.db.open_tree("journal").unwrap();
        for (number, mut batch) in [(8, first), (9, scope_batch("all", 3))] {
            let mut writes = std::mem::take(&mut batch.writes);
            batch
                .deferred
                .encode(&mut writes, &mut batch.scratch)
                .unwrap();
            let entry = journal::encode(&writes);
            journal
                .insert(keys::numbered(keys::JOURNAL, number), entry)
                .unwrap();
        }
        store.flusher.flush().unwrap();
    }
    let store = Store::open(dir.path(), &options()).unwrap();
    assert_history(&store);
    assert!(store.db.open_tree("journal").unwrap().is_empty(), "removed");
}

#[test]
fn a_held_folder_is_refused_and_a_released_one_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path(), &options()).unwrap();
    let refused = Store::open(dir.path(), &options()).err().expect("locked");
    assert!(refused.to_string().contains("lock"), "{refused}");

    // Released while the second open waits: it succeeds.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first);
    });
    Store::open(dir.path(), &options()).expect("opened once released");
    release.join().unwrap();
}

#[test]
fn event_log_chunks_answer_by_sequence_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let options = options();
    {
        let store = Store::open(dir.path(), &options).unwrap();
        assert_eq!(store.last_sequence().unwrap(), 0);
        assert_eq!(store.event(1).unwrap(), None);
        // Two commits: sequences 1..=3, then 4..=5.
        for (first, ids) in [(1, vec!["a", "b", "c"]), (4, vec!["d", "e"])] {
            let mut batch = WriteBatch::default();
            let events: Vec<Event> = ids.iter().map(|id| event(id)).collect();
            batch.put_events(first, events);
            store.commit(batch).unwrap();
        }
    }
    let store = Store::open(dir.path(), &options).unwrap();
    assert_eq!(store.last_sequence().unwrap(), 5);
    for (seq, id) in [(1, "a"), (3, "c"), (4, "d"), (5, "e")] {
        assert_eq!(store.event(seq).unwrap().unwrap().id, id);
    }
    assert_eq!(store.event(6).unwrap(), None);
}

fn events_file_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("events"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn event_chunks_live_in_the_event_files_and_sled_keeps_where() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &without_checkpoints())
            .unwrap()
            .pipelined();
        let mut batch = WriteBatch::default();
        batch.put_events(1, vec![event("a"), event("b")]);
        store.commit_staged(store.stage(batch), || ()).unwrap();
        let stored = store.tree.get(keys::event(1)).unwrap().unwrap();
        assert_eq!(stored[0], codec::EVENT_REF_VERSION, "a reference");
        assert!(stored.len() < 40, "{} bytes in sled", stored.len());
        assert!(events_file_bytes(dir.path()) > 0);
    }
    let appended = events_file_bytes(dir.path());
    {
        // Replayed with its bytes intact: not appended again.
        let store = Store::open(dir.path(), &without_checkpoints()).unwrap();
        assert_eq!(events_file_bytes(dir.path()), appended, "no duplicate");
        assert_eq!(store.event(2).unwrap().unwrap().id, "b");
        assert_eq!(store.last_sequence().unwrap(), 2);
        // A chunk whose bytes were lost, its log record still there.
        let mut batch = WriteBatch::default();
        batch.put_events(3, vec![event("c")]);
        store.commit(batch).unwrap();
    }
    let file = std::fs::read_dir(dir.path().join("events"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(appended)
        .unwrap();
    let store = Store::open(dir.path(), &options()).unwrap();
    assert_eq!(store.event(3).unwrap().unwrap().id, "c", "appended again");
    assert_eq!(store.event(1).unwrap().unwrap().id, "a");
    assert_eq!(store.last_sequence().unwrap(), 3);
}

#[test]
fn event_chunks_earlier_builds_kept_in_sled_are_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &options()).unwrap();
    // The chunk itself in sled, as earlier builds wrote it.
    let old = codec::encode(&vec![event("old-1"), event("old-2")]).unwrap();
    store.tree.insert(keys::event(1), old).unwrap();
    let mut batch = WriteBatch::default();
    batch.put_events(3, vec![event("new-3")]);
    store.commit(batch).unwrap();
    assert_eq!(store.event(2).unwrap().unwrap().id, "old-2");
    assert_eq!(store.event(3).unwrap().unwrap().id, "new-3");
    assert_eq!(store.last_sequence().unwrap(), 3);
    drop(store);
    let store = Store::open(dir.path(), &options()).unwrap();
    assert_eq!(store.last_sequence().unwrap(), 3);
}

#[test]
fn scope_states_of_schema_version_2_are_converted_at_open() {
    let h = options().half_life_ms;
    let mut current = ScopeState::default();
    current.add_customer();
    let legacy = |deadline| LegacyScopeState::with_open_cases(&current, &[(deadline, 46.0, 0)], h);
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &options()).unwrap().pipelined();
        let mut batch = WriteBatch::default();
        batch
            .put(keys::with_prefix(keys::SCOPE, "all"), &legacy(60_001))
            .unwrap();
        store.commit(batch).unwrap();
        // One more only in an earlier build's journal, as a crash
        // would leave it.
        let mut batch = WriteBatch::default();
        batch
            .put(keys::with_prefix(keys::SCOPE, "north"), &legacy(1))
            .unwrap();
        let journal = store.db.open_tree("journal").unwrap();
        let entry = journal::encode(&batch.writes);
        journal
            .insert(keys::numbered(keys::JOURNAL, 1), entry)
            .unwrap();
        store.flusher.flush().unwrap();
        // This build refuses to read the old layout as the new one.
        assert!(matches!(
            store.scope("all"),
            Err(StoreError::Schema {
                found: 2,
                expected: 3
            })
        ));
    }
    let store = Store::open(dir.path(), &options()).unwrap();
    for (name, deadline) in [("all", 60_001), ("north", 1)] {
        let state = store.scope(name).unwrap().expect("converted");
        assert_eq!(state, legacy(deadline).into_current(h), "{name}");
        assert_eq!(state.customer_count(), 1);
        let raw = store.tree.get(keys::with_prefix(keys::SCOPE, name));
        assert_eq!(raw.unwrap().unwrap()[0], codec::SCOPE_VERSION);
    }
}

#[test]
fn with_sync_to_device_every_blob_sled_wrote_is_synced_by_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = || -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir.path().join("blobs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let store = Store::open(dir.path(), &without_checkpoints())
        .unwrap()
        .pipelined();
    let sync = || {
        let sync = store.flusher.device_sync().expect("on in these options");
        sync.synced_blobs()
            .into_keys()
            .collect::<std::collections::BTreeSet<_>>()
    };
    for n in 0..3u64 {
        let before = blobs();
        let mut batch = scope_batch("all", n + 1);
        // A value of 300 KiB: over sled's 128 KiB blob limit.
        let big = vec![n as u8; 300 * 1024];
        batch
            .put(keys::with_prefix(keys::ATTRIBUTE_KEY, "big"), &big)
            .unwrap();
        store.commit_staged(store.stage(batch), || ()).unwrap();
        let written = blobs();
        assert!(written.difference(&before).next().is_some(), "a new blob");
        store.close_wal().unwrap();
        let synced = sync();
        assert!(
            written.is_subset(&synced),
            "unsynced blobs after checkpoint {n}: {written:?} against {synced:?}"
        );
    }
    let off = StoreOptions {
        sync_to_device: false,
        ..options()
    };
    drop(store);
    let store = Store::open(dir.path(), &off).unwrap();
    assert!(store.flusher.device_sync().is_none());
}

#[test]
fn the_id_index_of_earlier_builds_is_read_where_one_exists() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), &options()).unwrap();
        assert!(!store.legacy_ids);
        let mut batch = WriteBatch::default();
        batch.put_legacy_event_id("old-1", 3).unwrap();
        store.commit(batch).unwrap();
        // Noticed at open only: this handle does not look.
        assert_eq!(store.legacy_event_sequence("old-1").unwrap(), None);
    }
    let store = Store::open(dir.path(), &options()).unwrap();
    assert!(store.legacy_ids);
    assert_eq!(store.legacy_event_sequence("old-1").unwrap(), Some(3));
    assert_eq!(store.legacy_event_sequence("old-2").unwrap(), None);
}

#[test]
fn open_alerts_are_read_from_meta_or_counted_from_an_earlier_builds_index() {
    use crate::domain::alert::{AlertKind, OpenAlerts};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &options()).unwrap();
    assert_eq!(store.open_alerts().unwrap(), OpenAlerts::default());
    // What earlier builds wrote: one `O` key per open alert.
    let mut batch = WriteBatch::default();
    for (id, kind) in [
        (1, AlertKind::ChurnRisk),
        (4, AlertKind::ChurnRisk),
        (9, AlertKind::GapWidening),
    ] {
        batch
            .put(keys::numbered(keys::OPEN_ALERT, id).to_vec(), &kind)
            .unwrap();
    }
    store.commit(batch).unwrap();
    let counted = store.open_alerts().unwrap();
    assert_eq!(counted.count(AlertKind::ChurnRisk), 2);
    assert_eq!(counted.count(AlertKind::GapWidening), 1);
    // Once a commit keeps the count, the stale index is not read.
    let mut kept = OpenAlerts::default();
    kept.open(AlertKind::LoyaltyDrop);
    let mut batch = WriteBatch::default();
    batch.put_open_alerts(&kept).unwrap();
    store.commit(batch).unwrap();
    assert_eq!(store.open_alerts().unwrap(), kept);
}

//! Commits that are durable (their write-ahead log record is synced) and
//! answered, but whose writes sled has not applied yet.
//!
//! A commit is answered as soon as its record is synced, before its writes
//! reach sled, which saves callers the apply (a third of a unary commit).
//! Acknowledged events must still be visible to every read that follows
//! the answer, so until the apply is done:
//! - point reads find the commit's writes here, before sled;
//! - range reads (listings, the event and alert logs) wait for the applies
//!   published before they started ([`Applying::settle`]), at most one
//!   commit's apply.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard};

use super::journal::Writes;

/// Looked up on point reads: foldhash, seeded (keys are callers' ids).
type Latest = HashMap<sled::IVec, (u64, Option<sled::IVec>), foldhash::quality::RandomState>;

#[derive(Default)]
pub(super) struct Applying {
    /// The latest durable value (`None`: removed) of each key not applied
    /// yet, and the ticket of the commit that wrote it.
    latest: Mutex<Latest>,
    progress: Mutex<Progress>,
    done: Condvar,
}

/// Tickets are handed out in commit order; commits are applied in the same
/// order, by one thread.
#[derive(Default)]
struct Progress {
    published: u64,
    applied: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is one call that does not panic halfway: a poisoned
    // lock still guards a consistent value.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Applying {
    /// Makes a durable commit's writes readable before it is answered.
    /// The commit counts as applied once the returned guard is done with,
    /// or dropped (a panic on the way), so a range read never waits for an
    /// apply that will not come.
    pub(super) fn publish<'a>(&'a self, writes: &'a Writes) -> Published<'a> {
        let mut latest = lock(&self.latest);
        let ticket = {
            let mut progress = lock(&self.progress);
            progress.published += 1;
            progress.published
        };
        for (key, value) in writes {
            latest.insert(key.clone(), (ticket, value.clone()));
        }
        Published {
            applying: self,
            writes,
            ticket,
            in_sled: false,
        }
    }

    /// The commit with `ticket` is in sled. Its writes are read from sled
    /// from now on, unless sled may lack some of them (`in_sled` false: the
    /// apply failed, the engine refuses all work, and the next start
    /// replays the log); waiting range reads go on either way.
    fn applied(&self, ticket: u64, writes: &Writes, in_sled: bool) {
        if in_sled {
            let mut latest = lock(&self.latest);
            for (key, _) in writes {
                // A later commit may have written the key again.
                if latest.get(key).is_some_and(|(t, _)| *t == ticket) {
                    latest.remove(key);
                }
            }
        }
        lock(&self.progress).applied = ticket;
        self.done.notify_all();
    }

    /// The latest durable value of `key` when sled may not have it yet:
    /// `Some(None)` if it was removed.
    pub(super) fn get(&self, key: &[u8]) -> Option<Option<sled::IVec>> {
        lock(&self.latest).get(key).map(|(_, value)| value.clone())
    }

    /// Waits until every commit published so far is in sled, so that a
    /// range read sees every acknowledged write.
    pub(super) fn settle(&self) {
        let mut progress = lock(&self.progress);
        let target = progress.published;
        while progress.applied < target {
            progress = self.done.wait(progress).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A published commit, until its apply is over.
pub(super) struct Published<'a> {
    applying: &'a Applying,
    writes: &'a Writes,
    ticket: u64,
    in_sled: bool,
}

impl Published<'_> {
    /// The apply is over: `in_sled` tells whether sled has every write.
    pub(super) fn applied(mut self, in_sled: bool) {
        self.in_sled = in_sled;
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        self.applying
            .applied(self.ticket, self.writes, self.in_sled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn put(key: &str, value: &str) -> (sled::IVec, Option<sled::IVec>) {
        (key.as_bytes().into(), Some(value.as_bytes().into()))
    }

    #[test]
    fn a_key_is_read_here_until_the_commit_that_last_wrote_it_is_applied() {
        let applying = Applying::default();
        let first = vec![put("a", "1"), put("b", "1")];
        let second = vec![put("b", "2"), (sled::IVec::from("c"), None)];
        let p1 = applying.publish(&first);
        let p2 = applying.publish(&second);
        assert_eq!(applying.get(b"a"), Some(Some("1".into())));
        assert_eq!(applying.get(b"b"), Some(Some("2".into())));
        assert_eq!(applying.get(b"c"), Some(None));
        assert_eq!(applying.get(b"d"), None);

        p1.applied(true);
        assert_eq!(applying.get(b"a"), None, "applied: read from sled");
        assert_eq!(
            applying.get(b"b"),
            Some(Some("2".into())),
            "rewritten later"
        );

        p2.applied(false);
        assert_eq!(
            applying.get(b"b"),
            Some(Some("2".into())),
            "a failed apply leaves the durable values readable"
        );
    }

    #[test]
    fn a_range_read_waits_for_the_applies_published_before_it() {
        let applying = Arc::new(Applying::default());
        applying.settle(); // nothing published: returns at once
        let writes = vec![put("a", "1")];
        let published = applying.publish(&writes);
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = {
            let applying = applying.clone();
            std::thread::spawn(move || {
                applying.settle();
                tx.send(()).unwrap();
            })
        };
        // Not a timing assertion: the reader cannot return before the
        // apply below, however long it is given.
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        published.applied(true);
        rx.recv().unwrap();
        reader.join().unwrap();
    }

    #[test]
    fn a_commit_dropped_unapplied_releases_range_reads_and_stays_readable() {
        let applying = Applying::default();
        let writes = vec![put("a", "1")];
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _published = applying.publish(&writes);
            panic!("the apply panicked");
        }));
        assert!(outcome.is_err());
        applying.settle(); // returns: the commit counts as over
        assert_eq!(applying.get(b"a"), Some(Some("1".into())));
    }
}

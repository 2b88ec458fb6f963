//! The second stage of the writer's pipeline. The writer stages a group
//! commit (its own reads see it at once) and hands it here; this thread
//! makes it durable (a write-ahead log record: see `store::wal`), then
//! publishes its alert transitions and answers its callers, then applies
//! its keys to sled. Meanwhile the writer builds the next commit. Stages
//! arrive and complete in order, so answers leave in the order the writer
//! made them, and a duplicate of an event still in flight is answered only
//! after that event is durable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::oneshot;

use super::{AlertFeed, Dimensions, Outcome};
use crate::domain::alert::{Alert, OpenAlerts};
use crate::domain::DimensionSpec;
use crate::error::{Error, Result};
use crate::store::{EntityCounts, StagedBatch, Store};

/// An answer owed to a caller once its commit is durable.
pub(super) enum Reply {
    /// The sender, the outcomes, and how many events were sent.
    Ingest(oneshot::Sender<Vec<Outcome>>, Vec<Outcome>, usize),
    Dimension(oneshot::Sender<Result<()>>, DimensionSpec),
    Acknowledge(oneshot::Sender<Result<Alert>>, Result<Alert>),
}

impl Reply {
    /// Answers with the commit's outcome.
    fn send(self, dimensions: &Dimensions) {
        match self {
            Reply::Ingest(tx, outcomes, _) => {
                let _ = tx.send(outcomes);
            }
            Reply::Dimension(tx, spec) => {
                dimensions.insert(spec);
                let _ = tx.send(Ok(()));
            }
            Reply::Acknowledge(tx, outcome) => {
                let _ = tx.send(outcome);
            }
        }
    }

    /// Answers UNAVAILABLE: nothing of the commit was made durable.
    pub(super) fn fail(self, reason: &str) {
        match self {
            Reply::Ingest(tx, _, count) => {
                let _ = tx.send(unavailable(count, reason));
            }
            Reply::Dimension(tx, _) => {
                let _ = tx.send(Err(Error::Unavailable(reason.to_string())));
            }
            Reply::Acknowledge(tx, _) => {
                let _ = tx.send(Err(Error::Unavailable(reason.to_string())));
            }
        }
    }
}

fn unavailable(count: usize, reason: &str) -> Vec<Outcome> {
    (0..count)
        .map(|_| Outcome::Rejected(Error::Unavailable(reason.to_string())))
        .collect()
}

/// One group commit, built and staged by the writer.
pub(super) struct Commit {
    pub batch: StagedBatch,
    pub replies: Vec<Reply>,
    pub alerts: Vec<Alert>,
    /// Events applied (the batch-size metric).
    pub events: usize,
    /// When each ingest command was queued (the ack-latency metric).
    pub queued: Vec<Instant>,
    pub counts: EntityCounts,
    /// Open alerts by kind, when this commit's transitions changed them.
    pub open_alerts: Option<OpenAlerts>,
    /// The writer's `engine.batch` span: the commit is traced under it.
    pub span: tracing::Span,
}

pub(super) enum Stage {
    Commit(Box<Commit>),
    /// Answered once every earlier commit is done (durable or failed).
    Drain(Sender<()>),
}

/// Set once a group commit failed, or the writer could not read its state:
/// sled may hold writes that were never made durable, so nothing more is
/// accepted until a restart.
#[derive(Default)]
pub(super) struct Failure(OnceLock<String>);

impl Failure {
    pub(super) fn set(&self, error: &Error) -> &str {
        self.0.get_or_init(|| {
            tracing::error!(error = %error, "storage failed; refusing further writes");
            format!("storage failed; restart the service: {error}")
        })
    }

    pub(super) fn reason(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// The commit thread's side.
pub(super) struct Committer {
    /// Cleared when a commit is done; the writer may be holding a small
    /// commit back until then, so it is also woken through `wake`.
    pub committing: Arc<AtomicBool>,
    /// The writer's command queue, weakly: it must not keep it open.
    pub wake: tokio::sync::mpsc::WeakSender<super::Command>,
    pub store: Store,
    pub feed: Arc<AlertFeed>,
    pub dimensions: Dimensions,
    pub metrics: crate::telemetry::Metrics,
    pub failure: Arc<Failure>,
}

/// Commits queued for the commit thread besides the one it is writing. With
/// none, the writer builds the next commit while the current one is being
/// written and hands it over when that one is done: it is never more than
/// one commit ahead, and whatever arrives meanwhile joins the commit after.
/// (A queue of one more measured no faster, stream or unary.)
pub(super) const PIPELINE_DEPTH: usize = 0;

impl Committer {
    pub(super) fn channel() -> (SyncSender<Stage>, Receiver<Stage>) {
        std::sync::mpsc::sync_channel(PIPELINE_DEPTH)
    }

    pub(super) fn run(self, stages: Receiver<Stage>) {
        // Once a commit fails, every later one was built on top of it.
        let mut failed: Option<String> = None;
        for stage in stages {
            match stage {
                Stage::Drain(done) => {
                    let _ = done.send(());
                }
                Stage::Commit(commit) => {
                    // Set again here: the writer may have handed this one
                    // over while the previous one was finishing.
                    self.committing.store(true, Ordering::Release);
                    if let Some(reason) = &failed {
                        commit.replies.into_iter().for_each(|r| r.fail(reason));
                    } else if let Err(e) = self.commit(*commit) {
                        failed = Some(self.failure.set(&e).to_string());
                    }
                    self.committing.store(false, Ordering::Release);
                    // A full queue needs no wake-up: the writer has plenty
                    // to build.
                    if let Some(wake) = self.wake.upgrade() {
                        let _ = wake.try_send(super::Command::Idle);
                    }
                }
            }
        }
        // The writer closed the pipeline: a stop. After a failure the
        // log is what the next start repairs from, so it stays.
        if failed.is_none() {
            if let Err(e) = self.store.close_wal() {
                tracing::warn!(error = %e, "could not checkpoint the write-ahead log; the next start replays it");
            }
        }
    }

    fn commit(&self, commit: Commit) -> Result<()> {
        let Commit {
            batch,
            replies,
            alerts,
            events,
            queued,
            counts,
            open_alerts,
            span,
        } = commit;
        let mut owed = Some(Owed {
            replies,
            alerts,
            queued,
            counts,
            open_alerts,
        });
        let took = if batch.is_empty() {
            None
        } else {
            let span = tracing::info_span!(
                parent: &span,
                "engine.commit",
                events,
                next_sequence = counts.next_sequence
            );
            let _guard = span.enter();
            let started = Instant::now();
            // Answered as soon as the record is durable, before sled has
            // the writes (the store keeps them readable meanwhile).
            let committed = self.store.commit_staged(batch, || {
                if let Some(owed) = owed.take() {
                    self.answer(owed);
                }
            });
            if let Err(e) = committed {
                let e = Error::from(e);
                let reason = self.failure.set(&e);
                // Still owed unless the record was durable and only the
                // apply to sled failed (the next start replays it).
                if let Some(owed) = owed.take() {
                    owed.replies.into_iter().for_each(|r| r.fail(reason));
                }
                return Err(e);
            }
            Some(started.elapsed())
        };
        if let Some(owed) = owed.take() {
            self.answer(owed);
        }
        self.metrics.committed(events, took);
        Ok(())
    }

    /// Publishes a durable commit's alert transitions and answers its
    /// callers.
    fn answer(&self, owed: Owed) {
        let Owed {
            replies,
            alerts,
            queued,
            counts,
            open_alerts,
        } = owed;
        self.metrics.transitions(&alerts);
        if let Some(open) = &open_alerts {
            self.metrics.open_alerts(open);
        }
        self.metrics.entities(counts.customers, counts.scopes);
        self.feed.publish(alerts);
        for reply in replies {
            reply.send(&self.dimensions);
        }
        for at in queued {
            self.metrics.acked(at);
        }
    }
}

/// What a commit owes once it is durable.
struct Owed {
    replies: Vec<Reply>,
    alerts: Vec<Alert>,
    queued: Vec<Instant>,
    counts: EntityCounts,
    open_alerts: Option<OpenAlerts>,
}

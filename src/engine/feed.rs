//! The alert feed subscribers read from. The writer publishes each commit's
//! transitions here after they are durable: it appends them to a bounded
//! in-memory ring of recent transitions and moves the head. Publishing never
//! waits for anyone. Subscribers pull at their own pace: from the ring when
//! they are near the head, from the alert log in sled when they are behind,
//! so a slow subscriber costs its own bounded buffer and nothing else.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::domain::alert::Alert;
use crate::store::{Result, Store};

pub struct AlertFeed {
    head: watch::Sender<u64>,
    recent: Mutex<VecDeque<Arc<Alert>>>,
    capacity: usize,
}

impl AlertFeed {
    pub fn new(head: u64, capacity: usize) -> Self {
        Self {
            head: watch::Sender::new(head),
            recent: Mutex::new(VecDeque::with_capacity(capacity.min(4096))),
            capacity,
        }
    }

    /// Called by the writer, in sequence order, once `alerts` are durable.
    pub(super) fn publish(&self, alerts: Vec<Alert>) {
        let Some(last) = alerts.last().map(|a| a.sequence) else {
            return;
        };
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            for alert in alerts {
                recent.push_back(Arc::new(alert));
            }
            while recent.len() > self.capacity {
                recent.pop_front();
            }
        }
        self.head.send_replace(last);
    }

    /// The highest committed sequence.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Notified whenever the head moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Up to `limit` transitions from sequence `from`, in order.
    pub fn read(&self, store: &Store, from: u64, limit: usize) -> Result<Vec<Arc<Alert>>> {
        {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            // The ring holds consecutive sequences.
            if let Some(first) = recent.front().map(|a| a.sequence) {
                if from >= first {
                    let skip = usize::try_from(from - first).unwrap_or(usize::MAX);
                    return Ok(recent.iter().skip(skip).take(limit).cloned().collect());
                }
            }
        }
        Ok(store
            .alert_log(from, limit)?
            .into_iter()
            .map(Arc::new)
            .collect())
    }
}

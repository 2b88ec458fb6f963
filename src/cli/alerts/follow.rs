//! `gapwatch alerts --follow`: the alert log live over Subscribe. A lost
//! connection is retried with a capped backoff and resumed from the last
//! sequence seen, so no transition is missed or printed twice.

use std::process::ExitCode;
use std::time::Duration;

use tonic::{Code, Status};

use gapwatch::proto::{
    alert_service_client::AlertServiceClient, subscribe_response, AlertKind, AlertSeverity,
    SubscribeRequest,
};

use super::{head_sequence, transition_line, AlertsArgs};

/// Where a follower is in the alert log: the next sequence to ask for.
/// Advanced by every message, transitions and heartbeats alike (a
/// heartbeat's sequence is the head the server has scanned, matching or
/// not), so a reconnection resumes from the last seen sequence + 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    next: Option<u64>,
}

impl Position {
    /// `from`: the first sequence wanted; `None` starts at the head.
    pub fn new(from: Option<u64>) -> Self {
        Self { next: from }
    }

    /// `from_sequence` of the next Subscribe: `None` (the head) until a
    /// first message has fixed the position.
    pub fn resume_from(&self) -> Option<u64> {
        self.next
    }

    /// Records a transition; `false` when it was already delivered (its
    /// sequence is below the position), which the caller skips.
    pub fn alert(&mut self, sequence: u64) -> bool {
        if self.next.is_some_and(|next| sequence < next) {
            return false;
        }
        self.next = Some(sequence + 1);
        true
    }

    /// Records a heartbeat: everything up to `sequence` was scanned.
    pub fn heartbeat(&mut self, sequence: u64) {
        let next = sequence + 1;
        self.next = Some(self.next.map_or(next, |n| n.max(next)));
    }

    /// Whether everything up to `sequence` has been delivered.
    pub fn covers(&self, sequence: u64) -> bool {
        self.next.is_some_and(|next| next > sequence)
    }
}

/// Capped exponential backoff between reconnections.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; each call doubles the following
    /// one, up to the cap.
    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// After a message arrived: the next failure waits the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// Whether a Subscribe failure is worth a reconnection: the server went
/// away or restarted (UNAVAILABLE, transport errors surface as UNKNOWN,
/// INTERNAL or CANCELLED), not a refusal of the request itself.
pub fn is_retryable(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::OutOfRange
            | Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::FailedPrecondition
            | Code::Unimplemented
    )
}

fn subscribe_request(args: &AlertsArgs, from_sequence: Option<u64>) -> SubscribeRequest {
    SubscribeRequest {
        from_sequence,
        kinds: args
            .kinds
            .iter()
            .map(|k| AlertKind::from(*k) as i32)
            .collect(),
        scopes: args.scopes.clone(),
        dimensions: args.dimensions.clone(),
        min_severity: args
            .min_severity
            .map_or(AlertSeverity::Unspecified, AlertSeverity::from) as i32,
    }
}

/// How one connection ended.
enum Ended {
    CtrlC,
    /// The stream failed or ended; reconnect.
    Retry(String),
    /// The server refused the request; exit 1.
    Fatal(Status),
}

pub(super) async fn follow(args: &AlertsArgs) -> anyhow::Result<ExitCode> {
    let endpoint = args
        .server
        .endpoint()?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    // Lazy: the channel (re)connects on each call, so one client serves
    // every reconnection.
    let mut client = AlertServiceClient::new(endpoint.connect_lazy());
    let mut position = Position::new(args.from);
    let mut backoff = Backoff::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let request = subscribe_request(args, position.resume_from());
        let ended = tokio::select! {
            _ = &mut ctrl_c => Ended::CtrlC,
            ended = follow_once(&mut client, request, &mut position, &mut backoff, args.json) => ended?,
        };
        let reason = match ended {
            Ended::CtrlC => return Ok(ExitCode::SUCCESS),
            Ended::Fatal(status) => {
                eprintln!("error: {:?}: {}", status.code(), status.message());
                return Ok(ExitCode::FAILURE);
            }
            Ended::Retry(reason) => reason,
        };
        let delay = backoff.delay();
        let from = position
            .resume_from()
            .map_or_else(|| "the head".to_string(), |s| format!("sequence {s}"));
        eprintln!(
            "alerts: {reason}; reconnecting in {} ms from {from}",
            delay.as_millis()
        );
        tokio::select! {
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One Subscribe call, printing until the stream ends.
async fn follow_once(
    client: &mut AlertServiceClient<tonic::transport::Channel>,
    request: SubscribeRequest,
    position: &mut Position,
    backoff: &mut Backoff,
    json: bool,
) -> anyhow::Result<Ended> {
    let classify = |status: Status| {
        if is_retryable(&status) {
            Ended::Retry(format!("{:?}: {}", status.code(), status.message()))
        } else {
            Ended::Fatal(status)
        }
    };
    let mut request = request;
    if request.from_sequence.is_none() {
        // Pin "the head" to a sequence before subscribing, so that a
        // disconnection before the first message (a heartbeat can be
        // seconds away) resumes exactly there instead of at a later head.
        let head = match head_sequence(client).await {
            Ok(head) => head,
            Err(status) => return Ok(classify(status)),
        };
        position.heartbeat(head);
        request.from_sequence = position.resume_from();
    }
    let mut stream = match client.subscribe(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Ok(classify(status)),
    };
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(Ended::Retry("the server ended the stream".into())),
            Err(status) => return Ok(classify(status)),
        };
        backoff.reset();
        match message.message {
            Some(subscribe_response::Message::Alert(alert)) => {
                if position.alert(message.sequence) {
                    if json {
                        println!("{}", serde_json::to_string(&alert)?);
                    } else {
                        println!("{}", transition_line(&alert));
                    }
                }
            }
            Some(subscribe_response::Message::Heartbeat(_)) | None => {
                position.heartbeat(message.sequence);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_advances_on_alerts_and_heartbeats() {
        let mut p = Position::new(None);
        assert_eq!(p.resume_from(), None, "starts at the head");
        p.heartbeat(41); // the head when subscribing
        assert_eq!(p.resume_from(), Some(42));
        assert!(p.alert(42));
        assert!(p.alert(45), "filtered-out sequences may be skipped");
        assert_eq!(p.resume_from(), Some(46));
        p.heartbeat(60);
        assert_eq!(
            p.resume_from(),
            Some(61),
            "a heartbeat moves past filtered ones"
        );
        p.heartbeat(50);
        assert_eq!(p.resume_from(), Some(61), "never moves back");
        assert!(p.covers(60));
        assert!(!p.covers(61));
        assert!(!Position::new(None).covers(0), "nothing seen yet");
    }

    #[test]
    fn position_skips_repeats_after_a_reconnection() {
        let mut p = Position::new(Some(10));
        assert_eq!(p.resume_from(), Some(10));
        assert!(p.alert(10));
        assert!(p.alert(11));
        // A server replaying from before the position: skipped, no move.
        assert!(!p.alert(11));
        assert!(!p.alert(3));
        assert_eq!(p.resume_from(), Some(12));
        // The first heartbeat after resuming at 12 says 11: unchanged.
        p.heartbeat(11);
        assert_eq!(p.resume_from(), Some(12));
    }

    #[test]
    fn position_from_zero_takes_the_whole_log() {
        let mut p = Position::new(Some(0));
        assert_eq!(p.resume_from(), Some(0));
        assert!(p.alert(1));
        assert_eq!(p.resume_from(), Some(2));
        let mut empty = Position::new(None);
        empty.heartbeat(0); // an empty log
        assert_eq!(empty.resume_from(), Some(1));
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..9).map(|_| b.delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.delay(), Duration::from_millis(100));
        assert_eq!(b.delay(), Duration::from_millis(200));
    }

    #[test]
    fn only_refusals_are_fatal() {
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
        ] {
            assert!(is_retryable(&Status::new(code, "x")), "{code:?}");
        }
        for code in [Code::OutOfRange, Code::InvalidArgument, Code::Unimplemented] {
            assert!(!is_retryable(&Status::new(code, "x")), "{code:?}");
        }
    }
}

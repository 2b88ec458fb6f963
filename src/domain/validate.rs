//! Turns wire events into domain events, checking every field against the
//! ranges of DOMAIN.md. All violations of an event are reported at once, each
//! with the field path (`survey.csat`, `events[3].interaction.amount`) and a
//! reason, so a producer can fix its payload in one round trip.

use std::collections::BTreeMap;
use std::fmt::{self, Display};

use super::{
    Body, DimensionSpec, Event, Interaction, InteractionKind, Measure, Millis, Rating, Severity,
    Survey,
};
use crate::proto;

pub const MAX_ID_BYTES: usize = 128;
pub const MAX_ATTRIBUTES: usize = 8;
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 32;
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 64;
/// How far in the future `occur_time` may be (clock skew between services).
pub const MAX_FUTURE_SKEW_MS: Millis = 5 * 60 * 1000;

/// One field that failed validation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub reason: String,
}

/// What validation needs besides the event: the wall clock and the
/// configured dimensions.
pub struct Context<'a> {
    pub now: Millis,
    pub dimensions: &'a BTreeMap<String, DimensionSpec>,
}

/// Collects violations under a field-path prefix.
struct Checker<'a> {
    prefix: &'a str,
    violations: Vec<FieldViolation>,
}

impl Checker<'_> {
    /// `field` is formatted only here, once a violation is found: valid
    /// events (nearly all of them) build no field paths.
    fn fail(&mut self, field: impl Display, reason: impl Into<String>) {
        let field = if self.prefix.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.violations.push(FieldViolation {
            field,
            reason: reason.into(),
        });
    }

    fn id(&mut self, field: &str, value: &str) {
        if let Err(reason) = check_id(value) {
            self.fail(field, reason);
        }
    }

    fn int_range(
        &mut self,
        field: impl Display,
        value: Option<i32>,
        lo: i32,
        hi: i32,
    ) -> Option<u8> {
        let v = value?;
        if (lo..=hi).contains(&v) {
            // lo..=hi is within 0..=10 for every scale, so this never truncates.
            Some(v as u8)
        } else {
            self.fail(field, format!("must be between {lo} and {hi}, got {v}"));
            None
        }
    }

    fn finite(&mut self, field: &str, value: Option<f64>) -> Option<f64> {
        let v = value?;
        if v.is_finite() {
            Some(v)
        } else {
            self.fail(field, "must be a finite number");
            None
        }
    }
}

/// Checks an event, customer or case id: 1..=`MAX_ID_BYTES` bytes, no
/// control characters (what ingest accepts, so what queries can find).
pub fn check_id(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err("must not be empty".into())
    } else if value.len() > MAX_ID_BYTES {
        Err(format!(
            "must be at most {MAX_ID_BYTES} bytes, got {}",
            value.len()
        ))
    } else if value.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(())
    }
}

/// Checks a dimension or attribute key name: `[a-z0-9_]{1,32}`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_KEY_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a scope name: `all` or `key=value` with a valid key and value.
pub fn check_scope(scope: &str) -> Result<(), String> {
    if scope == super::SCOPE_ALL {
        return Ok(());
    }
    let Some((key, value)) = scope.split_once('=') else {
        return Err("must be `all` or `key=value`".into());
    };
    if !is_valid_name(key) {
        return Err(format!(
            "attribute key `{key}` must match [a-z0-9_]{{1,32}}"
        ));
    }
    attribute_value_problem(value).map_or(Ok(()), Err)
}

fn attribute_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        Some("attribute value must not be empty".into())
    } else if value.len() > MAX_ATTRIBUTE_VALUE_BYTES {
        Some(format!(
            "attribute value must be at most {MAX_ATTRIBUTE_VALUE_BYTES} bytes, got {}",
            value.len()
        ))
    } else if value.chars().any(char::is_control) {
        Some("attribute value must not contain control characters".into())
    } else {
        None
    }
}

/// Converts a protobuf timestamp to milliseconds, rejecting out-of-range
/// values (before the Unix epoch, or nanos outside 0..1e9).
pub fn timestamp_millis(ts: &pbjson_types::Timestamp) -> Result<Millis, String> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(format!("nanos must be in 0..1e9, got {}", ts.nanos));
    }
    // Year 10000 bounds the multiplication well inside i64.
    if !(0..=253_402_300_799).contains(&ts.seconds) {
        return Err("must be between 1970-01-01 and 9999-12-31".into());
    }
    Ok(ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000)
}

/// The envelope every event carries.
struct Envelope<'a> {
    event_id: &'a str,
    customer_id: &'a str,
    occur_time: Option<&'a pbjson_types::Timestamp>,
    attributes: &'a std::collections::HashMap<String, String>,
}

fn check_envelope(
    c: &mut Checker,
    ctx: &Context,
    env: &Envelope,
) -> Option<(Millis, Vec<(String, String)>)> {
    c.id("event_id", env.event_id);
    c.id("customer_id", env.customer_id);
    let at = match env.occur_time {
        None => {
            c.fail("occur_time", "is required");
            None
        }
        Some(ts) => match timestamp_millis(ts) {
            Err(reason) => {
                c.fail("occur_time", reason);
                None
            }
            Ok(at) if at > ctx.now + MAX_FUTURE_SKEW_MS => {
                c.fail(
                    "occur_time",
                    "must not be more than 5 minutes in the future",
                );
                None
            }
            Ok(at) => Some(at),
        },
    };
    if env.attributes.len() > MAX_ATTRIBUTES {
        c.fail(
            "attributes",
            format!(
                "at most {MAX_ATTRIBUTES} attributes, got {}",
                env.attributes.len()
            ),
        );
    }
    // Sorted so that scopes and stored events are deterministic.
    let sorted: BTreeMap<&String, &String> = env.attributes.iter().collect();
    for (key, value) in &sorted {
        if !is_valid_name(key) {
            c.fail(
                "attributes",
                format!("key `{key}` must match [a-z0-9_]{{1,32}}"),
            );
        } else if let Some(problem) = attribute_value_problem(value) {
            c.fail(format_args!("attributes[{key}]"), problem);
        }
    }
    let attributes = sorted
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    at.map(|at| (at, attributes))
}

/// `ratings[INDEX].NAME`, the path of one field of a rating.
struct RatingField {
    index: usize,
    name: &'static str,
}

impl Display for RatingField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ratings[{}].{}", self.index, self.name)
    }
}

/// Validates a survey response. `prefix` is the field path of the message
/// (e.g. `survey` or `events[2].survey`).
pub fn survey(
    s: &proto::Survey,
    ctx: &Context,
    prefix: &str,
) -> Result<Event, Vec<FieldViolation>> {
    let mut c = Checker {
        prefix,
        violations: Vec::new(),
    };
    let envelope = check_envelope(
        &mut c,
        ctx,
        &Envelope {
            event_id: &s.event_id,
            customer_id: &s.customer_id,
            occur_time: s.occur_time.as_ref(),
            attributes: &s.attributes,
        },
    );
    let mut body = Survey {
        csat: c.int_range("csat", s.csat, 1, 5),
        nps: c.int_range("nps", s.nps, 0, 10),
        ces: c.int_range("ces", s.ces, 1, 7),
        repurchase: c.int_range("repurchase", s.repurchase, 0, 10),
        ratings: Vec::with_capacity(s.ratings.len()),
    };
    // Only configured dimensions enter, so a scan stays short (and hashes
    // nothing, unlike a set, for the usual handful of ratings).
    let mut seen: Vec<&str> = Vec::new();
    for (i, r) in s.ratings.iter().enumerate() {
        let field = |name| RatingField { index: i, name };
        if !ctx.dimensions.contains_key(&r.dimension) {
            c.fail(
                field("dimension"),
                format!("unknown dimension `{}`", r.dimension),
            );
        } else if seen.contains(&r.dimension.as_str()) {
            c.fail(
                field("dimension"),
                format!("dimension `{}` rated twice", r.dimension),
            );
        } else {
            seen.push(&r.dimension);
        }
        let expectation = c.int_range(field("expectation"), Some(r.expectation), 1, 7);
        let perception = c.int_range(field("perception"), Some(r.perception), 1, 7);
        let importance = c.int_range(field("importance"), r.importance, 1, 7);
        if let (Some(expectation), Some(perception)) = (expectation, perception) {
            body.ratings.push(Rating {
                dimension: r.dimension.clone(),
                expectation,
                perception,
                importance,
            });
        }
    }
    let no_score = s.csat.is_none()
        && s.nps.is_none()
        && s.ces.is_none()
        && s.repurchase.is_none()
        && s.ratings.is_empty();
    if no_score {
        c.fail(
            "",
            "a survey needs at least one of csat, nps, ces, repurchase or ratings",
        );
    }
    finish(
        c,
        envelope,
        s.event_id.clone(),
        s.customer_id.clone(),
        Body::Survey(body),
    )
}

fn finish(
    c: Checker,
    envelope: Option<(Millis, Vec<(String, String)>)>,
    id: String,
    customer: String,
    body: Body,
) -> Result<Event, Vec<FieldViolation>> {
    let mut violations = c.violations;
    for v in &mut violations {
        // `fail("")` addresses the message itself.
        if let Some(stripped) = v.field.strip_suffix('.') {
            v.field = stripped.to_string();
        }
    }
    match envelope {
        Some((at, attributes)) if violations.is_empty() => Ok(Event {
            id,
            customer,
            at,
            attributes,
            body,
        }),
        _ => Err(violations),
    }
}

fn kind(k: i32) -> Option<InteractionKind> {
    use proto::InteractionKind as P;
    Some(match P::try_from(k).ok()? {
        P::Unspecified => return None,
        P::Purchase => InteractionKind::Purchase,
        P::Return => InteractionKind::Return,
        P::Service => InteractionKind::Service,
        P::ComplaintOpened => InteractionKind::ComplaintOpened,
        P::ComplaintResponded => InteractionKind::ComplaintResponded,
        P::ComplaintResolved => InteractionKind::ComplaintResolved,
        P::FollowUp => InteractionKind::FollowUp,
        P::Cancellation => InteractionKind::Cancellation,
    })
}

/// Validates an interaction. `prefix` as in [`survey`].
pub fn interaction(
    i: &proto::Interaction,
    ctx: &Context,
    prefix: &str,
) -> Result<Event, Vec<FieldViolation>> {
    let mut c = Checker {
        prefix,
        violations: Vec::new(),
    };
    let envelope = check_envelope(
        &mut c,
        ctx,
        &Envelope {
            event_id: &i.event_id,
            customer_id: &i.customer_id,
            occur_time: i.occur_time.as_ref(),
            attributes: &i.attributes,
        },
    );
    let kind = kind(i.kind);
    if kind.is_none() {
        c.fail(
            "kind",
            format!("must be a known interaction kind, got {}", i.kind),
        );
    }
    let amount = c.finite("amount", i.amount);
    if let Some(a) = amount {
        if a < 0.0 {
            c.fail("amount", format!("must not be negative, got {a}"));
        }
    }
    if matches!(
        kind,
        Some(InteractionKind::Purchase | InteractionKind::Return)
    ) && i.amount.is_none()
    {
        c.fail("amount", "is required for PURCHASE and RETURN");
    }
    let severity = match proto::Severity::try_from(i.severity) {
        Ok(proto::Severity::Major) => Severity::Major,
        Ok(_) => Severity::Minor,
        Err(_) => {
            c.fail(
                "severity",
                format!("must be a known severity, got {}", i.severity),
            );
            Severity::Minor
        }
    };
    let case_id = (!i.case_id.is_empty()).then(|| i.case_id.clone());
    if kind.is_some_and(InteractionKind::is_complaint) || case_id.is_some() {
        c.id("case_id", &i.case_id);
    }
    let dimension = (!i.dimension.is_empty()).then(|| i.dimension.clone());
    if let Some(d) = &dimension {
        if !ctx.dimensions.contains_key(d) {
            c.fail("dimension", format!("unknown dimension `{d}`"));
        }
    }
    let service = measure(&mut c, ("standard", i.standard), ("actual", i.actual));
    let promise = measure(&mut c, ("promised", i.promised), ("delivered", i.delivered));
    if (service.is_some() || promise.is_some()) && dimension.is_none() {
        c.fail(
            "dimension",
            "is required with standard/actual or promised/delivered",
        );
    }
    let body = Interaction {
        kind: kind.unwrap_or(InteractionKind::Service),
        amount,
        dimension,
        case_id,
        severity,
        service,
        promise,
        lower_is_better: i.lower_is_better.unwrap_or(true),
    };
    finish(
        c,
        envelope,
        i.event_id.clone(),
        i.customer_id.clone(),
        Body::Interaction(body),
    )
}

/// A target/observed pair: both or neither, both finite.
fn measure(
    c: &mut Checker,
    target: (&str, Option<f64>),
    observed: (&str, Option<f64>),
) -> Option<Measure> {
    let t = c.finite(target.0, target.1);
    let o = c.finite(observed.0, observed.1);
    match (target.1, observed.1) {
        (Some(_), None) => c.fail(observed.0, format!("is required with {}", target.0)),
        (None, Some(_)) => c.fail(target.0, format!("is required with {}", observed.0)),
        _ => {}
    }
    Some(Measure {
        target: t?,
        observed: o?,
    })
}

/// Validates a wire `Event` (batch or stream item).
pub fn event(e: &proto::Event, ctx: &Context, prefix: &str) -> Result<Event, Vec<FieldViolation>> {
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    };
    match &e.kind {
        Some(proto::event::Kind::Survey(s)) => survey(s, ctx, &join("survey")),
        Some(proto::event::Kind::Interaction(i)) => interaction(i, ctx, &join("interaction")),
        None => Err(vec![FieldViolation {
            field: if prefix.is_empty() {
                "kind".into()
            } else {
                prefix.to_string()
            },
            reason: "an event must be a survey or an interaction".into(),
        }]),
    }
}

/// The `event_id` of a wire event, for echoing in results.
pub fn event_id(e: &proto::Event) -> &str {
    match &e.kind {
        Some(proto::event::Kind::Survey(s)) => &s.event_id,
        Some(proto::event::Kind::Interaction(i)) => &i.event_id,
        None => "",
    }
}

/// [`event_id`], moved out of a wire event that is done with.
pub fn take_event_id(e: &mut proto::Event) -> String {
    match &mut e.kind {
        Some(proto::event::Kind::Survey(s)) => std::mem::take(&mut s.event_id),
        Some(proto::event::Kind::Interaction(i)) => std::mem::take(&mut i.event_id),
        None => String::new(),
    }
}

//! `gapwatch alerts`: lists alerts (ListAlerts, every page), follows the
//! alert log live (Subscribe, reconnecting and resuming where it left off)
//! and acknowledges alerts (`gapwatch alerts ack ID`).

use std::fmt::Write as _;
use std::process::ExitCode;

use tonic::Status;

mod follow;

pub use follow::Position;

use gapwatch::proto::{
    alert_service_client::AlertServiceClient, AcknowledgeAlertRequest, Alert, AlertKind,
    AlertSeverity, AlertState, GapKind, ListAlertsRequest,
};

const AFTER_HELP: &str = "\
Modes:
  gapwatch alerts [--state S]... [--kind K]... [--scope SCOPE]...
      Lists alerts (open ones, FIRING and ACKNOWLEDGED, unless --state says
      otherwise) as a table, or one JSON object per line with --json.
  gapwatch alerts --follow [--from SEQUENCE] [--kind K]... [--scope SCOPE]...
                  [--dimension D]... [--min-severity S]
      Prints each alert transition as it is committed. On a disconnect or a
      server restart it reconnects (backoff 100 ms doubling to 5 s) and
      resumes right after the last sequence it saw, so nothing is missed or
      repeated. Without --from it starts at the head of the log (the head
      sequence is read first). Exits 1 if the position is not retained
      (OUT_OF_RANGE), 0 on Ctrl-C.
  gapwatch alerts ack ID [--note TEXT] [--rebaseline]
      Acknowledges an open alert.

Examples:
  gapwatch alerts --kind gap-widening --scope region=east
  gapwatch alerts --state resolved --json
  gapwatch alerts --follow --min-severity warning
  gapwatch alerts ack 42 --note \"new queue policy\" --rebaseline";

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct AlertsArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Follow the alert log live (Subscribe) instead of listing alerts.
    #[arg(long)]
    follow: bool,
    /// With --follow: the first sequence to deliver (0 or 1: the whole
    /// retained log) [default: the head, only new transitions].
    #[arg(long, value_name = "SEQUENCE", requires = "follow")]
    from: Option<u64>,
    /// Listing only: alert states to list (repeatable) [default: firing and
    /// acknowledged].
    #[arg(
        long = "state",
        value_enum,
        value_name = "STATE",
        conflicts_with = "follow"
    )]
    states: Vec<StateArg>,
    /// Only these kinds (repeatable) [default: all].
    #[arg(long = "kind", value_enum, value_name = "KIND")]
    kinds: Vec<KindArg>,
    /// Only this scope, exactly: `all` or `key=value` (repeatable).
    #[arg(long = "scope", value_name = "SCOPE")]
    scopes: Vec<String>,
    /// Only this service dimension (repeatable).
    #[arg(long = "dimension", value_name = "DIMENSION")]
    dimensions: Vec<String>,
    /// Only this severity or higher.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    min_severity: Option<SeverityArg>,
    /// Print one JSON object (a gapwatch.v1.Alert, proto3 JSON mapping) per
    /// line.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    server: super::ServerArg,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Acknowledges an open alert (prints it as acknowledged).
    Ack(AckArgs),
}

#[derive(clap::Args)]
struct AckArgs {
    /// The alert id (the sequence of its FIRING transition).
    id: String,
    /// The operator's note (at most 1024 bytes).
    #[arg(long, value_name = "TEXT", default_value = "")]
    note: String,
    /// Accept the current level as the new normal: the detector relearns
    /// its baseline.
    #[arg(long)]
    rebaseline: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StateArg {
    Firing,
    Acknowledged,
    Resolved,
}

impl From<StateArg> for AlertState {
    fn from(s: StateArg) -> Self {
        match s {
            StateArg::Firing => AlertState::Firing,
            StateArg::Acknowledged => AlertState::Acknowledged,
            StateArg::Resolved => AlertState::Resolved,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum KindArg {
    GapWidening,
    SatisfactionDrop,
    LoyaltyDrop,
    ChurnRisk,
    ComplaintOverdue,
}

impl From<KindArg> for AlertKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::GapWidening => AlertKind::GapWidening,
            KindArg::SatisfactionDrop => AlertKind::SatisfactionDrop,
            KindArg::LoyaltyDrop => AlertKind::LoyaltyDrop,
            KindArg::ChurnRisk => AlertKind::ChurnRisk,
            KindArg::ComplaintOverdue => AlertKind::ComplaintOverdue,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SeverityArg {
    Info,
    Warning,
    Critical,
}

impl From<SeverityArg> for AlertSeverity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Info => AlertSeverity::Info,
            SeverityArg::Warning => AlertSeverity::Warning,
            SeverityArg::Critical => AlertSeverity::Critical,
        }
    }
}

impl AlertsArgs {
    /// The listing / follow options given, which `ack` does not take.
    /// (Checked here rather than by clap, so that the global `--server` and
    /// `--json` may still come before `ack`.)
    fn filters_given(&self) -> Vec<&'static str> {
        let given = [
            ("--follow", self.follow),
            ("--from", self.from.is_some()),
            ("--state", !self.states.is_empty()),
            ("--kind", !self.kinds.is_empty()),
            ("--scope", !self.scopes.is_empty()),
            ("--dimension", !self.dimensions.is_empty()),
            ("--min-severity", self.min_severity.is_some()),
        ];
        given
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect()
    }
}

pub async fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    match &args.action {
        Some(Action::Ack(_)) if !args.filters_given().is_empty() => {
            eprintln!(
                "error: `gapwatch alerts ack` cannot be used with {}",
                args.filters_given().join(", ")
            );
            Ok(ExitCode::from(2))
        }
        Some(Action::Ack(ack)) => acknowledge(&args, ack).await,
        None if args.follow => follow::follow(&args).await,
        None => list(&args).await,
    }
}

/// A gRPC status as a one-line error: `NotFound: no alert 7`.
fn status_error(status: &Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

async fn acknowledge(args: &AlertsArgs, ack: &AckArgs) -> anyhow::Result<ExitCode> {
    let mut client = AlertServiceClient::new(args.server.connect().await?);
    let alert = client
        .acknowledge_alert(AcknowledgeAlertRequest {
            id: ack.id.clone(),
            note: ack.note.clone(),
            rebaseline: ack.rebaseline,
        })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    if args.json {
        println!("{}", serde_json::to_string(&alert)?);
    } else {
        print!("{}", table(std::slice::from_ref(&alert)));
    }
    Ok(ExitCode::SUCCESS)
}

/// The client-side part of the listing filter (ListAlerts filters states,
/// kinds and one scope on the server).
struct ListFilter {
    dimensions: Vec<String>,
    min_severity: AlertSeverity,
}

impl ListFilter {
    fn keep(&self, a: &Alert) -> bool {
        (self.dimensions.is_empty() || self.dimensions.contains(&a.dimension))
            && a.severity >= self.min_severity as i32
    }
}

async fn list(args: &AlertsArgs) -> anyhow::Result<ExitCode> {
    let mut client = AlertServiceClient::new(args.server.connect().await?);
    let states: Vec<i32> = args
        .states
        .iter()
        .map(|s| AlertState::from(*s) as i32)
        .collect();
    let kinds: Vec<i32> = args
        .kinds
        .iter()
        .map(|k| AlertKind::from(*k) as i32)
        .collect();
    // ListAlerts takes one scope: several are one listing each, merged.
    let scopes: Vec<String> = if args.scopes.is_empty() {
        vec![String::new()]
    } else {
        args.scopes.clone()
    };
    let filter = ListFilter {
        dimensions: args.dimensions.clone(),
        min_severity: args
            .min_severity
            .map_or(AlertSeverity::Info, AlertSeverity::from),
    };
    let mut alerts = Vec::new();
    let mut head = 0;
    for scope in scopes {
        let mut page_token = String::new();
        loop {
            let page = client
                .list_alerts(ListAlertsRequest {
                    states: states.clone(),
                    kinds: kinds.clone(),
                    scope: scope.clone(),
                    page_size: 1000,
                    page_token,
                })
                .await
                .map_err(|s| status_error(&s))?
                .into_inner();
            head = head.max(page.head_sequence);
            alerts.extend(page.alerts.into_iter().filter(|a| filter.keep(a)));
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
    }
    alerts.sort_by_key(|a| a.id.parse::<u64>().unwrap_or(u64::MAX));
    alerts.dedup_by(|a, b| a.id == b.id);
    if args.json {
        for a in &alerts {
            println!("{}", serde_json::to_string(a)?);
        }
    } else if alerts.is_empty() {
        println!("no alerts (log head {head})");
    } else {
        print!("{}", table(&alerts));
        println!("{} alerts (log head {head})", alerts.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn kind_name(k: i32) -> &'static str {
    AlertKind::try_from(k).map_or("?", |k| k.as_str_name())
}

fn state_name(s: i32) -> &'static str {
    AlertState::try_from(s).map_or("?", |s| s.as_str_name())
}

fn severity_name(s: i32) -> &'static str {
    AlertSeverity::try_from(s).map_or("?", |s| s.as_str_name())
}

fn gap_name(g: i32) -> &'static str {
    match GapKind::try_from(g) {
        Ok(GapKind::Unspecified) | Err(_) => "",
        Ok(g) => g.as_str_name(),
    }
}

/// What an alert is about: its scope, or its customer (and case).
/// The alert log's head sequence (read with a one-row `ListAlerts`).
pub async fn head_sequence(
    client: &mut AlertServiceClient<tonic::transport::Channel>,
) -> Result<u64, Status> {
    let response = client
        .list_alerts(ListAlertsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?;
    Ok(response.into_inner().head_sequence)
}

pub fn subject(a: &Alert) -> String {
    if !a.scope.is_empty() {
        a.scope.clone()
    } else if a.case_id.is_empty() {
        format!("customer {}", a.customer_id)
    } else {
        format!("customer {} case {}", a.customer_id, a.case_id)
    }
}

/// `responsiveness/TOTAL`, `responsiveness`, `TOTAL` or `-`.
pub fn dimension_gap(a: &Alert) -> String {
    match (a.dimension.as_str(), gap_name(a.gap_kind)) {
        ("", "") => "-".into(),
        (d, "") => d.into(),
        ("", g) => g.into(),
        (d, g) => format!("{d}/{g}"),
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// The listing table: one row per alert, the message last.
pub fn table(alerts: &[Alert]) -> String {
    let header = [
        "ID",
        "STATE",
        "SEVERITY",
        "KIND",
        "SCOPE/CUSTOMER",
        "DIMENSION",
        "GAP",
        "VALUE",
        "BASELINE",
        "MESSAGE",
    ];
    let rows: Vec<[String; 10]> = alerts
        .iter()
        .map(|a| {
            let gap = gap_name(a.gap_kind);
            [
                a.id.clone(),
                state_name(a.state).into(),
                severity_name(a.severity).into(),
                kind_name(a.kind).into(),
                subject(a),
                if a.dimension.is_empty() {
                    "-".into()
                } else {
                    a.dimension.clone()
                },
                if gap.is_empty() { "-" } else { gap }.into(),
                opt(a.value),
                opt(a.baseline),
                if a.note.is_empty() {
                    a.message.clone()
                } else {
                    format!("{} [note: {}]", a.message, a.note)
                },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let last = cells.len() - 1;
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            // Numbers to the right; the message unpadded.
            if i == last {
                l.push_str(cell);
            } else if matches!(i, 0 | 7 | 8) {
                let _ = write!(l, "{cell:>w$}  ", w = widths[i]);
            } else {
                let _ = write!(l, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    out
}

/// `2026-11-01 10:00:00Z`; `-` when absent.
pub fn format_time(t: Option<&pbjson_types::Timestamp>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    let days = t.seconds.div_euclid(86_400);
    let secs = t.seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One followed transition: sequence, event time, state, severity, kind,
/// scope, dimension/gap, message.
pub fn transition_line(a: &Alert) -> String {
    format!(
        "#{:<6} {}  {:<12} {:<8} {:<17} {:<16} {:<24} {}",
        a.sequence,
        format_time(a.event_time.as_ref()),
        state_name(a.state),
        severity_name(a.severity),
        kind_name(a.kind),
        subject(a),
        dimension_gap(a),
        a.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn formats_times_and_rows() {
        let t = pbjson_types::Timestamp {
            seconds: 1_793_527_200, // 2026-11-01T10:00:00Z
            nanos: 500,
        };
        assert_eq!(format_time(Some(&t)), "2026-11-01 10:00:00Z");
        assert_eq!(
            format_time(Some(&pbjson_types::Timestamp {
                seconds: 951_782_400,
                nanos: 0
            })),
            "2000-02-29 00:00:00Z"
        );
        assert_eq!(format_time(None), "-");
        let a = Alert {
            id: "42".into(),
            kind: AlertKind::GapWidening as i32,
            state: AlertState::Firing as i32,
            severity: AlertSeverity::Warning as i32,
            scope: "region=east".into(),
            dimension: "responsiveness".into(),
            gap_kind: GapKind::Total as i32,
            value: Some(1.25),
            baseline: Some(0.4),
            event_time: Some(t),
            message: "responsiveness gap in region=east widened".into(),
            sequence: 42,
            ..Default::default()
        };
        let line = transition_line(&a);
        assert!(
            line.starts_with("#42     2026-11-01 10:00:00Z  FIRING"),
            "{line}"
        );
        assert!(
            line.contains("region=east      responsiveness/TOTAL"),
            "{line}"
        );
        let acknowledged = Alert {
            state: AlertState::Acknowledged as i32,
            note: "on it".into(),
            ..a.clone()
        };
        let t = table(&[a, acknowledged]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[2].ends_with("widened [note: on it]"), "{t}");
        assert!(
            lines[0].starts_with("ID  STATE         SEVERITY  KIND"),
            "{t}"
        );
        assert!(lines[1].contains("GAP_WIDENING  region=east"), "{t}");
        assert!(
            lines[1].contains("TOTAL   1.25      0.40  responsiveness gap"),
            "{t}"
        );
        let churn = Alert {
            customer_id: "c-1".into(),
            ..Default::default()
        };
        assert_eq!(subject(&churn), "customer c-1");
        assert_eq!(dimension_gap(&churn), "-");
    }

    #[test]
    fn list_filter_keeps_dimension_and_severity() {
        let f = ListFilter {
            dimensions: vec!["responsiveness".into()],
            min_severity: AlertSeverity::Warning,
        };
        let a = |dimension: &str, severity: AlertSeverity| Alert {
            dimension: dimension.into(),
            severity: severity as i32,
            ..Default::default()
        };
        assert!(f.keep(&a("responsiveness", AlertSeverity::Critical)));
        assert!(!f.keep(&a("responsiveness", AlertSeverity::Info)));
        assert!(!f.keep(&a("tangibles", AlertSeverity::Warning)));
    }

    /// The command line shapes, parsed through the real `Cli`.
    #[test]
    fn command_line_shapes() {
        let parse = |args: &[&str]| {
            super::super::Cli::try_parse_from(
                std::iter::once("gapwatch").chain(args.iter().copied()),
            )
        };
        assert!(parse(&["alerts"]).is_ok());
        assert!(parse(&[
            "alerts",
            "--state",
            "firing",
            "--state",
            "resolved",
            "--kind",
            "gap-widening",
            "--scope",
            "region=east",
            "--json"
        ])
        .is_ok());
        assert!(parse(&[
            "alerts",
            "--follow",
            "--from",
            "7",
            "--kind",
            "loyalty-drop",
            "--dimension",
            "responsiveness",
            "--min-severity",
            "warning",
            "--server",
            "http://h:1"
        ])
        .is_ok());
        assert!(parse(&["alerts", "ack", "42", "--note", "on it", "--rebaseline"]).is_ok());
        assert!(parse(&["alerts", "ack", "42", "--server", "http://h:1", "--json"]).is_ok());
        assert!(parse(&["alerts", "--server", "http://h:1", "--json", "ack", "42"]).is_ok());
        // --from needs --follow; --state is for listings; ack takes no filters.
        assert!(parse(&["alerts", "--from", "7"]).is_err());
        assert!(parse(&["alerts", "--follow", "--state", "firing"]).is_err());
        assert!(parse(&["alerts", "--kind", "bogus"]).is_err());
    }

    #[test]
    fn ack_takes_no_filters() {
        let parse = |args: &[&str]| {
            let cli = super::super::Cli::try_parse_from(
                std::iter::once("gapwatch").chain(args.iter().copied()),
            )
            .expect("parses");
            match cli.command {
                super::super::Command::Alerts(a) => a,
                _ => panic!("not alerts"),
            }
        };
        assert!(parse(&["alerts", "--json", "ack", "42"])
            .filters_given()
            .is_empty());
        assert_eq!(
            parse(&["alerts", "--kind", "gap-widening", "--follow", "ack", "42"]).filters_given(),
            ["--follow", "--kind"]
        );
    }
}

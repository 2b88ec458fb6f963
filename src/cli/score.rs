//! `gapwatch score customer ID` / `gapwatch score scope KEY=VALUE`: a
//! readable table, or the canonical JSON with `--json`.

use std::fmt::Write as _;

use gapwatch::proto::{
    score_service_client::ScoreServiceClient, CustomerScore, GetCustomerScoreRequest,
    GetScopeScoreRequest, HealthBand, KanoClass, MeasuredGap, NpsCategory, ScopeScore, Tier,
};

#[derive(clap::Args)]
pub struct ScoreArgs {
    #[command(subcommand)]
    target: Target,
    /// Print the response as JSON (proto3 canonical mapping).
    #[arg(long, global = true)]
    json: bool,
    /// Evaluation time (RFC 3339); now when omitted.
    #[arg(long, global = true)]
    as_of: Option<String>,
    #[command(flatten)]
    server: super::ServerArg,
}

#[derive(clap::Subcommand)]
enum Target {
    /// One customer.
    Customer { id: String },
    /// One scope: `all` or `key=value`.
    Scope { scope: String },
}

pub async fn run(args: ScoreArgs) -> anyhow::Result<std::process::ExitCode> {
    let as_of_time = args
        .as_of
        .as_deref()
        .map(|s| {
            serde_json::from_value::<pbjson_types::Timestamp>(serde_json::Value::String(s.into()))
        })
        .transpose()
        .map_err(|e| anyhow::anyhow!("--as-of must be an RFC 3339 time: {e}"))?;
    let mut client = ScoreServiceClient::new(args.server.connect().await?);
    let out = match args.target {
        Target::Customer { id } => {
            let score = client
                .get_customer_score(GetCustomerScoreRequest {
                    customer_id: id,
                    as_of_time,
                })
                .await?
                .into_inner();
            if args.json {
                serde_json::to_string_pretty(&score)?
            } else {
                customer_table(&score)
            }
        }
        Target::Scope { scope } => {
            let score = client
                .get_scope_score(GetScopeScoreRequest { scope, as_of_time })
                .await?
                .into_inner();
            if args.json {
                serde_json::to_string_pretty(&score)?
            } else {
                scope_table(&score)
            }
        }
    };
    println!("{out}");
    Ok(std::process::ExitCode::SUCCESS)
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

fn gap(g: &Option<MeasuredGap>) -> String {
    g.as_ref().map_or_else(
        || "-".into(),
        |g| format!("{:.0}% ({:.2})", g.rate_percent, g.mean_relative_shortfall),
    )
}

pub fn customer_table(s: &CustomerScore) -> String {
    let l = s.loyalty.unwrap_or_default();
    let mut t = String::new();
    let _ = writeln!(t, "customer {}", s.customer_id);
    let rows = [
        ("satisfaction index", num(s.satisfaction_index)),
        ("loyalty index", num(l.index)),
        ("  advocacy", num(l.advocacy)),
        ("  intent", num(l.intent)),
        ("  activity", num(l.activity)),
        ("  recovery", num(l.recovery)),
        (
            "health band",
            format!(
                "{:?}",
                HealthBand::try_from(s.health_band).unwrap_or_default()
            ),
        ),
        ("at risk", s.at_risk.to_string()),
        ("value", format!("{:.2}", s.value)),
        (
            "tier",
            format!("{:?}", Tier::try_from(s.tier).unwrap_or_default()),
        ),
        (
            "latest NPS",
            format!(
                "{:?}",
                NpsCategory::try_from(s.nps_category).unwrap_or_default()
            ),
        ),
        ("open complaints", s.open_complaints.to_string()),
        (
            "surveys / interactions / purchases",
            format!(
                "{} / {} / {}",
                s.survey_count, s.interaction_count, s.purchase_count
            ),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(t, "  {name:<36} {value}");
    }
    t
}

pub fn scope_table(s: &ScopeScore) -> String {
    let l = s.loyalty.unwrap_or_default();
    let c = s.complaints.unwrap_or_default();
    let mut t = String::new();
    let _ = writeln!(t, "scope {}", s.scope);
    let rows = [
        ("satisfaction index", num(s.satisfaction_index)),
        ("loyalty index", num(l.index)),
        (
            "  advocacy / intent",
            format!("{} / {}", num(l.advocacy), num(l.intent)),
        ),
        (
            "  repeat purchase % / recovery",
            format!("{} / {}", num(l.activity), num(l.recovery)),
        ),
        ("CSAT %", num(s.csat_percent)),
        ("NPS", num(s.nps)),
        (
            "CES mean / easy %",
            format!("{} / {}", num(s.ces_mean), num(s.ces_easy_percent)),
        ),
        ("complaints open", c.open.to_string()),
        (
            "  responded / resolved within SLA %",
            format!(
                "{} / {}",
                num(c.responded_within_sla_percent),
                num(c.resolved_within_sla_percent)
            ),
        ),
        ("  mean hours to resolve", num(c.mean_hours_to_resolve)),
        (
            "responses / customers / events",
            format!(
                "{} / {} / {}",
                s.response_count, s.customer_count, s.event_count
            ),
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(t, "  {name:<36} {value}");
    }
    let _ = writeln!(
        t,
        "\n  {:<16} {:>5} {:>5} {:>6} {:>11} {:>6} {:>6} {:>11} {:>6} {:>5} {:>7}",
        "dimension",
        "E",
        "P",
        "gap",
        "promotion",
        "under",
        "proc",
        "behavior",
        "perc",
        "imp",
        "kano"
    );
    for d in &s.dimensions {
        let _ = writeln!(
            t,
            "  {:<16} {:>5} {:>5} {:>6} {:>11} {:>6} {:>6} {:>11} {:>6} {:>5.1} {:>7}",
            d.dimension,
            num(d.mean_expectation),
            num(d.mean_perception),
            num(d.total_gap),
            gap(&d.promotion_gap),
            num(d.understanding_gap),
            num(d.procedure_gap),
            gap(&d.behavior_gap),
            num(d.perception_gap),
            d.importance,
            format!(
                "{:?}",
                KanoClass::try_from(d.kano_class).unwrap_or_default()
            ),
        );
    }
    if !s.shortboard.is_empty() {
        let ranking: Vec<String> = s
            .shortboard
            .iter()
            .map(|e| format!("{} ({:.2})", e.dimension, e.weight))
            .collect();
        let _ = writeln!(t, "\n  shortboard: {}", ranking.join(" > "));
    }
    t
}

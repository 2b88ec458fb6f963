//! `gapwatch bench`: ingest throughput, ack latency, memory, disk per
//! customer, alert latency and restart time, each next to the transport
//! ceiling measured in the same run. How every figure is measured:
//! `docs/PERFORMANCE.md`.
//!
//! Without `--server` the bench starts the server itself: this executable,
//! `serve --listen 127.0.0.1:0 --data-dir TMP`, as a child process (so its
//! RSS and CPU are its own), and reads the bound address from its
//! "gapwatch listening on ADDR" line. The ceiling (`bench-ceiling-server`,
//! see `ceiling`) is started the same way, after gapwatch has stopped.

mod alert_latency;
pub mod ceiling;
mod child;
mod load;
mod stats;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use self::alert_latency::{AlertReport, Subscriber};
use self::child::{Child, Rss, Stop, WorkDir};
use self::load::{Mode, Plan, Prepared, Tally, Timings};
use self::stats::Latency;
use super::workload::Workload;
use gapwatch::proto::{
    config_service_client::ConfigServiceClient, score_service_client::ScoreServiceClient,
    Dimension, GetScopeScoreRequest, PutDimensionRequest,
};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// A running gapwatch to drive (e.g. http://127.0.0.1:50051). Without
    /// it the bench starts `gapwatch serve` as a child process on a
    /// temporary data dir (server RSS and disk use are then measured).
    #[arg(long)]
    server: Option<String>,
    /// How events are sent.
    #[arg(long, value_enum, default_value_t = Mode::Stream)]
    mode: Mode,
    /// Concurrent callers: unary [default: 32], batch [default: 2].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Events per RecordBatch (batch mode), 1..=10000.
    #[arg(long, default_value_t = 1_000)]
    batch_size: usize,
    /// Concurrent StreamEvents streams (stream mode), each pipelined: the
    /// sender never waits for acks.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// HTTP/2 connections the callers or streams are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Events of the measured phase (generated and encoded before the
    /// clock starts).
    #[arg(long, default_value_t = 200_000)]
    events: u32,
    /// Events sent before the measured phase (not counted).
    #[arg(long, default_value_t = 10_000)]
    warmup: u32,
    /// Stop the measured phase after this many seconds (or when --events
    /// run out, whichever comes first).
    #[arg(long)]
    duration: Option<f64>,
    /// Pace sending at this many events per second over all callers or
    /// streams (default: as fast as acks allow). The ceiling always runs
    /// unpaced.
    #[arg(long)]
    rate: Option<f64>,
    /// Distinct customers of the workload (the `gapwatch demo` mix).
    #[arg(long, default_value_t = 100_000)]
    customers: u32,
    /// Workload seed [default: the clock]. Event ids derive from it, so a
    /// repeated seed against the same data dir sends duplicates.
    #[arg(long)]
    seed: Option<u64>,
    /// Attach an alert subscriber and measure alert latency (arrival minus
    /// the ack of the event that caused the transition).
    #[arg(long)]
    alerts: bool,
    /// After the run, stop the server with SIGTERM, restart it on the same
    /// data dir and time it until it listens and answers a health check.
    #[arg(long, conflicts_with = "server")]
    measure_restart: bool,
    /// With --measure-restart: stop the server with SIGKILL, a crash,
    /// instead of SIGTERM. The restart then recovers what the last
    /// checkpoint had not flushed from the write-ahead log.
    #[arg(long, requires = "measure_restart")]
    kill: bool,
    /// Also run the same requests against the transport ceiling (the
    /// default).
    #[arg(long, overrides_with = "no_ceiling")]
    ceiling: bool,
    /// Skip the ceiling run.
    #[arg(long, overrides_with = "ceiling")]
    no_ceiling: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Config file for the server the bench starts (`serve --config`).
    #[arg(long, conflicts_with = "server")]
    server_config: Option<PathBuf>,
    /// Data dir for the server the bench starts (kept afterwards) [default:
    /// a temporary one, removed].
    #[arg(long, conflicts_with = "server")]
    data_dir: Option<PathBuf>,
    /// Keep the temporary folder (data dir and server logs).
    #[arg(long)]
    keep: bool,
}

impl BenchArgs {
    fn plan(&self) -> anyhow::Result<Plan> {
        if self.events == 0 {
            anyhow::bail!("--events must be at least 1");
        }
        if !(1..=10_000).contains(&self.batch_size) {
            anyhow::bail!("--batch-size must be 1..=10000");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            anyhow::bail!("--rate must be a positive number");
        }
        if self.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
            anyhow::bail!("--duration must be a positive number of seconds");
        }
        if self.connections == 0 || self.streams == 0 || self.concurrency == Some(0) {
            anyhow::bail!("--connections, --streams and --concurrency must be at least 1");
        }
        let workers = match self.mode {
            Mode::Unary => self.concurrency.unwrap_or(32),
            Mode::Batch => self.concurrency.unwrap_or(2),
            Mode::Stream => self.streams,
        };
        Ok(Plan {
            mode: self.mode,
            workers,
            batch_size: self.batch_size,
            rate: self.rate,
            duration: self.duration.map(Duration::from_secs_f64),
        })
    }
}

/// The machine, for the report.
#[derive(serde::Serialize)]
struct Machine {
    cpus: usize,
    model: String,
}

impl Machine {
    fn read() -> Self {
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            model,
        }
    }
}

/// Restart timings (`--measure-restart`).
#[derive(serde::Serialize)]
struct Restart {
    /// How the server was stopped: SIGTERM or SIGKILL (`--kill`).
    signal: &'static str,
    /// The signal to the exit.
    shutdown_s: f64,
    /// Events in scope `all` before the stop and after the restart: a
    /// restart that lost an acknowledged event fails the bench instead.
    events_recorded: u64,
    /// Spawn to the "listening" line.
    listening_s: f64,
    /// Spawn to the first SERVING health check.
    serving_s: f64,
    /// RSS of the restarted, idle server.
    rss_bytes: Option<u64>,
}

/// The figures of one server.
#[derive(serde::Serialize)]
struct TargetReport {
    target: &'static str,
    server: String,
    /// Events acknowledged in the measured phase.
    events: u64,
    seconds: f64,
    events_per_s: f64,
    accepted: u64,
    duplicate: u64,
    rejected: u64,
    failed: u64,
    first_error: Option<String>,
    ack_latency: Option<Latency>,
    /// Paced runs: how far the senders fell behind their schedule.
    pacing_max_behind_ms: Option<f64>,
    /// CPU the server used over the measured phase, in cores (CPU seconds
    /// per second), when the bench started it.
    server_cpu_cores: Option<f64>,
    /// The server's CPU time per acknowledged event.
    server_cpu_us_per_event: Option<f64>,
    /// The server's cores by thread group, when the bench started it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    server_cpu_cores_by_thread: BTreeMap<String, f64>,
    /// CPU of the bench itself (the load generator) over the same time.
    client_cpu_cores: Option<f64>,
    /// The whole machine over the same time: cores busy (of `machine.cpus`)
    /// and the share of its CPU time the hypervisor gave to other guests.
    machine_busy_cores: Option<f64>,
    machine_steal_percent: Option<f64>,
    server_rss_bytes: Option<u64>,
    server_peak_rss_bytes: Option<u64>,
    data_dir_bytes: Option<u64>,
    data_dir_allocated_bytes: Option<u64>,
    /// Customers with at least one acknowledged event in this run.
    distinct_customers: u64,
    bytes_per_customer: Option<f64>,
    alerts: Option<AlertReport>,
    restart: Option<Restart>,
}

#[derive(serde::Serialize)]
struct Report {
    command: String,
    machine: Machine,
    mode: Mode,
    workers: usize,
    batch_size: Option<usize>,
    connections: usize,
    events: u32,
    warmup: u32,
    customers: u32,
    seed: u64,
    rate: Option<f64>,
    duration_s: Option<f64>,
    gapwatch: TargetReport,
    ceiling: Option<TargetReport>,
    /// gapwatch events/s ÷ ceiling events/s.
    ratio_to_ceiling: Option<f64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let plan = args.plan()?;
    let seed = args
        .seed
        .unwrap_or_else(|| gapwatch::api::now_millis() as u64);
    let total = args
        .warmup
        .checked_add(args.events)
        .ok_or_else(|| anyhow::anyhow!("--warmup + --events is too large"))?;
    let generating = Instant::now();
    let prepared = {
        let (customers, unary) = (args.customers.max(1), args.mode == Mode::Unary);
        let workload = Workload::new(seed, customers, total, gapwatch::api::now_millis());
        Arc::new(tokio::task::spawn_blocking(move || Prepared::new(workload, unary)).await?)
    };
    eprintln!(
        "bench: {} events ({:.1} MiB encoded) of {} customers generated in {:.1} s (seed {seed})",
        prepared.len(),
        prepared.encoded_bytes() as f64 / MIB,
        prepared.customers.len(),
        generating.elapsed().as_secs_f64()
    );
    let work = WorkDir::create(args.keep)?;

    let gapwatch = match &args.server {
        Some(url) => {
            let mut r = measure(&args, &plan, &prepared, url, args.alerts, None).await?;
            r.server = url.clone();
            r
        }
        None => run_child(&args, &plan, &prepared, &work).await?,
    };
    let ceiling = if args.no_ceiling {
        None
    } else {
        let log = work.path.join("ceiling.log");
        let server = Child::spawn(&[OsString::from("bench-ceiling-server")], &log).await?;
        eprintln!(
            "bench: ceiling server pid {} on {}",
            server.pid, server.addr
        );
        // The ceiling is a capacity: always unpaced.
        let unpaced = Plan {
            rate: None,
            ..plan.clone()
        };
        let measured = measure(
            &args,
            &unpaced,
            &prepared,
            &server.url(),
            false,
            Some(server.pid),
        )
        .await;
        let rss = server.rss();
        server.stop().await?;
        let mut r = measured?;
        r.target = "ceiling";
        r.server = "bench-ceiling-server (child process)".into();
        r.server_rss_bytes = rss.map(|m| m.current);
        r.server_peak_rss_bytes = rss.map(|m| m.peak);
        r.distinct_customers = 0;
        Some(r)
    };
    let ratio = ceiling
        .as_ref()
        .filter(|c| c.events_per_s > 0.0)
        .map(|c| gapwatch.events_per_s / c.events_per_s);
    let problems =
        gapwatch.rejected + gapwatch.failed + ceiling.as_ref().map_or(0, |c| c.rejected + c.failed);
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        machine: Machine::read(),
        mode: plan.mode,
        workers: plan.workers,
        batch_size: (plan.mode == Mode::Batch).then_some(plan.batch_size),
        connections: args.connections,
        events: args.events,
        warmup: args.warmup,
        customers: args.customers,
        seed,
        rate: args.rate,
        duration_s: args.duration,
        gapwatch,
        ceiling,
        ratio_to_ceiling: ratio,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(if problems > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn serve_args(data_dir: &Path, config: Option<&Path>) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["serve", "--listen", "127.0.0.1:0", "--data-dir"]
        .map(OsString::from)
        .into();
    args.push(data_dir.into());
    if let Some(config) = config {
        args.push("--config".into());
        args.push(config.into());
    }
    args
}

/// Starts gapwatch, measures, then stops (and restarts) it.
async fn run_child(
    args: &BenchArgs,
    plan: &Plan,
    prepared: &Arc<Prepared>,
    work: &WorkDir,
) -> anyhow::Result<TargetReport> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| work.path.join("data"));
    let log = work.path.join("gapwatch.log");
    let serve = serve_args(&data_dir, args.server_config.as_deref());
    let server = Child::spawn(&serve, &log).await?;
    eprintln!(
        "bench: gapwatch pid {} on {} (data dir {}, log {})",
        server.pid,
        server.addr,
        data_dir.display(),
        log.display()
    );
    let measured = async {
        configure(&server.url()).await?;
        measure(
            args,
            plan,
            prepared,
            &server.url(),
            args.alerts,
            Some(server.pid),
        )
        .await
    }
    .await;
    let rss = server.rss();
    let mut r = match measured {
        Ok(r) => r,
        Err(e) => {
            let _ = server.stop().await;
            return Err(e);
        }
    };
    r.server = format!("gapwatch serve (child process), {}", data_dir.display());
    r.server_rss_bytes = rss.map(|m| m.current);
    r.server_peak_rss_bytes = rss.map(|m| m.peak);
    let (apparent, allocated) = child::dir_size(&data_dir)?;
    r.data_dir_bytes = Some(apparent);
    r.data_dir_allocated_bytes = Some(allocated);
    r.bytes_per_customer =
        (r.distinct_customers > 0).then(|| allocated as f64 / r.distinct_customers as f64);

    if !args.measure_restart {
        server.stop().await?;
        return Ok(r);
    }
    let before = events_recorded(&server.url()).await;
    let how = if args.kill { Stop::Kill } else { Stop::Term };
    let shutdown = server.signal(how).await?;
    let before = before?;
    let again = Child::spawn(&serve, &log).await?;
    let serving = again.wait_serving().await;
    let rss = again.rss();
    let listening = again.listening_after;
    let after = match &serving {
        Ok(_) => events_recorded(&again.url()).await,
        Err(_) => Ok(0),
    };
    again.stop().await?;
    let (serving, after) = (serving?, after?);
    if after != before {
        anyhow::bail!(
            "after {} and a restart scope `all` holds {after} events, {before} before: \
             acknowledged events were lost (server log: {})",
            how.name(),
            log.display()
        );
    }
    r.restart = Some(Restart {
        signal: how.name(),
        shutdown_s: shutdown.as_secs_f64(),
        events_recorded: after,
        listening_s: listening.as_secs_f64(),
        serving_s: serving.as_secs_f64(),
        rss_bytes: rss.map(|m: Rss| m.current),
    });
    Ok(r)
}

/// The events scope `all` holds: every event the server accepted.
async fn events_recorded(url: &str) -> anyhow::Result<u64> {
    let channel = Endpoint::from_shared(url.to_string())?.connect().await?;
    let scope = ScoreServiceClient::new(channel)
        .get_scope_score(GetScopeScoreRequest {
            scope: "all".into(),
            as_of_time: None,
        })
        .await?
        .into_inner();
    Ok(scope.event_count)
}

/// Configures responsiveness as `gapwatch demo` does (M and S enable the
/// understanding and procedure gaps), on a server the bench started.
async fn configure(url: &str) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(url.to_string())?.connect().await?;
    ConfigServiceClient::new(channel)
        .put_dimension(PutDimensionRequest {
            dimension: Some(Dimension {
                name: "responsiveness".into(),
                display_name: "Responsiveness".into(),
                predicted_expectation: Some(5.5),
                standard_level: Some(5.75),
            }),
        })
        .await?;
    Ok(())
}

async fn connect(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow::anyhow!("bad server address {url}: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {url}: {e}"))
}

/// Warm-up, then the measured phase, against `url` (served by process
/// `server_pid` when the bench started it: its CPU time is measured).
async fn measure(
    args: &BenchArgs,
    plan: &Plan,
    prepared: &Arc<Prepared>,
    url: &str,
    alerts: bool,
    server_pid: Option<u32>,
) -> anyhow::Result<TargetReport> {
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(connect(url).await?);
    }
    let t0 = Instant::now();
    let timings = Arc::new(Timings::new(prepared.len(), t0));
    let subscriber = if alerts {
        Some(Subscriber::start(connect(url).await?, t0).await?)
    } else {
        None
    };
    let warmup = args.warmup as usize;
    if warmup > 0 {
        let tally = Arc::new(Tally::default());
        let warm = Plan {
            duration: None,
            ..plan.clone()
        };
        load::run_phase(prepared, &timings, &tally, &channels, &warm, 0..warmup).await?;
        let (_, _, rejected, failed) = tally.get();
        if rejected + failed > 0 {
            eprintln!(
                "bench: warm-up: {rejected} rejected, {failed} failed: {}",
                tally
                    .first_error
                    .lock()
                    .map(|e| e.clone().unwrap_or_default())
                    .unwrap_or_default()
            );
        }
    }
    let tally = Arc::new(Tally::default());
    let cpu = CpuClock::start(server_pid);
    let phase = load::run_phase(
        prepared,
        &timings,
        &tally,
        &channels,
        plan,
        warmup..prepared.len(),
    )
    .await?;
    let cpu = cpu.stop();
    let alerts = match subscriber {
        Some(s) => Some(alert_latency::collect(s, prepared, &timings).await?),
        None => None,
    };
    let latencies = phase.latencies(&timings);
    let distinct: HashSet<u32> = (0..prepared.len())
        .filter(|&i| timings.acked(i).is_some())
        .map(|i| prepared.meta[i].customer)
        .collect();
    let (accepted, duplicate, rejected, failed) = tally.get();
    let first_error = tally.first_error.lock().ok().and_then(|e| e.clone());
    Ok(TargetReport {
        target: "gapwatch",
        server: url.to_string(),
        events: phase.acked,
        seconds: phase.seconds(),
        events_per_s: phase.events_per_second(),
        accepted,
        duplicate,
        rejected,
        failed,
        first_error,
        ack_latency: Latency::of_sorted(&latencies),
        pacing_max_behind_ms: plan.rate.map(|_| phase.max_behind.as_secs_f64() * 1e3),
        server_cpu_cores: cpu.server_cores,
        server_cpu_us_per_event: cpu
            .server_seconds
            .filter(|_| phase.acked > 0)
            .map(|s| s * 1e6 / phase.acked as f64),
        server_cpu_cores_by_thread: cpu.server_cores_by_thread,
        client_cpu_cores: cpu.client_cores,
        machine_busy_cores: cpu.machine_busy_cores,
        machine_steal_percent: cpu.machine_steal_percent,
        server_rss_bytes: None,
        server_peak_rss_bytes: None,
        data_dir_bytes: None,
        data_dir_allocated_bytes: None,
        distinct_customers: distinct.len() as u64,
        bytes_per_customer: None,
        alerts,
        restart: None,
    })
}

/// CPU time of the server and of the bench across the measured phase: on a
/// machine both share, what one uses the other cannot.
struct CpuClock {
    server_pid: Option<u32>,
    started: Instant,
    server: Option<f64>,
    server_threads: BTreeMap<String, f64>,
    client: Option<f64>,
    machine: Option<child::MachineTicks>,
}

struct CpuUse {
    server_seconds: Option<f64>,
    server_cores: Option<f64>,
    /// By thread group (the writer, the commit thread, tokio's workers,
    /// sled's I/O threads…): where the server's cores went.
    server_cores_by_thread: BTreeMap<String, f64>,
    client_cores: Option<f64>,
    machine_busy_cores: Option<f64>,
    machine_steal_percent: Option<f64>,
}

impl CpuClock {
    fn start(server_pid: Option<u32>) -> Self {
        Self {
            server_pid,
            started: Instant::now(),
            server: server_pid.and_then(child::cpu_seconds),
            server_threads: server_pid
                .map(child::cpu_seconds_by_thread)
                .unwrap_or_default(),
            client: child::cpu_seconds(std::process::id()),
            machine: child::machine_ticks(),
        }
    }

    fn stop(self) -> CpuUse {
        let wall = self.started.elapsed().as_secs_f64();
        let since = |before: Option<f64>, pid: Option<u32>| {
            Some(child::cpu_seconds(pid?)? - before?).filter(|s| *s >= 0.0)
        };
        let server_seconds = since(self.server, self.server_pid);
        let client_seconds = since(self.client, Some(std::process::id()));
        let cores = |s: Option<f64>| s.filter(|_| wall > 0.0).map(|s| s / wall);
        let threads_now = self
            .server_pid
            .map(child::cpu_seconds_by_thread)
            .unwrap_or_default();
        let server_cores_by_thread = threads_now
            .into_iter()
            .filter_map(|(group, now)| {
                let before = self.server_threads.get(&group).copied().unwrap_or(0.0);
                // A group whose threads exited meanwhile can read negative.
                Some((group, cores(Some(now - before).filter(|s| *s >= 0.0))?))
            })
            .collect();
        let machine = self.machine.zip(child::machine_ticks()).and_then(|(a, b)| {
            let busy = b.busy.checked_sub(a.busy)?;
            let steal = b.steal.checked_sub(a.steal)?;
            let total = b.total.checked_sub(a.total).filter(|t| *t > 0)?;
            Some((busy as f64 / 100.0, 100.0 * steal as f64 / total as f64))
        });
        CpuUse {
            server_seconds,
            server_cores: cores(server_seconds),
            server_cores_by_thread,
            client_cores: cores(client_seconds),
            machine_busy_cores: cores(machine.map(|(busy, _)| busy)),
            machine_steal_percent: machine.map(|(_, steal)| steal),
        }
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn mib(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| format!("{:.1} MiB", b as f64 / MIB))
}

fn thousands(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn latency_line(l: Option<&Latency>) -> String {
    l.map_or("n/a".into(), |l| {
        format!(
            "p50 {:.2} ms  p99 {:.2} ms  p999 {:.2} ms  max {:.2} ms",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        )
    })
}

fn human(r: &Report) -> String {
    let mut o = String::new();
    let how = match r.mode {
        Mode::Unary => format!("unary, {} concurrent callers", r.workers),
        Mode::Batch => format!(
            "batch of {}, {} concurrent callers",
            r.batch_size.unwrap_or_default(),
            r.workers
        ),
        Mode::Stream => format!("stream, {} pipelined streams", r.workers),
    };
    let _ = writeln!(
        o,
        "gapwatch bench: {how} over {} connection(s); {} events (+{} warm-up) of {} customers, seed {}{}",
        r.connections,
        thousands(f64::from(r.events)),
        thousands(f64::from(r.warmup)),
        thousands(f64::from(r.customers)),
        r.seed,
        r.rate
            .map_or(String::new(), |x| format!(", paced at {} events/s", thousands(x)))
    );
    let _ = writeln!(o, "machine: {} CPUs, {}", r.machine.cpus, r.machine.model);
    for t in std::iter::once(&r.gapwatch).chain(&r.ceiling) {
        let _ = writeln!(o, "\n[{}] {}", t.target, t.server);
        let _ = writeln!(
            o,
            "  throughput       {} events/s ({} events in {:.2} s)",
            thousands(t.events_per_s),
            thousands(t.events as f64),
            t.seconds
        );
        if t.target == "gapwatch" {
            let ratio = r.ratio_to_ceiling.map_or("n/a (--no-ceiling)".into(), |x| {
                format!("{:.1}%", x * 100.0)
            });
            let _ = writeln!(o, "  of the ceiling   {ratio}");
        }
        let _ = writeln!(
            o,
            "  ack latency      {}",
            latency_line(t.ack_latency.as_ref())
        );
        if let Some(behind) = t.pacing_max_behind_ms {
            let _ = writeln!(
                o,
                "  pacing           fell behind schedule by at most {behind:.1} ms"
            );
        }
        let _ = writeln!(
            o,
            "  outcomes         accepted {}  duplicate {}  rejected {}  failed {}",
            t.accepted, t.duplicate, t.rejected, t.failed
        );
        if let Some(e) = &t.first_error {
            let _ = writeln!(o, "  first error      {e}");
        }
        if let Some(cores) = t.server_cpu_cores {
            let per_event = t
                .server_cpu_us_per_event
                .map_or(String::new(), |us| format!(" ({us:.1} µs per event)"));
            let client = t
                .client_cpu_cores
                .map_or(String::new(), |c| format!(", bench client {c:.2} cores"));
            let _ = writeln!(
                o,
                "  CPU              server {cores:.2} cores{per_event}{client}"
            );
        }
        let busy: Vec<String> = t
            .server_cpu_cores_by_thread
            .iter()
            .filter(|(_, cores)| **cores >= 0.005)
            .map(|(group, cores)| format!("{group} {cores:.2}"))
            .collect();
        if !busy.is_empty() {
            let _ = writeln!(o, "  server threads   {} (cores)", busy.join(", "));
        }
        if let (Some(cores), Some(steal)) = (t.machine_busy_cores, t.machine_steal_percent) {
            let _ = writeln!(
                o,
                "  machine          {cores:.2} of {} cores busy, steal {steal:.1}%",
                r.machine.cpus
            );
        }
        let _ = writeln!(
            o,
            "  server RSS       {} (peak {})",
            mib(t.server_rss_bytes),
            mib(t.server_peak_rss_bytes)
        );
        if t.target == "gapwatch" {
            let disk = match (t.data_dir_allocated_bytes, t.bytes_per_customer) {
                (Some(bytes), Some(per)) => format!(
                    "{} on disk for {} customers: {} bytes/customer",
                    mib(Some(bytes)),
                    thousands(t.distinct_customers as f64),
                    thousands(per)
                ),
                _ => "n/a (--server)".into(),
            };
            let _ = writeln!(o, "  data dir         {disk}");
        }
        if let Some(a) = &t.alerts {
            let _ = writeln!(
                o,
                "  alerts           {} transitions; CHURN_RISK FIRING {} (matched to a cancellation {})",
                a.transitions, a.churn_firing, a.churn_matched
            );
            let _ = writeln!(
                o,
                "  alert latency    CHURN_RISK, from ack:  {}",
                latency_line(a.churn_latency.as_ref())
            );
            let _ = writeln!(
                o,
                "                   CHURN_RISK, from send: {}",
                latency_line(a.churn_from_send.as_ref())
            );
            let _ = writeln!(
                o,
                "                   all kinds, from ack ({} matched, {} unmatched): {}",
                a.all_matched,
                a.all_unmatched,
                latency_line(a.all_latency.as_ref())
            );
            let _ = writeln!(
                o,
                "                   before their ack (counted as 0): churn {}, all {}",
                a.churn_before_ack, a.all_before_ack
            );
        }
        if let Some(x) = &t.restart {
            let _ = writeln!(
                o,
                "  restart          {} to exit {:.2} s; spawn to listening {:.2} s, to SERVING {:.2} s; {} events kept; idle RSS after restart {}",
                x.signal,
                x.shutdown_s,
                x.listening_s,
                x.serving_s,
                thousands(x.events_recorded as f64),
                mib(x.rss_bytes)
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }

    #[test]
    fn plan_defaults_per_mode() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            b: BenchArgs,
        }
        let plan = |argv: &[&str]| {
            T::try_parse_from(std::iter::once("t").chain(argv.iter().copied()))
                .expect("parses")
                .b
                .plan()
        };
        let p = plan(&["--mode", "unary"]).expect("valid");
        assert_eq!((p.mode, p.workers), (Mode::Unary, 32));
        let p = plan(&["--mode", "batch", "--batch-size", "500"]).expect("valid");
        assert_eq!((p.workers, p.batch_size), (2, 500));
        let p = plan(&["--streams", "3", "--rate", "5000"]).expect("valid");
        assert_eq!((p.mode, p.workers, p.rate), (Mode::Stream, 3, Some(5000.0)));
        assert!(plan(&["--batch-size", "20000"]).is_err());
        assert!(plan(&["--rate", "0"]).is_err());
        let t = T::try_parse_from(["t", "--no-ceiling"]).expect("parses");
        assert!(t.b.no_ceiling);
        let t = T::try_parse_from(["t", "--no-ceiling", "--ceiling"]).expect("parses");
        assert!(!t.b.no_ceiling);
        assert!(T::try_parse_from(["t", "--server", "http://x", "--measure-restart"]).is_err());
        assert!(
            T::try_parse_from(["t", "--kill"]).is_err(),
            "--kill needs --measure-restart"
        );
        let t = T::try_parse_from(["t", "--measure-restart", "--kill"]).expect("parses");
        assert!(t.b.kill);
    }
}

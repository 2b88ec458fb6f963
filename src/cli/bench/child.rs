//! A server the bench starts as a child process (this executable, `serve`
//! or `bench-ceiling-server`), so its memory and CPU are its own.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The line `serve` (and the ceiling server) print once ready.
const LISTENING: &str = "gapwatch listening on ";

/// (tokio's `process` feature is off in this crate: std processes, waited
/// on blocking threads.)
/// How the bench stops its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: a graceful stop (drain, checkpoint).
    Term,
    /// SIGKILL: a crash, as far as the data dir can tell.
    Kill,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Kill => "SIGKILL",
        }
    }
}

pub struct Child {
    /// `None` once waited for.
    child: Option<std::process::Child>,
    pub pid: u32,
    pub addr: SocketAddr,
    spawned: Instant,
    /// From spawn to the listening line.
    pub listening_after: Duration,
    log: PathBuf,
}

impl Child {
    /// Starts `current_exe ARGS`, its stderr to `log`, and waits for its
    /// listening line.
    pub async fn spawn(args: &[OsString], log: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let stderr = std::fs::File::create(log)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", log.display()))?;
        let spawned = Instant::now();
        let mut child = std::process::Command::new(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", exe.display()))?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let (found_tx, found) = tokio::sync::oneshot::channel();
        // Reads the listening line, then keeps draining stdout so the child
        // never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut found_tx = Some(found_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix(LISTENING) {
                    if let Some(tx) = found_tx.take() {
                        let _ = tx.send(addr.trim().parse::<SocketAddr>());
                    }
                }
            }
        });
        let mut this = Self {
            child: Some(child),
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            spawned,
            listening_after: Duration::ZERO,
            log: log.to_path_buf(),
        };
        match tokio::time::timeout(Duration::from_secs(120), found).await {
            Ok(Ok(Ok(addr))) => {
                this.addr = addr;
                this.listening_after = spawned.elapsed();
                Ok(this)
            }
            Ok(Ok(Err(e))) => anyhow::bail!("bad listening line: {e}"),
            Ok(Err(_)) => anyhow::bail!(
                "the server exited before listening; its log:\n{}",
                tail(log)
            ),
            Err(_) => anyhow::bail!("the server did not listen within 120 s:\n{}", tail(log)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Time since spawn.
    pub fn since_spawn(&self) -> Duration {
        self.spawned.elapsed()
    }

    pub fn rss(&self) -> Option<Rss> {
        Rss::of(self.pid)
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took.
    pub async fn stop(self) -> anyhow::Result<Duration> {
        self.signal(Stop::Term).await
    }

    /// Sends `how` and waits for the exit; returns how long it took.
    pub async fn signal(mut self, how: Stop) -> anyhow::Result<Duration> {
        let mut child = self.child.take().expect("not yet stopped");
        let pid = self.pid.to_string();
        let asked = Instant::now();
        let flag = match how {
            Stop::Term => "-TERM",
            Stop::Kill => "-KILL",
        };
        // std cannot send SIGTERM; `kill` is in every base image.
        let signalled = tokio::task::spawn_blocking(move || {
            let sent = std::process::Command::new("kill")
                .args([flag, &pid])
                .status()
                .is_ok_and(|s| s.success());
            if !sent {
                let _ = child.kill();
            }
            child.wait()
        });
        match tokio::time::timeout(Duration::from_secs(60), signalled).await {
            Ok(Ok(Ok(exit))) if exit.success() || how == Stop::Kill => Ok(asked.elapsed()),
            Ok(Ok(Ok(exit))) => anyhow::bail!(
                "the server exited with {exit} on SIGTERM; its log:\n{}",
                tail(&self.log)
            ),
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &self.pid.to_string()])
                    .status();
                anyhow::bail!("the server did not stop within 60 s of {}", how.name())
            }
        }
    }

    /// Waits for the first SERVING answer to a gRPC health check; returns
    /// the time since spawn.
    pub async fn wait_serving(&self) -> anyhow::Result<Duration> {
        use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
        let deadline = Instant::now() + Duration::from_secs(120);
        let endpoint = tonic::transport::Endpoint::from_shared(self.url())?;
        loop {
            if let Ok(channel) = endpoint.connect().await {
                let answer = HealthClient::new(channel)
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if answer.is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32) {
                    return Ok(self.since_spawn());
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!("the server was not SERVING within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // An error path: never leave a server behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a log file.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Resident memory of a process, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Rss {
    /// VmRSS, bytes.
    pub current: u64,
    /// VmHWM (the peak), bytes.
    pub peak: u64,
}

impl Rss {
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        };
        Some(Self {
            current: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }
}

/// CPU time a process has used so far (user + system, every thread), from
/// `/proc/PID/stat`; `None` where there is no such file.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// CPU seconds used so far by each group of a process's threads: its
/// threads' names (`/proc/PID/task/TID/stat`) without a trailing number,
/// so that `sled-io-3` counts as `sled-io`. Empty where there is no such
/// directory. A thread that has exited is no longer counted.
pub fn cpu_seconds_by_thread(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut groups = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let (Some(name), Some(seconds)) = (thread_group(&stat), parse_cpu_seconds(&stat)) {
            *groups.entry(name).or_insert(0.0) += seconds;
        }
    }
    groups
}

/// The thread's name (field 2 of its stat line, in parentheses) without a
/// trailing `-N` or `N`.
fn thread_group(stat: &str) -> Option<String> {
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let base = base.strip_suffix('-').unwrap_or(base);
    Some(if base.is_empty() { name } else { base }.to_string())
}

/// The whole machine's CPU time so far, from the `cpu` line of
/// `/proc/stat` (in clock ticks; see `parse_cpu_seconds`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MachineTicks {
    /// Every state but idle and iowait: what ran.
    pub busy: u64,
    /// Time the hypervisor ran something else while this guest wanted to
    /// run (counted in `busy` too).
    pub steal: u64,
    pub total: u64,
}

pub fn machine_ticks() -> Option<MachineTicks> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// `cpu  user nice system idle iowait irq softirq steal …` (guest time is
/// already inside user and nice, so it is not added again).
fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = fields[..] else {
        return None;
    };
    let busy = user + nice + system + irq + softirq + steal;
    Some(MachineTicks {
        busy,
        steal,
        total: busy + idle + iowait,
    })
}

/// `utime` and `stime`, fields 14 and 15 of a `/proc/PID/stat` line, in
/// clock ticks of 1/100 s (`USER_HZ`, fixed at 100 in Linux's interface to
/// user space). The name (field 2) may hold spaces and parentheses, so the
/// fields are counted from its closing one.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) is the 12th.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Bytes of the files under `dir`: (apparent size, allocated on disk).
pub fn dir_size(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                apparent += meta.len();
                allocated += meta.blocks() * 512;
            }
        }
    }
    Ok((apparent, allocated))
}

/// A scratch folder for the data dir and the server logs, removed on drop
/// unless kept.
pub struct WorkDir {
    pub path: PathBuf,
    keep: bool,
}

impl WorkDir {
    pub fn create(keep: bool) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("gapwatch-bench-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        Ok(Self { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("bench: kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_machine_line_of_proc_stat() {
        let stat = "cpu  100 5 40 800 20 0 3 12 7 0\ncpu0 50 2 20 400 10 0 1 6 3 0\nintr 1 2\n";
        let ticks = parse_machine_ticks(stat).expect("parsed");
        assert_eq!(
            ticks,
            MachineTicks {
                busy: 100 + 5 + 40 + 3 + 12,
                steal: 12,
                total: 100 + 5 + 40 + 800 + 20 + 3 + 12,
            }
        );
        assert_eq!(parse_machine_ticks("cpu0 1 2 3\n"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2 3\n"), None, "too few fields");
    }

    #[test]
    fn cpu_time_is_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (gw (serve) x) S 1 4242 4242 0 -1 4194560 2417 0 0 0 \
                    1234 567 0 0 20 0 9 0 123456 1000000 5000 18446744073709551615";
        assert_eq!(parse_cpu_seconds(stat), Some(18.01));
        assert_eq!(parse_cpu_seconds("4242 (cut) S 1 2"), None);
        assert_eq!(thread_group(stat).as_deref(), Some("gw (serve) x"));
        let sled = "9 (sled-io-12) S 1 1 1 0 -1 0 0 0 0 0 5 1 0 0 20 0 1 0 1 0 0";
        assert_eq!(thread_group(sled).as_deref(), Some("sled-io"));
        assert_eq!(parse_cpu_seconds(sled), Some(0.06));
        let writer = "9 (gapwatch-writer) R 1 1 1 0 -1 0 0 0 0 0 7 0 0 0 20 0 1 0 1 0 0";
        assert_eq!(thread_group(writer).as_deref(), Some("gapwatch-writer"));
        assert_eq!(thread_group("9 (42) S").as_deref(), Some("42"));
        assert_eq!(parse_cpu_seconds("no name at all"), None);
    }
}

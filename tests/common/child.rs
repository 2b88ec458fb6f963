//! The real `gapwatch` binary as a child process: `gapwatch serve` on
//! `127.0.0.1:0` with a data dir the test owns, for crash, restart and
//! signal tests.
//!
//! The child gets only the configuration the test passes: every
//! `GAPWATCH*` variable inherited from the test's environment is removed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gapwatch::proto::{Event, StreamEventsRequest};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

/// What the server prints first on stdout, followed by its address.
const LISTENING: &str = "gapwatch listening on ";

/// `gapwatch serve --listen 127.0.0.1:0 --data-dir DATA_DIR ARGS…` with
/// `RUST_LOG=warn` and `env` (after the inherited `GAPWATCH*` variables are
/// removed); stdin null, stdout piped, stderr inherited.
pub fn serve_command(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gapwatch"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The test's own environment must not configure the child.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GAPWATCH") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// Polls until `child` exits; past `timeout` it is killed and the test
/// fails (the timeout only bounds a hung child).
pub async fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "gapwatch (pid {}) did not exit within {timeout:?}",
                child.id()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `gapwatch serve` child, killed (`kill -9`) and reaped when
/// dropped.
pub struct ServerProcess {
    child: Child,
    addr: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts `gapwatch serve` on `data_dir` with extra `env` variables
    /// (such as `GAPWATCH__…` settings) and extra `args` (see
    /// [`serve_command`]), reads `gapwatch listening on ADDR` from its
    /// stdout and keeps draining the rest in a thread, so the child never
    /// blocks on a full pipe.
    pub fn spawn(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let child = serve_command(data_dir, env, args)
            .spawn()
            .expect("spawn gapwatch");
        // Owned before anything can fail, so a panic below kills the child.
        let mut process = Self {
            child,
            addr: String::new(),
        };
        let mut stdout = BufReader::new(process.child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the first stdout line");
        process.addr = line
            .trim()
            .strip_prefix(LISTENING)
            .unwrap_or_else(|| panic!("unexpected first stdout line {line:?}"))
            .to_string();
        // Ends at EOF, when the child exits.
        std::thread::spawn(move || for _ in stdout.lines() {});
        process
    }

    /// Process id of the child (not yet reaped while `self` lives, unless
    /// [`Self::kill`] or [`Self::wait_exit`] reaped it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `HOST:PORT` the child listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// A new connection (each call opens its own TCP connection).
    pub async fn connect(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the child")
    }

    /// Sends SIGTERM with `kill -TERM PID`. The child is not reaped until
    /// [`Self::wait_exit`], so the pid is still its own.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {}: {status}", self.pid());
    }

    /// `kill -9` and reap the child.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap the child");
    }

    /// Polls until the child exits (see [`wait_exit`]).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        wait_exit(&mut self.child, timeout).await
    }

    /// A memory field of `/proc/PID/status` (`VmRSS`, or `VmHWM` for the
    /// peak), in bytes.
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        kib * 1024
    }

    /// Resident set size of the child (`VmRSS`), in bytes.
    pub fn rss(&self) -> u64 {
        self.memory("VmRSS")
    }
}

/// A task feeding a `StreamEvents` request stream with `event(0)`,
/// `event(1)`, … (at most `max` events) until the stream is dropped, as
/// when the connection to a killed child dies.
pub struct Producer {
    /// Events the task tried to hand over: an upper bound of what was sent.
    attempted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Producer {
    /// Starts the task; returns it and the request stream to pass to
    /// `stream_events`.
    pub fn spawn(
        event: impl Fn(u64) -> Event + Send + 'static,
        max: u64,
    ) -> (Self, ReceiverStream<StreamEventsRequest>) {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let attempted = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let attempted = attempted.clone();
            async move {
                for i in 0..max {
                    attempted.store(i + 1, Ordering::SeqCst);
                    let request = StreamEventsRequest {
                        event: Some(event(i)),
                    };
                    if tx.send(request).await.is_err() {
                        break;
                    }
                }
            }
        });
        (Self { attempted, task }, ReceiverStream::new(rx))
    }

    /// Stops the task; returns how many events it tried to hand over (an
    /// upper bound of what was sent).
    pub async fn stop(self) -> u64 {
        self.task.abort();
        let _ = self.task.await;
        self.attempted.load(Ordering::SeqCst)
    }
}

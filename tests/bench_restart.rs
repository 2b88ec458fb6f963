//! `gapwatch bench --measure-restart --kill`: the bench loads its own
//! server, kills it (SIGKILL) and restarts it; every event acknowledged
//! before the kill must still be there, and the report says how long the
//! restart took.

use std::process::Command;

#[test]
fn a_killed_server_restarts_with_every_acknowledged_event() {
    let work = tempfile::tempdir().unwrap();
    let data_dir = work.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_gapwatch"))
        .args([
            "bench",
            "--customers",
            "300",
            "--events",
            "4000",
            "--warmup",
            "200",
            "--no-ceiling",
            "--measure-restart",
            "--kill",
            "--json",
            // The server log stays (in a folder of its own, removed below).
            "--keep",
            "--data-dir",
        ])
        .arg(&data_dir)
        // No checkpoint during the run: the restart must recover every
        // commit from the write-ahead log.
        .env("GAPWATCH__STORAGE__CHECKPOINT_INTERVAL_MS", "600000")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed: {stderr}");

    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let gapwatch = &report["gapwatch"];
    assert_eq!(gapwatch["accepted"], 4000, "{gapwatch}");
    // CPU over the measured phase: the server's, and the whole machine's
    // (busy cores and steal), so a reader can tell a saturated machine.
    assert!(
        gapwatch["server_cpu_cores"].as_f64().unwrap() > 0.0,
        "{gapwatch}"
    );
    let busy = gapwatch["machine_busy_cores"].as_f64().unwrap();
    let cpus = report["machine"]["cpus"].as_f64().unwrap();
    // Ticks of 10 ms over a short phase: a loose bound, against a wrong unit.
    assert!(busy > 0.0 && busy <= cpus * 1.5, "{busy} of {cpus}");
    let steal = gapwatch["machine_steal_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&steal), "{steal}");
    let restart = &gapwatch["restart"];
    assert_eq!(restart["signal"], "SIGKILL");
    // Warm-up and measured events, all accepted (fresh data dir).
    assert_eq!(restart["events_recorded"], 4200, "{restart}");
    let serving = restart["serving_s"].as_f64().unwrap();
    let listening = restart["listening_s"].as_f64().unwrap();
    assert!(serving >= listening && listening > 0.0, "{restart}");

    // The restart did recover from the log: the server says so.
    let log = stderr
        .lines()
        .find_map(|l| l.split(", log ").nth(1))
        .and_then(|rest| rest.strip_suffix(')'))
        .expect("the bench names its server log");
    let log = std::path::Path::new(log);
    let text = std::fs::read_to_string(log).unwrap();
    std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
    assert!(
        text.contains("applied the replayed writes to sled"),
        "{text}"
    );
}

//! What the benchmarks share about the machine they run on: its load, and the signals that
//! end a benchmark early (each then drops, and so stops, what it started).

/// The machine's 1-minute load average: the figures are only comparable at similar loads.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// Resolves on the first SIGINT, SIGTERM or SIGHUP. Tokio keeps handling them afterwards, so
/// a second Ctrl-C cannot cut the cleanup short.
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

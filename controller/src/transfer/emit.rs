//! `crucible samples-emit`: the pod's trusted `samples` container (a native sidecar in the
//! controller's image). It holds no credentials and has no network: it waits until the kubelet
//! stops it, which happens once the pod's other containers have ended (or when the pod is
//! stopped), then prints the samples file the reporting step left on the samples volume as a
//! frame ([`transport`]) on its own log, for the controller to read. It never follows a symlink
//! or blocks on a FIFO the sandbox put there, and it stops at the log budget with a clear error
//! instead of printing more than the kubelet keeps before rotating the log.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::files::open_regular;
use crate::samples::spec::SAMPLES_PATH;
use crate::samples::transport::{self, LINE_BYTES};

/// zstd level of the frame: fast enough (hundreds of MB/s a core) to fit the termination grace
/// period, at a ratio of five to ten for JSON Lines.
const ZSTD_LEVEL: i32 = 3;

/// Flags of `crucible samples-emit`.
#[derive(clap::Args, Debug)]
pub struct EmitArgs {
    /// The samples file.
    #[arg(long, default_value = SAMPLES_PATH)]
    pub path: PathBuf,
    /// Most bytes the frame may take on the log; keep it under the kubelet's
    /// `containerLogMaxSize` (default 10 MiB), past which the log is rotated and its start lost.
    #[arg(long, default_value_t = DEFAULT_MAX_OUTPUT)]
    pub max_output: u64,
    /// Most bytes of the samples file.
    #[arg(long, default_value_t = crate::samples::protocol::Limits::default().max_bytes)]
    pub max_bytes: u64,
}

/// Default [`EmitArgs::max_output`]: 9 MiB, under the kubelet's default 10 MiB log size.
pub const DEFAULT_MAX_OUTPUT: u64 = 9 * 1024 * 1024;

/// Waits for the kubelet's SIGTERM, then prints the frame on stdout.
///
/// # Errors
/// The signal handler cannot be installed, or stdout cannot be written.
pub async fn run(args: EmitArgs) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let stdout = std::io::stdout();
    emit(
        &args.path,
        args.max_bytes,
        args.max_output,
        &mut stdout.lock(),
    )
}

/// Prints the frame of the file at `path` on `out`: [`transport::NONE`] when there is none,
/// an error line when it cannot be read or is too large.
///
/// # Errors
/// `out` cannot be written.
pub fn emit(
    path: &Path,
    max_bytes: u64,
    max_output: u64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let file = match open_regular(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return writeln!(out, "{}", transport::NONE);
        }
        Err(e) => {
            let line = transport::error_line(&format!("the samples file is not read: {e}"));
            return writeln!(out, "{line}");
        }
    };
    writeln!(out, "{}", transport::BEGIN)?;
    let mut frame = Lines {
        out: BufWriter::new(&mut *out),
        pending: Vec::with_capacity(LINE_BYTES),
        hasher: Sha256::new(),
        compressed: 0,
        written: 0,
        max_output,
    };
    match compress(file, max_bytes, &mut frame) {
        Ok(()) => {
            frame.flush_line()?;
            let digest = crate::digest::hex(&frame.hasher.clone().finalize());
            let end = transport::end_line(frame.compressed, &digest);
            writeln!(frame.out, "{end}")?;
            frame.out.flush()
        }
        Err(Problem::Output(e)) => Err(e),
        Err(Problem::Refused(why)) => {
            writeln!(frame.out, "{}", transport::error_line(&why))?;
            frame.out.flush()
        }
    }
}

enum Problem {
    /// Writing the log failed: nothing more can be said.
    Output(std::io::Error),
    /// The samples cannot be carried: said on the log.
    Refused(String),
}

/// Streams `file` through zstd into `frame`, bounded by `max_bytes` read.
fn compress(
    file: std::fs::File,
    max_bytes: u64,
    frame: &mut Lines<'_, impl Write>,
) -> Result<(), Problem> {
    let mut encoder =
        zstd::stream::write::Encoder::new(frame, ZSTD_LEVEL).map_err(Problem::Output)?;
    // The store keeps these bytes as they are: their window is what every reader accepts.
    encoder
        .window_log(transport::ZSTD_WINDOW_LOG)
        .map_err(Problem::Output)?;
    let mut input = file.take(max_bytes.saturating_add(1));
    let mut chunk = vec![0u8; 64 * 1024];
    let mut read = 0u64;
    loop {
        let n = input
            .read(&mut chunk)
            .map_err(|e| Problem::Refused(format!("reading the samples file: {e}")))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > max_bytes {
            return Err(Problem::Refused(format!(
                "the samples file has more than {max_bytes} bytes, the most a run may write"
            )));
        }
        encoder.write_all(&chunk[..n]).map_err(over_budget)?;
    }
    encoder.finish().map_err(over_budget)?;
    Ok(())
}

/// A write the frame refused for its budget is said on the log; any other is the log's own.
fn over_budget(e: std::io::Error) -> Problem {
    if e.kind() == std::io::ErrorKind::FileTooLarge {
        Problem::Refused(e.to_string())
    } else {
        Problem::Output(e)
    }
}

/// Compressed bytes in, data lines out, within the budget.
struct Lines<'a, W: Write> {
    out: BufWriter<&'a mut W>,
    pending: Vec<u8>,
    hasher: Sha256,
    compressed: u64,
    written: u64,
    max_output: u64,
}

impl<W: Write> Lines<'_, W> {
    fn flush_line(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let line = transport::data_line(&self.pending);
        self.written += line.len() as u64 + 1;
        if self.written > self.max_output {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "the samples compress to more than the {} bytes the samples log may carry (samples-emit --max-output, under the kubelet's containerLogMaxSize)",
                    self.max_output
                ),
            ));
        }
        self.hasher.update(&self.pending);
        self.compressed += self.pending.len() as u64;
        self.pending.clear();
        writeln!(self.out, "{line}")
    }
}

impl<W: Write> Write for Lines<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = LINE_BYTES - self.pending.len();
        let n = room.min(buf.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == LINE_BYTES {
            self.flush_line()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
#[path = "emit_tests.rs"]
mod tests;

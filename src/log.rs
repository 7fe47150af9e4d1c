//! Logging setup: `RUST_LOG`-style filtering, text or JSON lines on stdout, written by a
//! background thread so a slow log reader never stalls a request.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::MakeWriterExt;

use crate::config::LogFormat;

/// Keeps the log writer alive; logs written after it is dropped may be lost.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _guard: tracing_appender::non_blocking::WorkerGuard,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the default filter (`info`).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Lossy under extreme pressure instead of blocking request threads on stdout.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(65_536)
        .finish(std::io::stdout());
    let writer = writer.with_max_level(tracing::Level::TRACE);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let result = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    if let Err(e) = result {
        // Already installed (e.g. by an embedding program): keep theirs.
        eprintln!("whopgate: logging already initialised: {e}");
    }
    LogGuard { _guard: guard }
}

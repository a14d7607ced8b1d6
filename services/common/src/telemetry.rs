//! One tracing initialiser for every binary: JSON lines or human lines, each field once per line
//! (see [`format`]), colours only on a terminal.

mod format;

use std::io::IsTerminal as _;

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::JsonFields;

use crate::config::{LogArgs, LogFormat};

/// The subscriber every binary installs, writing to `writer`: `format` lines filtered by
/// `filter` (EnvFilter syntax), with ANSI colours (human lines only) when `ansi`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    ansi: bool,
    writer: W,
) -> anyhow::Result<impl Subscriber + Send + Sync + 'static>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid --log-filter {filter:?}: {e}"))?;
    Ok(tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi && format == LogFormat::Human)
        .fmt_fields(JsonFields::new())
        .event_format(format::Lines {
            json: format == LogFormat::Json,
        })
        .finish())
}

/// True when colours belong on stderr: it is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>). A log file or a pipe (systemd's journal, `scripts/stack`'s log
/// files, a test harness) never gets escape codes.
pub fn stderr_wants_colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber: JSON lines or human lines on stderr, filtered by
/// `--log-filter`, so stdout stays free for a binary's own output. Records of the `log` crate
/// are logged too.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let subscriber = subscriber(
        args.log_format,
        &args.log_filter,
        stderr_wants_colour(),
        std::io::stderr,
    )?;
    tracing_subscriber::util::SubscriberInitExt::try_init(subscriber)
        .map_err(|e| anyhow::anyhow!("cannot install the tracing subscriber: {e}"))
}

/// Installs a human subscriber for tests, writing through the test harness; repeated calls are
/// harmless.
pub fn init_for_tests() {
    let filter =
        EnvFilter::try_from_env("SMRTSHARE_TEST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

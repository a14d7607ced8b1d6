//! One tracing initialiser for every binary.

use tracing_subscriber::EnvFilter;

use crate::config::{LogArgs, LogFormat};

/// Installs the global subscriber: JSON lines or human-readable, filtered by `--log-filter`.
/// Logs go to stderr, so stdout stays free for a binary's own output.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&args.log_filter)
        .map_err(|e| anyhow::anyhow!("invalid --log-filter {:?}: {e}", args.log_filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder.with_target(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the tracing subscriber: {e}"))
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

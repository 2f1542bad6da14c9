//! The log format of `enifab` (every subcommand): human text (the default) or JSON, one object
//! per line, for log collectors (`--log-format json`, `ENIFAB_LOG_FORMAT=json`).
//!
//! Must not: print anything but the logs to stderr's stream (stdout carries command output).
//! The filter stays `RUST_LOG`'s, whatever the format.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: `2026-11-27T10:00:00Z  INFO enifab::serve: enifab serving listen=…`.
    #[default]
    Text,
    /// For machines: `{"timestamp":…,"level":"INFO","fields":{"message":…},"target":…}`.
    Json,
}

/// Install the global subscriber: `RUST_LOG`, or `default` (`info`, `warn`, …), to stderr.
pub fn init(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = install(format, filter, std::io::stderr);
}

/// Install a subscriber writing to `writer`; an error if one is installed already.
fn install<W>(format: LogFormat, filter: EnvFilter, writer: W) -> Result<(), tracing_subscriber::util::TryInitError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::util::SubscriberInitExt;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => builder.finish().try_init(),
        LogFormat::Json => builder.json().finish().try_init(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// The JSON subscriber, for a test to run with as its default (not installed globally).
    fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
    where
        W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
    {
        tracing_subscriber::fmt().with_env_filter(EnvFilter::new("info")).with_writer(writer).json().finish()
    }

    /// A writer into a shared buffer (tests).
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn json_logs_are_one_object_per_line_with_level_and_message() {
        let buf = Buffer::default();
        tracing::subscriber::with_default(json_subscriber(buf.clone()), || {
            tracing::info!(eni = "eni-1", "node registered");
            tracing::warn!("second line");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["fields"]["message"], "node registered");
        assert_eq!(lines[0]["fields"]["eni"], "eni-1");
        assert_eq!(lines[1]["level"], "WARN");
    }
}

//! Where the binaries (`egress-router`, and `egress-cni`, which uses this crate) write the
//! library's `tracing` events and their own: one line per event on stderr, and in a file when
//! asked. Human text by default — `egress-router: debug: plan step  2: nft add table …`, with
//! an RFC 3339 timestamp first where the binary asks for one — or one JSON object per line with
//! `EGRESS_LOG_FORMAT=json`.
//!
//! The library itself never installs a subscriber; a program that embeds it chooses its own.

use std::{
    fmt,
    fs::File,
    io::{self, Write},
    sync::{Arc, OnceLock},
};

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    filter::LevelFilter,
    fmt::{
        format::Writer,
        time::{FormatTime, SystemTime},
        FmtContext, FormatEvent, FormatFields, MakeWriter,
    },
    layer::SubscriberExt,
    registry::LookupSpan,
    reload,
    util::SubscriberInitExt,
    Registry,
};

/// The variable that selects JSON lines (`json`) instead of text.
pub const FORMAT_VARIABLE: &str = "EGRESS_LOG_FORMAT";

/// The installed log output: its level and its file can still change (a CNI plugin learns
/// them from its configuration, after the first line may have been written).
pub struct Output {
    level: reload::Handle<LevelFilter, Registry>,
    file: Arc<OnceLock<File>>,
}

impl Output {
    /// Writes events up to `level` from now on.
    pub fn set_level(&self, level: LevelFilter) {
        // Only fails if the subscriber is gone, when there is nothing left to filter.
        let _ = self.level.modify(|l| *l = level);
    }

    /// Writes every line to `file` too, from now on (the first file given stays).
    pub fn also_to(&self, file: File) {
        let _ = self.file.set(file);
    }
}

/// Installs the process's log output: events up to `level` on stderr, as text prefixed with
/// `program` (and a timestamp when `timestamps`), or JSON when `EGRESS_LOG_FORMAT=json`.
pub fn install(program: &'static str, level: LevelFilter, timestamps: bool) -> Output {
    let json = std::env::var(FORMAT_VARIABLE).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let file = Arc::new(OnceLock::new());
    let writer = Tee(file.clone());
    let (filter, level) = reload::Layer::new(level);
    let registry = tracing_subscriber::registry().with(filter);
    // A second install (a test calling main twice) keeps the first: ignore the error.
    let _ = match json {
        true => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(writer),
            )
            .try_init(),
        false => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(Text {
                        program,
                        timestamps,
                    })
                    .with_writer(writer),
            )
            .try_init(),
    };
    Output { level, file }
}

/// The human format: `[time ]program: level: [span fields: ]message[ field=value …]`.
struct Text {
    program: &'static str,
    timestamps: bool,
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.timestamps {
            SystemTime.format_time(&mut w)?;
            w.write_char(' ')?;
        }
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        write!(w, "{}: {level}: ", self.program)?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(w, "{}: ", fields.fields)?;
                    }
                }
            }
        }
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// Stderr, and the file once one is given.
#[derive(Clone)]
struct Tee(Arc<OnceLock<File>>);

impl<'a> MakeWriter<'a> for Tee {
    type Writer = TeeWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        TeeWriter {
            file: self.0.get(),
            line: Vec::new(),
        }
    }
}

/// One event's line, written to each place at once when dropped (so that lines of two
/// threads never interleave).
struct TeeWriter<'a> {
    file: Option<&'a File>,
    line: Vec<u8>,
}

impl Write for TeeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TeeWriter<'_> {
    fn drop(&mut self) {
        // A log line that cannot be written is dropped: there is nowhere to report it.
        let _ = io::stderr().write_all(&self.line);
        if let Some(mut f) = self.file {
            let _ = f.write_all(&self.line);
        }
    }
}

//! Where the binaries (`egress-router`, and `egress-cni`, which uses this crate) write the
//! library's `tracing` events and their own: one line per event on stderr, and in a file when
//! asked. Human text by default — `egress-router: debug: plan step  2: nft add table …`, with
//! an RFC 3339 timestamp first where the binary asks for one — or one JSON object per line with
//! `EGRESS_LOG_FORMAT=json`.
//!
//! The library itself never installs a subscriber; a program that embeds it chooses its own.
//!
//! What a line holds can come from the other side of a privilege boundary: a link name a pod
//! with `CAP_NET_ADMIN` chose (the kernel allows any byte but `/`, `:`, whitespace and NUL in
//! one, ESC included), a value of a network configuration, an error's message quoting either.
//! No such value can forge a line or drive the terminal: the text format escapes control
//! characters in messages and fields ([`escape_control`]), and JSON escapes them as strings.

use std::{
    borrow::Cow,
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
                        write!(w, "{}: ", escape_control(&fields.fields))?;
                    }
                }
            }
        }
        let mut fields = String::new();
        ctx.format_fields(Writer::new(&mut fields), event)?;
        writeln!(w, "{}", escape_control(&fields))
    }
}

/// `s` with its control characters (C0, DEL, C1) and the Unicode line and paragraph
/// separators escaped as Rust writes them (`\n`, `\u{1b}`, `\u{2028}`): a value from elsewhere
/// (a network configuration, a link name, an error quoting them), safe to put in a line of a
/// log. Everything else is left as it is.
///
/// ```
/// use egress_openshift::logging::escape_control;
///
/// assert_eq!(
///     escape_control("203.0.113.9\negress-cni: error: forged\u{1b}[2J"),
///     "203.0.113.9\\negress-cni: error: forged\\u{1b}[2J"
/// );
/// assert_eq!(escape_control("net1 ünïcode"), "net1 ünïcode");
/// ```
pub fn escape_control(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    if !s.contains(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{info, info_span, warn};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// What was logged, every line kept.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A link name a pod chose (ESC and a newline in it), in a span field, an event field and
    /// the message (as an error quoting it would).
    const FORGED: &str = "eth0\negress-router: error: forged\u{1b}[2J";

    fn log_forged() {
        let _span = info_span!("apply", link = %FORGED).entered();
        warn!(link = %FORGED, "not ours: {FORGED}");
        info!(link = ?FORGED, "the next line");
    }

    #[test]
    fn the_text_format_escapes_control_characters_so_that_no_line_is_forged() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .event_format(Text {
                    program: "egress-router",
                    timestamps: false,
                })
                .with_writer(out.clone()),
        );
        tracing::subscriber::with_default(subscriber, log_forged);
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        let escaped = r"eth0\negress-router: error: forged\u{1b}[2J";
        assert_eq!(
            lines,
            [
                // tracing-subscriber writes ESC in a message as `\x1b` itself (not `\n`).
                format!(
                    "egress-router: warn: link={escaped}: not ours: eth0\\negress-router: \
                     error: forged\\x1b[2J link={escaped}"
                ),
                // `?` formats with Debug, which escapes already, and nothing is left to escape.
                format!(r#"egress-router: info: link={escaped}: the next line link="{escaped}""#),
            ],
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }

    #[test]
    fn json_lines_escape_control_characters_as_strings() {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_writer(out.clone()),
        );
        tracing::subscriber::with_default(subscriber, log_forged);
        let text = out.text();
        assert!(!text.contains('\u{1b}'), "{text:?}");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["fields"]["link"], FORGED);
        assert_eq!(lines[0]["span"]["link"], FORGED);
        assert_eq!(lines[0]["fields"]["message"], format!("not ours: {FORGED}"));
    }
}

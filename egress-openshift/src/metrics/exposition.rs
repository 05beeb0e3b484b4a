//! The exposition of one scrape in the format the scraper asks for: the metric families are
//! gathered once ([`Families`]) and encoded either as OpenMetrics 1.0 (by the
//! `prometheus-client` crate) or as the Prometheus text format 0.0.4 (here: the crate writes
//! OpenMetrics only). [`Format::negotiate`] reads the `Accept` header as Prometheus' own client
//! libraries do (client_golang's `expfmt.NegotiateIncludingOpenMetrics`).

use std::fmt::Write;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family as ClientFamily, gauge::Gauge},
    registry::Registry,
};

/// An exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: what a scraper gets unless it asks for OpenMetrics.
    Text,
    /// OpenMetrics, as version 1.0.0 or 0.0.1 was asked for (the text is the same).
    OpenMetrics {
        /// `1.0.0` or `0.0.1`.
        version: &'static str,
    },
}

impl Format {
    /// The format for a request's `Accept` header: its entries by decreasing `q` (in their
    /// order where equal), the first that names `text/plain` (version 0.0.4 or none) or
    /// `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) wins; anything else
    /// (`*/*`, no header) is the text format.
    ///
    /// ```
    /// use egress_openshift::metrics::Format;
    /// // What Prometheus 2.42 sends.
    /// let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
    ///     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics { version: "1.0.0" });
    /// assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
    /// assert_eq!(Format::negotiate(None), Format::Text);
    /// ```
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut entries: Vec<(f32, &str, Option<&str>)> = accept
            .unwrap_or_default()
            .split(',')
            .filter_map(|entry| {
                let mut parts = entry.split(';').map(str::trim);
                let media = parts.next().filter(|m| !m.is_empty())?;
                let (mut q, mut version) = (1.0, None);
                for param in parts {
                    match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                        Some(("q", v)) => q = v.parse().unwrap_or(0.0),
                        Some(("version", v)) => version = Some(v.trim_matches('"')),
                        _ => {}
                    }
                }
                (q > 0.0).then_some((q, media, version))
            })
            .collect();
        // Stable: equal weights keep the client's order.
        entries.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, media, version) in entries {
            if media.eq_ignore_ascii_case("text/plain") && matches!(version, None | Some("0.0.4")) {
                return Format::Text;
            }
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                match version {
                    None | Some("0.0.1") => return Format::OpenMetrics { version: "0.0.1" },
                    Some("1.0.0") => return Format::OpenMetrics { version: "1.0.0" },
                    Some(_) => {}
                }
            }
        }
        Format::Text
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics { version: "0.0.1" } => {
                "application/openmetrics-text; version=0.0.1; charset=utf-8"
            }
            Format::OpenMetrics { .. } => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            }
        }
    }
}

/// The labels of one sample, in order.
pub(crate) type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
}

/// One metric family: its name (a counter's without `_total`), help, type and samples.
#[derive(Debug)]
pub(crate) struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<(Labels, f64)>,
}

/// The families of one scrape, in the order they are exposed.
#[derive(Debug, Default)]
pub(crate) struct Families(Vec<Family>);

impl Families {
    /// A new family; its samples are added with [`Families::sample`].
    pub(crate) fn family(&mut self, kind: Kind, name: &'static str, help: &'static str) {
        self.0.push(Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        });
    }

    /// A sample of the family added last.
    pub(crate) fn sample(&mut self, labels: Labels, value: f64) {
        self.0
            .last_mut()
            .expect("a family first")
            .samples
            .push((labels, value));
    }

    /// The exposition in `format`.
    pub(crate) fn encode(&self, format: Format) -> String {
        match format {
            Format::Text => self.text(),
            Format::OpenMetrics { .. } => self.openmetrics(),
        }
    }

    /// OpenMetrics 1.0, by `prometheus-client` (every family, with or without samples).
    fn openmetrics(&self) -> String {
        let mut registry = Registry::default();
        for f in &self.0 {
            match f.kind {
                Kind::Counter => {
                    let family = ClientFamily::<Labels, Counter>::default();
                    registry.register(f.name, f.help, family.clone());
                    for (labels, value) in &f.samples {
                        // Counters are counts: whole numbers.
                        family.get_or_create(labels).inc_by(*value as u64);
                    }
                }
                Kind::Gauge => {
                    let family =
                        ClientFamily::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
                    registry.register(f.name, f.help, family.clone());
                    for (labels, value) in &f.samples {
                        family.get_or_create(labels).set(*value);
                    }
                }
            }
        }
        let mut out = String::new();
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }

    /// The Prometheus text format 0.0.4: `# HELP` and `# TYPE` name the samples (a counter's
    /// with its `_total`); families without samples are left out, as client_golang does.
    fn text(&self) -> String {
        let mut out = String::new();
        for f in self.0.iter().filter(|f| !f.samples.is_empty()) {
            let (name, kind) = match f.kind {
                Kind::Counter => (format!("{}_total", f.name), "counter"),
                Kind::Gauge => (f.name.to_string(), "gauge"),
            };
            let help = f.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} {kind}");
            for (labels, value) in &f.samples {
                out += &name;
                if !labels.is_empty() {
                    let labels: Vec<String> = labels
                        .iter()
                        .map(|(k, v)| {
                            let v = v
                                .replace('\\', "\\\\")
                                .replace('"', "\\\"")
                                .replace('\n', "\\n");
                            format!("{k}=\"{v}\"")
                        })
                        .collect();
                    let _ = write!(out, "{{{}}}", labels.join(","));
                }
                let _ = writeln!(out, " {}", number(*value));
            }
        }
        out
    }
}

/// A sample value as the text format writes it (`3`, `0.25`, `+Inf`, `NaN`).
fn number(v: f64) -> String {
    match v {
        v if v.is_nan() => "NaN".into(),
        f64::INFINITY => "+Inf".into(),
        f64::NEG_INFINITY => "-Inf".into(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_pick_the_format_as_client_golang_does() {
        let om1 = Format::OpenMetrics { version: "1.0.0" };
        let om0 = Format::OpenMetrics { version: "0.0.1" };
        for (accept, format) in [
            (None, Format::Text),
            (Some(""), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("application/json"), Format::Text),
            (Some("application/openmetrics-text"), om0),
            (Some("application/openmetrics-text; version=1.0.0"), om1),
            (Some("application/openmetrics-text;version=0.0.1"), om0),
            (
                Some("application/openmetrics-text;version=2.0.0"),
                Format::Text,
            ),
            (
                Some("application/openmetrics-text;version=1.0.0;q=0"),
                Format::Text,
            ),
            // The weights decide, not the order.
            (
                Some("text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0"),
                om1,
            ),
            (
                Some("application/openmetrics-text;version=1.0.0;q=0.2,text/plain;q=0.9"),
                Format::Text,
            ),
            // Prometheus 2.42's scrape.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                     version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                om1,
            ),
        ] {
            assert_eq!(Format::negotiate(accept), format, "{accept:?}");
        }
        assert_eq!(
            Format::Text.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            om0.content_type(),
            "application/openmetrics-text; version=0.0.1; charset=utf-8"
        );
    }

    /// `escaped`: a help and a label value that need escaping in the text format (the labels
    /// the router exposes never do: names, protocols, ports, addresses, drift kinds).
    fn families(escaped: bool) -> Families {
        let mut f = Families::default();
        let (help, value) = match escaped {
            true => ("Things, \\ counted\nacross lines", "q\"uo\\te\nd"),
            false => ("Things", "quoted"),
        };
        f.family(Kind::Counter, "x_things", help);
        f.sample(vec![("a", value.into())], 3.0);
        f.family(Kind::Gauge, "x_level", "A level");
        f.sample(vec![], 0.25);
        f.sample(vec![("b", "1".into())], f64::INFINITY);
        f.family(Kind::Gauge, "x_unset", "Nothing yet");
        f
    }

    #[test]
    fn the_text_format_names_each_sample_family_with_help_and_type() {
        assert_eq!(
            families(true).encode(Format::Text),
            "# HELP x_things_total Things, \\\\ counted\\nacross lines.\n\
             # TYPE x_things_total counter\n\
             x_things_total{a=\"q\\\"uo\\\\te\\nd\"} 3\n\
             # HELP x_level A level.\n\
             # TYPE x_level gauge\n\
             x_level 0.25\n\
             x_level{b=\"1\"} +Inf\n"
        );
    }

    #[test]
    fn openmetrics_keeps_empty_families_and_ends_with_eof() {
        let text = families(false).encode(Format::OpenMetrics { version: "1.0.0" });
        for line in [
            "# TYPE x_things counter",
            "x_things_total{a=\"quoted\"} 3",
            "x_level{} 0.25",
            "# TYPE x_unset gauge",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
    }
}

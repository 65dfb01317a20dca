//! Writing HTML safely: every value that did not come from this crate's
//! own literals goes through [`esc`], which escapes the five characters
//! that could end a text node or an attribute. Pages are plain strings
//! built with `write!`; there is no template language to forget an escape
//! in, and no script: every page works without JavaScript.

use std::fmt::{self, Display, Write};
use std::time::{Duration, SystemTime};

use corral_proto::protobuf::Timestamp;

/// A value escaped for HTML text and double- or single-quoted attributes.
pub struct Escaped<'a>(&'a str);

/// Escapes `text` for HTML.
pub fn esc(text: &str) -> Escaped<'_> {
    Escaped(text)
}

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// Bytes shown as text: UTF-8 with invalid sequences replaced, escaped.
pub fn esc_bytes(bytes: &[u8]) -> String {
    esc(&String::from_utf8_lossy(bytes)).to_string()
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}h1{overflow-wrap:anywhere}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}code,pre{font-family:monospace}pre{background:#f7f7f7;padding:.5em;overflow:auto;max-height:40em;white-space:pre-wrap}\
nav a{margin-right:1em}.failed,.error{color:#a00}.ok{color:#070}.muted{color:#777}\
.timeline{display:flex;width:100%;max-width:60em;height:1.4em;border:1px solid #999;margin:.5em 0}\
.timeline div{height:100%;overflow:hidden;font-size:.75em;color:#fff;white-space:nowrap}\
.p0{background:#888}.p1{background:#2a6fb0}.p2{background:#c07a12}.p3{background:#2e8b57}.p4{background:#7b4fa0}\
form.inline{display:inline}button{cursor:pointer}";

/// One HTML page being written.
pub struct Page {
    title: String,
    body: String,
    refresh: Option<u32>,
}

impl Page {
    /// A page titled `title` (escaped when written).
    pub fn new(title: impl Into<String>) -> Page {
        Page {
            title: title.into(),
            body: String::new(),
            refresh: None,
        }
    }

    /// Appends markup this crate wrote (dynamic parts already escaped).
    pub fn push_html(&mut self, html: &str) {
        self.body.push_str(html);
    }

    /// Reloads the page every `seconds` (a live stage without script).
    pub fn refresh(&mut self, seconds: u32) {
        self.refresh = Some(seconds);
    }

    /// The finished document.
    pub fn finish(self) -> String {
        let refresh = self
            .refresh
            .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
            .unwrap_or_default();
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
             <title>{} · Corral</title><style>{STYLE}</style></head><body>\
             <nav><a href=\"/\">Farm</a><a href=\"/executions\">Executions</a>\
             <a href=\"/invocations\">Invocations</a><a href=\"/metrics\">Metrics</a></nav>\
             <h1>{}</h1>\n{}</body></html>\n",
            esc(&self.title),
            esc(&self.title),
            self.body
        )
    }
}

impl Write for Page {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.body.push_str(s);
        Ok(())
    }
}

/// A duration as people read it: `850 µs`, `12.3 ms`, `4.56 s`, `3 min 20 s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 0.001 {
        format!("{} µs", d.as_micros())
    } else if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else if secs < 120.0 {
        format!("{secs:.2} s")
    } else {
        let s = d.as_secs();
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// A byte count with a binary unit.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A wall-clock time as `2026-12-03 12:13:02.123 UTC`.
pub fn time(at: SystemTime) -> String {
    match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => civil(d.as_secs() as i64, d.subsec_millis()),
        Err(_) => "before 1970".into(),
    }
}

/// A protobuf timestamp, as [`time`] writes it.
pub fn timestamp(t: &Timestamp) -> String {
    let millis = u32::try_from(t.nanos.max(0) / 1_000_000).unwrap_or(0);
    civil(t.seconds, millis)
}

/// Seconds since the epoch to a UTC date and time (the proleptic
/// Gregorian calendar, by days since 0000-03-01).
fn civil(seconds: i64, millis: u32) -> String {
    let days = seconds.div_euclid(86_400);
    let rem = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_character_that_could_end_text_or_an_attribute() {
        let hostile = "<script>alert('x')</script> & \"q\"";
        assert_eq!(
            esc(hostile).to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("plain").to_string(), "plain");
        assert_eq!(esc_bytes(b"a\xffb<"), "a\u{fffd}b&lt;");
    }

    #[test]
    fn the_title_is_escaped_too() {
        let page = Page::new("<b>").finish();
        assert!(page.contains("<title>&lt;b&gt; · Corral</title>"));
        assert!(!page.contains("<h1><b>"));
    }

    #[test]
    fn times_and_sizes_read_well() {
        assert_eq!(civil(0, 0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(civil(1_796_300_000, 5), "2026-12-03 12:13:20.005 UTC");
        assert_eq!(civil(951_782_400, 0), "2000-02-29 00:00:00.000 UTC");
        assert_eq!(duration(Duration::from_millis(1500)), "1.50 s");
        assert_eq!(duration(Duration::from_secs(200)), "3 min 20 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}

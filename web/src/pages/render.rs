//! Pieces several pages show: a digest with its links, a Command, an
//! rpc status, the timeline of an execution's phases, and the command line
//! that reproduces an action.

use std::fmt::Write;

use corral_cas::DigestFunction;
use corral_proto::protobuf::Timestamp;
use corral_proto::reapi;

use crate::html::{esc, timestamp, Page};
use crate::links;

/// A digest as `hash/size` in monospace, linked to `url`.
pub fn digest_link(url: &str, d: &reapi::Digest) -> String {
    format!(
        "<a href=\"{}\"><code>{}/{}</code></a>",
        esc(url),
        esc(&d.hash),
        d.size_bytes
    )
}

/// A word for a POSIX shell: as is when it is plainly safe, else in
/// single quotes.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The `corral runner exec --action …` line that reruns an action here.
pub fn runner_exec_line(
    instance: &str,
    function: DigestFunction,
    action: &reapi::Digest,
    remote: &str,
) -> String {
    let mut words = vec![
        "corral".to_string(),
        "runner".into(),
        "exec".into(),
        "--action".into(),
        format!("{}/{}", action.hash, action.size_bytes),
        "--remote".into(),
        remote.to_string(),
    ];
    if !instance.is_empty() {
        words.push("--instance".into());
        words.push(instance.to_string());
    }
    if function != DigestFunction::Sha256 {
        words.push("--digest-function".into());
        words.push(function.name().to_string());
    }
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A platform's properties as a table.
fn platform(page: &mut Page, p: Option<&reapi::Platform>) {
    let props = p.map(|p| p.properties.as_slice()).unwrap_or_default();
    if props.is_empty() {
        page.push_html("<p class=\"muted\">no platform properties</p>");
        return;
    }
    page.push_html("<table><tr><th>property</th><th>value</th></tr>");
    for prop in props {
        let _ = write!(
            page,
            "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
            esc(&prop.name),
            esc(&prop.value)
        );
    }
    page.push_html("</table>");
}

/// A Command: arguments, environment, platform, working directory and
/// outputs.
pub fn command(page: &mut Page, c: &reapi::Command) {
    page.push_html("<h3>Arguments</h3><ol>");
    for arg in &c.arguments {
        let _ = write!(page, "<li><code>{}</code></li>", esc(arg));
    }
    let line: Vec<String> = c.arguments.iter().map(|a| shell_quote(a)).collect();
    let _ = write!(page, "</ol><pre>{}</pre>", esc(&line.join(" ")));
    let wd = if c.working_directory.is_empty() {
        "(the input root)"
    } else {
        &c.working_directory
    };
    let _ = write!(
        page,
        "<p>Working directory: <code>{}</code></p><h3>Environment</h3>",
        esc(wd)
    );
    if c.environment_variables.is_empty() {
        page.push_html("<p class=\"muted\">none</p>");
    } else {
        page.push_html("<table><tr><th>name</th><th>value</th></tr>");
        for v in &c.environment_variables {
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                esc(&v.name),
                esc(&v.value)
            );
        }
        page.push_html("</table>");
    }
    page.push_html("<h3>Platform</h3>");
    #[allow(deprecated)]
    platform(page, c.platform.as_ref());
    page.push_html("<h3>Outputs</h3><ul>");
    #[allow(deprecated)]
    let legacy = c.output_files.iter().chain(&c.output_directories);
    let mut any = false;
    for path in c.output_paths.iter().chain(legacy) {
        any = true;
        let _ = write!(page, "<li><code>{}</code></li>", esc(path));
    }
    if !any {
        page.push_html("<li class=\"muted\">none</li>");
    }
    page.push_html("</ul>");
}

/// An Action's own fields (its Command and input root are linked).
pub fn action(page: &mut Page, instance: &str, function: DigestFunction, a: &reapi::Action) {
    page.push_html("<table>");
    if let Some(d) = &a.command_digest {
        let url = links::blob(instance, function, d, "command", None);
        let _ = write!(
            page,
            "<tr><th>Command</th><td>{}</td></tr>",
            digest_link(&url, d)
        );
    }
    if let Some(d) = &a.input_root_digest {
        let url = links::blob(instance, function, d, "directory", None);
        let _ = write!(
            page,
            "<tr><th>Input root</th><td>{}</td></tr>",
            digest_link(&url, d)
        );
    }
    let timeout = a
        .timeout
        .as_ref()
        .map_or("the farm's default".to_string(), |t| {
            format!("{} s", t.seconds)
        });
    let _ = write!(
        page,
        "<tr><th>Timeout</th><td>{}</td></tr><tr><th>Cacheable</th><td>{}</td></tr>\
         <tr><th>Salt</th><td><code>{}</code></td></tr></table>",
        esc(&timeout),
        if a.do_not_cache {
            "no (do_not_cache)"
        } else {
            "yes"
        },
        esc(&hex::encode(&a.salt))
    );
    if a.platform
        .as_ref()
        .is_some_and(|p| !p.properties.is_empty())
    {
        page.push_html("<h3>Action platform</h3>");
        platform(page, a.platform.as_ref());
    }
}

/// An rpc status as a line, marked as an error unless OK.
pub fn status(page: &mut Page, s: Option<&corral_proto::rpc::Status>) {
    let code = s.map_or(0, |s| s.code);
    let name = crate::rpc::code_name(tonic::Code::from_i32(code));
    let class = if code == 0 { "ok" } else { "error" };
    let message = s.map(|s| s.message.as_str()).unwrap_or("");
    let _ = write!(
        page,
        "<p>Status: <span class=\"{class}\">{name}</span> {}</p>",
        esc(message)
    );
}

fn seconds(t: &Timestamp) -> f64 {
    t.seconds as f64 + f64::from(t.nanos) / 1e9
}

/// The phases of an execution as a bar, each as wide as it took, and the
/// timestamps as a table.
pub fn timeline(page: &mut Page, m: &reapi::ExecutedActionMetadata) {
    let phases = [
        ("queued", &m.queued_timestamp, &m.worker_start_timestamp),
        (
            "input fetch",
            &m.input_fetch_start_timestamp,
            &m.input_fetch_completed_timestamp,
        ),
        (
            "execution",
            &m.execution_start_timestamp,
            &m.execution_completed_timestamp,
        ),
        (
            "output upload",
            &m.output_upload_start_timestamp,
            &m.output_upload_completed_timestamp,
        ),
    ];
    let known: Vec<(usize, &str, f64, f64)> = phases
        .iter()
        .enumerate()
        .filter_map(|(i, (name, a, b))| {
            Some((i, *name, seconds(a.as_ref()?), seconds(b.as_ref()?)))
        })
        .collect();
    let total: f64 = known.iter().map(|(_, _, a, b)| (b - a).max(0.0)).sum();
    if total > 0.0 {
        page.push_html("<div class=\"timeline\">");
        for (i, name, a, b) in &known {
            let took = (b - a).max(0.0);
            let _ = write!(
                page,
                "<div class=\"p{i}\" style=\"width:{:.2}%\" title=\"{name}: {took:.3} s\">{name}</div>",
                took / total * 100.0
            );
        }
        page.push_html("</div>");
    }
    page.push_html("<table><tr><th>phase</th><th>start</th><th>end</th><th>took</th></tr>");
    for (name, a, b) in phases {
        let cell = |t: &Option<Timestamp>| t.as_ref().map_or("—".into(), timestamp);
        let took = match (a, b) {
            (Some(a), Some(b)) => format!("{:.3} s", (seconds(b) - seconds(a)).max(0.0)),
            _ => "—".into(),
        };
        let _ = write!(
            page,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{took}</td></tr>",
            cell(a),
            cell(b)
        );
    }
    let _ = write!(
        page,
        "</table><p>Worker: <code>{}</code></p>",
        esc(&m.worker)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("a/b.c"), "a/b.c");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's <x>"), "'it'\\''s <x>'");
        let d = reapi::Digest {
            hash: "ab".into(),
            size_bytes: 3,
        };
        assert_eq!(
            runner_exec_line("team a", DigestFunction::Blake3, &d, "http://h:1"),
            "corral runner exec --action ab/3 --remote http://h:1 --instance 'team a' --digest-function blake3"
        );
    }
}

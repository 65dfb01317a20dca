//! An ActionResult as the action and CAS pages show it: exit code, stdout
//! and stderr inline (the first [`INLINE`] bytes; the whole as a
//! download), outputs with download links, the execution's timeline,
//! resource use and limits hit, and the image it ran in.

use std::fmt::Write;
use std::time::Duration;

use bytes::Bytes;
use corral_cas::{BlobStore, BoundedStore, Digest, DigestFunction, RequestContext};
use corral_proto::reapi;
use corral_proto::runner::v1 as runner;
use corral_proto::worker::v1::ResolvedImage;
use prost::Message;

use super::render::{digest_link, timeline};
use crate::html::{bytes as size, duration, esc, esc_bytes, Page};
use crate::links;

/// Bytes of a blob shown inline at most.
pub const INLINE: u64 = 64 << 10;

/// The first [`INLINE`] bytes of a blob, and whether that is all of it.
pub async fn head(
    cas: &BoundedStore,
    ctx: &RequestContext,
    digest: &Digest,
) -> corral_cas::Result<(Bytes, bool)> {
    let n = digest.size().min(INLINE);
    let stream = cas.read(ctx, digest, 0, Some(n)).await?;
    let data = corral_cas::store::collect(stream, n).await?;
    Ok((data, digest.size() <= INLINE))
}

/// Where a result's blobs are read: the CAS, under which instance.
pub struct Source<'a> {
    /// The CAS.
    pub cas: &'a BoundedStore,
    /// The reader's context for the instance.
    pub ctx: &'a RequestContext,
    /// The instance name, for links.
    pub instance: &'a str,
    /// The digest function, for links.
    pub function: DigestFunction,
}

/// One of stdout and stderr: inline bytes, or the head of its blob.
async fn stream(
    page: &mut Page,
    src: &Source<'_>,
    name: &str,
    raw: &[u8],
    d: Option<&reapi::Digest>,
) {
    let _ = write!(page, "<h3>{name}</h3>");
    if !raw.is_empty() {
        let _ = write!(page, "<pre id=\"{name}\">{}</pre>", esc_bytes(raw));
        return;
    }
    let Some(d) = d.filter(|d| d.size_bytes > 0) else {
        page.push_html("<p class=\"muted\">empty</p>");
        return;
    };
    let digest = match Digest::from_proto(src.function, d) {
        Ok(digest) => digest,
        Err(e) => {
            let _ = write!(page, "<p class=\"error\">{}</p>", esc(&e.to_string()));
            return;
        }
    };
    let download = links::raw(src.instance, &digest, Some(&format!("{name}.txt")));
    match head(src.cas, src.ctx, &digest).await {
        Ok((data, whole)) => {
            let _ = write!(page, "<pre id=\"{name}\">{}</pre>", esc_bytes(&data));
            if !whole {
                let _ = write!(
                    page,
                    "<p>Only the first {} of {} are shown: <a href=\"{}\">download all</a></p>",
                    size(INLINE),
                    size(digest.size()),
                    esc(&download)
                );
            } else {
                let _ = write!(page, "<p><a href=\"{}\">download</a></p>", esc(&download));
            }
        }
        Err(e) => {
            let _ = write!(
                page,
                "<p class=\"error\">{name} ({}): {}</p>",
                esc(&digest.to_string()),
                esc(&e.to_string())
            );
        }
    }
}

/// The outputs of a result, each linked to its page and its download.
fn outputs(page: &mut Page, src: &Source<'_>, r: &reapi::ActionResult) {
    page.push_html("<h3>Output files</h3>");
    if r.output_files.is_empty() {
        page.push_html("<p class=\"muted\">none</p>");
    } else {
        page.push_html(
            "<table><tr><th>path</th><th>size</th><th>executable</th><th>digest</th><th></th></tr>",
        );
        for f in &r.output_files {
            let Some(d) = &f.digest else { continue };
            let view = links::blob(src.instance, src.function, d, "file", Some(&f.path));
            let download = Digest::from_proto(src.function, d)
                .map(|digest| links::raw(src.instance, &digest, Some(&f.path)))
                .unwrap_or_default();
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"{}\">download</a></td></tr>",
                esc(&f.path),
                size(u64::try_from(d.size_bytes).unwrap_or(0)),
                if f.is_executable { "yes" } else { "no" },
                digest_link(&view, d),
                esc(&download)
            );
        }
        page.push_html("</table>");
    }
    if !r.output_directories.is_empty() {
        page.push_html("<h3>Output directories</h3><table><tr><th>path</th><th>tree</th></tr>");
        for dir in &r.output_directories {
            let Some(d) = &dir.tree_digest else { continue };
            let view = links::blob(src.instance, src.function, d, "tree", Some(&dir.path));
            let _ = write!(
                page,
                "<tr><td><code>{}</code></td><td>{}</td></tr>",
                esc(&dir.path),
                digest_link(&view, d)
            );
        }
        page.push_html("</table>");
    }
    #[allow(deprecated)]
    let symlinks = r
        .output_symlinks
        .iter()
        .chain(&r.output_file_symlinks)
        .chain(&r.output_directory_symlinks);
    for s in symlinks {
        let _ = write!(
            page,
            "<p>Symlink <code>{}</code> → <code>{}</code></p>",
            esc(&s.path),
            esc(&s.target)
        );
    }
}

/// An auxiliary record of type `name`, decoded.
fn aux<M: Message + Default>(m: &reapi::ExecutedActionMetadata, name: &str) -> Option<M> {
    let url = format!("type.googleapis.com/{name}");
    let any = m.auxiliary_metadata.iter().find(|a| a.type_url == url)?;
    M::decode(any.value.as_slice()).ok()
}

/// Resource use and limits from the runner's answer, and the image.
fn resources(page: &mut Page, m: &reapi::ExecutedActionMetadata) {
    if let Some(run) = aux::<runner::RunResponse>(m, "corral.runner.v1.RunResponse") {
        let limit = match run.limit_hit() {
            runner::LimitHit::None => "none".to_string(),
            other => other
                .as_str_name()
                .trim_start_matches("LIMIT_HIT_")
                .to_lowercase(),
        };
        let _ = write!(
            page,
            "<h3>Resource use</h3><table>\
             <tr><th>wall time</th><td>{}</td></tr><tr><th>user CPU</th><td>{}</td></tr>\
             <tr><th>system CPU</th><td>{}</td></tr><tr><th>peak memory</th><td>{}</td></tr>\
             <tr><th>limit hit</th><td class=\"{}\">{}</td></tr><tr><th>signal</th><td>{}</td></tr></table>",
            duration(Duration::from_micros(run.wall_time_us)),
            duration(Duration::from_micros(run.user_cpu_us)),
            duration(Duration::from_micros(run.system_cpu_us)),
            size(run.peak_memory_bytes),
            if limit == "none" { "ok" } else { "error" },
            esc(&limit),
            run.signal
        );
    }
    if let Some(image) = aux::<ResolvedImage>(m, "corral.worker.v1.ResolvedImage") {
        let _ = write!(
            page,
            "<h3>Container image</h3><p><code>{}</code> resolved to <code>{}</code> (manifest <code>{}</code>)</p>",
            esc(&image.requested),
            esc(&image.reference),
            esc(&image.manifest_digest)
        );
    }
}

/// The whole result.
pub async fn result(page: &mut Page, src: &Source<'_>, r: &reapi::ActionResult) {
    let class = if r.exit_code == 0 { "ok" } else { "failed" };
    let _ = write!(
        page,
        "<p>Exit code: <span class=\"{class}\" id=\"exit-code\">{}</span></p>",
        r.exit_code
    );
    stream(page, src, "stdout", &r.stdout_raw, r.stdout_digest.as_ref()).await;
    stream(page, src, "stderr", &r.stderr_raw, r.stderr_digest.as_ref()).await;
    outputs(page, src, r);
    if let Some(m) = &r.execution_metadata {
        page.push_html("<h3>Execution</h3>");
        timeline(page, m);
        resources(page, m);
    }
}

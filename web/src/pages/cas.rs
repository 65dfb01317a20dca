//! Browsing the CAS by digest (`/blob/…?view=…`) and downloading blobs
//! (`/raw/…`), per instance name and digest function.
//!
//! Views: `file` (the default: size, download, and the first
//! [`INLINE`] bytes as text when they are text), `directory` (a tree),
//! `tree` (a Tree message), `command`, `action` (the action page),
//! `result` (an ActionResult) and `response` (a kept ExecuteResponse). A
//! message view reads through the storage stack's message caps, so a huge
//! blob is refused from its digest and a blob that is not the message
//! asked for is a 422 page; neither is ever rendered whole.

use std::fmt::Write;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use corral_cas::{BlobStore, Digest};
use corral_proto::reapi;
use http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use http::Extensions;

use super::action::kept_response;
use super::render::{command, status};
use super::result::{head, result, Source, INLINE};
use super::tree::{tree, Children};
use super::DigestQuery;
use crate::error::PageError;
use crate::html::{bytes as size, esc, esc_bytes, Page};
use crate::links::{self, parse_digest};
use crate::web::Web;

/// `GET /blob/{function}/{hash}/{size}`.
pub async fn page(
    State(web): State<Web>,
    Path((function, hash, size_text)): Path<(String, String, String)>,
    Query(q): Query<DigestQuery>,
    extensions: Extensions,
) -> Result<Response, PageError> {
    let digest = parse_digest(&function, &hash, &size_text)?;
    let view = q.view.as_deref().unwrap_or("file");
    if view == "action" {
        let url = links::action(&q.instance, digest.function(), &digest.to_proto());
        return Ok(Redirect::to(&url).into_response());
    }
    let storage = web.storage()?;
    let ctx = web.context(&extensions, &q.instance, digest.function())?;
    let src = Source {
        cas: &storage.cas,
        ctx: &ctx,
        instance: &q.instance,
        function: digest.function(),
    };
    let name = q.name.as_deref().unwrap_or("");
    let title = match view {
        "file" if !name.is_empty() => format!("File {name}"),
        "directory" if !name.is_empty() => format!("Directory {name}"),
        other => format!("{} {}", capitalised(other), digest),
    };
    let mut page = Page::new(title);
    let _ = write!(
        page,
        "<p>Blob <code>{}</code> ({}) in instance <code>{}</code>. \
         <a href=\"{}\">Download</a></p>",
        esc(&digest.to_string()),
        size(digest.size()),
        esc(&q.instance),
        esc(&links::raw(&q.instance, &digest, q.name.as_deref()))
    );
    match view {
        "file" => file(&mut page, &src, &digest).await?,
        "directory" => {
            let dir: reapi::Directory = message(&src, &digest, "Directory").await?;
            tree(&mut page, &src, &Children::Cas, &dir).await;
        }
        "tree" => {
            let t: reapi::Tree = message(&src, &digest, "Tree").await?;
            let children = Children::of_tree(digest.function(), &t);
            match &t.root {
                Some(root) => tree(&mut page, &src, &children, root).await,
                None => page.push_html("<p class=\"muted\">The Tree has no root.</p>"),
            }
        }
        "command" => {
            let c: reapi::Command = message(&src, &digest, "Command").await?;
            command(&mut page, &c);
        }
        "result" => {
            let r: reapi::ActionResult = message(&src, &digest, "ActionResult").await?;
            result(&mut page, &src, &r).await;
        }
        "response" => {
            let r = kept_response(src.cas, src.ctx, &digest).await?;
            status(&mut page, r.status.as_ref());
            if let Some(res) = &r.result {
                result(&mut page, &src, res).await;
            }
        }
        other => {
            return Err(PageError::bad_request(format!(
                "unknown view {other:?} (file, directory, tree, command, action, result, response)"
            )))
        }
    }
    Ok(Html(page.finish()).into_response())
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A message of `kind`, within the stack's caps; errors as pages.
async fn message<M: corral_cas::message::BoundedMessage>(
    src: &Source<'_>,
    digest: &Digest,
    kind: &str,
) -> Result<M, PageError> {
    src.cas
        .get_message::<M>(src.ctx, digest, "digest")
        .await
        .map_err(|e| PageError::storage(&format!("the {kind} {digest}"), e))
}

/// A file: its first bytes as text if they are text.
async fn file(page: &mut Page, src: &Source<'_>, digest: &Digest) -> Result<(), PageError> {
    let (data, whole) = head(src.cas, src.ctx, digest)
        .await
        .map_err(|e| PageError::storage(&format!("the blob {digest}"), e))?;
    let text = std::str::from_utf8(&data).is_ok() || (!whole && looks_textual(&data));
    if data.is_empty() {
        page.push_html("<p class=\"muted\">The file is empty.</p>");
    } else if text && !data.contains(&0) {
        let _ = write!(page, "<pre id=\"content\">{}</pre>", esc_bytes(&data));
        if !whole {
            let _ = write!(page, "<p>Only the first {} are shown.</p>", size(INLINE));
        }
    } else {
        page.push_html("<p class=\"muted\">Binary content: download it to look inside.</p>");
    }
    Ok(())
}

/// A head cut mid-file may end inside a UTF-8 sequence: text if all but
/// the last three bytes decode.
fn looks_textual(data: &[u8]) -> bool {
    match std::str::from_utf8(data) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && data.len() - e.valid_up_to() < 4,
    }
}

/// `GET /raw/{function}/{hash}/{size}`: the bytes as a download, streamed.
pub async fn raw(
    State(web): State<Web>,
    Path((function, hash, size_text)): Path<(String, String, String)>,
    Query(q): Query<DigestQuery>,
    extensions: Extensions,
) -> Result<Response, PageError> {
    let digest = parse_digest(&function, &hash, &size_text)?;
    let storage = web.storage()?;
    let ctx = web.context(&extensions, &q.instance, digest.function())?;
    let stream = storage
        .cas
        .read(&ctx, &digest, 0, None)
        .await
        .map_err(|e| PageError::storage(&format!("the blob {digest}"), e))?;
    let name = q
        .name
        .as_deref()
        .and_then(|n| n.rsplit('/').find(|part| !part.is_empty()))
        .map(safe_file_name)
        .unwrap_or_else(|| digest.hash_hex());
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, digest.size().to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A download name with nothing a header or a file system could misread.
fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if cleaned.trim_matches('.').is_empty() {
        "blob".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_names_are_tamed() {
        assert_eq!(safe_file_name("a\"b\r\n.txt"), "a_b__.txt");
        assert_eq!(safe_file_name(".."), "blob");
        assert!(looks_textual(b"caf\xc3"));
        assert!(!looks_textual(b"\xff\xfeabc"));
    }
}

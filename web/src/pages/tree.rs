//! A Directory as a tree: files (linked to their pages), symlinks, and
//! subdirectories expanded in place as `<details>` (foldable without
//! script). Subdirectories come from the CAS (a Directory page) or from
//! the message itself (a Tree page). A page expands at most
//! [`MAX_DIRECTORIES`] directories and [`MAX_ENTRIES`] entries; beyond
//! that a subdirectory is a link to its own page, so a huge input root
//! never makes a huge page.

use std::collections::HashMap;
use std::fmt::Write;

use corral_cas::{Digest, DigestFunction};
use corral_proto::reapi;
use futures::future::BoxFuture;

use super::render::digest_link;
use super::result::Source;
use crate::html::{bytes as size, esc, Page};
use crate::links;

/// Directories one page expands at most.
pub const MAX_DIRECTORIES: usize = 200;
/// Entries one page lists at most.
pub const MAX_ENTRIES: usize = 5000;

/// Where subdirectories are found.
pub enum Children {
    /// Fetched from the CAS.
    Cas,
    /// In a Tree message, by digest.
    Map(HashMap<Digest, reapi::Directory>),
}

impl Children {
    /// A Tree's children by their digest.
    pub fn of_tree(function: DigestFunction, tree: &reapi::Tree) -> Children {
        Children::Map(
            tree.children
                .iter()
                .map(|d| (Digest::of_message(function, d), d.clone()))
                .collect(),
        )
    }

    async fn get(&self, src: &Source<'_>, d: &reapi::Digest) -> Result<reapi::Directory, String> {
        let digest = Digest::from_proto(src.function, d).map_err(|e| e.to_string())?;
        match self {
            Children::Map(m) => m
                .get(&digest)
                .cloned()
                .ok_or_else(|| format!("{digest} is not among the Tree's children")),
            Children::Cas => src
                .cas
                .get_message::<reapi::Directory>(src.ctx, &digest, "directory")
                .await
                .map_err(|e| match e {
                    corral_cas::Error::NotFound(_) => format!("{digest} is not in the CAS"),
                    other => other.to_string(),
                }),
        }
    }
}

struct Budget {
    directories: usize,
    entries: usize,
}

/// Writes `root` and what lies below it.
pub async fn tree(page: &mut Page, src: &Source<'_>, children: &Children, root: &reapi::Directory) {
    let mut budget = Budget {
        directories: MAX_DIRECTORIES,
        entries: MAX_ENTRIES,
    };
    level(page, src, children, root, "", &mut budget).await;
    if budget.entries == 0 || budget.directories == 0 {
        page.push_html("<p class=\"muted\">Not everything is expanded here: open a subdirectory's own page for the rest.</p>");
    }
}

fn level<'a>(
    page: &'a mut Page,
    src: &'a Source<'a>,
    children: &'a Children,
    dir: &'a reapi::Directory,
    prefix: &'a str,
    budget: &'a mut Budget,
) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        page.push_html("<ul class=\"tree\">");
        for f in &dir.files {
            if budget.entries == 0 {
                break;
            }
            budget.entries -= 1;
            let path = format!("{prefix}{}", f.name);
            let Some(d) = &f.digest else { continue };
            let url = links::blob(src.instance, src.function, d, "file", Some(&path));
            let _ = write!(
                page,
                "<li class=\"file\"><a href=\"{}\">{}</a> <span class=\"muted\">{}{}</span></li>",
                esc(&url),
                esc(&f.name),
                size(u64::try_from(d.size_bytes).unwrap_or(0)),
                if f.is_executable { ", executable" } else { "" }
            );
        }
        for s in &dir.symlinks {
            let _ = write!(
                page,
                "<li class=\"symlink\">{} → <code>{}</code></li>",
                esc(&s.name),
                esc(&s.target)
            );
        }
        for sub in &dir.directories {
            let Some(d) = &sub.digest else { continue };
            let path = format!("{prefix}{}/", sub.name);
            let url = links::blob(src.instance, src.function, d, "directory", Some(&path));
            let name = format!("{}/", sub.name);
            if budget.directories == 0 || budget.entries == 0 {
                let _ = write!(
                    page,
                    "<li class=\"dir\">{} {}</li>",
                    esc(&name),
                    digest_link(&url, d)
                );
                continue;
            }
            budget.directories -= 1;
            let _ = write!(
                page,
                "<li class=\"dir\"><details open><summary><a href=\"{}\">{}</a></summary>",
                esc(&url),
                esc(&name)
            );
            match children.get(src, d).await {
                Ok(child) => level(page, src, children, &child, &path, budget).await,
                Err(e) => {
                    let _ = write!(page, "<p class=\"error\">{}</p>", esc(&e));
                }
            }
            page.push_html("</details></li>");
        }
        page.push_html("</ul>");
    })
}

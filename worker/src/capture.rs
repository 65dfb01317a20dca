//! Output capture: from the merged view of an action's input root, the
//! REAPI `ActionResult` output fields and the set of blobs to upload.
//!
//! * REAPI 2.1+ `output_paths`, when given, win: a file becomes an
//!   `OutputFile`, a directory an `OutputDirectory`, a symlink an
//!   `OutputSymlink`, each as found.
//! * Otherwise the 2.0 fields: an `output_files` entry must be a file (a
//!   symlink is returned in `output_file_symlinks` and `output_symlinks`),
//!   an `output_directories` entry a directory (or a symlink, in
//!   `output_directory_symlinks`); anything else is FAILED_PRECONDITION.
//!   Nothing is returned in a field the client did not ask through.
//! * A missing output is simply left out.
//! * `output_directory_format`: TREE_ONLY (default) uploads a Tree,
//!   DIRECTORY_ONLY the root Directory and every descendant,
//!   TREE_AND_DIRECTORY both.

use std::collections::HashMap;
use std::path::PathBuf;

use bytes::Bytes;
use corral_cas::Digest;
use corral_proto::reapi;
use prost::Message;

use crate::error::{Error, Result};
use crate::merged::{Merged, Node, WantedProperties};
use crate::paths::resolve;
use crate::tree::InputTree;

/// Where an output blob's bytes are.
#[derive(Clone, Debug)]
pub enum Blob {
    /// The bytes are in this file (an output the action wrote).
    File(PathBuf),
    /// The bytes themselves (an encoded Tree or Directory).
    Bytes(Bytes),
}

/// What capture produced.
#[derive(Debug, Default)]
pub struct Captured {
    /// Output fields of the ActionResult (exit code and the rest unset).
    pub result: reapi::ActionResult,
    /// Every blob the result refers to that may not be in the remote CAS.
    pub blobs: HashMap<Digest, Blob>,
    /// Bytes hashed to capture (only files the action wrote).
    pub hashed_bytes: u64,
}

/// Captures the outputs `command` asks for.
// The 2.0 fields are deprecated in the proto but still what Bazel 4 sends.
#[allow(deprecated)]
pub fn capture(
    command: &reapi::Command,
    tree: &InputTree,
    upper: Option<PathBuf>,
) -> Result<Captured> {
    let wanted = WantedProperties::from_command(command);
    let mut merged = Merged::new(tree, upper, wanted);
    let mut result = reapi::ActionResult::default();
    let format = reapi::command::OutputDirectoryFormat::try_from(command.output_directory_format)
        .map_err(|_| {
        Error::invalid(
            "output_directory_format",
            format!("unknown value {}", command.output_directory_format),
        )
    })?;
    let mut blobs: HashMap<Digest, Blob> = HashMap::new();
    let wd = &command.working_directory;

    if !command.output_paths.is_empty() {
        for path in &command.output_paths {
            let comps = resolve(wd, path, "output_paths")?;
            match merged.lookup(&comps)? {
                None => {}
                Some(Node::File(f)) => result.output_files.push(output_file(path, f)),
                Some(Node::Symlink { target, props }) => {
                    result.output_symlinks.push(reapi::OutputSymlink {
                        path: path.clone(),
                        target,
                        node_properties: props,
                    })
                }
                Some(Node::Dir { upper, lower }) => {
                    let root = merged.directory(upper.as_deref(), lower)?;
                    result
                        .output_directories
                        .push(output_directory(path, root, format, &merged, &mut blobs)?);
                }
            }
        }
    } else {
        for path in &command.output_files {
            let comps = resolve(wd, path, "output_files")?;
            match merged.lookup(&comps)? {
                None => {}
                Some(Node::File(f)) => result.output_files.push(output_file(path, f)),
                Some(Node::Symlink { target, props }) => {
                    let link = reapi::OutputSymlink {
                        path: path.clone(),
                        target,
                        node_properties: props,
                    };
                    result.output_file_symlinks.push(link.clone());
                    result.output_symlinks.push(link);
                }
                Some(Node::Dir { .. }) => {
                    return Err(Error::FailedPrecondition(format!(
                        "output file {path:?} is a directory"
                    )))
                }
            }
        }
        for path in &command.output_directories {
            let comps = resolve(wd, path, "output_directories")?;
            match merged.lookup(&comps)? {
                None => {}
                Some(Node::File(_)) => {
                    return Err(Error::FailedPrecondition(format!(
                        "output directory {path:?} is a regular file"
                    )))
                }
                Some(Node::Symlink { target, props }) => {
                    let link = reapi::OutputSymlink {
                        path: path.clone(),
                        target,
                        node_properties: props,
                    };
                    result.output_directory_symlinks.push(link.clone());
                    result.output_symlinks.push(link);
                }
                Some(Node::Dir { upper, lower }) => {
                    let root = merged.directory(upper.as_deref(), lower)?;
                    result
                        .output_directories
                        .push(output_directory(path, root, format, &merged, &mut blobs)?);
                }
            }
        }
    }
    for (d, p) in merged.files.drain() {
        blobs.insert(d, Blob::File(p));
    }
    Ok(Captured {
        result,
        blobs,
        hashed_bytes: merged.hashed_bytes,
    })
}

fn output_file(path: &str, f: crate::merged::FileOut) -> reapi::OutputFile {
    reapi::OutputFile {
        path: path.to_string(),
        digest: Some(f.digest.to_proto()),
        is_executable: f.executable,
        contents: Vec::new(),
        node_properties: f.props,
    }
}

fn output_directory(
    path: &str,
    root: Digest,
    format: reapi::command::OutputDirectoryFormat,
    merged: &Merged<'_>,
    blobs: &mut HashMap<Digest, Blob>,
) -> Result<reapi::OutputDirectory> {
    use reapi::command::OutputDirectoryFormat as F;
    let mut out = reapi::OutputDirectory {
        path: path.to_string(),
        ..Default::default()
    };
    let tree = merged.tree(&root)?;
    if matches!(format, F::TreeOnly | F::TreeAndDirectory) {
        let data = Bytes::from(tree.encode_to_vec());
        let digest = Digest::of_bytes(root.function(), &data);
        blobs.insert(digest, Blob::Bytes(data));
        out.tree_digest = Some(digest.to_proto());
        out.is_topologically_sorted = true;
    }
    if matches!(format, F::DirectoryOnly | F::TreeAndDirectory) {
        out.root_directory_digest = Some(root.to_proto());
        if let Some(r) = &tree.root {
            let data = Bytes::from(r.encode_to_vec());
            blobs.insert(Digest::of_bytes(root.function(), &data), Blob::Bytes(data));
        }
        for child in &tree.children {
            let data = Bytes::from(child.encode_to_vec());
            blobs.insert(Digest::of_bytes(root.function(), &data), Blob::Bytes(data));
        }
    }
    Ok(out)
}

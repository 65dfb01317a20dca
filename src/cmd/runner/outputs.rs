//! `--outputs DIR` of `corral runner exec --action`: the outputs of a
//! reproduced action, as the worker's output capture sees them (through
//! the overlay's upper directory over the staged input root), written into
//! a directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use corral_cas::{Digest, DigestFunction};
use corral_proto::prost::Message;
use corral_proto::reapi;
use corral_worker::capture::{capture, Blob, Captured};
use corral_worker::tree::InputTree;
use corral_worker::{paths, LocalCas};

/// Copies the outputs, as the worker's output capture sees them, into
/// `dir`, which stands for the input root: output `P` of a command whose
/// working directory is `W` lands at `dir/W/P`. Returns how many outputs
/// there were.
pub fn write_outputs(
    dir: &Path,
    command: &reapi::Command,
    tree: &InputTree,
    local: &LocalCas,
    upper: &Path,
) -> anyhow::Result<usize> {
    let captured = capture(command, tree, Some(upper.to_path_buf()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = Outputs {
        captured: &captured,
        local,
        function: tree.function,
    };
    let wd = &command.working_directory;
    let place = |path: &str| -> anyhow::Result<PathBuf> {
        let comps = paths::resolve(wd, path, "output path")?;
        Ok(comps.iter().fold(dir.to_path_buf(), |p, c| p.join(c)))
    };
    let r = &captured.result;
    for d in &r.output_directories {
        let dest = place(&d.path)?;
        let (root, children) = out.directory_tree(d)?;
        out.write_dir(&root, &children, &dest)?;
    }
    for f in &r.output_files {
        let digest = Digest::from_proto_field(tree.function, f.digest.as_ref(), "digest")?;
        out.write_file(&digest, f.is_executable, &place(&f.path)?)?;
    }
    // 2.0 fields are mirrored into output_symlinks, so this covers both.
    for l in &r.output_symlinks {
        write_symlink(&l.target, &place(&l.path)?)?;
    }
    Ok(r.output_directories.len() + r.output_files.len() + r.output_symlinks.len())
}

struct Outputs<'a> {
    captured: &'a Captured,
    local: &'a LocalCas,
    function: DigestFunction,
}

type Children = std::collections::HashMap<Digest, reapi::Directory>;

impl Outputs<'_> {
    /// Bytes of a blob capture made (a Tree or Directory message).
    fn message<M: Message + Default>(&self, digest: &Digest) -> anyhow::Result<M> {
        match self.captured.blobs.get(digest) {
            Some(Blob::Bytes(b)) => Ok(M::decode(&b[..])?),
            Some(Blob::File(p)) => Ok(M::decode(&fs::read(p)?[..])?),
            None => bail!("capture made no blob {digest}"),
        }
    }

    /// The root Directory and every descendant by digest, from the Tree
    /// (TREE_ONLY, TREE_AND_DIRECTORY) or the Directory blobs
    /// (DIRECTORY_ONLY).
    fn directory_tree(
        &self,
        d: &reapi::OutputDirectory,
    ) -> anyhow::Result<(reapi::Directory, Children)> {
        if let Some(t) = &d.tree_digest {
            let tree: reapi::Tree =
                self.message(&Digest::from_proto(self.function, t).map_err(anyhow::Error::from)?)?;
            let children = tree
                .children
                .into_iter()
                .map(|c| (Digest::of_message(self.function, &c), c))
                .collect();
            return Ok((tree.root.unwrap_or_default(), children));
        }
        let root = Digest::from_proto_field(
            self.function,
            d.root_directory_digest.as_ref(),
            "root_directory_digest",
        )?;
        let root: reapi::Directory = self.message(&root)?;
        let mut children = Children::new();
        let mut todo: Vec<Digest> = Vec::new();
        let push = |dir: &reapi::Directory, todo: &mut Vec<Digest>| -> anyhow::Result<()> {
            for s in &dir.directories {
                todo.push(Digest::from_proto_field(
                    self.function,
                    s.digest.as_ref(),
                    "digest",
                )?);
            }
            Ok(())
        };
        push(&root, &mut todo)?;
        while let Some(digest) = todo.pop() {
            if children.contains_key(&digest) {
                continue;
            }
            let dir: reapi::Directory = self.message(&digest)?;
            push(&dir, &mut todo)?;
            children.insert(digest, dir);
        }
        Ok((root, children))
    }

    fn write_dir(
        &self,
        dir: &reapi::Directory,
        children: &Children,
        dest: &Path,
    ) -> anyhow::Result<()> {
        fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
        for f in &dir.files {
            let digest = Digest::from_proto_field(self.function, f.digest.as_ref(), "digest")?;
            self.write_file(&digest, f.is_executable, &dest.join(&f.name))?;
        }
        for l in &dir.symlinks {
            write_symlink(&l.target, &dest.join(&l.name))?;
        }
        for s in &dir.directories {
            let digest = Digest::from_proto_field(self.function, s.digest.as_ref(), "digest")?;
            let child = children
                .get(&digest)
                .with_context(|| format!("directory {digest} missing from the output tree"))?;
            self.write_dir(child, children, &dest.join(&s.name))?;
        }
        Ok(())
    }

    /// Writes one file: from the upper directory if the action wrote it,
    /// else from the local CAS (it came with the input root).
    fn write_file(&self, digest: &Digest, executable: bool, dest: &Path) -> anyhow::Result<()> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let _ = fs::remove_file(dest);
        match self.captured.blobs.get(digest) {
            Some(Blob::Bytes(b)) => fs::write(dest, &b[..]),
            Some(Blob::File(p)) => fs::copy(p, dest).map(drop),
            None if digest.is_empty_blob() => fs::write(dest, b""),
            None => fs::copy(self.local.store().path(digest), dest).map(drop),
        }
        .with_context(|| format!("writing {} ({digest})", dest.display()))?;
        let mode = if executable { 0o755 } else { 0o644 };
        fs::set_permissions(dest, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dest.display()))
    }
}

fn write_symlink(target: &str, dest: &Path) -> anyhow::Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let _ = fs::remove_file(dest);
    std::os::unix::fs::symlink(target, dest)
        .with_context(|| format!("creating symlink {}", dest.display()))
}

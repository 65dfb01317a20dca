//! What a build directory needs before the command runs: REAPI says the
//! worker creates the working directory and the parent directory of every
//! output. Those the input root lacks are made in the overlay's upper
//! directory (never in the staged, shared input root), owned by the
//! sandbox's user so that the action, root in its own namespace, may write
//! in them.

use std::fs;
use std::path::Path;

use corral_cas::Digest;
use corral_proto::reapi;

use crate::error::{Error, Result};
use crate::paths;
use crate::tree::InputTree;

/// Creates `upper` and, below it, the directories the command needs that
/// `tree` lacks; `owner` is the sandbox's host uid/gid. Blocking.
// `output_files`/`output_directories` are deprecated in REAPI 2.1 but still
// what 2.0 clients (Bazel 4) send.
#[allow(deprecated)]
pub fn prepare_upper(
    upper: &Path,
    tree: &InputTree,
    command: &reapi::Command,
    owner: Option<(u32, u32)>,
) -> Result<()> {
    fs::create_dir_all(upper).map_err(|e| Error::io(format!("creating {}", upper.display()), e))?;
    chown(upper, owner)?;
    let mut wanted = vec![paths::working_directory(&command.working_directory)?];
    let outputs = command
        .output_paths
        .iter()
        .chain(&command.output_files)
        .chain(&command.output_directories);
    for o in outputs {
        let mut comps = paths::resolve(&command.working_directory, o, "output_paths")?;
        comps.pop();
        wanted.push(comps);
    }
    for comps in wanted {
        // Walk the input tree; create only below the first directory it
        // lacks (an existing lower directory needs nothing).
        let mut lower = Some(tree.dir(&tree.root)?);
        let mut path = upper.to_path_buf();
        for c in &comps {
            path.push(c);
            if let Some(d) = lower {
                if let Some(node) = d.directories.iter().find(|s| &s.name == c) {
                    let digest =
                        Digest::from_proto_field(tree.function, node.digest.as_ref(), "digest")?;
                    lower = Some(tree.dir(&digest)?);
                    continue;
                }
                if d.files.iter().any(|f| &f.name == c) || d.symlinks.iter().any(|l| &l.name == c) {
                    // Not a directory in the input: the action's business.
                    break;
                }
            }
            lower = None;
            if !path.exists() {
                // Parents that exist only below (in the input root) are
                // made here too, owned like the rest.
                fs::create_dir_all(&path)
                    .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
                for made in path.ancestors().take_while(|p| *p != upper) {
                    chown(made, owner)?;
                }
            }
        }
    }
    Ok(())
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    if (uid, gid)
        == (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    {
        return Ok(());
    }
    nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
        .map_err(|e| Error::io(format!("chown {}", path.display()), e.into()))
}

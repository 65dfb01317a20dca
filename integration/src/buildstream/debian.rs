//! A real Debian 12 root with gcc, libc6-dev and make, for BuildStream
//! projects at the scale users bring (about 5,200 files and 267 MB, several
//! of them over 4 MiB so clients upload them with ByteStream).
//!
//! Made once with `debootstrap --variant=minbase` from the mirror apt is
//! configured with, pruned of what a CAS cannot hold or a build does not
//! need, and cached between test runs under [`cache_dir`]. Test binaries
//! run in parallel, so the first one to arrive builds the root under an
//! exclusive lock while the others wait for it.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use super::{find_in_path, INSTALL_HINT};

/// Bumped whenever what [`debian_root`] makes changes, so an old cache is
/// not taken for a new one.
const LAYOUT: &str = "debian-bookworm-gcc-v1";

/// Written last into a finished cache entry.
const COMPLETE: &str = ".corral-complete";

/// Paths, relative to the root, removed after debootstrap: documentation
/// and locales no build reads, apt's lists and caches, logs, and files that
/// name the machine that made the root.
const PRUNED: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf",
    "var/log",
    "etc/hostname",
    "etc/resolv.conf",
];

/// Where test caches live: `$CORRAL_TEST_CACHE`, else
/// `$XDG_CACHE_HOME/corral-tests`, else `$HOME/.cache/corral-tests`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CORRAL_TEST_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("corral-tests"));
    }
    let home = std::env::var_os("HOME").context("neither CORRAL_TEST_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/corral-tests"))
}

/// The cached Debian root, made first if it is not there yet (about a
/// minute). Needs root (debootstrap makes device nodes and chroots) and
/// Debian's `debootstrap`.
pub fn debian_root() -> anyhow::Result<PathBuf> {
    let cache = cache_dir()?;
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let entry = cache.join(LAYOUT);
    let root = entry.join("root");
    let lock_path = cache.join(format!("{LAYOUT}.lock"));
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if entry.join(COMPLETE).is_file() {
        return Ok(root);
    }
    if entry.exists() {
        fs::remove_dir_all(&entry)
            .with_context(|| format!("removing the unfinished {}", entry.display()))?;
    }
    fs::create_dir_all(&entry)?;
    bootstrap(&root)?;
    prune(&root)?;
    fs::write(entry.join(COMPLETE), "")?;
    Ok(root)
}

/// Runs debootstrap into `root` from apt's own bookworm mirror.
fn bootstrap(root: &Path) -> anyhow::Result<()> {
    if find_in_path("debootstrap").is_none() && !Path::new("/usr/sbin/debootstrap").is_file() {
        bail!("Debian's debootstrap is not installed; {INSTALL_HINT}");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("making the Debian test root needs root (debootstrap creates device nodes and chroots into it)");
    }
    let mirror = apt_mirror("bookworm")?;
    let log = root.with_extension("log");
    let status = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            "--include=gcc,libc6-dev,make",
            "bookworm",
        ])
        .arg(root)
        .arg(&mirror)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::create(root.with_extension("stderr"))?)
        .status()
        .context("running debootstrap")?;
    if !status.success() {
        bail!(
            "debootstrap from {mirror} failed ({status}); see {} and {}",
            log.display(),
            root.with_extension("stderr").display()
        );
    }
    Ok(())
}

/// The URI of the Debian archive apt uses for `release`, read from apt's
/// own configuration so the test uses whatever mirror this machine may
/// reach.
fn apt_mirror(release: &str) -> anyhow::Result<String> {
    let out = Command::new("apt-get")
        .args(["indextargets", "--format", "$(RELEASE) $(REPO_URI)"])
        .output()
        .context("running apt-get indextargets")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(r, _)| *r == release)
        .map(|(_, uri)| uri.trim().to_string())
        .with_context(|| {
            format!(
                "apt knows no {release} archive (run `apt-get update` first); it listed:\n{text}"
            )
        })
}

/// Removes [`PRUNED`] and every entry a CAS cannot hold (device nodes,
/// FIFOs, sockets): the sandbox brings its own `/dev`.
fn prune(root: &Path) -> anyhow::Result<()> {
    for rel in PRUNED {
        let path = root.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(_) => continue,
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    remove_special_files(root)
}

fn remove_special_files(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            remove_special_files(&entry.path())?;
        } else if kind.is_block_device()
            || kind.is_char_device()
            || kind.is_fifo()
            || kind.is_socket()
        {
            fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Makes `to` a copy of the tree `from` whose files are hard links to
/// `from`'s (plain copies across file systems): a few hundred
/// milliseconds for the whole Debian root instead of copying 267 MB for
/// every test project. BuildStream only reads it.
pub fn link_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let meta = fs::metadata(from)?;
    fs::set_permissions(to, meta.permissions())?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&entry.path(), &target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &target)?;
        } else if fs::hard_link(entry.path(), &target).is_err() {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

//! `corral images`: manage the local image and layer cache by hand, e.g. to
//! pre-load images on an air-gapped worker (`import`), to warm a cache
//! (`pull`), to see what a worker holds (`list`) or to free disk (`prune`).
//!
//! The cache directory is locked while a worker uses it; stop the worker (or
//! point `--dir` at another cache) to change it from here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use corral_images::{ImageCache, ImageRef, ImagesConfig};

/// Options of `corral images`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cache directory. Default: that of `corral up`'s worker,
    /// DATA/worker/images, where DATA is $XDG_CACHE_HOME/corral, else
    /// /var/cache/corral as root, else ~/.cache/corral. For `corral worker
    /// --data DIR`: DIR/images.
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// TOML file with the images settings (platform, policy, credentials).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Load the images of an OCI image layout directory, without a network.
    Import {
        /// The layout directory (with `oci-layout` and `index.json`).
        layout: PathBuf,
        /// Record the image under this reference too (e.g.
        /// docker://registry/repo:tag), so offline tag look-ups find it.
        #[arg(long)]
        name: Option<String>,
    },
    /// List the images held in full.
    List,
    /// Pull an image (resolving its tag once) into the cache.
    Pull {
        /// `[docker://]REGISTRY/REPO[:TAG][@sha256:DIGEST]`.
        reference: String,
    },
    /// Remove every cached layer and image.
    Prune,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => ImagesConfig::load(path)?,
        None => ImagesConfig::default(),
    };
    let dir = match args.dir {
        Some(dir) => dir,
        None => super::defaults::default_images_dir().context("pass --dir")?,
    };
    let cache = ImageCache::open(&dir, config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    match args.command {
        Command::Import { layout, name } => {
            let name = name.as_deref().map(ImageRef::parse).transpose()?;
            let started = Instant::now();
            let records = runtime.block_on(cache.import_layout(&layout, name.as_ref()))?;
            for r in records {
                println!(
                    "imported {} ({} layers, {}) in {:.3} s",
                    r.digest,
                    r.layers.len(),
                    r.platform,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Command::List => {
            println!("{:<71}  {:>10}  {:>6}  NAMES", "DIGEST", "BYTES", "LAYERS");
            for image in cache.cached_images() {
                println!(
                    "{:<71}  {:>10}  {:>6}  {}",
                    image.digest,
                    image.bytes,
                    image.layers,
                    image.names.join(" ")
                );
            }
        }
        Command::Pull { reference } => {
            let image = ImageRef::parse(&reference)?;
            let started = Instant::now();
            let lease = runtime.block_on(cache.ensure(&image))?;
            let elapsed = started.elapsed();
            let stats = cache.stats();
            println!(
                "{} ({} layers, {} downloaded) in {:.3} s",
                lease.reference(),
                lease.layer_dirs().len(),
                stats.blob_downloads,
                elapsed.as_secs_f64()
            );
        }
        Command::Prune => {
            let report = cache.prune()?;
            println!(
                "removed {} layers and {} images",
                report.layers_removed, report.images_removed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

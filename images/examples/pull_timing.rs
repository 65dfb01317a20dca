//! Times a cold pull and warm (cached) `ensure`s of one image, for
//! docs/benchmarks.md. Usage: `pull_timing REFERENCE CACHE_DIR [WARM_RUNS]`.
//! The cache directory is emptied first, so the first `ensure` is cold.

use std::time::{Duration, Instant};

use corral_images::{ImageCache, ImageRef, ImagesConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(reference), Some(dir)) = (args.get(1), args.get(2)) else {
        return Err("usage: pull_timing REFERENCE CACHE_DIR [WARM_RUNS]".into());
    };
    let runs: usize = match args.get(3) {
        Some(n) => n.parse().map_err(|e| format!("WARM_RUNS {n:?}: {e}"))?,
        None => 20,
    };
    let image = ImageRef::parse(reference)?;
    let dir = std::path::Path::new(dir);
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let cache = ImageCache::open(dir, ImagesConfig::default())?;
        let started = Instant::now();
        let lease = cache.ensure(&image).await?;
        let cold = started.elapsed();
        let pinned = lease.reference().clone();
        drop(lease);
        let bytes = cache.used_bytes();
        let mut by_tag = Vec::new();
        let mut by_digest = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            drop(cache.ensure(&image).await?);
            by_tag.push(t.elapsed());
            let t = Instant::now();
            drop(cache.ensure(&pinned).await?);
            by_digest.push(t.elapsed());
        }
        println!("image {pinned}: {bytes} bytes unpacked");
        println!("cold pull + unpack: {:.1} ms", ms(cold));
        println!(
            "warm ensure by tag (one HEAD to resolve it), median of {runs}: {:.2} ms",
            ms(median(&mut by_tag))
        );
        println!(
            "warm ensure by digest (no network), median of {runs}: {:.3} ms",
            ms(median(&mut by_digest))
        );
        println!("{:?}", cache.stats());
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

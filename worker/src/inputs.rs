//! The first step of a run: the input root staged from the local CAS and,
//! when the plan names one, the image pulled, both at once (a pull and a
//! staging wait on different servers).

use std::sync::Arc;

use corral_cas::{Digest, RequestContext};
use corral_images::ImageLease;
use corral_proto::worker::v1::ResolvedImage;

use crate::error::{Error, Result};
use crate::executor::probe::{timed, Step};
use crate::images::{Images, PROPERTY};
use crate::stage::{StagedInput, Stager};

/// Stages input roots and pulls images.
#[derive(Clone)]
pub struct Inputs {
    stager: Stager,
    images: Option<Arc<Images>>,
}

/// An image ready to be the rootfs, and what it resolved to.
pub struct PulledImage {
    /// Keeps the layers from eviction while the run needs them.
    pub lease: ImageLease,
    /// The image reference and the manifest digest it resolved to.
    pub resolved: ResolvedImage,
}

/// What a run needs on disk before it starts.
pub struct PreparedInputs {
    /// The staged input root.
    pub staged: StagedInput,
    /// The pulled `container-image`, if the action names one.
    pub image: Option<PulledImage>,
}

impl Inputs {
    /// `images`: the image cache, or None if actions may not name a
    /// `container-image` here.
    pub fn new(stager: Stager, images: Option<Arc<Images>>) -> Self {
        Inputs { stager, images }
    }

    /// The `container-image` values whose images are still cached.
    pub fn cached_images(&self) -> Vec<String> {
        self.images.as_ref().map(|i| i.cached()).unwrap_or_default()
    }

    /// Stages `root`, fetching under `ctx` (the action's instance name and
    /// digest function), and pulls `image` (a `container-image` value or a
    /// pinned reference) if there is one. Either failing fails both.
    pub async fn prepare(
        &self,
        ctx: &RequestContext,
        root: Digest,
        image: Option<&str>,
    ) -> Result<PreparedInputs> {
        let staging = timed(Step::Staging, self.stager.stage_in(ctx, root));
        let (staged, image) = tokio::try_join!(staging, async {
            match image {
                None => Ok(None),
                Some(value) => timed(Step::ImagePull, self.pull(value)).await.map(Some),
            }
        })?;
        Ok(PreparedInputs { staged, image })
    }

    async fn pull(&self, value: &str) -> Result<PulledImage> {
        let images = self.images.as_ref().ok_or_else(|| {
            Error::FailedPrecondition(format!("{PROPERTY} {value}: this worker runs no images"))
        })?;
        let lease = images.prepare(value).await?;
        let resolved = ResolvedImage {
            requested: value.to_string(),
            reference: lease.reference().to_string(),
            digest: lease.digest().to_string(),
            manifest_digest: lease.manifest_digest().to_string(),
        };
        Ok(PulledImage { lease, resolved })
    }
}

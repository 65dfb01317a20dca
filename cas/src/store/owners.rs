//! Owners kept beside each blob in a store's own index, so that a tenant's
//! question "which of these can I see?" costs the one index lookup the
//! store makes anyway.
//!
//! [`super::TenantVisibility`] numbers tenants ([`OwnerId`]) and puts a
//! [`Viewer`] in the context of every call it passes down. A backend that
//! [keeps owners](super::BlobStore::keeps_owners) then answers as that
//! viewer: a blob no owner of which the viewer may read is missing to
//! `find_missing` and NOT_FOUND to `get` and `read`, and a finished
//! upload adds the viewer to the blob's owners. Without a viewer in the
//! context (the farm's own calls below the visibility layer) a backend
//! sees every blob, as before.
//!
//! A separate ownership table would cost a second random memory access per
//! digest, as expensive as the store's own lookup when a FindMissingBlobs
//! names thousands of blobs (see docs/benchmarks.md, "Authentication and
//! tenancy").

use std::num::NonZeroU32;

/// A tenant's number, given by the visibility layer; small so that the
/// common blob, owned by one tenant, keeps its owner inline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerId(NonZeroU32);

impl OwnerId {
    /// The `n`th tenant numbered (0-based); `None` past `u32::MAX - 1`.
    pub fn nth(n: usize) -> Option<OwnerId> {
        u32::try_from(n)
            .ok()
            .and_then(|n| n.checked_add(1))
            .and_then(NonZeroU32::new)
            .map(OwnerId)
    }
}

/// The tenants owning one blob. One owner is kept inline; a blob uploaded
/// by several tenants (a shared toolchain) lists the others on the heap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    first: Option<OwnerId>,
    // Boxed to keep the pointer thin: `Owners` stays at 16 bytes in every
    // entry of the index, and only shared blobs pay the second allocation.
    #[allow(clippy::box_collection)]
    others: Option<Box<Vec<OwnerId>>>,
}

impl Owners {
    /// Owned by `owner` alone, or by nobody yet.
    pub fn of(owner: Option<OwnerId>) -> Owners {
        Owners {
            first: owner,
            others: None,
        }
    }

    /// Adds `owner`; false if it owned the blob already.
    pub fn insert(&mut self, owner: OwnerId) -> bool {
        if self.contains(owner) {
            return false;
        }
        match self.first {
            None => self.first = Some(owner),
            Some(_) => self.others.get_or_insert_with(Box::default).push(owner),
        }
        true
    }

    /// Whether `owner` is among the owners.
    pub fn contains(&self, owner: OwnerId) -> bool {
        self.first == Some(owner)
            || self
                .others
                .as_ref()
                .is_some_and(|others| others.contains(&owner))
    }
}

/// The tenant a call runs for, as a backend that keeps owners sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    /// The call's tenant: what it uploads becomes its own.
    pub owner: OwnerId,
    /// Tenants whose blobs everyone may read (shared-readable).
    pub readable: Vec<OwnerId>,
}

impl Viewer {
    /// Whether a blob with these owners is visible to this viewer.
    pub fn may_see(&self, owners: &Owners) -> bool {
        owners.contains(self.owner) || self.readable.iter().any(|r| owners.contains(*r))
    }
}

/// Whether a blob with `owners` is visible to `viewer` (everything is,
/// without a viewer).
pub fn visible(viewer: Option<&Viewer>, owners: &Owners) -> bool {
    viewer.is_none_or(|v| v.may_see(owners))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> OwnerId {
        OwnerId::nth(n).unwrap()
    }

    #[test]
    fn owners_are_a_set_kept_inline_for_one() {
        let mut owners = Owners::default();
        assert!(!owners.contains(id(0)));
        assert!(owners.insert(id(0)));
        assert!(!owners.insert(id(0)));
        assert!(owners.others.is_none());
        assert!(owners.insert(id(7)) && owners.insert(id(3)));
        assert!(owners.contains(id(0)) && owners.contains(id(7)) && owners.contains(id(3)));
        assert!(!owners.contains(id(1)));
        assert!(std::mem::size_of::<Owners>() <= 16);
    }

    #[test]
    fn a_viewer_sees_its_own_and_the_shared_readable_tenants_blobs() {
        let viewer = Viewer {
            owner: id(1),
            readable: vec![id(5)],
        };
        assert!(viewer.may_see(&Owners::of(Some(id(1)))));
        assert!(viewer.may_see(&Owners::of(Some(id(5)))));
        assert!(!viewer.may_see(&Owners::of(Some(id(2)))));
        assert!(!viewer.may_see(&Owners::default()));
        assert!(visible(None, &Owners::default()));
        assert!(OwnerId::nth(u32::MAX as usize).is_none());
    }
}

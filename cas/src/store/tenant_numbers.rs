//! Tenants by number, for stores that keep owners beside each blob
//! ([`super::owners`]): a number is four bytes in every blob's entry
//! where a name would be a pointer to chase.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::owners::{OwnerId, Viewer};
use crate::error::{Error, Result};

/// The numbers given so far, in this process (numbers are not stored:
/// ownership is recorded by name and given back to the store by number at
/// start).
#[derive(Default)]
pub struct TenantNumbers {
    numbered: Mutex<Numbered>,
}

#[derive(Default)]
struct Numbered {
    by_name: HashMap<Arc<str>, OwnerId>,
    /// Names in number order.
    names: Vec<Arc<str>>,
}

impl TenantNumbers {
    /// The number of `tenant`, given now if it has none.
    pub fn number(&self, tenant: &Arc<str>) -> Result<OwnerId> {
        number_in(&mut self.lock(), tenant)
    }

    /// How a call of `tenant` sees the store: its own blobs and those of
    /// the `shared_readable` tenants.
    pub fn viewer(&self, tenant: &Arc<str>, shared_readable: &[Arc<str>]) -> Result<Viewer> {
        let mut numbered = self.lock();
        let owner = number_in(&mut numbered, tenant)?;
        let readable = shared_readable
            .iter()
            .map(|shared| number_in(&mut numbered, shared))
            .collect::<Result<_>>()?;
        Ok(Viewer { owner, readable })
    }

    fn lock(&self) -> MutexGuard<'_, Numbered> {
        // Each update is one insert and one push: a panic cannot tear it.
        self.numbered.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn number_in(numbered: &mut Numbered, tenant: &Arc<str>) -> Result<OwnerId> {
    if let Some(id) = numbered.by_name.get(tenant) {
        return Ok(*id);
    }
    let id = OwnerId::nth(numbered.names.len())
        .ok_or_else(|| Error::Internal(format!("no number left for tenant {tenant:?}")))?;
    numbered.by_name.insert(tenant.clone(), id);
    numbered.names.push(tenant.clone());
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_keep_their_numbers_and_see_the_shared_readable_ones() {
        let numbers = TenantNumbers::default();
        let (a, b, tools): (Arc<str>, Arc<str>, Arc<str>) =
            ("a".into(), "b".into(), "tools".into());
        let na = numbers.number(&a).unwrap();
        let ntools = numbers.number(&tools).unwrap();
        assert_ne!(na, ntools);
        assert_eq!(numbers.number(&a).unwrap(), na);
        let viewer = numbers.viewer(&b, std::slice::from_ref(&tools)).unwrap();
        assert_eq!(viewer.readable, vec![ntools]);
        assert!(viewer.owner != na && viewer.owner != ntools);
    }
}

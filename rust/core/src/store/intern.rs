//! Interned resources and scopes. Every buffered chunk of spans points at its `Origin` (scope + resource), so a
//! resource sent with every payload is held once, and kept spans are re-emitted under their own resource and
//! scope, byte for byte, schema URLs included. Entries nobody points at any more are swept as the table grows.

use std::collections::HashMap;
use std::sync::Arc;

use ahash::RandomState;

use crate::otlp::decode::{ResourceView, ScopeView};

/// A resource as it came: raw `Resource` bytes (None when the field was absent) and the schema URL of its
/// `ResourceSpans`. `matched` holds the folding policies' verdicts on its attributes.
#[derive(Debug)]
pub struct Resource {
    pub raw: Option<Box<[u8]>>,
    pub schema_url: Box<str>,
    pub matched: u64,
}

/// A scope under a resource: raw `InstrumentationScope` bytes and the schema URL of its `ScopeSpans`.
#[derive(Debug)]
pub struct Origin {
    pub resource: Arc<Resource>,
    pub raw: Option<Box<[u8]>>,
    pub schema_url: Box<str>,
}

impl Origin {
    /// Approximate bytes held, for memory accounting.
    pub fn size(&self) -> usize {
        self.raw.as_ref().map_or(0, |r| r.len())
            + self.schema_url.len()
            + std::mem::size_of::<Self>()
    }
}

fn key_of(raw: Option<&[u8]>, schema: &str, prefix: usize) -> Vec<u8> {
    // The prefix (a resource's address, for scopes) keeps scopes of different resources apart; the length
    // fields make the concatenation unambiguous.
    let present = raw.is_some();
    let raw = raw.unwrap_or(&[]);
    let mut k = Vec::with_capacity(raw.len() + schema.len() + 24);
    k.extend_from_slice(&prefix.to_le_bytes());
    k.push(u8::from(present));
    k.extend_from_slice(&(raw.len() as u64).to_le_bytes());
    k.extend_from_slice(raw);
    k.extend_from_slice(schema.as_bytes());
    k
}

#[derive(Default)]
pub struct Interner {
    resources: HashMap<Vec<u8>, Arc<Resource>, RandomState>,
    origins: HashMap<Vec<u8>, Arc<Origin>, RandomState>,
    sweep_at: usize,
}

const MIN_SWEEP: usize = 1024;

impl Interner {
    pub fn new() -> Self {
        Interner {
            sweep_at: MIN_SWEEP,
            ..Default::default()
        }
    }

    /// The interned resource for `view`; `matched` is computed only when it is new.
    pub fn resource(
        &mut self,
        view: &ResourceView<'_>,
        matched: impl FnOnce() -> u64,
    ) -> Arc<Resource> {
        let key = key_of(view.raw.as_deref(), view.schema_url, 0);
        if let Some(r) = self.resources.get(&key) {
            return r.clone();
        }
        let r = Arc::new(Resource {
            raw: view.raw.as_deref().map(Box::from),
            schema_url: view.schema_url.into(),
            matched: matched(),
        });
        self.resources.insert(key, r.clone());
        self.maybe_sweep();
        r
    }

    pub fn origin(&mut self, resource: &Arc<Resource>, view: &ScopeView<'_>) -> Arc<Origin> {
        let key = key_of(
            view.raw.as_deref(),
            view.schema_url,
            Arc::as_ptr(resource) as usize,
        );
        if let Some(o) = self.origins.get(&key) {
            return o.clone();
        }
        let o = Arc::new(Origin {
            resource: resource.clone(),
            raw: view.raw.as_deref().map(Box::from),
            schema_url: view.schema_url.into(),
        });
        self.origins.insert(key, o.clone());
        self.maybe_sweep();
        o
    }

    pub fn len(&self) -> usize {
        self.resources.len() + self.origins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bounded by what is buffered: entries held only by this table are dropped once it doubles.
    fn maybe_sweep(&mut self) {
        if self.len() < self.sweep_at {
            return;
        }
        // Origins first: they hold their resources.
        self.origins.retain(|_, o| Arc::strong_count(o) > 1);
        self.resources.retain(|_, r| Arc::strong_count(r) > 1);
        self.sweep_at = (self.len() * 2).max(MIN_SWEEP);
    }

    /// Drops every entry nobody else holds (after a flush, say).
    pub fn sweep(&mut self) {
        self.origins.retain(|_, o| Arc::strong_count(o) > 1);
        self.resources.retain(|_, r| Arc::strong_count(r) > 1);
        self.sweep_at = (self.len() * 2).max(MIN_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn rv(raw: &[u8]) -> ResourceView<'_> {
        ResourceView {
            raw: Some(Cow::Borrowed(raw)),
            schema_url: "s",
        }
    }

    #[test]
    fn same_bytes_same_entry() {
        let mut i = Interner::new();
        let a = i.resource(&rv(b"abc"), || 1);
        let b = i.resource(&rv(b"abc"), || panic!("not recomputed"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = i.resource(&rv(b"abd"), || 0);
        assert!(!Arc::ptr_eq(&a, &c));
        let absent = i.resource(
            &ResourceView {
                raw: None,
                schema_url: "s",
            },
            || 0,
        );
        let empty = i.resource(&rv(b""), || 0);
        assert!(
            !Arc::ptr_eq(&absent, &empty),
            "an absent resource is not an empty one"
        );
    }

    #[test]
    fn unreferenced_entries_are_swept() {
        let mut i = Interner::new();
        let keep = i.resource(&rv(b"keep"), || 0);
        for n in 0..5000u32 {
            let raw = n.to_le_bytes();
            let _ = i.resource(&rv(&raw), || 0);
        }
        assert!(i.len() < 2 * MIN_SWEEP + 2, "{}", i.len());
        let again = i.resource(&rv(b"keep"), || 0);
        assert!(Arc::ptr_eq(&keep, &again));
    }
}

//! The process's Rust heap as the `memory_limiter` reads it: a counting wrapper around mimalloc (the bytes
//! Rust holds now, which fall as soon as the engine frees a decided trace) and a purge that hands freed pages
//! back to the system. The limiter compares live bytes, not resident pages: mimalloc keeps freed pages for
//! reuse, so resident memory stays up after a burst while the live count goes back down.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use mimalloc::MiMalloc;

/// Bytes handed out by the global allocator and not yet freed (the sizes Rust asked for, exactly).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// mimalloc, counting what it holds for Rust. One relaxed atomic add per allocation: the store allocates a
/// chunk per trace and payload, not per span, so the count costs little.
pub struct CountingMiMalloc;

// SAFETY: every call is forwarded unchanged to MiMalloc; the counter only observes sizes.
unsafe impl GlobalAlloc for CountingMiMalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which MiMalloc shares.
        let p = unsafe { MiMalloc.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { MiMalloc.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (hence from MiMalloc) with `layout`.
        unsafe { MiMalloc.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc`, and `new_size` is valid per the caller.
        let p = unsafe { MiMalloc.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // On failure the old block stays allocated and the count stays as it was.
            if new_size >= layout.size() {
                LIVE.fetch_add(new_size - layout.size(), Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

/// What the allocator reports: live Rust bytes, and what mimalloc keeps committed (live plus freed pages not
/// yet handed back) with its peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AllocatorStats {
    pub heap_bytes: usize,
    pub committed_bytes: usize,
    pub peak_committed_bytes: usize,
}

pub fn allocator_stats() -> AllocatorStats {
    let (mut elapsed, mut user, mut system, mut rss, mut peak_rss) = (0, 0, 0, 0, 0);
    let (mut commit, mut peak_commit, mut faults) = (0, 0, 0);
    // SAFETY: mi_process_info writes each out-pointer once; all point at live locals.
    unsafe {
        libmimalloc_sys::mi_process_info(
            &mut elapsed,
            &mut user,
            &mut system,
            &mut rss,
            &mut peak_rss,
            &mut commit,
            &mut peak_commit,
            &mut faults,
        )
    };
    let live = LIVE.load(Relaxed);
    AllocatorStats {
        // Coherence keeps a free after its allocation, so the count never wraps; guard it anyway.
        heap_bytes: if live > isize::MAX as usize { 0 } else { live },
        committed_bytes: commit,
        peak_committed_bytes: peak_commit,
    }
}

/// Frees mimalloc's empty pages and decommits freed arena memory now instead of after the purge delay.
pub fn purge() -> AllocatorStats {
    // SAFETY: mi_collect takes no pointers; `force` makes it purge whatever is scheduled at once.
    unsafe { libmimalloc_sys::mi_collect(true) };
    allocator_stats()
}

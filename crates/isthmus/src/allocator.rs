//! The global allocator: mimalloc, asked the way C asks it.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every allocation to `mi_malloc_aligned`, with
//! the layout's alignment. For blocks over 1 KiB whose size class is not a power of two,
//! mimalloc v3 takes its generic aligned path there, which over-allocates and marks the page
//! as holding interior pointers: about 190 instructions more per allocation, and a request
//! makes eight such allocations (its boxed futures are kilobytes). Yet every mimalloc block
//! already has the alignment Rust asks for nearly always: all size classes are multiples of
//! 8 bytes, those of 16 bytes and more are multiples of 16, and a page's first block is
//! 16-aligned (`MI_PAGE_MIN_START_BLOCK_ALIGN`). So, as std's `System` allocator does with
//! `malloc`, a layout whose alignment is at most 16 and at most its size goes to the plain
//! `mi_malloc` family; only larger alignments take the aligned calls.
//! (purpleprotocol/mimalloc_rust#170 proposes the same change upstream.)
//!
//! This file is the workspace's one exception to `unsafe_code`: a `GlobalAlloc` cannot be
//! written without it. `scripts/test` fails if any other file allows it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block of at least this many bytes has (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// Whether a plain (unaligned) mimalloc call of `size` bytes meets `align`.
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

pub struct Mimalloc;

// SAFETY: every method forwards to mimalloc, which returns blocks of at least the asked size,
// null on failure, and frees (or resizes) any block it returned, aligned or not. The plain
// calls are used only where their blocks are aligned enough (see the module's comment; the
// tests below allocate every size up to 64 KiB at each alignment and check).
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation calls take any size and a power-of-two alignment.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract), so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc; the new block must have the old alignment.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 64 KiB, at each alignment up to 4 KiB: the block is aligned as asked,
    /// holds what is written to it, survives a resize, and is freed. Plain and aligned calls
    /// are both exercised (alignments above 16 and those above the size take the latter).
    #[test]
    fn blocks_have_the_alignment_asked_for() {
        let a = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            let mut size = 1;
            while size <= 64 * 1024 {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    panic!("layout {size}/{align}");
                };
                // SAFETY: the layout has a non-zero size; the block is written within it and
                // freed once, by this allocator.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null() && p.align_offset(align) == 0, "{size}/{align}");
                    p.write_bytes(0xa5, size);
                    let q = a.realloc(p, layout, size * 2);
                    assert!(
                        !q.is_null() && q.align_offset(align) == 0,
                        "{size}/{align} grown"
                    );
                    assert_eq!(q.add(size - 1).read(), 0xa5);
                    a.dealloc(q, Layout::from_size_align_unchecked(size * 2, align));
                    let z = a.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && z.align_offset(align) == 0,
                        "{size}/{align} zeroed"
                    );
                    assert_eq!(z.add(size - 1).read(), 0);
                    a.dealloc(z, layout);
                }
                size += if size < 512 { 1 } else { size / 7 };
            }
        }
    }
}

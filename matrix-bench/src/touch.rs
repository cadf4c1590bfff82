//! Touching blocks: one write after allocation and one read before free,
//! or, with `--verify`, every byte written and checked.
//!
//! ```text
//!  timed:   alloc ─► write 8 B (the block's seed) ─► … ─► read 8 B, compare ─► free
//!  verify:  alloc ─► fill every byte from the seed ─► … ─► check every byte ─► free
//! ```
//!
//! The seed is unique per block (thread id in the top bits, a counter
//! below), so a block handed to two owners at once, or overlapping another,
//! shows up as a mismatch and ends the run. All accesses are volatile so
//! the compiler cannot fold a write and its read-back into nothing when it
//! can see through an inlined allocator.

/// How blocks are touched.
#[derive(Clone, Copy, Debug)]
pub struct Touch {
    verify: bool,
}

impl Touch {
    /// One write and one read per block (`verify = false`), or full fill
    /// and check (`verify = true`).
    pub fn new(verify: bool) -> Touch {
        Touch { verify }
    }

    /// Writes the block's mark.
    ///
    /// # Safety
    /// `ptr` points to a live block of at least `size` ≥ 8 bytes that only
    /// the caller uses.
    #[inline]
    pub unsafe fn put(self, ptr: *mut u8, size: usize, seed: u64) {
        if self.verify {
            // SAFETY: forwarded from the caller.
            unsafe { fill(ptr, size, seed) }
        } else {
            if ptr as usize % 8 != 0 {
                misaligned(ptr);
            }
            // SAFETY: the block holds at least 8 bytes and `ptr` is 8-aligned (checked).
            unsafe { ptr.cast::<u64>().write_volatile(seed) }
        }
    }

    /// Checks the block's mark; a mismatch ends the run.
    ///
    /// # Safety
    /// As [`put`](Self::put), and `put` was called on the block with `seed`.
    #[inline]
    pub unsafe fn check(self, ptr: *mut u8, size: usize, seed: u64) {
        let bad = if self.verify {
            // SAFETY: forwarded from the caller.
            unsafe { first_mismatch(ptr, size, seed) }
        } else {
            // SAFETY: as in `put`, which checked the alignment of this block.
            let found = unsafe { ptr.cast::<u64>().read_volatile() };
            (found != seed).then_some(0)
        };
        if let Some(at) = bad {
            mismatch(ptr, size, seed, at);
        }
    }
}

#[cold]
#[inline(never)]
fn mismatch(ptr: *mut u8, size: usize, seed: u64, at: usize) -> ! {
    panic!(
        "VERIFY FAILED: live block overwritten: {size}-byte block at {ptr:p} (seed {seed:#x}) changed at byte \
         {at}; its memory was also given to another block"
    )
}

#[cold]
#[inline(never)]
fn misaligned(ptr: *mut u8) -> ! {
    panic!("allocator returned {ptr:p}, not 16-byte aligned")
}

#[inline]
fn word(seed: u64, index: usize) -> [u8; 8] {
    (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93))
        .to_le_bytes()
}

/// # Safety
/// `ptr..ptr + size` is a live block only the caller uses.
unsafe fn fill(ptr: *mut u8, size: usize, seed: u64) {
    let words = size / 8;
    for i in 0..words {
        // SAFETY: word i lies inside the block; [u8; 8] needs no alignment.
        unsafe {
            ptr.add(i * 8)
                .cast::<[u8; 8]>()
                .write_volatile(word(seed, i))
        };
    }
    let tail = word(seed, words);
    for (j, &byte) in tail.iter().enumerate().take(size % 8) {
        // SAFETY: byte words * 8 + j < size.
        unsafe { ptr.add(words * 8 + j).write_volatile(byte) };
    }
}

/// # Safety
/// As [`fill`].
unsafe fn first_mismatch(ptr: *mut u8, size: usize, seed: u64) -> Option<usize> {
    let words = size / 8;
    for i in 0..words {
        // SAFETY: as in `fill`.
        let found = unsafe { ptr.add(i * 8).cast::<[u8; 8]>().read_volatile() };
        if found != word(seed, i) {
            return Some(i * 8);
        }
    }
    let tail = word(seed, words);
    for (j, &byte) in tail.iter().enumerate().take(size % 8) {
        // SAFETY: as in `fill`.
        if unsafe { ptr.add(words * 8 + j).read_volatile() } != byte {
            return Some(words * 8 + j);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_check_passes_and_a_changed_byte_is_found() {
        let mut buf = vec![0u8; 77];
        let touch = Touch::new(true);
        // SAFETY: buf is a live 77-byte buffer owned here.
        unsafe { touch.put(buf.as_mut_ptr(), 77, 42) };
        let ptr = buf.as_mut_ptr();
        // SAFETY: as above.
        let intact = unsafe { first_mismatch(ptr, 77, 42) };
        assert_eq!(intact, None);
        buf[76] ^= 1;
        let ptr = buf.as_mut_ptr();
        // SAFETY: as above.
        let changed = unsafe { first_mismatch(ptr, 77, 42) };
        assert_eq!(changed, Some(76));
        // SAFETY: as above.
        let other_seed = unsafe { first_mismatch(ptr, 77, 43) };
        assert_eq!(other_seed, Some(0));
    }

    #[test]
    #[should_panic(expected = "VERIFY FAILED")]
    fn a_changed_mark_ends_the_run() {
        let mut buf = [0u64; 2];
        let ptr = buf.as_mut_ptr().cast::<u8>();
        let touch = Touch::new(false);
        // SAFETY: buf is a live, 8-aligned 16-byte buffer owned here.
        unsafe { touch.put(ptr, 16, 7) };
        // SAFETY: byte 3 of the buffer.
        unsafe { ptr.add(3).write(0xFF) };
        // SAFETY: as above.
        unsafe { touch.check(ptr, 16, 7) };
    }
}

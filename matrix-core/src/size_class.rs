//! TLSF size classes.
//!
//! Block sizes (header included) are multiples of 16. Sizes below 256 map
//! linearly onto first level 0; above that each power of two is a first
//! level split into [`SL_COUNT`] equal second levels:
//!
//! ```text
//!  fl 0: [0,256)      16 classes of 16 B
//!  fl 1: [256,512)    16 classes of 16 B
//!  fl 2: [512,1024)   16 classes of 32 B
//!  fl k: [2^(7+k), 2^(8+k))  16 classes of 2^(3+k) B
//! ```
//!
//! `class_of` files a free block under the class that contains its size;
//! `class_at_least` rounds a request *up* to the first class whose every
//! block is large enough, so any block popped from it fits.

/// log2 of the number of second-level classes per first level.
pub const SL_LOG2: u32 = 4;
/// Second-level classes per first level.
pub const SL_COUNT: usize = 1 << SL_LOG2;
/// log2 of the size below which classes are linear (256 B).
const LINEAR_LOG2: u32 = SL_LOG2 + 4;

/// First-level classes: enough for blocks up to 4 GiB, or a small model under loom.
#[cfg(not(loom))]
pub const FL_COUNT: usize = (32 - LINEAR_LOG2 + 1) as usize;
/// First-level classes: enough for blocks up to 4 GiB, or a small model under loom.
#[cfg(loom)]
pub const FL_COUNT: usize = 4;

/// A bucket of the free index: first level, second level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SizeClass {
    /// First level (power of two).
    pub fl: usize,
    /// Second level (linear subdivision).
    pub sl: usize,
}

impl SizeClass {
    /// The smallest block size this class holds.
    pub fn lower_bound(self) -> u64 {
        if self.fl == 0 {
            (self.sl as u64) << 4
        } else {
            let base = 1u64 << (LINEAR_LOG2 + self.fl as u32 - 1);
            base + (self.sl as u64) * (base >> SL_LOG2)
        }
    }
}

/// The class a free block of `size` bytes is filed under.
#[inline]
pub const fn class_of(size: u32) -> SizeClass {
    if size < (1 << LINEAR_LOG2) {
        SizeClass {
            fl: 0,
            sl: (size >> 4) as usize,
        }
    } else {
        let msb = 31 - size.leading_zeros();
        let fl = (msb - LINEAR_LOG2 + 1) as usize;
        let sl = ((size >> (msb - SL_LOG2)) as usize) & (SL_COUNT - 1);
        SizeClass {
            fl: if fl < FL_COUNT { fl } else { FL_COUNT - 1 },
            sl,
        }
    }
}

/// The first class all of whose blocks hold at least `size` bytes, or `None`
/// if no class is that large.
#[inline]
pub fn class_at_least(size: u32) -> Option<SizeClass> {
    let c = class_of(size);
    if c.lower_bound() == size as u64 {
        return Some(c);
    }
    next_class(c)
}

/// The class after `c`, if any.
#[inline]
pub fn next_class(c: SizeClass) -> Option<SizeClass> {
    if c.sl + 1 < SL_COUNT {
        Some(SizeClass {
            fl: c.fl,
            sl: c.sl + 1,
        })
    } else if c.fl + 1 < FL_COUNT {
        Some(SizeClass {
            fl: c.fl + 1,
            sl: 0,
        })
    } else {
        None
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn classes_contain_their_sizes() {
        let mut size = 48u32;
        while size < (1 << 31) {
            let c = class_of(size);
            assert!(
                c.lower_bound() <= size as u64,
                "size {size} below its class {c:?}"
            );
            if let Some(n) = next_class(c) {
                assert!(
                    n.lower_bound() > size as u64,
                    "size {size} not below next class"
                );
            }
            size = size + 16 + size / 7 / 16 * 16;
        }
    }

    #[test]
    fn round_up_class_fits_every_block() {
        for size in (48u32..70_000).step_by(16) {
            let c = class_at_least(size).unwrap();
            assert!(
                c.lower_bound() >= size as u64,
                "class {c:?} can hold blocks below {size}"
            );
            assert!(c >= class_of(size));
        }
    }

    #[test]
    fn largest_sizes_map_to_last_level() {
        assert_eq!(class_of(u32::MAX - 15).fl, FL_COUNT - 1);
        assert!(class_at_least(u32::MAX - 15).is_none());
        assert_eq!(class_of(255), SizeClass { fl: 0, sl: 15 });
        assert_eq!(class_of(256), SizeClass { fl: 1, sl: 0 });
        assert_eq!(class_of(4096), SizeClass { fl: 5, sl: 0 });
    }
}

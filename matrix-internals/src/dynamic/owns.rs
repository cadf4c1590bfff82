//! Values that own blocks, freed recursively.

use super::DynError;
use matrix_handler::{BlockToken, HandlerFunctions};

/// A value that may own blocks of the segment (a container's buffer, the
/// buffers of its elements). `free_blocks` frees all of them, depth first,
/// and leaves the value empty, so freeing twice frees nothing twice.
///
/// Plain values own nothing; containers free their elements, then their
/// buffer. Derive it for a record whose fields all implement it:
///
/// ```
/// use matrix_handler::ShmSafe;
/// use matrix_internals::dynamic::{ShmString, ShmVec};
/// use matrix_internals::OwnsBlocks;
///
/// #[derive(ShmSafe, OwnsBlocks, Clone, Copy)]
/// #[repr(C)]
/// struct Sample {
///     name: ShmString,
///     values: ShmVec<f64>,
///     id: u64,
/// }
/// ```
pub trait OwnsBlocks {
    /// Frees every block this value owns and leaves it empty.
    ///
    /// # Errors
    /// The first block that could not be freed (stale, foreign, already
    /// freed elsewhere); the blocks before it are freed.
    fn free_blocks<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError>;

    /// Calls `visit` with the token of every block this value owns, each
    /// block before the blocks named inside it (pre-order). A block that
    /// cannot be read (freed, foreign) is visited but not walked into.
    ///
    /// This is how a structure takes over a whole value at once (hand
    /// every block to the segment, first the outer ones) or frees what is
    /// left of a value a dead writer half built: a walk in pre-order never
    /// needs a block after the blocks it names are gone.
    fn visit_blocks<H: HandlerFunctions>(&self, h: &H, visit: &mut dyn FnMut(BlockToken));
}

macro_rules! owns_nothing {
    ($($t:ty),* $(,)?) => {
        $(impl OwnsBlocks for $t {
            #[inline]
            fn free_blocks<H: HandlerFunctions>(&mut self, _: &H) -> Result<(), DynError> {
                Ok(())
            }
            #[inline]
            fn visit_blocks<H: HandlerFunctions>(&self, _: &H, _: &mut dyn FnMut(BlockToken)) {}
        })*
    };
}

owns_nothing!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);
owns_nothing!(matrix_handler::BlockToken);

impl<T: 'static> OwnsBlocks for matrix_handler::RelativePtr<T> {
    /// A bare offset owns nothing it could free safely (no generation).
    fn free_blocks<H: HandlerFunctions>(&mut self, _: &H) -> Result<(), DynError> {
        Ok(())
    }
    fn visit_blocks<H: HandlerFunctions>(&self, _: &H, _: &mut dyn FnMut(BlockToken)) {}
}

impl<T: OwnsBlocks, const N: usize> OwnsBlocks for [T; N] {
    fn free_blocks<H: HandlerFunctions>(&mut self, h: &H) -> Result<(), DynError> {
        self.iter_mut().try_for_each(|e| e.free_blocks(h))
    }
    fn visit_blocks<H: HandlerFunctions>(&self, h: &H, visit: &mut dyn FnMut(BlockToken)) {
        self.iter().for_each(|e| e.visit_blocks(h, visit))
    }
}

impl<T> OwnsBlocks for std::marker::PhantomData<T> {
    fn free_blocks<H: HandlerFunctions>(&mut self, _: &H) -> Result<(), DynError> {
        Ok(())
    }
    fn visit_blocks<H: HandlerFunctions>(&self, _: &H, _: &mut dyn FnMut(BlockToken)) {}
}

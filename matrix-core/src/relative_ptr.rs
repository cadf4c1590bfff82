//! Offsets from the segment base, the only kind of pointer stored in shared memory.

use std::fmt;
use std::marker::PhantomData;

/// A typed offset from the base of a segment.
///
/// Every process maps a segment at its own address, so shared memory holds
/// offsets, never pointers; a `RelativePtr` becomes a pointer only against
/// one process's base address, and only for as long as that mapping lives.
#[repr(transparent)]
pub struct RelativePtr<T> {
    offset: u32,
    _type: PhantomData<fn() -> T>,
}

impl<T> RelativePtr<T> {
    /// Wraps an offset. Nothing is checked until it is resolved.
    #[inline]
    pub const fn new(offset: u32) -> Self {
        Self {
            offset,
            _type: PhantomData,
        }
    }

    /// The offset from the segment base.
    #[inline]
    pub const fn offset(self) -> u32 {
        self.offset
    }

    /// Reinterprets the offset as pointing to a `U`.
    #[inline]
    pub const fn cast<U>(self) -> RelativePtr<U> {
        RelativePtr::new(self.offset)
    }

    /// The address of the target in a mapping based at `base`.
    ///
    /// # Safety
    /// `base` must be the base of a live mapping that contains
    /// `offset .. offset + size_of::<T>()`.
    #[inline]
    pub unsafe fn as_ptr(self, base: *const u8) -> *mut T {
        // SAFETY: the caller guarantees the offset lies inside the mapping.
        unsafe { base.add(self.offset as usize) as *mut T }
    }

    /// A shared reference to the target.
    ///
    /// # Safety
    /// As [`as_ptr`](Self::as_ptr); in addition the target must hold a valid,
    /// aligned `T`, nobody may write it while the reference lives, and the
    /// mapping must outlive `'a`.
    #[inline]
    pub unsafe fn resolve<'a>(self, base: *const u8) -> &'a T {
        // SAFETY: forwarded to the caller.
        unsafe { &*self.as_ptr(base) }
    }

    /// An exclusive reference to the target.
    ///
    /// # Safety
    /// As [`resolve`](Self::resolve), and no other reference to the target may
    /// exist in any thread or process while this one lives.
    #[inline]
    pub unsafe fn resolve_mut<'a>(self, base: *const u8) -> &'a mut T {
        // SAFETY: forwarded to the caller.
        unsafe { &mut *self.as_ptr(base) }
    }
}

impl<T> Clone for RelativePtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for RelativePtr<T> {}
impl<T> PartialEq for RelativePtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset
    }
}
impl<T> Eq for RelativePtr<T> {}
impl<T> fmt::Debug for RelativePtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelativePtr({})", self.offset)
    }
}

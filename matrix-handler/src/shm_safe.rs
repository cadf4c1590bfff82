//! The marker of types that may live in a shared segment.

use crate::BlockToken;
use matrix_core::RelativePtr;
use std::marker::PhantomData;
use std::sync::atomic::{
    AtomicBool, AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicU16, AtomicU32, AtomicU64,
    AtomicU8,
};

/// A type whose values may live in a segment that other processes map and
/// write: the bound of [`allocate`](crate::HandlerFunctions::allocate) and of
/// the safe accessor [`get`](crate::HandlerFunctions::get).
///
/// Derive it — `#[derive(ShmSafe)]` on a `#[repr(C)]` struct — rather than
/// implementing it. The derive checks every field; the implementations here
/// are the leaves: fixed-width integers, floats, their atomics, arrays,
/// [`RelativePtr`], [`BlockToken`] and `PhantomData`.
///
/// ```
/// use matrix_handler::ShmSafe;
/// use std::sync::atomic::AtomicU64;
///
/// #[derive(ShmSafe)]
/// #[repr(C)]
/// struct Counters {
///     hits: AtomicU64,
///     misses: AtomicU64,
///     capacity: u32,
///     _pad: u32,
/// }
/// ```
///
/// These are refused at compile time:
///
/// ```compile_fail,E0277
/// #[derive(matrix_handler::ShmSafe)]
/// #[repr(C)]
/// struct Named { name: String } // owns a heap pointer
/// ```
/// ```compile_fail
/// #[derive(matrix_handler::ShmSafe)]
/// struct NoRepr { n: u64 } // layout not fixed
/// ```
/// ```compile_fail,E0277
/// #[derive(matrix_handler::ShmSafe)]
/// #[repr(C)]
/// struct Flag { on: bool } // another process can write a 2
/// ```
/// ```compile_fail,E0119
/// #[derive(matrix_handler::ShmSafe)]
/// #[repr(C)]
/// struct Guard { n: u64 }
/// impl Drop for Guard { fn drop(&mut self) {} } // nothing would run it
/// ```
/// ```compile_fail
/// #[derive(matrix_handler::ShmSafe)]
/// #[repr(u8)]
/// enum Side { Buy, Sell } // another process can write a 2
/// ```
/// ```compile_fail
/// #[derive(matrix_handler::ShmSafe)]
/// #[repr(C, packed)]
/// struct Tight { a: u8, b: std::sync::atomic::AtomicU64 } // misaligned atomic
/// ```
/// ```compile_fail,E0277
/// use matrix_handler::{HandlerFunctions, MatrixHandler};
/// let h = MatrixHandler::bootstrap(None, 1 << 16).unwrap();
/// let _ = h.allocate::<String>(); // allocate is bounded by ShmSafe
/// ```
///
/// # Safety
///
/// Implementing it promises, for the type and everything it contains:
/// - its layout is fixed (`#[repr(C)]` or `#[repr(transparent)]`, not
///   packed) and the same in every process that maps the segment;
/// - **every bit pattern is a valid value**, so bytes written by another
///   process, left by a block's previous occupant, or torn by a concurrent
///   write are still a value (this is what makes `get` safe for a block
///   another process is writing through atomics, and harmless to read
///   after it was freed elsewhere);
/// - it holds no pointer or reference (their values mean nothing in another
///   process): shared memory holds offsets;
/// - it has no `Drop` (nothing runs it when another process or recovery
///   frees the block).
///
/// `bool`, `char`, enums and `NonZero*` are not `ShmSafe` (they have invalid
/// bit patterns); `usize` and `isize` are not either, so that the layout does
/// not depend on the pointer width of the process that maps the segment.
pub unsafe trait ShmSafe: Sized + 'static {}

macro_rules! leaves {
    ($($t:ty),* $(,)?) => {
        // SAFETY: fixed-size integers, floats and their atomics have every
        // bit pattern valid (an atomic is an UnsafeCell over its integer,
        // AtomicBool over a u8 whose any value loads as `!= 0`), hold no
        // pointer, and have no Drop.
        $(unsafe impl ShmSafe for $t {})*
    };
}

leaves!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);
leaves!(AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicI8, AtomicI16, AtomicI32, AtomicI64);
leaves!(AtomicBool);

// SAFETY: an array of ShmSafe elements is laid out as N consecutive
// elements with no extra bytes, so the element's guarantees carry over.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {}

// SAFETY: zero-sized; no bytes, no pointer, no Drop.
unsafe impl<T: ShmSafe> ShmSafe for PhantomData<T> {}

// SAFETY: a RelativePtr is a repr(transparent) u32 offset (any value is a
// value; it is checked when resolved), not a pointer, and has no Drop.
unsafe impl<T: 'static> ShmSafe for RelativePtr<T> {}

// SAFETY: BlockToken is repr(C) over two u64 (any value is a value; a token
// is validated against the segment when used), and has no Drop.
unsafe impl ShmSafe for BlockToken {}

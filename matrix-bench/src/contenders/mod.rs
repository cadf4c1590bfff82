//! The allocators under test, behind one small interface.
//!
//! ```text
//!  workload ──alloc(size)──► BenchAlloc ──► Handle (offset or address)
//!           ◄─payload(h)───             ──► *mut u8 to touch
//!           ──free(h, size)─►
//! ```
//!
//! A handle is whatever the allocator naturally hands out: a payload offset
//! for the two shared-memory allocators (that is what crosses a process
//! boundary), an address for the process-local ones. A failed allocation or
//! a refused free ends the run with a panic: a benchmark that skips a
//! failure measures something else.

pub mod mimalloc;
pub mod ours;
pub mod peer;
pub mod pool;
pub mod system;
pub mod tlsf;

use serde::{Deserialize, Serialize};

/// Which allocator a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// This workspace's allocator, through `matrix_handler::MatrixHandler`.
    Ours,
    /// `rlsf::Tlsf`, single-threaded, no lock.
    Rlsf,
    /// `rlsf::Tlsf` behind a `std::sync::Mutex`, for threaded workloads.
    RlsfMutex,
    /// The system allocator: `libc::malloc` / `libc::free`.
    System,
    /// The `atomic-matrix` 0.4.1 crate.
    Peer,
    /// mimalloc: `mi_malloc` / `mi_free`.
    Mimalloc,
}

impl Contender {
    /// Every contender, in table order.
    pub const ALL: [Contender; 6] = [
        Contender::Ours,
        Contender::System,
        Contender::Mimalloc,
        Contender::Rlsf,
        Contender::RlsfMutex,
        Contender::Peer,
    ];

    /// The name used on the command line and in JSON.
    pub fn key(self) -> &'static str {
        match self {
            Contender::Ours => "ours",
            Contender::Rlsf => "rlsf",
            Contender::RlsfMutex => "rlsf-mutex",
            Contender::System => "system",
            Contender::Peer => "atomic-matrix",
            Contender::Mimalloc => "mimalloc",
        }
    }

    /// The column heading of the table.
    pub fn label(self) -> &'static str {
        match self {
            Contender::Ours => "ours",
            Contender::Rlsf => "rlsf",
            Contender::RlsfMutex => "rlsf + Mutex",
            Contender::System => "system malloc",
            Contender::Peer => "atomic-matrix 0.4.1",
            Contender::Mimalloc => "mimalloc",
        }
    }

    /// Parses a [`key`](Self::key).
    pub fn parse(text: &str) -> Option<Contender> {
        Contender::ALL.into_iter().find(|c| c.key() == text)
    }

    /// Whether two threads may use it at once.
    pub fn thread_safe(self) -> bool {
        self != Contender::Rlsf
    }

    /// Whether it is measured on single-threaded workloads (the mutex
    /// variant is only there to give rlsf a threaded form).
    pub fn runs_single_threaded(self) -> bool {
        self != Contender::RlsfMutex
    }
}

/// What the workloads need from an allocator.
pub trait BenchAlloc {
    /// A live block as the allocator names it.
    type Handle: Copy + Send;

    /// What one thread of a workload allocates and frees through: a
    /// per-thread handle where the allocator offers one and a user would
    /// make one (ours: `HandlerFunctions::local`), else the allocator itself
    /// ([`Direct`]).
    type Thread<'a>: BenchAlloc<Handle = Self::Handle>
    where
        Self: 'a;

    /// The handle for the calling thread; made once per thread, before its
    /// timed part.
    fn thread(&self) -> Self::Thread<'_>;

    /// Allocates at least `size` bytes, 16-byte aligned. Panics on failure.
    fn alloc(&self, size: usize) -> Self::Handle;

    /// Frees a block. Panics if the allocator refuses it.
    ///
    /// # Safety
    /// `handle` came from [`alloc`](Self::alloc) on this allocator with this
    /// `size` and has not been freed since.
    unsafe fn free(&self, handle: Self::Handle, size: usize);

    /// Where the block's payload is in this process.
    fn payload(&self, handle: Self::Handle) -> *mut u8;

    /// Called once every block of a run has been freed: a chance to merge
    /// and count what is left. Returns the number of free blocks, for the
    /// allocators that can say.
    fn after_free_all(&self) -> Option<u64> {
        None
    }
}

/// An allocator used as it is from every thread (no per-thread handle).
pub struct Direct<'a, A: ?Sized>(pub &'a A);

impl<A: BenchAlloc> BenchAlloc for Direct<'_, A> {
    type Handle = A::Handle;
    type Thread<'b>
        = Direct<'b, A>
    where
        Self: 'b;

    #[inline(always)]
    fn thread(&self) -> Direct<'_, A> {
        Direct(self.0)
    }

    #[inline(always)]
    fn alloc(&self, size: usize) -> A::Handle {
        self.0.alloc(size)
    }

    #[inline(always)]
    unsafe fn free(&self, handle: A::Handle, size: usize) {
        // SAFETY: forwarded: the caller's guarantee is the one `A::free` asks.
        unsafe { self.0.free(handle, size) }
    }

    #[inline(always)]
    fn payload(&self, handle: A::Handle) -> *mut u8 {
        self.0.payload(handle)
    }
}

/// Ends the run: an allocation the workload was sized to fit did not.
#[cold]
#[inline(never)]
pub fn allocation_failed(who: &str, size: usize, why: &dyn std::fmt::Display) -> ! {
    panic!("{who}: allocation of {size} bytes failed: {why}")
}

/// Ends the run: the allocator refused to free a live block.
#[cold]
#[inline(never)]
pub fn free_failed(who: &str, what: &dyn std::fmt::Display, why: &dyn std::fmt::Display) -> ! {
    panic!("{who}: free of {what} failed: {why}")
}

//! This workspace's allocator, through the handler API on a `/dev/shm` segment.

use super::{allocation_failed, free_failed, BenchAlloc};
use matrix_handler::{HandlerFunctions, LocalHandler, MatrixHandler};
use std::cell::UnsafeCell;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Payload offset minus this is the header offset `free_at` takes.
const HEADER: u32 = matrix_core::BLOCK_HEADER_SIZE;

/// A named segment created for one run and unlinked when the run ends,
/// also when it ends in a panic (the parent process removes it after a
/// crash).
pub struct Ours {
    handler: MatrixHandler,
    name: String,
    /// Other processes attached to the segment (`--processes`).
    helpers: Mutex<Vec<Child>>,
}

impl Ours {
    /// Creates `/dev/shm/<name>` of `size` bytes and faults it in.
    pub fn create(name: &str, size: u64) -> Ours {
        let size = u32::try_from(size).expect("a segment is at most u32::MAX bytes");
        let handler = match MatrixHandler::create(name, size) {
            Ok(handler) => handler,
            Err(e) => panic!("ours: cannot create segment {name} of {size} bytes: {e}"),
        };
        let ours = Ours {
            handler,
            name: name.to_owned(),
            helpers: Mutex::new(Vec::new()),
        };
        let base = ours.handler.base_ptr().cast_mut();
        let len = ours.handler.segment_size() as usize;
        // SAFETY: the whole segment is this process's fresh mapping (the
        // mmap base is page-aligned) and no other participant exists yet;
        // populating does not change a byte.
        unsafe { super::pool::populate(base, len) };
        ours
    }
}

impl Ours {
    /// Starts `count` processes that attach to this segment and stay
    /// attached until [`stop_helpers`](Self::stop_helpers); every other one
    /// (the first, third, …) allocates. Returns once all are attached.
    pub fn attach_helpers(&self, count: usize) {
        let exe = std::env::current_exe().expect("this program's path");
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..count {
            let mut command = Command::new(&exe);
            command.args(["--attach", &self.name]);
            if i % 2 == 0 {
                command.arg("--allocating");
            }
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("ours: cannot start an attached process: {e}"));
            let mut line = String::new();
            let stdout = child.stdout.take().expect("piped stdout");
            let _ = BufReader::new(stdout).read_line(&mut line);
            assert_eq!(line.trim(), "attached", "ours: an attached process failed");
            helpers.push(child);
        }
    }

    /// Closes the helpers' stdin and waits until they have freed their
    /// blocks and detached.
    fn stop_helpers(&self) {
        let mut helpers = self.helpers.lock().unwrap_or_else(|e| e.into_inner());
        for mut child in helpers.drain(..) {
            drop(child.stdin.take());
            match child.wait() {
                Ok(status) if status.success() => {}
                other => panic!("ours: an attached process ended badly: {other:?}"),
            }
        }
    }
}

/// Blocks an allocating helper allocates and frees per burst, and its
/// pause after each: a steady trickle of allocations from another process
/// that costs the measured process little of the two cores.
const HELPER_BURST: usize = 64;
const HELPER_PAUSE: Duration = Duration::from_micros(200);

/// A helper process (`--attach NAME [--allocating]`): attaches to the
/// segment, says so on stdout, allocates or idles until stdin closes, then
/// frees what it holds and detaches.
pub fn attached_helper(name: &str, allocating: bool) {
    // SAFETY: plain syscall: die with the measuring process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let handler = MatrixHandler::open(name)
        .unwrap_or_else(|e| panic!("attached process: cannot open {name}: {e}"));
    println!("attached");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        // Relaxed: a flag polled in a loop; nothing else is published by it.
        flag.store(true, Ordering::Relaxed);
    });
    let mut rng = fastrand::Rng::with_seed(crate::workload::SEED ^ std::process::id() as u64);
    let mut held = Vec::with_capacity(HELPER_BURST);
    // Relaxed: as above.
    while !stop.load(Ordering::Relaxed) {
        if allocating {
            for _ in 0..HELPER_BURST {
                let size = rng.usize(crate::workload::MIXED_SIZES) as u32;
                match handler.allocate_raw(size) {
                    Ok(ptr) => held.push(ptr.offset()),
                    Err(e) => panic!("attached process: allocation failed: {e}"),
                }
            }
            for offset in held.drain(..) {
                if let Err(e) = handler.free_at(offset - HEADER) {
                    panic!("attached process: free failed: {e}");
                }
            }
        }
        std::thread::sleep(HELPER_PAUSE);
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        // Normally stopped already (after_free_all); after a panic, end them.
        let helpers = self.helpers.get_mut().unwrap_or_else(|e| e.into_inner());
        for mut child in helpers.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = matrix_handler::unlink(&self.name);
    }
}

impl BenchAlloc for Ours {
    /// The payload offset, as a block travels between processes.
    type Handle = u32;

    type Thread<'a> = OursThread<'a>;

    /// The thread's own [`LocalHandler`], as a user's worker thread makes
    /// one; its drop, when the thread's part ends, returns what it cached.
    fn thread(&self) -> OursThread<'_> {
        OursThread {
            local: UnsafeCell::new(self.handler.local()),
            ours: self,
        }
    }

    #[inline]
    fn alloc(&self, size: usize) -> u32 {
        match self.handler.allocate_raw(size as u32) {
            Ok(ptr) => ptr.offset(),
            Err(e) => allocation_failed("ours", size, &e),
        }
    }

    #[inline]
    unsafe fn free(&self, handle: u32, _size: usize) {
        if let Err(e) = self.handler.free_at(handle - HEADER) {
            free_failed("ours", &format_args!("payload offset {handle}"), &e)
        }
    }

    #[inline]
    fn payload(&self, handle: u32) -> *mut u8 {
        self.handler
            .base_ptr()
            .cast_mut()
            .wrapping_add(handle as usize)
    }

    fn after_free_all(&self) -> Option<u64> {
        // The attached processes free their blocks and leave first.
        self.stop_helpers();
        if let Err(e) = self.handler.consolidate() {
            panic!("ours: consolidation after freeing every block failed: {e}");
        }
        match self.handler.stats() {
            Ok(stats) => Some(stats.free_blocks),
            Err(e) => panic!("ours: stats after freeing every block failed: {e}"),
        }
    }
}

/// One thread's use of [`Ours`]: `LocalHandler::allocate_raw` / `free_at`.
pub struct OursThread<'a> {
    /// `UnsafeCell`: the workloads call through `&self`; the handle is not
    /// `Sync` (nor is this type), so only this thread reaches it.
    local: UnsafeCell<LocalHandler>,
    ours: &'a Ours,
}

impl BenchAlloc for OursThread<'_> {
    type Handle = u32;

    type Thread<'b>
        = super::Direct<'b, Self>
    where
        Self: 'b;

    fn thread(&self) -> super::Direct<'_, Self> {
        super::Direct(self)
    }

    #[inline(always)]
    fn alloc(&self, size: usize) -> u32 {
        // SAFETY: this type is not Sync, so only the calling thread reaches
        // the handle, and no reference to it outlives this call (which does
        // not re-enter the workload).
        let local = unsafe { &mut *self.local.get() };
        match local.allocate_raw(size as u32) {
            Ok(ptr) => ptr.offset(),
            Err(e) => allocation_failed("ours", size, &e),
        }
    }

    #[inline(always)]
    unsafe fn free(&self, handle: u32, _size: usize) {
        // SAFETY: as in `alloc`.
        let local = unsafe { &mut *self.local.get() };
        if let Err(e) = local.free_at(handle - HEADER) {
            free_failed("ours", &format_args!("payload offset {handle}"), &e)
        }
    }

    #[inline]
    fn payload(&self, handle: u32) -> *mut u8 {
        self.ours.payload(handle)
    }
}

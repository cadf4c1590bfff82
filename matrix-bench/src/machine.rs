//! The machine a run happened on, and how much memory it can give.

use serde::Serialize;

/// What the report says about the machine.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu: String,
    /// Logical CPUs this process may run on.
    pub cores: usize,
    /// Kernel release and architecture.
    pub kernel: String,
    /// `rustc --version` of the compiler that built this program.
    pub rustc: String,
    /// glibc version (the system allocator measured).
    pub libc: String,
    /// Total RAM in bytes.
    pub memory_bytes: u64,
    /// Bytes `/dev/shm` can still take.
    pub shm_free_bytes: u64,
    /// The workspace commit measured, and whether the allocator's sources
    /// had uncommitted changes.
    pub source: String,
    /// 1-minute load average when the run started: other work on the
    /// machine shows up as noise in the figures.
    pub load_at_start: String,
    /// 1-minute load average when the run ended (set by the caller).
    pub load_at_end: String,
    /// How the measured children were built (set by the caller).
    pub build: String,
}

impl Machine {
    /// Gathers the facts; unknown ones read "unknown".
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let kernel = format!(
            "Linux {} {}",
            read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".to_owned()),
            std::env::consts::ARCH
        );
        Machine {
            cpu,
            cores,
            kernel,
            rustc: rustc_version(),
            libc: libc_version(),
            memory_bytes: meminfo("MemTotal:").unwrap_or(0),
            shm_free_bytes: shm_free_bytes(),
            load_at_start: load_average(),
            load_at_end: String::new(),
            build: String::new(),
            source: source_revision(),
        }
    }

    /// One markdown paragraph.
    pub fn markdown(&self) -> String {
        format!(
            "Machine: {} ({} cores), {}, {}, {}, {:.1} GiB RAM; load average {} at the start, {} at the end. \
             Source: {}. Children: {}.",
            self.cpu,
            self.cores,
            self.kernel,
            self.rustc,
            self.libc,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.load_at_start,
            self.load_at_end,
            self.source,
            self.build
        )
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The compiler version recorded by build.rs, or asked of `rustc` now.
fn rustc_version() -> String {
    let built = env!("MATRIX_BENCH_RUSTC");
    if !built.is_empty() {
        return built.to_owned();
    }
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc unknown".to_owned())
}

fn libc_version() -> String {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    format!("glibc {}", version.to_string_lossy())
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Free bytes of the `/dev/shm` file system (0 if it cannot be read).
pub fn shm_free_bytes() -> u64 {
    let path = c"/dev/shm";
    // SAFETY: statvfs is plain old data; all zeros is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return 0;
    }
    stat.f_bavail as u64 * stat.f_frsize as u64
}

/// The 1-minute load average.
pub fn load_average() -> String {
    read_trimmed("/proc/loadavg")
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `commit 1a2b3c4` (and a note when matrix-core or matrix-handler differ
/// from it), read with git from the workspace this program was built in.
fn source_revision() -> String {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        None => "unknown commit".to_owned(),
        Some(commit) => match git(&[
            "status",
            "--porcelain",
            "--",
            "matrix-core/src",
            "matrix-handler/src",
        ]) {
            Some(changes) if !changes.is_empty() => {
                format!("commit {commit} with uncommitted changes in matrix-core / matrix-handler")
            }
            _ => format!("commit {commit}"),
        },
    }
}

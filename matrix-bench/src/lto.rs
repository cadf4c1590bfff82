//! The measured children are built the way a user builds a release binary
//! that links the allocator: with the workspace's `bench-lto` profile
//! (release + `lto = "fat"` + `codegen-units = 1`), so the handler, the
//! core and the bench's loop are optimised as one program. The parent (a
//! plain `--release` build) runs `cargo build --profile bench-lto` once and
//! starts every child from that binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the children came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// `target/bench-lto/matrix-bench`.
    Lto,
    /// The parent's own binary (`--no-lto`).
    ThisBinary,
}

impl Build {
    /// One phrase for the machine line of the report.
    pub fn describe(self) -> &'static str {
        match self {
            Build::Lto => "profile bench-lto (release, lto = \"fat\", codegen-units = 1)",
            Build::ThisBinary => "this binary as built (--no-lto)",
        }
    }
}

/// Builds the children with the `bench-lto` profile and returns their path,
/// next to `this_exe`'s profile directory (`target/<profile>/matrix-bench`).
pub fn build_children(this_exe: &Path) -> Result<PathBuf, String> {
    let target = this_exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in a target directory", this_exe.display()))?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    // `cargo run` exports CARGO; the compile-time value is the fallback.
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(Into::into))
        .unwrap_or_else(|| "cargo".into());
    eprintln!("building the measured children: cargo build --profile bench-lto -p matrix-bench");
    let mut command = Command::new(&cargo);
    // A toolchain's own cargo (not the rustup proxy) would run `rustc` from
    // PATH, the proxy, which obeys a dependency's own `rust-toolchain`
    // file: use the rustc beside that cargo instead.
    let sibling = Path::new(&cargo).with_file_name("rustc");
    if std::env::var_os("RUSTC").is_none() && sibling.is_file() {
        command.env("RUSTC", &sibling);
    }
    let status = command
        .args([
            "build",
            "--profile",
            "bench-lto",
            "-p",
            "matrix-bench",
            "--bin",
        ])
        .arg(env!("CARGO_PKG_NAME"))
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --profile bench-lto failed: {status}"));
    }
    let exe = target.join("bench-lto").join(env!("CARGO_PKG_NAME"));
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(format!("{} was not built", exe.display()))
    }
}

//! Where the examples draw their progress bars: standard error, a few
//! columns short of the terminal's width.
//!
//! indicatif pads every redraw to the full width, which leaves the cursor
//! in the last column; the `^C` a terminal echoes when Ctrl-C is typed then
//! wraps onto a new line, and clearing the bar afterwards clears that new
//! line, leaving the bar's line behind. Reporting a width three columns
//! short keeps the echo on the bar's own line, where the final clear
//! removes both.

use indicatif::{ProgressDrawTarget, TermLike};
use std::io::{IsTerminal, Write};

/// Columns left free at the end of the bar's line.
const SPARE_COLUMNS: u16 = 3;

/// Standard error as indicatif's terminal, narrower by [`SPARE_COLUMNS`].
#[derive(Debug)]
struct NarrowStderr;

impl NarrowStderr {
    fn write(&self, s: &str) -> std::io::Result<()> {
        std::io::stderr().lock().write_all(s.as_bytes())
    }
}

impl TermLike for NarrowStderr {
    fn width(&self) -> u16 {
        // SAFETY: TIOCGWINSZ fills the winsize on our stack and nothing else.
        let cols = unsafe {
            let mut size: libc::winsize = std::mem::zeroed();
            if libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) == 0 {
                size.ws_col
            } else {
                0
            }
        };
        let cols = if cols == 0 { 80 } else { cols };
        cols.saturating_sub(SPARE_COLUMNS).max(20)
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}A"))
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}B"))
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}C"))
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}D"))
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.write(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.write("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Standard error when it is a terminal (hidden otherwise), drawn short
/// of the terminal's last columns; see the module docs.
pub fn progress_target() -> ProgressDrawTarget {
    if std::io::stderr().is_terminal() {
        ProgressDrawTarget::term_like_with_hz(Box::new(NarrowStderr), 20)
    } else {
        ProgressDrawTarget::hidden()
    }
}

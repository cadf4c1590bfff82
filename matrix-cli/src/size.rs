//! Human-readable byte sizes: parsing `64MiB` and printing `64.0 MiB`.

use std::fmt;

/// Why a size string was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid size {:?}: {} (write e.g. 4096, 512KiB, 64MiB, 1GiB)",
            self.input, self.reason
        )
    }
}

impl std::error::Error for SizeError {}

/// Parses a byte count: a plain number, or a number followed by a unit.
///
/// Units (case-insensitive, optional space before them): `B`; `KiB`/`K`,
/// `MiB`/`M`, `GiB`/`G` (powers of 1024); `KB`, `MB`, `GB` (powers of 1000).
/// A decimal fraction is allowed with a unit (`1.5GiB`) as long as the result
/// is a whole number of bytes.
///
/// ```
/// use matrix_cli::size::parse_size;
/// assert_eq!(parse_size("4096").unwrap(), 4096);
/// assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
/// assert_eq!(parse_size("1.5 GiB").unwrap(), 3 << 29);
/// assert_eq!(parse_size("10KB").unwrap(), 10_000);
/// assert!(parse_size("12 parsecs").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let bad = |reason| SizeError {
        input: text.to_owned(),
        reason,
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad("unknown unit; use B, KiB, MiB, GiB (or KB, MB, GB)")),
    };
    match number.split_once('.') {
        None => {
            let value: u64 = number.parse().map_err(|_| bad("the number is too large"))?;
            value
                .checked_mul(multiplier)
                .ok_or_else(|| bad("the size overflows 64 bits"))
        }
        Some((whole, fraction)) => {
            if fraction.contains('.') || fraction.is_empty() && whole.is_empty() {
                return Err(bad("the number is malformed"));
            }
            // Exact decimal arithmetic: whole * m + fraction * m / 10^digits.
            let digits = u32::try_from(fraction.len()).map_err(|_| bad("too many decimals"))?;
            let scale = 10u128
                .checked_pow(digits)
                .ok_or_else(|| bad("too many decimals"))?;
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad("the number is too large"))?
            };
            let fraction: u128 = if fraction.is_empty() {
                0
            } else {
                fraction.parse().map_err(|_| bad("too many decimals"))?
            };
            let scaled = (whole * scale + fraction)
                .checked_mul(multiplier as u128)
                .ok_or_else(|| bad("the size overflows 64 bits"))?;
            if scaled % scale != 0 {
                return Err(bad("it is not a whole number of bytes"));
            }
            u64::try_from(scaled / scale).map_err(|_| bad("the size overflows 64 bits"))
        }
    }
}

/// Formats a byte count with a binary unit: `512 B`, `4.0 KiB`, `63.9 MiB`.
///
/// ```
/// use matrix_cli::size::format_size;
/// assert_eq!(format_size(512), "512 B");
/// assert_eq!(format_size(64 << 20), "64.0 MiB");
/// ```
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let cases = [
            ("0", 0),
            ("17", 17),
            ("17B", 17),
            ("17 b", 17),
            ("2K", 2048),
            ("2kib", 2048),
            ("3MiB", 3 << 20),
            ("3 M", 3 << 20),
            ("1GiB", 1 << 30),
            ("4g", 4 << 30),
            ("5KB", 5_000),
            ("5mb", 5_000_000),
            ("2GB", 2_000_000_000),
            ("0.5KiB", 512),
            (".5KiB", 512),
            ("1.25 MiB", 1_310_720),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for text in [
            "",
            "MiB",
            "-1",
            "1.2.3KiB",
            "1.5",
            "1.0001KiB",
            "12 parsecs",
            "99999999999999999999",
            "16777216TB",
            ".",
        ] {
            assert!(parse_size(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn formats_round_trip_roughly() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(1 << 30), "1.0 GiB");
    }
}

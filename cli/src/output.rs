//! How the `strata` command shows IDs, sizes and JSON, one way everywhere (the
//! commands, the bench's tables, report and verdicts): a digest as `sha256:` and 12 hex
//! digits (the 12 docker shows), any other ID whole, and sizes in binary units
//! (`4.0 KiB`, `189.7 MiB`), as `ls -lh` and `du -h` count them. JSON output always
//! carries the full ID and the exact byte count, pretty-printed.
//!
//! Everything a command prints on stdout goes through [`outln!`] or [`json`]: a write
//! that fails is the command's error ([`Error::Stdout`]), so a full disk exits 7 and a
//! closed pipe 141 (docs/cli.md), where `println!` would panic.

use std::io::{self, Write};

use serde::Serialize;

use crate::error::Error;

/// `println!` that returns the write's failure as [`Error::Stdout`] (use with `?`).
#[macro_export]
macro_rules! outln {
    () => { $crate::output::line(format_args!("")) };
    ($($t:tt)*) => { $crate::output::line(format_args!($($t)*)) };
}

/// One line on stdout. Stdout is line-buffered, so the line is written (and any error
/// seen) before this returns.
pub fn line(args: std::fmt::Arguments) -> Result<(), Error> {
    writeln!(io::stdout().lock(), "{args}").map_err(Error::Stdout)
}

/// Hex digits of a digest shown when IDs are shortened.
pub const SHORT_HEX: usize = 12;

/// `sha256:<12 hex>` for a digest ID (a chain ID, a blob digest); any other ID (a
/// container's or a layer's own name) whole: cut, a name could no longer be typed back.
pub fn short_id(id: &str) -> &str {
    match id.strip_prefix("sha256:") {
        // Digests are ASCII hex: any byte is a character boundary.
        Some(hex) if hex.is_ascii() => &id[..id.len() - hex.len() + hex.len().min(SHORT_HEX)],
        _ => id,
    }
}

/// [`short_id`], or the whole ID with `--no-trunc`.
pub fn id(id: &str, no_trunc: bool) -> &str {
    if no_trunc {
        id
    } else {
        short_id(id)
    }
}

/// `n` bytes in B, KiB, MiB, … (one decimal), for the tables people read.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A size that may be a median or a difference (the bench's figures): [`bytes`] of
/// its magnitude, rounded to the byte, with its sign.
pub fn size(b: f64) -> String {
    let magnitude = bytes(b.abs().round() as u64);
    if b <= -0.5 {
        format!("-{magnitude}")
    } else {
        magnitude
    }
}

/// Prints `value` as pretty JSON on stdout (the schemas of docs/json.md).
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<(), Error> {
    line(format_args!("{}", serde_json::to_string_pretty(value).expect("json")))
}

/// A writer over stdout for a command's bulk output (`layer diff`'s tar) that
/// remembers the errno of a write that failed, so that the failure, reported by the
/// code that wrote (naming its layer and path), can be told to be stdout's.
pub struct Watched<W> {
    inner: W,
    pub failed: Option<i32>,
}

impl<W> Watched<W> {
    pub fn new(inner: W) -> Self {
        Watched { inner, failed: None }
    }

    /// Whether a write failed because the reader went away (EPIPE).
    pub fn closed(&self) -> bool {
        self.failed == Some(libc::EPIPE)
    }
}

impl<W: Write> Write for Watched<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        if let Err(e) = &r {
            self.failed = self.failed.or(e.raw_os_error());
        }
        r
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        if let Err(e) = &r {
            self.failed = self.failed.or(e.raw_os_error());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_shorten_to_sha256_and_12_hex_and_names_stay_whole() {
        let chain = "sha256:ccaa34fad9613c5fd1bb0122932ae924796aeffe5a522950dee09dd43c6d3278";
        assert_eq!(short_id(chain), "sha256:ccaa34fad961");
        assert_eq!(id(chain, true), chain);
        assert_eq!(id(chain, false), "sha256:ccaa34fad961");
        for whole in ["c1", "a-container-name-longer-than-nineteen", "sha256:abc", "sha512:0123456789abcdef0123", ""] {
            assert_eq!(short_id(whole), whole);
        }
    }

    #[test]
    fn sizes_are_binary_with_one_decimal() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (12 * 1024, "12.0 KiB"),
            (3 << 20, "3.0 MiB"),
            (198_916_096, "189.7 MiB"),
            (5 << 40, "5.0 TiB"),
            (5 << 50, "5120.0 TiB"),
        ];
        for (n, want) in cases {
            assert_eq!(bytes(n), want, "{n}");
            assert_eq!(size(n as f64), want, "{n}");
        }
    }

    #[test]
    fn the_bench_figures_read_as_the_commands_sizes_do() {
        assert_eq!(size(980e6), "934.6 MiB");
        assert_eq!(size(20_480.4), "20.0 KiB");
        assert_eq!(size(-4096.0), "-4.0 KiB");
        assert_eq!(size(0.4), "0 B");
        assert_eq!(size(-0.4), "0 B");
        assert_eq!(size(f64::NAN), "0 B");
    }
}

//! Byte sizes as users write them (`32K`, `1.5M`, `16G`, `4096`) and as reports print them.
//!
//! Suffixes are binary (K = 1024), the convention of nccl-tests' `-b/-e` flags and of
//! cache sizes, so `32K` means 32768 bytes everywhere in solbench.

use std::fmt;

/// Parses a size such as `4096`, `32K`, `32KiB`, `1.5M`, `16G`, `1T` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || {
        format!("'{text}' is not a size: write a number of bytes with an optional K, M, G or T suffix (powers of 1024), for example 32K, 256M or 16G")
    };
    if t.is_empty() {
        return Err(bad());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let mult: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(bad()),
    };
    let value: f64 = num.parse().map_err(|_| bad())?;
    if !value.is_finite() || value <= 0.0 {
        return Err(format!("'{text}' is not a positive size"));
    }
    let bytes = value * mult as f64;
    if bytes > (1u64 << 50) as f64 {
        return Err(format!(
            "'{text}' is larger than 1 PiB, which no device here can hold"
        ));
    }
    if bytes.fract() != 0.0 {
        return Err(format!("'{text}' is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// Formats bytes with a binary suffix, exact when possible (`32 KiB`, `1.5 MiB`).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, unit) in UNITS {
        if bytes >= unit {
            let v = bytes as f64 / unit as f64;
            return if bytes.is_multiple_of(unit) {
                format!("{} {name}", bytes / unit)
            } else if v >= 100.0 {
                format!("{v:.0} {name}")
            } else {
                format!("{v:.1} {name}")
            };
        }
    }
    format!("{bytes} B")
}

/// A size that displays in binary units and serialises as plain bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_size(self.0))
    }
}

/// Geometric sweep from `from` to `to` (inclusive when hit exactly) by `factor`.
pub fn geometric_sweep(from: u64, to: u64, factor: f64) -> Vec<u64> {
    let mut out = Vec::new();
    if from == 0 || to < from || factor <= 1.0 {
        return out;
    }
    let mut x = from as f64;
    while x <= to as f64 * (1.0 + 1e-9) {
        let v = x.round() as u64;
        if out.last() != Some(&v) {
            out.push(v);
        }
        x *= factor;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_suffixes_as_powers_of_1024() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("32K").unwrap(), 32 * 1024);
        assert_eq!(parse_size("32KiB").unwrap(), 32 * 1024);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
        assert_eq!(parse_size("16G").unwrap(), 16 << 30);
        assert_eq!(parse_size(" 2g ").unwrap(), 2 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
    }

    #[test]
    fn rejects_nonsense_with_a_sentence() {
        for bad in ["", "K", "12Q", "-4K", "0", "1.3", "abc", "1e3"] {
            let err = parse_size(bad).unwrap_err();
            assert!(
                err.contains(bad.trim()) || err.contains("size"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn formats_exactly_when_possible() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(32 * 1024), "32 KiB");
        assert_eq!(format_size(3 << 19), "1.5 MiB");
        assert_eq!(format_size(16 << 30), "16 GiB");
    }

    #[test]
    fn sweeps_are_geometric_and_inclusive() {
        assert_eq!(
            geometric_sweep(1024, 8192, 2.0),
            vec![1024, 2048, 4096, 8192]
        );
        assert_eq!(geometric_sweep(32 << 10, 16 << 30, 2.0).len(), 20);
        assert!(geometric_sweep(8, 4, 2.0).is_empty());
    }
}

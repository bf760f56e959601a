//! Human sizes in binary units: `10G` = 10 GiB = 10 × 1024³ bytes.

use crate::error::{Error, Result};

/// Unit names used by [`format_size`], each 1024 times the previous one.
const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// Most fractional digits accepted by [`parse_size`]; keeps the arithmetic in `u128`.
const MAX_DECIMALS: usize = 18;

/// Parses a size such as `10G`, `512M`, `1.5 GiB`, `4096` or `1T` into bytes.
///
/// Units are powers of 1024 (`K`, `M`, `G`, `T`, `P`, `E`, any case), optionally followed by
/// `B` or `iB`; a bare number or a `B` suffix means bytes. A fraction must come out to a whole
/// number of bytes. Empty input, unknown units and values over `u64::MAX` are errors.
pub fn parse_size(input: &str) -> Result<u64> {
    let bad = |reason| Error::InvalidSize {
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(bad("expected a number such as 10G, 512M or 4096"));
    }
    let shift = unit_shift(unit.trim_start())
        .ok_or_else(|| bad("unknown unit: use K, M, G, T, P or E (powers of 1024)"))?;
    scaled(number, shift).map_err(bad)
}

/// The power of two of a unit suffix, or `None` if it is not one.
fn unit_shift(unit: &str) -> Option<u32> {
    let lower = unit.to_ascii_lowercase();
    if lower.is_empty() || lower == "b" {
        return Some(0);
    }
    let mut chars = lower.chars();
    let index = "kmgtpe".find(chars.next()?)?;
    let rest = chars.as_str();
    let step = u32::try_from(index).ok()? + 1;
    matches!(rest, "" | "b" | "i" | "ib").then_some(10 * step)
}

/// `number` (digits with at most one point) times `2^shift`, exactly.
fn scaled(number: &str, shift: u32) -> Result<u64, &'static str> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_only(frac) || number.ends_with('.') {
        return Err("malformed number");
    }
    if frac.len() > MAX_DECIMALS {
        return Err("too many decimals");
    }
    let whole: u128 = whole.parse().map_err(|_| "number too large")?;
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| "malformed number")?
    };
    let scale = 10u128.pow(u32::try_from(frac.len()).map_err(|_| "too many decimals")?);
    let unit = 1u128 << shift;
    let frac_bytes = frac_value * unit;
    if frac_bytes % scale != 0 {
        return Err("not a whole number of bytes");
    }
    let bytes = whole
        .checked_mul(unit)
        .and_then(|b| b.checked_add(frac_bytes / scale))
        .ok_or("size too large")?;
    u64::try_from(bytes).map_err(|_| "size too large (over 16 EiB)")
}

/// Formats bytes in the largest binary unit that keeps the value at least 1: `10 GiB`,
/// `1.5 MiB`, `512 B`. Exact multiples have no decimals; other values are rounded to one.
pub fn format_size(bytes: u64) -> String {
    let index = (1..UNITS.len())
        .rev()
        .find(|&i| bytes >> (10 * i) > 0)
        .unwrap_or(0);
    let unit = 1u128 << (10 * index);
    let value = u128::from(bytes);
    if value % unit == 0 {
        return format!("{} {}", value / unit, UNITS[index]);
    }
    let tenths = (value * 10 + unit / 2) / unit;
    if tenths >= 10240 && index + 1 < UNITS.len() {
        return format!("1.0 {}", UNITS[index + 1]);
    }
    format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[index])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn common_sizes_parse_in_binary_units() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("2p").unwrap(), 2 << 50);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("64KB").unwrap(), 64 << 10);
        assert_eq!(parse_size(" 7b ").unwrap(), 7);
        assert_eq!(parse_size("15E").unwrap(), 15 << 60);
    }

    #[test]
    fn garbage_and_overflow_are_rejected() {
        for bad in [
            "",
            " ",
            "G",
            "-1",
            "10X",
            "10 GG",
            "1.2.3G",
            "1.",
            ".5G",
            "10Gx",
            "0.1B",
            "16E",
            "99999999999999999999999",
            "1.0000000000000000001K",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn the_largest_size_parses() {
        assert_eq!(parse_size(&u64::MAX.to_string()).unwrap(), u64::MAX);
    }

    #[test]
    fn sizes_format_in_the_largest_unit() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(10 << 30), "10 GiB");
        assert_eq!(format_size(3 << 19), "1.5 MiB");
        assert_eq!(format_size(1025), "1.0 KiB");
        assert_eq!(format_size((1 << 20) - 1), "1.0 MiB");
        assert_eq!(format_size(u64::MAX), "16.0 EiB");
    }

    proptest! {
        #[test]
        fn exact_multiples_round_trip(n in 1u64..1024, index in 0u32..6) {
            let bytes = n << (10 * index);
            prop_assert_eq!(parse_size(&format_size(bytes)).unwrap(), bytes);
        }

        #[test]
        fn formatted_sizes_parse_back_close_to_the_value(bytes in any::<u64>()) {
            if let Ok(back) = parse_size(&format_size(bytes)) {
                let error = back.abs_diff(bytes);
                prop_assert!(error <= bytes / 20, "{bytes} came back as {back}");
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,30}") {
            let _ = parse_size(&text);
        }
    }
}

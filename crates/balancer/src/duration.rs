//! Durations as the command line, the environment and the TOML file write
//! them: `500ms`, `2s`, `1m`, `1h`, or a bare number of milliseconds.

use std::time::Duration;

/// Parses `500ms`, `2s`, `1m`, `1h`, or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "ms"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms or 2s"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("'{s}': unknown unit '{unit}' (ms, s, m, h)")),
    };
    // Timeouts are added to `Instant::now()` on every connection; a
    // duration past what an `Instant` can hold would panic there.
    if d > MAX {
        return Err(format!(
            "'{s}' is longer than the longest timeout, 365 days"
        ));
    }
    Ok(d)
}

/// The longest duration accepted.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5d").is_err());
        assert_eq!(parse_duration("8760h"), Ok(MAX));
    }

    #[test]
    fn a_duration_no_instant_can_hold_is_refused() {
        // `--header-read-timeout 18446744073709551615s` parsed, then
        // panicked on every accept (`Instant + Duration` overflows); the
        // `config` fuzz target checks every parsed timeout for it.
        for huge in ["18446744073709551615s", "18446744073709551615h", "8761h"] {
            assert!(parse_duration(huge).is_err(), "{huge}");
        }
    }
}

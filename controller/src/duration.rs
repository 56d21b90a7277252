//! Go-style durations (`90s`, `10m`, `1h30m`, `250ms`) as used by `timeout` and `queueTimeout`,
//! and their rendering for `status.duration`. Pure.

use std::time::Duration;

/// Parses a Go-style duration made of `<digits><unit>` parts, units `ms`, `s`, `m`, `h`.
///
/// # Errors
/// A message naming what is wrong, for the InvalidSpec condition.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?}: expected a number before the unit"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?}: number too large"))?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(format!("{text:?}: unit must be one of ms, s, m, h"));
        };
        rest = &rest[len..];
        let part = u32::try_from(value)
            .ok()
            .and_then(|v| unit.checked_mul(v))
            .ok_or_else(|| format!("{text:?}: duration too large"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{text:?}: duration too large"))?;
    }
    Ok(total)
}

/// Renders a duration the way `kubectl` prints ages: `850ms`, `42s`, `3m12s`, `2h5m`.
pub fn render(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, (secs % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_compound_durations() {
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m3s"), Ok(Duration::from_secs(123)));
    }

    #[test]
    fn rejects_malformed_durations() {
        for bad in ["", "10", "m", "5d", "1.5h", "-3s", "99999999999999999999h"] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn renders_like_kubectl() {
        assert_eq!(render(Duration::from_millis(850)), "850ms");
        assert_eq!(render(Duration::from_secs(42)), "42s");
        assert_eq!(render(Duration::from_secs(192)), "3m12s");
        assert_eq!(render(Duration::from_secs(7500)), "2h5m");
    }
}

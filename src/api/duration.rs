//! Durations as people write them in plans (`30m`, `1h30m`, `2d`): the CRD stores strings so
//! `kubectl get -o yaml` shows what was written; this parser turns them into seconds.

use std::time::Duration;

/// Pattern the CRD schema enforces on every duration field (the parser is the authority).
pub const DURATION_PATTERN: &str = r"^([0-9]+(s|m|h|d))+$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {problem}; write a number followed by s, m, h or d, e.g. \"30m\", \"1h30m\", \"2d\""
)]
pub struct DurationError {
    pub input: String,
    pub problem: &'static str,
}

/// The longest duration a plan may give (366 days): every sum and product of plan durations the
/// engine forms stays far inside its integer ranges.
pub const MAX_SECONDS: u64 = 366 * 86_400;

/// Parse `30s`, `15m`, `2h`, `1d`, or concatenations such as `1h30m`, up to [`MAX_SECONDS`].
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |problem| DurationError {
        input: input.to_string(),
        problem,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in s.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(|| err("the number is too large"))?,
            );
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(err("it contains a character that is not a digit or a unit")),
        };
        let n = number
            .take()
            .ok_or_else(|| err("a unit has no number before it"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| err("the duration is too large"))?;
    }
    if number.is_some() {
        return Err(err("the last number has no unit"));
    }
    if total > MAX_SECONDS {
        return Err(err(
            "it is longer than 366d, the longest duration a plan may give",
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Render seconds the way plans write them (`1h30m`, `45s`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_concatenations() {
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("45s").unwrap(), Duration::from_secs(45));
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(
            parse_duration("366d").unwrap(),
            Duration::from_secs(MAX_SECONDS)
        );
    }

    #[test]
    fn rejects_malformed_with_the_problem() {
        for (bad, problem) in [
            ("", "empty"),
            ("30", "no unit"),
            ("m", "no number"),
            ("30x", "not a digit or a unit"),
            ("1.5h", "not a digit or a unit"),
            ("99999999999999999999s", "too large"),
            ("18446744073709551615s", "longer than 366d"),
            ("367d", "longer than 366d"),
            ("366d1s", "longer than 366d"),
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.to_string().contains(problem), "{bad}: {e}");
            assert!(e.to_string().contains("e.g. \"30m\""), "{e}");
        }
    }
}

//! Kubernetes quantities (`500m`, `1`, `1.5Gi`, `2e3`) as numbers, for validation and for
//! adding up quota usage. Pure.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Binary and decimal suffixes with their multipliers, longest first where they share a
/// prefix.
const SUFFIXES: [(&str, f64); 15] = [
    ("Ki", 1024.0),
    ("Mi", 1024.0 * 1024.0),
    ("Gi", 1024.0 * 1024.0 * 1024.0),
    ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Pi", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("n", 1e-9),
    ("u", 1e-6),
    ("m", 1e-3),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("P", 1e15),
    ("E", 1e18),
];

/// The value of a quantity in base units (cores, bytes, devices); `None` when it is not a
/// quantity.
pub fn parse(text: &str) -> Option<f64> {
    let (number, multiplier) = SUFFIXES
        .iter()
        .find_map(|(suffix, m)| text.strip_suffix(suffix).map(|n| (n, *m)))
        .or_else(|| {
            // Decimal exponent form: 1e3, 2E-2.
            let i = text.find(['e', 'E'])?;
            let exp: i32 = text[i + 1..].parse().ok()?;
            Some((&text[..i], 10f64.powi(exp)))
        })
        .unwrap_or((text, 1.0));
    let unsigned = number.strip_prefix('+').unwrap_or(number);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits_ok = !(int.is_empty() && frac.is_empty())
        && int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit());
    if !digits_ok {
        return None;
    }
    unsigned.parse::<f64>().ok().map(|v| v * multiplier)
}

/// [`parse`] of a k8s-openapi quantity.
pub fn value(q: &Quantity) -> Option<f64> {
    parse(&q.0)
}

/// Whether `text` is a quantity greater than zero.
pub fn is_positive(text: &str) -> bool {
    parse(text).is_some_and(|v| v > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_forms() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("1Gi"), Some(1073741824.0));
        assert_eq!(parse("1.5Ki"), Some(1536.0));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert_eq!(parse("+1M"), Some(1e6));
    }

    #[test]
    fn rejects_what_is_not_a_positive_quantity() {
        for q in ["500m", "1", "2e3", "512Mi", "0.5", "+1"] {
            assert!(is_positive(q), "{q}");
        }
        for q in ["", "0", "0m", "-1", "1Xi", "abc", "e3", ".", "1e"] {
            assert!(!is_positive(q), "{q}");
        }
    }
}

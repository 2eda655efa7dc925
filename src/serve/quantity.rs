//! Kubernetes `resource.Quantity` strings in canonical decimal-SI form, as
//! `Quantity.String()` writes them: an integer mantissa and the largest SI
//! suffix that keeps it an integer (`3`, `2500m`, `1500k`, `10M`), at most
//! nanounit precision with the remainder rounded away from zero.

const SUFFIXES: [(i32, &str); 10] =
    [(-9, "n"), (-6, "u"), (-3, "m"), (0, ""), (3, "k"), (6, "M"), (9, "G"), (12, "T"), (15, "P"), (18, "E")];

/// The canonical Quantity for `value`; `None` for NaN and infinities, which
/// a Quantity cannot hold.
pub fn format(value: f64) -> Option<String> {
    if !value.is_finite() {
        return None;
    }
    if value == 0.0 {
        return Some("0".to_owned());
    }
    // `{:e}` is the shortest decimal that reads back as the same double.
    let scientific = format!("{:e}", value.abs());
    let (digits, exponent) = scientific.split_once('e')?;
    let exponent: i32 = exponent.parse().ok()?;
    let fraction_len = digits.split_once('.').map_or(0, |(_, f)| f.len() as i32);
    let mut mantissa: u128 = digits.replace('.', "").parse().ok()?;
    // value = mantissa * 10^scale
    let mut scale = exponent - fraction_len;
    if scale < -9 {
        let drop = (-9 - scale) as u32;
        mantissa = match 10u128.checked_pow(drop) {
            Some(divisor) => mantissa.div_ceil(divisor),
            None => 1, // far below a nanounit: the smallest non-zero quantity
        };
        scale = -9;
    }
    while mantissa.is_multiple_of(10) && scale < SUFFIXES[SUFFIXES.len() - 1].0 {
        mantissa /= 10;
        scale += 1;
    }
    let (suffix_scale, suffix) = SUFFIXES.iter().rev().find(|(s, _)| *s <= scale).copied()?;
    let sign = if value < 0.0 { "-" } else { "" };
    let zeros = "0".repeat((scale - suffix_scale) as usize);
    Some(format!("{sign}{mantissa}{zeros}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn canonical_forms_match_kubernetes() {
        // Expected strings are what k8s.io/apimachinery's
        // resource.NewMilliQuantity/MustParse(...).String() print.
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (1.0, "1"),
            (3.0, "3"),
            (12.0, "12"),
            (999.0, "999"),
            (1000.0, "1k"),
            (1500.0, "1500"),
            (1_500_000.0, "1500k"),
            (1e7, "10M"),
            (2.5, "2500m"),
            (0.5, "500m"),
            (0.001, "1m"),
            (0.1, "100m"),
            (1.5e-6, "1500n"),
            (1e-9, "1n"),
            (1e-10, "1n"),
            (1.0000000001, "1000000001n"),
            (-3.0, "-3"),
            (-2.5, "-2500m"),
            (8.069439544e9, "8069439544"),
            (4.185631e8, "418563100"),
            (1e18, "1E"),
            (1e21, "1000E"),
            (123456789.0, "123456789"),
            (52428800.0, "52428800"),
        ];
        for (value, expected) in cases {
            assert_eq!(format(*value).as_deref(), Some(*expected), "{value}");
        }
    }

    #[test]
    fn non_finite_values_have_no_quantity() {
        assert_eq!(format(f64::NAN), None);
        assert_eq!(format(f64::INFINITY), None);
        assert_eq!(format(f64::NEG_INFINITY), None);
    }

    #[test]
    fn extreme_magnitudes_do_not_panic() {
        assert_eq!(format(f64::MIN_POSITIVE).as_deref(), Some("1n"));
        let max = format(f64::MAX).unwrap();
        assert!(max.ends_with('E') && max.len() > 290, "{max}");
    }
}

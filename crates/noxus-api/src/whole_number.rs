//! Deserializers for integer fields of request bodies that take a JSON
//! number the way JSON Schema counts integers: `5` and `5.0` alike (some
//! clients write every number as a float); a fraction, a negative number or
//! one too large for the field is refused.

use serde::de::{self, Deserializer, Visitor};

struct WholeNumber {
    max: u64,
}

impl Visitor<'_> for WholeNumber {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a whole number from 0 to {}", self.max)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= self.max {
            Ok(v)
        } else {
            Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // Below 2^53 every whole float is exact, and every bound here is smaller.
        if v.is_finite() && v.fract() == 0.0 && v >= 0.0 && v <= self.max as f64 && v < 9.0e15 {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// A `u64`.
pub fn u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(WholeNumber { max: u64::MAX })
}

/// A `u32`.
pub fn u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let n = deserializer.deserialize_any(WholeNumber {
        max: u64::from(u32::MAX),
    })?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// An optional `u32` (`null` is `None`).
pub fn option_u32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    struct OptionalWhole;

    impl<'de> Visitor<'de> for OptionalWhole {
        type Value = Option<u32>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "null or a whole number from 0 to {}", u32::MAX)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            u32(d).map(Some)
        }
    }

    deserializer.deserialize_option(OptionalWhole)
}

/// An optional `u64` (`null` is `None`).
pub fn option_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct OptionalWhole;

    impl<'de> Visitor<'de> for OptionalWhole {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "null or a whole number from 0 to {}", u64::MAX)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            u64(d).map(Some)
        }
    }

    deserializer.deserialize_option(OptionalWhole)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::u64")]
        seconds: u64,
        #[serde(default, deserialize_with = "super::option_u32")]
        burst: Option<u32>,
    }

    fn parse(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        assert_eq!(parse(r#"{"seconds": 5}"#).unwrap().seconds, 5);
        assert_eq!(parse(r#"{"seconds": 5.0}"#).unwrap().seconds, 5);
        assert_eq!(parse(r#"{"seconds": 1e3}"#).unwrap().seconds, 1000);
        assert_eq!(
            parse(r#"{"seconds": 0, "burst": 7.0}"#).unwrap().burst,
            Some(7)
        );
        assert_eq!(
            parse(r#"{"seconds": 0, "burst": null}"#).unwrap().burst,
            None
        );
        assert_eq!(parse(r#"{"seconds": 0}"#).unwrap().burst, None);
        for bad in [
            r#"{"seconds": 5.5}"#,
            r#"{"seconds": -1}"#,
            r#"{"seconds": -1.0}"#,
            r#"{"seconds": 1e300}"#,
            r#"{"seconds": "5"}"#,
            r#"{"seconds": 0, "burst": 4294967296}"#,
            r#"{"seconds": 0, "burst": 1.5}"#,
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("whole number") || err.contains("invalid type"),
                "{bad}: {err}"
            );
        }
    }
}

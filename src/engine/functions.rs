//! SQL functions runnel registers: `sentiment(text)` and `hop(slide, size, time)`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, ListArray, StringArray, TimestampMillisecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, IntervalUnit, TimeUnit};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// All of runnel's functions, to register on every session.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(Sentiment::new()),
        ScalarUDF::new_from_impl(Hop::new()),
    ]
}

// ---------------------------------------------------------------------------------------------
// sentiment(text) -> DOUBLE in [-1, 1]

/// `sentiment(text)`: lexicon polarity of an English text, from −1 (negative) to 1 (positive).
///
/// Each word of the lexicon scores −3..3. A negator ("not", "never", "no", "n't") among the
/// three words before a scored word flips and damps it (× −0.75); an intensifier right before
/// it ("very", "really", "extremely", "so", "too", "absolutely") scales it by 1.5. The sum `s`
/// is normalized as `s / sqrt(s² + 15)` (as VADER does), so one strong word gives about ±0.6.
/// NULL in, NULL out; no scored words, 0.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Sentiment {
    signature: Signature,
}

impl Sentiment {
    pub fn new() -> Self {
        Sentiment {
            signature: Signature::string(1, Volatility::Immutable),
        }
    }
}

impl Default for Sentiment {
    fn default() -> Self {
        Self::new()
    }
}

const LEXICON: &[(&str, f64)] = &[
    ("amazing", 3.0),
    ("excellent", 3.0),
    ("fantastic", 3.0),
    ("perfect", 3.0),
    ("love", 3.0),
    ("wonderful", 3.0),
    ("great", 2.5),
    ("awesome", 3.0),
    ("best", 2.5),
    ("beautiful", 2.5),
    ("good", 2.0),
    ("happy", 2.0),
    ("nice", 1.5),
    ("recommend", 1.5),
    ("loves", 3.0),
    ("better", 1.5),
    ("fast", 1.0),
    ("quality", 0.5),
    ("value", 0.5),
    ("works", 1.0),
    ("worth", 1.5),
    ("pleased", 2.0),
    ("satisfied", 2.0),
    ("okay", 0.5),
    ("fine", 0.8),
    ("bad", -2.5),
    ("terrible", -3.0),
    ("awful", -3.0),
    ("horrible", -3.0),
    ("worst", -3.0),
    ("poor", -2.0),
    ("disappointed", -2.0),
    ("disappointing", -2.0),
    ("broke", -2.0),
    ("broken", -2.0),
    ("damaged", -2.0),
    ("cheap", -1.0),
    ("waste", -2.5),
    ("hate", -3.0),
    ("useless", -2.5),
    ("slow", -1.0),
    ("stopped", -1.0),
    ("defective", -2.5),
    ("refund", -1.0),
];
const NEGATORS: &[&str] = &["not", "no", "never", "neither", "nor", "without", "hardly"];
const INTENSIFIERS: &[(&str, f64)] = &[
    ("very", 1.5),
    ("really", 1.5),
    ("extremely", 1.8),
    ("so", 1.4),
    ("too", 1.3),
    ("absolutely", 1.8),
    ("quite", 1.2),
    ("super", 1.5),
];

/// Polarity of one text (see [`Sentiment`]).
pub fn polarity(text: &str) -> f64 {
    let words: Vec<String> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let mut sum = 0.0;
    for (i, w) in words.iter().enumerate() {
        let Some(&(_, mut score)) = LEXICON.iter().find(|(lw, _)| lw == w) else {
            continue;
        };
        if i > 0 {
            if let Some(&(_, f)) = INTENSIFIERS.iter().find(|(iw, _)| iw == &words[i - 1]) {
                score *= f;
            }
        }
        let negated = words[i.saturating_sub(3)..i]
            .iter()
            .any(|p| NEGATORS.contains(&p.as_str()) || p.ends_with("n't"));
        if negated {
            score *= -0.75;
        }
        sum += score;
    }
    if sum == 0.0 {
        0.0
    } else {
        sum / (sum * sum + 15.0).sqrt()
    }
}

impl ScalarUDFImpl for Sentiment {
    fn name(&self) -> &str {
        "sentiment"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arr = args.args[0].to_array(args.number_rows)?;
        let arr = arrow::compute::cast(&arr, &DataType::Utf8)?;
        let Some(s) = arr.as_any().downcast_ref::<StringArray>() else {
            return exec_err!("sentiment() expects a string");
        };
        let out: Float64Array = s.iter().map(|v| v.map(polarity)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

// ---------------------------------------------------------------------------------------------
// hop(slide, size, time) -> LIST<TIMESTAMP>

/// `hop(slide, size, time)`: the starts of every hopping (sliding) window of length `size`,
/// advancing by `slide`, that contains `time`. Use it with `UNNEST` and group by the result:
///
/// ```sql
/// SELECT window_start, count(*) FROM (
///   SELECT unnest(hop(INTERVAL '1 minute', INTERVAL '5 minutes', view_time)) AS window_start
///   FROM product_views) GROUP BY window_start
/// ```
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Hop {
    signature: Signature,
}

impl Hop {
    pub fn new() -> Self {
        Hop {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl Default for Hop {
    fn default() -> Self {
        Self::new()
    }
}

/// Milliseconds in a fixed-length interval literal (no months).
pub fn interval_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i.days as i64 * 86_400_000 + i.nanoseconds / 1_000_000)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i.days as i64 * 86_400_000 + i.milliseconds as i64)
        }
        ScalarValue::DurationMillisecond(Some(ms)) => Some(*ms),
        ScalarValue::DurationSecond(Some(s)) => Some(s * 1000),
        _ => None,
    }
}

fn item_field() -> Arc<Field> {
    Arc::new(Field::new(
        "item",
        DataType::Timestamp(TimeUnit::Millisecond, None),
        true,
    ))
}

impl ScalarUDFImpl for Hop {
    fn name(&self) -> &str {
        "hop"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        for t in &arg_types[..2] {
            if !matches!(
                t,
                DataType::Interval(IntervalUnit::MonthDayNano | IntervalUnit::DayTime)
            ) {
                return plan_err!(
                    "hop(slide, size, time): slide and size must be INTERVAL literals, got {t}"
                );
            }
        }
        if !matches!(arg_types[2], DataType::Timestamp(_, None)) {
            return plan_err!(
                "hop(slide, size, time): time must be a timestamp column, got {}",
                arg_types[2]
            );
        }
        Ok(DataType::List(item_field()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = |i: usize| match &args.args[i] {
            ColumnarValue::Scalar(s) => interval_ms(s),
            ColumnarValue::Array(_) => None,
        };
        let (Some(slide), Some(size)) = (scalar(0), scalar(1)) else {
            return exec_err!(
                "hop(slide, size, time): slide and size must be constant intervals without months"
            );
        };
        if slide <= 0 || size <= 0 || size % slide != 0 {
            return exec_err!("hop(slide, size, time): size must be a positive multiple of slide");
        }
        let t = args.args[2].to_array(args.number_rows)?;
        let t = arrow::compute::cast(&t, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let Some(t) = t.as_any().downcast_ref::<TimestampMillisecondArray>() else {
            return exec_err!("hop(): time must be a timestamp");
        };
        let per = (size / slide) as usize;
        let mut values = Vec::with_capacity(t.len() * per);
        let mut offsets = Vec::with_capacity(t.len() + 1);
        offsets.push(0i32);
        for v in t.iter() {
            if let Some(ts) = v {
                let last = ts.div_euclid(slide) * slide;
                // Oldest window first.
                for k in (0..per as i64).rev() {
                    values.push(last - k * slide);
                }
            }
            offsets.push(values.len() as i32);
        }
        let nulls = t.nulls().cloned();
        let list = ListArray::try_new(
            item_field(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(TimestampMillisecondArray::from(values)) as ArrayRef,
            nulls,
        )?;
        Ok(ColumnarValue::Array(Arc::new(list)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polarity_signs() {
        assert!(polarity("Great product, works perfectly.") > 0.3);
        assert!(polarity("Terrible quality, broke after a day.") < -0.3);
        assert_eq!(polarity("It arrived on Tuesday."), 0.0);
    }

    #[test]
    fn negation_flips() {
        assert!(polarity("good") > 0.0);
        assert!(polarity("not good") < 0.0);
        assert!(polarity("it is not very good") < 0.0);
        assert!(polarity("not bad") > 0.0);
        assert!(polarity("this isn't great") < 0.0);
    }

    #[test]
    fn intensifiers_strengthen() {
        assert!(polarity("very bad") < polarity("bad"));
        assert!(polarity("very good") > polarity("good"));
        let p = polarity("absolutely amazing excellent perfect wonderful");
        assert!(p < 1.0 && p > 0.9);
    }
}

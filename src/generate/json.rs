//! A tiny JSON-object line writer for the generator's hot path.

use std::io::Write;

#[derive(Default)]
pub(super) struct JsonLine {
    buf: Vec<u8>,
    first: bool,
}

impl JsonLine {
    pub fn begin(&mut self) {
        self.buf.clear();
        self.buf.push(b'{');
        self.first = true;
    }
    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }
    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        self.buf.push(b'"');
        for &b in v.as_bytes() {
            match b {
                b'"' => self.buf.extend_from_slice(b"\\\""),
                b'\\' => self.buf.extend_from_slice(b"\\\\"),
                b'\n' => self.buf.extend_from_slice(b"\\n"),
                0..0x20 => {
                    let _ = write!(self.buf, "\\u{:04x}", b);
                }
                _ => self.buf.push(b),
            }
        }
        self.buf.push(b'"');
    }
    pub fn id(&mut self, k: &str, prefix: &str, n: u64) {
        self.key(k);
        self.buf.push(b'"');
        self.buf.extend_from_slice(prefix.as_bytes());
        push_padded(&mut self.buf, n, 10);
        self.buf.push(b'"');
    }
    pub fn int(&mut self, k: &str, v: i64) {
        self.key(k);
        if v < 0 {
            self.buf.push(b'-');
        }
        push_padded(&mut self.buf, v.unsigned_abs(), 1);
    }
    pub fn float(&mut self, k: &str, v: f64) {
        self.key(k);
        let _ = write!(self.buf, "{v}");
    }
    pub fn null(&mut self, k: &str) {
        self.key(k);
        self.buf.extend_from_slice(b"null");
    }
    pub fn ts(&mut self, k: &str, ms: i64) {
        self.key(k);
        self.buf.push(b'"');
        format_timestamp_ms(&mut self.buf, ms);
        self.buf.push(b'"');
    }
    pub fn finish(&mut self) -> &[u8] {
        self.buf.extend_from_slice(b"}\n");
        &self.buf
    }
}

/// Appends `YYYY-MM-DDTHH:MM:SS.mmmZ` for `ms` since the epoch (proleptic Gregorian, UTC).
pub fn format_timestamp_ms(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (in_day / 3_600_000, in_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, milli) = (rest / 1000, rest % 1000);
    if !(0..=9999).contains(&y) {
        let _ = write!(
            out,
            "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z"
        );
        return;
    }
    // By hand: `write!` was a tenth of the Kafka producer's time.
    push_padded(out, y as u64, 4);
    for (sep, v, w) in [
        (b'-', m as u64, 2),
        (b'-', d as u64, 2),
        (b'T', h as u64, 2),
        (b':', min as u64, 2),
        (b':', s as u64, 2),
        (b'.', milli as u64, 3),
    ] {
        out.push(sep);
        push_padded(out, v, w);
    }
    out.push(b'Z');
}

/// Appends `v` in decimal, zero-padded on the left to at least `width` digits.
fn push_padded(out: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for _ in tmp.len() - i..width {
        out.push(b'0');
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_chrono() {
        for ms in [
            0i64,
            1_767_225_600_123,
            951_782_400_000,
            4_102_444_799_999,
            253_402_300_799_999,
            -1,
            -62_167_219_200_000,
        ] {
            let mut b = Vec::new();
            format_timestamp_ms(&mut b, ms);
            let want = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(String::from_utf8(b).unwrap(), want);
        }
    }

    #[test]
    fn numbers_match_display() {
        for v in [0i64, 7, -7, 10, 99, 1_000_000, i64::MAX, i64::MIN] {
            let mut l = JsonLine::default();
            l.begin();
            l.int("n", v);
            l.id("i", "X-", v.unsigned_abs());
            let line = String::from_utf8(l.finish().to_vec()).unwrap();
            assert_eq!(
                line,
                format!("{{\"n\":{v},\"i\":\"X-{:010}\"}}\n", v.unsigned_abs())
            );
        }
    }

    #[test]
    fn strings_are_escaped() {
        let mut l = JsonLine::default();
        l.begin();
        l.str("a", "say \"hi\"\\\n\t");
        let v: serde_json::Value = serde_json::from_slice(l.finish()).unwrap();
        assert_eq!(v["a"], "say \"hi\"\\\n\t");
    }
}

//! Targeted scanner for the Prometheus text exposition format.
//!
//! It accepts format 0.0.4 as written by Micrometer/simpleclient (trailing
//! comma in label sets, Java doubles) and by newer clients (no trailing comma),
//! plus the OpenMetrics `# EOF` marker and exemplars. Only samples whose metric
//! name the caller wants are decoded; every other line costs one `memchr` for
//! its end and one comparison of its name. Label values are unescaped (`\\`,
//! `\"`, `\n`) and borrowed from the input whenever they hold no escape.
//!
//! The scanner is fed chunk by chunk as the body arrives, so a scrape never
//! needs the whole body in memory. Malformed lines are counted and skipped.

use std::borrow::Cow;

/// One label pair of a sample, borrowed from the input where possible.
#[derive(Debug, Clone, PartialEq)]
pub struct Label<'a> {
    pub name: &'a str,
    pub value: Cow<'a, str>,
}

/// One decoded sample of a wanted family.
#[derive(Debug)]
pub struct Sample<'a, 'l> {
    pub name: &'a str,
    pub labels: &'l [Label<'a>],
    pub value: f64,
}

/// What a scan saw, for the adapter's own metrics and logs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ParseStats {
    /// Samples handed to the sink.
    pub samples: u64,
    /// Lines of wanted families that could not be decoded.
    pub malformed: u64,
    /// The first malformed line (shortened), to make a log line useful.
    pub first_malformed: Option<String>,
}

/// Streaming scanner; `W` decides which metric names are decoded.
pub struct Scanner<W> {
    wanted: W,
    /// Name of the previous sample line and whether it was wanted: samples of
    /// one family are contiguous, so this answers almost every line.
    last_name: String,
    last_wanted: bool,
    /// Families declared as summary/histogram: not gauges or counters, so
    /// their samples (`x`, `x_sum`, `x_count`, `x_bucket`) are never decoded.
    excluded_families: Vec<String>,
    /// Bytes of a line split across two chunks.
    partial_line: Vec<u8>,
    /// The current line grew past [`MAX_LINE_BYTES`]: its remaining bytes
    /// are skipped up to the next newline, so no fragment of it is scanned.
    dropping_line: bool,
    /// Allocation reused for every line's labels.
    label_buffer: Vec<Label<'static>>,
    seen_eof: bool,
    stats: ParseStats,
}

const MAX_LOGGED_LINE: usize = 200;
/// A line longer than this cannot be a Pravega sample; it is dropped, also
/// when it straddles chunks (rather than buffered without bound), so that
/// what is scanned never depends on where a body is cut into chunks.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// How an overlong line shows up in the log.
const OVERLONG_LINE: &[u8] = b"<line longer than 64 KiB>";

impl<W: Fn(&str) -> bool> Scanner<W> {
    pub fn new(wanted: W) -> Self {
        Scanner {
            wanted,
            last_name: String::new(),
            last_wanted: false,
            excluded_families: Vec::new(),
            partial_line: Vec::new(),
            dropping_line: false,
            label_buffer: Vec::new(),
            seen_eof: false,
            stats: ParseStats::default(),
        }
    }

    /// Scans a whole exposition held in memory.
    pub fn scan_all(wanted: W, input: &[u8], sink: impl FnMut(&Sample<'_, '_>)) -> ParseStats {
        let mut scanner = Scanner::new(wanted);
        let mut sink = sink;
        scanner.feed(input, &mut sink);
        scanner.finish(&mut sink)
    }

    /// Scans the complete lines of `chunk`, keeping an unfinished last line
    /// for the next call.
    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl FnMut(&Sample<'_, '_>)) {
        let mut rest = chunk;
        if self.dropping_line || !self.partial_line.is_empty() {
            let Some(end) = memchr::memchr(b'\n', rest) else {
                self.keep_partial(rest);
                return;
            };
            if !std::mem::take(&mut self.dropping_line) {
                let mut line = std::mem::take(&mut self.partial_line);
                line.extend_from_slice(&rest[..end]);
                self.line(&line, sink);
                line.clear();
                self.partial_line = line;
            }
            rest = &rest[end + 1..];
        }
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.line(&rest[..end], sink);
            rest = &rest[end + 1..];
        }
        self.keep_partial(rest);
    }

    /// Scans a last line that had no newline and returns the totals.
    pub fn finish(mut self, sink: &mut impl FnMut(&Sample<'_, '_>)) -> ParseStats {
        let line = std::mem::take(&mut self.partial_line);
        self.line(&line, sink);
        self.stats
    }

    fn keep_partial(&mut self, tail: &[u8]) {
        if self.dropping_line {
            return;
        }
        if self.partial_line.len() + tail.len() > MAX_LINE_BYTES {
            self.partial_line.clear();
            self.dropping_line = true;
            self.count_malformed(OVERLONG_LINE);
            return;
        }
        self.partial_line.extend_from_slice(tail);
    }

    fn line(&mut self, line: &[u8], sink: &mut impl FnMut(&Sample<'_, '_>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.seen_eof || line.is_empty() {
            return;
        }
        if line.len() > MAX_LINE_BYTES {
            return self.count_malformed(OVERLONG_LINE);
        }
        if line[0] == b'#' {
            self.comment(line);
            return;
        }
        let name_end = match line.strip_prefix(self.last_name.as_bytes()) {
            Some([b'{' | b' ' | b'\t', ..]) if !self.last_name.is_empty() => self.last_name.len(),
            _ => self.remember_name(line),
        };
        if !self.last_wanted {
            return;
        }
        let mut labels = recycle(std::mem::take(&mut self.label_buffer));
        match decode_after_name(&line[name_end..], &mut labels) {
            Some(value) => {
                self.stats.samples += 1;
                sink(&Sample { name: &self.last_name, labels: &labels, value });
            }
            None => self.count_malformed(line),
        }
        self.label_buffer = recycle(labels);
    }

    /// Decides whether the family of a line whose name differs from the
    /// previous one is wanted; returns where the name ends.
    fn remember_name(&mut self, line: &[u8]) -> usize {
        let name_end = memchr::memchr3(b'{', b' ', b'\t', line).unwrap_or(line.len());
        self.last_name.clear();
        self.last_wanted = match std::str::from_utf8(&line[..name_end]) {
            Ok(name) if is_metric_name(name) => {
                self.last_name.push_str(name);
                (self.wanted)(name) && !self.excluded_families.iter().any(|family| belongs_to_family(name, family))
            }
            _ => false,
        };
        name_end
    }

    fn comment(&mut self, line: &[u8]) {
        if line.starts_with(b"# EOF") {
            self.seen_eof = true;
            return;
        }
        let Some(declaration) = line.strip_prefix(b"# TYPE ") else { return };
        let mut words = declaration.split(|b| *b == b' ' || *b == b'\t').filter(|w| !w.is_empty());
        let (Some(family), Some(kind)) = (words.next(), words.next()) else { return };
        if matches!(kind, b"summary" | b"histogram" | b"gaugehistogram") {
            if let Ok(family) = std::str::from_utf8(family) {
                self.excluded_families.push(family.to_owned());
                // A cached decision may predate this declaration.
                self.last_name.clear();
                self.last_wanted = false;
            }
        }
    }

    fn count_malformed(&mut self, line: &[u8]) {
        self.stats.malformed += 1;
        if self.stats.first_malformed.is_none() {
            let shown = &line[..line.len().min(MAX_LOGGED_LINE)];
            self.stats.first_malformed = Some(String::from_utf8_lossy(shown).into_owned());
        }
    }
}

/// Empties a vector and hands its allocation to a vector of another lifetime
/// (same layout, so the in-place collect reuses the buffer).
fn recycle<'b>(mut labels: Vec<Label<'_>>) -> Vec<Label<'b>> {
    labels.clear();
    labels.into_iter().map(|_| unreachable!("the vector was cleared")).collect()
}

fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn belongs_to_family(name: &str, family: &str) -> bool {
    match name.strip_prefix(family) {
        Some(suffix) => matches!(suffix, "" | "_sum" | "_count" | "_bucket" | "_created" | "_gcount" | "_gsum"),
        None => false,
    }
}

/// Decodes `{labels} value [timestamp]` into `labels`; `None` if malformed.
///
/// One pass with a byte index and a class table: every token is found by
/// the loop that validates it, and only label values are checked for UTF-8
/// (everything else must be ASCII), which is what keeps the scanner near
/// 1 GB/s.
fn decode_after_name<'a>(bytes: &'a [u8], labels: &mut Vec<Label<'a>>) -> Option<f64> {
    let mut i = 0;
    if bytes.first() == Some(&b'{') {
        i = decode_labels(bytes, 1, labels)?;
    }
    i = skip_blanks(bytes, i);
    let (value, end) = match parse_short_decimal(&bytes[i..]) {
        Some((value, len)) if bytes.get(i + len).is_none_or(|b| is_blank(*b)) => (value, i + len),
        _ => {
            let end = token_end(bytes, i);
            (parse_value(&bytes[i..end])?, end)
        }
    };
    let rest = skip_blanks(bytes, end);
    if rest < bytes.len() && bytes[rest] != b'#' {
        // A timestamp (integer milliseconds, or OpenMetrics float seconds).
        let ts_end = token_end(bytes, rest);
        std::str::from_utf8(&bytes[rest..ts_end]).ok()?.parse::<f64>().ok()?;
        let trailing = skip_blanks(bytes, ts_end);
        if trailing < bytes.len() && bytes[trailing] != b'#' {
            return None;
        }
    }
    Some(value)
}

/// Byte classes for the label decoder, one table lookup per byte.
const LABEL_NAME: u8 = 1;
const BLANK: u8 = 2;
const QUOTED_STOP: u8 = 4;
const NON_ASCII: u8 = 8;
static CLASS: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric() || c == b'_' {
            LABEL_NAME
        } else if c == b' ' || c == b'\t' {
            BLANK
        } else if c == b'"' || c == b'\\' {
            QUOTED_STOP
        } else if !c.is_ascii() {
            NON_ASCII
        } else {
            0
        };
        b += 1;
    }
    table
};

fn class(b: u8) -> u8 {
    CLASS[usize::from(b)]
}

/// Index of the first byte at or after `i` that is not blank.
fn skip_blanks(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| class(*b) == BLANK) {
        i += 1;
    }
    i
}

/// The first non-blank byte at or after `i`, and its index.
fn next_byte(bytes: &[u8], i: usize) -> Option<(u8, usize)> {
    match *bytes.get(i)? {
        b' ' | b'\t' => {
            let i = skip_blanks(bytes, i);
            Some((*bytes.get(i)?, i))
        }
        b => Some((b, i)),
    }
}

/// The run of label-name bytes from `start` as text, and where it ends.
fn label_name_run(bytes: &[u8], start: usize) -> (&str, usize) {
    let mut end = start;
    while bytes.get(end).is_some_and(|b| class(*b) == LABEL_NAME) {
        end += 1;
    }
    let run = &bytes[start..end];
    debug_assert!(run.is_ascii());
    // SAFETY: every byte of `run` is in the LABEL_NAME class, which holds
    // only ASCII letters, digits and `_`; ASCII is valid UTF-8.
    (unsafe { std::str::from_utf8_unchecked(run) }, end)
}

/// The run of a quoted value from `start` up to the next `"` or `\\` as
/// text, and where it ends; `None` if the run is not UTF-8. Values are
/// nearly always ASCII, so the full UTF-8 check runs only when the scan saw
/// a non-ASCII byte.
fn quoted_run(bytes: &[u8], start: usize) -> Option<(&str, usize)> {
    let mut end = start;
    // Eight bytes at a time until a quote, a backslash or a non-ASCII byte;
    // the byte loop below classifies what was found and scans the tail.
    while let Some(word) = bytes[end..].first_chunk::<8>() {
        let word = u64::from_le_bytes(*word);
        let hits = zero_bytes(word ^ repeat(b'"')) | zero_bytes(word ^ repeat(b'\\')) | (word & repeat(0x80));
        if hits != 0 {
            end += hits.trailing_zeros() as usize / 8;
            break;
        }
        end += 8;
    }
    let mut seen = 0;
    while let Some(&b) = bytes.get(end) {
        let c = class(b);
        if c == QUOTED_STOP {
            break;
        }
        seen |= c;
        end += 1;
    }
    let run = &bytes[start..end];
    if seen & NON_ASCII != 0 {
        return Some((std::str::from_utf8(run).ok()?, end));
    }
    debug_assert!(run.is_ascii());
    // SAFETY: no byte of `run` is in the NON_ASCII class, which holds every
    // byte >= 0x80, so `run` is ASCII, which is valid UTF-8.
    Some((unsafe { std::str::from_utf8_unchecked(run) }, end))
}

fn repeat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// Sets the high bit of each zero byte of `word`. Bytes above the lowest zero
/// byte may be flagged wrongly (borrows), so only the lowest hit is exact.
fn zero_bytes(word: u64) -> u64 {
    word.wrapping_sub(repeat(1)) & !word & repeat(0x80)
}

/// Decodes label pairs from `i` (just after `{`) up to the closing brace;
/// returns the index after it.
fn decode_labels<'a>(bytes: &'a [u8], mut i: usize, labels: &mut Vec<Label<'a>>) -> Option<usize> {
    loop {
        let (first, name_start) = next_byte(bytes, i)?;
        match first {
            b'}' => return Some(name_start + 1),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {}
            _ => return None,
        }
        let (name, name_end) = label_name_run(bytes, name_start);
        let (b'=', equals) = next_byte(bytes, name_end)? else { return None };
        let (b'"', quote) = next_byte(bytes, equals + 1)? else { return None };
        let (value, after) = decode_quoted(bytes, quote + 1)?;
        labels.push(Label { name, value });
        match next_byte(bytes, after)? {
            (b',', comma) => i = comma + 1,
            (b'}', brace) => return Some(brace + 1),
            _ => return None,
        }
    }
}

/// Decodes a quoted label value starting at `start` (after the opening
/// quote); returns it and the index after the closing quote. `None` if it is
/// unterminated or not UTF-8.
fn decode_quoted(bytes: &[u8], start: usize) -> Option<(Cow<'_, str>, usize)> {
    let (plain, stop) = quoted_run(bytes, start)?;
    if *bytes.get(stop)? == b'"' {
        return Some((Cow::Borrowed(plain), stop + 1));
    }
    let mut owned = String::from(plain);
    let mut i = stop;
    loop {
        match *bytes.get(i)? {
            b'"' => return Some((Cow::Owned(owned), i + 1)),
            b'\\' => {
                match *bytes.get(i + 1)? {
                    b'n' => owned.push('\n'),
                    b'\\' => owned.push('\\'),
                    b'"' => owned.push('"'),
                    // Unknown escapes are kept verbatim, as Prometheus does;
                    // the escaped character is copied by the next step.
                    _ => {
                        owned.push('\\');
                        i += 1;
                        continue;
                    }
                }
                i += 2;
            }
            _ => {
                let (run, end) = quoted_run(bytes, i)?;
                owned.push_str(run);
                i = end;
            }
        }
    }
}

/// Parses a Prometheus float: Java doubles (`3.0`, `1.0E7`), `NaN`, `+Inf`, `-Inf`.
fn parse_value(token: &[u8]) -> Option<f64> {
    if let Some((value, len)) = parse_short_decimal(token) {
        if len == token.len() {
            return Some(value);
        }
    }
    // Rust's float parser also accepts words such as "infinity"; Prometheus
    // only writes these three, so anything else alphabetic is malformed.
    match token {
        b"NaN" => Some(f64::NAN),
        b"+Inf" | b"Inf" => Some(f64::INFINITY),
        b"-Inf" => Some(f64::NEG_INFINITY),
        [] => None,
        _ if token.iter().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) => {
            std::str::from_utf8(token).ok()?.parse().ok()
        }
        _ => None,
    }
}

/// Fast path for the common `21.0`-style values: at most 15 significant
/// digits and no exponent, so mantissa and power of ten are exact doubles and
/// one division rounds correctly (Clinger's fast path). Returns the value and
/// how many bytes it took; `None` where the general parser must decide.
fn parse_short_decimal(input: &[u8]) -> Option<(f64, usize)> {
    const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];
    let negative = input.first() == Some(&b'-');
    let start = usize::from(negative);
    let mut mantissa: u64 = 0;
    let mut digits = 0;
    let mut fraction_digits = None;
    let mut i = start;
    while let Some(&b) = input.get(i) {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                digits += 1;
                if digits > 15 {
                    return None;
                }
            }
            b'.' if fraction_digits.is_none() => fraction_digits = Some(digits),
            b'e' | b'E' | b'+' | b'-' | b'.' => return None,
            _ => break,
        }
        i += 1;
    }
    let integer_digits = fraction_digits.unwrap_or(digits);
    if integer_digits == 0 || integer_digits == digits && fraction_digits.is_some() {
        // ".5" and "1." are valid but rare: leave them to the general parser.
        return None;
    }
    let value = mantissa as f64 / POW10[digits - integer_digits];
    Some((if negative { -value } else { value }, i))
}

fn is_blank(b: u8) -> bool {
    class(b) == BLANK
}

fn token_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && !is_blank(bytes[i]) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_support::repo::fixture;

    #[derive(Debug, PartialEq)]
    struct Owned {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn scan(input: &str, wanted: impl Fn(&str) -> bool) -> (Vec<Owned>, ParseStats) {
        let mut out = Vec::new();
        let stats = Scanner::scan_all(wanted, input.as_bytes(), |s| {
            out.push(Owned {
                name: s.name.to_owned(),
                labels: s.labels.iter().map(|l| (l.name.to_owned(), l.value.to_string())).collect(),
                value: s.value,
            })
        });
        (out, stats)
    }

    fn pravega(name: &str) -> bool {
        name.starts_with("pravega_controller_")
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn micrometer_trailing_comma_and_plain_form_decode_alike() {
        let (a, _) = scan("m{scope=\"s\",stream=\"t\",} 3.0\n", |_| true);
        let (b, _) = scan("m{scope=\"s\",stream=\"t\"} 3.0\n", |_| true);
        assert_eq!(a, b);
        assert_eq!(a[0].labels, labels(&[("scope", "s"), ("stream", "t")]));
        assert_eq!(a[0].value, 3.0);
    }

    #[test]
    fn escapes_and_separators_inside_values() {
        let input = r#"m{a="q\"uote",b="back\\slash",c="com,ma",d="eq=ual",e="brace}",f="new\nline",g="odd\tescape"} 1"#;
        let (out, stats) = scan(input, |_| true);
        assert_eq!(stats.malformed, 0);
        assert_eq!(
            out[0].labels,
            labels(&[
                ("a", "q\"uote"),
                ("b", "back\\slash"),
                ("c", "com,ma"),
                ("d", "eq=ual"),
                ("e", "brace}"),
                ("f", "new\nline"),
                ("g", "odd\\tescape"),
            ])
        );
    }

    #[test]
    fn blanks_empty_label_sets_and_special_values() {
        let input = "a{ x=\"1\" , y = \"2\" } 7\nb{} 1.2E1\nc NaN\nd +Inf\ne -Inf\nf 5 1700000000000\ng{} 2 # {trace_id=\"x\"} 1\n";
        let (out, stats) = scan(input, |_| true);
        assert_eq!(stats.malformed, 0, "{stats:?}");
        assert_eq!(out[0].labels, labels(&[("x", "1"), ("y", "2")]));
        assert_eq!(out[1].value, 12.0);
        assert!(out[2].value.is_nan());
        assert_eq!(out[3].value, f64::INFINITY);
        assert_eq!(out[4].value, f64::NEG_INFINITY);
        assert_eq!(out[5].value, 5.0);
        assert_eq!(out[6].value, 2.0);
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn malformed_lines_are_counted_and_do_not_poison_the_rest() {
        let input = "m{a=\"1\" 10.0\nm{a=\"2\"} 2.0\nm{a=\"unterminated} 3\nm 1.0.0.0\nm{a=\"3\"} infinity\nm{=\"x\"} 1\nm{a=\"4\"} 4.0 notatime\nm{a=\"5\"} 5.0\n";
        let (out, stats) = scan(input, |_| true);
        assert_eq!(out.iter().map(|s| s.value).collect::<Vec<_>>(), vec![2.0, 5.0]);
        assert_eq!(stats.malformed, 6);
        assert_eq!(stats.first_malformed.as_deref(), Some("m{a=\"1\" 10.0"));
    }

    #[test]
    fn unwanted_families_and_lookalike_names_are_skipped() {
        let input = "x{a=\"1\"} 1\npravega_controller_segments_count{a=\"1\"} 2\npravega_controller_segments_countx 3\n";
        let (out, _) = scan(input, |n| n == "pravega_controller_segments_count");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, 2.0);
    }

    #[test]
    fn summary_and_histogram_families_are_excluded() {
        let input = "# TYPE pravega_controller_lat summary\npravega_controller_lat{quantile=\"0.5\"} 1\npravega_controller_lat_count 2\npravega_controller_lat_sum 3\n# TYPE pravega_controller_lat_max gauge\npravega_controller_lat_max 4\n";
        let (out, _) = scan(input, pravega);
        assert_eq!(out.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["pravega_controller_lat_max"]);
    }

    #[test]
    fn short_decimals_match_the_standard_parser() {
        for token in [
            "0",
            "3.0",
            "-3.5",
            "21.0",
            "0.1",
            "0.7873930493715061",
            "123456789012345",
            "99999999999999.9",
            "8.069439544E9",
            "1e-7",
            "-0.0",
        ] {
            let expected: f64 = token.parse().unwrap();
            assert_eq!(parse_value(token.as_bytes()).map(f64::to_bits), Some(expected.to_bits()), "{token}");
        }
        for token in ["", "-", ".", "1..0", "1.0.0", "--1", "0x10", "infinity"] {
            assert_eq!(parse_value(token.as_bytes()), None, "{token:?}");
        }
    }

    /// Every value length around the eight-byte scan, with non-ASCII text and
    /// escapes at every position, decodes back to the value that was written.
    #[test]
    fn values_of_every_length_and_content_round_trip() {
        let alphabet = ["a", "é", "✓", "\"", "\\", "\n", ",", "}", "🦀"];
        for length in 0..24 {
            for (offset, special) in alphabet.iter().enumerate() {
                let value: String = (0..length).map(|i| if i % 5 == offset % 5 { *special } else { alphabet[(i + offset) % 3] }).collect();
                let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let (out, stats) = scan(&format!("m{{first=\"{escaped}\",second=\"{escaped}x\"}} 1\n"), |_| true);
                assert_eq!(stats.malformed, 0, "{escaped}");
                assert_eq!(out[0].labels, labels(&[("first", &value), ("second", &format!("{value}x"))]), "{escaped}");
            }
        }
    }

    #[test]
    fn invalid_utf8_is_malformed_in_values_and_unwanted_in_names() {
        let mut sink_names = Vec::new();
        let input =
            b"m{a=\"ok\"} 1\nm{a=\"long enough \xff to be scanned by words\"} 2\nm{a=\"\xc3\"} 3\nm\xff{a=\"x\"} 4\nm{a=\"\xc3\xa9\"} 5\n";
        let stats = Scanner::scan_all(|_: &str| true, input, |s| sink_names.push((s.labels[0].value.to_string(), s.value)));
        assert_eq!(sink_names, vec![("ok".to_owned(), 1.0), ("é".to_owned(), 5.0)]);
        assert_eq!(stats.malformed, 2);
    }

    #[test]
    fn a_type_declaration_does_not_let_a_nameless_line_through() {
        let (out, _) = scan("m 1\n# TYPE other summary\n{a=\"1\"} 2\nm 3\n", |_| true);
        assert_eq!(out.iter().map(|s| s.value).collect::<Vec<_>>(), vec![1.0, 3.0]);
    }

    #[test]
    fn nothing_after_openmetrics_eof_is_read() {
        let (out, _) = scan("m 1\n# EOF\nm 2\n", |_| true);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn crlf_line_endings_and_missing_final_newline() {
        let (out, stats) = scan("m{a=\"1\"} 1\r\nm{a=\"2\"} 2", |_| true);
        assert_eq!(stats.malformed, 0);
        assert_eq!(out.iter().map(|s| s.value).collect::<Vec<_>>(), vec![1.0, 2.0]);
    }

    #[test]
    fn chunk_boundaries_anywhere_give_the_same_samples() {
        let input = fixture("edge-cases.prom").into_bytes();
        let (whole, whole_stats) = scan(std::str::from_utf8(&input).unwrap(), pravega);
        for chunk_size in [1, 2, 3, 7, 64, 1000] {
            let mut out = Vec::new();
            let mut sink = |s: &Sample<'_, '_>| out.push((s.name.to_owned(), s.labels.len(), s.value.to_bits()));
            let mut scanner = Scanner::new(pravega);
            for chunk in input.chunks(chunk_size) {
                scanner.feed(chunk, &mut sink);
            }
            let stats = scanner.finish(&mut sink);
            let expected: Vec<_> = whole.iter().map(|s| (s.name.clone(), s.labels.len(), s.value.to_bits())).collect();
            assert_eq!(out, expected, "chunk size {chunk_size}");
            assert_eq!(stats, whole_stats);
        }
    }

    #[test]
    fn an_overlong_line_is_dropped_whole_however_the_body_is_chunked() {
        // Cut at 64 KiB, the tail of this line would be a valid sample.
        let body = format!("m_{} 1\nm 2\n", "a".repeat(70_000));
        for chunk_size in [body.len(), 1000, 7] {
            let mut scanner = Scanner::new(|_: &str| true);
            let mut seen = Vec::new();
            // Names cut short, so a failure does not print 70 KB.
            let mut sink = |s: &Sample<'_, '_>| seen.push((s.name.chars().take(16).collect::<String>(), s.value));
            for chunk in body.as_bytes().chunks(chunk_size) {
                scanner.feed(chunk, &mut sink);
            }
            let stats = scanner.finish(&mut sink);
            assert_eq!(seen, vec![("m".to_owned(), 2.0)], "chunks of {chunk_size}");
            assert_eq!(stats.malformed, 1, "chunks of {chunk_size}");
        }
    }

    #[test]
    fn overlong_lines_are_dropped_not_buffered() {
        let mut scanner = Scanner::new(|_: &str| true);
        let mut seen = 0;
        let mut sink = |_: &Sample<'_, '_>| seen += 1;
        let long = vec![b'a'; 1024];
        for _ in 0..100 {
            scanner.feed(&long, &mut sink);
        }
        scanner.feed(b"\nm 1\n", &mut sink);
        let stats = scanner.finish(&mut sink);
        assert_eq!(seen, 1);
        assert!(stats.malformed >= 1);
    }

    /// Checks the shared fixture against its `.expected` table.
    #[test]
    fn edge_cases_fixture_matches_expected_table() {
        let input = fixture("edge-cases.prom");
        let expected = fixture("edge-cases.expected");
        let (out, stats) = scan(&input, |n| n == "pravega_controller_segments_count" || n == "pravega_controller_segment_splits");
        let finite: Vec<_> = out
            .iter()
            .filter(|s| s.value.is_finite())
            .map(|s| {
                let get = |k: &str| s.labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.replace('\n', "<LF>")).unwrap();
                format!("{}\t{}\t{}\t{}", s.name, get("scope"), get("stream"), s.value)
            })
            .collect();
        let wanted: Vec<_> = expected.lines().filter(|l| !l.starts_with('#')).map(str::to_owned).collect();
        assert_eq!(finite, wanted);
        assert_eq!(out.iter().filter(|s| !s.value.is_finite()).count(), 3);
        assert_eq!(stats.malformed, 1);
    }

    /// prometheus-parse as an oracle on the large, escape-free fixtures.
    #[test]
    fn agrees_with_prometheus_parse_on_large_fixtures() {
        for name in ["many-streams.prom", "plain-format.prom", "seed-demo.prom"] {
            let text = fixture(name);
            let oracle = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
            // The oracle reports a summary's _sum and _count as untyped samples.
            let summaries: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" summary")).collect();
            type Flat = (String, Vec<(String, String)>, u64);
            let mut want: Vec<Flat> = oracle
                .samples
                .iter()
                .filter(|s| s.metric.starts_with("pravega_controller_"))
                .filter(|s| !summaries.iter().any(|f| belongs_to_family(&s.metric, f)))
                .filter_map(|s| match s.value {
                    prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => {
                        let mut l: Vec<_> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        l.sort();
                        Some((s.metric.clone(), l, v.to_bits()))
                    }
                    _ => None,
                })
                .collect();
            let (ours, stats) = scan(&text, pravega);
            let mut got: Vec<_> = ours
                .into_iter()
                .map(|mut s| {
                    s.labels.sort();
                    (s.name, s.labels, s.value.to_bits())
                })
                .collect();
            want.sort();
            got.sort();
            assert_eq!(stats.malformed, 0, "{name}");
            assert!(!got.is_empty());
            let only_ours: Vec<_> = got.iter().filter(|s| !want.contains(s)).take(3).collect();
            let only_oracle: Vec<_> = want.iter().filter(|s| !got.contains(s)).take(3).collect();
            assert!(only_ours.is_empty() && only_oracle.is_empty(), "{name}: ours {only_ours:?} oracle {only_oracle:?}");
            assert_eq!(got.len(), want.len(), "{name}");
        }
    }
}

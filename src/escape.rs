//! Text from outside (scraped lines, request data) made safe for log lines:
//! control characters would otherwise end a line early, forge a new one or
//! drive the terminal reading the log. And a bound on how often lines that
//! outside input triggers are written.

use crate::clock::Moment;
use std::fmt::{self, Write as _};

/// `text` as a log field: printable characters as they are, backslashes
/// doubled, `\n`, `\r` and `\t` as those escapes, other control and
/// invisible format characters (bidirectional overrides, zero-width ones)
/// as `\u{..}`, and bytes that are not UTF-8 as `\xNN`.
///
/// `tracing::warn!(first = %escape::for_log(line.as_bytes()), ...)`
pub fn for_log(text: &[u8]) -> ForLog<'_> {
    ForLog(text)
}

/// See [`for_log`]; escapes as it is formatted, without allocating.
pub struct ForLog<'a>(&'a [u8]);

impl fmt::Display for ForLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    '\t' => f.write_str("\\t")?,
                    c if c.is_control() || is_invisible_format(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                    c => f.write_char(c)?,
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ForLog<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Format characters that change how the text around them reads without
/// showing: zero-width ones, bidirectional marks, embeddings, overrides
/// and isolates, the byte order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Lets a log line through at most once per interval, for lines that
/// outside input (queries, controllers) can trigger at will.
pub struct RateLimit {
    every: std::time::Duration,
    /// When the next line may pass, as [`Moment::as_millis`] (0: now).
    next: std::sync::atomic::AtomicU64,
}

impl RateLimit {
    pub const fn per(every: std::time::Duration) -> Self {
        RateLimit { every, next: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Whether a line may pass now.
    pub fn allow(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = Moment::now();
        let next = self.next.load(Ordering::Relaxed);
        now.as_millis() >= next
            && self.next.compare_exchange(next, (now + self.every).as_millis(), Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &[u8]) -> String {
        for_log(text).to_string()
    }

    #[test]
    fn printable_text_is_kept() {
        let line = "pravega_controller_segments_count{scope=\"é\",stream=\"流\",} 3.0";
        assert_eq!(escaped(line.as_bytes()), line);
    }

    #[test]
    fn control_bytes_never_reach_the_log_raw() {
        assert_eq!(escaped(b"a\nlevel=ERROR forged\r\tb"), "a\\nlevel=ERROR forged\\r\\tb");
        assert_eq!(escaped(b"\x1b[31mred\x07\x00\x7f"), "\\u{1b}[31mred\\u{7}\\u{0}\\u{7f}");
        assert_eq!(escaped("\u{85}\u{202e}txt.exe\u{200b}".as_bytes()), "\\u{85}\\u{202e}txt.exe\\u{200b}");
        assert_eq!(escaped(b"bad \xff\xfe utf-8"), "bad \\xff\\xfe utf-8");
        // A backslash is doubled, so an escape in the log is always one.
        assert_eq!(escaped(b"\\n"), "\\\\n");
        assert_eq!(format!("{:?}", for_log(b"x\n")), "\"x\\n\"");
        let escaped = escaped(&(0u8..=255).collect::<Vec<_>>());
        assert!(escaped.bytes().all(|b| (b' '..=b'~').contains(&b)), "{escaped}");
    }

    #[test]
    fn a_rate_limit_lets_one_line_through_per_interval() {
        let limit = RateLimit::per(std::time::Duration::from_secs(3600));
        assert!(limit.allow());
        assert!(!limit.allow(), "within the interval");
        let none = RateLimit::per(std::time::Duration::ZERO);
        assert!(none.allow() && none.allow());
    }
}

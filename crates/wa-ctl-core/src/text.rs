//! Worker text made safe to show: the one place that decides which
//! characters a log line or a terminal must not receive raw.
//!
//! A worker is untrusted. Whatever it sends (a close reason, a jid, a line
//! on its stdout) may carry terminal escapes that retitle or clear the
//! operator's terminal, a CR LF that forges a separate log line, or a bidi
//! override that makes text read backwards. Every log line and every
//! terminal print of worker text goes through [`escape`] (one line) or
//! [`escape_lines`] (a log file shown by `wa-ctl logs`, which keeps its
//! newlines and tabs). Log fields use [`Quoted`].
//!
//! What is escaped: C0 controls and DEL (`\x1b`, with `\n`, `\r`, `\t` by
//! name), C1 controls, the line and paragraph separators U+2028 and U+2029,
//! and the invisible format characters that reorder or hide text (bidi
//! embeddings, overrides and isolates, zero-width characters, the BOM),
//! each as `\u{...}`. Backslashes are not doubled: the point is that
//! nothing reaches the terminal raw, not that the escaping can be undone.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Whether `c` must not reach a log or terminal raw.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'                // Arabic letter mark
            | '\u{200B}'..='\u{200F}' // zero-width characters, LRM, RLM
            | '\u{2028}'..='\u{202E}' // line and paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{2069}' // word joiner, invisible operators, bidi isolates
            | '\u{FEFF}' // byte order mark, zero-width no-break space
        )
}

fn write_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

fn escape_where(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let needs = |c: char| is_unsafe(c) && !keep(c);
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs(c) {
            // Writing to a String cannot fail.
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` on one line with every unsafe character escaped, newlines and
/// tabs included: for worker text in a log line or a terminal message.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_where(text, |_| false)
}

/// `text` with every unsafe character escaped except newline and tab: for
/// a whole log file, whose lines stay lines.
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c == '\n' || c == '\t')
}

/// A log field value: `"text"`, escaped as [`escape`] does, with `"` shown
/// as `\"` so that the value cannot seem to end early.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                c if is_unsafe(c) => write_escaped(f, c)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            escape("15551234567@s.whatsapp.net"),
            Cow::Borrowed(_)
        ));
        assert!(matches!(escape_lines("a\tb\nc"), Cow::Borrowed(_)));
        assert_eq!(escape("héllo wörld ✓"), "héllo wörld ✓");
    }

    #[test]
    fn controls_and_invisible_formatting_are_escaped() {
        assert_eq!(
            escape("j\u{1b}]0;PWNED\u{7}\u{1b}[31mRED\u{1b}[0m\r\nFAKE LINE"),
            r"j\x1b]0;PWNED\x07\x1b[31mRED\x1b[0m\r\nFAKE LINE"
        );
        assert_eq!(escape("\u{7f}\u{0}\t"), r"\x7f\x00\t");
        assert_eq!(
            escape("\u{9b}2J\u{85}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}\u{feff}\u{61c}"),
            r"\u{9b}2J\u{85}\u{2028}\u{2029}\u{202e}\u{2066}\u{200f}\u{feff}\u{61c}"
        );
    }

    #[test]
    fn log_files_keep_their_lines() {
        assert_eq!(
            escape_lines("INFO a\n\u{1b}[2Jb\tc\r\n"),
            "INFO a\n\\x1b[2Jb\tc\\r\n"
        );
    }

    #[test]
    fn quoted_cannot_end_early() {
        assert_eq!(
            Quoted("a\" forged=\"1\n").to_string(),
            r#""a\" forged=\"1\n""#
        );
    }
}

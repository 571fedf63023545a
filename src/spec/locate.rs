//! Pointing at the line of a spec that is wrong.

use super::SpecError;

pub(super) struct Locator<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl Locator<'_> {
    /// The span of the line defining `key` inside a table's span (the table's own otherwise).
    pub fn key_in(&self, table: std::ops::Range<usize>, key: &str) -> std::ops::Range<usize> {
        // The span of an array-of-tables entry may cover only its header: scan on to the
        // next header instead.
        let mut offset = table.start.min(self.text.len());
        let mut header_seen = false;
        for line in self.text[offset..].split_inclusive('\n') {
            let t = line.trim_start();
            if t.starts_with('[') {
                // The span may start before the entry's own header (at a blank line).
                if header_seen {
                    break;
                }
                header_seen = true;
            }
            if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
                return offset..offset + line.len();
            }
            offset += line.len();
        }
        table
    }

    /// The line (from 1) of byte `at`.
    pub fn line(&self, at: usize) -> usize {
        self.text[..at.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    pub fn err(&self, span: std::ops::Range<usize>, key: &str, message: String) -> anyhow::Error {
        SpecError {
            file: self.file.into(),
            line: self.line(span.start),
            key: key.into(),
            message,
        }
        .into()
    }
}

/// The offending key: named in serde's message ("unknown field `x`", "missing field `y`"),
/// otherwise the key on the line the error points at (`key = <bad value>`).
pub(super) fn toml_error_key(msg: &str, text: &str, offset: usize) -> String {
    if msg.contains("field `") {
        if let Some(k) = msg.split('`').nth(1) {
            return k.to_string();
        }
    }
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((k, _)) => k.trim().to_string(),
        None => line.trim().trim_matches(['[', ']']).to_string(),
    }
}

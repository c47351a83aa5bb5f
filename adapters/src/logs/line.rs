//! Cutting a byte stream into bounded lines of text.
//!
//! A child may write gigabytes without a newline or bytes that are not UTF-8; neither may
//! grow our memory beyond one capped line nor make us fail, so the splitter keeps at most
//! `cap` bytes of the current line and only counts the rest.

use std::fmt::Write as _;
use std::time::SystemTime;

/// Room left at the end of a capped line for the truncation marker (the longest marker,
/// with a 20-digit length, is 63 bytes).
pub(crate) const MARKER_RESERVE: usize = 64;
/// The smallest line cap accepted, so a capped line still shows some content.
pub(crate) const MIN_LINE_BYTES: usize = 2 * MARKER_RESERVE;
/// Above this, the buffer of a partial line is released once the line is done, so a
/// process that once wrote a long line does not keep it allocated while idle.
const KEEP_PENDING_CAPACITY: usize = 4096;

/// Text of one line from its raw bytes: `kept` is the prefix we held (at most `cap`
/// bytes), `total` the length the line really had. Returns the text (at most `cap` bytes)
/// and whether it was truncated.
pub(crate) fn line_text(kept: &[u8], total: usize, cap: usize) -> (String, bool) {
    if total <= cap {
        let text = String::from_utf8_lossy(kept);
        if text.len() <= cap {
            return (text.into_owned(), false);
        }
    }
    let limit = cap.saturating_sub(MARKER_RESERVE);
    let mut cut = kept.len().min(limit);
    // Do not split a UTF-8 sequence: back off to its first byte (at most 3 steps).
    let mut steps = 0;
    while steps < 3 && cut > 0 && cut < kept.len() && kept[cut] & 0xC0 == 0x80 {
        cut -= 1;
        steps += 1;
    }
    let mut text = String::from_utf8_lossy(&kept[..cut]).into_owned();
    if text.len() > limit {
        // Replacement characters (3 bytes each) made it longer than the raw bytes.
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    // Writing to a String cannot fail.
    let _ = write!(text, " [processcontrol: line of {total} bytes truncated]");
    (text, true)
}

/// Caps a line built elsewhere (for instance a message the supervisor pushes itself).
pub(crate) fn cap_text(text: String, cap: usize) -> String {
    if text.len() <= cap {
        return text;
    }
    line_text(text.as_bytes(), text.len(), cap).0
}

/// A finished line, before it is tagged with its stream and instance.
#[derive(Debug)]
pub(crate) struct RawLine {
    /// When its first byte was read.
    pub(crate) time: SystemTime,
    /// Its text, capped.
    pub(crate) text: String,
    /// Whether the cap cut it.
    pub(crate) truncated: bool,
}

/// Splits chunks of bytes on `\n`, holding the unfinished end of the last line.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    cap: usize,
    /// The first `cap` bytes of the unfinished line.
    pending: Vec<u8>,
    /// Length of the unfinished line so far, including bytes not kept.
    total: usize,
    /// When the unfinished line started.
    started: SystemTime,
}

impl LineSplitter {
    /// A splitter whose lines are at most `cap` bytes of text.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            pending: Vec::new(),
            total: 0,
            started: SystemTime::UNIX_EPOCH,
        }
    }

    /// Feeds bytes read at `now`, calling `emit` for every line they complete.
    pub(crate) fn feed(&mut self, chunk: &[u8], now: SystemTime, emit: &mut impl FnMut(RawLine)) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (line, after) = rest.split_at(i);
            rest = &after[1..];
            if self.total == 0 {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let kept = &line[..line.len().min(self.cap)];
                let (text, truncated) = line_text(kept, line.len(), self.cap);
                emit(RawLine {
                    time: now,
                    text,
                    truncated,
                });
            } else {
                self.hold(line);
                self.finish_line(emit);
            }
        }
        if !rest.is_empty() {
            if self.total == 0 {
                self.started = now;
            }
            self.hold(rest);
        }
    }

    /// Emits the unfinished line, if any: at EOF a last line without newline is kept.
    pub(crate) fn finish(&mut self, emit: &mut impl FnMut(RawLine)) {
        if self.total > 0 {
            self.finish_line(emit);
        }
    }

    fn hold(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.pending.len());
        self.pending
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.total = self.total.saturating_add(bytes.len());
    }

    fn finish_line(&mut self, emit: &mut impl FnMut(RawLine)) {
        if self.total == self.pending.len() && self.pending.last() == Some(&b'\r') {
            self.pending.pop();
            self.total -= 1;
        }
        let (text, truncated) = line_text(&self.pending, self.total, self.cap);
        emit(RawLine {
            time: self.started,
            text,
            truncated,
        });
        self.total = 0;
        self.pending.clear();
        if self.pending.capacity() > KEEP_PENDING_CAPACITY {
            self.pending = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(cap: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut splitter = LineSplitter::new(cap);
        let mut out = Vec::new();
        let mut emit = |l: RawLine| out.push((l.text, l.truncated));
        for chunk in chunks {
            splitter.feed(chunk, SystemTime::now(), &mut emit);
        }
        splitter.finish(&mut emit);
        out
    }

    #[test]
    fn splits_across_chunks_and_strips_crlf() {
        let got = split(128, &[b"a\r\nb", b"c\r", b"\n\nlast"]);
        let texts: Vec<_> = got.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["a", "bc", "", "last"]);
    }

    #[test]
    fn caps_long_lines_with_marker_and_keeps_utf8_whole() {
        let mut long = "é".repeat(200).into_bytes();
        long.push(b'\n');
        let got = split(128, &[&long[..150], &long[150..]]);
        assert_eq!(got.len(), 1);
        let (text, truncated) = &got[0];
        assert!(truncated);
        assert!(text.len() <= 128, "{}", text.len());
        assert!(text.ends_with("[processcontrol: line of 400 bytes truncated]"));
        assert!(!text.contains('\u{FFFD}'));
    }

    #[test]
    fn invalid_utf8_is_replaced_and_still_capped() {
        let got = split(128, &[&[0xFF; 100], b"\n"]);
        let (text, truncated) = &got[0];
        assert!(truncated, "100 invalid bytes become 300 bytes of text");
        assert!(text.len() <= 128);
        assert!(text.starts_with('\u{FFFD}'));
        let got = split(128, &[b"ok \xFF\n"]);
        assert_eq!(got[0], ("ok \u{FFFD}".to_owned(), false));
    }

    #[test]
    fn cap_text_leaves_short_text_alone() {
        assert_eq!(cap_text("short".into(), 128), "short");
        assert!(cap_text("x".repeat(1000), 128).len() <= 128);
    }
}

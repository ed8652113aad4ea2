//! A server-sent events parser (the WHATWG `text/event-stream` format) that
//! holds at most a fixed number of bytes: a line or an event larger than
//! its cap is an error, so a server (or anything in between) that never
//! ends a line cannot make the client's memory grow without bound.
//!
//! Written here rather than taken from a crate because the crates we
//! looked at buffer a line for as long as it grows; the format is small.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// `event:`, or `message` when the event named none.
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The last `id:` seen on the stream so far (it carries over events).
    pub id: Option<String>,
}

/// The event (or line) was larger than the parser's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLarge {
    /// The cap, in bytes.
    pub max: usize,
}

/// Turns chunks of bytes into events. Feed it with [`SseParser::feed`];
/// an event is dispatched when its blank line arrives, and whatever is
/// pending when the stream ends is discarded (as the format says).
#[derive(Debug)]
pub(crate) struct SseParser {
    max: usize,
    /// The current line, not yet ended.
    line: Vec<u8>,
    /// The last byte fed was a `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    /// Nothing fed yet: a byte-order mark is dropped.
    at_start: bool,
    /// Bytes held by the pending event (data, type), to bound it.
    pending_bytes: usize,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    /// A parser that refuses any event (or line) over `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            pending_bytes: 0,
            data: String::new(),
            has_data: false,
            event: None,
            last_id: None,
        }
    }

    /// Parses a chunk, appending the events it completes to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), TooLarge> {
        if self.at_start && !chunk.is_empty() {
            // The BOM may itself arrive split; keep the bytes until they
            // can be told apart from a line.
            let bom = b"\xEF\xBB\xBF";
            let mut held = std::mem::take(&mut self.line);
            held.extend_from_slice(chunk);
            if held.len() < bom.len() && bom.starts_with(&held) {
                self.line = held;
                return Ok(());
            }
            self.at_start = false;
            let start = if held.starts_with(bom) { bom.len() } else { 0 };
            return self.feed_lines(&held[start..], out);
        }
        if chunk.is_empty() {
            return Ok(());
        }
        if self.after_cr && chunk[0] == b'\n' {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        self.feed_lines(chunk, out)
    }

    fn feed_lines(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), TooLarge> {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let (head, rest) = chunk.split_at(end);
            self.grow_line(head)?;
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
            let cr = rest[0] == b'\r';
            chunk = &rest[1..];
            if cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.grow_line(chunk)
    }

    fn grow_line(&mut self, bytes: &[u8]) -> Result<(), TooLarge> {
        if self.pending_bytes + self.line.len() + bytes.len() > self.max {
            return Err(TooLarge { max: self.max });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), TooLarge> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => {
                self.pending_bytes += value.len();
                self.event = Some(value.into_owned());
            }
            b"data" => {
                self.pending_bytes += value.len() + 1;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.last_id = Some(value.into_owned()),
            // `retry:` and unknown fields: the reconnection delay is ours.
            _ => {}
        }
        if self.pending_bytes > self.max {
            return Err(TooLarge { max: self.max });
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        self.pending_bytes = 0;
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event: event
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "message".to_owned()),
            data: std::mem::take(&mut self.data),
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse_all(chunks: &[&[u8]], max: usize) -> Result<Vec<SseEvent>, TooLarge> {
        let mut parser = SseParser::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.feed(chunk, &mut out)?;
        }
        Ok(out)
    }

    fn event(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.to_owned(),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn events_are_read_with_their_type_data_and_id() {
        let stream = b"event: message\nid: 1\ndata: {\"a\":1}\n\n: ping\n\ndata: x\ndata:y\n\n";
        assert_eq!(
            parse_all(&[stream], 1024).unwrap(),
            vec![
                event("message", "{\"a\":1}", Some("1")),
                event("message", "x\ny", Some("1")),
            ]
        );
    }

    #[test]
    fn every_line_ending_and_any_split_give_the_same_events() {
        let lf = b"\xEF\xBB\xBFevent: a\nid: 7\ndata: one\ndata:  two\n\nretry: 10\nfield\ndata\n\nid\ndata: z\n\n"
            .to_vec();
        let expected = vec![
            event("a", "one\n two", Some("7")),
            event("message", "", Some("7")),
            event("message", "z", Some("")),
        ];
        let crlf: Vec<u8> = String::from_utf8_lossy(&lf)
            .replace('\n', "\r\n")
            .into_bytes();
        let cr: Vec<u8> = String::from_utf8_lossy(&lf)
            .replace('\n', "\r")
            .into_bytes();
        for text in [&lf, &crlf, &cr] {
            // Whole, byte by byte, and split at every position in two.
            assert_eq!(parse_all(&[text], 1024).unwrap(), expected);
            let bytes: Vec<&[u8]> = text.chunks(1).collect();
            assert_eq!(parse_all(&bytes, 1024).unwrap(), expected);
            for at in 0..text.len() {
                let (a, b) = text.split_at(at);
                assert_eq!(parse_all(&[a, b], 1024).unwrap(), expected, "split at {at}");
            }
        }
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert_eq!(
            parse_all(&[b"data: 1\n\ndata: 2\n"], 1024).unwrap(),
            vec![event("message", "1", None)]
        );
        assert_eq!(
            parse_all(&[b"data: 1\n\ndata: 2"], 1024).unwrap(),
            vec![event("message", "1", None)]
        );
    }

    #[test]
    fn a_line_or_an_event_over_the_cap_is_an_error() {
        // One endless line, fed in pieces.
        let piece = [b'x'; 100];
        let mut parser = SseParser::new(1000);
        let mut out = Vec::new();
        let mut fed = 0;
        let err = loop {
            match parser.feed(&piece, &mut out) {
                Ok(()) => fed += piece.len(),
                Err(err) => break err,
            }
            assert!(fed <= 1000, "the parser held more than its cap");
        };
        assert_eq!(err, TooLarge { max: 1000 });
        assert!(parser.line.capacity() <= 2048);
        // Many short data lines of one event.
        let many = "data: 0123456789\n".repeat(100);
        assert!(parse_all(&[many.as_bytes()], 1000).is_err());
        // Events under the cap, one after the other, are fine.
        let ok = "data: 0123456789\n\n".repeat(1000);
        assert_eq!(parse_all(&[ok.as_bytes()], 100).unwrap().len(), 1000);
        // Comments count as lines too.
        assert!(parse_all(&[format!(":{}\n", "c".repeat(200)).as_bytes()], 100).is_err());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        assert_eq!(
            parse_all(&[b"data: a\xFFb\n\n"], 1024).unwrap(),
            vec![event("message", "a\u{FFFD}b", None)]
        );
    }
}

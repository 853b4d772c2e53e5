//! Server-sent events as MCP uses them: an incremental parser for the upstream's streams, and
//! the framing of the events the gateway writes itself.

use bytes::Bytes;
use serde_json::Value;

/// One parsed event. Comments and retry hints are not events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl Event {
    /// The event's data as a JSON-RPC message, if it is one.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.data).ok()
    }

    /// The event in wire form.
    pub fn to_bytes(&self) -> Bytes {
        let mut s = String::with_capacity(self.data.len() + 32);
        if let Some(e) = &self.event {
            s.push_str("event: ");
            s.push_str(e);
            s.push('\n');
        }
        if let Some(id) = &self.id {
            s.push_str("id: ");
            s.push_str(id);
            s.push('\n');
        }
        for line in self.data.split('\n') {
            s.push_str("data: ");
            s.push_str(line);
            s.push('\n');
        }
        s.push('\n');
        Bytes::from(s)
    }
}

/// A JSON-RPC message as one SSE `message` event without an id.
pub fn message(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {v}\n\n"))
}

/// An SSE comment: keeps idle connections (and the proxies between) from timing out.
pub fn comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// Splits a byte stream into events, whatever the chunk boundaries.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    current: Event,
    has_data: bool,
}

impl Parser {
    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            self.line(&line, &mut out);
        }
        self.buf.drain(..start);
        out
    }

    /// Bytes of the event being read, not yet complete.
    pub fn pending(&self) -> usize {
        self.buf.len() + self.current.data.len()
    }

    /// Whether everything fed so far ended exactly at an event boundary.
    pub fn at_boundary(&self) -> bool {
        self.buf.is_empty() && !self.has_data && self.current == Event::default()
    }

    fn line(&mut self, line: &str, out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data || self.current.id.is_some() {
                out.push(std::mem::take(&mut self.current));
            }
            self.current = Event::default();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "id" => self.current.id = Some(value.to_owned()),
            "event" => self.current.event = Some(value.to_owned()),
            _ => {}
        }
    }
}

/// A body of SSE chunks with its events rewritten by `reframe` as each completes (never
/// buffered beyond one event); a stream that ends without the blank line still ends its last.
pub fn reframed<S, E, F>(
    body: S,
    mut reframe: F,
) -> impl futures::Stream<Item = Result<Bytes, E>> + Send
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
    F: FnMut(Vec<Event>) -> Bytes + Send + 'static,
{
    use futures::StreamExt;
    async_stream::stream! {
        let mut body = Box::pin(body);
        let mut parser = Parser::default();
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => {
                    let out = reframe(parser.feed(&c));
                    if !out.is_empty() {
                        yield Ok(out);
                    }
                }
                Err(e) => {
                    yield Err(e);
                    return;
                }
            }
        }
        let out = reframe(parser.feed(b"\n\n"));
        if !out.is_empty() {
            yield Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_any_chunking() {
        let wire = b"event: message\nid: 7\ndata: {\"a\":1}\n\n: comment\n\ndata: x\r\ndata: y\r\n\r\nid: 9\n\n";
        for split in 0..wire.len() {
            let mut p = Parser::default();
            let mut got = p.feed(&wire[..split]);
            got.extend(p.feed(&wire[split..]));
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0].id.as_deref(), Some("7"));
            assert_eq!(got[0].event.as_deref(), Some("message"));
            assert_eq!(got[0].json(), Some(serde_json::json!({"a": 1})));
            assert_eq!(got[1].data, "x\ny");
            assert_eq!(got[2].id.as_deref(), Some("9"));
            assert_eq!(got[2].data, "");
        }
    }

    #[test]
    fn events_round_trip() {
        let e = Event {
            id: Some("3".into()),
            event: Some("message".into()),
            data: "a\nb".into(),
        };
        let mut p = Parser::default();
        assert_eq!(p.feed(&e.to_bytes()), vec![e]);
    }
}

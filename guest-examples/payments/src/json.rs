//! Just enough JSON for a payment request: the top-level object's fields,
//! with scalar values kept and nested objects and arrays checked and skipped.
//! Hand-written to keep `payments.wasm` small (no serde).

/// A field's value. Numbers stay as their source text.
#[derive(Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    /// An object or array: well-formed, contents not kept.
    Nested,
}

/// Parses `bytes` as one JSON object and returns its fields in order, or
/// `None` if it is not exactly one well-formed JSON object.
pub fn parse_object(bytes: &[u8]) -> Option<Vec<(String, Json)>> {
    let mut p = Parser { bytes, pos: 0 };
    p.skip_ws();
    let mut fields = Vec::new();
    p.object(&mut |key, value| fields.push((key, value)), 0)?;
    p.skip_ws();
    (p.pos == bytes.len()).then_some(fields)
}

/// `s` as a JSON string literal, quotes included.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Deeper nesting than this is refused rather than risking the stack.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        (self.next()? == b).then_some(())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// `{ "key": value, ... }`, calling `field` for each member.
    fn object(&mut self, field: &mut dyn FnMut(String, Json), depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'{')?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let value = self.value(depth)?;
            field(key, value);
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b'}' => return Some(()),
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.expect(b'[')?;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Some(());
        }
        loop {
            self.skip_ws();
            self.value(depth)?;
            self.skip_ws();
            match self.next()? {
                b',' => continue,
                b']' => return Some(()),
                _ => return None,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        match self.peek()? {
            b'{' => {
                self.object(&mut |_, _| {}, depth + 1)?;
                Some(Json::Nested)
            }
            b'[' => {
                self.array(depth + 1)?;
                Some(Json::Nested)
            }
            b'"' => self.string().map(Json::String),
            b't' => self.literal("true", Json::Bool(true)),
            b'f' => self.literal("false", Json::Bool(false)),
            b'n' => self.literal("null", Json::Null),
            b'-' | b'0'..=b'9' => self.number().map(Json::Number),
            _ => None,
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Option<Json> {
        let end = self.pos + word.len();
        (self.bytes.get(self.pos..end)? == word.as_bytes()).then(|| {
            self.pos = end;
            value
        })
    }

    /// A number per the JSON grammar, returned as its text.
    fn number(&mut self) -> Option<String> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digit()?;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digit()?;
            self.digits();
        }
        // Only ASCII was consumed.
        Some(String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned())
    }

    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    /// A string literal, escapes decoded.
    fn string(&mut self) -> Option<String> {
        self.expect(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            match self.next()? {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let c = match self.next()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b if b < 0x20 => return None,
                b => out.push(b),
            }
        }
    }

    /// The character of a `\uXXXX` escape (its `\u` already read), pairing
    /// surrogates.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) {
            self.expect(b'\\')?;
            self.expect(b'u')?;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return None;
            }
            char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        } else {
            char::from_u32(first)
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let hex = self.bytes.get(self.pos..self.pos + 4)?;
        let hex = std::str::from_utf8(hex).ok()?;
        let value = u32::from_str_radix(hex, 16).ok()?;
        if hex.starts_with('+') {
            return None;
        }
        self.pos += 4;
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_payment() {
        let fields =
            parse_object(br#" {"amount": 1250, "currency":"EUR", "meta": {"a": [1, 2.5e3]}} "#)
                .unwrap();
        assert_eq!(
            fields,
            vec![
                ("amount".to_string(), Json::Number("1250".to_string())),
                ("currency".to_string(), Json::String("EUR".to_string())),
                ("meta".to_string(), Json::Nested),
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_one_object() {
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"a\":}",
            b"{\"a\":1} x",
            b"{\"a\":01}",
            b"{'a':1}",
        ] {
            assert!(
                parse_object(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn escapes_and_unescapes() {
        let fields = parse_object(br#"{"s":"a\"b\u00e9\ud83d\ude00"}"#).unwrap();
        assert_eq!(fields[0].1, Json::String("a\"b\u{e9}\u{1F600}".to_string()));
        assert_eq!(escape("a\"b\\\n\u{1}"), r#""a\"b\\\n\u0001""#);
    }
}

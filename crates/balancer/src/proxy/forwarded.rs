//! The syntax of a `Forwarded` field (RFC 7239 section 4): a list of
//! elements, each `;`-separated `token=value` pairs, a value a token or a
//! quoted-string.
//!
//! The proxy appends its own element to what earlier proxies wrote; it
//! checks that prior value first, because a malformed one (an unterminated
//! quoted-string above all) would swallow the element the balancer vouches
//! for in the eyes of a parser downstream. A malformed prior value is
//! dropped, as nginx's and Envoy's forwarding code drop what they cannot
//! parse.

use crate::token::is_tchar;

/// One element: its pairs in order, names lowercased, values unquoted.
pub type Element = Vec<(String, String)>;

/// The elements of a `Forwarded` value, or `None` if it breaks the
/// grammar. Empty elements and empty pairs are allowed (RFC 9110 5.6.1
/// asks recipients to accept empty list items); whitespace is allowed
/// around `,` and `;`, never around `=`.
pub fn parse(s: &str) -> Option<Vec<Element>> {
    let mut p = Cursor {
        s: s.as_bytes(),
        at: 0,
    };
    let mut elements = Vec::new();
    let mut element = Element::new();
    loop {
        p.skip_ows();
        match p.peek() {
            None => break,
            Some(b',') => {
                p.at += 1;
                if !element.is_empty() {
                    elements.push(std::mem::take(&mut element));
                }
            }
            Some(b';') => p.at += 1,
            Some(_) => {
                let name = p.token()?.to_ascii_lowercase();
                p.eat(b'=')?;
                let value = match p.peek() {
                    Some(b'"') => p.quoted()?,
                    _ => p.token()?,
                };
                element.push((name, value));
                // A pair must be followed by a separator or the end.
                p.skip_ows();
                if !matches!(p.peek(), None | Some(b',' | b';')) {
                    return None;
                }
            }
        }
    }
    if !element.is_empty() {
        elements.push(element);
    }
    Some(elements)
}

struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek() == Some(b)).then(|| self.at += 1)
    }

    fn token(&mut self) -> Option<String> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        (self.at > start).then(|| String::from_utf8_lossy(&self.s[start..self.at]).into_owned())
    }

    /// A quoted-string, unquoted; `None` if it is not terminated or holds
    /// a byte a quoted-string may not.
    fn quoted(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = self.peek()?;
            self.at += 1;
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    let escaped = self
                        .peek()
                        .filter(|&e| is_qtext(e) || e == b'"' || e == b'\\')?;
                    self.at += 1;
                    out.push(escaped);
                }
                b if is_qtext(b) => out.push(b),
                _ => return None,
            }
        }
    }
}

/// qdtext of RFC 9110 5.6.4 (with obs-text), less `"` and `\`.
fn is_qtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Option<Vec<Vec<(&'static str, String)>>> {
        parse(s).map(|els| {
            els.into_iter()
                .map(|el| {
                    el.into_iter()
                        .map(|(k, v)| (&*k.leak(), v))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
    }

    #[test]
    fn valid_values_parse_into_elements() {
        assert_eq!(
            pairs(r#"for=10.0.0.1;proto=https, For="[2001:db8::1]:80";host="a\"b""#),
            Some(vec![
                vec![("for", "10.0.0.1".into()), ("proto", "https".into())],
                vec![("for", "[2001:db8::1]:80".into()), ("host", "a\"b".into())],
            ])
        );
        assert_eq!(pairs(""), Some(vec![]));
        assert_eq!(
            pairs(" , ;for=a;; ,"),
            Some(vec![vec![("for", "a".into())]])
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "for=\"unterminated",
            "for=1.2.3.4;;;by",
            "=x",
            "for = a",
            "for=a b",
            "for=\"a\"b",
            "for=\"a\\",
            "for=@",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}

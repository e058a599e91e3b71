//! The token of RFC 9110 §5.6.2, the syntax of header parameter names,
//! `Forwarded` pairs and cookie names. A leaf: both the proxy (parsing a
//! client's `Forwarded`) and the policies (a cookie key's name) use it.

/// Whether `b` may appear in a token.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_characters() {
        assert!(b"Session-ID_1.x~".iter().all(|&b| is_tchar(b)));
        for b in *b" \t\"(),/:;<=>?@[\\]{}\x7f" {
            assert!(!is_tchar(b), "{:?}", b as char);
        }
    }
}

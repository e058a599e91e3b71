//! The `Date` field of responses that have none (RFC 9110 6.6.1), formatted
//! once a second per thread rather than once a response.

use std::{cell::RefCell, time::SystemTime};

/// The formatted date and the second it is for.
struct Cached {
    second: u64,
    text: String,
}

thread_local! {
    static CACHED: RefCell<Cached> = const {
        RefCell::new(Cached { second: u64::MAX, text: String::new() })
    };
}

/// Calls `f` with the current date as an IMF-fixdate.
pub fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|cached| {
        if cached.second != second {
            cached.second = second;
            cached.text = httpdate::fmt_http_date(now);
        }
        f(cached.text.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_is_an_imf_fixdate_of_now() {
        let text = with(|d| String::from_utf8(d.to_vec()).expect("ascii"));
        let parsed = httpdate::parse_http_date(&text).expect("an HTTP date");
        let age = SystemTime::now().duration_since(parsed).unwrap_or_default();
        assert!(age.as_secs() <= 2, "{text} is {age:?} old");
        assert!(text.ends_with(" GMT"), "{text}");
    }
}

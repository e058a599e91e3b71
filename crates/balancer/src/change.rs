//! Validated input of membership changes: a [`Hostname`] and a [`Change`]
//! (`n` replicas, some of them named) for `/add` and `/rm`.
//!
//! Input is checked once, here, at the admin boundary; the supervisor takes
//! only these types, so it can never receive a change it would have to
//! refuse for its shape (zero replicas, more names than `n`, a name listed
//! twice, a name that is not a DNS label). What it may still refuse depends
//! on the pool (a name in use, too many replicas): see
//! [`MembershipError`](crate::supervisor::MembershipError).

use std::{collections::HashSet, fmt};

use serde_json::Value;

use crate::replica::{ReplicaId, generated_id};

/// A replica's hostname: a DNS label (RFC 1123), because it names a
/// container on the Docker network and is resolved by other containers.
/// Never passed to a shell, but checked all the same.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

impl Hostname {
    /// The longest DNS label.
    pub const MAX_LEN: usize = 63;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ring id this name stands for if it is a generated name
    /// (`server-<k>`), see [`generated_id`].
    pub fn generated_id(&self) -> Option<ReplicaId> {
        generated_id(&self.0)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Hostname {
    type Error = InvalidInput;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        let valid = (1..=Self::MAX_LEN).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if valid {
            Ok(Self(name))
        } else {
            Err(InvalidInput::Hostname(name))
        }
    }
}

impl TryFrom<&str> for Hostname {
    type Error = InvalidInput;

    fn try_from(name: &str) -> Result<Self, Self::Error> {
        Self::try_from(name.to_owned())
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Which way a change goes; the spec words its "too many hostnames" error
/// differently for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Add,
    Remove,
}

/// `n` replicas to add or remove, `hostnames` (distinct, at most `n`) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    n: usize,
    hostnames: Vec<Hostname>,
}

impl Change {
    /// A change of `n` (at least 1) replicas, the named ones first.
    pub fn new(
        direction: Direction,
        n: usize,
        hostnames: Vec<Hostname>,
    ) -> Result<Self, InvalidInput> {
        if n == 0 {
            return Err(InvalidInput::ZeroN);
        }
        let mut seen = HashSet::new();
        if let Some(dup) = hostnames.iter().find(|h| !seen.insert(h.as_str())) {
            return Err(InvalidInput::ListedTwice(dup.to_string()));
        }
        if hostnames.len() > n {
            return Err(InvalidInput::TooManyHostnames(direction));
        }
        Ok(Self { n, hostnames })
    }

    /// Parses an `/add` or `/rm` body, `{"n": 2, "hostnames": ["s4", "s5"]}`,
    /// with `n` at most `max_n`.
    pub fn from_json(
        direction: Direction,
        bytes: &[u8],
        max_n: usize,
    ) -> Result<Self, InvalidInput> {
        use InvalidInput as E;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(E::EmptyBody);
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| E::MalformedJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(E::NotAnObject);
        };
        if let Some(unknown) = fields.keys().find(|k| *k != "n" && *k != "hostnames") {
            return Err(E::UnknownField(unknown.clone()));
        }
        let n = match fields.get("n") {
            None | Some(Value::Null) => return Err(E::MissingN),
            Some(Value::Number(num)) => match (num.as_u64(), num.as_i64()) {
                (Some(n), _) => n,
                (None, Some(_)) => return Err(E::NegativeN(num.to_string())),
                _ => return Err(E::NotAnInteger(num.to_string())),
            },
            Some(other) => return Err(E::NotAnInteger(other.to_string())),
        };
        if n == 0 {
            return Err(E::ZeroN);
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > max_n {
            return Err(E::AboveMax { n, max: max_n });
        }
        let hostnames = match fields.get("hostnames") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Hostname::try_from(s.as_str()),
                    other => Err(E::HostnameNotAString(other.to_string())),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => return Err(E::HostnamesNotAList(other.to_string())),
        };
        Self::new(direction, n, hostnames)
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn hostnames(&self) -> &[Hostname] {
        &self.hostnames
    }

    pub fn into_parts(self) -> (usize, Vec<Hostname>) {
        (self.n, self.hostnames)
    }
}

/// Why an `/add` or `/rm` body is refused before anything is looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("{}", match .0 {
        Direction::Add => "Length of hostname list is more than newly added instances",
        Direction::Remove => "Length of hostname list is more than removable instances",
    })]
    TooManyHostnames(Direction),
    #[error(r#"empty body: expected a JSON object like {{"n": 1, "hostnames": ["s1"]}}"#)]
    EmptyBody,
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error(r#"expected a JSON object like {{"n": 1, "hostnames": ["s1"]}}"#)]
    NotAnObject,
    #[error("unknown field '{0}' (expected 'n' and 'hostnames')")]
    UnknownField(String),
    #[error("missing field 'n' (the number of replicas)")]
    MissingN,
    #[error("'n' must be a positive integer, got {0}")]
    NegativeN(String),
    #[error("'n' must be an integer, got {0}")]
    NotAnInteger(String),
    #[error("'n' must be at least 1")]
    ZeroN,
    #[error("'n' is {n}, above --max-replicas ({max})")]
    AboveMax { n: usize, max: usize },
    #[error("'hostnames' must be a list of strings, got {0}")]
    HostnamesNotAList(String),
    #[error("hostnames must be strings, got {0}")]
    HostnameNotAString(String),
    #[error(
        "'{}' is not a valid hostname (1-63 letters, digits or '-', not starting or ending with '-')",
        .0.escape_debug()
    )]
    Hostname(String),
    #[error("hostname '{0}' is listed twice")]
    ListedTwice(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Change, String> {
        Change::from_json(Direction::Add, s.as_bytes(), 10).map_err(|e| e.to_string())
    }

    fn names(list: &[&str]) -> Vec<Hostname> {
        list.iter()
            .map(|n| Hostname::try_from(*n).expect("valid"))
            .collect()
    }

    #[test]
    fn accepts_the_spec_bodies() {
        assert_eq!(
            parse(r#"{"n": 2, "hostnames": ["s4", "s5"]}"#),
            Ok(Change {
                n: 2,
                hostnames: names(&["s4", "s5"])
            })
        );
        assert_eq!(
            parse(r#"{"n": 3}"#),
            Ok(Change {
                n: 3,
                hostnames: vec![]
            })
        );
    }

    #[test]
    fn rejects_every_bad_input_with_a_reason() {
        for (body, expect) in [
            ("", "empty body"),
            ("  \n", "empty body"),
            ("{", "malformed JSON"),
            ("[1]", "JSON object"),
            (r#"{"hostnames": []}"#, "missing field 'n'"),
            (r#"{"n": null}"#, "missing field 'n'"),
            (r#"{"n": -1}"#, "positive integer"),
            (r#"{"n": 1.5}"#, "integer"),
            (r#"{"n": "2"}"#, "integer"),
            (r#"{"n": 0}"#, "at least 1"),
            (r#"{"n": 11}"#, "--max-replicas"),
            (r#"{"n": 1, "hostnames": "s1"}"#, "list of strings"),
            (r#"{"n": 1, "hostnames": [1]}"#, "must be strings"),
            (r#"{"n": 2, "hostnames": ["a", "a"]}"#, "listed twice"),
            (r#"{"n": 1, "hostnames": ["a", "b"]}"#, "newly added"),
            (
                r#"{"n": 1, "hostnames": ["bad name"]}"#,
                "not a valid hostname",
            ),
            (
                r#"{"n": 1, "hostnames": ["$(reboot)"]}"#,
                "not a valid hostname",
            ),
            (r#"{"n": 1, "extra": true}"#, "unknown field"),
        ] {
            let err = parse(body).expect_err(body);
            assert!(err.contains(expect), "{body}: {err}");
        }
    }

    #[test]
    fn changes_are_checked_when_built_by_hand_too() {
        assert_eq!(
            Change::new(Direction::Add, 0, vec![]),
            Err(InvalidInput::ZeroN)
        );
        let err = Change::new(Direction::Remove, 1, names(&["a", "b"])).expect_err("too many");
        assert_eq!(
            err.to_string(),
            "Length of hostname list is more than removable instances"
        );
        assert_eq!(
            Change::new(Direction::Add, 2, names(&["c", "c"])),
            Err(InvalidInput::ListedTwice("c".into()))
        );
        let ok = Change::new(Direction::Remove, 2, names(&["c"])).expect("valid");
        assert_eq!((ok.n(), ok.hostnames()), (2, &names(&["c"])[..]));
    }

    #[test]
    fn hostname_rules() {
        for ok in ["s1", "server-10", "A", &"a".repeat(63)] {
            assert!(Hostname::try_from(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a_b", "a.b", "a b", &"a".repeat(64), "é"] {
            assert!(Hostname::try_from(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Hostname::try_from("server-7")
                .expect("valid")
                .generated_id(),
            Some(7)
        );
    }
}

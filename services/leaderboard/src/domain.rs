//! Domain values of the leaderboard: board names and request limits. No I/O.

use std::fmt;

use ewpm_kit::error::FieldViolation;

/// A valid board name, `<kind>:<id>`: kind 1–16 lowercase ASCII letters (`challenge`,
/// `quiz`), id 1–128 ASCII letters, digits, `.`, `_` or `-`. The narrow alphabet keeps names
/// safe inside Redis keys (no `{`/`}` to break the hash tag) and channel names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Board {
    name: String,
    colon: usize,
}

impl Board {
    /// Parses `raw`; the violation names `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Self, FieldViolation> {
        let bad = || {
            FieldViolation::new(
                field,
                "must be `<kind>:<id>`: kind 1-16 lowercase letters, id 1-128 letters, digits, '.', '_' or '-'",
            )
        };
        let (kind, id) = raw.split_once(':').ok_or_else(bad)?;
        let kind_ok =
            (1..=16).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_lowercase());
        let id_ok = (1..=128).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !kind_ok || !id_ok {
            return Err(bad());
        }
        Ok(Self { name: raw.to_string(), colon: kind.len() })
    }

    /// The kind (`challenge`): which owner holds the board's facts.
    pub fn kind(&self) -> &str {
        &self.name[..self.colon]
    }

    /// The id within the kind (a challenge id).
    pub fn id(&self) -> &str {
        &self.name[self.colon + 1..]
    }

    /// The whole name, `<kind>:<id>`.
    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A member id as a request names it: 1–128 characters, no control characters (the same
/// bounds as a token subject, which is what challenge members are).
pub fn parse_member(raw: &str, field: &str) -> Result<String, FieldViolation> {
    let count = raw.chars().count();
    if count == 0 || count > 128 || raw.chars().any(char::is_control) {
        return Err(FieldViolation::new(field, "must be 1 to 128 printable characters"));
    }
    Ok(raw.to_string())
}

/// Entries per page when the request leaves it 0.
pub const DEFAULT_PAGE_SIZE: u32 = 10;
/// Largest page and largest watched top N; larger requests are clamped (AIP-158).
pub const MAX_PAGE_SIZE: u32 = 100;
/// Most neighbours on each side GetRank returns.
pub const MAX_NEIGHBOURS: u32 = 50;

/// A page size or top N: 0 means the default, above the maximum is clamped, negative is a
/// violation of `field`.
pub fn limit(requested: i32, field: &str) -> Result<u32, FieldViolation> {
    match u32::try_from(requested) {
        Err(_) => Err(FieldViolation::new(field, "must not be negative")),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(n) => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// Neighbours on each side: 0 to 50.
pub fn neighbours(requested: i32) -> Result<u32, FieldViolation> {
    u32::try_from(requested)
        .ok()
        .filter(|n| *n <= MAX_NEIGHBOURS)
        .ok_or_else(|| FieldViolation::new("neighbours", "must be between 0 and 50"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_name_splits_into_kind_and_id() {
        let b = Board::parse("challenge:0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c", "board").unwrap();
        assert_eq!(
            (b.kind(), b.id(), b.as_str()),
            (
                "challenge",
                "0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c",
                "challenge:0194d3c2-5b1e-7c4f-9a51-2d3e4f5a6b7c"
            )
        );
    }

    #[test]
    fn malformed_board_names_are_a_violation_of_the_field() {
        let long_kind = format!("{}:x", "a".repeat(17));
        let long_id = format!("quiz:{}", "a".repeat(129));
        for raw in [
            "",
            "challenge",
            ":x",
            "challenge:",
            "Challenge:x",
            "quiz:a}b",
            "quiz:a b",
            &long_kind,
            &long_id,
            "a:b:c",
        ] {
            assert_eq!(Board::parse(raw, "board").unwrap_err().field, "board", "{raw:?}");
        }
        assert!(Board::parse(&format!("{}:{}", "a".repeat(16), "a".repeat(128)), "board").is_ok());
    }

    #[test]
    fn limits_default_clamp_and_reject_negatives() {
        assert_eq!(limit(0, "page_size"), Ok(10));
        assert_eq!(limit(7, "page_size"), Ok(7));
        assert_eq!(limit(1000, "top_n"), Ok(100));
        assert_eq!(limit(-1, "top_n").unwrap_err().field, "top_n");
        assert_eq!(neighbours(50), Ok(50));
        assert!(neighbours(51).is_err() && neighbours(-1).is_err());
    }

    #[test]
    fn a_member_must_be_printable_and_bounded() {
        assert_eq!(parse_member("alice", "member"), Ok("alice".to_string()));
        assert!(parse_member("", "member").is_err());
        assert!(parse_member("a\nb", "member").is_err());
        assert!(parse_member(&"x".repeat(129), "member").is_err());
    }
}

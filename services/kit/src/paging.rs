//! Page sizes and opaque page tokens, the same for every List RPC.
//!
//! A token is URL-safe base64 of a small JSON cursor the service defines; clients treat it as
//! opaque. A token that does not decode is a field violation on `page_token`.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::FieldViolation;

/// Page size when the request leaves it 0.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page size honoured; larger requests are clamped (AIP-158).
pub const MAX_PAGE_SIZE: u32 = 100;

/// The effective page size for a requested one; negative sizes are a field violation.
pub fn page_size(requested: i32) -> Result<u32, FieldViolation> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(FieldViolation::new("page_size", "must not be negative")),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
    }
}

/// Encodes a cursor as a page token.
pub fn encode_token<C: Serialize>(cursor: &C) -> String {
    let json = serde_json::to_vec(cursor).expect("cursor serializes");
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a page token; `Ok(None)` for the empty token (the first page).
pub fn decode_token<C: DeserializeOwned>(token: &str) -> Result<Option<C>, FieldViolation> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || FieldViolation::new("page_token", "is not a token this service issued");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    serde_json::from_slice(&bytes).map(Some).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_the_default_and_large_sizes_are_clamped() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(7), Ok(7));
        assert_eq!(page_size(10_000), Ok(MAX_PAGE_SIZE));
        assert_eq!(page_size(-1), Err(FieldViolation::new("page_size", "must not be negative")));
    }

    #[test]
    fn a_token_round_trips_and_garbage_is_a_field_violation() {
        let token = encode_token(&("a", 3));
        assert_eq!(decode_token::<(String, i32)>(&token), Ok(Some(("a".to_string(), 3))));
        assert_eq!(decode_token::<(String, i32)>(""), Ok(None));
        let err = decode_token::<(String, i32)>("%%%").unwrap_err();
        assert_eq!(err.field, "page_token");
    }
}

//! Relay connection arguments: the page size rules and opaque cursors.

use async_graphql::Error;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use schema::codes;

use super::errors::coded;

/// Page size when `first` is not given, and the most a page may hold.
pub const DEFAULT_PAGE: i32 = 20;
pub const MAX_PAGE: i32 = 100;

/// Checks `first` against the cap; an over-large page is an error, not a huge answer.
pub fn page_size(first: Option<i32>) -> Result<u32, Error> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    if !(0..=MAX_PAGE).contains(&first) {
        return Err(coded(codes::INVALID_INPUT, format!("first must be 0 to {MAX_PAGE}")));
    }
    Ok(first as u32)
}

/// Complexity of a connection field: its page size times its children's.
pub fn connection_complexity(first: Option<i32>, child_complexity: usize) -> usize {
    first.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as usize * child_complexity
}

pub fn encode_cursor(position: &str) -> String {
    URL_SAFE_NO_PAD.encode(position)
}

pub fn decode_cursor(cursor: &str) -> Result<String, Error> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| not_a_cursor())?;
    String::from_utf8(bytes).map_err(|_| not_a_cursor())
}

/// A cursor for lists ordered newest first by (timestamp, id).
pub fn encode_time_cursor(micros: i64, id: &str) -> String {
    encode_cursor(&format!("{micros}:{id}"))
}

/// The (timestamp micros, id) an [`encode_time_cursor`] cursor holds.
pub fn decode_time_cursor(cursor: &str) -> Result<(i64, String), Error> {
    let text = decode_cursor(cursor)?;
    let (micros, id) = text.split_once(':').ok_or_else(not_a_cursor)?;
    Ok((micros.parse().map_err(|_| not_a_cursor())?, id.to_string()))
}

fn not_a_cursor() -> Error {
    coded(codes::INVALID_INPUT, "after is not a cursor from this connection")
}

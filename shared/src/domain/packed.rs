//! The stored form of a bulk job's recipients: their JSON, deflated in zlib's format (whose
//! header and checksum refuse a corrupt or plain value rather than misread it). A recipient's
//! JSON (its message id, address and data) is about 105 bytes and deflates to about 22 at level
//! 1, and a stored job is written once per recipient on both backends: twice to disk on SQLite
//! (its WAL, then the database file), in write units on DynamoDB (a part of 500 recipients).

/// Deflate's fastest level: about 5 ms for 10,000 recipients; level 6 saves another 10% of the
/// bytes for twice the time.
const LEVEL: u8 = 1;

/// Stored JSON that does not inflate, or inflates past the limit it was read with.
#[derive(Debug, thiserror::Error)]
#[error("stored bulk recipients do not inflate: {0}")]
pub struct UnpackError(String);

/// Deflates `json` for storage.
pub fn pack(json: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(json, LEVEL)
}

/// Inflates what [`pack`] stored, refusing more than `limit` bytes of JSON.
pub fn unpack(packed: &[u8], limit: usize) -> Result<Vec<u8>, UnpackError> {
    miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(packed, limit)
        .map_err(|e| UnpackError(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn recipients() -> Vec<u8> {
        let list: Vec<serde_json::Value> = (0..1_000)
            .map(|i| {
                serde_json::json!({"id": uuid::Uuid::now_v7(), "to": format!("reader{i}@example.com"),
                                   "data": {"name": format!("Reader {i}")}})
            })
            .collect();
        serde_json::to_vec(&list).unwrap()
    }

    #[test]
    fn recipients_come_back_as_they_were_stored_in_a_fraction_of_the_bytes() {
        let json = recipients();
        let packed = pack(&json);
        assert!(
            packed.len() * 3 < json.len(),
            "{} bytes packed from {}",
            packed.len(),
            json.len()
        );
        assert_eq!(unpack(&packed, json.len()).unwrap(), json);
    }

    #[test]
    fn what_inflates_past_its_limit_or_is_not_deflate_is_refused() {
        let json = recipients();
        let packed = pack(&json);
        assert!(unpack(&packed, json.len() - 1).is_err());
        assert!(unpack(b"[{\"to\": \"plain json\"}]", 1 << 20).is_err());
    }
}

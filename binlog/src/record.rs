//! The on-disk format of one log record, and of the header every segment file starts with.
//!
//! A record is a fixed [`RECORD_HEADER_BYTES`]-byte header followed by the payload:
//!
//! ```text
//! offset size field
//!      0    4 magic            RECORD_MAGIC, never zero: a zero-filled tail is not a record
//!      4    4 crc32c           over bytes 8..24 of the header, then the payload
//!      8    4 payload length   little endian
//!     12    1 kind             RecordKind as a byte
//!     13    3 reserved         zero
//!     16    8 instance id      little endian
//!     24    n payload
//! ```
//!
//! All integers are little endian. The CRC covers every header field except the magic and the
//! CRC itself, so a flipped length, kind or instance id is caught, not only a flipped payload.

use crate::{Record, RecordKind};

/// Marks the start of a record ("PXR1" little endian). Never zero, so zeros are never a record.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"PXR1");

/// Bytes of the fixed record header.
pub const RECORD_HEADER_BYTES: usize = 24;

/// The largest payload the log accepts: a value of at most 8 MiB (see [`crate::value`]) plus
/// the acceptor state around it, with room to spare.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Every segment file starts with these 8 bytes, then the format version (u32 LE) and 4 zero
/// bytes.
pub const SEGMENT_MAGIC: [u8; 8] = *b"PAXSQLOG";

/// The segment format version. Bumped when an old node could misread a new segment.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;

/// Bytes of the segment file header.
pub const SEGMENT_HEADER_BYTES: usize = 16;

/// The segment header as written at offset 0 of every segment file.
pub fn segment_header() -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    header
}

/// Appends the encoding of `record` (header and payload) to `buffer`.
///
/// The caller checked the payload length against [`RECORD_PAYLOAD_BYTES_MAX`].
pub fn encode_record(record: &Record, buffer: &mut Vec<u8>) {
    let payload_len =
        u32::try_from(record.payload.len()).expect("payload length checked against the limit");
    let start = buffer.len();
    buffer.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    buffer.extend_from_slice(&[0u8; 4]); // CRC, filled in below
    buffer.extend_from_slice(&payload_len.to_le_bytes());
    buffer.push(record.kind as u8);
    buffer.extend_from_slice(&[0u8; 3]);
    buffer.extend_from_slice(&record.instance_id.to_le_bytes());
    buffer.extend_from_slice(&record.payload);
    let crc = record_crc(
        &buffer[start + 8..start + RECORD_HEADER_BYTES],
        &record.payload,
    );
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn record_crc(header_fields: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_fields), payload)
}

/// A record header, parsed but not yet checked against its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub payload_len: usize,
    pub kind_byte: u8,
    pub reserved: [u8; 3],
    pub instance_id: u64,
}

impl RecordHeader {
    /// Parses a header. `None` when the magic is wrong.
    pub fn parse(bytes: &[u8; RECORD_HEADER_BYTES]) -> Option<RecordHeader> {
        let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
        if magic != RECORD_MAGIC {
            return None;
        }
        Some(RecordHeader {
            crc: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
            payload_len: u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            kind_byte: bytes[12],
            reserved: bytes[13..16].try_into().expect("3 bytes"),
            instance_id: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
        })
    }

    /// Bytes of the whole record: header plus payload.
    pub fn record_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload_len
    }
}

/// What [`decode_record_at`] found at an offset of a segment's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, valid record; the next record starts `bytes` later.
    Record { record: Record, bytes: usize },
    /// The bytes end inside this record: a short header, or a length that points past the end.
    /// At the end of the last segment this is a torn write.
    Truncated { reason: String },
    /// Every remaining byte is zero (a preallocated or never-written tail).
    Zeros,
    /// The bytes here are not a valid record.
    Invalid { reason: String },
}

/// Decodes the record that starts at `offset` of `bytes` (a segment's contents).
pub fn decode_record_at(bytes: &[u8], offset: usize) -> Decoded {
    let rest = &bytes[offset..];
    // The zero check runs only on the failure paths, so recovery stays linear in the file size.
    let Some(header_bytes) = rest.first_chunk::<RECORD_HEADER_BYTES>() else {
        if rest.iter().all(|&byte| byte == 0) {
            return Decoded::Zeros;
        }
        return Decoded::Truncated {
            reason: format!(
                "short record header: {} of {RECORD_HEADER_BYTES} bytes",
                rest.len()
            ),
        };
    };
    let Some(header) = RecordHeader::parse(header_bytes) else {
        if rest.iter().all(|&byte| byte == 0) {
            return Decoded::Zeros;
        }
        return Decoded::Invalid {
            reason: "bad record magic".to_string(),
        };
    };
    if header.payload_len > RECORD_PAYLOAD_BYTES_MAX {
        return Decoded::Invalid {
            reason: format!(
                "payload length {} exceeds the limit {RECORD_PAYLOAD_BYTES_MAX}",
                header.payload_len
            ),
        };
    }
    if rest.len() < header.record_bytes() {
        return Decoded::Truncated {
            reason: format!(
                "record of {} bytes but only {} bytes left in the file",
                header.record_bytes(),
                rest.len()
            ),
        };
    }
    let payload = &rest[RECORD_HEADER_BYTES..header.record_bytes()];
    match check_record(&header, &header_bytes[8..], payload) {
        Ok(kind) => Decoded::Record {
            record: Record::new(
                header.instance_id,
                kind,
                bytes::Bytes::copy_from_slice(payload),
            ),
            bytes: header.record_bytes(),
        },
        Err(reason) => Decoded::Invalid { reason },
    }
}

/// Checks a parsed header against its CRC-covered bytes and payload; returns the record kind.
pub fn check_record(
    header: &RecordHeader,
    header_fields: &[u8],
    payload: &[u8],
) -> Result<RecordKind, String> {
    let crc = record_crc(header_fields, payload);
    if crc != header.crc {
        return Err(format!(
            "CRC32C mismatch: stored {:#010x}, computed {crc:#010x}",
            header.crc
        ));
    }
    if header.reserved != [0; 3] {
        return Err("reserved header bytes are not zero".to_string());
    }
    RecordKind::from_byte(header.kind_byte)
        .ok_or_else(|| format!("unknown record kind {}", header.kind_byte))
}

/// True when a valid record starts at any offset after `offset` in `bytes`. Used to tell a torn
/// tail (nothing valid follows the damage) from a damaged record in the middle (valid records
/// follow it). A valid record needs the magic, a length that fits and a matching CRC, so random
/// garbage passes with a probability of about 2^-64.
pub fn valid_record_after(bytes: &[u8], offset: usize) -> bool {
    let magic = RECORD_MAGIC.to_le_bytes();
    let mut start = offset + 1;
    while start + RECORD_HEADER_BYTES <= bytes.len() {
        let Some(found) = bytes[start..].windows(4).position(|window| window == magic) else {
            return false;
        };
        start += found;
        if matches!(decode_record_at(bytes, start), Decoded::Record { .. }) {
            return true;
        }
        start += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(record: &Record) -> Vec<u8> {
        let mut buffer = Vec::new();
        encode_record(record, &mut buffer);
        buffer
    }

    #[test]
    fn record_round_trips_through_its_encoding() {
        let record = Record::new(42, RecordKind::Chosen, &b"hello"[..]);
        let bytes = encoded(&record);
        assert_eq!(bytes.len(), RECORD_HEADER_BYTES + 5);
        assert_eq!(
            decode_record_at(&bytes, 0),
            Decoded::Record {
                record,
                bytes: bytes.len()
            }
        );
    }

    #[test]
    fn flipping_any_header_field_or_payload_byte_is_detected() {
        let record = Record::new(7, RecordKind::Acceptor, &b"payload"[..]);
        let bytes = encoded(&record);
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x10;
            assert!(
                !matches!(decode_record_at(&damaged, 0), Decoded::Record { .. }),
                "flip at byte {index} went unnoticed"
            );
        }
    }

    #[test]
    fn zeros_and_short_records_are_told_apart_from_garbage() {
        let record = Record::new(1, RecordKind::Meta, vec![9u8; 100]);
        let bytes = encoded(&record);
        assert_eq!(decode_record_at(&[0u8; 40], 0), Decoded::Zeros);
        assert!(matches!(
            decode_record_at(&bytes[..10], 0),
            Decoded::Truncated { .. }
        ));
        assert!(matches!(
            decode_record_at(&bytes[..60], 0),
            Decoded::Truncated { .. }
        ));
        assert!(matches!(
            decode_record_at(&[0xAB; 40], 0),
            Decoded::Invalid { .. }
        ));
    }

    #[test]
    fn a_valid_record_after_damage_is_found() {
        let mut bytes = vec![0xEEu8; 37];
        let garbage_len = bytes.len();
        encode_record(&Record::new(3, RecordKind::Chosen, &b"x"[..]), &mut bytes);
        assert!(valid_record_after(&bytes, 0));
        assert!(!valid_record_after(&bytes[..garbage_len + 10], 0));
    }
}

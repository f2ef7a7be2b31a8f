//! The electronic sales slip as vpbox anchors it (the format is specified in
//! `docs/slip-format.md`).
//!
//! An anchor is a pair of SM3 digests:
//! - the **key** names the card transaction: SM3 over the slip's identity fields (merchant,
//!   terminal, retrieval reference number, time), so a dispute platform that knows the
//!   transaction from its own records can find the anchor *without* trusting the slip it is
//!   handed;
//! - the **value** is SM3 over the slip file's exact bytes, so any change to the slip (amount,
//!   card, signature image, a single space) no longer matches.
//!
//! Parsing is strict where ambiguity could be exploited: duplicate top-level fields are refused
//! (different parsers would pick different ones), and the identity fields have fixed shapes.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use vpbox_sm::sm3::{Digest, Sm3, hash};

/// Domain tag hashed in front of the identity fields: no other vpbox hash can collide with a
/// slip key.
pub const KEY_TAG: &str = "VPBOX/slip-key/v1";

/// The identity fields, in the order they are hashed.
pub const ID_FIELDS: [&str; 4] = ["merchant_id", "terminal_id", "rrn", "txn_time"];

/// Why a file is not a vpbox slip.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlipError {
    /// Not JSON, or not a JSON object.
    #[error("not a vpbox JSON slip: {0} (use --raw to anchor other formats)")]
    NotJson(String),
    /// A field appears twice.
    #[error("field {0:?} appears more than once")]
    DuplicateField(String),
    /// A required identity field is absent.
    #[error("missing field {0:?}")]
    MissingField(&'static str),
    /// An identity field has the wrong type or shape.
    #[error("field {field:?}: {why}")]
    BadField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// The fields that name one card transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlipId {
    /// Merchant number (MID), 1–32 ASCII letters or digits.
    pub merchant_id: String,
    /// Terminal number (TID), 1–16 ASCII letters or digits.
    pub terminal_id: String,
    /// Retrieval reference number, 1–32 ASCII letters or digits.
    pub rrn: String,
    /// Transaction time `YYYY-MM-DDThh:mm:ss` with `Z` or `±hh:mm`, hashed as written.
    pub txn_time: String,
}

/// An anchor: the ledger's `put(key, value)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// SM3 of the identity fields.
    pub key: Digest,
    /// SM3 of the slip's bytes.
    pub value: Digest,
}

impl SlipId {
    /// The anchor key: `SM3(KEY_TAG ‖ 0 ‖ merchant_id ‖ 0 ‖ terminal_id ‖ 0 ‖ rrn ‖ 0 ‖
    /// txn_time)`. No field may contain NUL, so the encoding is unambiguous.
    pub fn key(&self) -> Digest {
        let mut h = Sm3::new();
        h.update(KEY_TAG);
        for field in [&self.merchant_id, &self.terminal_id, &self.rrn, &self.txn_time] {
            h.update([0u8]).update(field);
        }
        h.finalize()
    }
}

/// Parses a slip and returns its identity and anchor.
pub fn parse(bytes: &[u8]) -> Result<(SlipId, Anchor), SlipError> {
    let Fields(fields) =
        serde_json::from_slice(bytes).map_err(|e| SlipError::NotJson(e.to_string()))?;
    for (i, (name, _)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(other, _)| other == name) {
            return Err(SlipError::DuplicateField(name.clone()));
        }
    }
    let field = |name: &'static str| -> Result<String, SlipError> {
        let value = fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or(SlipError::MissingField(name))?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or(SlipError::BadField { field: name, why: "must be a string" })
    };
    let id = SlipId {
        merchant_id: alnum(field("merchant_id")?, "merchant_id", 32)?,
        terminal_id: alnum(field("terminal_id")?, "terminal_id", 16)?,
        rrn: alnum(field("rrn")?, "rrn", 32)?,
        txn_time: timestamp(field("txn_time")?)?,
    };
    let anchor = Anchor { key: id.key(), value: hash(bytes) };
    Ok((id, anchor))
}

fn alnum(s: String, field: &'static str, max: usize) -> Result<String, SlipError> {
    if s.is_empty() || s.len() > max {
        return Err(SlipError::BadField { field, why: "wrong length" });
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(SlipError::BadField { field, why: "only ASCII letters and digits" });
    }
    Ok(s)
}

/// `YYYY-MM-DDThh:mm:ss` then `Z` or `±hh:mm`, digits where digits go.
fn timestamp(s: String) -> Result<String, SlipError> {
    const BAD: SlipError = SlipError::BadField {
        field: "txn_time",
        why: "must be YYYY-MM-DDThh:mm:ss followed by Z or ±hh:mm",
    };
    let b = s.as_bytes();
    let shape_ok = |pattern: &[u8], bytes: &[u8]| {
        pattern.len() == bytes.len()
            && pattern.iter().zip(bytes).all(|(p, c)| match p {
                b'9' => c.is_ascii_digit(),
                b'S' => *c == b'+' || *c == b'-',
                other => other == c,
            })
    };
    let ok = b.len() >= 19
        && shape_ok(b"9999-99-99T99:99:99", &b[..19])
        && (shape_ok(b"Z", &b[19..]) || shape_ok(b"S99:99", &b[19..]));
    if ok { Ok(s) } else { Err(BAD) }
}

/// A JSON object's top-level fields in order, duplicates kept so they can be refused.
struct Fields(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLIP: &str = r#"{"merchant_id":"898310048160001","terminal_id":"10000001",
        "rrn":"123456789012","txn_time":"2026-11-24T10:15:30+08:00","amount":"128.00"}"#;

    #[test]
    fn key_covers_identity_and_value_covers_bytes() {
        let (id, anchor) = parse(SLIP.as_bytes()).unwrap();
        assert_eq!(id.rrn, "123456789012");
        assert_eq!(anchor.value, hash(SLIP));
        // The key is reproducible from the identity alone, as a dispute platform computes it.
        let mut h = Sm3::new();
        h.update(b"VPBOX/slip-key/v1\x00898310048160001\x0010000001\x00123456789012\x00")
            .update(b"2026-11-24T10:15:30+08:00");
        assert_eq!(anchor.key, h.finalize());

        // Changing a non-identity field changes the value, not the key.
        let edited = SLIP.replace("128.00", "928.00");
        let (_, other) = parse(edited.as_bytes()).unwrap();
        assert_eq!(other.key, anchor.key);
        assert_ne!(other.value, anchor.value);
        // Changing an identity field changes the key.
        let (_, moved) = parse(SLIP.replace("10000001", "10000002").as_bytes()).unwrap();
        assert_ne!(moved.key, anchor.key);
    }

    #[test]
    fn refuses_ambiguous_or_malformed_slips() {
        let dup = SLIP.replace(r#""amount""#, r#""rrn":"999","amount""#);
        assert_eq!(parse(dup.as_bytes()), Err(SlipError::DuplicateField("rrn".into())));
        assert!(matches!(parse(b"[1,2]"), Err(SlipError::NotJson(_))));
        assert!(matches!(parse(b"\xff\xfe"), Err(SlipError::NotJson(_))));
        assert_eq!(
            parse(SLIP.replace(r#""rrn":"123456789012","#, "").as_bytes()),
            Err(SlipError::MissingField("rrn"))
        );
        for bad_time in ["2026-11-24 10:15:30", "2026-11-24T10:15:30", "2026-11-24T10:15:30+0800"] {
            let s = SLIP.replace("2026-11-24T10:15:30+08:00", bad_time);
            assert!(matches!(
                parse(s.as_bytes()),
                Err(SlipError::BadField { field: "txn_time", .. })
            ));
        }
        let s = SLIP.replace("10000001", "1000 0001");
        assert!(matches!(
            parse(s.as_bytes()),
            Err(SlipError::BadField { field: "terminal_id", .. })
        ));
        let s = SLIP.replace(r#""10000001""#, "10000001");
        assert!(matches!(
            parse(s.as_bytes()),
            Err(SlipError::BadField { field: "terminal_id", .. })
        ));
        assert!(parse(SLIP.replace("+08:00", "Z").as_bytes()).is_ok());
    }
}

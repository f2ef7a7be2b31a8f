//! The client identity the proxy forwards to the node: [`HEADER`] `: role=R; bank=B; name=N;
//! key=K`.
//!
//! - `role` is an API [`Role`] name (`posp`, `admin`);
//! - `bank` and `name` are the admitted certificate's O and CN, percent-encoded (every byte but
//!   ASCII letters, digits and `-._~` as `%XX`, so a bank's name in Chinese or a CN with `;`
//!   or `=` in it travels as visible ASCII and cannot forge a field);
//! - `key` is the SM3 fingerprint of the certificate's public key, 64 lowercase hex digits.
//!
//! The four fields appear once each, in this order, separated by `"; "`; anything else is a
//! [`BadClient`]. The value is at most [`HEADER_MAX`] bytes (a certificate's O and CN are
//! each at most 64 characters, 12 bytes percent-encoded per character).

use crate::role::Role;

/// The header's name.
pub const HEADER: &str = "x-vpbox-client";
/// The longest value parsed.
pub const HEADER_MAX: usize = 2048;

/// An admitted API client, as the node receives it from the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its role.
    pub role: Role,
    /// Its bank (the certificate's O).
    pub bank: String,
    /// Its name (the certificate's CN).
    pub name: String,
    /// SM3 of its certificate's public key.
    pub key: [u8; 32],
}

/// Why a header value is not a [`Client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadClient(pub String);

impl std::fmt::Display for BadClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{HEADER}: {}", self.0)
    }
}

impl std::error::Error for BadClient {}

const FIELDS: [&str; 4] = ["role", "bank", "name", "key"];

impl Client {
    /// The header's value.
    pub fn header_value(&self) -> String {
        format!(
            "role={}; bank={}; name={}; key={}",
            self.role.name(),
            encode(&self.bank),
            encode(&self.name),
            hex::encode(self.key)
        )
    }

    /// Parses a header's value (strictly: see the module's docs).
    pub fn parse(value: &[u8]) -> Result<Self, BadClient> {
        let bad = |why: &str| BadClient(why.to_string());
        if value.len() > HEADER_MAX {
            return Err(bad(&format!("longer than {HEADER_MAX} bytes")));
        }
        let text = std::str::from_utf8(value).map_err(|_| bad("not ASCII"))?;
        let mut values = [""; 4];
        let mut parts = text.split("; ");
        for (field, slot) in FIELDS.iter().zip(values.iter_mut()) {
            let part = parts.next().ok_or_else(|| bad(&format!("no {field}")))?;
            let v = part
                .strip_prefix(field)
                .and_then(|rest| rest.strip_prefix('='))
                .ok_or_else(|| bad(&format!("expected {field}=… in {part:?}")))?;
            *slot = v;
        }
        if parts.next().is_some() {
            return Err(bad("fields after key"));
        }
        let [role, bank, name, key] = values;
        let role = Role::from_name(role).ok_or_else(|| bad(&format!("no API role {role:?}")))?;
        let mut fingerprint = [0u8; 32];
        if key.len() != 64 || key.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad("key is not 64 lowercase hex digits"));
        }
        hex::decode_to_slice(key, &mut fingerprint)
            .map_err(|_| bad("key is not 64 lowercase hex digits"))?;
        Ok(Self {
            role,
            bank: decode(bank).ok_or_else(|| bad("bank is not percent-encoded UTF-8"))?,
            name: decode(name).ok_or_else(|| bad("name is not percent-encoded UTF-8"))?,
            key: fingerprint,
        })
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The text `s` encodes: only the canonical encoding is accepted (unreserved bytes as
/// themselves, every other byte as `%XX` in capitals), so one identity has one header.
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied()?;
                let lo = bytes.get(i + 2).copied()?;
                if !(hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit())
                    || hi.is_ascii_lowercase()
                    || lo.is_ascii_lowercase()
                {
                    return None;
                }
                let v = u8::from_str_radix(std::str::from_utf8(&[hi, lo]).ok()?, 16).ok()?;
                if unreserved(v) {
                    return None;
                }
                out.push(v);
                i += 3;
            }
            b if unreserved(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn client(bank: &str, name: &str) -> Client {
        Client { role: Role::Posp, bank: bank.into(), name: name.into(), key: [0xab; 32] }
    }

    #[test]
    fn a_header_is_visible_ascii_and_round_trips() {
        let c = client("中国银联", "posp-1; role=admin");
        let v = c.header_value();
        assert!(v.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{v}");
        assert!(v.starts_with("role=posp; bank=%E4%B8%AD"), "{v}");
        // The CN's "; role=admin" cannot add a field: it is encoded.
        assert!(v.contains("name=posp-1%3B%20role%3Dadmin; key=abab"), "{v}");
        assert_eq!(Client::parse(v.as_bytes()), Ok(c));
    }

    #[test]
    fn anything_but_the_canonical_form_is_refused() {
        let good = client("bank-a", "posp-1").header_value();
        assert!(Client::parse(good.as_bytes()).is_ok());
        let key = "ab".repeat(32);
        for bad in [
            String::new(),
            format!("role=root; bank=b; name=n; key={key}"),
            "role=posp; bank=b; name=n".to_string(),
            format!("role=posp; bank=b; name=n; key={key}; role=admin"),
            format!("bank=b; role=posp; name=n; key={key}"),
            format!("role=posp;bank=b; name=n; key={key}"),
            format!("role=posp; bank=b c; name=n; key={key}"),
            format!("role=posp; bank=%e4; name=n; key={key}"),
            format!("role=posp; bank=%41; name=n; key={key}"),
            format!("role=posp; bank=%FF; name=n; key={key}"),
            format!("role=posp; bank=%4; name=n; key={key}"),
            format!("role=posp; bank=b; name=n; key={}", "AB".repeat(32)),
            format!("role=posp; bank=b; name=n; key={}", "ab".repeat(31)),
            format!("role=posp; bank=b; name={}; key={key}", "n".repeat(HEADER_MAX)),
        ] {
            assert!(Client::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(Client::parse(&[0xff, 0xfe]).is_err());
    }

    proptest! {
        #[test]
        fn every_identity_round_trips(bank in "\\PC{0,64}", name in "\\PC{0,64}", admin: bool,
                                      key: [u8; 32]) {
            let role = if admin { Role::Admin } else { Role::Posp };
            let c = Client { role, bank, name, key };
            let v = c.header_value();
            prop_assert!(v.len() <= HEADER_MAX);
            prop_assert_eq!(Client::parse(v.as_bytes()), Ok(c));
        }

        #[test]
        fn parsing_any_bytes_ends_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Client::parse(&bytes);
        }
    }
}

use serde::Deserialize;

use crate::Error;

/// How a token encodes SM2 signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    /// 64 bytes `r ‖ s`.
    Raw,
    /// DER `SEQUENCE { r, s }`.
    Der,
}

/// A vendor's SM2 codes (`profiles/*.toml`, shipped in the binary).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name, used in configs (`profile = "sansec"`).
    pub name: String,
    /// The vendor.
    pub vendor: String,
    /// How sure we are of these codes, and why.
    pub confidence: String,
    /// Prefixes of `CK_TOKEN_INFO.manufacturerID` this profile applies to.
    pub manufacturer_ids: Vec<String>,
    /// `CKA_KEY_TYPE` of SM2 keys.
    pub key_type: u64,
    /// Key-pair generation mechanism.
    pub keygen_mechanism: u64,
    /// Raw SM2 signature over `e`; absent when the token cannot sign SM2 at all.
    pub sign_mechanism: Option<u64>,
    /// Signature encoding of `sign_mechanism`.
    pub signature_encoding: SignatureEncoding,
    /// Whether `CKA_EC_POINT` is readable on the private key object.
    pub ec_point_on_private: bool,
}

const BUILTIN: [&str; 4] = [
    include_str!("../profiles/sansec.toml"),
    include_str!("../profiles/tass.toml"),
    include_str!("../profiles/thales-luna.toml"),
    include_str!("../profiles/softhsm2.toml"),
];

impl Profile {
    /// Parses a profile file.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Profile(e.to_string()))
    }

    /// The profiles shipped with vpbox.
    pub fn builtin() -> Vec<Self> {
        // The shipped files are parsed in a unit test; a bad one fails the build's tests.
        BUILTIN.iter().filter_map(|t| Self::from_toml(t).ok()).collect()
    }

    /// A shipped profile by name.
    pub fn named(name: &str) -> Result<Self, Error> {
        Self::builtin()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::Profile(format!("no built-in profile named {name:?}")))
    }

    /// The shipped profile for a token's manufacturer ID.
    pub fn for_manufacturer(manufacturer_id: &str) -> Result<Self, Error> {
        let m = manufacturer_id.trim();
        Self::builtin()
            .into_iter()
            .find(|p| p.manufacturer_ids.iter().any(|prefix| m.starts_with(prefix.as_str())))
            .ok_or_else(|| {
                Error::Profile(format!(
                    "no built-in profile for manufacturer {m:?}; name one in the config"
                ))
            })
    }

    pub(crate) fn sign_mechanism(&self) -> Result<u64, Error> {
        self.sign_mechanism.ok_or_else(|| Error::Unsupported {
            profile: self.name.clone(),
            what: "this token has no SM2 signature mechanism (ECDSA on the SM2 curve is not SM2)"
                .into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_parse_and_select_by_manufacturer() {
        assert_eq!(Profile::builtin().len(), BUILTIN.len(), "every shipped file parses");
        assert_eq!(Profile::for_manufacturer("vpbox-sansec-compatible  ").unwrap().name, "sansec");
        assert_eq!(Profile::for_manufacturer("SoftHSM project").unwrap().name, "softhsm2");
        assert_eq!(Profile::for_manufacturer("SafeNet, Inc.").unwrap().name, "thales-luna");
        assert!(Profile::for_manufacturer("Acme HSM").is_err());
        let sansec = Profile::named("sansec").unwrap();
        assert_eq!(sansec.sign_mechanism, Some(0x8000_8104));
        assert_eq!(sansec.signature_encoding, SignatureEncoding::Raw);
        assert!(Profile::named("softhsm2").unwrap().sign_mechanism().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let bad = "name='x'\nvendor='x'\nconfidence='x'\nmanufacturer_ids=[]\nkey_type=1\n\
                   keygen_mechanism=1\nsignature_encoding='raw'\nec_point_on_private=false\nsign_mech=1";
        assert!(Profile::from_toml(bad).is_err());
    }
}

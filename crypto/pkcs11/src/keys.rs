//! Key custody: the locked generation template, lookup by `CKA_ID`, and the attribute audit.

use cryptoki::object::{Attribute, AttributeInfo, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use serde::Serialize;
use vpbox_sm::sm2::PublicKey;

use crate::token::{key_type, mechanism_type};
use crate::{Error, Profile};

/// DER of the SM2 curve OID 1.2.156.10197.1.301, the `CKA_EC_PARAMS` of SM2 keys.
pub const SM2_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];

/// Choices the security officer makes at generation.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// Whether the key may be destroyed (`retire`). `false` blocks rotation until the token is
    /// re-initialised.
    pub destroyable: bool,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self { destroyable: true }
    }
}

/// Generates an SM2 key pair inside the token with the locked template of
/// docs/reference/pkcs11-sm.md: sensitive, non-extractable, sign-only, not modifiable or
/// copyable. Refuses an `id` already in use.
pub fn generate(
    session: &Session,
    profile: &Profile,
    label: &str,
    id: &[u8],
    policy: KeyPolicy,
) -> Result<(ObjectHandle, ObjectHandle), Error> {
    if find_private(session, profile, id).is_ok() {
        return Err(Error::KeyExists(hex::encode(id)));
    }
    let kt = key_type(profile.key_type)?;
    let public = [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(kt),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(SM2_EC_PARAMS.to_vec()),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let mut private = vec![
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(kt),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        Attribute::Destroyable(policy.destroyable),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    if let Some(sign) = profile.sign_mechanism {
        private.push(Attribute::AllowedMechanisms(vec![mechanism_type(sign)?]));
    }
    let mech = mechanism_type(profile.keygen_mechanism)?;
    let mechanism = cryptoki::mechanism::Mechanism::VendorDefined(
        cryptoki::mechanism::vendor_defined::VendorDefinedMechanism::new::<()>(mech, None),
    );
    Ok(session.generate_key_pair(&mechanism, &public, &private)?)
}

/// The private key with `CKA_ID` = `id` and the profile's key type.
pub fn find_private(
    session: &Session,
    profile: &Profile,
    id: &[u8],
) -> Result<ObjectHandle, Error> {
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(key_type(profile.key_type)?),
        Attribute::Id(id.to_vec()),
    ])?;
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(Error::KeyNotFound(hex::encode(id))),
        _ => Err(Error::Malformed(format!(
            "{} private keys share CKA_ID {}",
            found.len(),
            hex::encode(id)
        ))),
    }
}

/// Every private key of the profile's key type.
pub fn list_private(session: &Session, profile: &Profile) -> Result<Vec<ObjectHandle>, Error> {
    Ok(session.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(key_type(profile.key_type)?),
    ])?)
}

/// The public key of the key pair with `CKA_ID` = `id`: from `CKA_EC_POINT` of the public
/// object, or of the private object where the vendor exposes it there.
pub fn public_key(session: &Session, profile: &Profile, id: &[u8]) -> Result<PublicKey, Error> {
    let class = if profile.ec_point_on_private {
        ObjectClass::PRIVATE_KEY
    } else {
        ObjectClass::PUBLIC_KEY
    };
    let objects = session.find_objects(&[
        Attribute::Class(class),
        Attribute::KeyType(key_type(profile.key_type)?),
        Attribute::Id(id.to_vec()),
    ])?;
    let object = objects.first().ok_or_else(|| Error::KeyNotFound(hex::encode(id)))?;
    let attrs = session.get_attributes(*object, &[AttributeType::EcPoint])?;
    let point = attrs
        .into_iter()
        .find_map(|a| if let Attribute::EcPoint(p) = a { Some(p) } else { None })
        .ok_or_else(|| Error::Malformed("no CKA_EC_POINT".into()))?;
    PublicKey::from_sec1(unwrap_ec_point(&point))
        .map_err(|e| Error::Malformed(format!("CKA_EC_POINT: {e}")))
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point (PKCS#11 v2.40 §2.3.3); some
/// tokens return the bare point.
fn unwrap_ec_point(v: &[u8]) -> &[u8] {
    match v {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        [0x04, 0x21, rest @ ..] if rest.len() == 33 => rest,
        bare => bare,
    }
}

/// A private key's custody-relevant attributes and what is wrong with them.
#[derive(Debug, Clone, Serialize)]
pub struct KeyReport {
    /// `CKA_ID`, hex.
    pub id: String,
    /// `CKA_LABEL`.
    pub label: String,
    /// Boolean attributes by name, in audit order (absent when the token does not report one);
    /// a JSON object.
    #[serde(serialize_with = "as_map")]
    pub attributes: Vec<(&'static str, bool)>,
    /// Whether `CKA_VALUE` is refused, as it must be.
    pub value_unreadable: bool,
    /// Policy violations; empty for a well-kept key.
    pub problems: Vec<String>,
}

const AUDITED: [(AttributeType, &str, Option<bool>); 14] = [
    (AttributeType::Token, "token", Some(true)),
    (AttributeType::Private, "private", Some(true)),
    (AttributeType::Sensitive, "sensitive", Some(true)),
    (AttributeType::Extractable, "extractable", Some(false)),
    (AttributeType::AlwaysSensitive, "always-sensitive", Some(true)),
    (AttributeType::NeverExtractable, "never-extractable", Some(true)),
    (AttributeType::Local, "local", Some(true)),
    (AttributeType::Sign, "sign", Some(true)),
    (AttributeType::Decrypt, "decrypt", Some(false)),
    (AttributeType::Unwrap, "unwrap", Some(false)),
    (AttributeType::Derive, "derive", Some(false)),
    (AttributeType::Modifiable, "modifiable", None),
    (AttributeType::Copyable, "copyable", None),
    (AttributeType::Destroyable, "destroyable", None),
];

/// Audits a private key against the custody policy.
pub fn inspect(session: &Session, key: ObjectHandle) -> Result<KeyReport, Error> {
    let types: Vec<AttributeType> = AUDITED
        .iter()
        .map(|(t, _, _)| *t)
        .chain([AttributeType::Id, AttributeType::Label])
        .collect();
    let values = session.get_attributes(key, &types)?;
    let mut report = KeyReport {
        id: String::new(),
        label: String::new(),
        attributes: Vec::new(),
        value_unreadable: false,
        problems: Vec::new(),
    };
    for v in &values {
        match v {
            Attribute::Id(id) => report.id = hex::encode(id),
            Attribute::Label(l) => report.label = String::from_utf8_lossy(l).into_owned(),
            _ => {}
        }
    }
    for (ty, name, required) in AUDITED {
        let value = values.iter().find_map(|a| bool_of(a, ty));
        match (value, required) {
            (Some(v), Some(want)) if v != want => report.problems.push(format!("{name}={v}")),
            (None, Some(_)) => report.problems.push(format!("{name} not reported")),
            _ => {}
        }
        if let Some(v) = value {
            report.attributes.push((name, v));
        }
    }
    let value_info = session.get_attribute_info(key, &[AttributeType::Value])?;
    report.value_unreadable = matches!(
        value_info.first(),
        Some(AttributeInfo::Sensitive | AttributeInfo::TypeInvalid | AttributeInfo::Unavailable)
    );
    if !report.value_unreadable {
        report.problems.push("CKA_VALUE is readable".into());
    }
    Ok(report)
}

fn as_map<S: serde::Serializer>(pairs: &[(&'static str, bool)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (*k, *v)))
}

fn bool_of(a: &Attribute, ty: AttributeType) -> Option<bool> {
    if a.attribute_type() != ty {
        return None;
    }
    match a {
        Attribute::Token(b)
        | Attribute::Private(b)
        | Attribute::Sensitive(b)
        | Attribute::Extractable(b)
        | Attribute::AlwaysSensitive(b)
        | Attribute::NeverExtractable(b)
        | Attribute::Local(b)
        | Attribute::Sign(b)
        | Attribute::Decrypt(b)
        | Attribute::Unwrap(b)
        | Attribute::Derive(b)
        | Attribute::Modifiable(b)
        | Attribute::Copyable(b)
        | Attribute::Destroyable(b) => Some(*b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_points_are_unwrapped_from_der() {
        let point = [4u8; 65];
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&point);
        assert_eq!(unwrap_ec_point(&der), &point[..]);
        assert_eq!(unwrap_ec_point(&point), &point[..]);
    }
}

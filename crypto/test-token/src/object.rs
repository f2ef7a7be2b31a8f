//! Objects as attribute maps, the key-pair templates of `CKM_SM2_KEY_PAIR_GEN` and the rules of
//! C_SetAttributeValue (PKCS#11 v2.40 §4.4, §4.8, §4.9).

use std::collections::BTreeMap;

use cryptoki_sys::*;

use crate::error::Error;
use crate::mechanism::{CKK_SM2, CKM_SM2_KEY_PAIR_GEN, SM2_EC_PARAMS};

/// Attribute types and their values as the C ABI carries them (`CK_ULONG` in native byte order,
/// `CK_BBOOL` as one byte).
pub type Attributes = BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>>;
/// A template: attribute types and values in the caller's order.
pub type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

/// An object on the token or in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Every attribute except a private key's `CKA_VALUE`, which lives in [`Self::sealed`].
    pub attributes: Attributes,
    /// A private key's scalar, sealed with SM4-GCM under the token's master key.
    pub sealed: Option<Vec<u8>>,
    /// The session that owns a session object (`CKA_TOKEN` false).
    pub session: Option<CK_SESSION_HANDLE>,
}

/// The encoding of a `CK_ULONG` attribute.
pub fn ulong(value: CK_ULONG) -> Vec<u8> {
    value.to_ne_bytes().to_vec()
}

/// The encoding of a `CK_BBOOL` attribute.
pub fn bbool(value: bool) -> Vec<u8> {
    vec![if value { CK_TRUE } else { CK_FALSE }]
}

/// Boolean attributes a caller may give when generating a public key.
const PUBLIC_BOOLS: [CK_ATTRIBUTE_TYPE; 9] = [
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_ENCRYPT,
    CKA_WRAP,
];
/// Boolean attributes a caller may give when generating a private key.
const PRIVATE_BOOLS: [CK_ATTRIBUTE_TYPE; 14] = [
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_DECRYPT,
    CKA_UNWRAP,
    CKA_DERIVE,
    CKA_SENSITIVE,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_WRAP_WITH_TRUSTED,
];
/// Byte-string attributes a caller may give (and later change) on either key.
const FREE_BYTES: [CK_ATTRIBUTE_TYPE; 6] =
    [CKA_LABEL, CKA_ID, CKA_SUBJECT, CKA_START_DATE, CKA_END_DATE, CKA_ALLOWED_MECHANISMS];
/// Usage flags C_SetAttributeValue may change in either direction.
const USAGE_BOOLS: [CK_ATTRIBUTE_TYPE; 9] = [
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_DERIVE,
];

impl Object {
    /// A token or session object with `attributes`.
    pub fn new(attributes: Attributes) -> Self {
        Self { attributes, sealed: None, session: None }
    }

    /// The value of a `CK_ULONG` attribute.
    pub fn ulong(&self, kind: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
        let bytes = self.attributes.get(&kind)?;
        Some(CK_ULONG::from_ne_bytes(bytes.as_slice().try_into().ok()?))
    }

    /// The value of a `CK_BBOOL` attribute; absent counts as false.
    pub fn flag(&self, kind: CK_ATTRIBUTE_TYPE) -> bool {
        self.attributes.get(&kind).is_some_and(|v| v.first().is_some_and(|b| *b != CK_FALSE))
    }

    /// `CKA_CLASS`.
    pub fn class(&self) -> Option<CK_OBJECT_CLASS> {
        self.ulong(CKA_CLASS)
    }

    /// Whether this is an SM2 key of `class`.
    pub fn is_sm2(&self, class: CK_OBJECT_CLASS) -> bool {
        self.class() == Some(class) && self.ulong(CKA_KEY_TYPE) == Some(CKK_SM2)
    }

    /// `CKA_PRIVATE`: invisible unless the user is logged in.
    pub fn is_private(&self) -> bool {
        self.flag(CKA_PRIVATE)
    }

    /// `CKA_TOKEN`: persistent.
    pub fn is_token(&self) -> bool {
        self.flag(CKA_TOKEN)
    }

    /// Whether every attribute of `template` is present with exactly that value.
    pub fn matches(&self, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> bool {
        template.iter().all(|(kind, value)| self.attributes.get(kind) == Some(value))
    }

    /// Whether `CKA_ALLOWED_MECHANISMS` (absent or empty: all) permits `mechanism`.
    pub fn allows(&self, mechanism: CK_MECHANISM_TYPE) -> bool {
        match self.attributes.get(&CKA_ALLOWED_MECHANISMS) {
            None => true,
            Some(list) if list.is_empty() => true,
            Some(list) => list
                .chunks_exact(size_of::<CK_ULONG>())
                .filter_map(|c| c.try_into().ok().map(CK_ULONG::from_ne_bytes))
                .any(|m| m == mechanism),
        }
    }

    /// Checks a C_SetAttributeValue template against the rules and applies it all or nothing.
    ///
    /// `CKA_SENSITIVE` may only become true, `CKA_EXTRACTABLE` and `CKA_COPYABLE` only false
    /// (v2.40 §4.9 table 10 footnotes 11 and 12); usage flags, label, ID, subject, dates and
    /// allowed mechanisms may change; everything else is read-only.
    pub fn set(&mut self, template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Result<(), Error> {
        if !self.flag(CKA_MODIFIABLE) {
            return Err(Error::ActionProhibited);
        }
        for (kind, value) in template {
            if !self.attributes.contains_key(kind) {
                return Err(Error::AttributeTypeInvalid);
            }
            let is_bool = USAGE_BOOLS.contains(kind)
                || [CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_COPYABLE].contains(kind);
            if is_bool {
                check_bool(value)?;
            }
            check_bytes(*kind, value)?;
            let on = value.first().is_some_and(|b| *b != CK_FALSE);
            let allowed = match *kind {
                k if FREE_BYTES.contains(&k) => true,
                k if USAGE_BOOLS.contains(&k) => true,
                CKA_SENSITIVE => on || !self.flag(CKA_SENSITIVE),
                CKA_EXTRACTABLE | CKA_COPYABLE => !on || self.flag(*kind),
                _ => false,
            };
            if !allowed {
                return Err(Error::AttributeReadOnly);
            }
        }
        for (kind, value) in template {
            self.attributes.insert(*kind, value.clone());
        }
        Ok(())
    }
}

/// The shape of the byte-string attributes that have one: a list of `CK_MECHANISM_TYPE`s, a
/// `CK_DATE` (8 bytes) or empty.
fn check_bytes(kind: CK_ATTRIBUTE_TYPE, value: &[u8]) -> Result<(), Error> {
    let ok = match kind {
        CKA_ALLOWED_MECHANISMS => value.len() % size_of::<CK_ULONG>() == 0,
        CKA_START_DATE | CKA_END_DATE => value.is_empty() || value.len() == 8,
        _ => true,
    };
    if ok { Ok(()) } else { Err(Error::AttributeValueInvalid) }
}

fn check_bool(value: &[u8]) -> Result<(), Error> {
    if value.len() == size_of::<CK_BBOOL>() { Ok(()) } else { Err(Error::AttributeValueInvalid) }
}

/// The attributes common to both halves of an SM2 key pair.
fn key_defaults(class: CK_OBJECT_CLASS, private: bool, point: &[u8; 65]) -> Attributes {
    let mut a = Attributes::new();
    a.insert(CKA_CLASS, ulong(class));
    a.insert(CKA_KEY_TYPE, ulong(CKK_SM2));
    // v2.40 §4.4: CKA_TOKEN defaults to false (a session object).
    a.insert(CKA_TOKEN, bbool(false));
    a.insert(CKA_PRIVATE, bbool(private));
    a.insert(CKA_MODIFIABLE, bbool(true));
    a.insert(CKA_COPYABLE, bbool(true));
    a.insert(CKA_DESTROYABLE, bbool(true));
    a.insert(CKA_LABEL, Vec::new());
    a.insert(CKA_ID, Vec::new());
    a.insert(CKA_SUBJECT, Vec::new());
    a.insert(CKA_START_DATE, Vec::new());
    a.insert(CKA_END_DATE, Vec::new());
    a.insert(CKA_DERIVE, bbool(false));
    a.insert(CKA_LOCAL, bbool(true));
    a.insert(CKA_KEY_GEN_MECHANISM, ulong(CKM_SM2_KEY_PAIR_GEN));
    a.insert(CKA_ALLOWED_MECHANISMS, Vec::new());
    a.insert(CKA_EC_PARAMS, SM2_EC_PARAMS.to_vec());
    a.insert(CKA_EC_POINT, ec_point(point));
    a
}

/// `CKA_EC_POINT`: the DER OCTET STRING around the uncompressed point `04‖x‖y`.
pub fn ec_point(point: &[u8; 65]) -> Vec<u8> {
    let mut der = vec![0x04, 0x41];
    der.extend_from_slice(point);
    der
}

/// The attributes of a freshly generated SM2 key pair: defaults overridden by the templates.
///
/// Both halves carry `CKA_EC_PARAMS` and `CKA_EC_POINT` (readable on the private key too: a
/// profile property). `CKA_ALWAYS_SENSITIVE` and `CKA_NEVER_EXTRACTABLE` record the initial
/// `CKA_SENSITIVE` and `!CKA_EXTRACTABLE`; as those can only tighten later, they stay true
/// exactly when the key was never exposed (v2.40 §4.9).
pub fn sm2_key_pair(
    public_template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    private_template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    point: &[u8; 65],
) -> Result<(Attributes, Attributes), Error> {
    let mut public = key_defaults(CKO_PUBLIC_KEY, false, point);
    for kind in [CKA_VERIFY, CKA_VERIFY_RECOVER, CKA_ENCRYPT, CKA_WRAP, CKA_TRUSTED] {
        public.insert(kind, bbool(kind == CKA_VERIFY));
    }
    apply_template(&mut public, public_template, CKO_PUBLIC_KEY, &PUBLIC_BOOLS)?;

    let mut private = key_defaults(CKO_PRIVATE_KEY, true, point);
    for kind in [
        CKA_SIGN,
        CKA_SIGN_RECOVER,
        CKA_DECRYPT,
        CKA_UNWRAP,
        CKA_SENSITIVE,
        CKA_EXTRACTABLE,
        CKA_ALWAYS_AUTHENTICATE,
        CKA_WRAP_WITH_TRUSTED,
    ] {
        private.insert(kind, bbool(kind == CKA_SIGN || kind == CKA_SENSITIVE));
    }
    apply_template(&mut private, private_template, CKO_PRIVATE_KEY, &PRIVATE_BOOLS)?;
    if private.get(&CKA_ALWAYS_AUTHENTICATE) == Some(&bbool(true)) {
        // No context-specific login is implemented.
        return Err(Error::TemplateInconsistent);
    }
    let key = Object::new(private.clone());
    private.insert(CKA_ALWAYS_SENSITIVE, bbool(key.flag(CKA_SENSITIVE)));
    private.insert(CKA_NEVER_EXTRACTABLE, bbool(!key.flag(CKA_EXTRACTABLE)));
    Ok((public, private))
}

fn apply_template(
    attributes: &mut Attributes,
    template: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    class: CK_OBJECT_CLASS,
    bools: &[CK_ATTRIBUTE_TYPE],
) -> Result<(), Error> {
    for (kind, value) in template {
        match *kind {
            CKA_CLASS => {
                if value != &ulong(class) {
                    return Err(Error::TemplateInconsistent);
                }
            }
            CKA_KEY_TYPE => {
                if value != &ulong(CKK_SM2) {
                    return Err(Error::TemplateInconsistent);
                }
            }
            CKA_EC_PARAMS => {
                if value.as_slice() != SM2_EC_PARAMS {
                    return Err(Error::AttributeValueInvalid);
                }
            }
            k if FREE_BYTES.contains(&k) => {
                check_bytes(k, value)?;
                attributes.insert(k, value.clone());
            }
            k if bools.contains(&k) => {
                check_bool(value)?;
                attributes.insert(k, value.clone());
            }
            CKA_LOCAL
            | CKA_ALWAYS_SENSITIVE
            | CKA_NEVER_EXTRACTABLE
            | CKA_KEY_GEN_MECHANISM
            | CKA_EC_POINT
            | CKA_VALUE => return Err(Error::AttributeReadOnly),
            _ => return Err(Error::AttributeTypeInvalid),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POINT: [u8; 65] = [4; 65];

    fn pair(
        public: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
        private: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    ) -> (Object, Object) {
        let (a, b) = sm2_key_pair(public, private, &POINT).unwrap();
        (Object::new(a), Object::new(b))
    }

    #[test]
    fn defaults_keep_the_private_key_inside() {
        let (public, private) = pair(&[], &[]);
        assert!(public.is_sm2(CKO_PUBLIC_KEY) && private.is_sm2(CKO_PRIVATE_KEY));
        assert!(private.flag(CKA_SENSITIVE) && !private.flag(CKA_EXTRACTABLE));
        assert!(private.flag(CKA_ALWAYS_SENSITIVE) && private.flag(CKA_NEVER_EXTRACTABLE));
        assert!(private.flag(CKA_LOCAL) && private.flag(CKA_SIGN) && private.is_private());
        assert!(!private.flag(CKA_DECRYPT) && !private.is_token());
        assert!(public.flag(CKA_VERIFY) && !public.is_private());
        assert_eq!(private.attributes[&CKA_EC_POINT][..3], [0x04, 0x41, 0x04]);
        assert_eq!(public.attributes[&CKA_EC_PARAMS], SM2_EC_PARAMS);
        assert!(!private.attributes.contains_key(&CKA_VALUE));
    }

    #[test]
    fn an_extractable_key_is_never_marked_never_extractable() {
        let (_, private) =
            pair(&[], &[(CKA_EXTRACTABLE, bbool(true)), (CKA_SENSITIVE, bbool(false))]);
        assert!(!private.flag(CKA_ALWAYS_SENSITIVE) && !private.flag(CKA_NEVER_EXTRACTABLE));
    }

    #[test]
    fn templates_cannot_claim_computed_attributes_or_other_curves() {
        let bad: [(CK_ATTRIBUTE_TYPE, Vec<u8>); 5] = [
            (CKA_LOCAL, bbool(true)),
            (CKA_CLASS, ulong(CKO_SECRET_KEY)),
            (CKA_KEY_TYPE, ulong(CKK_EC)),
            (CKA_EC_PARAMS, vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]),
            (CKA_SIGN, vec![1, 0]),
        ];
        for attribute in bad {
            assert!(
                sm2_key_pair(&[], std::slice::from_ref(&attribute), &POINT).is_err(),
                "{attribute:?}"
            );
        }
        assert_eq!(
            sm2_key_pair(&[(CKA_MODULUS, vec![1])], &[], &POINT),
            Err(Error::AttributeTypeInvalid)
        );
    }

    #[test]
    fn set_only_tightens_key_protection() {
        let (_, mut private) = pair(&[], &[]);
        assert_eq!(private.set(&[(CKA_EXTRACTABLE, bbool(true))]), Err(Error::AttributeReadOnly));
        assert_eq!(private.set(&[(CKA_SENSITIVE, bbool(false))]), Err(Error::AttributeReadOnly));
        assert_eq!(private.set(&[(CKA_LOCAL, bbool(false))]), Err(Error::AttributeReadOnly));
        assert_eq!(private.set(&[(CKA_MODULUS, vec![])]), Err(Error::AttributeTypeInvalid));
        // All or nothing: the label is not changed when a later attribute is refused.
        let before = private.clone();
        let template = [(CKA_LABEL, b"x".to_vec()), (CKA_EXTRACTABLE, bbool(true))];
        assert!(private.set(&template).is_err());
        assert_eq!(private, before);
        private.set(&[(CKA_LABEL, b"new".to_vec()), (CKA_SIGN, bbool(false))]).unwrap();
        assert!(!private.flag(CKA_SIGN));
        private.set(&[(CKA_COPYABLE, bbool(false))]).unwrap();
        assert_eq!(private.set(&[(CKA_COPYABLE, bbool(true))]), Err(Error::AttributeReadOnly));
    }

    #[test]
    fn malformed_values_are_refused() {
        let (_, mut private) = pair(&[], &[]);
        let bad = [(CKA_ALLOWED_MECHANISMS, vec![1, 2, 3]), (CKA_START_DATE, vec![2, 0])];
        for attribute in bad {
            let one = std::slice::from_ref(&attribute);
            assert_eq!(private.set(one), Err(Error::AttributeValueInvalid));
            assert_eq!(sm2_key_pair(&[], one, &POINT), Err(Error::AttributeValueInvalid));
        }
        assert_eq!(private.set(&[(CKA_SIGN, vec![])]), Err(Error::AttributeValueInvalid));
    }

    #[test]
    fn unmodifiable_objects_refuse_every_change() {
        let (_, mut private) = pair(&[], &[(CKA_MODIFIABLE, bbool(false))]);
        assert_eq!(private.set(&[(CKA_LABEL, b"x".to_vec())]), Err(Error::ActionProhibited));
    }

    #[test]
    fn allowed_mechanisms_restrict_use() {
        let list = [0x8000_8104 as CK_ULONG].iter().flat_map(|m| m.to_ne_bytes()).collect();
        let (_, private) = pair(&[], &[(CKA_ALLOWED_MECHANISMS, list)]);
        assert!(private.allows(0x8000_8104) && !private.allows(0x8000_8102));
        let (_, open) = pair(&[], &[]);
        assert!(open.allows(0x8000_8102));
    }

    #[test]
    fn find_matches_exact_values_only() {
        let (public, _) = pair(&[(CKA_ID, vec![1, 2]), (CKA_LABEL, b"k".to_vec())], &[]);
        assert!(public.matches(&[(CKA_ID, vec![1, 2]), (CKA_CLASS, ulong(CKO_PUBLIC_KEY))]));
        assert!(!public.matches(&[(CKA_ID, vec![1])]));
        assert!(!public.matches(&[(CKA_VALUE, vec![])]));
        assert!(public.matches(&[]));
    }
}

//! The Sansec-style vendor codes the token implements (`docs/reference/pkcs11-sm.md`,
//! "Codes published by vendors": the Sansec column, as ChainMaker's `swpkcs11.h` has it).

use cryptoki_sys::{
    CK_FLAGS, CK_KEY_TYPE, CK_MECHANISM_INFO, CK_MECHANISM_TYPE, CKF_DIGEST, CKF_GENERATE_KEY_PAIR,
    CKF_HW, CKF_SIGN, CKF_VERIFY,
};

/// SM2 key type.
pub const CKK_SM2: CK_KEY_TYPE = 0x8000_0004;
/// SM2 key-pair generation.
pub const CKM_SM2_KEY_PAIR_GEN: CK_MECHANISM_TYPE = 0x8000_8001;
/// SM3-with-SM2, the token computes Z with ID `1234567812345678` and `e`; raw `r‖s` output.
pub const CKM_SM3_SM2: CK_MECHANISM_TYPE = 0x8000_8102;
/// As [`CKM_SM3_SM2`], DER `SEQUENCE { r, s }` output.
pub const CKM_SM3_SM2_DER: CK_MECHANISM_TYPE = 0x8000_8103;
/// Raw SM2 over a 32-byte `e = SM3(Z‖M)`; raw `r‖s` output.
pub const CKM_SM2_RAW: CK_MECHANISM_TYPE = 0x8000_8104;
/// SM3 digest.
pub const CKM_SM3: CK_MECHANISM_TYPE = 0x8000_9001;

/// DER of the SM2 curve OID 1.2.156.10197.1.301, the value of `CKA_EC_PARAMS`.
pub const SM2_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];

/// Every mechanism, in the order C_GetMechanismList reports them.
pub const ALL: [CK_MECHANISM_TYPE; 5] =
    [CKM_SM2_KEY_PAIR_GEN, CKM_SM2_RAW, CKM_SM3_SM2, CKM_SM3_SM2_DER, CKM_SM3];

/// A signature mechanism, parsed from its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMechanism {
    /// [`CKM_SM2_RAW`]: the input is `e`.
    Raw,
    /// [`CKM_SM3_SM2`]: the input is the message; raw output.
    Sm3Raw,
    /// [`CKM_SM3_SM2_DER`]: the input is the message; DER output.
    Sm3Der,
}

impl SignMechanism {
    /// The mechanism for a code, if it is a signature mechanism.
    pub fn from_code(code: CK_MECHANISM_TYPE) -> Option<Self> {
        match code {
            CKM_SM2_RAW => Some(Self::Raw),
            CKM_SM3_SM2 => Some(Self::Sm3Raw),
            CKM_SM3_SM2_DER => Some(Self::Sm3Der),
            _ => None,
        }
    }

    /// Whether the token hashes the message (and so accepts C_SignUpdate).
    pub fn hashes(self) -> bool {
        !matches!(self, Self::Raw)
    }
}

/// C_GetMechanismInfo's answer, or `None` for a code the token does not know.
pub fn info(code: CK_MECHANISM_TYPE) -> Option<CK_MECHANISM_INFO> {
    let (min, max, flags): (_, _, CK_FLAGS) = match code {
        CKM_SM2_KEY_PAIR_GEN => (256, 256, CKF_GENERATE_KEY_PAIR),
        CKM_SM2_RAW | CKM_SM3_SM2 | CKM_SM3_SM2_DER => (256, 256, CKF_SIGN | CKF_VERIFY),
        CKM_SM3 => (0, 0, CKF_DIGEST),
        _ => return None,
    };
    Some(CK_MECHANISM_INFO { ulMinKeySize: min, ulMaxKeySize: max, flags: flags | CKF_HW })
}

//! The C ABI itself, called through `C_GetFunctionList` of the linked library (in a child
//! process, like every scenario): null-buffer length queries, `CKR_BUFFER_TOO_SMALL`,
//! `CK_UNAVAILABLE_INFORMATION`, argument checks and the vendor mechanism list that `cryptoki`
//! would filter out.

// Calling the C ABI directly needs raw pointers.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::null_mut;

use cryptoki_sys::*;
use vpbox_sm::sm2::{PublicKey, Signature};
use vpbox_sm::sm3::Digest;

use crate::*;

fn functions() -> &'static CK_FUNCTION_LIST {
    let mut list = null_mut();
    // SAFETY: `list` is a valid out pointer.
    assert_eq!(unsafe { vpbox_test_token::C_GetFunctionList(&mut list) }, CKR_OK);
    // SAFETY: the module hands out a pointer to its static, never-written function list.
    unsafe { &*list }
}

fn attribute(kind: CK_ATTRIBUTE_TYPE, value: *mut c_void, len: usize) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE { type_: kind, pValue: value, ulValueLen: len as CK_ULONG }
}

#[test]
fn c_abi_follows_the_two_call_conventions() {
    let Some(c) = child() else {
        let name = "c_abi::c_abi_follows_the_two_call_conventions";
        return Scenario::new(name, "").run("main");
    };
    let f = functions();
    let so = SO_PIN.as_ptr().cast_mut();
    let user = USER_PIN.as_ptr().cast_mut();
    // SAFETY: every pointer passed below is null where the test means null, or points to a
    // live local of the size passed with it.
    unsafe {
        assert_eq!(f.C_GetInfo.unwrap()(&mut std::mem::zeroed()), CKR_CRYPTOKI_NOT_INITIALIZED);
        assert_eq!(f.C_Initialize.unwrap()(null_mut()), CKR_OK);
        assert_eq!(f.C_Initialize.unwrap()(null_mut()), CKR_CRYPTOKI_ALREADY_INITIALIZED);
        assert_eq!(f.C_GetInfo.unwrap()(null_mut()), CKR_ARGUMENTS_BAD);

        let mut count = 0;
        assert_eq!(f.C_GetSlotList.unwrap()(CK_TRUE, null_mut(), &mut count), CKR_OK);
        assert_eq!(count, 1);
        let (mut slot, mut none) = (0, 0);
        assert_eq!(f.C_GetSlotList.unwrap()(CK_TRUE, &mut slot, &mut none), CKR_BUFFER_TOO_SMALL);
        assert_eq!(none, 1);
        assert_eq!(f.C_GetSlotList.unwrap()(CK_TRUE, &mut slot, &mut count), CKR_OK);

        let mut mechanisms = [0; 8];
        let mut count = 8;
        let rv = f.C_GetMechanismList.unwrap()(slot, mechanisms.as_mut_ptr(), &mut count);
        assert_eq!(rv, CKR_OK);
        let want = [CKM_SM2_KEY_PAIR_GEN, CKM_SM2_RAW, CKM_SM3_SM2, CKM_SM3_SM2_DER, CKM_SM3];
        assert_eq!(mechanisms[..count as usize], want);

        let mut label = [b' '; 32];
        label[..3].copy_from_slice(b"abi");
        let rv = f.C_InitToken.unwrap()(slot, so, SO_PIN.len() as CK_ULONG, label.as_mut_ptr());
        assert_eq!(rv, CKR_OK);
        let mut session = 0;
        let flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
        let rv = f.C_OpenSession.unwrap()(slot, flags, null_mut(), None, &mut session);
        assert_eq!(rv, CKR_OK);
        assert_eq!(f.C_Login.unwrap()(session, CKU_SO, so, SO_PIN.len() as CK_ULONG), CKR_OK);
        assert_eq!(f.C_InitPIN.unwrap()(session, user, USER_PIN.len() as CK_ULONG), CKR_OK);
        assert_eq!(f.C_Logout.unwrap()(session), CKR_OK);
        assert_eq!(f.C_Login.unwrap()(session, CKU_USER, user, USER_PIN.len() as CK_ULONG), CKR_OK);

        let mut generate = CK_MECHANISM {
            mechanism: CKM_SM2_KEY_PAIR_GEN,
            pParameter: null_mut(),
            ulParameterLen: 0,
        };
        let mut yes = CK_TRUE;
        let yes_ptr = (&raw mut yes).cast::<c_void>();
        let mut public_template = [attribute(CKA_TOKEN, yes_ptr, 1)];
        let mut private_template = [attribute(CKA_TOKEN, yes_ptr, 1)];
        let (mut public, mut private) = (0, 0);
        let rv = f.C_GenerateKeyPair.unwrap()(
            session,
            &mut generate,
            public_template.as_mut_ptr(),
            1,
            private_template.as_mut_ptr(),
            1,
            &mut public,
            &mut private,
        );
        assert_eq!(rv, CKR_OK);

        // v2.40 §5.7: lengths for null values; unavailable information for the sensitive and
        // the unknown attribute, with either error returned; the other entries still filled.
        let mut query = [
            attribute(CKA_VALUE, null_mut(), 0),
            attribute(CKA_EC_POINT, null_mut(), 0),
            attribute(CKA_MODULUS, null_mut(), 0),
        ];
        let rv = f.C_GetAttributeValue.unwrap()(session, private, query.as_mut_ptr(), 3);
        assert!(rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID, "{rv:#x}");
        let lengths: Vec<_> = query.iter().map(|a| a.ulValueLen).collect();
        assert_eq!(lengths, [CK_UNAVAILABLE_INFORMATION, 67, CK_UNAVAILABLE_INFORMATION]);
        let mut small = [0u8; 10];
        let mut query = [attribute(CKA_EC_POINT, small.as_mut_ptr().cast(), small.len())];
        let rv = f.C_GetAttributeValue.unwrap()(session, private, query.as_mut_ptr(), 1);
        assert_eq!((rv, query[0].ulValueLen), (CKR_BUFFER_TOO_SMALL, CK_UNAVAILABLE_INFORMATION));
        let mut point = [0u8; 67];
        let mut query = [attribute(CKA_EC_POINT, point.as_mut_ptr().cast(), point.len())];
        assert_eq!(f.C_GetAttributeValue.unwrap()(session, private, query.as_mut_ptr(), 1), CKR_OK);
        let key = PublicKey::from_sec1(&point[2..]).unwrap();

        // v2.40 §5.2: C_Sign's length query and short buffer leave the operation active.
        let mut raw =
            CK_MECHANISM { mechanism: CKM_SM2_RAW, pParameter: null_mut(), ulParameterLen: 0 };
        assert_eq!(f.C_SignInit.unwrap()(session, &mut raw, private), CKR_OK);
        let mut e = [7u8; 32];
        let mut len = 0;
        let rv = f.C_Sign.unwrap()(session, e.as_mut_ptr(), 32, null_mut(), &mut len);
        assert_eq!((rv, len), (CKR_OK, 64));
        let mut signature = [0u8; 64];
        let mut short = 10;
        let rv = f.C_Sign.unwrap()(session, e.as_mut_ptr(), 32, signature.as_mut_ptr(), &mut short);
        assert_eq!((rv, short), (CKR_BUFFER_TOO_SMALL, 64));
        let rv = f.C_Sign.unwrap()(session, e.as_mut_ptr(), 32, signature.as_mut_ptr(), &mut len);
        assert_eq!((rv, len), (CKR_OK, 64));
        let signature = Signature::from_raw(&signature).unwrap();
        assert!(key.verify_digest(&Digest(e), &signature).is_valid());
        let rv = f.C_Sign.unwrap()(session, e.as_mut_ptr(), 32, null_mut(), &mut len);
        assert_eq!(rv, CKR_OPERATION_NOT_INITIALIZED);

        // Argument checks and unsupported functions.
        let rv = f.C_Sign.unwrap()(session, null_mut(), 32, null_mut(), &mut len);
        assert_eq!(rv, CKR_ARGUMENTS_BAD);
        let mut object = 0;
        let rv = f.C_CreateObject.unwrap()(session, null_mut(), 0, &mut object);
        assert_eq!(rv, CKR_FUNCTION_NOT_SUPPORTED);
        let rv = f.C_WrapKey.unwrap()(session, &mut raw, private, private, null_mut(), &mut len);
        assert_eq!(rv, CKR_FUNCTION_NOT_SUPPORTED);
        let mut info = std::mem::zeroed();
        assert_eq!(
            f.C_GetMechanismInfo.unwrap()(slot, CKM_ECDSA, &mut info),
            CKR_MECHANISM_INVALID
        );
        assert_eq!(
            f.C_GetSessionInfo.unwrap()(session + 1, &mut std::mem::zeroed()),
            CKR_SESSION_HANDLE_INVALID
        );

        assert_eq!(f.C_Finalize.unwrap()((&raw mut yes).cast()), CKR_ARGUMENTS_BAD);
        assert_eq!(f.C_Finalize.unwrap()(null_mut()), CKR_OK);
        assert_eq!(
            f.C_GetSessionInfo.unwrap()(session, &mut std::mem::zeroed()),
            CKR_CRYPTOKI_NOT_INITIALIZED
        );
    }
    c.done();
}

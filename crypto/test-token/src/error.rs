//! The one error type of the token: each variant is a PKCS#11 return value.

use cryptoki_sys::*;

macro_rules! errors {
    ($($variant:ident => $code:ident, $doc:literal;)*) => {
        /// Why a PKCS#11 call failed; [`Error::rv`] gives the `CKR_*` code the C ABI returns.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
        #[non_exhaustive]
        pub enum Error {
            $(
                #[doc = $doc]
                #[error("{} ({})", $doc, stringify!($code))]
                $variant,
            )*
        }

        impl Error {
            /// The `CKR_*` return value.
            pub fn rv(self) -> CK_RV {
                match self {
                    $(Self::$variant => $code,)*
                }
            }
        }
    };
}

errors! {
    GeneralError => CKR_GENERAL_ERROR, "the module is misconfigured or failed internally";
    ArgumentsBad => CKR_ARGUMENTS_BAD, "a required pointer is null or an argument is malformed";
    NotInitialized => CKR_CRYPTOKI_NOT_INITIALIZED, "C_Initialize has not been called";
    AlreadyInitialized => CKR_CRYPTOKI_ALREADY_INITIALIZED, "C_Initialize was already called";
    FunctionNotSupported => CKR_FUNCTION_NOT_SUPPORTED, "the token does not implement this function";
    SlotIdInvalid => CKR_SLOT_ID_INVALID, "no such slot";
    SessionHandleInvalid => CKR_SESSION_HANDLE_INVALID, "no such session (or the token was reset)";
    SessionCount => CKR_SESSION_COUNT, "too many open sessions";
    ParallelNotSupported => CKR_SESSION_PARALLEL_NOT_SUPPORTED, "CKF_SERIAL_SESSION is required";
    SessionReadOnly => CKR_SESSION_READ_ONLY, "the call needs a read-write session";
    SessionExists => CKR_SESSION_EXISTS, "sessions are open on the token";
    SessionReadOnlyExists => CKR_SESSION_READ_ONLY_EXISTS, "a read-only session prevents SO login";
    SoSessionExists => CKR_SESSION_READ_WRITE_SO_EXISTS, "the SO is logged in; no read-only session";
    TokenNotRecognized => CKR_TOKEN_NOT_RECOGNIZED, "the token is not initialised";
    UserNotLoggedIn => CKR_USER_NOT_LOGGED_IN, "the call needs a logged-in user";
    UserAlreadyLoggedIn => CKR_USER_ALREADY_LOGGED_IN, "that user is already logged in";
    AnotherUserLoggedIn => CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "the other user type is logged in";
    UserTypeInvalid => CKR_USER_TYPE_INVALID, "neither CKU_SO nor CKU_USER";
    UserPinNotInitialized => CKR_USER_PIN_NOT_INITIALIZED, "the SO has not set a user PIN";
    PinIncorrect => CKR_PIN_INCORRECT, "wrong PIN";
    PinLocked => CKR_PIN_LOCKED, "the user PIN is locked after too many wrong attempts";
    PinLenRange => CKR_PIN_LEN_RANGE, "PINs are 4 to 64 bytes";
    ObjectHandleInvalid => CKR_OBJECT_HANDLE_INVALID, "no such object (or not visible)";
    KeyHandleInvalid => CKR_KEY_HANDLE_INVALID, "no such key (or not visible)";
    KeyTypeInconsistent => CKR_KEY_TYPE_INCONSISTENT, "the key does not suit the mechanism";
    KeyFunctionNotPermitted => CKR_KEY_FUNCTION_NOT_PERMITTED, "the key's attributes forbid this use";
    AttributeTypeInvalid => CKR_ATTRIBUTE_TYPE_INVALID, "the object has no such attribute";
    AttributeSensitive => CKR_ATTRIBUTE_SENSITIVE, "the attribute is sensitive";
    AttributeReadOnly => CKR_ATTRIBUTE_READ_ONLY, "the attribute cannot be set (to that value)";
    AttributeValueInvalid => CKR_ATTRIBUTE_VALUE_INVALID, "the attribute value is malformed";
    TemplateIncomplete => CKR_TEMPLATE_INCOMPLETE, "the template lacks a required attribute";
    TemplateInconsistent => CKR_TEMPLATE_INCONSISTENT, "the template contradicts itself or the token";
    ActionProhibited => CKR_ACTION_PROHIBITED, "the object's attributes prohibit this action";
    MechanismInvalid => CKR_MECHANISM_INVALID, "unknown mechanism, or not for this function";
    MechanismParamInvalid => CKR_MECHANISM_PARAM_INVALID, "the mechanism takes no parameter";
    OperationActive => CKR_OPERATION_ACTIVE, "an operation of that kind is already active";
    OperationNotInitialized => CKR_OPERATION_NOT_INITIALIZED, "no operation of that kind is active";
    DataLenRange => CKR_DATA_LEN_RANGE, "the input has the wrong length for the mechanism";
    SignatureInvalid => CKR_SIGNATURE_INVALID, "the signature does not verify";
    SignatureLenRange => CKR_SIGNATURE_LEN_RANGE, "the signature has the wrong length or encoding";
    BufferTooSmall => CKR_BUFFER_TOO_SMALL, "the output buffer is too small";
    DeviceError => CKR_DEVICE_ERROR, "injected or real device failure";
    FunctionFailed => CKR_FUNCTION_FAILED, "the operation failed (storage or randomness)";
}

//! The C ABI: `C_GetFunctionList` and the functions it lists.
//!
//! Each function converts its raw arguments into safe Rust values (slices, templates, `Option`
//! for null output buffers), calls [`Module`] under one global mutex, and writes the results
//! back. Panics never cross the boundary: [`call`] catches them and answers
//! `CKR_GENERAL_ERROR`. Functions the token does not implement answer
//! `CKR_FUNCTION_NOT_SUPPORTED`.

// The C ABI of PKCS#11 passes raw pointers, so this module alone is allowed `unsafe` code. Every
// `unsafe` block states the caller contract (PKCS#11 v2.40 §5) it relies on.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::{Mutex, PoisonError};

use cryptoki_sys::*;

use crate::config::Config;
use crate::error::Error;
use crate::object::Template;
use crate::token::{Module, Output};

/// The module's state between C_Initialize and C_Finalize.
static MODULE: Mutex<Option<Module>> = Mutex::new(None);

/// Runs `f` on the initialised module under the lock, catching panics; sleeps for injected
/// latency after releasing the lock so that other sessions are not held up.
fn call(f: impl FnOnce(&mut Module) -> Result<(), Error>) -> CK_RV {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut guard = MODULE.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(module) = guard.as_mut() else {
            return (Error::NotInitialized.rv(), None);
        };
        let rv = match f(module) {
            Ok(()) => CKR_OK,
            Err(e) => e.rv(),
        };
        (rv, module.after_call())
    }));
    match result {
        Ok((rv, latency)) => {
            if let Some(latency) = latency {
                std::thread::sleep(latency);
            }
            rv
        }
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// `Err(ArgumentsBad)` for a null pointer.
fn non_null<T>(p: *mut T) -> Result<*mut T, Error> {
    if p.is_null() { Err(Error::ArgumentsBad) } else { Ok(p) }
}

fn to_usize(n: CK_ULONG) -> Result<usize, Error> {
    usize::try_from(n).map_err(|_| Error::ArgumentsBad)
}

fn to_ulong(n: usize) -> CK_ULONG {
    CK_ULONG::try_from(n).unwrap_or(CK_UNAVAILABLE_INFORMATION)
}

/// The caller's input bytes.
///
/// # Safety
/// `p` is null or points to `len` readable bytes that stay valid for the call.
unsafe fn input<'a>(p: *const CK_BYTE, len: CK_ULONG) -> Result<&'a [u8], Error> {
    let len = to_usize(len)?;
    if p.is_null() {
        return if len == 0 { Ok(&[]) } else { Err(Error::ArgumentsBad) };
    }
    // SAFETY: non-null, and the caller guarantees `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Writes `value` to an output argument.
///
/// # Safety
/// `p` is null or points to writable memory for one `T`.
unsafe fn put<T>(p: *mut T, value: T) -> Result<(), Error> {
    let p = non_null(p)?;
    // SAFETY: non-null and writable by the caller's contract; `write` does not read or drop the
    // old (possibly uninitialised) value.
    unsafe { p.write(value) };
    Ok(())
}

/// The capacity of an output buffer under the two-call convention: `None` for a null buffer.
///
/// # Safety
/// `len` is null or points to a readable `CK_ULONG`.
unsafe fn capacity(buf: *mut CK_BYTE, len: *mut CK_ULONG) -> Result<Option<usize>, Error> {
    let len = non_null(len)?;
    if buf.is_null() {
        return Ok(None);
    }
    // SAFETY: non-null and readable by the caller's contract.
    Ok(Some(to_usize(unsafe { len.read() })?))
}

/// Hands an [`Output`] to the caller's buffer and length.
///
/// # Safety
/// `len` points to a writable `CK_ULONG`; `buf`, when the output is [`Output::Bytes`], points
/// to at least the capacity the caller declared, which [`Module`] checked against.
unsafe fn give(output: Output, buf: *mut CK_BYTE, len: *mut CK_ULONG) -> Result<(), Error> {
    match output {
        Output::Length(n) => {
            // SAFETY: as this function's contract.
            unsafe { put(len, to_ulong(n)) }
        }
        Output::TooSmall(n) => {
            // SAFETY: as this function's contract.
            unsafe { put(len, to_ulong(n))? };
            Err(Error::BufferTooSmall)
        }
        Output::Bytes(bytes) => {
            let buf = non_null(buf)?;
            // SAFETY: the buffer holds at least the declared capacity, which is at least
            // `bytes.len()`; a Rust vector never overlaps the caller's buffer.
            unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len()) };
            // SAFETY: as this function's contract.
            unsafe { put(len, to_ulong(bytes.len())) }
        }
    }
}

/// Reads a template's types and values.
///
/// # Safety
/// `p` is null (with `n` = 0) or points to `n` readable `CK_ATTRIBUTE`s, each of whose `pValue`
/// is null or points to `ulValueLen` readable bytes.
unsafe fn template(p: *const CK_ATTRIBUTE, n: CK_ULONG) -> Result<Template, Error> {
    // SAFETY: as this function's contract.
    let attributes = unsafe { array(p, n)? };
    attributes
        .iter()
        .map(|a| {
            // SAFETY: as this function's contract.
            let value = unsafe { input(a.pValue.cast::<CK_BYTE>(), a.ulValueLen)? };
            Ok((a.type_, value.to_vec()))
        })
        .collect()
}

/// A caller's array.
///
/// # Safety
/// `p` is null (with `n` = 0) or points to `n` readable `T`s valid for the call.
unsafe fn array<'a, T>(p: *const T, n: CK_ULONG) -> Result<&'a [T], Error> {
    let n = to_usize(n)?;
    if p.is_null() {
        return if n == 0 { Ok(&[]) } else { Err(Error::ArgumentsBad) };
    }
    // SAFETY: non-null, and the caller guarantees `n` readable elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Reads a mechanism: its type and parameter bytes.
///
/// # Safety
/// `p` is null or points to a readable `CK_MECHANISM` whose parameter is null or points to
/// `ulParameterLen` readable bytes.
unsafe fn mechanism(p: *const CK_MECHANISM) -> Result<(CK_MECHANISM_TYPE, Vec<u8>), Error> {
    if p.is_null() {
        return Err(Error::ArgumentsBad);
    }
    // SAFETY: non-null and readable by the caller's contract.
    let m = unsafe { p.read() };
    // SAFETY: as this function's contract.
    let parameter = unsafe { input(m.pParameter.cast::<CK_BYTE>(), m.ulParameterLen)? };
    Ok((m.mechanism, parameter.to_vec()))
}

/// Writes a list under the two-call convention (C_GetSlotList, C_GetMechanismList).
///
/// # Safety
/// `len` points to a readable and writable `CK_ULONG`; `p` is null or points to `*len`
/// writable elements.
unsafe fn give_list<T: Copy>(items: &[T], p: *mut T, len: *mut CK_ULONG) -> Result<(), Error> {
    let len = non_null(len)?;
    if p.is_null() {
        // SAFETY: as this function's contract.
        return unsafe { put(len, to_ulong(items.len())) };
    }
    // SAFETY: non-null and readable by the caller's contract.
    let room = to_usize(unsafe { len.read() })?;
    // SAFETY: as this function's contract.
    unsafe { put(len, to_ulong(items.len()))? };
    if room < items.len() {
        return Err(Error::BufferTooSmall);
    }
    // SAFETY: `p` has room for `room` ≥ `items.len()` elements; no overlap with our slice.
    unsafe { ptr::copy_nonoverlapping(items.as_ptr(), p, items.len()) };
    Ok(())
}

/// The initialisation arguments are accepted with or without mutex callbacks: the module always
/// uses its own OS lock, which v2.40 §5.4 allows when `CKF_OS_LOCKING_OK` is set and which is
/// harmless otherwise (every call is serialised either way).
unsafe extern "C" fn c_initialize(args: *mut c_void) -> CK_RV {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if !args.is_null() {
            // SAFETY: a non-null argument points to a CK_C_INITIALIZE_ARGS (v2.40 §5.4).
            let args = unsafe { args.cast::<CK_C_INITIALIZE_ARGS>().read() };
            if !args.pReserved.is_null() {
                return CKR_ARGUMENTS_BAD;
            }
        }
        let mut guard = MODULE.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_some() {
            return CKR_CRYPTOKI_ALREADY_INITIALIZED;
        }
        let Ok(config) = Config::from_env() else {
            return CKR_GENERAL_ERROR;
        };
        match Module::load(config) {
            Ok(module) => {
                *guard = Some(module);
                CKR_OK
            }
            Err(_) => CKR_GENERAL_ERROR,
        }
    }));
    result.unwrap_or(CKR_GENERAL_ERROR)
}

unsafe extern "C" fn c_finalize(reserved: *mut c_void) -> CK_RV {
    if !reserved.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let result = catch_unwind(|| {
        let mut guard = MODULE.lock().unwrap_or_else(PoisonError::into_inner);
        // Dropping the module zeroizes the decrypted keys.
        match guard.take() {
            Some(_) => CKR_OK,
            None => CKR_CRYPTOKI_NOT_INITIALIZED,
        }
    });
    result.unwrap_or(CKR_GENERAL_ERROR)
}

unsafe extern "C" fn c_get_info(info: *mut CK_INFO) -> CK_RV {
    // SAFETY: `info` is null or writable (v2.40 §5.4 C_GetInfo).
    call(|_| unsafe { put(info, Module::info()) })
}

unsafe extern "C" fn c_get_slot_list(
    _token_present: CK_BBOOL,
    list: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: `count` is readable and writable, `list` null or `*count` long (§5.5).
    call(|m| unsafe { give_list(&m.slot_list(), list, count) })
}

unsafe extern "C" fn c_get_slot_info(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    // SAFETY: `info` is null or writable.
    call(|m| unsafe { put(info, m.slot_info(slot)?) })
}

unsafe extern "C" fn c_get_token_info(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    // SAFETY: `info` is null or writable.
    call(|m| unsafe { put(info, m.token_info(slot)?) })
}

unsafe extern "C" fn c_get_mechanism_list(
    slot: CK_SLOT_ID,
    list: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    // SAFETY: `count` is readable and writable, `list` null or `*count` long.
    call(|m| unsafe { give_list(m.mechanisms(slot)?, list, count) })
}

unsafe extern "C" fn c_get_mechanism_info(
    slot: CK_SLOT_ID,
    kind: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    // SAFETY: `info` is null or writable.
    call(|m| unsafe { put(info, m.mechanism_info(slot, kind)?) })
}

unsafe extern "C" fn c_init_token(
    slot: CK_SLOT_ID,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
    label: *mut CK_UTF8CHAR,
) -> CK_RV {
    call(|m| {
        // SAFETY: the PIN is `pin_len` readable bytes; the label is 32 bytes (§5.6).
        let (pin, label) = unsafe { (input(pin, pin_len)?, input(non_null(label)?, 32)?) };
        let label = std::str::from_utf8(label).map_err(|_| Error::ArgumentsBad)?;
        m.init_token(slot, pin, label)
    })
}

unsafe extern "C" fn c_init_pin(
    session: CK_SESSION_HANDLE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    // SAFETY: the PIN is `pin_len` readable bytes.
    call(|m| m.init_pin(session, unsafe { input(pin, pin_len)? }))
}

unsafe extern "C" fn c_set_pin(
    session: CK_SESSION_HANDLE,
    old: *mut CK_UTF8CHAR,
    old_len: CK_ULONG,
    new: *mut CK_UTF8CHAR,
    new_len: CK_ULONG,
) -> CK_RV {
    call(|m| {
        // SAFETY: both PINs are readable for their lengths.
        let (old, new) = unsafe { (input(old, old_len)?, input(new, new_len)?) };
        m.set_pin(session, old, new)
    })
}

unsafe extern "C" fn c_open_session(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _application: *mut c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    call(|m| {
        non_null(session)?;
        let handle = m.open_session(slot, flags)?;
        // SAFETY: `session` is non-null and writable (§5.6 C_OpenSession).
        unsafe { put(session, handle) }
    })
}

unsafe extern "C" fn c_close_session(session: CK_SESSION_HANDLE) -> CK_RV {
    call(|m| m.close_session(session))
}

unsafe extern "C" fn c_close_all_sessions(slot: CK_SLOT_ID) -> CK_RV {
    call(|m| m.close_all_sessions(slot))
}

unsafe extern "C" fn c_get_session_info(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    // SAFETY: `info` is null or writable.
    call(|m| unsafe { put(info, m.session_info(session)?) })
}

unsafe extern "C" fn c_login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    // SAFETY: the PIN is `pin_len` readable bytes.
    call(|m| m.login(session, user, unsafe { input(pin, pin_len)? }))
}

unsafe extern "C" fn c_logout(session: CK_SESSION_HANDLE) -> CK_RV {
    call(|m| m.logout(session))
}

unsafe extern "C" fn c_destroy_object(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    call(|m| m.destroy_object(session, object))
}

/// Fills each attribute per v2.40 §5.7 C_GetAttributeValue: a null `pValue` gets the length;
/// a sensitive, unknown or too-small entry gets `CK_UNAVAILABLE_INFORMATION` and its error,
/// and the other entries are still processed.
unsafe extern "C" fn c_get_attribute_value(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    attributes: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    call(|m| {
        let n = to_usize(count)?;
        if attributes.is_null() && n != 0 {
            return Err(Error::ArgumentsBad);
        }
        let attributes = if n == 0 {
            &mut []
        } else {
            // SAFETY: non-null; the caller passes `count` writable attributes.
            unsafe { std::slice::from_raw_parts_mut(attributes, n) }
        };
        let kinds: Vec<_> = attributes.iter().map(|a| a.type_).collect();
        let values = m.attribute_values(session, object, &kinds)?;
        let mut result = Ok(());
        for (attribute, value) in attributes.iter_mut().zip(values) {
            let value = match value {
                Ok(v) => v,
                Err(e) => {
                    attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    result = Err(e);
                    continue;
                }
            };
            if attribute.pValue.is_null() {
                attribute.ulValueLen = to_ulong(value.len());
            } else if to_usize(attribute.ulValueLen)? < value.len() {
                attribute.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                result = Err(Error::BufferTooSmall);
            } else {
                // SAFETY: `pValue` holds `ulValueLen` ≥ `value.len()` writable bytes.
                unsafe {
                    ptr::copy_nonoverlapping(
                        value.as_ptr(),
                        attribute.pValue.cast::<u8>(),
                        value.len(),
                    );
                };
                attribute.ulValueLen = to_ulong(value.len());
            }
        }
        result
    })
}

unsafe extern "C" fn c_set_attribute_value(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    attributes: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    call(|m| {
        // SAFETY: `count` readable attributes with readable values.
        let template = unsafe { template(attributes, count)? };
        m.set_attribute_values(session, object, &template)
    })
}

unsafe extern "C" fn c_find_objects_init(
    session: CK_SESSION_HANDLE,
    attributes: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    call(|m| {
        // SAFETY: `count` readable attributes with readable values.
        let template = unsafe { template(attributes, count)? };
        m.find_init(session, &template)
    })
}

unsafe extern "C" fn c_find_objects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    call(|m| {
        non_null(objects)?;
        non_null(count)?;
        let found = m.find(session, to_usize(max)?)?;
        // SAFETY: `objects` has room for `max` ≥ `found.len()` handles; `count` is writable.
        unsafe {
            ptr::copy_nonoverlapping(found.as_ptr(), objects, found.len());
            put(count, to_ulong(found.len()))
        }
    })
}

unsafe extern "C" fn c_find_objects_final(session: CK_SESSION_HANDLE) -> CK_RV {
    call(|m| m.find_final(session))
}

unsafe extern "C" fn c_digest_init(session: CK_SESSION_HANDLE, mech: *mut CK_MECHANISM) -> CK_RV {
    call(|m| {
        // SAFETY: `mech` is null or a readable mechanism.
        let (kind, parameter) = unsafe { mechanism(mech)? };
        m.digest_init(session, kind, &parameter)
    })
}

unsafe extern "C" fn c_digest(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    call(|m| {
        // SAFETY: input readable for its length; output per the two-call convention.
        unsafe {
            let output =
                m.digest(session, input(data, data_len)?, capacity(digest, digest_len)?)?;
            give(output, digest, digest_len)
        }
    })
}

unsafe extern "C" fn c_digest_update(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> CK_RV {
    // SAFETY: input readable for its length.
    call(|m| m.digest_update(session, unsafe { input(data, data_len)? }))
}

unsafe extern "C" fn c_digest_final(
    session: CK_SESSION_HANDLE,
    digest: *mut CK_BYTE,
    digest_len: *mut CK_ULONG,
) -> CK_RV {
    call(|m| {
        // SAFETY: output per the two-call convention.
        unsafe {
            let output = m.digest_final(session, capacity(digest, digest_len)?)?;
            give(output, digest, digest_len)
        }
    })
}

unsafe extern "C" fn c_sign_init(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    call(|m| {
        // SAFETY: `mech` is null or a readable mechanism.
        let (kind, parameter) = unsafe { mechanism(mech)? };
        m.sign_init(session, kind, &parameter, key)
    })
}

unsafe extern "C" fn c_sign(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    call(|m| {
        // SAFETY: input readable for its length; output per the two-call convention.
        unsafe {
            let capacity = capacity(signature, signature_len)?;
            let output = m.sign(session, input(data, data_len)?, capacity)?;
            give(output, signature, signature_len)
        }
    })
}

unsafe extern "C" fn c_sign_update(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> CK_RV {
    // SAFETY: input readable for its length.
    call(|m| m.sign_update(session, unsafe { input(data, data_len)? }))
}

unsafe extern "C" fn c_sign_final(
    session: CK_SESSION_HANDLE,
    signature: *mut CK_BYTE,
    signature_len: *mut CK_ULONG,
) -> CK_RV {
    call(|m| {
        // SAFETY: output per the two-call convention.
        unsafe {
            let output = m.sign_final(session, capacity(signature, signature_len)?)?;
            give(output, signature, signature_len)
        }
    })
}

unsafe extern "C" fn c_verify_init(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    call(|m| {
        // SAFETY: `mech` is null or a readable mechanism.
        let (kind, parameter) = unsafe { mechanism(mech)? };
        m.verify_init(session, kind, &parameter, key)
    })
}

unsafe extern "C" fn c_verify(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    signature: *mut CK_BYTE,
    signature_len: CK_ULONG,
) -> CK_RV {
    call(|m| {
        // SAFETY: both inputs readable for their lengths.
        let (data, signature) =
            unsafe { (input(data, data_len)?, input(signature, signature_len)?) };
        m.verify(session, data, signature)
    })
}

unsafe extern "C" fn c_verify_update(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
) -> CK_RV {
    // SAFETY: input readable for its length.
    call(|m| m.verify_update(session, unsafe { input(data, data_len)? }))
}

unsafe extern "C" fn c_verify_final(
    session: CK_SESSION_HANDLE,
    signature: *mut CK_BYTE,
    signature_len: CK_ULONG,
) -> CK_RV {
    // SAFETY: input readable for its length.
    call(|m| m.verify_final(session, unsafe { input(signature, signature_len)? }))
}

unsafe extern "C" fn c_generate_key_pair(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    public_template: *mut CK_ATTRIBUTE,
    public_count: CK_ULONG,
    private_template: *mut CK_ATTRIBUTE,
    private_count: CK_ULONG,
    public_key: *mut CK_OBJECT_HANDLE,
    private_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    call(|m| {
        non_null(public_key)?;
        non_null(private_key)?;
        // SAFETY: the mechanism and templates are readable (§5.14 C_GenerateKeyPair).
        let (kind, public, private) = unsafe {
            let (kind, _) = mechanism(mech)?;
            (
                kind,
                template(public_template, public_count)?,
                template(private_template, private_count)?,
            )
        };
        let (public, private) = m.generate_key_pair(session, kind, &public, &private)?;
        // SAFETY: both handle pointers are non-null and writable.
        unsafe {
            put(public_key, public)?;
            put(private_key, private)
        }
    })
}

unsafe extern "C" fn c_generate_random(
    session: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    call(|m| {
        let bytes = m.random(session, to_usize(len)?)?;
        if bytes.is_empty() {
            return Ok(());
        }
        let out = non_null(out)?;
        // SAFETY: `out` holds `len` writable bytes.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len()) };
        Ok(())
    })
}

/// Defines functions that answer `CKR_FUNCTION_NOT_SUPPORTED` (after checking initialisation,
/// as v2.40 §5.1 orders the return values).
macro_rules! not_supported {
    ($($name:ident($($arg:ty),*);)*) => {
        $(
            unsafe extern "C" fn $name($(_: $arg),*) -> CK_RV {
                call(|_| Err(Error::FunctionNotSupported))
            }
        )*
    };
}

not_supported! {
    c_get_operation_state(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    c_set_operation_state(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE);
    c_create_object(CK_SESSION_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    c_copy_object(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    c_get_object_size(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, *mut CK_ULONG);
    c_encrypt_init(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    c_encrypt(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_encrypt_update(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_encrypt_final(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    c_decrypt_init(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    c_decrypt(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_decrypt_update(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_decrypt_final(CK_SESSION_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    c_digest_key(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
    c_sign_recover_init(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    c_sign_recover(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_verify_recover_init(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE);
    c_verify_recover(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_digest_encrypt_update(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_decrypt_digest_update(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_sign_encrypt_update(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_decrypt_verify_update(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_BYTE, *mut CK_ULONG);
    c_generate_key(CK_SESSION_HANDLE, *mut CK_MECHANISM, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    c_wrap_key(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, *mut CK_BYTE, *mut CK_ULONG);
    c_unwrap_key(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, *mut CK_BYTE, CK_ULONG, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    c_derive_key(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE, *mut CK_ATTRIBUTE, CK_ULONG, *mut CK_OBJECT_HANDLE);
    c_seed_random(CK_SESSION_HANDLE, *mut CK_BYTE, CK_ULONG);
    c_wait_for_slot_event(CK_FLAGS, *mut CK_SLOT_ID, *mut c_void);
}

/// v2.40 §5.16: legacy functions that always answer `CKR_FUNCTION_NOT_PARALLEL`.
unsafe extern "C" fn c_get_function_status(_: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

unsafe extern "C" fn c_cancel_function(_: CK_SESSION_HANDLE) -> CK_RV {
    CKR_FUNCTION_NOT_PARALLEL
}

static FUNCTION_LIST: CK_FUNCTION_LIST = CK_FUNCTION_LIST {
    version: CK_VERSION { major: 2, minor: 40 },
    C_Initialize: Some(c_initialize),
    C_Finalize: Some(c_finalize),
    C_GetInfo: Some(c_get_info),
    C_GetFunctionList: Some(C_GetFunctionList),
    C_GetSlotList: Some(c_get_slot_list),
    C_GetSlotInfo: Some(c_get_slot_info),
    C_GetTokenInfo: Some(c_get_token_info),
    C_GetMechanismList: Some(c_get_mechanism_list),
    C_GetMechanismInfo: Some(c_get_mechanism_info),
    C_InitToken: Some(c_init_token),
    C_InitPIN: Some(c_init_pin),
    C_SetPIN: Some(c_set_pin),
    C_OpenSession: Some(c_open_session),
    C_CloseSession: Some(c_close_session),
    C_CloseAllSessions: Some(c_close_all_sessions),
    C_GetSessionInfo: Some(c_get_session_info),
    C_GetOperationState: Some(c_get_operation_state),
    C_SetOperationState: Some(c_set_operation_state),
    C_Login: Some(c_login),
    C_Logout: Some(c_logout),
    C_CreateObject: Some(c_create_object),
    C_CopyObject: Some(c_copy_object),
    C_DestroyObject: Some(c_destroy_object),
    C_GetObjectSize: Some(c_get_object_size),
    C_GetAttributeValue: Some(c_get_attribute_value),
    C_SetAttributeValue: Some(c_set_attribute_value),
    C_FindObjectsInit: Some(c_find_objects_init),
    C_FindObjects: Some(c_find_objects),
    C_FindObjectsFinal: Some(c_find_objects_final),
    C_EncryptInit: Some(c_encrypt_init),
    C_Encrypt: Some(c_encrypt),
    C_EncryptUpdate: Some(c_encrypt_update),
    C_EncryptFinal: Some(c_encrypt_final),
    C_DecryptInit: Some(c_decrypt_init),
    C_Decrypt: Some(c_decrypt),
    C_DecryptUpdate: Some(c_decrypt_update),
    C_DecryptFinal: Some(c_decrypt_final),
    C_DigestInit: Some(c_digest_init),
    C_Digest: Some(c_digest),
    C_DigestUpdate: Some(c_digest_update),
    C_DigestKey: Some(c_digest_key),
    C_DigestFinal: Some(c_digest_final),
    C_SignInit: Some(c_sign_init),
    C_Sign: Some(c_sign),
    C_SignUpdate: Some(c_sign_update),
    C_SignFinal: Some(c_sign_final),
    C_SignRecoverInit: Some(c_sign_recover_init),
    C_SignRecover: Some(c_sign_recover),
    C_VerifyInit: Some(c_verify_init),
    C_Verify: Some(c_verify),
    C_VerifyUpdate: Some(c_verify_update),
    C_VerifyFinal: Some(c_verify_final),
    C_VerifyRecoverInit: Some(c_verify_recover_init),
    C_VerifyRecover: Some(c_verify_recover),
    C_DigestEncryptUpdate: Some(c_digest_encrypt_update),
    C_DecryptDigestUpdate: Some(c_decrypt_digest_update),
    C_SignEncryptUpdate: Some(c_sign_encrypt_update),
    C_DecryptVerifyUpdate: Some(c_decrypt_verify_update),
    C_GenerateKey: Some(c_generate_key),
    C_GenerateKeyPair: Some(c_generate_key_pair),
    C_WrapKey: Some(c_wrap_key),
    C_UnwrapKey: Some(c_unwrap_key),
    C_DeriveKey: Some(c_derive_key),
    C_SeedRandom: Some(c_seed_random),
    C_GenerateRandom: Some(c_generate_random),
    C_GetFunctionStatus: Some(c_get_function_status),
    C_CancelFunction: Some(c_cancel_function),
    C_WaitForSlotEvent: Some(c_wait_for_slot_event),
};

/// The module's one exported symbol: hands out the function list.
///
/// # Safety
/// `list` must be null or point to writable memory for one pointer (PKCS#11 v2.40 §5.4).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    // The list is never written through: PKCS#11 callers treat it as read-only, and the C
    // signature merely lacks the `const`.
    let pointer = ptr::addr_of!(FUNCTION_LIST).cast_mut();
    // SAFETY: `list` is null (refused by `put`) or writable by the caller's contract.
    match unsafe { put(list, pointer) } {
        Ok(()) => CKR_OK,
        Err(e) => e.rv(),
    }
}

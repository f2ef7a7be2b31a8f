//! What a TLS peer sends that the SM profile's own code reads (rustls parses the rest): a key
//! share for curveSM2, before the peer is authenticated (an uncompressed SM2 point, or
//! refused), and an SM4-GCM record (opened only with its tag, or refused). Nothing panics,
//! whatever the bytes; a record sealed under the key opens to what was sealed.
#![no_main]
use rustls::crypto::cipher::{InboundOpaqueMessage, OutboundChunks, OutboundPlainMessage};
use rustls::{ContentType, ProtocolVersion};
use vpbox_tls::kx::CURVE_SM2;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A key share: ours is fresh each time, the peer's is the input.
    if let Ok(ours) = CURVE_SM2.start() {
        if let Ok(secret) = ours.complete(data) {
            assert_eq!(data.len(), 65, "only an uncompressed point is taken");
            assert_eq!(secret.secret_bytes().len(), 32);
        }
    }
    let (mut encrypter, mut decrypter) = vpbox_tls::suite::records(&[7u8; 16], [9u8; 12]);
    let seq = u64::from(data.first().copied().unwrap_or(0));
    // The input as a record: refused (a forged tag is not to be found by chance).
    let mut record = data.to_vec();
    let msg =
        InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut record);
    assert!(decrypter.decrypt(msg, seq).is_err(), "an unsealed record is refused");
    // The input sealed, then opened: what was sealed.
    let plain = OutboundPlainMessage {
        typ: ContentType::ApplicationData,
        version: ProtocolVersion::TLSv1_2,
        payload: OutboundChunks::Single(data),
    };
    let sealed = encrypter.encrypt(plain, seq).expect("sealed").encode();
    let mut body = sealed[5..].to_vec();
    let msg =
        InboundOpaqueMessage::new(ContentType::ApplicationData, ProtocolVersion::TLSv1_2, &mut body);
    let opened = decrypter.decrypt(msg, seq).expect("opened");
    assert_eq!(opened.payload, data);
});

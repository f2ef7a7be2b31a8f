//! SM4-GCM: GCM (NIST SP 800-38D) with SM4 as its block cipher, 96-bit nonces and 128-bit tags
//! (RFC 8998's `TLS_SM4_GCM_SM3` records, sealed files).
//!
//! **Why not `aes-gcm`'s generic `AesGcm<Sm4Encrypt>`**, which this replaced: its counter mode
//! hands the cipher a fixed number of blocks at a time and the rest one by one, so a cipher
//! that is fast only on many blocks at once (the bitsliced one, [`super::sliced`], on 128)
//! would run the up to 127 blocks left of every message one at a time. Here each message's
//! keystream is made 128 blocks at a time, then four at a time ([`super::block`]), and a last
//! block of 16 bytes or less alone, as are the tag's block `E(J0)` and GHASH's key
//! `H = E(0¹²⁸)`: on a short record, a group of four would cost three blocks more. GHASH is
//! the `ghash` crate's (carry-less multiplication where the CPU has it), the tag is compared
//! in constant time (`subtle`), and the tests hold it to `AesGcm<Sm4Encrypt>` on random keys,
//! nonces, data and lengths around every boundary, to RFC 8998's vector, and to Tongsuo
//! through the TLS interop tests.

use aead::consts::{U12, U16};
use aead::inout::InOutBuf;
use aead::{AeadCore, AeadInOut, Nonce, Tag, TagPosition};
use cbc::cipher::{Block, BlockCipherEncrypt, Key, KeyInit, KeySizeUser};
use core::fmt;
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::block::{Sm4Encrypt, counter_blocks};
use super::sliced;

/// The longest plaintext (SP 800-38D: 2³⁹ − 256 bits), where the 32-bit block counter would
/// come round to the tag's block.
const P_MAX: u64 = (1 << 36) - 32;
/// The longest associated data (SP 800-38D allows 2⁶⁴ − 1 bits).
const A_MAX: u64 = (1 << 61) - 1;

/// SM4-GCM with a 96-bit nonce and a 128-bit tag, under one key.
#[derive(Clone)]
pub struct Sm4Gcm {
    cipher: Sm4Encrypt,
    ghash: GHash,
}

impl fmt::Debug for Sm4Gcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm4Gcm(..)")
    }
}

impl KeySizeUser for Sm4Gcm {
    type KeySize = U16;
}

impl KeyInit for Sm4Gcm {
    fn new(key: &Key<Self>) -> Self {
        let cipher = Sm4Encrypt::new(key);
        // H = E_K(0¹²⁸), GHASH's key.
        let mut h = Block::<Sm4Encrypt>::default();
        cipher.encrypt_block(&mut h);
        let ghash = GHash::new(&h);
        h.zeroize();
        Self { cipher, ghash }
    }
}

impl AeadCore for Sm4Gcm {
    type NonceSize = U12;
    type TagSize = U16;
    const TAG_POSITION: TagPosition = TagPosition::Postfix;
}

impl Sm4Gcm {
    /// XORs the keystream from the counter block `nonce ‖ counter` on into `buf`: 128 blocks at a
    /// time, then four at a time, then a last block alone. The counter is GCM's `inc32`: its
    /// low 32 bits, wrapping.
    fn apply_keystream(&self, nonce: &[u8; 12], mut counter: u32, mut buf: InOutBuf<'_, '_, u8>) {
        if buf.len() >= sliced::BYTES {
            let mut masks = sliced::key_masks(self.cipher.round_keys());
            let mut ks = [0u8; sliced::BYTES];
            while buf.len() >= sliced::BYTES {
                counter = counter_blocks(nonce, counter, &mut ks);
                sliced::encrypt(&masks, &mut ks);
                let (mut head, rest) = buf.split_at(sliced::BYTES);
                head.xor_in2out(&ks);
                buf = rest;
            }
            ks.zeroize();
            masks.zeroize();
        }
        while buf.len() > 16 {
            let mut ks = self.cipher.counter_blocks4(nonce, counter);
            counter = counter.wrapping_add(4);
            let n = buf.len().min(ks.len());
            let (mut head, rest) = buf.split_at(n);
            head.xor_in2out(&ks[..n]);
            buf = rest;
            ks.zeroize();
        }
        // A last block alone: a group of four costs more than one block.
        if !buf.is_empty() {
            let mut ks = counter_block(nonce, counter);
            self.cipher.encrypt_block(&mut ks);
            let n = buf.len();
            buf.xor_in2out(&ks[..n]);
            ks.zeroize();
        }
    }

    /// The tag: GHASH of the associated data and the ciphertext (each padded to whole blocks)
    /// and their lengths in bits, XORed with the keystream block of counter 1.
    fn tag(&self, nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> [u8; 16] {
        let mut ghash = self.ghash.clone();
        ghash.update_padded(aad);
        ghash.update_padded(ciphertext);
        let mut lengths = ghash::Block::default();
        lengths[..8].copy_from_slice(&(aad.len() as u64 * 8).to_be_bytes());
        lengths[8..].copy_from_slice(&(ciphertext.len() as u64 * 8).to_be_bytes());
        ghash.update(&[lengths]);
        let mut tag = ghash.finalize();
        // One block alone: on a short record, three more of a group of four would cost more.
        let mut mask = counter_block(nonce, 1);
        self.cipher.encrypt_block(&mut mask);
        for (t, m) in tag.iter_mut().zip(mask) {
            *t ^= m;
        }
        mask.zeroize();
        tag.into()
    }
}

/// The counter block `nonce ‖ counter`.
fn counter_block(nonce: &[u8; 12], counter: u32) -> Block<Sm4Encrypt> {
    let mut block = Block::<Sm4Encrypt>::default();
    counter_blocks(nonce, counter, &mut block);
    block
}

impl AeadInOut for Sm4Gcm {
    fn encrypt_inout_detached(
        &self,
        nonce: &Nonce<Self>,
        associated_data: &[u8],
        mut buffer: InOutBuf<'_, '_, u8>,
    ) -> aead::Result<Tag<Self>> {
        if buffer.len() as u64 > P_MAX || associated_data.len() as u64 > A_MAX {
            return Err(aead::Error);
        }
        let nonce: &[u8; 12] = nonce.as_ref();
        // The data's counter blocks start at 2 (1 is the tag's).
        self.apply_keystream(nonce, 2, buffer.reborrow());
        Ok(self.tag(nonce, associated_data, buffer.get_out()).into())
    }

    fn decrypt_inout_detached(
        &self,
        nonce: &Nonce<Self>,
        associated_data: &[u8],
        buffer: InOutBuf<'_, '_, u8>,
        tag: &Tag<Self>,
    ) -> aead::Result<()> {
        if buffer.len() as u64 > P_MAX || associated_data.len() as u64 > A_MAX {
            return Err(aead::Error);
        }
        let nonce: &[u8; 12] = nonce.as_ref();
        let expected = self.tag(nonce, associated_data, buffer.get_in());
        if bool::from(expected.ct_eq(tag.as_slice())) {
            self.apply_keystream(nonce, 2, buffer);
            Ok(())
        } else {
            Err(aead::Error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aead::{Aead, Payload};
    use aes_gcm::AesGcm;
    use proptest::prelude::*;

    /// The generic GCM over the same block cipher: the reference.
    type Generic = AesGcm<Sm4Encrypt, U12>;

    /// Lengths around every boundary of the keystream's groups: none, part of a block, one
    /// group of four, one group of 128 and the rest, several of each.
    /// (16,385: a whole TLS record's plaintext and its content type, eight groups of 128 and a
    /// lone byte.)
    const LENGTHS: [usize; 17] =
        [0, 1, 15, 16, 17, 63, 64, 65, 80, 2047, 2048, 2049, 2112, 4096, 4111, 16385, 16401];

    #[test]
    fn every_length_agrees_with_the_generic_gcm() {
        let key = [0x3cu8; 16];
        let (ours, generic) = (Sm4Gcm::new(&key.into()), Generic::new(&key.into()));
        let aad = b"record header";
        for len in LENGTHS {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let nonce = [len as u8; 12].into();
            let sealed = ours.encrypt(&nonce, Payload { msg: &msg, aad }).unwrap();
            let theirs = generic.encrypt(&nonce, Payload { msg: &msg, aad }).unwrap();
            assert_eq!(sealed, theirs, "{len} bytes");
            let opened = ours.decrypt(&nonce, Payload { msg: &sealed, aad }).unwrap();
            assert_eq!(opened, msg, "{len} bytes");
            for flip in [0, sealed.len() / 2, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[flip] ^= 0x80;
                let msg = bad.as_slice();
                assert!(ours.decrypt(&nonce, Payload { msg, aad }).is_err(), "{len} bytes, {flip}");
            }
            let other = Payload { msg: &sealed, aad: b"record headeR" };
            assert!(ours.decrypt(&nonce, other).is_err(), "{len} bytes, other data");
        }
    }

    /// A ciphertext whose tag fails is not decrypted: the output buffer (apart, or the input
    /// itself) is left as it was.
    #[test]
    fn nothing_is_decrypted_before_the_tag_is_checked() {
        let ours = Sm4Gcm::new(&[1u8; 16].into());
        let nonce = [2u8; 12].into();
        for len in [5usize, 3000] {
            let mut sealed = vec![0x5au8; len];
            let mut tag =
                ours.encrypt_inout_detached(&nonce, b"", sealed.as_mut_slice().into()).unwrap();
            tag[0] ^= 1;
            let mut out = vec![0xeeu8; len];
            let apart = InOutBuf::new(&sealed, &mut out).unwrap();
            assert!(ours.decrypt_inout_detached(&nonce, b"", apart, &tag).is_err());
            assert!(out.iter().all(|b| *b == 0xee), "{len} bytes: the output apart");
            let before = sealed.clone();
            let in_place = sealed.as_mut_slice().into();
            assert!(ours.decrypt_inout_detached(&nonce, b"", in_place, &tag).is_err());
            assert_eq!(sealed, before, "{len} bytes: in place");
        }
    }

    /// The 32-bit counter wraps within a message as GCM's `inc32` does (the nonce's other
    /// bytes unchanged), in the 128-block groups, the groups of four and a last block alone.
    #[test]
    fn the_counter_wraps_in_every_group() {
        let key = [7u8; 16];
        let ours = Sm4Gcm::new(&key.into());
        let cipher = Sm4Encrypt::new(&key.into());
        let nonce = [9u8; 12];
        for start in [u32::MAX - 130, u32::MAX - 2, u32::MAX] {
            for len in [16usize, 64, 80, 2048 + 64 + 16] {
                let mut data = vec![0u8; len];
                ours.apply_keystream(&nonce, start, InOutBuf::from(data.as_mut_slice()));
                for (i, block) in data.chunks_exact(16).enumerate() {
                    let mut want = Block::<Sm4Encrypt>::default();
                    want[..12].copy_from_slice(&nonce);
                    want[12..].copy_from_slice(&start.wrapping_add(i as u32).to_be_bytes());
                    cipher.encrypt_block(&mut want);
                    assert_eq!(block, want.as_slice(), "from {start}, block {i} of {len}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any key, nonce, associated data and message (up to three groups of 128 blocks and a
        /// part), sealed and opened as the generic GCM does.
        #[test]
        fn any_message_agrees_with_the_generic_gcm(
            key in any::<[u8; 16]>(),
            nonce in any::<[u8; 12]>(),
            aad in prop::collection::vec(any::<u8>(), 0..80),
            msg in prop::collection::vec(any::<u8>(), 0..3 * 2048 + 100),
        ) {
            let (ours, generic) = (Sm4Gcm::new(&key.into()), Generic::new(&key.into()));
            let payload = Payload { msg: &msg, aad: &aad };
            let sealed = ours.encrypt(&nonce.into(), payload).unwrap();
            let payload = Payload { msg: &msg, aad: &aad };
            prop_assert_eq!(&sealed, &generic.encrypt(&nonce.into(), payload).unwrap());
            let payload = Payload { msg: &sealed, aad: &aad };
            prop_assert_eq!(ours.decrypt(&nonce.into(), payload).unwrap(), msg);
        }
    }
}

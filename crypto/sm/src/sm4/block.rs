//! The SM4 block function (GB/T 32907-2016), encryption only, four blocks side by side: what
//! SM4-GCM ([`super::Sm4Gcm`]) runs on a message's blocks after its groups of 128
//! ([`super::sliced`]), and on a short message's all.
//!
//! **Why not RustCrypto's `sm4`**: it encrypts one block at a time, each round waiting on the
//! S-box look-ups of the one before, so a counter mode's independent blocks run no faster than
//! a chain. Here four blocks go through each round together, so their look-ups overlap. Same
//! table, same side channel: the S-box is the standard's 256 bytes, looked up by byte as the
//! crate does (four cache lines; no larger "T-table", which would be faster and spread the
//! look-ups over sixteen). The bitsliced version has none, and runs a long message's bulk.
//!
//! **The S-box is computed, not typed in**: the standard's table is the affine map `A·x ⊕ 0xD3`
//! (`A` the circulant matrix of the row `11100101`), then inversion in GF(2⁸) modulo
//! `x⁸+x⁷+x⁶+x⁵+x⁴+x²+1`, then the same affine map again — its published algebraic structure.
//! The tests check every byte of it against the `sm4` crate through whole encryptions, and the
//! standard's own examples.

use cbc::cipher::consts::{U4, U16};
use cbc::cipher::{
    AlgorithmName, Block, BlockCipherEncBackend, BlockCipherEncClosure, BlockCipherEncrypt,
    BlockSizeUser, InOut, Key, KeyInit, KeySizeUser, ParBlocks, ParBlocksSizeUser,
};
use core::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `a·b` in GF(2⁸) modulo SM4's polynomial (`0x1F5`).
pub(super) const fn gf_mul(mut a: u32, mut b: u32) -> u32 {
    let mut r = 0;
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        a <<= 1;
        if a & 0x100 != 0 {
            a ^= 0x1F5;
        }
        b >>= 1;
    }
    r
}

/// `a⁻¹` in GF(2⁸) (`a²⁵⁴`), with `0 ↦ 0`.
const fn gf_inv(a: u32) -> u32 {
    let (mut r, mut base, mut e) = (1, a, 254);
    while e != 0 {
        if e & 1 != 0 {
            r = gf_mul(r, base);
        }
        base = gf_mul(base, base);
        e >>= 1;
    }
    if a == 0 { 0 } else { r }
}

/// The rows of the affine map's matrix; bit `j` of `x` (from the least significant) is the
/// vector's `j`-th component, and a row's `j`-th bit from the left multiplies it.
const AFFINE_ROWS: [u32; 8] = [
    0b1110_0101,
    0b1111_0010,
    0b0111_1001,
    0b1011_1100,
    0b0101_1110,
    0b0010_1111,
    0b1001_0111,
    0b1100_1011,
];

pub(super) const fn affine(x: u32) -> u32 {
    let mut y = 0;
    let mut i = 0;
    while i < 8 {
        let mut bit = 0;
        let mut j = 0;
        while j < 8 {
            bit ^= (AFFINE_ROWS[i] >> (7 - j)) & (x >> j) & 1;
            j += 1;
        }
        y |= bit << i;
        i += 1;
    }
    y ^ AFFINE_CONSTANT
}

/// The affine map's constant `c`.
pub(super) const AFFINE_CONSTANT: u32 = 0xD3;

const fn sbox() -> [u8; 256] {
    let mut s = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        s[x] = affine(gf_inv(affine(x as u32))) as u8;
        x += 1;
    }
    s
}

/// The S-box: one table at one address (a `static`), four cache lines.
pub(super) static SBOX: [u8; 256] = sbox();

/// The system parameter `FK`.
const FK: [u32; 4] = [0xA3B1_BAC6, 0x56AA_3350, 0x677D_9197, 0xB270_22DC];

/// `τ`: the S-box on each byte.
#[inline(always)]
fn tau(a: u32) -> u32 {
    let [b0, b1, b2, b3] = a.to_be_bytes();
    u32::from_be_bytes([
        SBOX[usize::from(b0)],
        SBOX[usize::from(b1)],
        SBOX[usize::from(b2)],
        SBOX[usize::from(b3)],
    ])
}

/// The round function's `T = L ∘ τ`.
#[inline(always)]
fn t(a: u32) -> u32 {
    let b = tau(a);
    b ^ b.rotate_left(2) ^ b.rotate_left(10) ^ b.rotate_left(18) ^ b.rotate_left(24)
}

/// The key schedule's `T' = L' ∘ τ`.
fn t_key(a: u32) -> u32 {
    let b = tau(a);
    b ^ b.rotate_left(13) ^ b.rotate_left(23)
}

/// `CK_i`: byte `j` is `(4i + j)·7 mod 256`.
fn ck(i: usize) -> u32 {
    u32::from_be_bytes(core::array::from_fn(|j| ((4 * i + j) * 7 % 256) as u8))
}

/// SM4 for encryption: its 32 round keys, zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Sm4Encrypt {
    rk: [u32; 32],
}

impl fmt::Debug for Sm4Encrypt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm4Encrypt(..)")
    }
}

impl AlgorithmName for Sm4Encrypt {
    fn write_alg_name(f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SM4")
    }
}

impl KeySizeUser for Sm4Encrypt {
    type KeySize = U16;
}

impl KeyInit for Sm4Encrypt {
    fn new(key: &Key<Self>) -> Self {
        let mut k: [u32; 4] = core::array::from_fn(|i| {
            u32::from_be_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]]) ^ FK[i]
        });
        let mut rk = [0u32; 32];
        for (i, rk) in rk.iter_mut().enumerate() {
            k[i % 4] ^= t_key(k[(i + 1) % 4] ^ k[(i + 2) % 4] ^ k[(i + 3) % 4] ^ ck(i));
            *rk = k[i % 4];
        }
        k.zeroize();
        Self { rk }
    }
}

impl BlockSizeUser for Sm4Encrypt {
    type BlockSize = U16;
}

impl ParBlocksSizeUser for Sm4Encrypt {
    type ParBlocksSize = U4;
}

impl BlockCipherEncrypt for Sm4Encrypt {
    fn encrypt_with_backend(&self, f: impl BlockCipherEncClosure<BlockSize = Self::BlockSize>) {
        f.call(self)
    }
}

impl Sm4Encrypt {
    /// Encrypts `N` blocks, each round over all of them before the next.
    #[inline(always)]
    fn encrypt_n<const N: usize>(&self, blocks: [&[u8]; N]) -> [[u32; 4]; N] {
        let mut x: [[u32; 4]; N] = core::array::from_fn(|j| {
            core::array::from_fn(|w| {
                let b = &blocks[j][4 * w..4 * w + 4];
                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
            })
        });
        for rk in self.rk.chunks_exact(4) {
            for s in &mut x {
                s[0] ^= t(s[1] ^ s[2] ^ s[3] ^ rk[0]);
            }
            for s in &mut x {
                s[1] ^= t(s[2] ^ s[3] ^ s[0] ^ rk[1]);
            }
            for s in &mut x {
                s[2] ^= t(s[3] ^ s[0] ^ s[1] ^ rk[2]);
            }
            for s in &mut x {
                s[3] ^= t(s[0] ^ s[1] ^ s[2] ^ rk[3]);
            }
        }
        x
    }
}

impl Sm4Encrypt {
    /// The 32 round keys (for [`super::sliced`]).
    pub(super) fn round_keys(&self) -> &[u32; 32] {
        &self.rk
    }

    /// The keystream of GCM's counter blocks `nonce ‖ counter` to `nonce ‖ counter + 3` (the
    /// counter wrapping in its 32 bits), encrypted side by side.
    pub(super) fn counter_blocks4(&self, nonce: &[u8; 12], counter: u32) -> [u8; 64] {
        let mut blocks = [0u8; 64];
        counter_blocks(nonce, counter, &mut blocks);
        let x = self.encrypt_n([&blocks[..16], &blocks[16..32], &blocks[32..48], &blocks[48..]]);
        for (x, block) in x.iter().zip(blocks.chunks_exact_mut(16)) {
            store(x, block);
        }
        blocks
    }
}

/// Fills `out`, whole 16-byte blocks, with GCM's counter blocks `nonce ‖ counter`,
/// `nonce ‖ counter + 1`, … (the counter wrapping in its 32 bits, SP 800-38D's `inc32`): the
/// counter after the last.
pub(super) fn counter_blocks(nonce: &[u8; 12], mut counter: u32, out: &mut [u8]) -> u32 {
    debug_assert!(out.len() % 16 == 0, "whole blocks");
    for block in out.chunks_exact_mut(16) {
        block[..12].copy_from_slice(nonce);
        block[12..].copy_from_slice(&counter.to_be_bytes());
        counter = counter.wrapping_add(1);
    }
    counter
}

/// The output block of a final state: its words in reverse order (`R`).
fn store(x: &[u32; 4], out: &mut [u8]) {
    for (w, chunk) in out.chunks_exact_mut(4).enumerate() {
        chunk.copy_from_slice(&x[3 - w].to_be_bytes());
    }
}

impl BlockCipherEncBackend for Sm4Encrypt {
    #[inline]
    fn encrypt_block(&self, mut block: InOut<'_, '_, Block<Self>>) {
        let [x] = self.encrypt_n([&block.get_in()[..]]);
        store(&x, block.get_out());
    }

    #[inline]
    fn encrypt_par_blocks(&self, mut blocks: InOut<'_, '_, ParBlocks<Self>>) {
        let x = {
            let input = blocks.get_in();
            self.encrypt_n([&input[0][..], &input[1][..], &input[2][..], &input[3][..]])
        };
        let out = blocks.get_out();
        for (x, block) in x.iter().zip(out.iter_mut()) {
            store(x, block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::Array;
    use proptest::prelude::*;

    const STD: [u8; 16] = super::super::STANDARD_EXAMPLE;

    /// GB/T 32907-2016 Appendix A, examples 1 and 2 (one block; the same block encrypted
    /// 1,000,000 times): this cipher one block at a time and four side by side, and the `sm4`
    /// crate's (CBC's).
    #[test]
    fn the_standards_examples() {
        let (ours, crate_) = (Sm4Encrypt::new(&STD.into()), sm4::Sm4::new(&STD.into()));
        let (mut one, mut theirs) = (Array::from(STD), Array::from(STD));
        BlockCipherEncrypt::encrypt_block(&ours, &mut one);
        BlockCipherEncrypt::encrypt_block(&crate_, &mut theirs);
        for b in [one, theirs] {
            assert_eq!(hex::encode(b), "681edf34d206965e86b3e94f536e4246");
        }
        let mut four = [Array::from(STD); 4];
        let mut crates = Array::from(STD);
        for _ in 0..1_000_000 {
            ours.encrypt_blocks(&mut four);
            BlockCipherEncrypt::encrypt_block(&crate_, &mut crates);
        }
        for b in four.into_iter().chain([crates]) {
            assert_eq!(hex::encode(b), "595298c7c6fd271f0402f804c33d3f66");
        }
    }

    /// Every S-box entry: the byte `x` in each position of the round's input, through the
    /// crate's cipher and this one (a wrong entry changes the block).
    #[test]
    fn every_sbox_entry_agrees_with_the_sm4_crate() {
        let key = [0x5a; 16];
        let (ours, theirs) = (Sm4Encrypt::new(&key.into()), sm4::Sm4::new(&key.into()));
        for x in 0..=255u8 {
            for at in 0..16 {
                let mut block = [0u8; 16];
                block[at] = x;
                let (mut a, mut b) = (Array::from(block), Array::from(block));
                BlockCipherEncrypt::encrypt_block(&ours, &mut a);
                BlockCipherEncrypt::encrypt_block(&theirs, &mut b);
                assert_eq!(a, b, "byte {x:#04x} at {at}");
            }
        }
    }

    proptest! {
        /// Any key, any blocks (1 to 9: whole groups of four and the rest one by one), as the
        /// crate encrypts them.
        #[test]
        fn blocks_agree_with_the_sm4_crate(
            key in any::<[u8; 16]>(),
            blocks in prop::collection::vec(any::<[u8; 16]>(), 1..10),
        ) {
            let (ours, theirs) = (Sm4Encrypt::new(&key.into()), sm4::Sm4::new(&key.into()));
            let mut a: Vec<_> = blocks.iter().map(|b| Array::from(*b)).collect();
            let mut b = a.clone();
            ours.encrypt_blocks(&mut a);
            theirs.encrypt_blocks(&mut b);
            prop_assert_eq!(a, b);
        }
    }
}

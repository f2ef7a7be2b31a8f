//! SM4 on 128 blocks at once, bitsliced: what SM4-GCM's counter mode ([`super::Sm4Gcm`]) runs
//! on a long message's bulk (a TLS record of up to 16 KiB is eight such groups); the rest, and
//! short messages, go through [`super::block`]'s four blocks side by side.
//!
//! **Bitsliced**: the 128 blocks' bit `b` of state word `w` is one 128-bit value (`u64x2`,
//! one SSE2 register; bit `k` of it is block `k`'s), so every operation acts on all the blocks.
//! The round's S-box is computed by logic gates, not looked up: no memory access here depends
//! on a secret, so this part has no cache side channel (the byte table of [`super::block`],
//! which still runs the rest of every message, has one over four cache lines), and the
//! rotations of the linear map `L` cost nothing (they renumber values).
//!
//! **The S-box as gates.** SM4's S-box is `A·(A·x ⊕ c)⁻¹ ⊕ c`, the inverse taken in GF(2⁸)
//! modulo `x⁸+x⁷+x⁶+x⁵+x⁴+x²+1` ([`super::block`]'s docs). Inversion is cheap as gates in a
//! *tower* field GF(((2²)²)²), where an inverse is a few products over GF(2⁴) and GF(2²)
//! (each a handful of ANDs and XORs) and an inverse in GF(2²) is a squaring, which is linear.
//! Every field with 256 elements is the same field up to a linear map, so the S-box is `A`, a
//! change into the tower, the tower's inverse, a change back and `A`: the two changes with `A`
//! folded in are 8×8 bit matrices, derived below at compile time (a root `β` of SM4's
//! polynomial in the tower gives the map `xⁱ ↦ βⁱ`). The tests check all 256 entries against
//! the table, and whole encryptions against [`super::block`] and the standard's example.
//!
//! About 1,100 gates a round for the 128 blocks, against about 25 operations a round for each
//! block with the table; `cargo bench -p vpbox-sm --bench crypto` measures SM4-GCM.

use wide::u64x2;
use zeroize::Zeroize;

/// Blocks encrypted at once.
pub(super) const LANES: usize = 128;
/// Bytes encrypted at once.
pub(super) const BYTES: usize = LANES * 16;

/// Bit `k` of a value is block `k`'s bit.
type L = u64x2;

const ZERO: L = u64x2::ZERO;

// ---- The tower field, on bytes, for the derivation (compile time) and the tests. ----------
//
// GF(2²) = GF(2)[W]/(W²+W+1): bit 1 is W's coefficient. GF(2⁴) = GF(2²)[Z]/(Z²+Z+W): bits 2–3
// are Z's coefficient. GF(2⁸) = GF(2⁴)[Y]/(Y²+Y+ν), ν found below: bits 4–7 are Y's.

const fn gf4_mul(a: u8, b: u8) -> u8 {
    let (a1, a0, b1, b0) = (a >> 1 & 1, a & 1, b >> 1 & 1, b & 1);
    (((a1 & b1) ^ (a1 & b0) ^ (a0 & b1)) << 1) | ((a1 & b1) ^ (a0 & b0))
}

/// `W`: `Z² + Z + W` is irreducible over GF(2²) (no `z` has `z² + z = W`).
const MU: u8 = 0b10;

const fn gf16_mul(a: u8, b: u8) -> u8 {
    let (ah, al, bh, bl) = (a >> 2, a & 3, b >> 2, b & 3);
    let low = gf4_mul(al, bl);
    ((gf4_mul(ah ^ al, bh ^ bl) ^ low) << 2) | (gf4_mul(MU, gf4_mul(ah, bh)) ^ low)
}

/// The least `ν` for which `Y² + Y + ν` has no root in GF(2⁴): the tower's top polynomial.
const NU: u8 = {
    let mut nu = 1;
    loop {
        let mut y = 0;
        while y < 16 && gf16_mul(y, y) ^ y != nu {
            y += 1;
        }
        if y == 16 {
            break nu;
        }
        nu += 1;
    }
};

const fn tower_mul(a: u8, b: u8) -> u8 {
    let (ah, al, bh, bl) = (a >> 4, a & 15, b >> 4, b & 15);
    let low = gf16_mul(al, bl);
    ((gf16_mul(ah ^ al, bh ^ bl) ^ low) << 4) | (gf16_mul(NU, gf16_mul(ah, bh)) ^ low)
}

/// SM4's field polynomial `x⁸+x⁷+x⁶+x⁵+x⁴+x²+1`.
const SM4_POLY: u32 = 0x1F5;

/// A root `β` of SM4's polynomial in the tower (the least).
const BETA: u8 = {
    let mut beta = 2u8;
    loop {
        let mut r = 0u8;
        let mut bit = 9;
        while bit > 0 {
            bit -= 1;
            r = tower_mul(r, beta) ^ ((SM4_POLY >> bit) & 1) as u8;
        }
        if r == 0 {
            break beta;
        }
        beta += 1;
    }
};

/// `βⁱ`, `i < 8`: the images of SM4's field basis `xⁱ`.
const BETA_POWERS: [u8; 8] = {
    let mut p = [1u8; 8];
    let mut i = 1;
    while i < 8 {
        p[i] = tower_mul(p[i - 1], BETA);
        i += 1;
    }
    p
};

/// SM4's field → the tower: `Σ bᵢxⁱ ↦ Σ bᵢβⁱ` (a field isomorphism, linear).
const fn to_tower(x: u8) -> u8 {
    let mut t = 0;
    let mut i = 0;
    while i < 8 {
        if x >> i & 1 == 1 {
            t ^= BETA_POWERS[i];
        }
        i += 1;
    }
    t
}

/// The tower → SM4's field (searched: 256 candidates).
const fn from_tower(t: u8) -> u8 {
    let mut x = 0u8;
    while to_tower(x) != t {
        x += 1;
    }
    x
}

/// The linear part of SM4's affine map `A` (the map without its constant).
const fn a_linear(x: u8) -> u8 {
    (super::block::affine(x as u32) ^ super::block::AFFINE_CONSTANT) as u8
}

/// The rows of the matrix of the linear map `f` on `N` bits: bit `j` of row `i` is bit `i` of
/// `f(eⱼ)`.
const fn rows<const N: usize>(cols: [u8; N]) -> [u8; N] {
    let mut r = [0u8; N];
    let mut i = 0;
    while i < N {
        let mut j = 0;
        while j < N {
            r[i] |= (cols[j] >> i & 1) << j;
            j += 1;
        }
        i += 1;
    }
    r
}

/// Into the tower with `A` first: `x ↦ to_tower(A·x)`; its constant is `to_tower(c)`.
const IN_ROWS: [u8; 8] = {
    let mut cols = [0u8; 8];
    let mut j = 0;
    while j < 8 {
        cols[j] = to_tower(a_linear(1 << j));
        j += 1;
    }
    rows(cols)
};
const IN_CONSTANT: u8 = to_tower(super::block::AFFINE_CONSTANT as u8);

/// Out of the tower, then `A`: `t ↦ A·from_tower(t)`; its constant is `c`.
const OUT_ROWS: [u8; 8] = {
    let mut cols = [0u8; 8];
    let mut j = 0;
    while j < 8 {
        cols[j] = a_linear(from_tower(1 << j));
        j += 1;
    }
    rows(cols)
};
const OUT_CONSTANT: u8 = super::block::AFFINE_CONSTANT as u8;

/// The rows of `h ↦ k·h²` on GF(2⁴) (squaring is linear in characteristic 2).
const fn square_times(k: u8) -> [u8; 4] {
    let mut cols = [0u8; 4];
    let mut j = 0;
    while j < 4 {
        cols[j] = gf16_mul(k, gf16_mul(1 << j, 1 << j));
        j += 1;
    }
    rows(cols)
}

/// `h ↦ ν·h²` on GF(2⁴).
const NU_SQUARE_ROWS: [u8; 4] = square_times(NU);

/// `l ↦ l²` on GF(2⁴).
const SQUARE_ROWS: [u8; 4] = square_times(1);

// ---- The same arithmetic as gates on 128 lanes. --------------------------------------------

/// `y = M·x ⊕ k` for the matrix of `rows` (constant: the branches fold away when inlined).
#[inline(always)]
fn linear<const N: usize>(rows: &[u8; N], k: u8, x: &[L; N]) -> [L; N] {
    core::array::from_fn(|i| {
        let mut acc = ZERO;
        for (j, xj) in x.iter().enumerate() {
            if rows[i] >> j & 1 == 1 {
                acc ^= *xj;
            }
        }
        if k >> i & 1 == 1 { !acc } else { acc }
    })
}

#[inline(always)]
fn mul4(a: [L; 2], b: [L; 2]) -> [L; 2] {
    let t = (a[1] ^ a[0]) & (b[1] ^ b[0]);
    let (p0, p1) = (a[0] & b[0], a[1] & b[1]);
    [p1 ^ p0, t ^ p0]
}

/// `c²` in GF(2²).
#[inline(always)]
fn square4(c: [L; 2]) -> [L; 2] {
    [c[1] ^ c[0], c[1]]
}

/// `W·c` in GF(2²).
#[inline(always)]
fn times_mu(c: [L; 2]) -> [L; 2] {
    [c[1], c[1] ^ c[0]]
}

#[inline(always)]
fn xor2(a: [L; 2], b: [L; 2]) -> [L; 2] {
    [a[0] ^ b[0], a[1] ^ b[1]]
}

#[inline(always)]
fn halves4(a: [L; 4]) -> ([L; 2], [L; 2]) {
    ([a[2], a[3]], [a[0], a[1]])
}

#[inline(always)]
fn join4(h: [L; 2], l: [L; 2]) -> [L; 4] {
    [l[0], l[1], h[0], h[1]]
}

#[inline(always)]
fn mul16(a: [L; 4], b: [L; 4]) -> [L; 4] {
    let ((ah, al), (bh, bl)) = (halves4(a), halves4(b));
    let low = mul4(al, bl);
    join4(xor2(mul4(xor2(ah, al), xor2(bh, bl)), low), xor2(times_mu(mul4(ah, bh)), low))
}

/// `d⁻¹` in GF(2⁴) (`0 ↦ 0`): `(hZ + l)⁻¹ = (h·e)Z + (h + l)·e`, `e = (W·h² + h·l + l²)⁻¹`,
/// and in GF(2²) an inverse is the square.
#[inline(always)]
fn inv16(d: [L; 4]) -> [L; 4] {
    let (h, l) = halves4(d);
    let e = square4(xor2(xor2(times_mu(square4(h)), mul4(h, l)), square4(l)));
    join4(mul4(h, e), mul4(xor2(h, l), e))
}

#[inline(always)]
fn xor4(a: [L; 4], b: [L; 4]) -> [L; 4] {
    core::array::from_fn(|i| a[i] ^ b[i])
}

/// `y⁻¹` in the tower (`0 ↦ 0`): `(hY + l)⁻¹ = (h·e)Y + (h + l)·e`, `e = (ν·h² + h·l + l²)⁻¹`.
#[inline(always)]
fn inv256(y: [L; 8]) -> [L; 8] {
    let l = [y[0], y[1], y[2], y[3]];
    let h = [y[4], y[5], y[6], y[7]];
    let d = xor4(xor4(linear(&NU_SQUARE_ROWS, 0, &h), mul16(h, l)), linear(&SQUARE_ROWS, 0, &l));
    let e = inv16(d);
    let (hi, lo) = (mul16(h, e), mul16(xor4(h, l), e));
    [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
}

/// SM4's S-box on 128 bytes (bit `i` of each in `x[i]`).
#[inline(always)]
fn sbox(x: &[L; 8]) -> [L; 8] {
    linear(&OUT_ROWS, OUT_CONSTANT, &inv256(linear(&IN_ROWS, IN_CONSTANT, x)))
}

/// One round on the sliced words: `x0 ⊕= L(τ(a ⊕ b ⊕ c ⊕ rk))`, the round key's bits as
/// masks (`rk[b]` all ones where the key's bit `b` is set).
#[inline(always)]
fn round(x0: &mut [L; 32], a: &[L; 32], b: &[L; 32], c: &[L; 32], rk: &[Mask; 32]) {
    let mut u: [L; 32] = core::array::from_fn(|i| a[i] ^ b[i] ^ c[i] ^ u64x2::new(rk[i]));
    for byte in u.chunks_exact_mut(8) {
        let s = sbox(&[byte[0], byte[1], byte[2], byte[3], byte[4], byte[5], byte[6], byte[7]]);
        byte.copy_from_slice(&s);
    }
    // L(B) = B ⊕ (B <<< 2) ⊕ (B <<< 10) ⊕ (B <<< 18) ⊕ (B <<< 24): bit i of B <<< r is bit
    // i − r of B.
    for (i, x) in x0.iter_mut().enumerate() {
        *x ^= u[i] ^ u[(i + 30) % 32] ^ u[(i + 22) % 32] ^ u[(i + 14) % 32] ^ u[(i + 8) % 32];
    }
}

/// Transposes the 64×64 bit matrix whose row `r` is `a[r]` (bit `c` its column `c`).
fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32;
    let mut m: u64 = 0x0000_0000_FFFF_FFFF;
    while j != 0 {
        let mut k = 0;
        while k < 64 {
            // Rows k (bit j of k clear) and k + j: k's high group swaps with k + j's low one.
            let t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k] ^= t << j;
            a[k + j] ^= t;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        m ^= m << j;
    }
}

/// A round key's bit as a lane mask: all ones or all zeros. (Plain words, not `u64x2`, so that
/// the caller can wipe them: they give the key back.)
pub(super) type Mask = [u64; 2];

/// The round keys as masks, for [`encrypt`]: `masks[i][b]` is all ones where bit `b` of round
/// key `i` is set (a subtraction, not a branch, on the key's bits). The caller zeroizes them.
pub(super) fn key_masks(rk: &[u32; 32]) -> [[Mask; 32]; 32] {
    core::array::from_fn(|i| {
        core::array::from_fn(|b| [0u64.wrapping_sub(u64::from(rk[i] >> b & 1)); 2])
    })
}

/// Encrypts the 128 blocks of `blocks` in place (`masks` from [`key_masks`]).
pub(super) fn encrypt(masks: &[[Mask; 32]; 32], blocks: &mut [u8; BYTES]) {
    // Words 0 and 1 of each block as one row, words 2 and 3 as another: after the transpose,
    // row 32 + b holds bit b of the first word of each, row b of the second.
    let mut rows = [[[0u64; 64]; 2]; 2];
    for (half, chunk) in blocks.chunks_exact(BYTES / 2).enumerate() {
        for (k, block) in chunk.chunks_exact(16).enumerate() {
            let word = |w: usize| u64::from_be_bytes(core::array::from_fn(|i| block[8 * w + i]));
            rows[half][0][k] = word(0);
            rows[half][1][k] = word(1);
        }
        transpose64(&mut rows[half][0]);
        transpose64(&mut rows[half][1]);
    }
    let slice = |pair: usize, row: usize| u64x2::new([rows[0][pair][row], rows[1][pair][row]]);
    let mut x: [[L; 32]; 4] = [
        core::array::from_fn(|b| slice(0, 32 + b)),
        core::array::from_fn(|b| slice(0, b)),
        core::array::from_fn(|b| slice(1, 32 + b)),
        core::array::from_fn(|b| slice(1, b)),
    ];
    for rk in masks.chunks_exact(4) {
        let [x0, x1, x2, x3] = &mut x;
        round(x0, x1, x2, x3, &rk[0]);
        round(x1, x2, x3, x0, &rk[1]);
        round(x2, x3, x0, x1, &rk[2]);
        round(x3, x0, x1, x2, &rk[3]);
    }
    // The output is the last four words in reverse order (`R`).
    let [x0, x1, x2, x3] = &x;
    for (pair, (first, second)) in [(x3, x2), (x1, x0)].into_iter().enumerate() {
        for (half, rows) in rows.iter_mut().enumerate() {
            let r = &mut rows[pair];
            for b in 0..32 {
                r[32 + b] = first[b].to_array()[half];
                r[b] = second[b].to_array()[half];
            }
            transpose64(r);
        }
    }
    for (half, chunk) in blocks.chunks_exact_mut(BYTES / 2).enumerate() {
        for (k, block) in chunk.chunks_exact_mut(16).enumerate() {
            block[..8].copy_from_slice(&rows[half][0][k].to_be_bytes());
            block[8..].copy_from_slice(&rows[half][1][k].to_be_bytes());
        }
    }
    // The output's words (the keystream, in a counter mode) are not left behind.
    rows.zeroize();
    for w in &mut x {
        w.fill(ZERO);
    }
    core::hint::black_box(&x);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tower_inv(a: u8) -> u8 {
        (1..=255u8).find(|b| tower_mul(a, *b) == 1).unwrap_or(0)
    }

    /// The tower is a field (every non-zero element has an inverse, products commute), and the
    /// map into it keeps products: what makes the S-box's derivation right.
    #[test]
    fn the_tower_is_a_field_and_the_map_keeps_products() {
        for a in 1..=255u8 {
            assert_eq!(tower_mul(a, tower_inv(a)), 1, "{a:#04x} has an inverse");
        }
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(tower_mul(a, b), tower_mul(b, a));
                let product = super::super::block::gf_mul(u32::from(a), u32::from(b)) as u8;
                assert_eq!(to_tower(product), tower_mul(to_tower(a), to_tower(b)));
            }
            assert_eq!(from_tower(to_tower(a)), a);
        }
    }

    fn lanes_of(bytes: &[u8]) -> [L; 8] {
        core::array::from_fn(|i| {
            let mut half = [0u64; 2];
            for (k, x) in bytes.iter().enumerate() {
                half[k / 64] |= u64::from(x >> i & 1) << (k % 64);
            }
            u64x2::new(half)
        })
    }

    fn bytes_of(lanes: &[L; 8]) -> Vec<u8> {
        (0..128)
            .map(|k| {
                (0..8).fold(0u8, |x, i| {
                    x | (((lanes[i].to_array()[k / 64] >> (k % 64)) & 1) as u8) << i
                })
            })
            .collect()
    }

    /// All 256 entries of the gates' S-box are the table's.
    #[test]
    fn the_gates_compute_every_sbox_entry() {
        for start in [0u8, 128] {
            let inputs: Vec<u8> = (0..128).map(|k| start + k).collect();
            let out = bytes_of(&sbox(&lanes_of(&inputs)));
            for (x, y) in inputs.iter().zip(out) {
                assert_eq!(y, super::super::block::SBOX[usize::from(*x)], "S({x:#04x})");
            }
        }
    }

    /// 128 different blocks under random keys, as [`super::super::block`] encrypts them (it is
    /// held to the `sm4` crate and the standard), and the standard's example in the first and
    /// the last lane.
    #[test]
    fn whole_encryptions_agree_with_the_table_cipher() {
        use cbc::cipher::{Array, BlockCipherEncrypt, KeyInit};
        let mut seed = 0x0123_4567_89ab_cdefu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..8 {
            let key: [u8; 16] = core::array::from_fn(|_| next() as u8);
            let mut blocks = [0u8; BYTES];
            blocks.iter_mut().for_each(|b| *b = next() as u8);
            if round == 0 {
                let std = super::super::STANDARD_EXAMPLE;
                blocks[..16].copy_from_slice(&std);
                blocks[BYTES - 16..].copy_from_slice(&std);
            }
            let key = if round == 0 { super::super::STANDARD_EXAMPLE } else { key };
            let table = super::super::block::Sm4Encrypt::new(&key.into());
            let mut want: Vec<_> =
                blocks.chunks_exact(16).map(|b| Array::try_from(b).unwrap()).collect();
            table.encrypt_blocks(&mut want);
            let mut masks = key_masks(table.round_keys());
            encrypt(&masks, &mut blocks);
            masks.zeroize();
            for (k, (got, want)) in blocks.chunks_exact(16).zip(&want).enumerate() {
                assert_eq!(got, want.as_slice(), "key {round}, block {k}");
            }
            if round == 0 {
                for at in [0, BYTES - 16] {
                    assert_eq!(
                        hex::encode(&blocks[at..at + 16]),
                        "681edf34d206965e86b3e94f536e4246"
                    );
                }
            }
        }
    }

    #[test]
    fn the_transpose_is_one() {
        let mut a: [u64; 64] =
            core::array::from_fn(|i| (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let before = a;
        transpose64(&mut a);
        for (r, row) in a.iter().enumerate() {
            for (c, was) in before.iter().enumerate() {
                assert_eq!(row >> c & 1, was >> r & 1, "({r}, {c})");
            }
        }
    }
}

//! SM3 of many messages of one length at once, [`LANES`] side by side in SIMD lanes: the state
//! map hashes each level of its tree (65-byte inner nodes, all independent) in one call instead
//! of one compression after another. Measured on the CI machine kind (baseline x86-64, SSE2
//! only, `cargo bench -p vpbox-sm --bench crypto`): 1.6x the bytes per second of [`super::hash`]
//! one message at a time, at the state map's 65 bytes.
//!
//! Portable and safe: the lanes are `wide`'s 128-bit vectors (SSE2 on every x86-64, NEON on
//! aarch64, plain arrays elsewhere); nothing here is `unsafe`. The digests are exactly
//! [`super::hash`]'s, which the tests check for every padding case and lane position.

use wide::u32x4;

use super::Digest;

/// Vectors of four lanes per state word: two, so that each step has independent work.
const GROUPS: usize = 2;
/// The messages hashed side by side.
pub const LANES: usize = 4 * GROUPS;

/// One state word (or message word) of every lane.
type Lanes = [u32x4; GROUPS];

const IV: [u32; 8] = [
    0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600, 0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e,
];
const T_LOW: u32 = 0x79cc4519;
const T_HIGH: u32 = 0x7a879d8a;

/// SM3 of each message, in order: `hash_each(m)[i] == hash(m[i])`. A last set of fewer than
/// [`LANES`] messages costs a full set (at most a few per call: a tree's top levels).
pub fn hash_each<const N: usize>(messages: &[[u8; N]]) -> Vec<Digest> {
    let mut out = Vec::with_capacity(messages.len());
    for chunk in messages.chunks(LANES) {
        out.extend_from_slice(&hash_lanes(chunk)[..chunk.len()]);
    }
    out
}

/// The digests of up to [`LANES`] messages (the lanes past `chunk`'s end hash zeros, unused).
fn hash_lanes<const N: usize>(chunk: &[[u8; N]]) -> [Digest; LANES] {
    // Padding: 0x80, zeros, the length in bits as 8 big-endian bytes, to a whole block.
    let blocks = (N + 9).div_ceil(64);
    let bits = (N as u64 * 8).to_be_bytes();
    let mut state = IV.map(|v| [u32x4::splat(v); GROUPS]);
    for b in 0..blocks {
        let start = b * 64;
        // Each lane's block, padded where the message ends (zeros in the unused lanes).
        let mut bytes = [[0u8; 64]; LANES];
        for (buf, m) in bytes.iter_mut().zip(chunk) {
            if let Some(whole) = m.get(start..start + 64) {
                buf.copy_from_slice(whole);
                continue;
            }
            let rest = m.get(start..).unwrap_or_default();
            buf[..rest.len()].copy_from_slice(rest);
            if N >= start {
                buf[N - start] = 0x80;
            }
            if b + 1 == blocks {
                buf[56..].copy_from_slice(&bits);
            }
        }
        let block: [Lanes; 16] = core::array::from_fn(|j| {
            core::array::from_fn(|g| {
                u32x4::new(core::array::from_fn(|k| {
                    let w = &bytes[4 * g + k][4 * j..4 * j + 4];
                    u32::from_be_bytes([w[0], w[1], w[2], w[3]])
                }))
            })
        });
        compress(&mut state, &block);
    }
    core::array::from_fn(|lane| {
        let mut d = [0u8; 32];
        for (word, out) in state.iter().zip(d.chunks_exact_mut(4)) {
            out.copy_from_slice(&word[lane / 4].to_array()[lane % 4].to_be_bytes());
        }
        Digest(d)
    })
}

#[inline(always)]
fn each(a: Lanes, f: impl Fn(u32x4) -> u32x4) -> Lanes {
    a.map(f)
}

#[inline(always)]
fn both(a: Lanes, b: Lanes, f: impl Fn(u32x4, u32x4) -> u32x4) -> Lanes {
    core::array::from_fn(|g| f(a[g], b[g]))
}

#[inline(always)]
fn xor(a: Lanes, b: Lanes) -> Lanes {
    both(a, b, |x, y| x ^ y)
}

/// Addition modulo 2^32, lane by lane.
#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    both(a, b, |x, y| x + y)
}

#[inline(always)]
fn rotl<const S: u32>(a: Lanes) -> Lanes {
    each(a, |x| (x << S) | (x >> (32 - S)))
}

#[inline(always)]
fn p0(x: Lanes) -> Lanes {
    xor(xor(x, rotl::<9>(x)), rotl::<17>(x))
}

#[inline(always)]
fn p1(x: Lanes) -> Lanes {
    xor(xor(x, rotl::<15>(x)), rotl::<23>(x))
}

/// One round `j` of GB/T 32905's compression function; `HIGH` for rounds 16 to 63.
#[inline(always)]
fn round<const HIGH: bool>(s: &mut [Lanes; 8], w: Lanes, w4: Lanes, t: u32) {
    let [a, b, c, d, e, f, g, h] = *s;
    let a12 = rotl::<12>(a);
    let ss1 = rotl::<7>(add(add(a12, e), [u32x4::splat(t); GROUPS]));
    let ss2 = xor(ss1, a12);
    let (ff, gg): (Lanes, Lanes) = if HIGH {
        (
            core::array::from_fn(|i| (a[i] & b[i]) | (a[i] & c[i]) | (b[i] & c[i])),
            // (e & f) | (!e & g), as a select.
            core::array::from_fn(|i| g[i] ^ (e[i] & (f[i] ^ g[i]))),
        )
    } else {
        (xor(xor(a, b), c), xor(xor(e, f), g))
    };
    let tt1 = add(add(add(ff, d), ss2), xor(w, w4));
    let tt2 = add(add(add(gg, h), ss1), w);
    *s = [tt1, a, rotl::<9>(b), c, p0(tt2), e, rotl::<19>(f), g];
}

/// The compression function over one block of every lane.
fn compress(state: &mut [Lanes; 8], block: &[Lanes; 16]) {
    let mut w = [[u32x4::ZERO; GROUPS]; 68];
    w[..16].copy_from_slice(block);
    for j in 16..68 {
        let x = xor(xor(w[j - 16], w[j - 9]), rotl::<15>(w[j - 3]));
        w[j] = xor(xor(p1(x), rotl::<7>(w[j - 13])), w[j - 6]);
    }
    let mut s = *state;
    for j in 0..16 {
        round::<false>(&mut s, w[j], w[j + 4], T_LOW.rotate_left(j as u32));
    }
    for j in 16..64 {
        round::<true>(&mut s, w[j], w[j + 4], T_HIGH.rotate_left(j as u32 % 32));
    }
    for (word, new) in state.iter_mut().zip(s) {
        *word = xor(*word, new);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sm3::hash;

    fn check<const N: usize>(messages: &[[u8; N]]) {
        let got = hash_each(messages);
        assert_eq!(got.len(), messages.len());
        for (i, (m, d)) in messages.iter().zip(&got).enumerate() {
            assert_eq!(*d, hash(m), "message {i} of {} ({N} bytes)", messages.len());
        }
    }

    fn messages<const N: usize>(count: usize, seed: u8) -> Vec<[u8; N]> {
        (0..count)
            .map(|i| core::array::from_fn(|k| (i as u8).wrapping_mul(31) ^ (k as u8) ^ seed))
            .collect()
    }

    // Every padding case: no room for the length in the last block (56..=63), a message of
    // whole blocks (64, 128), the state map's 65-byte inner nodes and 105-byte leaves, and
    // counts that fill the lanes or leave some empty.
    #[test]
    fn each_digest_is_the_one_by_one_digest() {
        for count in [0, 1, 2, LANES - 1, LANES, LANES + 1, 3 * LANES + 5] {
            check::<0>(&messages(count, 1));
            check::<3>(&messages(count, 2));
            check::<55>(&messages(count, 3));
            check::<56>(&messages(count, 4));
            check::<63>(&messages(count, 5));
            check::<64>(&messages(count, 6));
            check::<65>(&messages(count, 7));
            check::<105>(&messages(count, 8));
            check::<128>(&messages(count, 9));
            check::<200>(&messages(count, 10));
        }
    }

    // GB/T 32905-2016 Appendix A, example 2, in every lane.
    #[test]
    fn standard_vector_in_every_lane() {
        let m: [u8; 64] = core::array::from_fn(|i| b"abcd"[i % 4]);
        for d in hash_each(&[m; LANES]) {
            assert_eq!(
                d.to_hex(),
                "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
            );
        }
    }

    proptest! {
        #[test]
        fn random_inner_nodes_hash_as_one_by_one(
            nodes in proptest::collection::vec(proptest::array::uniform32(any::<u8>()), 0..40),
            tag in any::<u8>(),
        ) {
            let messages: Vec<[u8; 65]> = nodes
                .windows(2)
                .map(|w| {
                    let mut m = [tag; 65];
                    m[1..33].copy_from_slice(&w[0]);
                    m[33..].copy_from_slice(&w[1]);
                    m
                })
                .collect();
            let got = hash_each(&messages);
            let want: Vec<Digest> = messages.iter().map(hash).collect();
            prop_assert_eq!(got, want);
        }
    }
}

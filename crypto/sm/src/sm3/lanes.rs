//! SM3 of many messages of one length at once, side by side in SIMD lanes: the state map
//! hashes each level of its tree (65-byte inner nodes, all independent) in one call instead of
//! one compression after another.
//!
//! The path is chosen at run time, by what the CPU has ([`Simd::best`]):
//!
//! | path | lanes | 65-byte messages on the CI machine kind (AMD EPYC, 2 cores) |
//! |---|---|---|
//! | AVX2 (x86-64-v3) | 16: 2 × 8 | 480–510 MiB/s: 1.6–1.7 × SSE2's |
//! | SSE2: every x86-64 | 8: 2 × 4 | 300–305 MiB/s: 1.8 × [`super::hash`], one at a time |
//!
//! (`cargo bench -p vpbox-sm --bench crypto` prints the best path's row and SSE2's.) The AVX2
//! path is pulp's `V3`: the whole x86-64-v3 level (AVX2, FMA, BMI1/2, LZCNT, …), so a virtual
//! machine that hides one of them takes SSE2. Not AVX-512, though this machine kind has it:
//! the same code compiled with AVX-512F/VL (one instruction a rotation, where AVX2 takes three;
//! commit 5de5e91, removed in the next) ran at 540–676 MiB/s, but its target features need
//! Rust 1.89, past this workspace's 1.85.
//!
//! The compression function is written once, over a vector of state words ([`Word`]). The
//! SSE2 path's vectors are `wide`'s (SSE2 on every x86-64, NEON on aarch64, plain arrays
//! elsewhere); the AVX2 path's are `pulp`'s, whose dispatch runs the same code compiled with
//! AVX2 enabled (everything here it calls is `#[inline(always)]` for that reason: a function
//! not inlined into the dispatch is compiled for the baseline, an intrinsic a call; the
//! standard library's small array helpers it uses are inlined too, as the speed shows). A machine
//! image need not promise AVX2: a CPU without it hashes on the SSE2 path. Nothing here is
//! `unsafe`; the detection and the feature-enabled call are pulp's. The digests are
//! exactly [`super::hash`]'s, which the tests check on every path the CPU has, for every
//! padding case and lane position.

use wide::u32x4;

use super::Digest;

/// Vectors a state word is split over: two, so that each step has independent work.
const GROUPS: usize = 2;
/// The most messages a path hashes side by side (AVX2's; SSE2 hashes 8).
pub const LANES: usize = 16;

const IV: [u32; 8] = [
    0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600, 0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e,
];
const T_LOW: u32 = 0x79cc4519;
const T_HIGH: u32 = 0x7a879d8a;

/// SM3 of each message, in order: `hash_each(m)[i] == hash(m[i])`, on the fastest path this
/// CPU has. A last set of fewer messages than the path's lanes costs a full set (at most a few
/// per call: a tree's top levels).
pub fn hash_each<const N: usize>(messages: &[[u8; N]]) -> Vec<Digest> {
    Simd::best().hash_each(messages)
}

/// How messages are hashed side by side.
#[derive(Clone, Copy, Debug)]
pub enum Simd {
    /// `wide`'s 128-bit vectors: every x86-64 (and NEON on aarch64, under the same name).
    Sse2,
    /// 256-bit vectors, where the CPU has x86-64-v3 (AVX2 and the rest of pulp's `V3`).
    #[cfg(target_arch = "x86_64")]
    Avx2(pulp::x86::V3),
}

impl Simd {
    /// The fastest path this CPU has (pulp's detection, cached after the first: cheap to ask).
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(v3) = pulp::x86::V3::try_new() {
                return Self::Avx2(v3);
            }
        }
        Self::Sse2
    }

    /// Every path this CPU has, the fastest first (for the tests and the benchmark).
    pub fn all() -> Vec<Self> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            out.extend(pulp::x86::V3::try_new().map(Self::Avx2));
        }
        out.push(Self::Sse2);
        out
    }

    /// The path's name, as the benchmark prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sse2 => "SSE2",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(_) => "AVX2",
        }
    }

    /// [`hash_each`] on this path.
    pub fn hash_each<const N: usize>(self, messages: &[[u8; N]]) -> Vec<Digest> {
        let bytes = messages.as_flattened();
        self.hash_messages(Messages { bytes, len: N, count: messages.len() })
    }

    /// Not generic, unlike [`Self::hash_each`]: the hashing is compiled once, here, rather than
    /// in each caller (whose test builds are not optimised: a generic compression function
    /// made the node simulator's sweeps in `cargo test` 2.3 times slower).
    fn hash_messages(self, messages: Messages<'_>) -> Vec<Digest> {
        match self {
            Self::Sse2 => hash_all(u32x4::ZERO, messages),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(v3) => pulp::Simd::vectorize(v3, Job { v3, messages }),
        }
    }
}

/// Messages of one length, end to end.
#[derive(Clone, Copy)]
struct Messages<'a> {
    bytes: &'a [u8],
    len: usize,
    count: usize,
}

impl Messages<'_> {
    /// Message `i`.
    #[inline(always)]
    fn get(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.len..(i + 1) * self.len]
    }
}

/// The AVX2 path's work, run by pulp inside a function compiled with AVX2 enabled.
#[cfg(target_arch = "x86_64")]
struct Job<'a> {
    v3: pulp::x86::V3,
    messages: Messages<'a>,
}

#[cfg(target_arch = "x86_64")]
impl pulp::WithSimd for Job<'_> {
    type Output = Vec<Digest>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<Digest> {
        hash_all(Avx(self.v3, self.v3.splat_u32x8(0)), self.messages)
    }
}

/// A vector of one state word from several lanes: what the compression function computes on.
trait Word: Copy {
    /// Lanes in one vector.
    const WIDTH: usize;
    /// A vector of this kind with `v` in every lane.
    fn splat(self, v: u32) -> Self;
    /// A vector of this kind holding `lanes` (`WIDTH` of them).
    fn load(self, lanes: &[u32; 8]) -> Self;
    /// The lanes (the first `WIDTH` of the array).
    fn lanes(self) -> [u32; 8];
    fn xor(self, b: Self) -> Self;
    /// Addition modulo 2^32, lane by lane.
    fn add(self, b: Self) -> Self;
    fn and(self, b: Self) -> Self;
    fn or(self, b: Self) -> Self;
    /// Rotation left by `L` bits (`R` is 32 − `L`: pulp's shifts take their count as a
    /// constant parameter, and stable Rust computes none from another).
    fn rotl<const L: i32, const R: i32>(self) -> Self;
}

impl Word for u32x4 {
    const WIDTH: usize = 4;

    #[inline(always)]
    fn splat(self, v: u32) -> Self {
        Self::splat(v)
    }

    #[inline(always)]
    fn load(self, lanes: &[u32; 8]) -> Self {
        Self::new([lanes[0], lanes[1], lanes[2], lanes[3]])
    }

    #[inline(always)]
    fn lanes(self) -> [u32; 8] {
        let [a, b, c, d] = self.to_array();
        [a, b, c, d, 0, 0, 0, 0]
    }

    #[inline(always)]
    fn xor(self, b: Self) -> Self {
        self ^ b
    }

    #[inline(always)]
    fn add(self, b: Self) -> Self {
        self + b
    }

    #[inline(always)]
    fn and(self, b: Self) -> Self {
        self & b
    }

    #[inline(always)]
    fn or(self, b: Self) -> Self {
        self | b
    }

    #[inline(always)]
    fn rotl<const L: i32, const R: i32>(self) -> Self {
        const { assert!(L + R == 32 && L > 0 && R > 0) };
        (self << L as u32) | (self >> R as u32)
    }
}

/// pulp's 256-bit vector, with the token that proves AVX2 is there.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx(pulp::x86::V3, pulp::u32x8);

#[cfg(target_arch = "x86_64")]
impl Word for Avx {
    const WIDTH: usize = 8;

    #[inline(always)]
    fn splat(self, v: u32) -> Self {
        Self(self.0, self.0.splat_u32x8(v))
    }

    #[inline(always)]
    fn load(self, lanes: &[u32; 8]) -> Self {
        Self(self.0, pulp::bytemuck::cast(*lanes))
    }

    #[inline(always)]
    fn lanes(self) -> [u32; 8] {
        pulp::bytemuck::cast(self.1)
    }

    #[inline(always)]
    fn xor(self, b: Self) -> Self {
        Self(self.0, self.0.xor_u32x8(self.1, b.1))
    }

    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Self(self.0, self.0.wrapping_add_u32x8(self.1, b.1))
    }

    #[inline(always)]
    fn and(self, b: Self) -> Self {
        Self(self.0, self.0.and_u32x8(self.1, b.1))
    }

    #[inline(always)]
    fn or(self, b: Self) -> Self {
        Self(self.0, self.0.or_u32x8(self.1, b.1))
    }

    #[inline(always)]
    fn rotl<const L: i32, const R: i32>(self) -> Self {
        const { assert!(L + R == 32 && L > 0 && R > 0) };
        let v = self.0;
        Self(v, v.or_u32x8(v.shl_const_u32x8::<L>(self.1), v.shr_const_u32x8::<R>(self.1)))
    }
}

/// One state word of every lane: `GROUPS` vectors.
type Lanes<W> = [W; GROUPS];

#[inline(always)]
fn hash_all<W: Word>(like: W, messages: Messages<'_>) -> Vec<Digest> {
    let mut out = Vec::with_capacity(messages.count);
    let mut first = 0;
    while first < messages.count {
        let n = (W::WIDTH * GROUPS).min(messages.count - first);
        out.extend_from_slice(&hash_lanes(like, messages, first..first + n)[..n]);
        first += n;
    }
    out
}

/// The digests of the messages `chunk` (at most `W::WIDTH * GROUPS`), in the first digests
/// (the lanes past the chunk's end hash zeros, unused; the digests past the path's lanes are
/// zero).
#[inline(always)]
fn hash_lanes<W: Word>(
    like: W,
    messages: Messages<'_>,
    chunk: core::ops::Range<usize>,
) -> [Digest; LANES] {
    const { assert!(W::WIDTH * GROUPS <= LANES && W::WIDTH <= 8) };
    let n = messages.len;
    // Padding: 0x80, zeros, the length in bits as 8 big-endian bytes, to a whole block.
    let blocks = (n + 9).div_ceil(64);
    let bits = (n as u64 * 8).to_be_bytes();
    let mut state = IV.map(|v| [like.splat(v); GROUPS]);
    for b in 0..blocks {
        let start = b * 64;
        // Each lane's block, padded where the message ends (zeros in the unused lanes).
        let mut bytes = [[0u8; 64]; LANES];
        for (buf, m) in bytes.iter_mut().zip(chunk.clone().map(|i| messages.get(i))) {
            if let Some(whole) = m.get(start..start + 64) {
                buf.copy_from_slice(whole);
                continue;
            }
            let rest = m.get(start..).unwrap_or_default();
            buf[..rest.len()].copy_from_slice(rest);
            if n >= start {
                buf[n - start] = 0x80;
            }
            if b + 1 == blocks {
                buf[56..].copy_from_slice(&bits);
            }
        }
        let block: [Lanes<W>; 16] = core::array::from_fn(|j| {
            core::array::from_fn(|g| {
                like.load(&core::array::from_fn(|k| {
                    let w = &bytes[W::WIDTH * g + k][4 * j..4 * j + 4];
                    u32::from_be_bytes([w[0], w[1], w[2], w[3]])
                }))
            })
        });
        compress(&mut state, &block);
    }
    let words = state.map(|word| word.map(W::lanes));
    core::array::from_fn(|lane| {
        let (g, k) = (lane / W::WIDTH, lane % W::WIDTH);
        let mut d = [0u8; 32];
        if g < GROUPS {
            for (word, out) in words.iter().zip(d.chunks_exact_mut(4)) {
                out.copy_from_slice(&word[g][k].to_be_bytes());
            }
        }
        Digest(d)
    })
}

#[inline(always)]
fn xor<W: Word>(a: Lanes<W>, b: Lanes<W>) -> Lanes<W> {
    core::array::from_fn(|g| a[g].xor(b[g]))
}

#[inline(always)]
fn add<W: Word>(a: Lanes<W>, b: Lanes<W>) -> Lanes<W> {
    core::array::from_fn(|g| a[g].add(b[g]))
}

#[inline(always)]
fn rotl<W: Word, const L: i32, const R: i32>(a: Lanes<W>) -> Lanes<W> {
    a.map(W::rotl::<L, R>)
}

#[inline(always)]
fn p0<W: Word>(x: Lanes<W>) -> Lanes<W> {
    xor(xor(x, rotl::<W, 9, 23>(x)), rotl::<W, 17, 15>(x))
}

#[inline(always)]
fn p1<W: Word>(x: Lanes<W>) -> Lanes<W> {
    xor(xor(x, rotl::<W, 15, 17>(x)), rotl::<W, 23, 9>(x))
}

/// One round `j` of GB/T 32905's compression function; `HIGH` for rounds 16 to 63.
#[inline(always)]
fn round<W: Word, const HIGH: bool>(s: &mut [Lanes<W>; 8], w: Lanes<W>, w4: Lanes<W>, t: u32) {
    let [a, b, c, d, e, f, g, h] = *s;
    let a12 = rotl::<W, 12, 20>(a);
    let ss1 = rotl::<W, 7, 25>(add(add(a12, e), a.map(|v| v.splat(t))));
    let ss2 = xor(ss1, a12);
    let (ff, gg): (Lanes<W>, Lanes<W>) = if HIGH {
        (
            core::array::from_fn(|i| a[i].and(b[i]).or(a[i].and(c[i])).or(b[i].and(c[i]))),
            // (e & f) | (!e & g), as a select.
            core::array::from_fn(|i| g[i].xor(e[i].and(f[i].xor(g[i])))),
        )
    } else {
        (xor(xor(a, b), c), xor(xor(e, f), g))
    };
    let tt1 = add(add(add(ff, d), ss2), xor(w, w4));
    let tt2 = add(add(add(gg, h), ss1), w);
    *s = [tt1, a, rotl::<W, 9, 23>(b), c, p0(tt2), e, rotl::<W, 19, 13>(f), g];
}

/// The compression function over one block of every lane.
#[inline(always)]
fn compress<W: Word>(state: &mut [Lanes<W>; 8], block: &[Lanes<W>; 16]) {
    let mut w = [block[0]; 68];
    w[..16].copy_from_slice(block);
    for j in 16..68 {
        let x = xor(xor(w[j - 16], w[j - 9]), rotl::<W, 15, 17>(w[j - 3]));
        w[j] = xor(xor(p1(x), rotl::<W, 7, 25>(w[j - 13])), w[j - 6]);
    }
    let mut s = *state;
    for j in 0..16 {
        round::<W, false>(&mut s, w[j], w[j + 4], T_LOW.rotate_left(j as u32));
    }
    for j in 16..64 {
        round::<W, true>(&mut s, w[j], w[j + 4], T_HIGH.rotate_left(j as u32 % 32));
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

    /// Every path this CPU has hashes `messages` as [`hash`] does, one by one.
    fn check<const N: usize>(messages: &[[u8; N]]) {
        for simd in Simd::all() {
            let got = simd.hash_each(messages);
            assert_eq!(got.len(), messages.len(), "{}", simd.name());
            for (i, (m, d)) in messages.iter().zip(&got).enumerate() {
                let name = simd.name();
                assert_eq!(*d, hash(m), "{name}: message {i} of {} ({N} bytes)", messages.len());
            }
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
        // LANES / 2 - 1 ..= LANES / 2 + 1: the SSE2 path's lanes, full, short and over.
        let counts = [0, 1, 2, 7, 8, 9, LANES - 1, LANES, LANES + 1, 3 * LANES + 5];
        for count in counts {
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
        for simd in Simd::all() {
            for d in simd.hash_each(&[m; LANES]) {
                assert_eq!(
                    d.to_hex(),
                    "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732",
                    "{}",
                    simd.name()
                );
            }
        }
    }

    /// The paths the tests check: every one this CPU has, the fastest ([`Simd::best`]) first,
    /// down to SSE2, which every x86-64 has.
    #[test]
    fn the_paths_checked_run_from_the_best_to_sse2() {
        let names: Vec<_> = Simd::all().into_iter().map(Simd::name).collect();
        assert_eq!(names.last(), Some(&"SSE2"));
        assert_eq!(Simd::best().name(), names[0]);
        eprintln!("SM3 lanes: the paths this CPU has: {names:?}");
        // The AVX2 path is there exactly when the standard library sees x86-64-v3's features.
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let v3 = has!("avx2")
                && has!("avx")
                && has!("fma")
                && has!("bmi1")
                && has!("bmi2")
                && has!("lzcnt")
                && has!("popcnt")
                && has!("sse4.2");
            assert_eq!(names.contains(&"AVX2"), v3, "{names:?}");
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
            let want: Vec<Digest> = messages.iter().map(hash).collect();
            for simd in Simd::all() {
                prop_assert_eq!(simd.hash_each(&messages), want.clone(), "{}", simd.name());
            }
        }
    }
}

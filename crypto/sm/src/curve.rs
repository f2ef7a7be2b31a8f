//! Fast SM2 verification: `s·G + t·P` on the SM2 curve in variable time, for public inputs only.
//!
//! Every node verifies every transaction, so verification is on the critical path (issue 18).
//! RustCrypto's generic arithmetic uses complete projective formulas and no precomputation; this
//! module keeps its field (fiat-crypto's formally verified Montgomery code for the SM2 prime,
//! 64-bit limbs) but for the product, whose reduction uses the prime's form instead of
//! multiplications (tested against fiat-crypto's), and replaces the rest:
//!
//! - Jacobian coordinates with the `a = −3` doubling (3M+5S) and mixed Jacobian–affine addition
//!   (7M+4S), every exceptional case (infinity, `P = ±Q`) handled, not assumed away;
//! - `s·G` from a **signed comb** of the base point (radix 2⁸, 33 windows × 128 affine points,
//!   264 KiB, built once per process on first use): 33 additions, no doublings;
//! - `t·P` for a key seen for the first time by **wNAF** (width 5, odd multiples in Jacobian
//!   coordinates): 256 doublings and about 43 additions, no inversion;
//! - `t·P` for a key seen again by its own signed comb (radix 2⁶, 43 windows × 32 affine points,
//!   86 KiB): about 43 additions, no doublings (radix 2⁴, 33 KiB, took about 61: verification
//!   with it was about 1.3 times slower). A key's table is built once it has shown
//!   [`BUILD_AFTER`] valid signatures, and tables are kept for [`TABLES`] keys, least recently
//!   used out first (every POSP and every node signs thousands of times, so the same few hundred
//!   keys come back all day);
//! - with a key's table, the two combs' points (about 76) summed as two halves side by side
//!   ([`Jac::add_affine_pair`]): a field product's latency is about three times its issue
//!   cost, so two independent chains of additions run in about the time of one. Verification
//!   was 1.2–1.3 times faster with it (33,006 → 38,187–42,830 a second on this machine);
//! - no inversion at the end: `x₁ mod n = (r − e) mod n` is checked as `X = c·Z²` (and
//!   `X = (c + n)·Z²` when `c + n < p`), as OpenSSL does for ECDSA.
//!
//! Nothing here is constant-time, and nothing here needs to be: a verifier's inputs (key,
//! digest, signature) are public. Signing stays on RustCrypto's constant-time arithmetic.
//! The tests check every path against RustCrypto's verifier and scalar multiplication.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use fiat_crypto::sm2_64 as fp;

use crate::sm2::hex32;

/// The field prime p, big-endian.
const P: [u8; 32] = hex32("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF");
/// The group order n, big-endian.
const N: [u8; 32] = hex32("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123");
const GEN_X: [u8; 32] = hex32("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7");
const GEN_Y: [u8; 32] = hex32("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0");

/// The radix 2^KEY_W of a key's comb table.
const KEY_W: usize = 6;
/// A key's comb table.
type KeyComb = Comb<KEY_W>;
/// Keys whose comb tables are kept (86 KiB each: 43 MiB in all, in a process that verifies
/// under 512 keys or more).
pub(crate) const TABLES: usize = 512;
/// Keys remembered as seen with valid signatures (to build a table at [`BUILD_AFTER`]); the
/// least recently seen is forgotten first.
const SEEN: usize = 8 * TABLES;

/// A field element in Montgomery form, fully reduced (fiat-crypto keeps every output below p),
/// so equal values have equal limbs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fe([u64; 4]);

use fp::fiat_sm2_montgomery_domain_field_element as Mont;

impl Fe {
    const ZERO: Self = Self([0; 4]);

    fn one() -> Self {
        let mut o = Mont([0; 4]);
        fp::fiat_sm2_set_one(&mut o);
        Self(o.0)
    }

    /// From 32 big-endian bytes; `None` at or above p.
    fn from_be(bytes: &[u8; 32]) -> Option<Self> {
        if *bytes >= P {
            return None;
        }
        let mut le = *bytes;
        le.reverse();
        let mut limbs = [0u64; 4];
        fp::fiat_sm2_from_bytes(&mut limbs, &le);
        let mut o = Mont([0; 4]);
        fp::fiat_sm2_to_montgomery(
            &mut o,
            &fp::fiat_sm2_non_montgomery_domain_field_element(limbs),
        );
        Some(Self(o.0))
    }

    #[cfg(test)]
    fn to_be(self) -> [u8; 32] {
        let mut n = fp::fiat_sm2_non_montgomery_domain_field_element([0; 4]);
        fp::fiat_sm2_from_montgomery(&mut n, &Mont(self.0));
        let mut out = [0u8; 32];
        fp::fiat_sm2_to_bytes(&mut out, &n.0);
        out.reverse();
        out
    }

    fn is_zero(self) -> bool {
        self.0 == [0; 4]
    }

    /// Montgomery product `a·b·2⁻²⁵⁶ mod p`, as fiat-crypto's `fiat_sm2_mul` computes it (the
    /// tests compare the two), in half its multiplications: the reduction's are replaced by
    /// [`w_limbs`]. 35 against 38 ns in a dependent chain.
    fn mul(self, b: Self) -> Self {
        let (a, b) = (self.0, b.0);
        // Interleaved (CIOS): acc = (acc + a_i·b + m·p) / 2⁶⁴, kept below 2p.
        let mut acc = [0u64; 5];
        for &ai in &a {
            let mut c = 0;
            for j in 0..4 {
                (acc[j], c) = mac(acc[j], ai, b[j], c);
            }
            // No carry out: acc + a_i·b < 2p + (2⁶⁴ − 1)·p < 2³²⁰.
            let top = acc[4] + c;
            let (w0, w1, w2, w3) = w_limbs(acc[0]);
            let mut c;
            (acc[0], c) = adc(acc[1], w0, 0);
            (acc[1], c) = adc(acc[2], w1, c);
            (acc[2], c) = adc(acc[3], w2, c);
            (acc[3], c) = adc(top, w3, c);
            acc[4] = c;
        }
        Self(sub_p_once([acc[0], acc[1], acc[2], acc[3]], acc[4]))
    }

    /// fiat-crypto's Montgomery square (its own is faster than a specialised one was here:
    /// 25 against 37 ns in a dependent chain).
    fn sq(self) -> Self {
        let mut o = Mont([0; 4]);
        fp::fiat_sm2_square(&mut o, &Mont(self.0));
        Self(o.0)
    }

    fn add(self, b: Self) -> Self {
        let mut o = Mont([0; 4]);
        fp::fiat_sm2_add(&mut o, &Mont(self.0), &Mont(b.0));
        Self(o.0)
    }

    fn sub(self, b: Self) -> Self {
        let mut o = Mont([0; 4]);
        fp::fiat_sm2_sub(&mut o, &Mont(self.0), &Mont(b.0));
        Self(o.0)
    }

    fn neg(self) -> Self {
        let mut o = Mont([0; 4]);
        fp::fiat_sm2_opp(&mut o, &Mont(self.0));
        Self(o.0)
    }

    fn dbl(self) -> Self {
        self.add(self)
    }

    /// `self^(p−2)` (Fermat), square-and-multiply over p − 2's bits; only for building tables.
    fn invert(self) -> Self {
        let mut e = P;
        e[31] -= 2; // p ends in 0xFF: no borrow
        let mut acc = Self::one();
        for byte in e {
            for bit in (0..8).rev() {
                acc = acc.sq();
                if byte >> bit & 1 == 1 {
                    acc = acc.mul(self);
                }
            }
        }
        acc
    }
}

/// `a + b + carry` and its carry out (carry in 0 or 1).
#[inline(always)]
fn adc(a: u64, b: u64, carry: u64) -> (u64, u64) {
    let t = u128::from(a) + u128::from(b) + u128::from(carry);
    (t as u64, (t >> 64) as u64)
}

/// `a − b − borrow` and its borrow out (borrow in 0 or 1).
#[inline(always)]
fn sbb(a: u64, b: u64, borrow: u64) -> (u64, u64) {
    let t = u128::from(a).wrapping_sub(u128::from(b) + u128::from(borrow));
    (t as u64, (t >> 127) as u64)
}

/// `acc + a·b + carry` as a low limb and a carry limb (it cannot overflow 128 bits).
#[inline(always)]
fn mac(acc: u64, a: u64, b: u64, carry: u64) -> (u64, u64) {
    let t = u128::from(acc) + u128::from(a) * u128::from(b) + u128::from(carry);
    (t as u64, (t >> 64) as u64)
}

/// p's little-endian limbs.
const P_LIMBS: [u64; 4] =
    [0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_0000_0000, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFE_FFFF_FFFF];

/// The SM2 prime's special Montgomery step. p = 2²⁵⁶ − 2²²⁴ − 2⁹⁶ + 2⁶⁴ − 1 ends in 64 one
/// bits, so −p⁻¹ mod 2⁶⁴ = 1 and each round's multiplier is the accumulator's low limb itself,
/// m = acc₀. Adding m·p clears that limb and adds, from the next limb on,
/// W = m·(2¹⁹² − 2¹⁶⁰ − 2³² + 1) = m·(2³² − 1)·(2¹⁶⁰ − 1) ≥ 0, whose limbs are
/// `[m, 0, 0, m] − [m·2³² mod 2⁶⁴, m ≫ 32, m·2³² mod 2⁶⁴, m ≫ 32]`: four subtractions where
/// the generic code (fiat-crypto's) takes four multiplications by p's limbs.
#[inline(always)]
fn w_limbs(m: u64) -> (u64, u64, u64, u64) {
    let (lo, hi) = (m << 32, m >> 32);
    let (w0, b) = sbb(m, lo, 0);
    let (w1, b) = sbb(0, hi, b);
    let (w2, b) = sbb(0, lo, b);
    let (w3, _) = sbb(m, hi, b); // W ≥ 0: no borrow out
    (w0, w1, w2, w3)
}

/// `r + top·2²⁵⁶`, below 2p, reduced below p.
#[inline(always)]
fn sub_p_once(r: [u64; 4], top: u64) -> [u64; 4] {
    let mut s = [0u64; 4];
    let mut b = 0;
    for i in 0..4 {
        (s[i], b) = sbb(r[i], P_LIMBS[i], b);
    }
    let (_, b) = sbb(top, 0, b);
    if b == 1 { r } else { s }
}

/// An affine point (never infinity: tables hold only multiples below the order).
#[derive(Clone, Copy, Debug)]
struct Affine {
    x: Fe,
    y: Fe,
}

impl Affine {
    fn neg(self) -> Self {
        Self { x: self.x, y: self.y.neg() }
    }
}

/// A Jacobian point `(X/Z², Y/Z³)`; `Z = 0` is the point at infinity.
#[derive(Clone, Copy, Debug)]
struct Jac {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Jac {
    const INFINITY: Self = Self { x: Fe::ZERO, y: Fe::ZERO, z: Fe::ZERO };

    fn from_affine(a: &Affine) -> Self {
        Self { x: a.x, y: a.y, z: Fe::one() }
    }

    fn is_infinity(&self) -> bool {
        self.z.is_zero()
    }

    fn neg(self) -> Self {
        Self { x: self.x, y: self.y.neg(), z: self.z }
    }

    /// dbl-2001-b (a = −3): 3M + 5S.
    fn double(&self) -> Self {
        if self.is_infinity() {
            return *self;
        }
        let delta = self.z.sq();
        let gamma = self.y.sq();
        let beta = self.x.mul(gamma);
        let t = self.x.sub(delta).mul(self.x.add(delta));
        let alpha = t.dbl().add(t);
        let beta4 = beta.dbl().dbl();
        let x = alpha.sq().sub(beta4.dbl());
        let z = self.y.add(self.z).sq().sub(gamma).sub(delta);
        let y = alpha.mul(beta4.sub(x)).sub(gamma.sq().dbl().dbl().dbl());
        Self { x, y, z }
    }

    /// madd-2007-bl: `self + q` with q affine, 7M + 4S.
    fn add_affine(&self, q: &Affine) -> Self {
        if self.is_infinity() {
            return Self::from_affine(q);
        }
        let z1z1 = self.z.sq();
        let u2 = q.x.mul(z1z1);
        let s2 = q.y.mul(self.z).mul(z1z1);
        let h = u2.sub(self.x);
        let r = s2.sub(self.y).dbl();
        if h.is_zero() {
            return if r.is_zero() { self.double() } else { Self::INFINITY };
        }
        let hh = h.sq();
        let i = hh.dbl().dbl();
        let j = h.mul(i);
        let v = self.x.mul(i);
        let x = r.sq().sub(j).sub(v.dbl());
        let y = r.mul(v.sub(x)).sub(self.y.mul(j).dbl());
        let z = self.z.add(h).sq().sub(z1z1).sub(hh);
        Self { x, y, z }
    }

    /// `(a + p, b + q)`, the two mixed additions of [`Self::add_affine`] step by step side by
    /// side: the two chains of dependent field operations are independent, so the core overlaps
    /// them (a field product's latency is about three times its issue cost). Any exceptional
    /// case (an infinity, equal x) takes the separate additions. Written out by hand: the same
    /// for K sums over arrays (`std::array::from_fn`) verified a fifth slower at K = 2 than
    /// this, and no faster at 3 or 4.
    fn add_affine_pair(a: &Self, p: &Affine, b: &Self, q: &Affine) -> (Self, Self) {
        if a.is_infinity() || b.is_infinity() {
            return (a.add_affine(p), b.add_affine(q));
        }
        let (az2, bz2) = (a.z.sq(), b.z.sq());
        let (au2, bu2) = (p.x.mul(az2), q.x.mul(bz2));
        let (as2, bs2) = (p.y.mul(a.z), q.y.mul(b.z));
        let (as2, bs2) = (as2.mul(az2), bs2.mul(bz2));
        let (ah, bh) = (au2.sub(a.x), bu2.sub(b.x));
        if ah.is_zero() || bh.is_zero() {
            return (a.add_affine(p), b.add_affine(q));
        }
        let (ar, br) = (as2.sub(a.y).dbl(), bs2.sub(b.y).dbl());
        let (ahh, bhh) = (ah.sq(), bh.sq());
        let (ai, bi) = (ahh.dbl().dbl(), bhh.dbl().dbl());
        let (aj, bj) = (ah.mul(ai), bh.mul(bi));
        let (av, bv) = (a.x.mul(ai), b.x.mul(bi));
        let (ar2, br2) = (ar.sq(), br.sq());
        let (ax, bx) = (ar2.sub(aj).sub(av.dbl()), br2.sub(bj).sub(bv.dbl()));
        let (ayj, byj) = (a.y.mul(aj), b.y.mul(bj));
        let (ay, by) = (ar.mul(av.sub(ax)).sub(ayj.dbl()), br.mul(bv.sub(bx)).sub(byj.dbl()));
        let (azh, bzh) = (a.z.add(ah).sq(), b.z.add(bh).sq());
        let (az, bz) = (azh.sub(az2).sub(ahh), bzh.sub(bz2).sub(bhh));
        (Self { x: ax, y: ay, z: az }, Self { x: bx, y: by, z: bz })
    }

    /// add-2007-bl: `self + q`, 11M + 5S.
    fn add(&self, q: &Self) -> Self {
        if self.is_infinity() {
            return *q;
        }
        if q.is_infinity() {
            return *self;
        }
        let z1z1 = self.z.sq();
        let z2z2 = q.z.sq();
        let u1 = self.x.mul(z2z2);
        let u2 = q.x.mul(z1z1);
        let s1 = self.y.mul(q.z).mul(z2z2);
        let s2 = q.y.mul(self.z).mul(z1z1);
        let h = u2.sub(u1);
        let r = s2.sub(s1).dbl();
        if h.is_zero() {
            return if r.is_zero() { self.double() } else { Self::INFINITY };
        }
        let i = h.dbl().sq();
        let j = h.mul(i);
        let v = u1.mul(i);
        let x = r.sq().sub(j).sub(v.dbl());
        let y = r.mul(v.sub(x)).sub(s1.mul(j).dbl());
        let z = self.z.add(q.z).sq().sub(z1z1).sub(z2z2).mul(h);
        Self { x, y, z }
    }
}

/// Affine forms of many Jacobian points with one inversion (Montgomery's trick). No point may
/// be infinity.
fn normalize(points: &[Jac]) -> Vec<Affine> {
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = Fe::one();
    for p in points {
        prefix.push(acc);
        acc = acc.mul(p.z);
    }
    let mut inv = acc.invert();
    let mut out = vec![Affine { x: Fe::ZERO, y: Fe::ZERO }; points.len()];
    for (i, p) in points.iter().enumerate().rev() {
        let zinv = inv.mul(prefix[i]);
        inv = inv.mul(p.z);
        let zinv2 = zinv.sq();
        out[i] = Affine { x: p.x.mul(zinv2), y: p.y.mul(zinv2).mul(zinv) };
    }
    out
}

/// A 256-bit scalar's little-endian limbs from 32 big-endian bytes.
fn limbs(k: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (i, chunk) in k.rchunks_exact(8).enumerate() {
        out[i] = u64::from_be_bytes(chunk.try_into().unwrap_or_default());
    }
    out
}

/// A signed comb of one base B in radix 2^W: window i holds `j·2^(W·i)·B` for j = 1..=2^(W−1),
/// affine. `k·B` is then one addition per nonzero signed digit of k.
struct Comb<const W: usize> {
    points: Vec<Affine>,
}

impl<const W: usize> Comb<W> {
    const HALF: usize = 1 << (W - 1);
    /// ⌊256/W⌋ + 1 digits: when W divides 256, the last is the carry out of the top window;
    /// otherwise the top window is partial (256 mod W bits, at most 2^(W−1) with a carry in),
    /// so it never carries out.
    const WINDOWS: usize = 256 / W + 1;

    fn new(base: &Affine) -> Self {
        const { assert!(W > 1 && W < 16) };
        let mut jac = Vec::with_capacity(Self::WINDOWS * Self::HALF);
        let mut b = Jac::from_affine(base);
        for _ in 0..Self::WINDOWS {
            let mut m = b;
            jac.push(m);
            for j in 2..=Self::HALF {
                m = if j == 2 { b.double() } else { m.add(&b) };
                jac.push(m);
            }
            for _ in 0..W {
                b = b.double();
            }
        }
        // j·2^(W·i) is never a multiple of the (odd, prime) order: no point is infinity.
        Self { points: normalize(&jac) }
    }

    /// The signed radix-2^W digits of k, each in [−2^(W−1)+1, 2^(W−1)], least significant first
    /// (a window may straddle two limbs).
    fn digits(k: &[u8; 32]) -> Vec<i32> {
        let l = limbs(k);
        let mask = (1u64 << W) - 1;
        let mut out = Vec::with_capacity(Self::WINDOWS);
        let mut carry = 0i32;
        for i in 0..Self::WINDOWS {
            let (limb, off) = (i * W / 64, i * W % 64);
            let mut bits = l.get(limb).map_or(0, |v| v >> off);
            if off + W > 64 && limb + 1 < l.len() {
                bits |= l[limb + 1] << (64 - off);
            }
            let raw = (bits & mask) as i32 + carry;
            let (d, c) = if raw > Self::HALF as i32 { (raw - (1 << W), 1) } else { (raw, 0) };
            out.push(d);
            carry = c;
        }
        debug_assert_eq!(carry, 0, "the top window carries out of 256 bits");
        out
    }

    /// The table's points whose sum is `k·B`: one per nonzero digit, signs applied.
    fn terms(&self, k: &[u8; 32]) -> Vec<Affine> {
        Self::digits(k)
            .into_iter()
            .enumerate()
            .filter(|&(_, d)| d != 0)
            .map(|(i, d)| {
                let p = self.points[i * Self::HALF + d.unsigned_abs() as usize - 1];
                if d > 0 { p } else { p.neg() }
            })
            .collect()
    }

    /// `acc + k·B`.
    fn add_multiple(&self, mut acc: Jac, k: &[u8; 32]) -> Jac {
        for (i, d) in Self::digits(k).into_iter().enumerate() {
            if d == 0 {
                continue;
            }
            let p = &self.points[i * Self::HALF + d.unsigned_abs() as usize - 1];
            acc = if d > 0 { acc.add_affine(p) } else { acc.add_affine(&p.neg()) };
        }
        acc
    }
}

/// The width-5 NAF of k (at most 257 digits, each 0 or odd in [−15, 15]), least significant
/// first.
fn wnaf5(k: &[u8; 32]) -> [i8; 257] {
    let mut l = [0u64; 5];
    l[..4].copy_from_slice(&limbs(k));
    let mut out = [0i8; 257];
    let mut i = 0;
    while l != [0; 5] && i < out.len() {
        if l[0] & 1 == 1 {
            let m = (l[0] & 31) as i64;
            let d = if m >= 16 { m - 32 } else { m };
            out[i] = d as i8;
            // l −= d: makes the low 5 bits zero.
            let mut carry;
            if d > 0 {
                let (v, b) = l[0].overflowing_sub(d as u64);
                l[0] = v;
                carry = u64::from(b);
                for limb in &mut l[1..] {
                    let (v, b) = limb.overflowing_sub(carry);
                    *limb = v;
                    carry = u64::from(b);
                }
            } else {
                let (v, c) = l[0].overflowing_add((-d) as u64);
                l[0] = v;
                carry = u64::from(c);
                for limb in &mut l[1..] {
                    let (v, c) = limb.overflowing_add(carry);
                    *limb = v;
                    carry = u64::from(c);
                }
            }
        }
        for j in 0..4 {
            l[j] = l[j] >> 1 | l[j + 1] << 63;
        }
        l[4] >>= 1;
        i += 1;
    }
    out
}

/// `acc + t·P` by width-5 wNAF from the affine P, with 256 doublings.
fn add_multiple_wnaf(acc: Jac, p: &Affine, t: &[u8; 32]) -> Jac {
    // Odd multiples P, 3P, …, 15P.
    let p1 = Jac::from_affine(p);
    let p2 = p1.double();
    let mut odd = [p1; 8];
    for i in 1..8 {
        odd[i] = odd[i - 1].add(&p2);
    }
    let digits = wnaf5(t);
    let top = digits.iter().rposition(|&d| d != 0);
    let mut q = Jac::INFINITY;
    if let Some(top) = top {
        for &d in digits[..=top].iter().rev() {
            q = q.double();
            if d > 0 {
                q = q.add(&odd[(d as usize) / 2]);
            } else if d < 0 {
                q = q.add(&odd[(-d) as usize / 2].neg());
            }
        }
    }
    acc.add(&q)
}

fn generator_comb() -> &'static Comb<8> {
    static G: OnceLock<Comb<8>> = OnceLock::new();
    G.get_or_init(|| {
        let g = Affine {
            x: Fe::from_be(&GEN_X).unwrap_or(Fe::ZERO),
            y: Fe::from_be(&GEN_Y).unwrap_or(Fe::ZERO),
        };
        Comb::new(&g)
    })
}

/// The keys seen with a valid signature, with the comb tables of those seen [`BUILD_AFTER`]
/// times or more.
struct Cache {
    clock: u64,
    keys: HashMap<[u8; 64], Seen>,
    tables: usize,
    max_seen: usize,
    max_tables: usize,
}

struct Seen {
    last: u64,
    /// Valid signatures seen under the key.
    valid: u32,
    table: Option<Arc<KeyComb>>,
}

/// Valid signatures a key shows before its table is built. A table costs about eight
/// first-sight verifications (measured in a release build: 670 µs against 82 µs), so a key that signs only a few times (or an attacker's fresh
/// keys, each with a few valid signatures) costs at most about twice the plain path; and
/// invalid signatures never build one.
pub(crate) const BUILD_AFTER: u32 = 8;

fn cache() -> &'static Mutex<Cache> {
    static C: OnceLock<Mutex<Cache>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(Cache::new(SEEN, TABLES)))
}

impl Cache {
    fn new(max_seen: usize, max_tables: usize) -> Self {
        Self { clock: 0, keys: HashMap::new(), tables: 0, max_seen, max_tables }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// `key`'s table, if it has one (and a use of it).
    fn table(&mut self, key: &[u8; 64]) -> Option<Arc<KeyComb>> {
        let now = self.tick();
        let seen = self.keys.get_mut(key)?;
        let table = seen.table.as_ref()?;
        seen.last = now;
        Some(Arc::clone(table))
    }

    /// Notes a valid signature under `key` (which has no table): true when its table should
    /// be built now.
    fn valid(&mut self, key: &[u8; 64]) -> bool {
        let now = self.tick();
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_seen {
            self.forget_oldest();
        }
        let seen = self.keys.entry(*key).or_insert(Seen { last: now, valid: 0, table: None });
        seen.last = now;
        seen.valid = seen.valid.saturating_add(1);
        seen.table.is_none() && seen.valid >= BUILD_AFTER
    }

    /// Keeps `table` for `key`, if the key is still remembered without one; a table of the
    /// least recently used key makes way when [`Self::max_tables`] are kept.
    fn keep(&mut self, key: &[u8; 64], table: Arc<KeyComb>) {
        if self.keys.get(key).is_none_or(|s| s.table.is_some()) {
            return;
        }
        if self.tables >= self.max_tables {
            let oldest =
                self.keys.values_mut().filter(|s| s.table.is_some()).min_by_key(|s| s.last);
            if let Some(s) = oldest {
                s.table = None;
                self.tables -= 1;
            }
        }
        if let Some(seen) = self.keys.get_mut(key) {
            seen.table = Some(table);
            self.tables += 1;
        }
    }

    /// Forgets the least recently seen key (and its table).
    fn forget_oldest(&mut self) {
        let oldest = self.keys.iter().min_by_key(|(_, s)| s.last).map(|(k, _)| *k);
        if let Some(k) = oldest
            && let Some(s) = self.keys.remove(&k)
            && s.table.is_some()
        {
            self.tables -= 1;
        }
    }
}

/// The sum of `terms`, affine points: its two halves summed side by side
/// ([`Jac::add_affine_pair`]), then added.
fn sum_in_halves(terms: &[Affine]) -> Jac {
    let (a, b) = terms.split_at(terms.len() / 2);
    let (mut x, mut y) = (Jac::INFINITY, Jac::INFINITY);
    for (p, q) in a.iter().zip(b) {
        (x, y) = Jac::add_affine_pair(&x, p, &y, q);
    }
    // b is a's length or one more.
    for q in &b[a.len()..] {
        y = y.add_affine(q);
    }
    x.add(&y)
}

/// `x₁ mod n == c` for the affine x₁ of a finite Jacobian point, with c < n: `X = c·Z²`, or
/// `X = (c + n)·Z²` when `c + n < p`.
fn x_mod_n_is(q: &Jac, c: &[u8; 32]) -> bool {
    let z2 = q.z.sq();
    if Fe::from_be(c).is_some_and(|c| c.mul(z2) == q.x) {
        return true;
    }
    // c + n, as 257 bits; a candidate only when below p.
    let (mut sum, mut carry) = ([0u8; 32], 0u16);
    for i in (0..32).rev() {
        let v = u16::from(c[i]) + u16::from(N[i]) + carry;
        sum[i] = v as u8;
        carry = v >> 8;
    }
    carry == 0 && Fe::from_be(&sum).is_some_and(|cn| cn.mul(z2) == q.x)
}

/// Whether `(x₁ mod n) = c` for `(x₁, y₁) = s·G + t·P` (GB/T 32918.2 B6–B7 with `c = (r − e)
/// mod n`): false when the sum is infinity. `key` is the public point `x ‖ y` (validated on
/// the curve by its parser), s and t in [1, n−1], c below n, all big-endian. `tables`: use and
/// make the key's comb table (false only for the benchmark's first-sight figure).
pub(crate) fn check(
    key: &[u8; 64],
    s: &[u8; 32],
    t: &[u8; 32],
    c: &[u8; 32],
    tables: bool,
) -> bool {
    let (Some(x), Some(y)) = (
        Fe::from_be(key[..32].try_into().unwrap_or(&P)),
        Fe::from_be(key[32..].try_into().unwrap_or(&P)),
    ) else {
        return false;
    };
    let p = Affine { x, y };
    let table = if tables { cache().lock().ok().and_then(|mut c| c.table(key)) } else { None };
    let q = match &table {
        Some(table) => {
            // Both combs' points in one list, summed in two halves side by side.
            let mut terms = generator_comb().terms(s);
            terms.extend(table.terms(t));
            sum_in_halves(&terms)
        }
        None => add_multiple_wnaf(generator_comb().add_multiple(Jac::INFINITY, s), &p, t),
    };
    let valid = !q.is_infinity() && x_mod_n_is(&q, c);
    if valid && tables && table.is_none() && cache().lock().is_ok_and(|mut c| c.valid(key)) {
        // Built outside the lock: other verifications go on meanwhile.
        let table = Arc::new(KeyComb::new(&p));
        if let Ok(mut c) = cache().lock() {
            c.keep(key, table);
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;
    use sm2::elliptic_curve::PrimeField;

    use sm2::elliptic_curve::sec1::ToSec1Point;
    use sm2::{ProjectivePoint, Scalar};

    /// fiat-crypto's formally verified Montgomery product, which [`Fe::mul`] replaces
    /// ([`Fe::sq`] is still fiat-crypto's).
    fn fiat_mul(a: Fe, b: Fe) -> Fe {
        let mut o = Mont([0; 4]);
        fp::fiat_sm2_mul(&mut o, &Mont(a.0), &Mont(b.0));
        Fe(o.0)
    }

    /// Field elements (as Montgomery limbs, below p) at the edges of the reduction: 0, 1, p − 1
    /// and its neighbours, single limbs and single 32-bit halves set or clear, every limb at
    /// 2⁶⁴ − 1 where that stays below p.
    fn edge_elements() -> Vec<Fe> {
        let mut out = vec![Fe::ZERO, Fe([1, 0, 0, 0]), Fe::one()];
        for d in 1..=3u64 {
            out.push(Fe([P_LIMBS[0] - d, P_LIMBS[1], P_LIMBS[2], P_LIMBS[3]]));
        }
        for i in 0..4 {
            for v in [u64::MAX, 0xFFFF_FFFF, 0xFFFF_FFFF_0000_0000, 1 << 63, 1] {
                let mut l = [0u64; 4];
                l[i] = v;
                if (l[3], l[2], l[1], l[0]) < (P_LIMBS[3], P_LIMBS[2], P_LIMBS[1], P_LIMBS[0]) {
                    out.push(Fe(l));
                }
                let mut l = P_LIMBS;
                l[0] -= 1; // p − 1 with bits of one limb cleared: still below p
                l[i] &= !v;
                out.push(Fe(l));
            }
        }
        out
    }

    /// The product's last step at its edges: a result from p up to 2²⁵⁶ − 1 with no carry (too
    /// rare for random products to reach), and one past 2²⁵⁶.
    #[test]
    fn the_last_subtraction_of_p_is_taken_exactly_when_it_fits() {
        let below = [P_LIMBS[0] - 1, P_LIMBS[1], P_LIMBS[2], P_LIMBS[3]];
        assert_eq!(sub_p_once(below, 0), below, "p − 1 stays");
        assert_eq!(sub_p_once(P_LIMBS, 0), [0; 4], "p is 0");
        // 2²⁵⁶ − 1 − p = 2²²⁴ + 2⁹⁶ − 2⁶⁴.
        assert_eq!(sub_p_once([u64::MAX; 4], 0), [0, 0xFFFF_FFFF, 0, 1 << 32]);
        // 2²⁵⁶ + 5 − p = 2²²⁴ + 2⁹⁶ − 2⁶⁴ + 6.
        assert_eq!(sub_p_once([5, 0, 0, 0], 1), [6, 0xFFFF_FFFF, 0, 1 << 32]);
    }

    #[test]
    fn the_special_product_agrees_with_fiat_crypto_at_the_edges() {
        let edges = edge_elements();
        for &a in &edges {
            assert_eq!(a.mul(a), a.sq(), "square of {a:?}");
            for &b in &edges {
                assert_eq!(a.mul(b), fiat_mul(a, b), "{a:?} · {b:?}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        #[test]
        fn the_special_product_agrees_with_fiat_crypto(
            a in proptest::array::uniform4(proptest::num::u64::ANY),
            b in proptest::array::uniform4(proptest::num::u64::ANY),
        ) {
            // Below p: the top limb below p's, the others anything.
            let below = |mut l: [u64; 4]| {
                l[3] %= P_LIMBS[3];
                Fe(l)
            };
            let (a, b) = (below(a), below(b));
            proptest::prop_assert_eq!(a.mul(b), fiat_mul(a, b));
            proptest::prop_assert_eq!(a.mul(a), a.sq());
        }
    }

    fn to_affine(q: &Jac) -> Option<([u8; 32], [u8; 32])> {
        if q.is_infinity() {
            return None;
        }
        let zi = q.z.invert();
        let zi2 = zi.sq();
        Some((q.x.mul(zi2).to_be(), q.y.mul(zi2).mul(zi).to_be()))
    }

    fn reference(k: &Scalar, base: &ProjectivePoint) -> Option<([u8; 32], [u8; 32])> {
        let q = (*base * k).to_affine();
        let enc = q.to_sec1_point(false);
        let b = enc.as_bytes();
        if b.len() != 65 {
            return None;
        }
        Some((b[1..33].try_into().unwrap(), b[33..].try_into().unwrap()))
    }

    fn scalar_from(be: [u8; 32]) -> Scalar {
        Option::from(Scalar::from_repr(be.into())).unwrap()
    }

    fn edge_scalars() -> Vec<[u8; 32]> {
        let n_minus = |d: u8| {
            let mut k = N;
            k[31] -= d;
            k
        };
        let small = |v: u8| {
            let mut k = [0u8; 32];
            k[31] = v;
            k
        };
        let mut top = [0u8; 32];
        top[0] = 0x80;
        let mut ones = [0xFFu8; 32];
        ones[0] = 0x7F;
        let mut nibbles = [0x88u8; 32]; // every radix-16 digit at the boundary, no carry
        nibbles[0] = 0x08;
        let mut bytes = [0x80u8; 32];
        bytes[0] = 0x7F;
        vec![
            small(0),
            small(1),
            small(2),
            small(15),
            small(16),
            small(17),
            small(255),
            top,
            ones,
            nibbles,
            bytes,
            n_minus(1),
            n_minus(2),
            n_minus(16),
            n_minus(32),
        ]
    }

    #[test]
    fn the_cache_keeps_at_most_its_limits() {
        let g = generator_comb().points[0];
        let table = Arc::new(KeyComb::new(&g));
        let mut cache = Cache::new(4, 2);
        let key = |i: u8| [i; 64];
        // A table is due at the BUILD_AFTER-th valid signature, not before, and once.
        for i in 0..4 {
            for _ in 1..BUILD_AFTER {
                assert!(!cache.valid(&key(i)));
            }
            assert!(cache.table(&key(i)).is_none());
        }
        // Tables for two keys at most, the least recently used's out first.
        for i in 0..3 {
            assert!(cache.valid(&key(i)), "key {i}'s table is due");
            cache.keep(&key(i), Arc::clone(&table));
        }
        assert_eq!(cache.tables, 2);
        assert!(cache.keys[&key(0)].table.is_none(), "key 0's table made way for key 2's");
        assert!(cache.table(&key(2)).is_some() && cache.table(&key(1)).is_some());
        // Keeping a table for a key that has one, or that is not remembered, changes nothing.
        cache.keep(&key(2), Arc::clone(&table));
        cache.keep(&key(42), Arc::clone(&table));
        assert!(cache.keys[&key(1)].table.is_some() && cache.tables == 2);
        // A fifth key forgets the least recently seen (3).
        assert!(!cache.valid(&key(9)));
        assert_eq!(cache.keys.len(), 4);
        assert!(!cache.keys.contains_key(&key(3)), "key 3 was the least recently seen");
        assert_eq!(cache.tables, 2);
        // Seen again after losing its table: its next valid signature builds one again.
        assert!(cache.valid(&key(0)));
        // Forgetting a key with a table frees its place among the tables.
        let mut cache = Cache::new(2, 2);
        for i in 0..2 {
            for _ in 0..BUILD_AFTER {
                cache.valid(&key(i));
            }
            cache.keep(&key(i), Arc::clone(&table));
        }
        assert_eq!(cache.tables, 2);
        cache.valid(&key(7));
        assert_eq!((cache.keys.len(), cache.tables), (2, 1), "key 0 and its table forgotten");
    }

    #[test]
    fn field_inverse_and_encoding_round_trip() {
        let x = Fe::from_be(&GEN_X).unwrap();
        assert_eq!(x.to_be(), GEN_X);
        assert_eq!(x.mul(x.invert()), Fe::one());
        assert!(Fe::from_be(&P).is_none(), "p itself is not a field element");
        let mut below = P;
        below[31] -= 1;
        assert_eq!(Fe::from_be(&below).unwrap().to_be(), below);
    }

    /// A random public key, as this module's affine point and as RustCrypto's.
    fn random_key() -> (Affine, ProjectivePoint) {
        let key = crate::sm2::SecretKey::generate().unwrap();
        let enc = key.public_key().to_sec1_uncompressed();
        let p = Affine {
            x: Fe::from_be(enc[1..33].try_into().unwrap()).unwrap(),
            y: Fe::from_be(enc[33..].try_into().unwrap()).unwrap(),
        };
        (p, sm2::PublicKey::from_sec1_bytes(&enc).unwrap().to_projective())
    }

    #[test]
    fn combs_of_every_width_match_rustcrypto_with_windows_across_limbs() {
        fn check<const W: usize>(p: &Affine, pp: &ProjectivePoint) {
            let comb = Comb::<W>::new(p);
            // Every window's digit at the boundary 2^(W−1) (no carry), and one past it (a
            // carry into every next window; when W divides 256, the top one's into the carry
            // digit, for the scalars below n).
            let mut boundary = [0u8; 32];
            let mut past = [0u8; 32];
            for bit in (W - 1..256).step_by(W) {
                boundary[31 - bit / 8] |= 1 << (bit % 8);
                past[31 - bit / 8] |= 1 << (bit % 8);
                if bit > 0 {
                    past[31 - (bit - 1) / 8] |= 1 << ((bit - 1) % 8);
                }
            }
            let mut scalars = edge_scalars();
            scalars.extend([boundary, past]);
            for i in 0..8u8 {
                scalars.push(crate::sm3::hash([W as u8, i]).0);
            }
            for k in scalars {
                let Some(s) = Option::<Scalar>::from(Scalar::from_repr(k.into())) else {
                    continue;
                };
                assert_eq!(
                    to_affine(&comb.add_multiple(Jac::INFINITY, &k)),
                    reference(&s, pp),
                    "k·P by a radix-2^{W} comb, k = {}",
                    hex::encode(k)
                );
            }
        }
        let (p, pp) = random_key();
        check::<2>(&p, &pp);
        check::<4>(&p, &pp);
        check::<5>(&p, &pp);
        check::<6>(&p, &pp);
        check::<7>(&p, &pp);
        check::<8>(&p, &pp);
    }

    #[test]
    fn sums_in_halves_match_rustcrypto_through_every_exceptional_case() {
        // Terms k·P, and the expected sum by RustCrypto: (Σk)·P.
        let (p, pp) = random_key();
        let multiple = |k: i64| -> Affine {
            let mut acc = Jac::INFINITY;
            for _ in 0..k.unsigned_abs() {
                acc = acc.add_affine(&p);
            }
            let a = normalize(&[acc])[0];
            if k < 0 { a.neg() } else { a }
        };
        // Each list is split in halves: [1, 1, 5, 2, 3, 4] sums 1, 1, 5 beside 2, 3, 4. Every
        // sum starts at infinity, so every list's first step takes the separate additions.
        let cases: &[&[i64]] = &[
            &[1],                      // a half with nothing in it
            &[1, 1],                   // both halves at P: P + P (doubling) in the final sum
            &[1, -1, 1, -1],           // both halves at infinity, then infinity + infinity
            &[1, 1, 1, 1, 1],          // P + P in both halves at once, a term alone after
            &[1, 1, 5, 2, 3, 4],       // P + P in one half while the other adds 2P + 3P
            &[1, -1, 2, 3, 4, 5],      // one half at infinity mid-way, then going on
            &[1, 2, 3, -2, -1, -3],    // 3P + 3P beside −3P − 3P, then opposite sums: infinity
            &[2, 1, 4, 3, 5, 7, 9, 6], // paired steps with nothing exceptional after the first
        ];
        for ks in cases {
            let terms: Vec<Affine> = ks.iter().map(|&k| multiple(k)).collect();
            let total: i64 = ks.iter().sum();
            let expected = if total == 0 {
                None
            } else {
                let k = Scalar::from(total.unsigned_abs());
                let k = if total < 0 { -k } else { k };
                reference(&k, &pp)
            };
            assert_eq!(to_affine(&sum_in_halves(&terms)), expected, "{ks:?}");
        }
    }

    #[test]
    fn combs_and_wnaf_match_rustcrypto_on_edge_and_random_scalars() {
        let g = ProjectivePoint::GENERATOR;
        let (p, pp) = random_key();
        let comb = KeyComb::new(&p);
        let mut scalars = edge_scalars();
        for i in 0..40u8 {
            scalars.push(crate::sm3::hash([i]).0); // skipped below if ≥ n
        }
        for k in scalars {
            let Some(s) = Option::<Scalar>::from(Scalar::from_repr(k.into())) else { continue };
            assert_eq!(
                to_affine(&generator_comb().add_multiple(Jac::INFINITY, &k)),
                reference(&s, &g),
                "k·G by the comb, k = {}",
                hex::encode(k)
            );
            assert_eq!(
                to_affine(&comb.add_multiple(Jac::INFINITY, &k)),
                reference(&s, &pp),
                "k·P by the key's comb"
            );
            assert_eq!(
                to_affine(&add_multiple_wnaf(Jac::INFINITY, &p, &k)),
                reference(&s, &pp),
                "k·P by wNAF"
            );
        }
        // Sums that meet the exceptional cases: P + P (doubling) and P + (−P) (infinity).
        let one = edge_scalars()[1];
        let twice = comb.add_multiple(Jac::from_affine(&p), &one);
        assert_eq!(to_affine(&twice), reference(&scalar_from(edge_scalars()[2]), &pp));
        let minus_one = edge_scalars()[11];
        assert!(comb.add_multiple(Jac::from_affine(&p), &minus_one).is_infinity());
        assert!(add_multiple_wnaf(Jac::from_affine(&p), &p, &minus_one).is_infinity());
        let twice = add_multiple_wnaf(Jac::from_affine(&p), &p, &one);
        assert_eq!(to_affine(&twice), reference(&scalar_from(edge_scalars()[2]), &pp));
    }

    #[test]
    fn wnaf_digits_are_odd_sparse_and_sum_to_the_scalar() {
        for k in edge_scalars() {
            let d = wnaf5(&k);
            let mut last = None;
            for (i, &v) in d.iter().enumerate() {
                if v != 0 {
                    assert!(v % 2 != 0 && (-15..=15).contains(&v));
                    if let Some(l) = last {
                        assert!(i - l >= 5, "two nonzero digits within the width");
                    }
                    last = Some(i);
                }
            }
            // Σ d_i·2^i mod n equals k mod n.
            let mut sum = Scalar::ZERO;
            let mut pow = Scalar::ONE;
            for &v in &d {
                let m = Scalar::from(u64::from(v.unsigned_abs()));
                sum = if v >= 0 { sum + pow * m } else { sum - pow * m };
                pow = pow.double();
            }
            let reduced = Option::<Scalar>::from(Scalar::from_repr(k.into()));
            if let Some(k) = reduced {
                assert_eq!(sum, k);
            }
        }
    }

    #[test]
    fn the_final_comparison_takes_x_at_or_above_n() {
        // Points whose x lies in [n, p): x₁ mod n = x₁ − n, the case `X = (c + n)·Z²`; one
        // just above n, one just below p (c + n then carries through most bytes).
        for (start, step) in [(N, 1i16), (P, -1)] {
            let mut x = start;
            let point = loop {
                x[31] = (i16::from(x[31]) + step) as u8;
                let mut sec1 = vec![2u8];
                sec1.extend_from_slice(&x);
                if let Ok(p) = sm2::PublicKey::from_sec1_bytes(&sec1) {
                    break p;
                }
            };
            comparison_at(&point, &x);
        }
    }

    fn comparison_at(point: &sm2::PublicKey, x: &[u8; 32]) {
        let enc = point.to_sec1_point(false);
        let b = enc.as_bytes();
        let a = Affine {
            x: Fe::from_be(b[1..33].try_into().unwrap()).unwrap(),
            y: Fe::from_be(b[33..].try_into().unwrap()).unwrap(),
        };
        // The same point with Z = 7.
        let z = Fe::from_be(&{
            let mut s = [0u8; 32];
            s[31] = 7;
            s
        })
        .unwrap();
        let q = Jac { x: a.x.mul(z.sq()), y: a.y.mul(z.sq()).mul(z), z };
        let mut c = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let v = i16::from(x[i]) - i16::from(N[i]) - borrow;
            c[i] = v.rem_euclid(256) as u8;
            borrow = i16::from(v < 0);
        }
        assert!(x_mod_n_is(&q, &c), "x − n");
        let mut off = c;
        off[31] ^= 1;
        assert!(!x_mod_n_is(&q, &off), "another c");
    }

    /// c + n past 2²⁵⁶ is no candidate: for c = x₁ + 2²⁵⁶ − n (below n), c + n truncated to
    /// 256 bits would be x₁ itself, yet x₁ mod n ≠ c.
    #[test]
    fn a_c_plus_n_past_two_to_the_256_is_not_taken() {
        let g = generator_comb().points[0];
        let q = Jac::from_affine(&g);
        let x = g.x.to_be();
        // 2²⁵⁶ − n, then c = x + (2²⁵⁶ − n) (no overflow: x < n − (2²⁵⁶ − n) for G).
        let mut m = [0u8; 32];
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let v = 0 - i16::from(N[i]) - borrow;
            m[i] = v.rem_euclid(256) as u8;
            borrow = i16::from(v < 0);
        }
        let mut c = [0u8; 32];
        let mut carry = 0u16;
        for i in (0..32).rev() {
            let v = u16::from(x[i]) + u16::from(m[i]) + carry;
            c[i] = v as u8;
            carry = v >> 8;
        }
        assert!(carry == 0 && c < N, "c below n");
        assert!(!x_mod_n_is(&q, &c));
        assert!(x_mod_n_is(&q, &x), "x₁ itself (below n) is");
    }
}

#!/usr/bin/env python3
"""Independent verifier of vpbox proof bundles, written from docs/proof-format.md alone.

Usage:
    independent_verifier.py [DIR]                       check every test vector of DIR
    independent_verifier.py verify FILE --genesis-hash HEX [--slip SLIP]
                            [--json]

Standard library plus `gmssl` (SM3, SM2 point arithmetic). X.509 is parsed by a small DER
reader below; no vpbox code or binary is used.
"""

import base64
import calendar
import functools
import json
import os
import re
import sys
import time

from gmssl import sm2 as gm_sm2
from gmssl import sm3 as gm_sm3


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------

class Refused(Exception):
    """A bundle is refused with one of the reason names of §7."""

    def __init__(self, reason, detail):
        super().__init__(f"{detail} ({reason})")
        self.reason = reason
        self.detail = detail


class DecodeError(Exception):
    """A byte string does not decode (mapped to a reason by the caller)."""


# ---------------------------------------------------------------------------------------------
# SM3 and SM2 (§1)
# ---------------------------------------------------------------------------------------------

def sm3(data):
    """SM3 digest (32 bytes) of `data`, by gmssl."""
    return bytes.fromhex(gm_sm3.sm3_hash(list(data)))


_T = gm_sm2.default_ecc_table
SM2_N = int(_T["n"], 16)
SM2_P = int(_T["p"], 16)
SM2_A = int(_T["a"], 16)
SM2_B = int(_T["b"], 16)
SM2_G = bytes.fromhex(_T["g"])          # xG ‖ yG, 64 bytes
SM2_ID = b"1234567812345678"            # §1: ENTL = 16 * 8 = 0x0080

TAG_TX = b"VPBOX/tx/v1"
TAG_CONSENSUS = b"VPBOX/consensus/v1"
TAG_GOVERNANCE = b"VPBOX/governance/v1"


def framed(tag, payload):
    """The domain-separated message M = tag ‖ 0x00 ‖ payload (§1)."""
    return tag + b"\x00" + payload


def on_curve(point):
    """True when `point` is an uncompressed SEC1 point of the SM2 curve."""
    if len(point) != 65 or point[0] != 4:
        return False
    x = int.from_bytes(point[1:33], "big")
    y = int.from_bytes(point[33:], "big")
    if not (x < SM2_P and y < SM2_P):
        return False
    return (y * y - (x * x * x + SM2_A * x + SM2_B)) % SM2_P == 0


@functools.lru_cache(maxsize=4096)
def sm2_verify(point, message, r, s):
    """SM2 verification of (r, s) over `message` under `point`, with ID 1234567812345678.

    e = SM3(Z ‖ M) with Z = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA) (§1) is computed here:
    gmssl's own `_sm3_z` uses its `public_key` after `lstrip("04")`, which damages keys whose
    x coordinate begins with hex digits 0 or 4, and `verify` checks neither the range of r, s
    nor the key; so only gmssl's `verify(sig, e)` (the curve arithmetic) is used.
    """
    if not on_curve(point) or not (1 <= r < SM2_N and 1 <= s < SM2_N):
        return False
    z = sm3(b"\x00\x80" + SM2_ID + SM2_A.to_bytes(32, "big") + SM2_B.to_bytes(32, "big")
            + SM2_G + point[1:])
    e = sm3(z + message)
    crypt = gm_sm2.CryptSM2(private_key=None, public_key="00" * 64)
    crypt.public_key = point[1:].hex()       # set directly: no lstrip damage
    try:
        return crypt.verify("%064x%064x" % (r, s), e) is True
    except Exception:                        # point at infinity and the like
        return False


def sm2_verify_raw(point, message, sig):
    """Verify a raw r ‖ s signature (64 bytes, §1)."""
    if len(sig) != 64:
        return False
    return sm2_verify(point, message, int.from_bytes(sig[:32], "big"),
                      int.from_bytes(sig[32:], "big"))


def sm2_verify_der(point, message, sig):
    """Verify a DER `SEQUENCE { INTEGER r, INTEGER s }` signature (§1)."""
    try:
        tag, a, b, nxt = der_tlv(sig, 0, len(sig))
        if tag != 0x30 or nxt != len(sig):
            return False
        rs = der_children(sig, a, b)
        if len(rs) != 2 or rs[0][0] != 0x02 or rs[1][0] != 0x02:
            return False
        r = der_integer(sig, rs[0][1], rs[0][2])
        s = der_integer(sig, rs[1][1], rs[1][2])
    except DecodeError:
        return False
    return sm2_verify(point, message, r, s)


# ---------------------------------------------------------------------------------------------
# A strict, bounded binary reader (§1, §2)
# ---------------------------------------------------------------------------------------------

class Reader:
    """Big-endian reader over bytes; every failure raises DecodeError."""

    def __init__(self, data):
        self.data = data
        self.pos = 0

    def remaining(self):
        return len(self.data) - self.pos

    def take(self, n):
        if n < 0 or n > self.remaining():
            raise DecodeError(f"truncated at byte {self.pos} (need {n})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def uint(self, n):
        return int.from_bytes(self.take(n), "big")

    def u8(self):
        return self.uint(1)

    def u16(self):
        return self.uint(2)

    def u32(self):
        return self.uint(4)

    def u64(self):
        return self.uint(8)

    def bytes_(self, limit, what="bytes"):
        """`bytes` = len:u32 then len bytes, len ≤ limit."""
        n = self.u32()
        if n > limit:
            raise DecodeError(f"{what}: length {n} above {limit}")
        return self.take(n)

    def str_(self, limit=None, what="str"):
        """`str` = len:u16 then UTF-8."""
        n = self.u16()
        if limit is not None and n > limit:
            raise DecodeError(f"{what}: length {n} above {limit}")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError(f"{what}: not UTF-8")

    def count(self, limit, min_each, what):
        """A u32 count ≤ limit whose elements (≥ min_each bytes) fit in what remains (§2)."""
        n = self.u32()
        if n > limit:
            raise DecodeError(f"{what}: count {n} above {limit}")
        if n * min_each > self.remaining():
            raise DecodeError(f"{what}: count {n} above what the remaining bytes hold")
        return n

    def end(self, what):
        if self.remaining():
            raise DecodeError(f"{what}: {self.remaining()} trailing bytes")


# ---------------------------------------------------------------------------------------------
# The bundle (§2)
# ---------------------------------------------------------------------------------------------

MAGIC = b"VPBOX-PROOF\x00"
MAX_BUNDLE = 64 << 20
HEADER_LEN = 157
EVIDENCE_MIN = HEADER_LEN + 4 + 4 + 4
PROVEN_MIN = 8


def decode_header(raw):
    """Block header (§3.3), 157 bytes."""
    r = Reader(raw)
    h = {"raw": raw, "version": r.u8(), "height": r.u64(), "parent": r.take(32),
         "tx_root": r.take(32), "results_root": r.take(32), "tx_count": r.u32(),
         "timestamp_ms": r.u64(), "gov_seq": r.u64(), "state_root": r.take(32)}
    r.end("header")
    if h["version"] != 3:                      # §3.3 version:u8=3 (part of the encoding)
        raise DecodeError(f"header version {h['version']}")
    return h


def read_evidence(r):
    """evidence = header ntx tx_hash* certificate nresult result* (§2)."""
    header = decode_header(r.take(HEADER_LEN))
    ntx = r.count(100000, 32, "ntx")
    tx_hashes = [r.take(32) for _ in range(ntx)]
    certificate = r.bytes_(65536, "certificate")
    nresult = r.count(ntx, 8, "nresult")
    results = []
    for _ in range(nresult):
        index = r.u32()
        results.append((index, r.bytes_(10000, "codes")))
    return {"header": header, "tx_hashes": tx_hashes, "certificate": certificate,
            "results": results}


def read_proven(r):
    """proven = index:u32 tx:bytes (≤ 640118) (§2)."""
    index = r.u32()
    return {"index": index, "tx": r.bytes_(640118, "tx")}


def decode_bundle(data):
    """Decode a whole bundle (§2); DecodeError on any deviation."""
    if len(data) > MAX_BUNDLE:
        raise DecodeError("bundle above 64 MiB")
    r = Reader(data)
    if r.take(12) != MAGIC:
        raise DecodeError("wrong magic")
    version = r.u8()
    if version != 2:
        raise DecodeError(f"version {version}")
    kind = r.u8()
    if kind not in (1, 2, 3):
        raise DecodeError(f"kind {kind}")
    b = {"kind": kind, "genesis": r.bytes_(1 << 20, "genesis")}
    govblocks = []
    for _ in range(r.count(4096, EVIDENCE_MIN + 8, "ngov")):
        evidence = read_evidence(r)
        proven = [read_proven(r) for _ in range(r.count(256, PROVEN_MIN, "nconfig"))]
        admins = [r.bytes_(65536, "admin chain") for _ in range(r.count(1024, 4, "nadmin"))]
        govblocks.append({"evidence": evidence, "proven": proven, "admins": admins})
    b["govblocks"] = govblocks
    if kind == 1:
        b["evidence"] = read_evidence(r)
        b["key"] = r.take(32)
        b["proven"] = read_proven(r)
        b["enrollment"] = {"evidence": read_evidence(r), "proven": read_proven(r)}
    elif kind == 3:
        b["evidence"] = read_evidence(r)
        b["key"] = r.take(32)
        nsib = r.u16()                                 # path (§2): at most 256 siblings
        if nsib > 256:
            raise DecodeError(f"state path of {nsib} siblings")
        b["siblings"] = [r.take(32) for _ in range(nsib)]
        tag = r.u8()
        if tag == 0:
            b["leaf"] = None
        elif tag == 1:
            b["leaf"] = {"key": r.take(32), "value": r.take(32), "tx": r.take(32),
                         "height": r.u64()}
        else:
            raise DecodeError(f"state path terminal {tag}")
    else:
        b["from"] = read_evidence(r)
        n = r.count(300000, HEADER_LEN, "nheaders")
        b["headers"] = [decode_header(r.take(HEADER_LEN)) for _ in range(n)]
        b["to"] = read_evidence(r)
    r.end("bundle")
    return b


# ---------------------------------------------------------------------------------------------
# Transactions, certificates, configuration (§3.2, §3.4, §3.6)
# ---------------------------------------------------------------------------------------------

def decode_tx(raw):
    """tx = body signature:[64]; returns the body fields, raw body and signature (§3.2)."""
    r = Reader(raw)
    if r.u8() != 1:
        raise DecodeError("tx version")
    kind = r.u8()
    tx = {"kind": kind, "submitter": r.take(32), "nonce": r.u64(), "timestamp_ms": r.u64()}
    if kind == 1:
        tx["pairs"] = [(r.take(32), r.take(32))]
    elif kind == 2:
        n = r.u32()
        if not 1 <= n <= 10000:
            raise DecodeError(f"batch count {n}")
        tx["pairs"] = [(r.take(32), r.take(32)) for _ in range(n)]
    elif kind == 3:
        tx["config"] = r.bytes_(65536, "config")
    elif kind == 4:
        tx["chain"] = r.bytes_(16384, "enroll chain")
    elif kind == 5:
        tx["crl"] = r.bytes_(524288, "crl")
    else:
        raise DecodeError(f"tx kind {kind}")
    tx["body"] = raw[:r.pos]
    tx["signature"] = r.take(64)
    r.end("tx")
    return tx


def decode_certificate(raw):
    """The commit certificate (§3.4)."""
    r = Reader(raw)
    if r.u8() != 1:
        raise DecodeError("certificate version")
    c = {"view": r.u64(), "seq": r.u64(), "block": r.take(32)}
    n = r.u32()
    if n * 5 > r.remaining():
        raise DecodeError("certificate count above what the remaining bytes hold")
    sigs = []
    for _ in range(n):
        node_id = r.u32()
        sigs.append((node_id, r.take(r.u8())))
    c["sigs"] = sigs
    r.end("certificate")
    return c


def decode_config(raw):
    """config = proposal:bytes approvals:u8 (≤ 64) (admin sig_len sig)* (§3.6)."""
    r = Reader(raw)
    proposal = r.bytes_(len(raw), "proposal")
    n = r.u8()
    if n > 64:
        raise DecodeError(f"{n} approvals")
    approvals = []
    for _ in range(n):
        admin = r.take(32)
        approvals.append((admin, r.take(r.u8())))
    r.end("config")
    return {"proposal": proposal, "approvals": approvals}


def decode_proposal(raw):
    """proposal = version:u8=2 chain seq count change* (§3.6)."""
    r = Reader(raw)
    if r.u8() != 2:
        raise DecodeError("proposal version")
    p = {"chain": r.take(32), "seq": r.u64()}
    n = r.u8()
    if not 1 <= n <= 32:
        raise DecodeError(f"{n} changes")
    changes = []
    for _ in range(n):
        tag = r.u8()
        if tag == 1:
            changes.append(("AddRoot", r.bytes_(16384, "root")))
        elif tag == 2:
            changes.append(("RemoveRoot", r.take(32)))
        elif tag == 3:
            changes.append(("RemoveBank", r.str_(256, "bank")))
        elif tag == 4:
            node = {"id": r.u32(), "bank": r.str_(None, "bank"), "name": r.str_(None, "name"),
                    "key": r.take(65), "certificate": r.bytes_(16384, "node certificate")}
            changes.append(("AddNode", node))
        elif tag == 5:
            changes.append(("RemoveNode", r.u32()))
        else:
            raise DecodeError(f"change tag {tag}")
    p["changes"] = changes
    r.end("proposal")
    return p


# ---------------------------------------------------------------------------------------------
# DER and X.509 (§6)
# ---------------------------------------------------------------------------------------------

OID_EC_PUBLIC_KEY = "1.2.840.10045.2.1"
OID_SM2P256V1 = "1.2.156.10197.1.301"
OID_SM2_SM3 = "1.2.156.10197.1.501"
OID_O, OID_OU, OID_CN = "2.5.4.10", "2.5.4.11", "2.5.4.3"
OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, OID_EKU = "2.5.29.19", "2.5.29.15", "2.5.29.37"
OID_SERVER_AUTH, OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"
KEY_CERT_SIGN = 5                                  # keyUsage bit number


def der_tlv(buf, pos, end):
    """One DER TLV at pos: (tag, content start, content end, next position)."""
    if pos + 2 > end:
        raise DecodeError("DER: truncated")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise DecodeError("DER: high tag number")
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > end or buf[pos] == 0:
            raise DecodeError("DER: bad length")
        n = int.from_bytes(buf[pos:pos + k], "big")
        if n < 0x80:
            raise DecodeError("DER: non-minimal length")
        pos += k
    if pos + n > end:
        raise DecodeError("DER: truncated content")
    return tag, pos, pos + n, pos + n


def der_children(buf, start, end):
    """The TLVs inside a constructed value, as (tag, start, end, full_start)."""
    out = []
    pos = start
    while pos < end:
        tag, a, b, nxt = der_tlv(buf, pos, end)
        out.append((tag, a, b, pos))
        pos = nxt
    return out


def der_integer(buf, a, b):
    """A non-negative DER INTEGER."""
    if a == b or (b - a > 1 and buf[a] == 0 and buf[a + 1] < 0x80) or buf[a] & 0x80:
        raise DecodeError("DER: bad INTEGER")
    return int.from_bytes(buf[a:b], "big")


def der_oid(buf, a, b):
    """A DER OBJECT IDENTIFIER as dotted text."""
    if a == b:
        raise DecodeError("DER: empty OID")
    arcs, v = [], 0
    for i in range(a, b):
        v = (v << 7) | (buf[i] & 0x7F)
        if not buf[i] & 0x80:
            arcs.append(v)
            v = 0
    if buf[b - 1] & 0x80:
        raise DecodeError("DER: bad OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(x) for x in [first, arcs[0] - 40 * first] + arcs[1:])


def der_string(buf, tag, a, b):
    """A directory string value."""
    raw = bytes(buf[a:b])
    try:
        if tag == 0x1E:
            return raw.decode("utf-16-be")
        if tag == 0x1C:
            return raw.decode("utf-32-be")
        if tag in (0x13, 0x16, 0x14):
            return raw.decode("latin-1")
        if tag == 0x0C:
            return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    raise DecodeError("DER: bad string")


def der_time(buf, tag, a, b):
    """UTCTime or GeneralizedTime (…Z) as seconds since the epoch."""
    text = bytes(buf[a:b]).decode("ascii", "replace")
    if tag == 0x17 and re.fullmatch(r"\d{12}Z", text):
        year = int(text[:2])
        year += 2000 if year < 50 else 1900
        rest = text[2:]
    elif tag == 0x18 and re.fullmatch(r"\d{14}Z", text):
        year, rest = int(text[:4]), text[4:]
    else:
        raise DecodeError("DER: bad time")
    mo, d, hh, mm, ss = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    return calendar.timegm((year, mo, d, hh, mm, ss, 0, 0, 0))


def der_name(buf, a, b):
    """Name: the attributes {oid: [values]}."""
    attrs = {}
    for tag, sa, sb, _ in der_children(buf, a, b):
        if tag != 0x31:
            raise DecodeError("DER: bad RDN")
        for tag2, ta, tb, _ in der_children(buf, sa, sb):
            parts = der_children(buf, ta, tb)
            if tag2 != 0x30 or len(parts) != 2 or parts[0][0] != 0x06:
                raise DecodeError("DER: bad attribute")
            oid = der_oid(buf, parts[0][1], parts[0][2])
            if oid in (OID_O, OID_OU, OID_CN):
                attrs.setdefault(oid, []).append(der_string(buf, *parts[1][:3]))
    return attrs


class X509:
    """The parts of an SM2 X.509 v3 certificate that §6 needs."""

    def __init__(self, der):
        self.der = der
        buf = der
        tag, a, b, nxt = der_tlv(buf, 0, len(buf))
        if tag != 0x30 or nxt != len(buf):
            raise DecodeError("X.509: not one SEQUENCE")
        top = der_children(buf, a, b)
        if len(top) != 3 or top[0][0] != 0x30 or top[1][0] != 0x30 or top[2][0] != 0x03:
            raise DecodeError("X.509: bad Certificate")
        self.tbs = buf[top[0][3]:top[0][2]]
        outer_alg = buf[top[1][3]:top[1][2]]
        bits = buf[top[2][1]:top[2][2]]
        if not bits or bits[0] != 0:
            raise DecodeError("X.509: bad signature BIT STRING")
        self.signature = bytes(bits[1:])
        if self._alg(buf, top[1]) != OID_SM2_SM3:
            raise DecodeError("X.509: signature algorithm is not SM2-with-SM3")

        f = der_children(buf, top[0][1], top[0][2])
        i = 0
        if f and f[0][0] == 0xA0:
            ver = der_children(buf, f[0][1], f[0][2])
            if len(ver) != 1 or ver[0][0] != 0x02:
                raise DecodeError("X.509: bad version")
            self.version = der_integer(buf, ver[0][1], ver[0][2]) + 1
            i = 1
        else:
            self.version = 1
        if self.version != 3:
            raise DecodeError("X.509: not v3")
        if len(f) < i + 6:
            raise DecodeError("X.509: short TBSCertificate")
        serial, alg, issuer, validity, subject, spki = f[i:i + 6]
        if serial[0] != 0x02 or alg[0] != 0x30 or issuer[0] != 0x30 or validity[0] != 0x30 \
                or subject[0] != 0x30 or spki[0] != 0x30:
            raise DecodeError("X.509: bad TBSCertificate")
        if buf[alg[3]:alg[2]] != outer_alg:
            raise DecodeError("X.509: inner and outer signature algorithms differ")
        self.issuer_der = buf[issuer[3]:issuer[2]]
        self.subject_der = buf[subject[3]:subject[2]]
        self.subject = der_name(buf, subject[1], subject[2])
        times = der_children(buf, validity[1], validity[2])
        if len(times) != 2:
            raise DecodeError("X.509: bad validity")
        self.not_before = der_time(buf, *times[0][:3])
        self.not_after = der_time(buf, *times[1][:3])
        self.spki = buf[spki[3]:spki[2]]
        self.point = self._sm2_point(buf, spki)
        self.fingerprint = sm3(self.spki)          # §1 key fingerprint

        self.is_ca, self.path_len, self.key_usage, self.eku = False, None, None, None
        for tag, ea, eb, _ in f[i + 6:]:
            if tag == 0xA3:
                self._extensions(buf, ea, eb)
            elif tag not in (0x81, 0x82):
                raise DecodeError("X.509: unexpected TBSCertificate field")

    @staticmethod
    def _alg(buf, node):
        parts = der_children(buf, node[1], node[2])
        if not parts or parts[0][0] != 0x06:
            raise DecodeError("X.509: bad AlgorithmIdentifier")
        return der_oid(buf, parts[0][1], parts[0][2])

    @staticmethod
    def _sm2_point(buf, spki):
        parts = der_children(buf, spki[1], spki[2])
        if len(parts) != 2 or parts[0][0] != 0x30 or parts[1][0] != 0x03:
            raise DecodeError("X.509: bad SubjectPublicKeyInfo")
        alg = der_children(buf, parts[0][1], parts[0][2])
        if len(alg) != 2 or alg[0][0] != 0x06 or alg[1][0] != 0x06 \
                or der_oid(buf, alg[0][1], alg[0][2]) != OID_EC_PUBLIC_KEY \
                or der_oid(buf, alg[1][1], alg[1][2]) != OID_SM2P256V1:
            raise DecodeError("X.509: not an SM2 key")
        key = bytes(buf[parts[1][1]:parts[1][2]])
        if not key or key[0] != 0 or not on_curve(key[1:]):
            raise DecodeError("X.509: bad SM2 point")
        return key[1:]

    def _extensions(self, buf, a, b):
        seq = der_children(buf, a, b)
        if len(seq) != 1 or seq[0][0] != 0x30:
            raise DecodeError("X.509: bad extensions")
        seen = set()
        for tag, xa, xb, _ in der_children(buf, seq[0][1], seq[0][2]):
            parts = der_children(buf, xa, xb)
            if tag != 0x30 or len(parts) not in (2, 3) or parts[0][0] != 0x06 \
                    or parts[-1][0] != 0x04:
                raise DecodeError("X.509: bad extension")
            oid = der_oid(buf, parts[0][1], parts[0][2])
            if oid in seen:
                raise DecodeError("X.509: duplicate extension")
            seen.add(oid)
            va, vb = parts[-1][1], parts[-1][2]
            t, ca, cb, nxt = der_tlv(buf, va, vb)
            if nxt != vb:
                raise DecodeError("X.509: trailing bytes in extension")
            if oid == OID_BASIC_CONSTRAINTS:
                if t != 0x30:
                    raise DecodeError("X.509: bad basicConstraints")
                for t2, pa, pb, _ in der_children(buf, ca, cb):
                    if t2 == 0x01:
                        self.is_ca = pb - pa == 1 and buf[pa] == 0xFF
                    elif t2 == 0x02:
                        self.path_len = der_integer(buf, pa, pb)
                    else:
                        raise DecodeError("X.509: bad basicConstraints")
            elif oid == OID_KEY_USAGE:
                if t != 0x03 or cb == ca:
                    raise DecodeError("X.509: bad keyUsage")
                unused, data = buf[ca], buf[ca + 1:cb]
                self.key_usage = {i for i in range(len(data) * 8 - unused)
                                  if data[i // 8] & (0x80 >> (i % 8))}
            elif oid == OID_EKU:
                if t != 0x30:
                    raise DecodeError("X.509: bad extendedKeyUsage")
                self.eku = {der_oid(buf, pa, pb) for t2, pa, pb, _ in der_children(buf, ca, cb)
                            if t2 == 0x06}

    def one(self, oid):
        """The single value of a subject attribute, or None (absent or repeated)."""
        values = self.subject.get(oid, [])
        return values[0] if len(values) == 1 else None

    @property
    def bank(self):
        return self.one(OID_O)

    def signed_by(self, issuer):
        """This certificate's signature verifies under `issuer`'s key (§6.1)."""
        return sm2_verify_der(issuer.point, self.tbs, self.signature)

    def valid_at(self, t_ms):
        """Within notBefore..notAfter at t (ms; the certificate's times are seconds)."""
        return self.not_before * 1000 <= t_ms <= self.not_after * 1000


@functools.lru_cache(maxsize=1024)
def parse_x509(der):
    """Parse (cached) one DER certificate; DecodeError on anything unexpected."""
    try:
        return X509(der)
    except (IndexError, ValueError, UnicodeError) as e:
        raise DecodeError(f"X.509: {e}")


def split_chain(raw):
    """A certificate chain (§2): DER certificates concatenated, leaf first, 1 to 3 of them."""
    certs, pos = [], 0
    while pos < len(raw):
        tag, a, b, nxt = der_tlv(raw, pos, len(raw))
        if tag != 0x30:
            raise DecodeError("chain: not a certificate")
        certs.append(parse_x509(bytes(raw[pos:nxt])))
        pos = nxt
    if not 1 <= len(certs) <= 3:
        raise DecodeError(f"chain of {len(certs)} certificates")
    return certs


def pem_certificates(text):
    """DER of each PEM CERTIFICATE block in `text`."""
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text,
                        re.S)
    try:
        return [base64.b64decode("".join(b.split()), validate=True) for b in blocks]
    except ValueError:
        raise DecodeError("PEM: bad base64")


class NotAdmitted(Exception):
    """A chain is not admitted (§6)."""


def admit(chain_raw, role, t_ms, roots):
    """Admit a chain in `role` at `t_ms` under `roots` (§6); returns the leaf, or raises."""
    try:
        certs = split_chain(chain_raw)
    except DecodeError as e:
        raise NotAdmitted(str(e))
    leaf, cas = certs[0], certs[1:]
    # §6.1: walk up from the leaf; each issuer is a CA of the chain or a root.
    path, used, root = [leaf], set(), None
    while root is None:
        cur = path[-1]
        root = next((r for r in roots if r.der == cur.der), None)
        if root is not None:                      # the chain carries the root itself
            break
        root = next((r for r in roots
                     if r.subject_der == cur.issuer_der and cur.signed_by(r)), None)
        if root is not None:
            path.append(root)
            break
        nxt = next((i for i, c in enumerate(cas) if i not in used
                    and c.subject_der == cur.issuer_der and cur.signed_by(c)), None)
        if nxt is None:
            raise NotAdmitted("no issuer among the chain and the roots")
        used.add(nxt)
        path.append(cas[nxt])
    if len(used) != len(cas):
        raise NotAdmitted("a certificate of the chain is not on the path")
    if root is leaf:
        raise NotAdmitted("the leaf is a root")
    bank = root.bank
    # §6.2: validity, basicConstraints, keyUsage, bank, path length.
    if not leaf.valid_at(t_ms):
        raise NotAdmitted("leaf outside its validity period")
    if leaf.is_ca:
        raise NotAdmitted("leaf is a CA")
    for ca in cas:
        if not ca.valid_at(t_ms):
            raise NotAdmitted("issuing CA outside its validity period")
        if not ca.is_ca or ca.key_usage is None or KEY_CERT_SIGN not in ca.key_usage:
            raise NotAdmitted("issuing CA is not a CA with keyCertSign")
        if ca.bank != bank:
            raise NotAdmitted("issuing CA of another bank than its root")
    # Path length: a CA at path position p (leaf = 0) has p − 1 CAs below it.
    for pos, ca in enumerate(path[1:], start=1):
        if ca.path_len is not None and ca.path_len < pos - 1:
            raise NotAdmitted("path length exceeded")
    # §6.3: OU and extendedKeyUsage.
    if leaf.one(OID_OU) != role:
        raise NotAdmitted(f"leaf OU is not {role}")
    need = {OID_CLIENT_AUTH} | ({OID_SERVER_AUTH} if role == "vp-node" else set())
    if leaf.eku is None or not need <= leaf.eku:
        raise NotAdmitted("extendedKeyUsage lacks " + ("serverAuth and clientAuth"
                                                       if role == "vp-node" else "clientAuth"))
    # §6.4: the leaf's bank is its root's.
    if bank is None or leaf.bank != bank:
        raise NotAdmitted("leaf O is not its root's")
    if leaf.one(OID_CN) is None:
        raise NotAdmitted("leaf has no single CN")
    return leaf


def leaf_of(chain_raw):
    """The leaf of a chain, or None when the chain does not decode."""
    try:
        return split_chain(chain_raw)[0]
    except DecodeError:
        return None


# ---------------------------------------------------------------------------------------------
# Hashes (§4)
# ---------------------------------------------------------------------------------------------

def merkle_root(hashes):
    """§4.3: leaf = SM3(0 ‖ d), node = SM3(1 ‖ l ‖ r), odd last promoted, empty = SM3(2)."""
    if not hashes:
        return sm3(b"\x02")
    level = [sm3(b"\x00" + d) for d in hashes]
    while len(level) > 1:
        nxt = [sm3(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def results_root(tx_hashes, results):
    """§4.4."""
    data = bytearray(b"vpbox/results\x00")
    for index, codes in results:
        data += tx_hashes[index] + len(codes).to_bytes(4, "big") + codes
    return sm3(bytes(data))


def block_digest(header, tx_hashes):
    """§4.5: block_digest = SM3("vpbox/block\\0" ‖ height ‖ batch_digest ‖ block_hash)."""
    batch = sm3(b"vpbox/batch\x00" + len(tx_hashes).to_bytes(4, "big") + b"".join(tx_hashes))
    return sm3(b"vpbox/block\x00" + header["height"].to_bytes(8, "big") + batch
               + sm3(header["raw"]))


def commit_message(epoch, node_id, view, seq, block):
    """§4.6: the framed message of a commit signature."""
    p = (b"vpbox/consensus/msg/v2\x00" + epoch.to_bytes(8, "big") + node_id.to_bytes(4, "big")
         + b"\x02" + view.to_bytes(8, "big") + seq.to_bytes(8, "big") + block)
    return framed(TAG_CONSENSUS, sm3(p))


# ---------------------------------------------------------------------------------------------
# Genesis and governance state (§3.1, §3.6)
# ---------------------------------------------------------------------------------------------

def parse_genesis(raw):
    """The genesis file (§3.1); Refused('genesis') when it is not such JSON."""
    def bad(why):
        return Refused("genesis", f"genesis: {why}")
    try:
        g = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise bad("not UTF-8 JSON")
    if not isinstance(g, dict):
        raise bad("not an object")
    nodes, roots = g.get("nodes"), g.get("roots")
    if not isinstance(nodes, list) or not nodes:
        raise bad("no nodes")
    if not isinstance(roots, list) or not roots:
        raise bad("no roots")
    consensus = g.get("consensus") or {}
    if not isinstance(consensus, dict):
        raise bad("consensus is not an object")
    k = consensus.get("checkpoint_interval", 10)
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise bad("bad checkpoint_interval")
    ts = g.get("timestamp_ms")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        raise bad("bad timestamp_ms")
    members, names = {}, {}
    for n in nodes:
        try:
            nid, key = n["id"], bytes.fromhex(n["consensus_key"])
            bank, name = n["bank"], n["name"]
        except (TypeError, KeyError, ValueError):
            raise bad("bad node")
        if not isinstance(nid, int) or isinstance(nid, bool) or not 0 <= nid < 1 << 32 \
                or not isinstance(bank, str) or not isinstance(name, str) or not on_curve(key):
            raise bad("bad node")
        if nid in members:
            raise bad(f"two nodes with id {nid}")
        members[nid] = key
        names[nid] = {"name": name, "bank": bank}
    root_certs = []
    for r in roots:
        try:
            ders = pem_certificates(r["certificate"])
            if len(ders) != 1:
                raise DecodeError("not one certificate")
            root_certs.append(parse_x509(ders[0]))
        except (TypeError, KeyError, DecodeError) as e:
            raise bad(f"bad root ({e})")
    # §3.1: like vpbox, re-check each founding node's certificate at timestamp_ms.
    for n in nodes:
        try:
            chain = b"".join(pem_certificates(n["certificate"]))
            leaf = admit(chain, "vp-node", ts, root_certs)
        except (TypeError, KeyError, DecodeError, NotAdmitted) as e:
            raise bad(f"node {n['id']}: certificate not admitted ({e})")
        if leaf.one(OID_CN) != n["name"] or leaf.bank != n["bank"] \
                or leaf.point != members[n["id"]]:
            raise bad(f"node {n['id']}: certificate names another node, bank or key")
    return {"chain_id": g.get("chain_id"), "timestamp_ms": ts, "k": k,
            "members": members, "names": names, "node_banks": {i: names[i]["bank"] for i in names},
            "roots": root_certs}


class State:
    """The governance state (chain, seq, roots, nodes, max_node_id) of §3.6."""

    def __init__(self, chain, genesis):
        self.chain = chain
        self.seq = 0
        self.roots = list(genesis["roots"])
        self.nodes = {i: {"key": genesis["members"][i], "bank": genesis["node_banks"][i],
                          "name": genesis["names"][i]["name"]} for i in genesis["members"]}
        self.max_node_id = max(self.nodes)

    def member_banks(self):
        """The O of its roots (§3.6)."""
        return {r.bank for r in self.roots}

    def member_list(self):
        """[(id, consensus_key)] sorted by id (§5)."""
        return [(i, self.nodes[i]["key"]) for i in sorted(self.nodes)]

    def apply(self, proposal, t_ms):
        """Apply a proposal's changes (§3.6 rules 2 and 3); returns the new state or raises."""
        new = State.__new__(State)
        new.chain, new.seq = self.chain, self.seq + 1
        new.roots = list(self.roots)
        new.nodes = {i: dict(v) for i, v in self.nodes.items()}
        new.max_node_id = self.max_node_id
        added, touched = [], False
        for what, arg in proposal["changes"]:
            if what == "AddRoot":
                try:
                    root = parse_x509(bytes(arg))
                except DecodeError as e:
                    raise ValueError(f"AddRoot: {e}")
                if root.subject_der != root.issuer_der or not root.signed_by(root) \
                        or not root.is_ca or not root.valid_at(t_ms) or root.bank is None:
                    raise ValueError("AddRoot: not a self-signed SM2 CA valid now")
                if any(r.der == root.der for r in new.roots):
                    raise ValueError("AddRoot: already a root")
                new.roots.append(root)
            elif what == "RemoveRoot":
                keep = [r for r in new.roots if sm3(r.der) != arg]
                if len(keep) == len(new.roots):
                    raise ValueError("RemoveRoot: no such root")
                new.roots = keep
            elif what == "RemoveBank":
                keep = [r for r in new.roots if r.bank != arg]
                if len(keep) == len(new.roots):
                    raise ValueError("RemoveBank: no root of that bank")
                new.roots = keep
            elif what == "AddNode":
                touched = True
                if arg["id"] <= new.max_node_id:
                    raise ValueError("AddNode: id not above max_node_id")
                if any(n["name"] == arg["name"] for n in new.nodes.values()):
                    raise ValueError("AddNode: a node has that name")
                new.max_node_id = arg["id"]
                new.nodes[arg["id"]] = {"key": arg["key"], "bank": arg["bank"],
                                        "name": arg["name"]}
                added.append(arg)
            elif what == "RemoveNode":
                touched = True
                if arg not in new.nodes:
                    raise ValueError("RemoveNode: not a member")
                del new.nodes[arg]
        banks = new.member_banks()
        if not banks:
            raise ValueError("no bank left")
        for n in new.nodes.values():
            if n["bank"] not in banks:
                raise ValueError(f"node {n['name']}'s bank has no root")
        for n in added:
            if n["id"] not in new.nodes:
                continue
            try:
                leaf = admit(n["certificate"], "vp-node", t_ms, new.roots)
            except NotAdmitted as e:
                raise ValueError(f"AddNode {n['name']}: {e}")
            if leaf.one(OID_CN) != n["name"] or leaf.bank != n["bank"] or leaf.point != n["key"]:
                raise ValueError(f"AddNode {n['name']}: certificate names another node or key")
        if touched and len(new.nodes) < 4:
            raise ValueError("fewer than 4 nodes")
        return new


# ---------------------------------------------------------------------------------------------
# Epochs and quorums (§5)
# ---------------------------------------------------------------------------------------------

class Epochs:
    """The configurations of §5, built from node changes oldest first."""

    def __init__(self, k, genesis_members):
        self.k = k
        self.genesis = (0, 0, genesis_members)
        self.configs = []
        self.current = self.genesis

    def node_change(self, s, members):
        """Record a node change at height s (§5 pseudocode)."""
        configs = self.configs
        if configs and configs[-1][1] < s and configs[-1][0] > self.current[0]:
            self.current = configs[-1]
        nxt = (self.current[0] + 1, -(-s // self.k) * self.k, members)
        if configs and configs[-1][0] == nxt[0]:
            configs.pop()
        configs.append(nxt)

    def at(self, h):
        """(epoch, members) certifying block h: the last config whose after < h, else epoch 0."""
        for epoch, after, members in reversed(self.configs):
            if after < h:
                return epoch, members
        return self.genesis[0], self.genesis[2]


def quorum(n):
    """Q = ⌈(n + f + 1) / 2⌉ with f = ⌊(n − 1) / 3⌋ (§5)."""
    f = (n - 1) // 3
    return -(-(n + f + 1) // 2)


# ---------------------------------------------------------------------------------------------
# The verification algorithm (§7)
# ---------------------------------------------------------------------------------------------

def check_evidence(ev, epochs, what):
    """§7 step 4.1: tx root, results root, and the commit certificate in the block's epoch."""
    h = ev["header"]
    height = h["height"]
    hashes = ev["tx_hashes"]
    if len(hashes) != h["tx_count"] or merkle_root(hashes) != h["tx_root"]:
        raise Refused("tx-root", f"{what} (block {height}): transactions do not match tx_root")
    first = {}
    for i, d in enumerate(hashes):
        first.setdefault(d, i)
    last = -1
    for index, _ in ev["results"]:
        if index >= len(hashes) or index <= last:
            raise Refused("results-root", f"{what} (block {height}): result index {index}")
        if first[hashes[index]] != index:   # §7 4.1: a repeat executes at its first index only
            raise Refused("results-root", f"{what} (block {height}): result of a repeat")
        last = index
    if results_root(hashes, ev["results"]) != h["results_root"]:
        raise Refused("results-root", f"{what} (block {height}): results do not match")
    try:
        cert = decode_certificate(ev["certificate"])
    except DecodeError as e:
        raise Refused("certificate-malformed", f"{what} (block {height}): {e}")
    if cert["seq"] != height or cert["block"] != block_digest(h, hashes):
        raise Refused("certificate-other-block",
                      f"{what} (block {height}): the certificate is for another block")
    epoch, members = epochs.at(height)
    keys = dict(members)
    ids = [nid for nid, _ in cert["sigs"]]
    seen = set()
    # §5: entry by entry, in the certificate's order; the first failing check decides.
    for nid, sig in cert["sigs"]:
        if nid not in keys:
            raise Refused("signer-not-member",
                          f"{what} (block {height}): node {nid} is not a member of epoch {epoch}")
        if nid in seen:
            raise Refused("duplicate-signer", f"{what} (block {height}): a node signs twice")
        seen.add(nid)
        msg = commit_message(epoch, nid, cert["view"], cert["seq"], cert["block"])
        if not sm2_verify_raw(keys[nid], msg, sig):
            raise Refused("signature", f"{what} (block {height}): node {nid}'s signature "
                                       f"does not verify in epoch {epoch}")
    q = quorum(len(members))
    if len(ids) < q:
        raise Refused("below-quorum", f"{what} (block {height}): {len(ids)} signatures, "
                                      f"quorum {q} of {len(members)}")
    return {"epoch": epoch, "members": len(members), "quorum": q, "signers": ids,
            "height": height, "hash": sm3(h["raw"]), "time": h["timestamp_ms"]}


def tx_at(ev, proven):
    """The transaction of `proven` when it decodes and is the block's at its index (or None)."""
    try:
        tx = decode_tx(proven["tx"])
    except DecodeError:
        return None
    i = proven["index"]
    if i >= len(ev["tx_hashes"]) or sm3(tx["body"]) != ev["tx_hashes"][i]:
        return None
    return tx


def follow_govblock(gb, state, epochs, names, stop=None):
    """§7 step 4 for one govblock; returns the new state, the number of changes followed, and
    the state as of the anchor's position when this block holds changes after it (else None).
    `stop` = (height, index) of the anchor."""
    ev = gb["evidence"]
    height = ev["header"]["height"]
    check_evidence(ev, epochs, "govblock")                                 # 4.1
    before = state.member_list()
    results = dict(ev["results"])
    last, followed, at_anchor = -1, 0, None
    for proven in gb["proven"]:
        if proven["index"] <= last:                                        # 4.2
            raise Refused("governance-order", f"block {height}: proven indices not increasing")
        last = proven["index"]
        if stop is not None and (height, proven["index"]) > stop and at_anchor is None:
            at_anchor = state                                              # §7 step 4: admission
        tx = tx_at(ev, proven)
        if tx is None or results.get(proven["index"]) != b"\x00" or tx["kind"] != 3:
            raise Refused("governance-not-applied",
                          f"block {height}: transaction {proven['index']} is not an applied "
                          f"configuration transaction")
        t = tx["timestamp_ms"]
        proposal = submitter_and_proposal(gb["admins"], tx, state, height)  # 4.3
        check_approvals(gb["admins"], proposal, tx, state, height)         # 4.4
        try:                                                               # 4.5
            state = state.apply(proposal, t)
        except ValueError as e:
            raise Refused("governance-refused", f"block {height}: {e}")
        for what, arg in proposal["changes"]:
            if what == "AddNode":
                names[arg["id"]] = {"name": arg["name"], "bank": arg["bank"]}
        followed += 1
    if ev["header"]["gov_seq"] != state.seq:                               # 4.7
        raise Refused("governance-missing",
                      f"block {height}: header counts {ev['header']['gov_seq']} changes, "
                      f"followed {state.seq}")
    after = state.member_list()
    if after != before:                                                    # 4.6
        epochs.node_change(height, after)
    return state, followed, at_anchor


def submitter_and_proposal(admins, tx, state, height):
    """§7 step 4.3: an admitted admin submitted it, and the proposal targets this state."""
    t = tx["timestamp_ms"]
    ok = False
    for chain in admins:
        leaf = leaf_of(chain)
        if leaf is None or leaf.fingerprint != tx["submitter"]:
            continue
        if not sm2_verify_raw(leaf.point, framed(TAG_TX, tx["body"]), tx["signature"]):
            continue
        try:
            admit(chain, "admin", t, state.roots)
        except NotAdmitted:
            continue
        ok = True
        break
    if not ok:
        raise Refused("governance-refused",
                      f"block {height}: the submitter is not an admitted admin who signed")
    try:
        config = decode_config(tx["config"])
        proposal = decode_proposal(config["proposal"])
    except DecodeError as e:
        raise Refused("governance-refused", f"block {height}: configuration: {e}")
    if proposal["chain"] != state.chain or proposal["seq"] != state.seq:
        raise Refused("governance-refused", f"block {height}: proposal for chain/seq "
                      f"{proposal['chain'].hex()}/{proposal['seq']}, state at {state.seq}")
    proposal["approvals"] = config["approvals"]
    proposal["raw"] = config["proposal"]
    return proposal


def check_approvals(admins, proposal, tx, state, height):
    """§7 step 4.4: every approval valid; approving banks more than two thirds."""
    t = tx["timestamp_ms"]
    msg = framed(TAG_GOVERNANCE, proposal["raw"])
    approving = set()
    for admin, sig in proposal["approvals"]:
        bank = None
        for chain in admins:
            leaf = leaf_of(chain)
            if leaf is None or leaf.fingerprint != admin:
                continue
            try:
                admit(chain, "admin", t, state.roots)
            except NotAdmitted:
                continue
            if sm2_verify_der(leaf.point, msg, sig):
                bank = leaf.bank
                break
        if bank is None:
            raise Refused("governance-not-approved",
                          f"block {height}: approval by {admin.hex()[:16]}… is not valid")
        approving.add(bank)
    banks = state.member_banks()
    n = len(approving & banks)
    if not 3 * n > 2 * len(banks):
        raise Refused("governance-not-approved",
                      f"block {height}: {n} of {len(banks)} banks approve")


SLIP_FIELDS = {"merchant_id": r"[A-Za-z0-9]{1,32}", "terminal_id": r"[A-Za-z0-9]{1,16}",
               "rrn": r"[A-Za-z0-9]{1,32}",
               "txn_time": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})"}


def slip_key(raw):
    """The key of a vpbox JSON slip (docs/slip-format.md), or None when it is not one."""
    dup = []

    def pairs(items):
        keys = [k for k, _ in items]
        dup.append(len(keys) != len(set(keys)))
        return dict(items)
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError):
        return None
    # The hook runs innermost first, so the top-level object's is the last call.
    if not isinstance(obj, dict) or dup[-1]:
        return None
    fields = []
    for name, pattern in SLIP_FIELDS.items():
        v = obj.get(name)
        if not isinstance(v, str) or not re.fullmatch(pattern, v):
            return None
        fields.append(v.encode("ascii"))
    return sm3(b"VPBOX/slip-key/v1\x00" + b"\x00".join(fields))


def check_slip(slip, key, value):
    """§7 step 9."""
    k = slip_key(slip)
    if (k is not None and k != key) or sm3(slip) != value:
        raise Refused("slip-mismatch", "the slip is not the anchored one")


def verify_bundle(data, genesis_hash=None, slip=None):
    """Verify a bundle (§7); returns the verdict dict or raises Refused."""
    try:                                                                   # 1
        b = decode_bundle(data)
    except DecodeError as e:
        raise Refused("malformed", f"bundle: {e}")
    chain = sm3(b["genesis"])                                              # 2
    if genesis_hash is not None and chain != genesis_hash:
        raise Refused("other-chain", f"genesis hash {chain.hex()}, not {genesis_hash.hex()}")
    genesis = parse_genesis(b["genesis"])

    head = b["to"] if b["kind"] == 2 else b["evidence"]
    top = head["header"]["height"]
    last = 0                                                               # 3
    for gb in b["govblocks"]:
        h = gb["evidence"]["header"]["height"]
        if h <= last or h > top:
            raise Refused("governance-order", f"govblock height {h} out of order")
        last = h

    state = State(chain, genesis)                                          # 4
    epochs = Epochs(genesis["k"], state.member_list())
    names = dict(genesis["names"])
    changes, seqs, admission = 0, [], None
    stop = (top, b["proven"]["index"]) if b["kind"] == 1 else None
    for gb in b["govblocks"]:
        state, n, snap = follow_govblock(gb, state, epochs, names, stop)
        changes += n
        seqs.append((gb["evidence"]["header"]["height"], state.seq))
        admission = admission or snap
    admission = admission or state

    def check_seq(ev, what):
        """§7: every change through this block was shown (its header's gov_seq)."""
        h = ev["header"]
        want = next((q for height, q in reversed(seqs) if height <= h["height"]), 0)
        if h["gov_seq"] != want:
            raise Refused("governance-missing", f"{what} (block {h['height']}): header counts "
                                                f"{h['gov_seq']} changes, the bundle shows {want}")

    def signers(info):
        return [{"id": i, **names.get(i, {"name": None, "bank": None})} for i in info["signers"]]

    verdict = {"valid": True, "chain": "0x" + chain.hex(), "chainId": genesis["chain_id"],
               "configurationChanges": changes}
    if b["kind"] == 2:
        ends = []
        for what in ("from", "to"):                                        # 5c
            info = check_evidence(b[what], epochs, what)
            check_seq(b[what], what)
            ends.append(info)
            verdict[what] = {"height": info["height"], "blockHash": "0x" + info["hash"].hex(),
                             "blockTimeMs": info["time"], "epoch": info["epoch"],
                             "signers": signers(info)}
        check_link(b)                                                      # 6c
        verdict["kind"] = "consistency"
        return verdict

    if b["kind"] == 3:
        ev = b["evidence"]
        info = check_evidence(ev, epochs, "state block")                   # 5s
        check_seq(ev, "state block")
        key, leaf = b["key"], b["leaf"]
        root = state_path_root(key, b["siblings"], leaf)                   # 6s
        if root != ev["header"]["state_root"]:
            raise Refused("state-path", "the path does not lead to the block's state_root")
        found = leaf is not None and leaf["key"] == key
        if found and not 1 <= leaf["height"] <= info["height"]:
            raise Refused("state-path", f"the leaf names block {leaf['height']}")
        verdict.update({
            "kind": "state", "key": "0x" + key.hex(), "anchored": found,
            "value": "0x" + leaf["value"].hex() if found else None,
            "height": leaf["height"] if found else None,
            "tx": "0x" + leaf["tx"].hex() if found else None,
            "asOf": {"height": info["height"], "blockHash": "0x" + info["hash"].hex(),
                     "blockTimeMs": info["time"], "epoch": info["epoch"],
                     "signers": signers(info)}})
        return verdict

    ev = b["evidence"]
    info = check_evidence(ev, epochs, "anchor block")                      # 5
    check_seq(ev, "anchor block")
    tx = tx_at(ev, b["proven"])                                            # 6
    if tx is None:
        raise Refused("tx-not-in-block", "the transaction is not the block's at its index")
    index, key = b["proven"]["index"], b["key"]                            # 7
    codes = dict(ev["results"]).get(index)
    if codes is None:
        raise Refused("not-anchored", f"no result for transaction {index}")
    pos = next((i for i, (k, _) in enumerate(tx.get("pairs", [])) if k == key), None)
    if tx["kind"] not in (1, 2) or pos is None:
        raise Refused("not-anchored", "the transaction does not put the key")
    if pos >= len(codes) or codes[pos] != 0:
        raise Refused("not-anchored", "the put's outcome is not success")
    value = tx["pairs"][pos][1]
    en = b["enrollment"]                                                   # 8
    eh = en["evidence"]["header"]["height"]
    if (eh, en["proven"]["index"]) >= (top, index):
        raise Refused("submitter-refused", "the enrollment does not come before the anchor")
    check_evidence(en["evidence"], epochs, "enrollment block")
    check_seq(en["evidence"], "enrollment block")
    etx = tx_at(en["evidence"], en["proven"])
    if etx is None:
        raise Refused("submitter-refused", "the enrollment is not the block's at its index")
    if dict(en["evidence"]["results"]).get(en["proven"]["index"]) != b"\x00":
        raise Refused("submitter-refused", "the enrollment was not applied")
    if etx["kind"] != 4 or etx["submitter"] != tx["submitter"]:
        raise Refused("submitter-refused", "not an enrollment of the submitter's key")
    chain_der = etx["chain"]
    leaf = leaf_of(chain_der)
    if leaf is None or not sm2_verify_raw(leaf.point, framed(TAG_TX, etx["body"]),
                                          etx["signature"]):
        raise Refused("submitter-refused", "the enrollment is not signed by its key")
    if leaf is None or leaf.fingerprint != tx["submitter"]:
        raise Refused("submitter-refused", "the submitter chain's leaf is not the signer")
    if not sm2_verify_raw(leaf.point, framed(TAG_TX, tx["body"]), tx["signature"]):
        raise Refused("tx-signature", "the transaction's signature does not verify")
    try:
        admit(chain_der, "posp", tx["timestamp_ms"], admission.roots)
    except NotAdmitted as e:
        raise Refused("submitter-refused", f"submitter: {e}")
    if slip is not None:                                                   # 9
        check_slip(slip, key, value)
    sig = signers(info)
    verdict.update({
        "key": "0x" + key.hex(), "value": "0x" + value.hex(), "height": info["height"],
        "blockHash": "0x" + info["hash"].hex(), "blockTimeMs": info["time"],
        "txTimeMs": tx["timestamp_ms"], "epoch": info["epoch"], "members": info["members"],
        "quorum": info["quorum"], "signers": sig,
        "banks": sorted({s["bank"] for s in sig}),
        "submitter": {"name": leaf.one(OID_CN), "bank": leaf.bank}, "slip": slip is not None})
    return verdict


def key_bit(key, i):
    """Bit i of a 32-byte key, bit 0 being the first byte's high bit (§4.8)."""
    return (key[i // 8] >> (7 - i % 8)) & 1


def state_path_root(key, siblings, leaf):
    """§4.8: hash a key's path back up to the state root it leads to."""
    n = len(siblings)
    if leaf is None:
        h = bytes(32)
    else:
        if any(key_bit(leaf["key"], i) != key_bit(key, i) for i in range(n)):
            raise Refused("state-path", "the leaf is not on the key's path")
        h = sm3(b"\x00" + leaf["key"] + leaf["value"] + leaf["tx"]
                + leaf["height"].to_bytes(8, "big"))
    for i in reversed(range(n)):
        if key_bit(key, i):
            h = sm3(b"\x01" + siblings[i] + h)
        else:
            h = sm3(b"\x01" + h + siblings[i])
    return h


def check_link(b):
    """§7 step 6c: the headers link `from` to `to` by height and parent hash."""
    prev = b["from"]["header"]
    to = b["to"]["header"]
    if prev["height"] >= to["height"]:
        raise Refused("not-extending", "from is not below to")
    if len(b["headers"]) != to["height"] - prev["height"] - 1:
        raise Refused("not-extending", f"{len(b['headers'])} headers between "
                                       f"{prev['height']} and {to['height']}")
    for h in b["headers"] + [to]:
        if h["height"] != prev["height"] + 1 or h["parent"] != sm3(prev["raw"]):
            raise Refused("not-extending", f"header {h['height']} does not extend "
                                           f"{prev['height']}")
        prev = h


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def run_vectors(directory):
    """Check every vector of valid.json and invalid.json; exit status 0 when all agree."""
    start = time.time()
    with open(os.path.join(directory, "valid.json")) as f:
        valid = json.load(f)
    with open(os.path.join(directory, "invalid.json")) as f:
        invalid = json.load(f)
    passed = failed = 0

    def report(ok, file, expected, got):
        nonlocal passed, failed
        passed, failed = passed + ok, failed + (not ok)
        print(f"{'PASS' if ok else 'FAIL'}  {file}  expected: {expected}  got: {got}")

    gh = bytes.fromhex(valid["genesisHash"])
    for v in valid["valid"]:
        with open(os.path.join(directory, v["file"]), "rb") as f:
            data = f.read()
        try:
            verdict = verify_bundle(data, gh)
        except Refused as e:
            report(False, v["file"], "valid", f"{e.reason}: {e.detail}")
            continue
        want = v["verdict"]
        diffs = [k for k in verdict if k not in want or verdict[k] != want[k]]
        missing = [k for k in want if k not in verdict]
        if diffs:
            report(False, v["file"], "valid verdict",
                   "differs in " + ", ".join(f"{k}={verdict[k]!r} (want {want.get(k)!r})"
                                             for k in diffs))
        elif missing:
            report(False, v["file"], "valid verdict", "not computed: " + ", ".join(missing))
        else:
            report(True, v["file"], "valid", "valid, verdict matches")
    for v in invalid["invalid"]:
        with open(os.path.join(directory, v["file"]), "rb") as f:
            data = f.read()
        try:
            verify_bundle(data, bytes.fromhex(v["genesisHash"]))
            got = "valid"
        except Refused as e:
            got = e.reason
            detail = e.detail
        else:
            detail = ""
        ok = got == v["reason"]
        report(ok, v["file"], v["reason"], got + ("" if ok else f" ({detail})"))
    print(f"{passed} passed, {failed} failed, {passed + failed} vectors, "
          f"{time.time() - start:.1f} s")
    return 0 if failed == 0 else 1


def print_verdict(v):
    """A short human-readable verdict."""
    def who(signers):
        return ", ".join(f"{s['id']} {s['name']} ({s['bank']})" for s in signers)
    print(f"VALID on chain {v['chainId']} {v['chain']}, "
          f"{v['configurationChanges']} configuration change(s) followed")
    if v.get("kind") == "consistency":
        for end in ("from", "to"):
            e = v[end]
            print(f"  {end}: block {e['height']} {e['blockHash']} at {e['blockTimeMs']} ms, "
                  f"epoch {e['epoch']}, signed by {who(e['signers'])}")
        return
    if v.get("kind") == "state":
        e = v["asOf"]
        said = f"anchored with {v['value']} in block {v['height']}" if v["anchored"] \
            else "not anchored"
        print(f"  key   {v['key']} {said}")
        print(f"  as of block {e['height']} {e['blockHash']} at {e['blockTimeMs']} ms, "
              f"epoch {e['epoch']}, signed by {who(e['signers'])}")
        return
    print(f"  key   {v['key']}\n  value {v['value']}")
    print(f"  block {v['height']} {v['blockHash']} at {v['blockTimeMs']} ms; tx at "
          f"{v['txTimeMs']} ms")
    print(f"  epoch {v['epoch']}: {v['members']} members, quorum {v['quorum']}; signed by "
          f"{who(v['signers'])}")
    print(f"  submitter {v['submitter']['name']} of {v['submitter']['bank']}")


def main(argv):
    """Entry point; returns the exit status."""
    usage = ("usage: independent_verifier.py [DIR]\n"
             "       independent_verifier.py verify FILE --genesis-hash HEX "
             "[--slip SLIP] [--json]")
    if argv and argv[0] == "verify":
        args, file, gh, as_json, slip = argv[1:], None, None, False, None
        i = 0
        try:
            while i < len(args):
                a = args[i]
                if a == "--json":
                    as_json = True
                elif a == "--genesis-hash":
                    i += 1
                    text = args[i].lower().removeprefix("0x")
                    gh = bytes.fromhex(text)
                    if len(gh) != 32:
                        raise ValueError
                elif a == "--slip":
                    i += 1
                    with open(args[i], "rb") as f:
                        slip = f.read()
                elif file is None and not a.startswith("--"):
                    file = a
                else:
                    raise ValueError
                i += 1
        except (IndexError, ValueError, OSError, DecodeError):
            print(usage, file=sys.stderr)
            return 2
        if file is None or gh is None:
            print(usage, file=sys.stderr)
            return 2
        try:
            with open(file, "rb") as f:
                data = f.read(MAX_BUNDLE + 1)
        except OSError as e:
            print(f"cannot read {file}: {e}", file=sys.stderr)
            return 2
        try:
            verdict = verify_bundle(data, gh, slip)
        except Refused as e:
            if as_json:
                print(json.dumps({"valid": False, "reason": e.reason, "detail": e.detail},
                                 indent=2))
            else:
                print(f"INVALID: {e.detail} ({e.reason})")
            return 1
        if as_json:
            print(json.dumps(verdict, indent=2, sort_keys=True))
        else:
            print_verdict(verdict)
        return 0
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(usage, file=sys.stderr)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    directory = argv[0] if argv else os.path.join(here, "..", "..", "testdata", "proofs")
    return run_vectors(directory)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

//! SM2/SM3/SM4 throughput of vpbox-sm, libsm, OpenSSL's `openssl speed` and Tongsuo's (when
//! `scripts/tongsuo.sh` has built it), measured in one run on one machine, with the ratios; and
//! OpenSSL's own ECDSA P-256, the speed SM2 (a curve of the same shape) can reach.
//!
//! SM2 verification has three rows: a key seen before (its comb table made: every POSP and node
//! key after its eighth valid signature), a key at first sight (wNAF, no table), and RustCrypto's
//! generic verifier, the reference the fast one is tested against.
//!
//! `cargo bench -p vpbox-sm --bench crypto` (about a minute). `VPBOX_BENCH_SECONDS=0.2` makes a
//! quick smoke run (CI); OpenSSL is then still given its minimum of one second per figure.
//! Prints a table, a JSON line (`{"bench":"crypto",...}`) and a one-line summary.

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use libsm::sm2::signature::SigCtx;
use vpbox_sm::sm2::{DEFAULT_ID, SecretKey};
use vpbox_sm::{sm3, sm4};

const MIB: f64 = 1024.0 * 1024.0;

/// Consumes a result so the optimiser cannot drop the work that made it.
fn sink<T>(x: T) {
    let _ = black_box(x);
}

/// Runs `f` repeatedly for about `secs`; returns calls per second.
fn rate(secs: f64, mut f: impl FnMut()) -> f64 {
    f(); // warm up
    let budget = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Tongsuo's `openssl` command (scripts/tongsuo.sh), if built.
const TONGSUO: &str = "/usr/local/lib/vpbox-tongsuo/openssl";

/// `BIN speed -mr` for `alg` (`sm2`, `ecdsap256`): (sign/s, verify/s) from its `+F7` (SM2) or
/// `+F4` (ECDSA) line.
fn speed_sign_verify(bin: &str, alg: &str, secs: u32) -> Option<(f64, f64)> {
    let out = Command::new(bin)
        .args(["speed", "-mr", "-seconds", &secs.to_string(), alg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("+F7:") || l.starts_with("+F4:"))?;
    let f: Vec<&str> = line.split(':').collect();
    let n = f.len();
    Some((f.get(n - 2)?.parse().ok()?, f.get(n - 1)?.parse().ok()?))
}

/// `openssl speed -mr -evp ALG -bytes N`: bytes per second.
fn openssl_evp(alg: &str, bytes: usize, secs: u32) -> Option<f64> {
    evp_speed("openssl", alg, bytes, secs)
}

/// `BIN speed -mr -evp ALG -bytes N`: bytes per second.
fn evp_speed(bin: &str, alg: &str, bytes: usize, secs: u32) -> Option<f64> {
    let out = Command::new(bin)
        .args(["speed", "-mr", "-seconds", &secs.to_string(), "-bytes", &bytes.to_string()])
        .args(["-evp", alg])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("+F:"))?;
    line.rsplit(':').next()?.parse().ok()
}

struct Row {
    name: &'static str,
    unit: &'static str,
    ours: f64,
    libsm: Option<f64>,
    openssl: Option<f64>,
    tongsuo: Option<f64>,
    /// OpenSSL's ECDSA P-256 figure for the same operation.
    p256: Option<f64>,
}

fn main() {
    let secs: f64 =
        std::env::var("VPBOX_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let ossl_secs = secs.ceil().max(1.0) as u32;

    let key = SecretKey::generate().expect("random source");
    let msg = [0x5au8; 32];
    let sig = key.sign(DEFAULT_ID, &msg).expect("sign");
    let ctx = SigCtx::new();
    let scalar = {
        let der = key.to_pkcs8_der().expect("pkcs8");
        let at = der.windows(5).position(|w| w == [2, 1, 1, 4, 32]).expect("SEC1 scalar") + 5;
        der[at..at + 32].to_vec()
    };
    let lsk = ctx.load_seckey(&scalar).expect("libsm key");
    let lpk = ctx.pk_from_sk(&lsk).expect("libsm public");
    let lsig = ctx.sign(&msg, &lsk, &lpk).expect("libsm sign");

    let small = vec![0x61u8; 64];
    let big = vec![0x61u8; 1 << 20];
    let inner: Vec<[u8; 65]> = (0..64u8).map(|i| [i; 65]).collect();
    let skey = sm4::Sm4Key::generate().expect("random source");
    let iv = [0u8; 16];
    let nonce = [0u8; 12];
    let lcbc = libsm::sm4::Cipher::new(skey.expose_secret(), libsm::sm4::Mode::Cbc).expect("sm4");

    let (ossl_sign, ossl_verify) = speed_sign_verify("openssl", "sm2", ossl_secs).unzip();
    let (tongsuo_sign, tongsuo_verify) = speed_sign_verify(TONGSUO, "sm2", ossl_secs).unzip();
    let (p256_sign, p256_verify) = speed_sign_verify("openssl", "ecdsap256", ossl_secs).unzip();
    let e = vpbox_sm::sm2::message_digest(&key.public_key().z(DEFAULT_ID).expect("z"), &[&msg]);
    let mib = |x: Option<f64>| x.map(|b| b / MIB);
    let rows = [
        Row {
            name: "SM2 sign",
            unit: "ops/s",
            ours: rate(secs, || sink(key.sign(DEFAULT_ID, black_box(&msg)))),
            libsm: Some(rate(secs, || sink(ctx.sign(black_box(&msg), &lsk, &lpk)))),
            openssl: ossl_sign,
            tongsuo: tongsuo_sign,
            p256: p256_sign,
        },
        Row {
            name: "SM2 verify",
            unit: "ops/s",
            ours: rate(secs, || sink(key.public_key().verify(DEFAULT_ID, black_box(&msg), &sig))),
            libsm: Some(rate(secs, || sink(ctx.verify(black_box(&msg), &lpk, &lsig)))),
            openssl: ossl_verify,
            tongsuo: tongsuo_verify,
            p256: p256_verify,
        },
        Row {
            name: "verify, new key",
            unit: "ops/s",
            ours: rate(secs, || {
                sink(key.public_key().verify_digest_first_sight(black_box(&e), &sig));
            }),
            libsm: None,
            openssl: ossl_verify,
            tongsuo: tongsuo_verify,
            p256: p256_verify,
        },
        Row {
            name: "verify, generic",
            unit: "ops/s",
            ours: rate(secs, || {
                sink(key.public_key().verify_digest_reference(black_box(&e), &sig))
            }),
            libsm: None,
            openssl: ossl_verify,
            tongsuo: tongsuo_verify,
            p256: p256_verify,
        },
        Row {
            name: "SM3 64 B",
            unit: "MiB/s",
            ours: rate(secs, || sink(sm3::hash(black_box(&small)))) * 64.0 / MIB,
            libsm: Some(
                rate(secs, || sink(libsm::sm3::hash::Sm3Hash::new(&small).get_hash())) * 64.0 / MIB,
            ),
            openssl: mib(openssl_evp("sm3", 64, ossl_secs)),
            tongsuo: None,
            p256: None,
        },
        // The state map's inner nodes: 65-byte messages, 64 per call, hashed side by side
        // (`sm3::hash_each`, on the best path this CPU has: printed above the table); the peers
        // hash one message at a time (OpenSSL's figure is its 64-byte one: `openssl speed`
        // takes no 65).
        Row {
            name: "SM3 65 B lanes",
            unit: "MiB/s",
            ours: rate(secs, || sink(sm3::hash_each(black_box(&inner)))) * 64.0 * 65.0 / MIB,
            libsm: Some(
                rate(secs, || {
                    for m in black_box(&inner) {
                        sink(libsm::sm3::hash::Sm3Hash::new(m).get_hash());
                    }
                }) * 64.0
                    * 65.0
                    / MIB,
            ),
            openssl: mib(openssl_evp("sm3", 64, ossl_secs)),
            tongsuo: None,
            p256: None,
        },
        // The same on the path every x86-64 has, for a machine without AVX2.
        Row {
            name: "SM3 65 B lanes SSE2",
            unit: "MiB/s",
            ours: rate(secs, || sink(sm3::Simd::Sse2.hash_each(black_box(&inner)))) * 64.0 * 65.0
                / MIB,
            libsm: None,
            openssl: mib(openssl_evp("sm3", 64, ossl_secs)),
            tongsuo: None,
            p256: None,
        },
        Row {
            name: "SM3 65 B",
            unit: "MiB/s",
            ours: rate(secs, || {
                for m in black_box(&inner) {
                    sink(sm3::hash(m));
                }
            }) * 64.0
                * 65.0
                / MIB,
            libsm: None,
            openssl: mib(openssl_evp("sm3", 64, ossl_secs)),
            tongsuo: None,
            p256: None,
        },
        Row {
            name: "SM3 1 MiB",
            unit: "MiB/s",
            ours: rate(secs, || sink(sm3::hash(black_box(&big)))),
            libsm: Some(rate(secs, || sink(libsm::sm3::hash::Sm3Hash::new(&big).get_hash()))),
            openssl: mib(openssl_evp("sm3", 1 << 20, ossl_secs)),
            tongsuo: None,
            p256: None,
        },
        Row {
            name: "SM4-CBC 1 MiB",
            unit: "MiB/s",
            ours: rate(secs, || sink(sm4::cbc_encrypt(&skey, &iv, black_box(&big)))),
            libsm: Some(rate(secs, || sink(lcbc.encrypt(&[], black_box(&big), &iv)))),
            openssl: mib(openssl_evp("sm4-cbc", 1 << 20, ossl_secs)),
            tongsuo: mib(evp_speed(TONGSUO, "sm4-cbc", 1 << 20, ossl_secs)),
            p256: None,
        },
        Row {
            name: "SM4-GCM 1 MiB",
            unit: "MiB/s",
            ours: rate(secs, || {
                sink(sm4::gcm_seal(&skey, &nonce, b"", black_box(&big)));
            }),
            // libsm's GCM takes 16-byte IVs only and OpenSSL 3.0 has no SM4-GCM: Tongsuo is
            // the peer (the TLS records' cipher, RFC 8998).
            libsm: None,
            openssl: None,
            tongsuo: mib(evp_speed(TONGSUO, "sm4-gcm", 1 << 20, ossl_secs)),
            p256: None,
        },
    ];

    let paths: Vec<_> = sm3::Simd::all().into_iter().map(sm3::Simd::name).collect();
    println!("SM3 lanes: {} (the paths this CPU has: {})", paths[0], paths.join(", "));
    let fmt = |x: Option<f64>| x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"));
    let ratio =
        |a: f64, b: Option<f64>| b.map_or_else(|| "n/a".into(), |b| format!("{:.2}x", a / b));
    println!(
        "{:<19} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "operation",
        "unit",
        "vpbox-sm",
        "libsm",
        "openssl",
        "tongsuo",
        "ossl p256",
        "/openssl",
        "/tongsuo",
        "/p256",
        "/libsm"
    );
    for r in &rows {
        println!(
            "{:<19} {:>6} {:>10.1} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
            r.name,
            r.unit,
            r.ours,
            fmt(r.libsm),
            fmt(r.openssl),
            fmt(r.tongsuo),
            fmt(r.p256),
            ratio(r.ours, r.openssl),
            ratio(r.ours, r.tongsuo),
            ratio(r.ours, r.p256),
            ratio(r.ours, r.libsm)
        );
    }
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            let opt = |x: Option<f64>| x.map_or_else(|| "null".into(), |v| format!("{v:.1}"));
            format!(
                "{{\"op\":\"{}\",\"unit\":\"{}\",\"vpbox_sm\":{:.1},\"libsm\":{},\"openssl\":{},\
                 \"tongsuo\":{},\"openssl_p256\":{}}}",
                r.name,
                r.unit,
                r.ours,
                opt(r.libsm),
                opt(r.openssl),
                opt(r.tongsuo),
                opt(r.p256)
            )
        })
        .collect();
    println!(
        "{{\"bench\":\"crypto\",\"seconds_per_figure\":{secs},\"rows\":[{}]}}",
        json.join(",")
    );
    let summary: Vec<String> = rows
        .iter()
        .filter_map(|r| r.openssl.map(|o| format!("{} {:.2}x", r.name, r.ours / o)))
        .collect();
    println!("summary: vpbox-sm vs openssl: {}", summary.join(", "));
}

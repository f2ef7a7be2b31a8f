//! `vpbox bench signer`: SM2 signatures per second through each layer, in one run against one
//! token: the raw `C_Sign` call, the PKCS#11 signer (plus its software verification), the
//! signer socket without and with the double-sign guard's fsync, and the software library.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use vpbox_consensus::wire::signing_payload;
use vpbox_consensus::{Message, NodeId, SeqNo, View, Vote};
use vpbox_pkcs11::{Module, OpenToken, Pin, Pkcs11Signer, SignerConfig, TokenSelector, keys};
use vpbox_signer::guard::Limits;
use vpbox_signer::{Client, Service, ServiceKey, serve};
use vpbox_sm::sm2::SecretKey;
use vpbox_sm::{Domain, Signer};

use crate::Outcome;

/// `vpbox bench signer …`
#[derive(Debug, Args)]
pub(crate) struct SignerBenchArgs {
    /// The PKCS#11 module.
    #[arg(long)]
    module: PathBuf,
    /// The token's label.
    #[arg(long)]
    token: String,
    /// A 0400 file with the user PIN.
    #[arg(long)]
    pin_file: PathBuf,
    /// CKA_ID of an SM2 key on the token, hex.
    #[arg(long)]
    id: String,
    /// Seconds per figure.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Concurrent clients for the socket figures.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

/// Calls `f` on `threads` threads for `secs`; returns calls per second.
fn rate(secs: f64, threads: usize, f: impl Fn(usize) -> Result<()> + Sync) -> Result<f64> {
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|t| {
                let (done, stop, f) = (&done, &stop, &f);
                s.spawn(move || -> Result<()> {
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        f(t * 1_000_000_000 + i)?;
                        i += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

pub(crate) fn signer(args: &SignerBenchArgs) -> Result<Outcome> {
    let pin = Pin::from_file(&args.pin_file)?;
    let key_id = hex::decode(&args.id).context("--id is not hex")?;
    let selector = TokenSelector::Label(args.token.clone());
    let module = Module::load(&args.module)?;
    let signer = Arc::new(Pkcs11Signer::open_in(
        module.clone(),
        SignerConfig {
            module: args.module.clone(),
            token: selector.clone(),
            key_id: key_id.clone(),
            pin: pin.clone(),
            profile: None,
            pinned: None,
            sessions: args.clients.max(1),
        },
    )?);
    let e = Domain::SELFTEST.digest(signer.public_key(), b"bench");

    // 1. The raw C_Sign call on one session: what the token itself costs.
    let token = OpenToken::in_module(module, &selector, None)?;
    let session = token.login(&pin, false)?;
    let handle = keys::find_private(&session, &token.profile, &key_id)?;
    let code = token.profile.sign_mechanism.context("the profile has no SM2 sign mechanism")?;
    let mech_type = MechanismType::new_vendor_defined(code)?;
    // A Session is Send but not Sync: the measuring thread borrows it through an uncontended lock.
    let session = std::sync::Mutex::new(session);
    let raw = rate(args.seconds, 1, |_| {
        let mech = Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(mech_type, None));
        let s = session.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        s.sign(&mech, handle, e.as_bytes())?;
        Ok(())
    })?;
    // 2. The PKCS#11 signer: C_Sign plus software verification of every signature.
    let p11 = rate(args.seconds, 1, |_| {
        signer.sign_digest(&e)?;
        Ok(())
    })?;
    // 3–5. The signer socket, in-process service on a temporary socket.
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("signer.sock");
    let uid = rustix::process::getuid().as_raw();
    let keys = vec![ServiceKey {
        name: "k".into(),
        signer: signer as Arc<dyn Signer>,
        node: Some(1),
        tls_uids: vec![],
    }];
    let service = Service::new(keys, dir.path(), Limits::default(), vec![uid], 64)
        .map_err(anyhow::Error::msg)?;
    let listener = std::os::unix::net::UnixListener::bind(&socket)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&shutdown);
    let server = std::thread::spawn(move || serve(Arc::new(service), listener, flag));
    let clients: Vec<std::sync::Mutex<Client>> = (0..args.clients.max(1))
        .map(|_| Client::connect(&socket).map(std::sync::Mutex::new))
        .collect::<Result<_, _>>()?;
    let call = |t: usize, i: usize, guarded: bool| -> Result<()> {
        let mut c = clients[t % clients.len()].lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        if guarded {
            // A prepare per call, each thread on its own sequence numbers, all within the
            // guard's jump bound.
            let seq = 1 + (i % 1_000_000_000) as u64 * 64 + t as u64;
            let digest = vpbox_consensus::Digest(vpbox_sm::sm3::hash(seq.to_be_bytes()).0);
            let vote = Vote { view: View(0), seq: SeqNo(seq), digest };
            let payload = signing_payload(0, NodeId(1), &Message::Prepare(vote));
            c.sign("k", Domain::CONSENSUS, &payload)?;
        } else {
            c.sign("k", Domain::SELFTEST, e.as_bytes())?;
        }
        Ok(())
    };
    let sock1 = rate(args.seconds, 1, |i| call(0, i, false))?;
    let guarded1 = rate(args.seconds, 1, |i| call(0, i, true))?;
    let n = args.clients.max(1);
    let sock_n = rate(args.seconds, n, |i| call(i / 1_000_000_000, i, false))?;
    let guarded_n = rate(args.seconds, n, |i| call(i / 1_000_000_000, i, true))?;
    shutdown.store(true, Ordering::Relaxed);
    let _ = server.join();
    // 6. The software library (what a key in memory would cost; never used for HSM keys).
    let soft_key = SecretKey::generate()?;
    let soft = rate(args.seconds, 1, |_| {
        soft_key.sign_digest(&e)?;
        Ok(())
    })?;

    println!("{:<44} {:>10} {:>12}", "path", "sig/s", "vs pkcs11");
    let rows = [
        ("raw C_Sign (token only, no verify)", raw),
        ("PKCS#11 signer (C_Sign + software verify)", p11),
        ("signer socket, 1 client, unguarded", sock1),
        ("signer socket, 1 client, guarded (fsync)", guarded1),
        (&*format!("signer socket, {n} clients, unguarded"), sock_n),
        (&*format!("signer socket, {n} clients, guarded"), guarded_n),
        ("software library (vpbox-sm, no HSM)", soft),
    ];
    for (name, r) in rows {
        println!("{name:<44} {r:>10.0} {:>11.2}x", r / p11);
    }
    println!(
        "{{\"bench\":\"signer\",\"raw_c_sign\":{raw:.0},\"pkcs11_signer\":{p11:.0},\"socket_1\":{sock1:.0},\"socket_1_guarded\":{guarded1:.0},\"socket_{n}\":{sock_n:.0},\"socket_{n}_guarded\":{guarded_n:.0},\"software\":{soft:.0}}}"
    );
    println!(
        "summary: socket overhead over the PKCS#11 signer: {:.1}% unguarded, {:.1}% guarded (1 client)",
        (p11 / sock1 - 1.0) * 100.0,
        (p11 / guarded1 - 1.0) * 100.0
    );
    Ok(Outcome::Ok)
}

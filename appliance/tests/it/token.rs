//! `vpbox hsm` and `vpbox signer` against the project's PKCS#11 test token (Sansec-style SM2
//! mechanisms), loaded by path like a vendor module. Each test has its own token directory and
//! config, passed to child processes through `VPBOX_TEST_TOKEN_CONF`, so tests run in parallel.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vpbox_signer::protocol::Status;
use vpbox_signer::test_support::{guarded_pairs, payload};
use vpbox_signer::{Client, ClientError};
use vpbox_sm::Domain;

use crate::{Run, Scratch, s, vpbox_env};

/// The test token's shared library, built by the workspace.
pub(crate) fn module() -> String {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_path_buf();
    for _ in 0..3 {
        for candidate in
            [dir.join("libvpbox_test_token.so"), dir.join("deps/libvpbox_test_token.so")]
        {
            if candidate.exists() {
                return candidate.to_str().unwrap().to_string();
            }
        }
        dir = dir.parent().unwrap().to_path_buf();
    }
    panic!("libvpbox_test_token.so not found near {}: build the workspace first", exe.display());
}

pub(crate) struct TestToken {
    pub(crate) dir: Scratch,
    conf: String,
    pub(crate) module: String,
}

impl TestToken {
    /// A fresh token directory with `faults` (TOML lines for the `[faults]` table), initialised
    /// with label `label`, SO PIN 87654321 and user PIN 123456.
    pub(crate) fn new(label: &str, faults: &str) -> Self {
        let dir = Scratch::new();
        let tokens = dir.path("token");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir
            .write("token.toml", format!("token_dir = \"{}\"\n[faults]\n{faults}\n", s(&tokens)));
        let token = Self { conf: s(&conf).to_string(), dir, module: module() };
        token.tool(&[
            "--init-token",
            "--slot-index",
            "0",
            "--label",
            label,
            "--so-pin",
            "87654321",
        ]);
        token.tool(&[
            "--init-pin",
            "--login",
            "--login-type",
            "so",
            "--token-label",
            label,
            "--so-pin",
            "87654321",
            "--new-pin",
            "123456",
        ]);
        token
    }

    pub(crate) fn env(&self) -> [(&str, &str); 1] {
        [("VPBOX_TEST_TOKEN_CONF", self.conf.as_str())]
    }

    fn tool(&self, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .args(["--module", &self.module])
            .args(args)
            .env("VPBOX_TEST_TOKEN_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool must be installed (apt-get install opensc)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "pkcs11-tool {args:?}: {text}");
        text
    }

    pub(crate) fn pin_file(&self, name: &str, pin: &str) -> String {
        let p = self.dir.write(name, pin);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        s(&p).to_string()
    }

    pub(crate) fn vpbox(&self, args: &[&str]) -> Run {
        vpbox_env(args, &self.env())
    }

    fn target<'a>(&'a self, label: &'a str, pin: &'a str) -> Vec<&'a str> {
        vec!["--module", &self.module, "--token", label, "--pin-file", pin]
    }
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_slice(&run.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", run.text(), run.stderr))
}

#[test]
fn sm2_keys_live_and_sign_inside_the_test_token() {
    let token = TestToken::new("node1", "");
    let pin = token.pin_file("pin", "123456");
    let t = token.target("node1", &pin);
    let tokens = json(&token.vpbox(&["hsm", "tokens", "--json", "--module", &token.module]));
    assert_eq!(tokens[0]["profile"], "sansec", "{tokens}");

    let made = token.vpbox(
        &[&["hsm", "keygen", "--json"], &t[..], &["--label", "consensus", "--id", "01"]].concat(),
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let key = json(&made);
    assert_eq!(key["problems"], serde_json::json!([]));
    assert_eq!(key["value_unreadable"], true);

    let st = token.vpbox(
        &[&["hsm", "selftest", "--json", "--count", "50"], &t[..], &["--id", "01"]].concat(),
    );
    assert_eq!(st.code, 0, "{}", st.stderr);
    assert_eq!(json(&st)["fingerprint_sm3"], key["fingerprint_sm3"]);

    // A request signed in the token, verified by OpenSSL with the token's public key.
    let csr = token.dir.path("node1.csr");
    let made = token.vpbox(
        &[
            &["hsm", "csr"],
            &t[..],
            &["--id", "01", "--subject", "CN=node1,O=Bank A,C=CN", "--out", s(&csr)],
        ]
        .concat(),
    );
    assert_eq!(made.code, 0, "{}", made.stderr);
    let v = crate::openssl(&[
        "req",
        "-in",
        s(&csr),
        "-verify",
        "-noout",
        "-vfyopt",
        "distid:1234567812345678",
        "-pubkey",
    ]);
    let text = v.text() + &v.stderr;
    assert!(text.contains("self-signature verify OK"), "{text}");
    assert!(
        text.contains(key["public_key_pem"].as_str().unwrap().trim()),
        "the CSR carries the token's key"
    );
}

#[test]
fn a_thousand_signatures_survive_a_token_that_keeps_resetting_and_failing() {
    let token = TestToken::new("flaky", "reset_every = 40\ndevice_error_rate = 0.05");
    let pin = token.pin_file("pin", "123456");
    let t = token.target("flaky", &pin);
    assert_eq!(
        token.vpbox(&[&["hsm", "keygen"], &t[..], &["--label", "k", "--id", "01"]].concat()).code,
        0
    );
    let st =
        token.vpbox(&[&["hsm", "selftest", "--count", "1000"], &t[..], &["--id", "01"]].concat());
    assert_eq!(st.code, 0, "{}", st.stderr);
}

#[test]
fn a_wrong_pin_costs_exactly_one_attempt_and_the_lockout_holds() {
    let token = TestToken::new("locky", "pin_lockout = 3");
    let good = token.pin_file("good", "123456");
    let bad = token.pin_file("bad", "000000");
    let keys_with = |pin: &str| {
        token.vpbox(&[
            "hsm",
            "keys",
            "--module",
            &token.module,
            "--token",
            "locky",
            "--pin-file",
            pin,
        ])
    };
    for _ in 0..2 {
        let run = keys_with(&bad);
        assert_eq!(run.code, 2);
        assert!(run.stderr.contains("refused the PIN (not retried)"), "{}", run.stderr);
    }
    // Two failed runs used two of three tries: the right PIN still works, and resets the count.
    assert_eq!(keys_with(&good).code, 0);
    for _ in 0..3 {
        keys_with(&bad);
    }
    let locked = keys_with(&good);
    assert_eq!(locked.code, 2);
    assert!(locked.stderr.contains("locked"), "{}", locked.stderr);
}

struct SignerProcess {
    child: Child,
    socket: PathBuf,
}

impl SignerProcess {
    fn start(token: &TestToken, config: &std::path::Path) -> Self {
        Self::start_as(token, config, None, env!("CARGO_BIN_EXE_vpbox"))
    }

    /// Starts the signer, as the user `uid` (through `setpriv`) if given.
    fn start_as(token: &TestToken, config: &std::path::Path, uid: Option<u32>, exe: &str) -> Self {
        let socket = token.dir.path("signer.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                let id = uid.to_string();
                c.args([&format!("--reuid={id}"), &format!("--regid={id}"), "--clear-groups"]);
                c.arg(exe);
                c
            }
            None => Command::new(exe),
        };
        let child = cmd
            .args(["signer", "run", "--config", s(config)])
            .env("VPBOX_TEST_TOKEN_CONF", &token.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Ready when it answers a connection, not when its socket file appears: the file is
        // there from bind(), a moment before listen() (a restart's connect was refused once).
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "the signer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, socket }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signer_config(token: &TestToken, pin: &str, fingerprint: &str, uids: &[u32]) -> PathBuf {
    signer_config_with(token, &token.module, pin, fingerprint, uids)
}

fn signer_config_with(
    token: &TestToken,
    module: &str,
    pin: &str,
    fingerprint: &str,
    uids: &[u32],
) -> PathBuf {
    let uids: Vec<String> = uids.iter().map(u32::to_string).collect();
    token.dir.write(
        "signer.toml",
        format!(
            "socket = \"{}\"\nmodule = \"{}\"\ntoken_label = \"node1\"\npin_file = \"{pin}\"\nstate_dir = \"{}\"\n\
             allowed_uids = [{}]\n[[keys]]\nname = \"consensus\"\nid = \"01\"\nfingerprint = \"{fingerprint}\"\nnode = 1\n",
            s(&token.dir.path("signer.sock")),
            module,
            s(&token.dir.path("state")),
            uids.join(", ")
        ),
    )
}

fn refusal(c: &mut Client, payload: &[u8]) -> Option<Status> {
    match c.sign("consensus", Domain::CONSENSUS, payload) {
        Ok(_) => None,
        Err(ClientError::Refused(status, _)) => Some(status),
        Err(e) => panic!("{e}"),
    }
}

/// A test token "node1" with a consensus key (CKA_ID 01): the token, its PIN file and the
/// key's SM3 fingerprint.
fn token_with_consensus_key() -> (TestToken, String, String) {
    let token = TestToken::new("node1", "");
    let pin = token.pin_file("pin", "123456");
    let t = token.target("node1", &pin);
    let key = json(&token.vpbox(
        &[&["hsm", "keygen", "--json"], &t[..], &["--label", "consensus", "--id", "01"]].concat(),
    ));
    let fp = key["fingerprint_sm3"].as_str().unwrap().to_string();
    (token, pin, fp)
}

#[test]
fn the_signer_service_refuses_equivocation_even_across_kill_9() {
    let (token, pin, fp) = token_with_consensus_key();
    let fp = fp.as_str();
    let me = rustix::process::getuid().as_raw();
    let config = signer_config(&token, &pin, fp, &[me]);
    let mut signer = SignerProcess::start(&token, &config);

    let ping = token.vpbox(&["signer", "ping", "--socket", s(&signer.socket)]);
    assert_eq!(ping.code, 0, "{}", ping.stderr);
    let out = String::from_utf8_lossy(&ping.stdout).into_owned();
    assert!(out.contains(" 0 refused"), "{out}");
    let mut c = Client::connect(&signer.socket).unwrap();
    let public = c.public_key("consensus").unwrap();
    assert_eq!(public.fingerprint().to_hex(), fp);
    for (name, first, second) in guarded_pairs(0) {
        let first = payload(0, 1, &first);
        let sig = c.sign("consensus", Domain::CONSENSUS, &first).unwrap();
        let digest = vpbox_sm::sm3::hash(&first).0;
        assert!(
            public.verify_in(Domain::CONSENSUS, &digest, &sig).is_valid(),
            "{name}: signed in the token, verified in software"
        );
        let second = payload(0, 1, &second);
        assert_eq!(refusal(&mut c, &second), Some(Status::Conflict), "{name}");
        assert_eq!(
            refusal(&mut c, &payload(0, 2, &guarded_pairs(0)[1].2)),
            Some(Status::WrongSender)
        );
    }
    let ping = token.vpbox(&["signer", "ping", "--socket", s(&signer.socket)]);
    let out = String::from_utf8_lossy(&ping.stdout).into_owned();
    assert!(out.contains("REFUSING"), "the probe shows the refusals: {out}");

    signer.kill9();
    let signer = SignerProcess::start(&token, &config);
    let mut c = Client::connect(&signer.socket).unwrap();
    for (name, first, second) in guarded_pairs(0) {
        let again = refusal(&mut c, &payload(0, 1, &second));
        assert_eq!(again, Some(Status::Conflict), "{name}: the guard forgot across kill -9");
        assert_eq!(refusal(&mut c, &payload(0, 1, &first)), None, "{name}: the same one again");
    }

    // Another user, whose UID is not allowed, is disconnected unanswered.
    std::fs::set_permissions(&signer.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(token.dir.0.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_vpbox"),
            "signer",
            "ping",
            "--socket",
            s(&signer.socket),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unlisted UID was served");
    // The signer closes without reading: the client sees EOF or, with its request unread, a reset.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("closed the connection") || err.contains("Connection reset"), "{err}");
}

#[test]
fn the_signer_refuses_to_start_with_a_key_that_is_not_the_pinned_one() {
    let token = TestToken::new("node1", "");
    let pin = token.pin_file("pin", "123456");
    let t = token.target("node1", &pin);
    assert_eq!(
        token
            .vpbox(&[&["hsm", "keygen"], &t[..], &["--label", "consensus", "--id", "01"]].concat())
            .code,
        0
    );
    let config = signer_config(&token, &pin, &"ab".repeat(32), &[0]);
    let run = token.vpbox(&["signer", "run", "--config", s(&config)]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is not the pinned"), "{}", run.stderr);
}

/// Hands a directory tree to `uid` (so a signer run as that user can read its token and PIN).
fn chown_tree(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

#[test]
fn the_signer_service_runs_with_core_dumps_off() {
    let (token, pin, fp) = token_with_consensus_key();
    let fp = fp.as_str();
    // proc(5): the files in /proc/PID belong to the process's user while it is dumpable and to
    // root once it is not. A signer run by root would show root either way, so root runs it as
    // nobody.
    let me = rustix::process::getuid().as_raw();
    let user = if me == 0 { 65534 } else { me };
    // Nobody may not be able to reach the build's folder (a clone in a 0700 directory): the
    // binary and the token module it runs are copied into the token's folder, handed to it.
    let (exe, module) = if me == 0 {
        let exe = token.dir.path("vpbox");
        std::fs::copy(env!("CARGO_BIN_EXE_vpbox"), &exe).unwrap();
        let module = token.dir.path("libvpbox_test_token.so");
        std::fs::copy(&token.module, &module).unwrap();
        (s(&exe).to_string(), s(&module).to_string())
    } else {
        (env!("CARGO_BIN_EXE_vpbox").to_string(), token.module.clone())
    };
    let config = signer_config_with(&token, &module, &pin, fp, &[user]);
    if me == 0 {
        chown_tree(token.dir.0.path(), user);
    }
    let signer = SignerProcess::start_as(&token, &config, (me == 0).then_some(user), &exe);
    let pid = signer.child.id();

    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(
        core.split_whitespace().skip(4).take(2).collect::<Vec<_>>(),
        ["0", "0"],
        "RLIMIT_CORE soft and hard: {core}"
    );
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(format!("/proc/{pid}/status")).unwrap().uid();
    assert_eq!(owner, 0, "the signer (uid {user}) is not dumpable: its /proc files are root's");
}

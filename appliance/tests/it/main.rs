//! The `vpbox` binary driven as operators run it, checked against the `openssl` command.

mod abuse;
mod anchor;
mod api;
mod boot;
mod ca;
mod cluster;
mod docs;
mod firewall;
mod hardening;
mod hsm;
mod metrics;
mod netns;
#[path = "../../../node/tests/support/openrpc.rs"]
mod openrpc;
mod p2p;
mod sm2;
mod sm3;
mod status;
mod supervise;
mod token;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A scratch directory removed on drop.
pub(crate) struct Scratch(tempfile::TempDir);

impl Scratch {
    pub(crate) fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
    pub(crate) fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        p
    }
}

/// A cluster's folder (`vpbox-dev` in a scratch directory): `vpbox cluster down` stops its
/// processes (and removes its namespaces) however the test ends.
pub(crate) struct ClusterDir {
    pub(crate) dir: PathBuf,
    _scratch: Scratch,
}

impl ClusterDir {
    pub(crate) fn new() -> Self {
        let scratch = Scratch::new();
        Self { dir: scratch.path("vpbox-dev"), _scratch: scratch }
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        vpbox(&["cluster", "down", "--dir", s(&self.dir)]);
    }
}

/// The result of one command: exit code, stdout, stderr.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.stdout.clone()).unwrap()
    }
}

fn finish(out: Output) -> Run {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "a panic is never an answer: {stderr}");
    Run { code: out.status.code().expect("killed by a signal"), stdout: out.stdout, stderr }
}

/// Runs `cmd` with `stdin` piped in (written from a thread, so a child that answers before it
/// has read everything cannot block it), its output captured.
pub(crate) fn with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Runs `vpbox ARGS` with `stdin` piped in.
pub(crate) fn vpbox_stdin(args: &[&str], stdin: &[u8]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vpbox"));
    cmd.args(args);
    finish(with_stdin(cmd, stdin))
}

/// Runs `vpbox ARGS` with no input.
pub(crate) fn vpbox(args: &[&str]) -> Run {
    vpbox_env(args, &[])
}

/// Runs `vpbox ARGS` with extra environment variables (a per-test SoftHSM config).
pub(crate) fn vpbox_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vpbox"));
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(cmd.output().unwrap())
}

/// Runs `openssl ARGS`. Panics if openssl is missing: CI installs it.
pub(crate) fn openssl(args: &[&str]) -> Run {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl command must be installed");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

//! The local cluster's own processes (signers, nodes, proxies), as `cluster down`, `add-node`
//! and the benchmarks signal and wait for them.
//!
//! A process is held by a pidfd from the moment it is judged to run vpbox ([`Vpbox::open`]):
//! every signal goes through the pidfd, so it reaches that process or none — never a process
//! the system gave the pid to after that judgement, and with no gap between the check and the
//! signal. (The judgement is by the program's name: a stale pid file whose pid another vpbox
//! process took before it is read would still be believed.) Waiting for an exit polls the
//! pidfd, which is readable once every thread of the process has exited (a thread-group leader
//! that exited first, shown as a zombie, still holds its files while others run: a ledger's
//! lock, a socket).

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};

/// A running vpbox process, held by a pidfd.
#[derive(Debug)]
pub(crate) struct Vpbox {
    pid: i32,
    fd: OwnedFd,
}

impl Vpbox {
    /// The process `pid`, if it is running and runs vpbox ([`is_vpbox`]); an error if the
    /// system cannot hold it (no pidfds before Linux 5.3, out of descriptors), rather than a
    /// running process taken for a stopped one. The pidfd is taken before the check, and the
    /// process seen running after it: the pid was then not free for another meanwhile, so the
    /// command line read was the held process's.
    pub(crate) fn open(pid: i32) -> Result<Option<Self>> {
        let Some(id) = u32::try_from(pid).ok().and_then(|p| Pid::from_raw(p as i32)) else {
            return Ok(None);
        };
        let fd = match pidfd_open(id, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(Errno::SRCH) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("holding process {pid} (pidfd_open)")),
        };
        let p = Self { pid, fd };
        Ok((is_vpbox(pid) && !p.gone()).then_some(p))
    }

    /// The process whose pid `file` holds (`nodeN/node.pid`, as a cluster's processes write
    /// them at their start): an error unless it names a running vpbox process.
    pub(crate) fn from_pid_file(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
        let pid = text.trim().parse().with_context(|| format!("the pid in {}", file.display()))?;
        match Self::open(pid)? {
            Some(p) => Ok(p),
            None => {
                bail!("{} names pid {pid}, which is not a running vpbox process", file.display())
            }
        }
    }

    /// Its pid, for what `/proc` says of it.
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends it `sig` (`what` names it in the error). One that has exited already is not an
    /// error: it is gone, as the signal meant.
    pub(crate) fn signal(&self, sig: Signal, what: &str) -> Result<()> {
        match pidfd_send_signal(&self.fd, sig) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("{what} (pid {}): {sig:?}", self.pid)),
        }
    }

    /// Whether it has exited, every thread of it.
    pub(crate) fn gone(&self) -> bool {
        self.wait_gone(Duration::ZERO)
    }

    /// Waits up to `limit` for it to have exited: whether it has.
    pub(crate) fn wait_gone(&self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            let left = limit.saturating_sub(start.elapsed());
            // At most a second a poll: the loop re-reads the time left.
            let step = Timespec::try_from(left.min(Duration::from_secs(1))).unwrap_or_default();
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&step)) {
                Ok(n) if n > 0 => return true,
                _ if left.is_zero() => return false,
                Ok(_) | Err(Errno::INTR) => {}
                // Out of kernel memory, say: tried again shortly, until the limit.
                Err(_) => std::thread::sleep(left.min(Duration::from_millis(20))),
            }
        }
    }

    /// Sends it SIGTERM (a node then finishes the events in hand, flushes its ledger and
    /// saves its state map's checkpoint) and waits up to `grace`: whether it is gone.
    pub(crate) fn terminate(&self, what: &str, grace: Duration) -> Result<bool> {
        self.signal(Signal::TERM, what)?;
        Ok(self.wait_gone(grace))
    }

    /// Stops it (SIGTERM, as `cluster down` does) and waits until it is gone: an error naming
    /// `what` if it is still there after 30 s.
    pub(crate) fn stop_and_wait(&self, what: &str) -> Result<()> {
        if !self.terminate(what, Duration::from_secs(30))? {
            bail!("{what} did not stop within 30 s");
        }
        Ok(())
    }
}

/// Whether the process `pid` runs vpbox ([`names_vpbox`] of its command line). A pid file can
/// outlive its process, and the pid be given to another. A zombie has no command line, so it
/// is not.
pub(crate) fn is_vpbox(pid: i32) -> bool {
    let own = std::env::current_exe().ok();
    let own = own.as_deref().and_then(program_name);
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| names_vpbox(&c, own))
}

/// The file name of the running binary `exe` ([`std::env::current_exe`]) as it was started:
/// without the [`DELETED`] the kernel adds once it is replaced on disk.
fn program_name(exe: &Path) -> Option<&OsStr> {
    let n = exe.file_name()?.as_bytes();
    Some(OsStr::from_bytes(n.strip_suffix(DELETED).unwrap_or(n)))
}

/// Whether a command line (`/proc/PID/cmdline`: NUL-separated arguments) is vpbox's: the
/// program it was started as (its first argument) is a file named `vpbox`, or named `own`,
/// this process's own program's name (a cluster's processes are started from the binary that
/// starts them, whatever its name) — not any argument naming it, as a `tail` of a cluster's
/// log would. `own` is given without the ` (deleted)` the kernel adds to the name of a binary
/// replaced on disk since it started (a rebuild): its children were started without it.
fn names_vpbox(cmdline: &[u8], own: Option<&OsStr>) -> bool {
    let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let name = Path::new(OsStr::from_bytes(program)).file_name();
    name.is_some() && (name == Some(OsStr::new("vpbox")) || name == own)
}

/// What the kernel appends to the path of a running binary replaced on disk since it started.
const DELETED: &[u8] = b" (deleted)";

/// This binary's path, to start a cluster's processes from: an error if it was replaced on
/// disk since this process started (a rebuild), rather than a start that fails with "no such
/// file" or, were the suffix dropped, processes of the new build among those of the old.
pub(crate) fn own_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the vpbox binary")?;
    if exe.as_os_str().as_bytes().ends_with(DELETED) {
        bail!(
            "this vpbox binary ({}) was replaced on disk since it started: run the new one",
            exe.display()
        );
    }
    Ok(exe)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shell waiting on its input, started with `arg0` as its `$0`: no child of its own to
    /// outlive the test. Killed and reaped when dropped, an assertion failing too.
    struct Shell(std::process::Child);

    impl Shell {
        fn start(arg0: &str) -> Self {
            let child = std::process::Command::new("sh")
                .args(["-c", "read line", arg0])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("sh");
            let shell = Self(child);
            // Its command line is the shell's once it has executed (the fork's is ours).
            let start = Instant::now();
            while !std::fs::read(format!("/proc/{}/cmdline", shell.pid()))
                .is_ok_and(|c| c.ends_with(format!("{arg0}\0").as_bytes()))
            {
                assert!(start.elapsed() < Duration::from_secs(10), "sh did not start");
                std::thread::sleep(Duration::from_millis(5));
            }
            shell
        }

        fn pid(&self) -> i32 {
            self.0.id() as i32
        }
    }

    impl Drop for Shell {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn is_vpbox_takes_this_binary_and_not_another_program_naming_it() {
        // This test binary is "this binary's own name".
        assert!(is_vpbox(std::process::id() as i32));
        assert!(Vpbox::open(std::process::id() as i32).expect("pidfd").is_some());
        // A program whose arguments name vpbox is not vpbox.
        let shell = Shell::start("/run/vpbox/vpbox");
        assert!(!is_vpbox(shell.pid()));
        assert!(Vpbox::open(shell.pid()).expect("pidfd").is_none());
        let pid = shell.pid();
        drop(shell);
        assert!(!is_vpbox(pid), "a reaped process's pid");
        assert!(Vpbox::open(pid).expect("pidfd").is_none());
        assert!(Vpbox::open(-1).expect("no process").is_none());
        assert!(Vpbox::open(0).expect("no process").is_none());
    }

    #[test]
    fn names_vpbox_judges_the_program_started_not_its_arguments() {
        let own = Some(OsStr::new("vpbox-build"));
        assert!(names_vpbox(b"vpbox\0node\0run\0", own));
        assert!(names_vpbox(b"/usr/bin/vpbox\0node\0run\0", None));
        assert!(names_vpbox(b"/work/target/release/vpbox-build\0signer\0", own));
        // A program that names vpbox in its arguments.
        assert!(!names_vpbox(b"tail\0-f\0/tmp/vpbox/node1/node.log\0", own));
        assert!(!names_vpbox(b"sh\0-c\0read line\0/run/vpbox/vpbox\0", own));
        // A longer or shorter name is another program.
        assert!(!names_vpbox(b"/usr/bin/vpbox-build-2\0", own));
        assert!(!names_vpbox(b"/usr/bin/vpbo\0", own));
        // A zombie's empty command line.
        assert!(!names_vpbox(b"", own));
        assert!(!names_vpbox(b"", Some(OsStr::new(""))));
        // This binary, rebuilt since it started.
        let rebuilt = Path::new("/work/target/release/vpbox-build (deleted)");
        assert_eq!(program_name(rebuilt), own);
        assert_eq!(program_name(Path::new("/usr/bin/vpbox")), Some(OsStr::new("vpbox")));
    }

    #[test]
    fn a_held_process_is_signalled_waited_for_and_then_out_of_reach() {
        let mut shell = Shell::start("vpbox-process-test");
        // Held as a checked process would be (the shell is not vpbox, so not through open).
        let pid = Pid::from_raw(shell.pid()).expect("pid");
        let held =
            Vpbox { pid: shell.pid(), fd: pidfd_open(pid, PidfdFlags::empty()).expect("pidfd") };
        assert!(!held.gone());
        assert!(!held.wait_gone(Duration::from_millis(50)), "a running shell is not gone");
        held.terminate("the shell", Duration::from_secs(10)).expect("SIGTERM");
        // Exited, not yet reaped: gone all the same.
        assert!(held.gone());
        shell.0.wait().expect("wait");
        // Reaped, its pid free for another: a signal through the pidfd reaches nobody, and
        // says so by succeeding as for one gone.
        held.signal(Signal::KILL, "the shell").expect("a gone process is not an error");
        assert!(held.wait_gone(Duration::ZERO));
    }
}

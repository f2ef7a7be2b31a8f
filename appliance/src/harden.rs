//! Process hardening the services apply before they touch a secret.

use anyhow::{Context, Result};
use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};

/// Turns core dumps off for this process: `RLIMIT_CORE` 0 (soft and hard, so nothing in the
/// process can raise it again) and `PR_SET_DUMPABLE` 0 (no core even where the limit is
/// ignored, e.g. a `core_pattern` pipe, and no `ptrace` or `/proc/PID/mem` by the same user).
///
/// Why: systemd's units set `LimitCORE=0`, but outside systemd (a shell, the local cluster) a
/// forced abort of the signer wrote its memory, the HSM PIN included, into a core file. `vpbox
/// signer run` and `vpbox node run` call this first and refuse to start if either call fails.
pub(crate) fn no_core_dumps() -> Result<()> {
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })
        .context("cannot turn core dumps off (setrlimit RLIMIT_CORE 0); not starting")?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)
        .context("cannot turn core dumps off (prctl PR_SET_DUMPABLE 0); not starting")?;
    Ok(())
}

#!/usr/bin/env bash
# A short run of every fuzz target (cargo fuzz, libFuzzer). The machine's one toolchain is
# stable, so cargo fuzz's nightly flags are enabled with RUSTC_BOOTSTRAP=1, only here.
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for dir in fuzz consensus/fuzz; do
  (cd "$dir" && cargo fuzz build -O >/tmp/vpbox-fuzz-build.log 2>&1) || { tail -30 /tmp/vpbox-fuzz-build.log; exit 1; }
  for target in $(cd "$dir" && cargo fuzz list); do
    log=$(mktemp)
    if (cd "$dir" && cargo fuzz run -O "$target" -- -max_total_time="$seconds" >"$log" 2>&1); then
      echo "$dir/$target: $(grep -E '^Done [0-9]+ runs' "$log" | tail -1)"
      rm -f "$log"
    else
      echo "$dir/$target FAILED:"; tail -40 "$log"; exit 1
    fi
  done
done

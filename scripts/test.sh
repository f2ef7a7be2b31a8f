#!/usr/bin/env bash
# Installs what is needed and runs every check CI runs: format, lints, all tests (unit,
# property, interop with the openssl command, end-to-end CLI), doctests and the benchmark smoke
# run. Run from anywhere, as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test

step() { printf '\n== %s\n' "$*"; }
step "format";     cargo fmt --all --check
step "lints";      cargo clippy --workspace --all-targets --locked -- -D warnings
step "tests";      cargo nextest run --workspace --locked --no-fail-fast
step "doctests";   cargo test --workspace --doc --locked
step "mutants";    bash scripts/mutants.sh --ci
step "units";      bash scripts/units.sh target/debug/vpbox
step "fuzz smoke";  bash scripts/fuzz-smoke.sh 10
step "bench smoke"; VPBOX_BENCH_SECONDS=0.05 cargo bench -p vpbox-sm --bench crypto --locked
VPBOX_BENCH_ANCHORS=20000 cargo bench -p vpbox-ledger --bench ledger --locked
VPBOX_BENCH_ANCHORS=20000 VPBOX_BENCH_SECONDS=0.05 cargo bench -p vpbox-proof --bench proofs --locked
VPBOX_BENCH_QUICK=1 cargo bench -p vpbox-tls --bench tls --locked
cargo build --release --locked -p vpbox-appliance -p vpbox-test-token
target/release/vpbox bench anchors --nodes 4 --count 20000 --csv 20000 --signed 500 --rate 50
target/release/vpbox bench growth --anchors 20000 --catch-up 10000 --reads 1000
target/release/vpbox bench rpc --hostile 32 --slow 200 --slow-seconds 6
target/release/vpbox bench proxy --seconds 2 --rounds 1 --connections 1,16,256 --handshake-seconds 1

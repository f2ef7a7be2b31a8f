#!/usr/bin/env bash
# The main job: installs what is needed, builds and installs `vpbox` (to /usr/local/bin) and the
# PKCS#11 test token (to /usr/local/lib/vpbox), then brings up a local 4-node consortium in
# ./vpbox-dev — per box a test-token HSM and a signer (keys generated inside the tokens), a node
# with no network socket, and a proxy: the nodes' links run between the proxies over RFC 8998
# mutual TLS on loopback ports — and anchors a sales slip through a proxy's HTTPS API as a POSP.
# It builds nothing only the tests need (no Tongsuo, no nextest).
# Stop it with `vpbox cluster down`; `vpbox cluster up` starts it again with its data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -p vpbox-appliance -p vpbox-test-token
install -m 0755 target/release/vpbox /usr/local/bin/vpbox
install -D -m 0644 target/release/libvpbox_test_token.so /usr/local/lib/vpbox/libvpbox_test_token.so

say() { printf '\n$ %s\n' "$*"; "$@"; }
say vpbox cluster up --dir vpbox-dev
say vpbox status --dir vpbox-dev
read -r key value _ < <(vpbox anchor hash docs/examples/slip.json)
posp=vpbox-dev/posp/bank-a.toml   # bank-a's POSP: its key and TLS identity (a signer is required)
say vpbox anchor put --posp "$posp" "$key" "$value" --dir vpbox-dev
say vpbox anchor put --posp "$posp" "$key" "$value" --dir vpbox-dev || true   # write-once: (false, "the key exist")
say vpbox anchor get "$key" --dir vpbox-dev
say vpbox anchor verify docs/examples/slip.json --dir vpbox-dev
printf '\nThe cluster keeps running in ./vpbox-dev (stop: vpbox cluster down --dir vpbox-dev).\n'

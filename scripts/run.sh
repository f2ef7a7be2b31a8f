#!/usr/bin/env bash
# Installs what is needed, builds and installs `vpbox` (to /usr/local/bin), and walks through
# the operator's crypto tools with OpenSSL checking each result. Until the node lands this is
# the main job; `vpbox cluster up` will replace it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -p vpbox-appliance
install -m 0755 target/release/vpbox /usr/local/bin/vpbox

demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
say() { printf '\n$ %s\n' "$*"; "$@"; }
cp docs/examples/slip.json "$demo/"
cd "$demo"
say vpbox sm2 keygen --out posp.key --pub-out posp.pub
say vpbox sm3 slip.json
say openssl dgst -sm3 slip.json
say vpbox anchor hash slip.json
say vpbox sm2 sign --key posp.key --out slip.sig slip.json
say openssl pkeyutl -verify -rawin -digest sm3 -pubin -inkey posp.pub \
    -pkeyopt distid:1234567812345678 -in slip.json -sigfile slip.sig
say vpbox sm2 verify --pub posp.pub --sig slip.sig slip.json
printf '\nvpbox is installed at /usr/local/bin/vpbox; try `vpbox --help`.\n'

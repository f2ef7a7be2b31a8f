#!/usr/bin/env bash
# Installs what is needed, builds and installs `vpbox` (to /usr/local/bin) and the PKCS#11 test
# token (to /usr/local/lib/vpbox), then walks through the operator's crypto tools and the HSM
# signer with OpenSSL checking each result. Until the node lands this is the main job;
# `vpbox cluster up` will replace it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cargo build --release --locked -p vpbox-appliance -p vpbox-test-token
install -m 0755 target/release/vpbox /usr/local/bin/vpbox
install -D -m 0644 target/release/libvpbox_test_token.so /usr/local/lib/vpbox/libvpbox_test_token.so

demo=$(mktemp -d)
signer_pid=
cleanup() { [ -n "$signer_pid" ] && kill "$signer_pid" 2>/dev/null; rm -rf "$demo"; }
trap cleanup EXIT
say() { printf '\n$ %s\n' "$*"; "$@"; }
cp docs/examples/slip.json "$demo/"
cd "$demo"

echo "== The POSP's tools: SM3 anchors and SM2 signatures, checked by OpenSSL"
say vpbox sm2 keygen --out posp.key --pub-out posp.pub
say vpbox sm3 slip.json
say openssl dgst -sm3 slip.json
say vpbox anchor hash slip.json
say vpbox sm2 sign --key posp.key --out slip.sig slip.json
say openssl pkeyutl -verify -rawin -digest sm3 -pubin -inkey posp.pub \
    -pkeyopt distid:1234567812345678 -in slip.json -sigfile slip.sig
say vpbox sm2 verify --pub posp.pub --sig slip.sig slip.json

echo
echo "== The security officer's tools: a node key generated and used inside a PKCS#11 token"
module=/usr/local/lib/vpbox/libvpbox_test_token.so
mkdir -p token
printf 'token_dir = "%s/token"\n' "$demo" > token.toml
export VPBOX_TEST_TOKEN_CONF=$demo/token.toml
pkcs11-tool --module "$module" --init-token --slot-index 0 --label node1 --so-pin 87654321 >/dev/null
pkcs11-tool --module "$module" --init-pin --login --login-type so --token-label node1 \
    --so-pin 87654321 --new-pin 123456 >/dev/null
printf 123456 > pin && chmod 0400 pin
say vpbox hsm tokens --module "$module"
say vpbox hsm keygen --module "$module" --token node1 --pin-file pin --label consensus --id 01
say vpbox hsm selftest --module "$module" --token node1 --pin-file pin --id 01 --count 100
say vpbox hsm csr --module "$module" --token node1 --pin-file pin --id 01 \
    --subject "CN=node1,OU=vp-node,O=Bank A,C=CN" --out node1.csr
say openssl req -in node1.csr -verify -noout -vfyopt distid:1234567812345678

echo
echo "== The signer service: the only holder of the PIN, with the double-sign guard"
fingerprint=$(vpbox hsm inspect --module "$module" --token node1 --pin-file pin --id 01 --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["fingerprint_sm3"])')
cat > signer.toml <<TOML
socket = "$demo/signer.sock"
module = "$module"
token_label = "node1"
pin_file = "$demo/pin"
state_dir = "$demo/state"
allowed_uids = [$(id -u)]
[[keys]]
name = "consensus"
id = "01"
fingerprint = "$fingerprint"
TOML
vpbox signer run --config signer.toml 2>signer.log &
signer_pid=$!
for _ in $(seq 100); do [ -S signer.sock ] && break; sleep 0.1; done
say vpbox signer ping --socket signer.sock
say vpbox signer pubkey --socket signer.sock --key consensus
printf '\nvpbox is installed at /usr/local/bin/vpbox; try `vpbox --help`.\n'

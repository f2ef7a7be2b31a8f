#!/usr/bin/env bash
# Installs what vpbox needs to build and run on Debian 12, as root; with `--test`, also what
# only the tests need (cargo-nextest, cargo-mutants, and Tongsuo, the RFC 8998 peer of the interop tests).
# Idempotent and quiet when everything is there already.
set -euo pipefail

# curl: the JSON-RPC call `vpbox cluster up` suggests; opensc: pkcs11-tool; softhsm2: a real third-party token; systemd: systemd-analyze for units;
# librocksdb-dev, libsnappy-dev, libclang-dev: the ledger links Debian's RocksDB; gcc, make,
# perl: Tongsuo (below).
# Installs the Debian packages named that are not installed yet.
install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
install openssl ca-certificates curl pkg-config softhsm2 opensc systemd nftables iproute2 procps librocksdb-dev libsnappy-dev libclang-dev gcc make perl

command -v cargo >/dev/null || { echo "deps: cargo not found (install Rust with rustup)" >&2; exit 2; }
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done
[[ "${1:-}" == "--test" ]] || exit 0
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# cargo-mutants and python3 (its per-file score): the mutation step (scripts/mutants.sh).
cargo mutants --version 2>/dev/null | grep -qx "cargo-mutants 27.1.0" \
  || cargo install --locked cargo-mutants --version 27.1.0
install python3
# The independent proof verifier (proof/tests/independent_verifier.py): Python with the PyPI
# gmssl package (SM2/SM3 that is not the project's), in its own venv.
install python3-venv
[ -x /opt/vpbox-pytest/bin/python3 ] || python3 -m venv /opt/vpbox-pytest
/opt/vpbox-pytest/bin/python3 -c 'import gmssl' 2>/dev/null \
  || /opt/vpbox-pytest/bin/pip install -q gmssl==3.2.2
# promtool (prometheus): checks the proxy's /metrics page in the cluster test; nginx and wrk:
# the peer and the load generator of `vpbox bench proxy`; systemd-container (systemd-nspawn):
# the box's units booted under systemd; mmdebstrap: a fresh Debian root for the hardening test;
# chromium: the status page loaded in a headless browser; faketime: a box whose clock is off.
install prometheus nginx wrk systemd-container mmdebstrap chromium faketime
# Tongsuo's s_server/s_client: the RFC 8998 peer of vpbox-tls's interop tests.
bash "$(dirname "$0")/tongsuo.sh"

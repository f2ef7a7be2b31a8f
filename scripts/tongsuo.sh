#!/usr/bin/env bash
# Builds Tongsuo's `openssl` command, an independent RFC 8998 (TLS 1.3 with the SM suites)
# implementation that OpenSSL 3.0 is not, for vpbox-tls's interop tests. The source is the
# tongsuo-src crate, fetched through cargo from crates.io and checked against its SHA-256.
# Idempotent: quiet when the binary is there. About 1.5 minutes on 2 cores.
set -euo pipefail
version="850.1.1+8.5.0"
sha256="c3707d4fc3f701c479a327bc98315902725b93507b1c447489ec101361321f79"
bin="${VPBOX_TONGSUO:-/usr/local/lib/vpbox-tongsuo/openssl}"
if [[ -x $bin ]] && "$bin" version 2>/dev/null | grep -q "Tongsuo 8.5.0"; then
  exit 0
fi
echo "deps: building Tongsuo 8.5.0 (RFC 8998 interop peer) into $bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# cargo fetches the crate the way it fetches every dependency (registry, proxy and all).
(cd "$work" && cargo init -q --vcs none --name tongsuo-fetch \
  && echo "tongsuo-src = \"=${version%%+*}\"" >> Cargo.toml && cargo fetch -q)
crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"tongsuo-src-$version.crate" | head -1)
echo "$sha256  $crate" | sha256sum -c --quiet
tar xzf "$crate" -C "$work"
cd "$work/tongsuo-src-$version/tongsuo"
./config no-shared no-tests >"$work/config.log" 2>&1 || { tail -20 "$work/config.log"; exit 1; }
make -j"$(nproc)" build_programs >"$work/make.log" 2>&1 || { tail -40 "$work/make.log"; exit 1; }
install -D -m 0755 apps/openssl "$bin"
"$bin" version

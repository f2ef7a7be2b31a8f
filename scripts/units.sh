#!/usr/bin/env bash
# Checks the box's systemd units as CI does: `systemd-analyze verify` in a scratch root that
# holds the units, the vpbox binary (argument 1, default target/debug/vpbox) and the host's
# own system units; then each unit's exposure (`systemd-analyze security --offline=yes`),
# printed, against its limit below. A unit without a limit fails the check.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/vpbox}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp "$bin" "$root/usr/bin/vpbox"
cp /usr/bin/kill "$root/usr/bin/kill"
cp systemd/*.service systemd/*.socket systemd/*.timer "$root/etc/systemd/system/"
systemd-analyze verify --root="$root" "$root"/etc/systemd/system/vpbox-*.service "$root"/etc/systemd/system/vpbox-*.socket "$root"/etc/systemd/system/vpbox-*.timer
echo "units: systemd-analyze verify clean"
said=$(systemd-sysusers --dry-run "$PWD/systemd/vpbox.sysusers" 2>&1) || { echo "$said" >&2; exit 1; }
echo "units: sysusers.d entries accepted (systemd-sysusers --dry-run)"
# Exposure limits in tenths (systemd-analyze's --threshold scale: 0.2 shown = 2). No unit has
# PrivateUsers=yes (it scores 0.2 better but makes every other UID read as 65534 to
# SO_PEERCRED, and the signer and node check their callers by UID); the firewall loads rules,
# so it holds CAP_NET_ADMIN and netlink.
declare -A limit=([vpbox-signer]=5 [vpbox-node]=5 [vpbox-proxy]=15 [vpbox-firewall]=20 [vpbox-crl-renew]=15)
for u in systemd/*.service; do
  name=$(basename "$u" .service)
  max=${limit[$name]:-}
  [ -n "$max" ] || { echo "$u: no exposure limit in scripts/units.sh" >&2; exit 1; }
  score=$(systemd-analyze security --offline=yes "$u" | awk '/Overall exposure level/ {print $(NF-2)}')
  if ! systemd-analyze security --offline=yes --threshold="$max" "$u" >/dev/null; then
    echo "$u: exposure $score, above its limit $((max / 10)).$((max % 10))" >&2
    exit 1
  fi
  echo "$u: exposure $score (limit $((max / 10)).$((max % 10)))"
done

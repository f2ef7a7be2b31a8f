#!/usr/bin/env bash
# Installs the box's host hardening into a Debian 12 root: `hardening/install.sh [ROOT]`
# (default /; an image build passes its root folder). Idempotent: a second run changes nothing.
# What each file does and which CIS Debian 12 / 等保 2.0 item it answers: SECURITY.md, "Host
# hardening". Needs, in ROOT: systemd, login, passwd, libpam-runtime (Debian's minbase has
# them), libpam-pwquality and cracklib-runtime (refused without them); auditd for its limits
# (reported and skipped when absent).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(realpath "${1:-/}")
[ -d "$root/etc" ] && [ -d "$root/usr" ] || { echo "hardening: $root is not a root filesystem" >&2; exit 2; }
say() { echo "hardening: $*"; }

# Runs a command of the root: directly for /, else chrooted.
in_root() {
  if [ "$root" = / ]; then "$@"; else chroot "$root" "$@"; fi
}

# Sets `KEY<sep>VALUE` in FILE: every active line for KEY is replaced, or one is appended.
set_key() {
  local file=$1 key=$2 sep=$3 value=$4
  if grep -Eq "^[[:space:]]*$key([[:space:]]|=)" "$file"; then
    sed -i -E "s#^[[:space:]]*$key([[:space:]]*=[[:space:]]*|[[:space:]]+).*#$key$sep$value#" "$file"
  else
    printf '%s%s%s\n' "$key" "$sep" "$value" >>"$file"
  fi
}

# 1. The files, as they are in this folder (root-owned; the audit rules readable by root alone).
(cd "$here" && find etc usr -type f) | while read -r f; do
  mode=0644
  case "$f" in etc/audit/*) mode=0640 ;; esac
  install -D -o root -g root -m "$mode" "$here/$f" "$root/$f"
done
say "files installed"

# 2. Passwords of operators' accounts (CIS 5.4.1.1–5.4.1.4, 5.4.3.3).
defs="$root/etc/login.defs"
set_key "$defs" PASS_MAX_DAYS ' ' 365
set_key "$defs" PASS_MIN_DAYS ' ' 1
set_key "$defs" PASS_WARN_AGE ' ' 7
set_key "$defs" ENCRYPT_METHOD ' ' YESCRYPT
set_key "$defs" UMASK ' ' 027
say "login.defs set"

# 3. PAM: lockout, history, quality, no empty passwords (CIS 5.3.2.x–5.3.3.x). pwquality is
# required, not optional: pam_pwhistory takes the new password from the module before it
# (use_authtok), so without pwquality no password could be set or changed at all; and its
# dictionary check needs cracklib's dictionary, without which every new password is refused.
configs="$root/usr/share/pam-configs"
if [ ! -f "$configs/pwquality" ]; then
  echo "hardening: install libpam-pwquality (password quality and history need it)" >&2
  exit 1
fi
if ! ls "$root"/var/cache/cracklib/cracklib_dict.pwd* >/dev/null 2>&1; then
  echo "hardening: libpam-pwquality needs cracklib's dictionary: install cracklib-runtime" >&2
  exit 1
fi
# pam_unix without `nullok` (CIS 5.3.3.4.1): Debian's own profile, less that word, in its place.
# (No comma in a Name: debconf would split the profile menu there.)
{
  echo "Name: vpbox: Unix authentication without empty passwords (Debian's profile less nullok)"
  echo "Conflicts: unix"
  grep -v '^Name:' "$configs/unix" | sed -E 's/[[:space:]]nullok\b//'
} >"$configs/vpbox-unix"
profiles=(vpbox-unix vpbox-faillock-preauth vpbox-faillock vpbox-pwhistory pwquality)
# One call: Debian's unix profile out and ours in together, so no moment without an auth
# module; noninteractive, so an image build never waits on a debconf question.
DEBIAN_FRONTEND=noninteractive in_root pam-auth-update --package --disable unix \
  --enable "${profiles[@]}"
# pam-auth-update leaves hand-edited files alone (and still exits 0): check what it wrote.
pam="$root/etc/pam.d"
check_pam() {
  grep -Eq "$2" "$pam/$1" || { echo "hardening: $pam/$1 lacks $3 (edited by hand? see pam-auth-update(8))" >&2; exit 1; }
}
check_pam common-auth 'pam_faillock\.so[[:space:]]+preauth' "pam_faillock preauth"
check_pam common-auth 'pam_faillock\.so[[:space:]]+authfail' "pam_faillock authfail"
check_pam common-account 'pam_faillock\.so' "pam_faillock"
check_pam common-password 'pam_pwquality\.so' "pam_pwquality"
check_pam common-password 'pam_pwhistory\.so' "pam_pwhistory"
if grep -q nullok "$pam"/common-auth "$pam"/common-password; then
  echo "hardening: $pam still allows empty passwords (nullok)" >&2
  exit 1
fi
say "PAM profiles enabled: ${profiles[*]}"

# 4. auditd's own limits: logs kept, never rotated away; a full disk stops the box rather
# than its audit trail (CIS 6.2.2.1–6.2.2.4).
conf="$root/etc/audit/auditd.conf"
if [ -f "$conf" ]; then
  set_key "$conf" max_log_file ' = ' 64
  set_key "$conf" max_log_file_action ' = ' keep_logs
  set_key "$conf" space_left ' = ' 1024
  set_key "$conf" space_left_action ' = ' syslog
  set_key "$conf" admin_space_left ' = ' 256
  set_key "$conf" admin_space_left_action ' = ' halt
  set_key "$conf" disk_full_action ' = ' halt
  set_key "$conf" disk_error_action ' = ' halt
  say "auditd.conf set"
else
  say "auditd is not installed: its limits (CIS 6.2.2.x) skipped; its rules are in place for it"
fi

# 5. systemd: /tmp as its own tmpfs; no SSH server, even if one gets installed (an operator
# who wants SSH from the management network unmasks it and sets [firewall] ssh_port).
units="$root/etc/systemd/system"
mkdir -p "$units/local-fs.target.wants"
ln -sfn /etc/systemd/system/tmp.mount "$units/local-fs.target.wants/tmp.mount"
for u in ssh.service ssh.socket sshd.service; do
  ln -sfn /dev/null "$units/$u"
done
[ -e "$root/usr/sbin/sshd" ] && say "openssh-server is installed: its units are masked"
say "tmp.mount enabled; ssh masked"

# 6. root's password locked: operators log in as themselves (CIS 5.4.2.4). On a running box
# (ROOT /) only if someone else can administer it (a member of sudo), unless told otherwise
# (VPBOX_LOCK_ROOT=force); an image build creates its operators itself.
if [ "$(passwd --root "$root" --status root | cut -d' ' -f2)" != L ]; then
  admins=$(getent group sudo | cut -d: -f4)
  if [ "$root" = / ] && [ -z "$admins" ] && [ "${VPBOX_LOCK_ROOT:-}" != force ]; then
    echo "hardening: no member of group sudo: locking root would leave no administrator" \
      "(add one, or set VPBOX_LOCK_ROOT=force)" >&2
    exit 1
  fi
  usermod --root "$root" --lock root
fi
say "root locked"

//! The host hardening (`hardening/install.sh`) on a fresh Debian 12 root, as an image build
//! installs it: a minimal bookworm made by `mmdebstrap` from Debian's archive, the script run
//! twice (the second run changes nothing), then each part seen doing what SECURITY.md says:
//! root locked; an operator's weak password refused, a reused one refused, five wrong
//! passwords locking the account, an empty password refused (through the real PAM stack,
//! with `pamtester`); the
//! blacklisted modules impossible to load; the network sysctls applied in a throw-away network
//! namespace, the kernel's all known to this kernel; and the root booted under systemd
//! (`systemd-nspawn`) with `/tmp` a `nodev,nosuid,noexec` tmpfs, the journal on disk and SSH
//! masked.
//!
//! Needs root (chroot, namespaces, nspawn), `mmdebstrap` and Debian's archive (the test
//! dependencies and CI have both).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::Scratch;
use crate::boot::Container;
use crate::netns::wait;

/// The packages the appliance's root has that the hardening acts on (`kmod` for `modprobe`,
/// `pamtester` for the test's logins).
const PACKAGES: &str = "systemd,auditd,libpam-pwquality,cracklib-runtime,kmod,pamtester";

/// The blacklisted modules (hardening/etc/modprobe.d/vpbox-blacklist.conf).
const MODULES: [&str; 11] = [
    "cramfs",
    "freevxfs",
    "hfs",
    "hfsplus",
    "jffs2",
    "udf",
    "usb-storage",
    "dccp",
    "tipc",
    "rds",
    "sctp",
];

fn hardening() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hardening")
}

/// Runs `program ARGS` in `root` (chroot) with `stdin`.
fn chroot(root: &Path, stdin: &str, program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("chroot");
    cmd.arg(root).arg(program).args(args);
    crate::with_stdin(cmd, stdin.as_bytes())
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every file and link under `dir`: its bytes, or where it points.
fn tree(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let to = fs::read_link(&path).unwrap();
            out.insert(path, to.into_os_string().into_encoded_bytes());
        } else if kind.is_dir() {
            tree(&path, out);
        } else if kind.is_file() {
            out.insert(path.clone(), fs::read(&path).unwrap());
        }
    }
}

fn install(root: &Path) -> String {
    let out = Command::new("bash").arg(hardening().join("install.sh")).arg(root).output().unwrap();
    assert!(out.status.success(), "install.sh: {}", text(&out));
    text(&out)
}

#[test]
fn the_hardening_installs_on_a_fresh_debian_root_and_does_what_it_says() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: not root (chroot, namespaces and systemd-nspawn need root)");
        return;
    }
    let scratch = Scratch::new();
    let root = scratch.path("root");
    let out = Command::new("mmdebstrap")
        .args(["--quiet", "--variant=minbase", &format!("--include={PACKAGES}"), "bookworm"])
        .arg(&root)
        .output()
        .expect("mmdebstrap must be installed");
    assert!(out.status.success(), "mmdebstrap: {}", text(&out));

    // Without libpam-pwquality no password could be set (pam_pwhistory takes the new one from
    // it): refused, and nothing of PAM changed.
    let profile = root.join("usr/share/pam-configs/pwquality");
    let aside = scratch.path("pwquality");
    fs::rename(&profile, &aside).unwrap();
    let auth = fs::read(root.join("etc/pam.d/common-auth")).unwrap();
    let out = Command::new("bash").arg(hardening().join("install.sh")).arg(&root).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("install libpam-pwquality"));
    assert_eq!(fs::read(root.join("etc/pam.d/common-auth")).unwrap(), auth);
    fs::rename(&aside, &profile).unwrap();

    // Installed twice: the second run changes no file.
    let said = install(&root);
    for part in ["files installed", "PAM profiles enabled", "auditd.conf set", "root locked"] {
        assert!(said.contains(part), "{part} not in {said}");
    }
    let mut first = BTreeMap::new();
    tree(&root.join("etc"), &mut first);
    install(&root);
    let mut second = BTreeMap::new();
    tree(&root.join("etc"), &mut second);
    let changed: Vec<_> =
        second.iter().filter(|(p, b)| first.get(*p) != Some(*b)).map(|(p, _)| p).collect();
    assert!(changed.is_empty() && first.len() == second.len(), "a second run changed {changed:?}");

    // root's password is locked (CIS 5.4.2.4); an operator's account follows the rules.
    let status = text(&chroot(&root, "", "passwd", &["-S", "root"]));
    assert!(status.starts_with("root L "), "{status}");
    let defs = fs::read_to_string(root.join("etc/login.defs")).unwrap();
    for line in ["PASS_MAX_DAYS 365", "ENCRYPT_METHOD YESCRYPT", "UMASK 027"] {
        assert_eq!(defs.lines().filter(|l| *l == line).count(), 1, "{line}");
    }
    let ok = chroot(&root, "", "useradd", &["-m", "operator1"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let (good, next) = ("Kx9#mTq2!vRw7Lp-2026", "N3w#Passw0rd!zzQ-2026");
    let set = |password: &str| chroot(&root, &format!("operator1:{password}\n"), "chpasswd", &[]);
    let weak = set("Short1!");
    assert!(!weak.status.success() && text(&weak).contains("shorter than 14"), "{}", text(&weak));
    let simple = set("onlylowercaseletters");
    assert!(!simple.status.success(), "a one-class password was taken");
    assert!(set(good).status.success());
    assert!(set(next).status.success());
    // A password used before is refused (and the account keeps its current one).
    let reused = set(good);
    assert!(text(&reused).contains("has been already used"), "{}", text(&reused));
    let login = |password: &str| {
        chroot(
            &root,
            &format!("{password}\n"),
            "pamtester",
            &["login", "operator1", "authenticate"],
        )
    };
    assert!(login(next).status.success(), "{}", text(&login(next)));
    for _ in 0..5 {
        assert!(!login("wrong-password").status.success());
    }
    // An account without a password does not log in with an empty one (no `nullok`).
    assert!(chroot(&root, "", "useradd", &["-m", "operator2"]).status.success());
    assert!(chroot(&root, "", "passwd", &["-d", "operator2"]).status.success());
    let empty = chroot(&root, "\n", "pamtester", &["login", "operator2", "authenticate"]);
    assert!(!empty.status.success(), "an empty password logged in: {}", text(&empty));
    let locked = login(next);
    assert!(!locked.status.success(), "the right password after five wrong ones was taken");
    assert!(text(&locked).contains("locked due to 5 failed logins"), "{}", text(&locked));

    // Blacklisted modules resolve to /bin/false (CIS 1.1.1.x, 3.2.x).
    for m in MODULES {
        let out = chroot(&root, "", "modprobe", &["-n", "-v", m]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "install /bin/false", "{m}");
    }

    // The network sysctls apply (in a network namespace of their own) and read back; every
    // kernel key this kernel must know is known ("-" marks those a kernel may lack).
    let net = root.join("etc/sysctl.d/60-vpbox-net.conf");
    let script = format!(
        "sysctl -q -p {} && sysctl -n net.ipv4.conf.all.rp_filter net.ipv4.ip_forward \
         net.ipv6.conf.all.accept_ra",
        net.display()
    );
    let out = Command::new("unshare").args(["--net", "sh", "-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n0\n0\n");
    let kernel = fs::read_to_string(root.join("etc/sysctl.d/60-vpbox-kernel.conf")).unwrap();
    for line in kernel.lines().filter(|l| !l.starts_with('#') && !l.starts_with('-')) {
        let Some((key, _)) = line.split_once('=') else { continue };
        let file = Path::new("/proc/sys").join(key.trim().replace('.', "/"));
        assert!(file.exists(), "{key} is not a key of this kernel");
    }

    // Booted under systemd: /tmp a tmpfs without devices, set-uid or executables; the journal
    // on disk; SSH masked.
    let options = ["--private-network".to_string()];
    let name = format!("vpbox-harden-{}", std::process::id());
    let booted = Container::boot(&name, &root, &options, scratch.path("console.log"));
    booted.wait_active("tmp.mount", Duration::from_secs(60));
    let run = |program: &str, args: &[&str]| text(&booted.run(program, args));
    let options = run("findmnt", &["-n", "-o", "FSTYPE,OPTIONS", "/tmp"]);
    assert!(options.starts_with("tmpfs "), "{options}");
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(options.split([' ', ',']).any(|x| x == o), "/tmp without {o}: {options}");
    }
    assert_eq!(run("systemctl", &["is-enabled", "ssh.service"]).trim(), "masked");
    wait("the journal on disk", Duration::from_secs(30), || {
        run("journalctl", &["--header"]).contains("/var/log/journal/")
    });
}

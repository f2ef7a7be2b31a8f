use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The signer's configuration file (TOML), e.g. `/etc/vpbox/signer.toml`:
///
/// ```toml
/// socket = "/run/vpbox/signer.sock"
/// module = "/usr/lib/x86_64-linux-gnu/vendor-pkcs11.so"
/// token_label = "bank-a-node1"        # or token_serial; never a slot number
/// # profile = "sansec"                # default: from the token's manufacturer ID
/// # pin_file = "/etc/vpbox/hsm-pin"   # default: $CREDENTIALS_DIRECTORY/hsm-pin
/// state_dir = "/var/lib/vpbox-signer" # the double-sign guard's logs
/// allowed_uids = [952, 953]           # vpbox-node, vpbox-proxy (systemd/vpbox.sysusers)
/// # guard_capacity = 100000           # positions the double-sign guard remembers per class
/// # seq_jump_max = 1000000            # largest step above the highest sequence number signed
/// # view_jump_max = 10000             # largest step above the highest view signed
/// # max_connections = 16              # each may hold one frame of up to 16 MiB in memory
/// # audit_dir = "/var/lib/vpbox-signer/audit"  # default: state_dir/audit (crate::audit)
/// # audit_rotate_mib = 64             # the audit log rotates past this size; never deleted
///
/// [[keys]]
/// name = "consensus"
/// id = "01"                            # CKA_ID, hex
/// fingerprint = "…64 hex…"             # SM3 of the key's SPKI: pinned
/// node = 1                             # the consensus node this key signs for
/// # tls_uids = [953]                   # users allowed TLS 1.3 CertificateVerify signatures
/// #                                    # with it (the proxy's; each must be in allowed_uids)
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Unix socket to serve.
    pub socket: PathBuf,
    /// The PKCS#11 module, loaded by path.
    pub module: PathBuf,
    /// The token's label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_label: Option<String>,
    /// The token's serial (instead of the label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_serial: Option<String>,
    /// A built-in vendor profile by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// A 0400 file holding the user PIN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
    /// Where the double-sign guard keeps its logs.
    pub state_dir: PathBuf,
    /// UIDs allowed to connect.
    pub allowed_uids: Vec<u32>,
    /// Positions the double-sign guard remembers, per class (see [`crate::guard::Limits`]).
    #[serde(default = "default_capacity")]
    pub guard_capacity: usize,
    /// Largest step above the highest sequence number the guard has signed.
    #[serde(default = "default_seq_jump")]
    pub seq_jump_max: u64,
    /// Largest step above the highest view the guard has signed.
    #[serde(default = "default_view_jump")]
    pub view_jump_max: u64,
    /// Concurrent connections served.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
    /// The audit log's folder ([`crate::audit`]; default: `state_dir/audit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_dir: Option<PathBuf>,
    /// The audit log's current file is rotated past this many MiB (default 64).
    #[serde(default = "default_audit_rotate_mib")]
    pub audit_rotate_mib: u64,
    /// The keys served.
    pub keys: Vec<KeyConfig>,
}

/// One key the signer serves.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The name clients use.
    pub name: String,
    /// `CKA_ID`, hex.
    pub id: String,
    /// SM3 fingerprint of the key's SPKI; the signer refuses to start if the token's key differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The consensus node id this key signs for: a consensus payload naming another sender
    /// is refused. A key without one signs no consensus message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<u32>,
    /// The users allowed TLS 1.3 CertificateVerify signatures with this key (the box's proxy,
    /// whose handshakes present the node's `vp-node` certificate); none by default.
    #[serde(default)]
    pub tls_uids: Vec<u32>,
}

fn default_audit_rotate_mib() -> u64 {
    crate::audit::ROTATE_MIB_DEFAULT
}

fn default_capacity() -> usize {
    crate::guard::Limits::default().capacity
}

fn default_seq_jump() -> u64 {
    crate::guard::Limits::default().seq_jump_max
}

fn default_view_jump() -> u64 {
    crate::guard::Limits::default().view_jump_max
}

/// Each connection may hold one frame of up to 16 MiB: 16 of them bound the signer's request
/// memory to 256 MiB. The node uses one; probes one each.
fn default_connections() -> usize {
    16
}

impl Config {
    /// A signer of the token labelled `token_label` (its PIN in `pin_file`) serving `keys` on
    /// `socket` to `allowed_uids`, with the guard's and the connections' defaults.
    pub fn new(
        socket: PathBuf,
        module: PathBuf,
        token_label: String,
        pin_file: PathBuf,
        state_dir: PathBuf,
        allowed_uids: Vec<u32>,
        keys: Vec<KeyConfig>,
    ) -> Self {
        Self {
            socket,
            module,
            token_label: Some(token_label),
            token_serial: None,
            profile: None,
            pin_file: Some(pin_file),
            state_dir,
            allowed_uids,
            guard_capacity: default_capacity(),
            seq_jump_max: default_seq_jump(),
            view_jump_max: default_view_jump(),
            max_connections: default_connections(),
            audit_dir: None,
            audit_rotate_mib: default_audit_rotate_mib(),
            keys,
        }
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: Self = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if config.token_label.is_some() == config.token_serial.is_some() {
            return Err(format!(
                "{}: set exactly one of token_label, token_serial",
                path.display()
            ));
        }
        if config.keys.is_empty() {
            return Err(format!("{}: no [[keys]]", path.display()));
        }
        // One HSM key under two names would get two guards: one position, two signatures.
        let mut seen = std::collections::HashSet::new();
        for k in &config.keys {
            if let Some(uid) = k.tls_uids.iter().find(|u| !config.allowed_uids.contains(u)) {
                return Err(format!(
                    "{}: key {}: tls_uids lists user {uid}, which is not in allowed_uids and \
                     could not connect",
                    path.display(),
                    k.name
                ));
            }
            let fields = [
                ("name", Some(k.name.clone())),
                ("id", Some(k.id.to_ascii_lowercase())),
                ("fingerprint", k.fingerprint.as_ref().map(|f| f.to_ascii_lowercase())),
                ("node", k.node.map(|n| n.to_string())),
            ];
            for (what, value) in fields {
                if let Some(v) = value {
                    if !seen.insert((what, v.clone())) {
                        return Err(format!("{}: two [[keys]] with {what} {v}", path.display()));
                    }
                }
            }
        }
        for k in &config.keys {
            let ok_name = !k.name.is_empty()
                && k.name.len() <= 64
                && k.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if !ok_name {
                return Err(format!("key name {:?}: 1-64 of [A-Za-z0-9_.-]", k.name));
            }
        }
        Ok(config)
    }
}

impl Config {
    /// Loads the module once, opens and audits every key (pinned fingerprints checked, one
    /// verified test signature each), and builds the service.
    pub fn start(&self, pin: &vpbox_pkcs11::Pin) -> Result<crate::Service, String> {
        let module = vpbox_pkcs11::Module::load(&self.module).map_err(|e| e.to_string())?;
        let token = match (&self.token_label, &self.token_serial) {
            (Some(l), _) => vpbox_pkcs11::TokenSelector::Label(l.clone()),
            (None, Some(s)) => vpbox_pkcs11::TokenSelector::Serial(s.clone()),
            (None, None) => return Err("no token selected".into()),
        };
        let mut keys = Vec::new();
        for k in &self.keys {
            let key_id = hex::decode(&k.id)
                .map_err(|_| format!("key {}: id {:?} is not hex", k.name, k.id))?;
            let pinned =
                match &k.fingerprint {
                    Some(f) => Some(vpbox_sm::Digest::from_hex(f).ok_or_else(|| {
                        format!("key {}: fingerprint is not 64 hex digits", k.name)
                    })?),
                    None => None,
                };
            let signer = vpbox_pkcs11::Pkcs11Signer::open_in(
                module.clone(),
                vpbox_pkcs11::SignerConfig {
                    module: self.module.clone(),
                    token: token.clone(),
                    key_id,
                    pin: pin.clone(),
                    profile: self.profile.clone(),
                    pinned,
                    sessions: self.max_connections.min(16),
                },
            )
            .map_err(|e| format!("key {}: {e}", k.name))?;
            keys.push(crate::ServiceKey {
                name: k.name.clone(),
                signer: std::sync::Arc::new(signer),
                node: k.node,
                tls_uids: k.tls_uids.clone(),
            });
        }
        let service = crate::Service::new(
            keys,
            &self.state_dir,
            crate::guard::Limits {
                capacity: self.guard_capacity,
                seq_jump_max: self.seq_jump_max,
                view_jump_max: self.view_jump_max,
            },
            self.allowed_uids.clone(),
            self.max_connections,
        )
        .map_err(|e| e.to_string())?;
        let dir = self.audit_dir.clone().unwrap_or_else(|| self.state_dir.join("audit"));
        let log = crate::audit::AuditLog::open(&dir, self.audit_rotate_mib.max(1) << 20)
            .map_err(|e| format!("the audit log in {}: {e}", dir.display()))?;
        Ok(service.with_audit_log(log))
    }
}

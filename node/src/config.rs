//! The box's configuration ([`vpbox_config`]) checked against the genesis it names, for
//! `vpbox config check` and the node's start.

use vpbox_consensus::NodeId;

use crate::genesis::Genesis;

pub use vpbox_config::*;

/// Checks `config` against itself and against its genesis: the genesis loads, and every
/// founding member other than this box's node has a `[[peers]]` entry. A node id or peer that
/// is not a founding member is a note, not an error: governance may have added it since.
pub fn check(config: &BoxConfig) -> Result<Checked, Vec<String>> {
    let (mut errors, mut notes) = match config.check() {
        Ok(c) => (Vec::new(), c.notes),
        Err(e) => (e, Vec::new()),
    };
    match Genesis::load(&config.genesis) {
        Err(e) => errors.push(format!("genesis: {e}")),
        Ok(g) => {
            if g.node(NodeId(config.node_id)).is_none() {
                notes.push(format!(
                    "node_id {} is not a founding member: it starts only if governance \
                     added it (and from a member's ledger)",
                    config.node_id
                ));
            }
            for n in g.nodes.iter().filter(|n| n.id.0 != config.node_id) {
                if config.address_of(n.id.0).is_none() {
                    errors.push(format!(
                        "peers: founding member node {} ({}, {}) has no [[peers]] entry: this \
                         box could not reach it",
                        n.id.0, n.name, n.bank
                    ));
                }
            }
            for p in config.peers.iter().filter(|p| g.node(NodeId(p.id)).is_none()) {
                notes.push(format!(
                    "peers: node {} is not a founding member (fine if governance added it)",
                    p.id
                ));
            }
        }
    }
    if errors.is_empty() { Ok(Checked { notes }) } else { Err(errors) }
}

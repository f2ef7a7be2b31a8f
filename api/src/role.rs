//! Who may call what: the node's JSON-RPC methods, the API roles and each role's allow-list.
//!
//! A client's role is its admitted certificate's profile ([`CertProfile`]): `posp` and
//! `admin` are API roles; a `vp-node`, `root` or `ca` certificate is none, and such a client
//! may call nothing. A POSP anchors and reads; an admin may call everything, its own writes
//! (enrollments, CRLs, governance) included.

use vpbox_ca::CertProfile;

/// A method of the node's JSON-RPC API (`docs/openrpc.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Method {
    /// Anchors one slip.
    AnchorPut,
    /// Anchors many slips under one signature.
    AnchorPutBatch,
    /// Reads an anchor.
    AnchorGet,
    /// Checks a slip against its anchor.
    AnchorVerify,
    /// An anchor's proof bundle.
    AnchorGetProof,
    /// A key's state proof: its first value, or its absence, against the last block.
    AnchorGetStateProof,
    /// A consistency proof between two certified blocks.
    BlockGetConsistencyProof,
    /// The chain's height.
    BlockGetChainHeight,
    /// The newest block.
    BlockLatestBlock,
    /// A block by height.
    BlockGetBlockByNumber,
    /// A block by hash.
    BlockGetBlockByHash,
    /// A transaction by hash.
    TxGetTransactionByHash,
    /// A transaction's receipt.
    TxGetTransactionReceipt,
    /// The nodes and their state.
    NodeGetNodes,
    /// Enrolls a certificate (an Enroll transaction).
    CertEnroll,
    /// Publishes a bank's CRL (a Crl transaction).
    CertPublishCrl,
    /// Submits a configuration change (a Config transaction).
    GovSubmit,
    /// The governance state.
    GovGetState,
    /// The governance state once it changes: a long poll, box-internal (the box's proxy
    /// holds one; no client through a proxy may call it).
    GovWaitState,
}

impl Method {
    /// Every method, in the order of `docs/openrpc.json`.
    pub const ALL: [Self; 19] = [
        Self::AnchorPut,
        Self::AnchorPutBatch,
        Self::AnchorGet,
        Self::AnchorVerify,
        Self::AnchorGetProof,
        Self::AnchorGetStateProof,
        Self::BlockGetConsistencyProof,
        Self::BlockGetChainHeight,
        Self::BlockLatestBlock,
        Self::BlockGetBlockByNumber,
        Self::BlockGetBlockByHash,
        Self::TxGetTransactionByHash,
        Self::TxGetTransactionReceipt,
        Self::NodeGetNodes,
        Self::CertEnroll,
        Self::CertPublishCrl,
        Self::GovSubmit,
        Self::GovGetState,
        Self::GovWaitState,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::AnchorPut => "anchor_put",
            Self::AnchorPutBatch => "anchor_putBatch",
            Self::AnchorGet => "anchor_get",
            Self::AnchorVerify => "anchor_verify",
            Self::AnchorGetProof => "anchor_getProof",
            Self::AnchorGetStateProof => "anchor_getStateProof",
            Self::BlockGetConsistencyProof => "block_getConsistencyProof",
            Self::BlockGetChainHeight => "block_getChainHeight",
            Self::BlockLatestBlock => "block_latestBlock",
            Self::BlockGetBlockByNumber => "block_getBlockByNumber",
            Self::BlockGetBlockByHash => "block_getBlockByHash",
            Self::TxGetTransactionByHash => "tx_getTransactionByHash",
            Self::TxGetTransactionReceipt => "tx_getTransactionReceipt",
            Self::NodeGetNodes => "node_getNodes",
            Self::CertEnroll => "cert_enroll",
            Self::CertPublishCrl => "cert_publishCrl",
            Self::GovSubmit => "gov_submit",
            Self::GovGetState => "gov_getState",
            Self::GovWaitState => "gov_waitState",
        }
    }

    /// The method named `name` exactly (names are case-sensitive, as the node reads them).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether it is the box's own, for callers on the node's socket without a client
    /// identity (the box's proxy, its operator): `gov_waitState`, which holds one of the node's
    /// four waiting turns for up to 30 s and must stay free for the proxy.
    pub fn is_internal(self) -> bool {
        self == Self::GovWaitState
    }

    /// Whether it only reads the ledger or the node's state.
    pub fn is_read(self) -> bool {
        !matches!(
            self,
            Self::AnchorPut
                | Self::AnchorPutBatch
                | Self::CertEnroll
                | Self::CertPublishCrl
                | Self::GovSubmit
        )
    }
}

/// A client's role on the API listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A bank's POSP server: anchors slips and reads.
    Posp,
    /// A bank's administrator: everything.
    Admin,
}

impl Role {
    /// The role a certificate of `profile` has on the API, if any: a node's or a CA's
    /// certificate has none.
    pub fn of(profile: CertProfile) -> Option<Self> {
        match profile {
            CertProfile::Posp => Some(Self::Posp),
            CertProfile::Admin => Some(Self::Admin),
            CertProfile::Root | CertProfile::Ca | CertProfile::VpNode => None,
        }
    }

    /// The role named `name` (its certificate profile's name).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Posp, Self::Admin].into_iter().find(|r| r.name() == name)
    }

    /// The role's name: its certificate profile's.
    pub fn name(self) -> &'static str {
        match self {
            Self::Posp => CertProfile::Posp.name(),
            Self::Admin => CertProfile::Admin.name(),
        }
    }

    /// Whether the role may call `method`. A POSP may anchor (`anchor_put`,
    /// `anchor_putBatch`) and read; enrollments, CRLs and governance are an admin's. Neither
    /// may call a box-internal method ([`Method::is_internal`]).
    pub fn allows(self, method: Method) -> bool {
        if method.is_internal() {
            return false;
        }
        match self {
            Self::Admin => true,
            Self::Posp => {
                method.is_read() || matches!(method, Method::AnchorPut | Method::AnchorPutBatch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_openrpc_document() {
        // A method added to the node must be added here, or the proxy refuses it as unknown
        // (-32601).
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/openrpc.json")).unwrap();
        let documented: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        let names: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, documented);
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Some(m));
        }
        for unknown in ["", "Anchor_put", "anchor_put ", "anchor_putbatch", "admin_all"] {
            assert_eq!(Method::from_name(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn posp_anchors_and_reads_only() {
        let allowed: Vec<&str> =
            Method::ALL.into_iter().filter(|m| Role::Posp.allows(*m)).map(Method::name).collect();
        assert_eq!(
            allowed,
            [
                "anchor_put",
                "anchor_putBatch",
                "anchor_get",
                "anchor_verify",
                "anchor_getProof",
                "anchor_getStateProof",
                "block_getConsistencyProof",
                "block_getChainHeight",
                "block_latestBlock",
                "block_getBlockByNumber",
                "block_getBlockByHash",
                "tx_getTransactionByHash",
                "tx_getTransactionReceipt",
                "node_getNodes",
                "gov_getState",
            ]
        );
        for m in
            [Method::CertEnroll, Method::CertPublishCrl, Method::GovSubmit, Method::GovWaitState]
        {
            assert!(!Role::Posp.allows(m), "{}", m.name());
        }
    }

    #[test]
    fn admin_may_call_everything_but_the_box_internal_long_poll() {
        let internal: Vec<Method> = Method::ALL.into_iter().filter(|m| m.is_internal()).collect();
        assert_eq!(internal, [Method::GovWaitState]);
        for m in Method::ALL {
            assert_eq!(Role::Admin.allows(m), !m.is_internal(), "{}", m.name());
            assert!(!(m.is_internal() && Role::Posp.allows(m)), "{}", m.name());
        }
    }

    #[test]
    fn only_posp_and_admin_certificates_have_an_api_role() {
        assert_eq!(Role::of(CertProfile::Posp), Some(Role::Posp));
        assert_eq!(Role::of(CertProfile::Admin), Some(Role::Admin));
        for none in [CertProfile::VpNode, CertProfile::Root, CertProfile::Ca] {
            assert_eq!(Role::of(none), None, "{none:?}");
        }
        assert_eq!((Role::Posp.name(), Role::Admin.name()), ("posp", "admin"));
        for r in [Role::Posp, Role::Admin] {
            assert_eq!(Role::from_name(r.name()), Some(r));
        }
        for none in ["", "vp-node", "Admin", "root", "ca"] {
            assert_eq!(Role::from_name(none), None, "{none:?}");
        }
    }
}

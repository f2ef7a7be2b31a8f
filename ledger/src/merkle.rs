//! The SM3 Merkle tree over a block's transaction hashes.
//!
//! Leaves and inner nodes are domain-separated (RFC 6962 §2.1 style) so that an inner node can
//! never be passed off as a leaf: `leaf = SM3(0x00 ‖ tx_hash)`, `node = SM3(0x01 ‖ left ‖
//! right)`. A level with an odd count promotes its last node unchanged. The root of no leaves is
//! `SM3(0x02)`.

use vpbox_sm::sm3::{Digest, Sm3, hash};

fn leaf(d: &Digest) -> Digest {
    let mut h = Sm3::new();
    h.update([0u8]).update(d);
    h.finalize()
}

fn node(l: &Digest, r: &Digest) -> Digest {
    let mut h = Sm3::new();
    h.update([1u8]).update(l).update(r);
    h.finalize()
}

/// The root over `leaves` (transaction hashes, in block order).
pub fn root(leaves: &[Digest]) -> Digest {
    if leaves.is_empty() {
        return hash([2u8]);
    }
    let mut level: Vec<Digest> = leaves.iter().map(leaf).collect();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| if let [l, r] = p { node(l, r) } else { p[0] }).collect();
    }
    level[0]
}

/// A sibling on the path from a leaf to the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The sibling is on the left.
    Left(Digest),
    /// The sibling is on the right.
    Right(Digest),
}

/// The path proving that `leaves[index]` is in the tree, or `None` if `index` is out of range.
pub fn proof(leaves: &[Digest], index: usize) -> Option<Vec<Step>> {
    if index >= leaves.len() {
        return None;
    }
    let mut level: Vec<Digest> = leaves.iter().map(leaf).collect();
    let mut i = index;
    let mut path = Vec::new();
    while level.len() > 1 {
        if i % 2 == 1 {
            path.push(Step::Left(level[i - 1]));
        } else if i + 1 < level.len() {
            path.push(Step::Right(level[i + 1]));
        }
        level = level.chunks(2).map(|p| if let [l, r] = p { node(l, r) } else { p[0] }).collect();
        i /= 2;
    }
    Some(path)
}

/// Whether `path` leads from transaction hash `tx` to `root`.
pub fn verify(tx: &Digest, path: &[Step], root: &Digest) -> bool {
    let mut acc = leaf(tx);
    for step in path {
        acc = match step {
            Step::Left(l) => node(l, &acc),
            Step::Right(r) => node(&acc, r),
        };
    }
    acc == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n as u32).map(|i| hash(i.to_be_bytes())).collect()
    }

    #[test]
    fn small_trees_match_the_definition() {
        let l = leaves(3);
        let expected = node(&node(&leaf(&l[0]), &leaf(&l[1])), &leaf(&l[2]));
        assert_eq!(root(&l), expected);
        assert_eq!(root(&l[..1]), leaf(&l[0]));
        assert_eq!(root(&[]), hash([2u8]));
        assert_ne!(
            root(&l[..2]),
            root(&[node(&leaf(&l[0]), &leaf(&l[1]))]),
            "inner nodes are not leaves"
        );
    }

    #[test]
    fn every_proof_verifies_and_no_wrong_one_does() {
        for n in 1..40 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = proof(&l, i).unwrap();
                assert!(verify(&l[i], &p, &r), "n={n} i={i}");
                assert!(!verify(&hash(b"other"), &p, &r));
                if n > 1 {
                    assert!(
                        !verify(&l[(i + 1) % n], &p, &r),
                        "n={n} i={i}: proof reused for another leaf"
                    );
                }
            }
            assert!(proof(&l, n).is_none());
        }
    }
}

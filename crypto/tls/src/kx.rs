//! curveSM2 (RFC 8998 §2): ephemeral ECDH on the SM2 curve of GB/T 32918.5, as TLS 1.3 does
//! ECDHE on the NIST curves (RFC 8446 §4.2.8.2, §7.4.2). Key shares are uncompressed 65-byte
//! points; the shared secret is the x coordinate of the product.

use elliptic_curve::Generate;
use elliptic_curve::ecdh::EphemeralSecret;
use elliptic_curve::sec1::ToSec1Point;
use rustls::crypto::{ActiveKeyExchange, SharedSecret, SupportedKxGroup};
use rustls::{Error, NamedGroup, PeerMisbehaved, ProtocolVersion};
use sm2::Sm2;

/// The code point of curveSM2 (RFC 8998 §2, IANA TLS Supported Groups).
pub const CURVE_SM2_ID: NamedGroup = NamedGroup::Unknown(0x0029);

/// Length of an uncompressed point `04 ‖ x ‖ y`.
const POINT_LEN: usize = 65;

/// curveSM2, ready to be listed in a [`rustls::crypto::CryptoProvider`].
pub static CURVE_SM2: &dyn SupportedKxGroup = &CurveSm2;

/// The curveSM2 group.
#[derive(Debug)]
struct CurveSm2;

impl SupportedKxGroup for CurveSm2 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let secret =
            EphemeralSecret::<Sm2>::try_generate().map_err(|_| Error::FailedToGetRandomBytes)?;
        let point = secret.public_key().to_sec1_point(false);
        let public: [u8; POINT_LEN] = point
            .as_bytes()
            .try_into()
            .map_err(|_| Error::General("curveSM2: bad public point encoding".into()))?;
        Ok(Box::new(Sm2KeyExchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        CURVE_SM2_ID
    }

    fn usable_for_version(&self, version: ProtocolVersion) -> bool {
        // RFC 8998 defines curveSM2 for TLS 1.3 only.
        version == ProtocolVersion::TLSv1_3
    }
}

/// Our half of one exchange. The secret scalar is zeroized when this is dropped.
struct Sm2KeyExchange {
    secret: EphemeralSecret<Sm2>,
    public: [u8; POINT_LEN],
}

impl ActiveKeyExchange for Sm2KeyExchange {
    fn complete(self: Box<Self>, peer_pub_key: &[u8]) -> Result<SharedSecret, Error> {
        let peer = parse_peer_point(peer_pub_key)?;
        let shared = self.secret.diffie_hellman(&peer);
        Ok(SharedSecret::from(shared.raw_secret_bytes().as_slice()))
    }

    fn pub_key(&self) -> &[u8] {
        &self.public
    }

    fn group(&self) -> NamedGroup {
        CURVE_SM2_ID
    }
}

/// Accepts only an uncompressed point on the curve (RFC 8446 §4.2.8.2 requires the
/// uncompressed form and §7.4.2 the validity check). The SM2 curve has cofactor 1, so a point on
/// the curve other than the identity (which has no uncompressed encoding) is in the group.
fn parse_peer_point(bytes: &[u8]) -> Result<sm2::PublicKey, Error> {
    if bytes.len() != POINT_LEN || bytes[0] != 0x04 {
        return Err(PeerMisbehaved::InvalidKeyShare.into());
    }
    sm2::PublicKey::from_sec1_bytes(bytes).map_err(|_| PeerMisbehaved::InvalidKeyShare.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_on_the_x_coordinate() {
        let a = CURVE_SM2.start().unwrap();
        let b = CURVE_SM2.start().unwrap();
        assert_eq!(a.pub_key().len(), 65);
        assert_eq!(a.pub_key()[0], 4);
        let (a_pub, b_pub) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        let s1 = a.complete(&b_pub).unwrap();
        let s2 = b.complete(&a_pub).unwrap();
        assert_eq!(s1.secret_bytes(), s2.secret_bytes());
        assert_eq!(s1.secret_bytes().len(), 32);
        assert_ne!(s1.secret_bytes(), &[0u8; 32]);
    }

    // The shared secret is the bare x coordinate of d_b · Q_a (not hashed, not y): computed on
    // one side through the key exchange, on the other from a known scalar d_b.
    #[test]
    fn shared_secret_is_the_x_coordinate_of_the_product() {
        use sm2::elliptic_curve::point::AffineCoordinates;
        let d_b: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
        let b_pub =
            vpbox_sm::sm2::SecretKey::from_bytes(&d_b).unwrap().public_key().to_sec1_uncompressed();
        let a = CURVE_SM2.start().unwrap();
        let a_point = sm2::PublicKey::from_sec1_bytes(a.pub_key()).unwrap();
        let shared = a.complete(&b_pub).unwrap();
        let d_b =
            Option::<sm2::NonZeroScalar>::from(sm2::NonZeroScalar::from_repr(d_b.into())).unwrap();
        let product = (a_point.to_projective() * *d_b).to_affine();
        assert_eq!(shared.secret_bytes(), product.x().as_slice());
    }

    #[test]
    fn invalid_points_are_refused() {
        let good = CURVE_SM2.start().unwrap().pub_key().to_vec();
        let compressed = {
            let p = sm2::PublicKey::from_sec1_bytes(&good).unwrap();
            p.to_sec1_point(true).as_bytes().to_vec()
        };
        let mut off_curve = good.clone();
        off_curve[64] ^= 1;
        let mut bad_prefix = good.clone();
        bad_prefix[0] = 0x06;
        let too_big = {
            // x = p (the field prime) is not a canonical coordinate.
            let mut v = vec![0x04];
            v.extend(
                hex::decode("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF")
                    .unwrap(),
            );
            v.extend_from_slice(&good[33..]);
            v
        };
        let cases: [&[u8]; 7] =
            [&[], &[0], &good[..64], &compressed, &off_curve, &bad_prefix, &too_big];
        for (i, peer) in cases.into_iter().enumerate() {
            let ours = CURVE_SM2.start().unwrap();
            assert_eq!(
                ours.complete(peer).err(),
                Some(Error::PeerMisbehaved(PeerMisbehaved::InvalidKeyShare)),
                "case {i}"
            );
        }
    }
}

//! Roots, leaves and CRLs made with `vpbox-ca` and software keys, as `vpbox-ca`'s own tests do.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use vpbox_ca::build_csr;
use vpbox_ca::cert::{self, CertProfile, Grant, Revocation};
use vpbox_ca::policy::TrustStore;
use vpbox_sm::SoftwareSigner;
use vpbox_sm::sm2::SecretKey;
use vpbox_tls::{Admission, Credentials};
use x509_cert::certificate::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::der::{DecodePem, Encode};

pub(crate) const DAY: Duration = Duration::from_secs(86_400);
pub(crate) const NODE_NAME: &str = "node1.bank-a.example";

pub(crate) struct Bank {
    pub(crate) name: String,
    key: SoftwareSigner,
    pem: String,
    /// For an issuing CA: its certificate and the CAs above it (DER), as peers send them.
    above: Vec<Vec<u8>>,
    /// For an issuing CA: its serial.
    serial: u8,
}

impl Bank {
    pub(crate) fn new(name: &str) -> Self {
        let key = SoftwareSigner::new(SecretKey::generate().unwrap());
        let now = SystemTime::now() - 30 * DAY;
        let pem = cert::self_signed_root(&key, name, "CN", serial(1), now, 3650).unwrap();
        Self { name: name.into(), key, pem, above: vec![], serial: 1 }
    }

    /// An issuing CA of this bank under this CA, serial `n`.
    pub(crate) fn issuing_ca(&self, n: u8) -> Self {
        let key = SoftwareSigner::new(SecretKey::generate().unwrap());
        let csr =
            build_csr(&key, &format!("CN={} Issuing CA {n},OU=ca,O={},C=CN", self.name, self.name))
                .unwrap();
        let req = x509_cert::request::CertReq::from_pem(csr.as_bytes()).unwrap();
        let grant = Grant {
            profile: CertProfile::Ca,
            serial: serial(n),
            now: SystemTime::now() - 10 * DAY,
            days: 1000,
            dns_names: vec![],
        };
        let pem = cert::issue(&self.key, &self.pem, &req, grant).unwrap();
        let mut above = vec![Certificate::from_pem(pem.as_bytes()).unwrap().to_der().unwrap()];
        above.extend(self.above.iter().cloned());
        Self { name: self.name.clone(), key, pem, above, serial: n }
    }

    /// Its certificate (for a root, the root), PEM.
    pub(crate) fn pem(&self) -> &str {
        &self.pem
    }

    pub(crate) fn root_der(&self) -> Vec<u8> {
        Certificate::from_pem(self.pem.as_bytes()).unwrap().to_der().unwrap()
    }

    /// A leaf for `profile`, valid from `issued` for `days`, with its own fresh key.
    pub(crate) fn leaf(
        &self,
        profile: CertProfile,
        cn: &str,
        n: u8,
        issued: SystemTime,
        days: u32,
    ) -> Leaf {
        let secret = SecretKey::generate().unwrap();
        let key_pem = secret.to_pkcs8_pem().unwrap().to_string();
        let key = Arc::new(SoftwareSigner::new(secret));
        let csr = build_csr(&*key, &format!("CN={cn},OU={},O={},C=CN", profile.name(), self.name))
            .unwrap();
        let req = x509_cert::request::CertReq::from_pem(csr.as_bytes()).unwrap();
        let dns_names =
            if profile == CertProfile::VpNode { vec![NODE_NAME.to_string()] } else { vec![] };
        let grant = Grant { profile, serial: serial(n), now: issued, days, dns_names };
        let pem = cert::issue(&self.key, &self.pem, &req, grant).unwrap();
        let der = Certificate::from_pem(pem.as_bytes()).unwrap().to_der().unwrap();
        Leaf { der, above: self.above.clone(), key, key_pem, serial: n }
    }

    /// A CRL revoking `leaves`.
    pub(crate) fn crl(&self, number: u64, leaves: &[&Leaf]) -> Vec<u8> {
        self.crl_of(number, &leaves.iter().map(|l| l.serial).collect::<Vec<_>>())
    }

    /// A CRL revoking the issuing CAs `cas`.
    pub(crate) fn crl_revoking_cas(&self, number: u64, cas: &[&Self]) -> Vec<u8> {
        self.crl_of(number, &cas.iter().map(|c| c.serial).collect::<Vec<_>>())
    }

    /// A CRL revoking serials `serials`, followed by this CA's chain when it is an issuing CA.
    fn crl_of(&self, number: u64, serials: &[u8]) -> Vec<u8> {
        let now = SystemTime::now();
        let revoked: Vec<Revocation> = serials
            .iter()
            .map(|n| Revocation {
                serial: cert::random_serial([*n; 16]).unwrap().as_bytes().to_vec(),
                at: now - Duration::from_secs(60),
            })
            .collect();
        let pem = cert::crl(&self.key, &self.pem, number, &revoked, now, 24).unwrap();
        let mut der = CertificateList::<x509_cert::certificate::Rfc5280>::from_pem(pem.as_bytes())
            .unwrap()
            .to_der()
            .unwrap();
        der.extend(self.above.concat());
        der
    }
}

pub(crate) struct Leaf {
    pub(crate) der: Vec<u8>,
    /// The issuing CAs above it (DER), when its bank issued it from one.
    above: Vec<Vec<u8>>,
    pub(crate) key: Arc<SoftwareSigner>,
    /// The key as PKCS#8 PEM, for peers that are other programs.
    pub(crate) key_pem: String,
    serial: u8,
}

impl Leaf {
    pub(crate) fn chain(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(&self.der)
            .chain(&self.above)
            .map(|d| CertificateDer::from(d.clone()))
            .collect()
    }

    /// The chain as PEM, end entity first.
    pub(crate) fn chain_pem(&self) -> String {
        let der: Vec<u8> =
            std::iter::once(&self.der).chain(&self.above).flatten().copied().collect();
        vpbox_ca::pem::chain_pem(&der).unwrap()
    }

    pub(crate) fn credentials(&self) -> Credentials {
        Credentials::new(self.chain(), self.key.clone()).unwrap()
    }
}

pub(crate) fn serial(n: u8) -> x509_cert::serial_number::SerialNumber {
    cert::random_serial([n; 16]).unwrap()
}

pub(crate) fn trust(banks: &[&Bank]) -> Arc<RwLock<TrustStore>> {
    let mut store = TrustStore::new();
    for b in banks {
        store.add_root(&b.root_der()).unwrap();
    }
    Arc::new(RwLock::new(store))
}

pub(crate) fn admission(banks: &[&Bank], role: CertProfile) -> Admission {
    Admission::new(trust(banks), role)
}

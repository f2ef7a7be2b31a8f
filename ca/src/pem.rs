//! PEM files as operators hold them: a certificate followed by the issuing CAs above it (the
//! "full chain" `vpbox ca issue` writes), or a CRL followed by its issuing CA's chain.
//!
//! The ledger and the admission policy take the same things as concatenated DER (see
//! [`crate::cert::split_der`]); these functions turn one form into the other.

use x509_cert::der::pem;

use crate::cert::{CHAIN_MAX, CertError};

/// Every PEM block of `text`, in order, as (label, DER). Text between blocks is ignored, as
/// OpenSSL ignores it.
pub fn blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, CertError> {
    const BEGIN: &str = "-----BEGIN ";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| CertError::Encoding("an unterminated PEM header".into()))?;
        let end_marker = format!("-----END {}-----", &after[..label_end]);
        let end = rest[start..]
            .find(&end_marker)
            .map(|e| start + e + end_marker.len())
            .ok_or_else(|| CertError::Encoding(format!("no {end_marker}")))?;
        let (label, der) = pem::decode_vec(&rest.as_bytes()[start..end])
            .map_err(|e| CertError::Encoding(format!("not PEM: {e}")))?;
        out.push((label.to_string(), der));
        if out.len() > CHAIN_MAX {
            return Err(CertError::Encoding(format!("more than {CHAIN_MAX} PEM blocks")));
        }
        rest = &rest[end..];
    }
    if out.is_empty() {
        return Err(CertError::Encoding("no PEM block".into()));
    }
    Ok(out)
}

/// A certificate and the issuing CAs after it (every block a `CERTIFICATE`), as concatenated
/// DER, leaf first.
pub fn chain_der(text: &str) -> Result<Vec<u8>, CertError> {
    let mut der = Vec::new();
    for (label, block) in blocks(text)? {
        if label != "CERTIFICATE" {
            return Err(CertError::Encoding(format!("a {label}, where a CERTIFICATE is needed")));
        }
        der.extend(block);
    }
    Ok(der)
}

/// A CRL (the first block, `X509 CRL`) and its issuing CA's chain after it, as concatenated
/// DER.
pub fn crl_der(text: &str) -> Result<Vec<u8>, CertError> {
    let mut all = blocks(text)?.into_iter();
    let mut der = match all.next() {
        Some((label, der)) if label == "X509 CRL" => der,
        Some((label, _)) => {
            return Err(CertError::Encoding(format!("a {label}, where an X509 CRL is needed")));
        }
        None => Vec::new(),
    };
    for (label, block) in all {
        if label != "CERTIFICATE" {
            return Err(CertError::Encoding(format!(
                "a {label} after the CRL, where its issuer's CERTIFICATE is expected"
            )));
        }
        der.extend(block);
    }
    Ok(der)
}

/// Concatenated DER certificates as PEM, one block each.
pub fn chain_pem(der: &[u8]) -> Result<String, CertError> {
    crate::cert::split_der(der)?
        .into_iter()
        .map(|d| {
            pem::encode_string("CERTIFICATE", pem::LineEnding::LF, d)
                .map_err(|e| CertError::Encoding(e.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(label: &str, der: &[u8]) -> String {
        pem::encode_string(label, pem::LineEnding::LF, der).unwrap()
    }

    #[test]
    fn chains_and_crls_round_trip_and_mislabelled_blocks_are_refused() {
        let (a, b) = ([0x30, 0x01, 0xaa], [0x30, 0x02, 0xbb, 0xcc]);
        let text =
            format!("leaf:\n{}issuer:\n{}", block("CERTIFICATE", &a), block("CERTIFICATE", &b));
        assert_eq!(chain_der(&text).unwrap(), [&a[..], &b[..]].concat());
        assert_eq!(
            chain_pem(&chain_der(&text).unwrap()).unwrap(),
            [block("CERTIFICATE", &a), block("CERTIFICATE", &b)].concat()
        );
        let crl = format!("{}{}", block("X509 CRL", &a), block("CERTIFICATE", &b));
        assert_eq!(crl_der(&crl).unwrap(), [&a[..], &b[..]].concat());
        assert!(crl_der(&text).is_err(), "a certificate is not a CRL");
        assert!(chain_der(&crl).is_err(), "a CRL is not a certificate");
        assert!(chain_der("no pem here").is_err());
        assert!(chain_der("-----BEGIN CERTIFICATE-----\nMAA=\n").is_err(), "unterminated");
        let many = block("CERTIFICATE", &a).repeat(CHAIN_MAX + 1);
        assert!(chain_der(&many).is_err());
    }
}

//! A throw-away PKI: certificate authorities issuing server and client
//! certificates, PEM-encoded.

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::time::SystemTime;

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { issuer: Issuer::new(params, key), pem }
    }

    /// A leaf certificate and key, PEM, for a client (CN, O) or a server (SANs).
    pub fn leaf(&self, cn: &str, orgs: &[&str], sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        self.issue(&[cn], orgs, sans, usage, None)
    }

    pub fn client(&self, cn: &str, orgs: &[&str]) -> (String, String) {
        self.leaf(cn, orgs, &[], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate with these common names, in this order, valid
    /// until `not_after` (default: far ahead).
    pub fn client_with(&self, cns: &[&str], not_after: Option<SystemTime>) -> (String, String) {
        self.issue(cns, &[], &[], ExtendedKeyUsagePurpose::ClientAuth, not_after)
    }

    fn issue(
        &self,
        cns: &[&str],
        orgs: &[&str],
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
        not_after: Option<SystemTime>,
    ) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        for (i, cn) in cns.iter().enumerate() {
            // rcgen keeps one value per attribute type: further common names
            // go in under the commonName OID as a type of their own.
            let kind = if i == 0 { DnType::CommonName } else { DnType::CustomDnType(vec![2, 5, 4, 3]) };
            params.distinguished_name.push(kind, *cn);
        }
        for org in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *org);
        }
        params.extended_key_usages = vec![usage];
        if let Some(not_after) = not_after {
            params.not_after = not_after.into();
        }
        (params.signed_by(&key, &self.issuer).unwrap().pem(), key.serialize_pem())
    }
}

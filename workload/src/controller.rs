//! The Pravega client's configuration for a controller, from a URI checked
//! first: the client panics on a malformed one.

use pravega_client_config::{ClientConfig, ClientConfigBuilder};

#[derive(Debug, thiserror::Error)]
#[error("invalid controller URI {uri:?}: {reason}")]
pub struct InvalidUri {
    uri: String,
    reason: String,
}

/// The client configuration for a controller at `[scheme://]host:port`.
pub fn client_config(uri: &str) -> Result<ClientConfig, InvalidUri> {
    let invalid = |reason: &str| InvalidUri { uri: uri.to_owned(), reason: reason.to_owned() };
    let (scheme, endpoint) = uri.split_once("://").unwrap_or(("", uri));
    if !scheme.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid("the scheme must be alphanumeric (tcp, tls)"));
    }
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(|| invalid("expected host:port"))?;
    port.parse::<u16>().map_err(|_| invalid("the port must be a number up to 65535"))?;
    let bracketed_ipv6 = host.len() > 2 && host.starts_with('[') && host.ends_with(']');
    if !bracketed_ipv6 && (host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')) {
        return Err(invalid("the host must be a DNS name, an IPv4 address or a bracketed IPv6 address"));
    }
    if TLS_SCHEMES.contains(&scheme) {
        // The client reads its CA certificates from this file or directory
        // when the configuration is built, and panics if it is missing.
        let certs = std::env::var(TLS_CERTS_ENV).unwrap_or_else(|_| "./certs".to_owned());
        if std::fs::metadata(&certs).is_err() {
            return Err(invalid(&format!("TLS needs the controller's CA certificates at {certs:?} (set {TLS_CERTS_ENV})")));
        }
    }
    ClientConfigBuilder::default().controller_uri(uri).build().map_err(|reason| invalid(&reason))
}

/// Schemes the client treats as TLS, and where it looks for CA certificates.
const TLS_SCHEMES: [&str; 4] = ["tls", "ssl", "tcps", "pravegas"];
const TLS_CERTS_ENV: &str = "pravega_client_tls_cert_path";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_uris_pravega_deployments_use() {
        for uri in ["tcp://pravega-pravega-controller:9090", "127.0.0.1:9090", "tcp://[::1]:9090"] {
            let config = client_config(uri).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(config.controller_uri.to_string(), uri);
        }
    }

    #[test]
    fn rejects_what_would_panic_inside_the_client() {
        for (uri, reason) in [
            ("pravega-controller", "host:port"),
            ("tcp://controller:90900", "port"),
            ("tcp://controller:", "port"),
            ("tcp://:9090", "host"),
            ("tcp://contr oller:9090", "host"),
            ("tc-p://controller:9090", "scheme"),
            ("tls://controller:9090", "CA certificates at \"./certs\""),
        ] {
            let error = client_config(uri).unwrap_err().to_string();
            assert!(error.contains(reason) && error.contains(uri), "{uri}: {error}");
        }
    }
}

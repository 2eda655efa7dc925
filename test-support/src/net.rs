//! Loopback ports and HTTP clients, with the TLS crypto provider the adapter
//! binary uses.

/// Installs rustls' ring provider as the process default, as the adapter
/// binary does; clients built afterwards use it.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A shared plain HTTP client.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: std::sync::LazyLock<reqwest::Client> = std::sync::LazyLock::new(|| {
        install_crypto_provider();
        reqwest::Client::new()
    });
    &CLIENT
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

//! Authentication, in the kube-apiserver's order: front-proxy headers over a
//! trusted proxy certificate, then a client certificate from the cluster CA,
//! then a bearer token checked with a TokenReview.

use super::cache::ReviewCache;
use super::trust::{Trust, TrustStore};
use super::AuthError;
use axum::http::{header, HeaderMap};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use rustls::pki_types::CertificateDer;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The group of every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What a TLS connection proved: its client certificate chain, and the
/// verification of that chain, done once per connection and trust version
/// and redone when a certificate of the chain expires; and whether a
/// request on it was authenticated.
#[derive(Default)]
pub struct Peer {
    chain: Vec<CertificateDer<'static>>,
    verified: Mutex<Option<Verified>>,
    authenticated: tokio::sync::watch::Sender<bool>,
}

/// A verification of a peer's chain and how long it holds.
struct Verified {
    /// The [`Trust::generation`] it was made with.
    generation: u64,
    /// The earliest end of validity of the chain's certificates.
    valid_until: SystemTime,
    identity: Arc<CertificateIdentity>,
}

impl Peer {
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        Peer { chain, verified: Mutex::default(), authenticated: Default::default() }
    }

    /// Resolves once a request on the connection has been authenticated.
    pub async fn authenticated(&self) {
        let _ = self.authenticated.subscribe().wait_for(|authenticated| *authenticated).await;
    }
}

/// What a client certificate is trusted for.
#[derive(Debug, Default)]
struct CertificateIdentity {
    /// Signed by the front-proxy CA with an allowed CN: headers are trusted.
    front_proxy: bool,
    /// Signed by the cluster client CA: the user is CN, groups are O.
    client: Option<UserInfo>,
}

pub struct Authenticator {
    trust: Arc<TrustStore>,
    tokens: Option<TokenReviewer>,
}

struct TokenReviewer {
    client: kube::Client,
    cache: ReviewCache<[u8; 32], Option<UserInfo>, AuthError>,
    ttl: Duration,
}

impl Authenticator {
    /// `token_client`: where TokenReviews go (None: tokens are not accepted).
    pub fn new(trust: Arc<TrustStore>, token_client: Option<kube::Client>, token_cache_ttl: Duration) -> Self {
        let tokens = token_client.map(|client| TokenReviewer { client, cache: ReviewCache::new(), ttl: token_cache_ttl });
        Authenticator { trust, tokens }
    }

    pub fn is_ready(&self) -> bool {
        self.trust.current().is_some()
    }

    /// The caller, in the group `system:authenticated` as the kube-apiserver
    /// puts every authenticated user (RBAC's discovery roles bind it).
    pub async fn authenticate(&self, peer: Option<&Peer>, headers: &HeaderMap) -> Result<UserInfo, AuthError> {
        let mut user = self.identify(peer, headers).await?;
        if let Some(peer) = peer {
            peer.authenticated.send_if_modified(|authenticated| !std::mem::replace(authenticated, true));
        }
        if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            user.groups.push(AUTHENTICATED_GROUP.to_owned());
        }
        Ok(user)
    }

    async fn identify(&self, peer: Option<&Peer>, headers: &HeaderMap) -> Result<UserInfo, AuthError> {
        let trust = self.trust.current();
        if let (Some(peer), Some(trust)) = (peer.filter(|p| !p.chain.is_empty()), &trust) {
            let identity = verify_once(peer, trust);
            if identity.front_proxy {
                if let Some(user) = trust.requestheader.as_ref().and_then(|rh| user_from_headers(rh, headers)) {
                    return Ok(user);
                }
            }
            if let Some(user) = &identity.client {
                return Ok(user.clone());
            }
        }
        if let Some(token) = bearer_token(headers) {
            return match &self.tokens {
                Some(reviewer) => reviewer.review(token).await?.ok_or(AuthError::Unauthenticated),
                None => Err(AuthError::Unauthenticated),
            };
        }
        Err(AuthError::Unauthenticated)
    }
}

fn verify_once(peer: &Peer, trust: &Trust) -> Arc<CertificateIdentity> {
    let now = SystemTime::now();
    let mut verified = peer.verified.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(done) = verified.as_ref().filter(|v| v.generation == trust.generation && now < v.valid_until) {
        return done.identity.clone();
    }
    let identity = Arc::new(verify(&peer.chain, trust));
    *verified = Some(Verified { generation: trust.generation, valid_until: valid_until(&peer.chain), identity: identity.clone() });
    identity
}

fn verify(chain: &[CertificateDer<'static>], trust: &Trust) -> CertificateIdentity {
    let Some((cn, orgs)) = chain.first().and_then(|c| subject(c)) else { return CertificateIdentity::default() };
    let front_proxy = trust
        .requestheader
        .as_ref()
        .is_some_and(|rh| Trust::chains_to(rh.verifier.as_ref(), chain) && (rh.allowed_names.is_empty() || rh.allowed_names.contains(&cn)));
    let client = (!cn.is_empty() && trust.client_ca.as_ref().is_some_and(|ca| Trust::chains_to(ca.as_ref(), chain))).then(|| UserInfo {
        name: cn,
        groups: orgs,
        ..Default::default()
    });
    CertificateIdentity { front_proxy, client }
}

/// Common name and organizations of a certificate's subject; `None` if it
/// cannot be parsed or names several common names, which the kube-apiserver
/// would read as the last one and this server as the first: such a
/// certificate vouches for nobody.
fn subject(certificate: &CertificateDer<'_>) -> Option<(String, Vec<String>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject();
    let mut cns = subject.iter_common_name();
    let cn = cns.next().and_then(|a| a.as_str().ok()).unwrap_or("").to_owned();
    if cns.next().is_some() {
        tracing::debug!("client certificate with several common names; not trusted");
        return None;
    }
    let orgs = subject.iter_organization().filter_map(|a| a.as_str().ok()).map(str::to_owned).collect();
    Some((cn, orgs))
}

/// When the first of `chain`'s certificates to expire does (at once, if one
/// cannot be parsed): a verification of the chain is good until then.
fn valid_until(chain: &[CertificateDer<'_>]) -> SystemTime {
    let not_after = |certificate: &CertificateDer<'_>| {
        let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
        u64::try_from(parsed.validity().not_after.timestamp()).ok()
    };
    let earliest = chain.iter().map(not_after).try_fold(u64::MAX, |earliest, end| Some(earliest.min(end?)));
    earliest.and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The user a trusted front proxy names in its headers; `None` without one.
fn user_from_headers(trust: &super::trust::RequestHeaderTrust, headers: &HeaderMap) -> Option<UserInfo> {
    let values = |name| headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let name = trust.username_headers.iter().flat_map(values).find(|v| !v.is_empty())?.to_owned();
    let groups = trust.group_headers.iter().flat_map(values).map(str::to_owned).collect();
    // Prefix by prefix, as the kube-apiserver collects them: a key's values
    // are in the order of the prefixes that name it.
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for prefix in &trust.extra_prefixes {
        for (header, value) in headers {
            let (Some(key), Ok(value)) = (header.as_str().strip_prefix(prefix.as_str()), value.to_str()) else { continue };
            extra.entry(extra_key(key)).or_default().push(value.to_owned());
        }
    }
    Some(UserInfo { name, uid: None, groups, extra })
}

/// The extra key an `X-Remote-Extra-` header suffix names, as the
/// kube-apiserver reads it: lower-cased (header names arrive lower-cased),
/// then path-unescaped (`%XX` is a byte, `+` stays `+`); kept as it is if an
/// escape is malformed. Bytes that are not UTF-8 become U+FFFD, as Go's JSON
/// encoding of the SubjectAccessReview makes them.
fn extra_key(suffix: &str) -> String {
    match super::authz::path_unescape(suffix) {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => suffix.to_owned(),
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl TokenReviewer {
    /// The token's user (`None`: not authenticated); errors fail closed.
    async fn review(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        // The cache key is a digest: the token itself is never kept.
        let mut key = [0u8; 32];
        key.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
        self.cache.get_or_review(&key, || self.ask(token)).await
    }

    async fn ask(&self, token: &str) -> Result<(Option<UserInfo>, Duration), AuthError> {
        let review = TokenReview { spec: TokenReviewSpec { token: Some(token.to_owned()), ..Default::default() }, ..Default::default() };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer = api.create(&Default::default(), &review).await.map_err(|e| {
            tracing::error!(error = %e, "TokenReview failed; refusing the request");
            AuthError::ReviewUnavailable("token review".into())
        })?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.filter(|_| status.authenticated == Some(true)).and_then(|u| {
            Some(UserInfo {
                name: u.username.filter(|n| !n.is_empty())?,
                uid: u.uid,
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default().into_iter().collect(),
            })
        });
        Ok((user, self.ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trust() -> super::super::trust::RequestHeaderTrust {
        trust_with_extra_prefixes(&["x-remote-extra-"])
    }

    fn trust_with_extra_prefixes(prefixes: &[&str]) -> super::super::trust::RequestHeaderTrust {
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        super::super::trust::RequestHeaderTrust {
            verifier: super::super::trust::verifier("test", ca.cert.pem().as_bytes()).unwrap(),
            allowed_names: vec![],
            username_headers: vec!["x-remote-user".try_into().unwrap()],
            group_headers: vec!["x-remote-group".try_into().unwrap()],
            extra_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The extras of a front-proxied request for Bob with `extra_headers`.
    fn extras(trust: &super::super::trust::RequestHeaderTrust, extra_headers: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", HeaderValue::from_static("Bob"));
        for (name, values) in extra_headers {
            for value in *values {
                headers.append(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
            }
        }
        user_from_headers(trust, &headers).unwrap().extra
    }

    fn expected(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    /// The kube-apiserver's own cases (headerrequest's "extra prefix matches
    /// case-insensitive"): every prefix, values in prefix order, and the
    /// empty key.
    #[test]
    fn extras_are_collected_prefix_by_prefix_as_the_kube_apiserver_does() {
        let trust = trust_with_extra_prefixes(&["x-remote-extra-1-", "x-remote-extra-2-"]);
        let got = extras(
            &trust,
            &[
                ("X-Remote-extra-1-key1", &["alfa", "bravo"]),
                ("X-Remote-Extra-1-Key2", &["charlie", "delta"]),
                ("X-Remote-Extra-1-", &["india", "juliet"]),
                ("X-Remote-extra-2-", &["kilo", "lima"]),
                ("X-Remote-extra-2-Key1", &["echo", "foxtrot"]),
                ("X-Remote-Extra-2-key2", &["golf", "hotel"]),
            ],
        );
        let want = expected(&[
            ("key1", &["alfa", "bravo", "echo", "foxtrot"]),
            ("key2", &["charlie", "delta", "golf", "hotel"]),
            ("", &["india", "juliet", "kilo", "lima"]),
        ]);
        assert_eq!(got, want);
    }

    /// The kube-apiserver's own cases (headerrequest's "escaped extra
    /// keys"), and the issue's: lower-cased, then path-unescaped, so `+`
    /// stays and an escape can make an upper-case letter; malformed escapes
    /// keep the key as it is. (The apiserver's legal-characters case also
    /// has a backslash, which is no token character, so no header name.)
    #[test]
    fn extra_keys_are_lower_cased_then_path_unescaped() {
        let got = extras(
            &trust(),
            &[
                ("X-Remote-Extra-Alpha", &["alphabetical"]),
                ("X-Remote-Extra-Alph4num3r1c", &["alphanumeric"]),
                ("X-Remote-Extra-Percent%20encoded", &["percent encoded"]),
                ("X-Remote-Extra-Almost%zzpercent%xxencoded", &["not quite percent encoded"]),
                ("X-Remote-Extra-Example.com%2fpercent%2520encoded", &["url with double percent encoding"]),
                ("X-Remote-Extra-Example.com%2F%E4%BB%8A%E6%97%A5%E3%81%AF", &["url with unicode"]),
                ("X-Remote-Extra-Abc123!#$+.-_*^`~|'", &["header key legal characters"]),
                ("X-Remote-Extra-a+b", &["plus"]),
                ("X-Remote-Extra-UP%41", &["escaped capital"]),
                ("X-Remote-Extra-trailing%4", &["short escape"]),
                ("X-Remote-Extra-latin%ff", &["not UTF-8"]),
            ],
        );
        let want = expected(&[
            ("alpha", &["alphabetical"]),
            ("alph4num3r1c", &["alphanumeric"]),
            ("percent encoded", &["percent encoded"]),
            ("almost%zzpercent%xxencoded", &["not quite percent encoded"]),
            ("example.com/percent%20encoded", &["url with double percent encoding"]),
            ("example.com/今日は", &["url with unicode"]),
            ("abc123!#$+.-_*^`~|'", &["header key legal characters"]),
            ("a+b", &["plus"]),
            ("upA", &["escaped capital"]),
            ("trailing%4", &["short escape"]),
            ("latin\u{fffd}", &["not UTF-8"]),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn front_proxy_headers_become_the_user() {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", HeaderValue::from_static("alice"));
        headers.append("x-remote-group", HeaderValue::from_static("system:authenticated"));
        headers.append("x-remote-group", HeaderValue::from_static("devs"));
        headers.append("x-remote-extra-scopes", HeaderValue::from_static("a"));
        headers.append("x-remote-extra-scopes", HeaderValue::from_static("b"));
        headers.append("x-remote-extra-example.com%2fteam", HeaderValue::from_static("x"));
        let user = user_from_headers(&trust(), &headers).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["system:authenticated", "devs"]);
        assert_eq!(user.extra["scopes"], ["a", "b"]);
        assert_eq!(user.extra["example.com/team"], ["x"]);
        assert!(user_from_headers(&trust(), &HeaderMap::new()).is_none());
    }

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  "));
        assert_eq!(bearer_token(&headers), None);
    }
}

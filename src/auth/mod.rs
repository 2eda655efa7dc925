//! Securing the API: TLS serving, authentication and authorization as a
//! Kubernetes aggregated API server does them.

pub mod authn;
pub mod authz;
mod cache;
pub mod tls;
pub mod trust;

use authn::{Authenticator, Peer, UserInfo};
use authz::{Attributes, Authorizer, RequestInfo};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the request carries no credentials this server trusts")]
    Unauthenticated,
    /// The message names user, verb and resource.
    #[error("{0}")]
    Forbidden(String),
    /// A review could not be made; the request is refused, never allowed.
    #[error("cannot complete the {0} with the Kubernetes API; try again later")]
    ReviewUnavailable(String),
}

/// Authentication then authorization for every request but the
/// always-allowed paths (health probes).
pub struct Guard {
    authenticator: Authenticator,
    authorizer: Authorizer,
    always_allow_paths: Vec<String>,
}

impl Guard {
    pub fn new(authenticator: Authenticator, authorizer: Authorizer, always_allow_paths: Vec<String>) -> Self {
        Guard { authenticator, authorizer, always_allow_paths }
    }

    pub fn is_ready(&self) -> bool {
        self.authenticator.is_ready()
    }

    /// The caller (`None` for always-allowed paths, which are compared
    /// with the decoded path): the first check of every request, before
    /// anything about its path is answered.
    pub async fn authenticate(
        &self,
        peer: Option<&Peer>,
        path: Option<&RequestInfo>,
        headers: &axum::http::HeaderMap,
    ) -> Result<Option<UserInfo>, AuthError> {
        if let Some(RequestInfo::NonResource { path }) = path {
            if self.always_allow_paths.contains(path) {
                return Ok(None);
            }
        }
        self.authenticator.authenticate(peer, headers).await.map(Some)
    }

    /// Whether `user` may make the request `method` on `path`.
    pub async fn authorize(&self, user: &UserInfo, method: &str, path: &RequestInfo) -> Result<(), AuthError> {
        self.authorizer.authorize(user, &Attributes::of(method, path)).await
    }
}

//! Users and tokens of the remote API (docs/remote.md): who may use oxvirtd over TLS, and with
//! which role. Only an admin manages them (over the Unix socket every client is root, an admin).
//!
//! | method + path                      | body                    | reply         |
//! |------------------------------------|-------------------------|---------------|
//! | `GET /v1/users`                    |                         | `[UserInfo]`  |
//! | `POST /v1/users`                   | [`AddUserRequest`]      | [`UserInfo`]  |
//! | `PUT /v1/users/{name}/password`    | [`PasswordRequest`]     | [`UserInfo`]  |
//! | `DELETE /v1/users/{name}`          |                         | [`UserInfo`]  |
//! | `GET /v1/tokens`                   |                         | `[TokenInfo]` |
//! | `POST /v1/tokens`                  | [`CreateTokenRequest`]  | [`NewToken`]  |
//! | `DELETE /v1/tokens/{id}`           |                         | [`TokenInfo`] |
//! | `POST /v1/domains/{id}/console`    | (upgrade)               | 101, then the console's bytes |
//!
//! Browser sessions, on the TLS listener only (docs/remote.md):
//!
//! | method + path         | body              | reply                                   |
//! |-----------------------|-------------------|-----------------------------------------|
//! | `POST /v1/session`    | [`LoginRequest`]  | [`SessionInfo`] and the session cookie  |
//! | `GET /v1/session`     |                   | [`SessionInfo`] of the cookie's session |
//! | `DELETE /v1/session`  |                   | 204, the cookie cleared                 |

use std::fmt;

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{percent_encode_segment, to_json, Client, ClientError};

/// What a user or token may do over TCP: everything, or only read (GET and HEAD, as libvirt's
/// read-only socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "read-only")]
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [Role::Admin, Role::ReadOnly]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The cookie that carries a browser session's id.
pub const SESSION_COOKIE: &str = "oxvirt_session";
/// The header every state-changing request authenticated by the session cookie must carry,
/// with the session's [`SessionInfo::csrf_token`].
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Body of `POST /v1/session`: a user logging in from a browser.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
}

impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password, not even in a debug print.
        write!(f, "LoginRequest {{ user: {:?}, .. }}", self.user)
    }
}

/// A browser session: whose it is, the token its state-changing requests carry in
/// [`CSRF_HEADER`], and when it ends if unused (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub user: String,
    pub role: Role,
    pub csrf_token: String,
    pub expires: String,
}

/// A user (never its password or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    /// Seconds since the Unix epoch.
    pub created: i64,
}

/// Body of `POST /v1/users`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddUserRequest {
    pub name: String,
    pub password: String,
    pub role: Role,
}

/// Body of `PUT /v1/users/{name}/password`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasswordRequest {
    pub password: String,
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTokenRequest {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A token (never its secret: oxvirtd keeps only a digest of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: u64,
    pub name: Option<String>,
    pub role: Role,
    /// Seconds since the Unix epoch.
    pub created: i64,
}

/// Reply of `POST /v1/tokens`: the token itself, shown this once.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewToken {
    pub info: TokenInfo,
    pub token: String,
}

impl Client {
    /// `GET /v1/users`.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, ClientError> {
        self.call(Method::GET, "/v1/users".to_string(), None).await
    }

    /// `POST /v1/users`.
    pub async fn add_user(&self, request: &AddUserRequest) -> Result<UserInfo, ClientError> {
        self.call(
            Method::POST,
            "/v1/users".to_string(),
            Some(to_json(request)),
        )
        .await
    }

    /// `PUT /v1/users/{name}/password`.
    pub async fn set_user_password(
        &self,
        name: &str,
        password: &str,
    ) -> Result<UserInfo, ClientError> {
        let body = to_json(&PasswordRequest {
            password: password.to_string(),
        });
        let path = format!("/v1/users/{}/password", percent_encode_segment(name));
        self.call(Method::PUT, path, Some(body)).await
    }

    /// `DELETE /v1/users/{name}`.
    pub async fn delete_user(&self, name: &str) -> Result<UserInfo, ClientError> {
        let path = format!("/v1/users/{}", percent_encode_segment(name));
        self.call(Method::DELETE, path, None).await
    }

    /// `GET /v1/tokens`.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.call(Method::GET, "/v1/tokens".to_string(), None).await
    }

    /// `POST /v1/tokens`.
    pub async fn create_token(
        &self,
        request: &CreateTokenRequest,
    ) -> Result<NewToken, ClientError> {
        self.call(
            Method::POST,
            "/v1/tokens".to_string(),
            Some(to_json(request)),
        )
        .await
    }

    /// `DELETE /v1/tokens/{id}`.
    pub async fn revoke_token(&self, id: u64) -> Result<TokenInfo, ClientError> {
        self.call(Method::DELETE, format!("/v1/tokens/{id}"), None)
            .await
    }
}

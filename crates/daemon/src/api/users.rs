//! HTTP routes of the remote API's users and tokens (see `oxvirt_api::users`). Over TCP only an
//! admin reaches them (`auth.rs`'s ADMIN_ONLY); on the Unix socket every client is root.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{delete, get, put};
use axum::Router;
use oxvirt_api::{
    AddUserRequest, CreateTokenRequest, NewToken, PasswordRequest, TokenInfo, UserInfo,
};

use super::reply::{blocking, body, Reply};
use crate::services::Services;
type Shared = State<Arc<Services>>;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/users", get(list_users).post(add_user))
        .route("/v1/users/{name}", delete(delete_user))
        .route("/v1/users/{name}/password", put(set_password))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", delete(revoke_token))
}

async fn list_users(State(services): Shared) -> Reply<Vec<UserInfo>> {
    blocking(services, "user-list", |d| d.users.list()).await
}

async fn add_user(State(services): Shared, bytes: Bytes) -> Reply<UserInfo> {
    let request: AddUserRequest = body(&bytes)?;
    blocking(services, "user-add", move |d| {
        d.users.add(&request.name, &request.password, request.role)
    })
    .await
}

async fn set_password(
    State(services): Shared,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply<UserInfo> {
    let request: PasswordRequest = body(&bytes)?;
    blocking(services, "user-passwd", move |d| {
        d.users.set_password(&name, &request.password)
    })
    .await
}

async fn delete_user(State(services): Shared, Path(name): Path<String>) -> Reply<UserInfo> {
    blocking(services, "user-del", move |d| d.users.delete(&name)).await
}

async fn list_tokens(State(services): Shared) -> Reply<Vec<TokenInfo>> {
    blocking(services, "token-list", |d| d.users.list_tokens()).await
}

async fn create_token(State(services): Shared, bytes: Bytes) -> Reply<NewToken> {
    let request: CreateTokenRequest = body(&bytes)?;
    blocking(services, "token-create", move |d| {
        d.users.create_token(request.role, request.name.as_deref())
    })
    .await
}

async fn revoke_token(State(services): Shared, Path(id): Path<String>) -> Reply<TokenInfo> {
    blocking(services, "token-revoke", move |d| d.users.revoke_token(&id)).await
}

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

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    list_users,
    add_user,
    set_password,
    delete_user,
    list_tokens,
    create_token,
    revoke_token
))]
pub(super) struct Doc;

#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "users_list_users",
    tag = "users",
    responses((status = 200, description = "success", body = Vec<UserInfo>)),
)]
async fn list_users(State(services): Shared) -> Reply<Vec<UserInfo>> {
    blocking(services, "user-list", |d| d.users.list()).await
}

#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "users_add_user",
    tag = "users",
    request_body = AddUserRequest,
    responses((status = 200, description = "success", body = UserInfo)),
)]
async fn add_user(State(services): Shared, bytes: Bytes) -> Reply<UserInfo> {
    let request: AddUserRequest = body(&bytes)?;
    blocking(services, "user-add", move |d| {
        d.users.add(&request.name, &request.password, request.role)
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/users/{name}/password",
    operation_id = "users_set_password",
    tag = "users",
    params(super::openapi::UserPath),
    request_body = PasswordRequest,
    responses((status = 200, description = "success", body = UserInfo)),
)]
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

#[utoipa::path(
    delete,
    path = "/v1/users/{name}",
    operation_id = "users_delete_user",
    tag = "users",
    params(super::openapi::UserPath),
    responses((status = 200, description = "success", body = UserInfo)),
)]
async fn delete_user(State(services): Shared, Path(name): Path<String>) -> Reply<UserInfo> {
    blocking(services, "user-del", move |d| d.users.delete(&name)).await
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    operation_id = "users_list_tokens",
    tag = "users",
    responses((status = 200, description = "success", body = Vec<TokenInfo>)),
)]
async fn list_tokens(State(services): Shared) -> Reply<Vec<TokenInfo>> {
    blocking(services, "token-list", |d| d.users.list_tokens()).await
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    operation_id = "users_create_token",
    tag = "users",
    request_body = CreateTokenRequest,
    responses((status = 200, description = "success", body = NewToken)),
)]
async fn create_token(State(services): Shared, bytes: Bytes) -> Reply<NewToken> {
    let request: CreateTokenRequest = body(&bytes)?;
    blocking(services, "token-create", move |d| {
        d.users.create_token(request.role, request.name.as_deref())
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    operation_id = "users_revoke_token",
    tag = "users",
    params(super::openapi::TokenPath),
    responses((status = 200, description = "success", body = TokenInfo)),
)]
async fn revoke_token(State(services): Shared, Path(id): Path<String>) -> Reply<TokenInfo> {
    blocking(services, "token-revoke", move |d| d.users.revoke_token(&id)).await
}

//! The API's OpenAPI 3.1 document, served at `GET /v1/openapi.json` (docs/remote.md). It is made
//! from the code: each handler's `#[utoipa::path]` attribute gives its method, path, parameters,
//! body and success reply, each route module's `Doc` lists its handlers, and the types' schemas
//! come from `derive(ToSchema)` in `oxvirt-api` (feature `openapi`). What every operation shares
//! is added here once: the error replies (one mapping of error codes to statuses,
//! `ApiError::http_status`) and the TLS listener's security schemes. A test checks the document
//! against the router's routes (`tests` below).

use std::sync::{Arc, OnceLock};

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use oxvirt_api::ApiError;
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/openapi.json", get(openapi_json))
}

/// This module's and `api/mod.rs`'s operations, the document's header, and what every operation
/// shares ([`Shared`]).
#[derive(OpenApi)]
#[openapi(
    paths(super::version, openapi_json),
    // Types only query parameters refer to (utoipa collects the bodies' types by itself).
    components(schemas(oxvirt_api::EventKind, oxvirt_api::NvramOnUndefine)),
    info(
        title = "oxvirt API",
        description = "oxvirtd's `/v1` API. On the Unix socket (root only) no credentials are \
            needed; over TLS (`oxvirtd --listen`) every request authenticates with a token \
            (`Authorization: Bearer`) or a user's password (HTTP Basic), and a read-only role \
            may only read (docs/remote.md). Every error reply is an `ApiError`; its `code` \
            decides the HTTP status.",
        license(name = "Apache-2.0 OR MIT")
    ),
    tags(
        (name = "domains", description = "domains: definitions, lifecycle, resources, saves"),
        (name = "devices", description = "a domain's disks, displays, media and I/O threads"),
        (name = "snapshots", description = "a domain's snapshots"),
        (name = "migrations", description = "what a source oxvirtd asks of the destination during a live migration"),
        (name = "networks", description = "virtual networks and domains' interfaces"),
        (name = "pools", description = "storage pools and volumes"),
        (name = "secrets", description = "secrets (values in base64)"),
        (name = "host", description = "the host: node information and capabilities"),
        (name = "cluster", description = "the cluster this host is a member of (etcd)"),
        (name = "events", description = "the event stream and the metrics"),
        (name = "users", description = "users and tokens of the TLS listener (admin only)"),
        (name = "admin", description = "the daemon itself (virt-admin)"),
        (name = "browser", description = "the web UI's sessions and consoles (TLS listener only)"),
        (name = "meta", description = "the API's version and this document"),
    ),
    modifiers(&Shared)
)]
struct Header;

/// The document, made once.
pub(crate) fn document() -> &'static Document {
    static DOCUMENT: OnceLock<Document> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        use super::*;
        let mut document = Header::openapi();
        for part in [
            admin::Doc::openapi(),
            auth::Doc::openapi(),
            capabilities::Doc::openapi(),
            cluster::Doc::openapi(),
            console::Doc::openapi(),
            disks::Doc::openapi(),
            display::Doc::openapi(),
            domains::Doc::openapi(),
            events::Doc::openapi(),
            iothreads::Doc::openapi(),
            limits::Doc::openapi(),
            memory::Doc::openapi(),
            metrics::Doc::openapi(),
            migration::Doc::openapi(),
            monitor::Doc::openapi(),
            networks::Doc::openapi(),
            node::Doc::openapi(),
            pools::Doc::openapi(),
            saves::Doc::openapi(),
            secrets::Doc::openapi(),
            snapshots::Doc::openapi(),
            stats::Doc::openapi(),
            tuning::Doc::openapi(),
            users::Doc::openapi(),
            websocket::Doc::openapi(),
        ] {
            document.merge(part);
        }
        // After the merge: the modifier of `Header` ran before the other modules' operations
        // were in the document.
        Shared.modify(&mut document);
        document
    })
}

/// The statuses an error reply can have: the codes' mapping (`ApiError::http_status`) is the
/// same for every route, so every operation lists them all.
const ERROR_STATUSES: [(&str, &str); 11] = [
    ("400", "bad request: malformed JSON or path, invalid XML or name (`bad_request`, `invalid_xml`, `invalid_name`)"),
    ("401", "over TLS: no credentials or wrong ones (`unauthorized`)"),
    ("403", "over TLS: the role may not do this (`forbidden`)"),
    ("404", "no such object or endpoint (`not_found`)"),
    ("409", "the object exists already, is in the wrong state or busy (`already_exists`, `invalid_state`, `busy`)"),
    ("413", "the request body is over the limit (`too_large`)"),
    ("422", "not supported by this host or engine (`unsupported`)"),
    ("429", "over TLS: too many failed logins; retry after `Retry-After` seconds (`too_many_requests`)"),
    ("500", "a failure inside the daemon or its engine (`internal`, `engine`)"),
    ("503", "a service the daemon needs for this is out of reach, such as the cluster's etcd (`unavailable`)"),
    ("504", "the operation timed out (`timeout`)"),
];

/// Adds to the document what every operation shares: the error replies and the security
/// schemes of the TLS listener.
struct Shared;

impl Modify for Shared {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert(ApiError::name().into_owned(), ApiError::schema());
        components.security_schemes.insert(
            "bearer".to_string(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("a token from `oxvirt token create` (TLS listener)"))
                    .build(),
            ),
        );
        components.security_schemes.insert(
            "basic".to_string(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("a user's name and password (TLS listener)"))
                    .build(),
            ),
        );
        // Either scheme over TLS; the empty requirement is the Unix socket's (no credentials).
        document.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("basic", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
        for item in document.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
            ];
            for operation in operations.into_iter().flatten() {
                let mut errors = ResponsesBuilder::new();
                for (status, description) in ERROR_STATUSES {
                    errors = errors.response(
                        status,
                        ResponseBuilder::new().description(description).content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name(ApiError::name())))
                                .build(),
                        ),
                    );
                }
                for (status, response) in errors.build().responses {
                    operation
                        .responses
                        .responses
                        .entry(status)
                        .or_insert(response);
                }
            }
        }
    }
}

pub(super) use params::*;

/// The path parameters, each described once for all the operations that take them
/// (`params(super::openapi::DomainPath)`).
mod params {
    // Never built nor read: only their `IntoParams` (the names and descriptions) is used.
    #![allow(dead_code)]

    use utoipa::IntoParams;

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct DomainPath {
        /// The domain's name, UUID or id.
        id: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct MigrationPath {
        /// The incoming migration's id (the reply of `POST /v1/migrations`).
        id: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct NetworkPath {
        /// The network's name or UUID.
        id: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct PoolPath {
        /// The storage pool's name or UUID.
        pool: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct VolumePath {
        /// The storage pool's name or UUID.
        pool: String,
        /// The volume's name in the pool.
        vol: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SnapshotPath {
        /// The domain's name, UUID or id.
        id: String,
        /// The snapshot's name.
        name: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct InterfacePath {
        /// The domain's name, UUID or id.
        id: String,
        /// The interface's target device name or MAC address.
        dev: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct SecretPath {
        /// The secret's UUID.
        uuid: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct UserPath {
        /// The user's name.
        name: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct TokenPath {
        /// The token's id (`oxvirt token list`).
        id: String,
    }

    #[derive(IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct ServerPath {
        /// The server's name (virt-admin's `srv-*` verbs): oxvirtd has one.
        server: String,
    }
}

/// This document: the `/v1` API in OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi_document",
    tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document", body = Object)),
)]
async fn openapi_json() -> Response {
    match document().to_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(err) => super::reply::Failure(ApiError::new(
            oxvirt_api::code::INTERNAL,
            format!("cannot write the OpenAPI document: {err}"),
        ))
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::http::Method;
    use oxvirt_api::{Action, Role};
    use regex::Regex;

    use super::document;
    use crate::clients::Clients;

    /// The router's routes as (METHOD, path), read from the router itself: axum has no API to
    /// list them, but its `Debug` output names every path (`RouteId(N): "/v1/..."`) and every
    /// method endpoint of each route (`get: Route`, `post: None`, ...). If a new axum writes
    /// that differently, this finds no routes and the test fails rather than passing empty.
    fn router_routes() -> BTreeSet<(String, String)> {
        let debug = format!("{:?}", super::super::routes(Clients::new(1), true));
        // Only the main path router: the fallback router after it holds no API routes.
        let main = debug
            .split_once("fallback_router:")
            .map_or(debug.as_str(), |(main, _)| main);
        let path_re = Regex::new(r#"RouteId\((\d+)\): "((?:[^"\\]|\\.)*)""#).unwrap();
        let paths: BTreeMap<&str, &str> = path_re
            .captures_iter(main)
            .map(|c| (c.get(1).unwrap().as_str(), c.get(2).unwrap().as_str()))
            .collect();
        let endpoint_re = Regex::new(r"RouteId\((\d+)\): (MethodRouter|Route)\(").unwrap();
        let method_re =
            Regex::new(r"\b(get|head|delete|options|patch|post|put|trace|connect): (\w+)").unwrap();
        let mut routes = BTreeSet::new();
        let mut opaque = Vec::new();
        for endpoint in endpoint_re.captures_iter(main) {
            let id = endpoint.get(1).unwrap().as_str();
            let path = paths
                .get(id)
                .unwrap_or_else(|| panic!("route {id} has no path"));
            if &endpoint[2] == "Route" {
                // A service (`route_service`, `nest_service`): its methods cannot be read.
                opaque.push(path.to_string());
                continue;
            }
            let rest = &main[endpoint.get(0).unwrap().end()..];
            let fields = rest.split_once(", fallback:").map_or(rest, |(f, _)| f);
            for method in method_re.captures_iter(fields) {
                if &method[2] != "None" {
                    routes.insert((method[1].to_uppercase(), path.to_string()));
                }
            }
        }
        assert!(
            opaque.is_empty(),
            "routes registered as services, whose methods the document cannot be checked \
             against (register each with a method router, get(handler) and the like, instead): {opaque:?}"
        );
        assert!(
            routes.len() > 50,
            "read only {} routes from the router's Debug output: has axum's format changed?",
            routes.len()
        );
        routes
    }

    fn document_routes() -> BTreeSet<(String, String)> {
        let mut routes = BTreeSet::new();
        for (path, item) in &document().paths.paths {
            for (method, operation) in [
                ("GET", &item.get),
                ("PUT", &item.put),
                ("POST", &item.post),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
                ("HEAD", &item.head),
                ("OPTIONS", &item.options),
                ("TRACE", &item.trace),
            ] {
                if operation.is_some() {
                    routes.insert((method.to_string(), path.clone()));
                }
            }
        }
        routes
    }

    fn listed(routes: &BTreeSet<&(String, String)>) -> String {
        routes
            .iter()
            .map(|(method, path)| format!("\n  {method} {path}"))
            .collect()
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let router = router_routes();
        let document = document_routes();
        let undocumented: BTreeSet<_> = router.difference(&document).collect();
        let unrouted: BTreeSet<_> = document.difference(&router).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "the OpenAPI document and the router differ.\nroutes with no operation in the \
             document (add #[utoipa::path] to the handler and list it in its module's Doc):{}\n\
             operations in the document with no route:{}",
            listed(&undocumented),
            listed(&unrouted),
        );
        for action in Action::ALL {
            let path = format!("/v1/domains/{{id}}/{}", action.as_str());
            assert!(
                router.contains(&("POST".to_string(), path.clone())),
                "no route {path}"
            );
        }
    }

    #[test]
    fn operations_are_named_tagged_and_answer_errors_as_api_errors() {
        let mut ids = BTreeSet::new();
        for (path, item) in &document().paths.paths {
            for operation in [&item.get, &item.put, &item.post, &item.delete]
                .into_iter()
                .flatten()
            {
                let id = operation.operation_id.clone().unwrap_or_default();
                assert!(!id.is_empty(), "an operation of {path} has no operation id");
                assert!(ids.insert(id.clone()), "operation id {id} is used twice");
                assert!(
                    operation.tags.as_ref().is_some_and(|t| !t.is_empty()),
                    "{id} has no tag"
                );
                let statuses = &operation.responses.responses;
                for status in ["400", "401", "403", "404", "409", "500"] {
                    assert!(statuses.contains_key(status), "{id}: no {status} reply");
                }
                assert!(
                    statuses.keys().any(|s| s.starts_with('2') || s == "101"),
                    "{id}: no success reply"
                );
            }
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_tls_schemes_and_read_only_may_read_it() {
        let text = document().to_json().unwrap();
        if let Some(path) = std::env::var_os("OXVIRT_OPENAPI_DUMP") {
            std::fs::write(path, &text).unwrap();
        }
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            json["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            json["openapi"]
        );
        let schemes = &json["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["basic"]["scheme"], "basic");
        // Every schema an operation refers to is in the document.
        let text = json.to_string();
        let refs = Regex::new(r##""#/components/schemas/([^"]+)""##).unwrap();
        let undefined: BTreeSet<_> = refs
            .captures_iter(&text)
            .map(|c| c[1].to_string())
            .filter(|name| json["components"]["schemas"].get(name).is_none())
            .collect();
        assert!(
            undefined.is_empty(),
            "schemas referred to but not defined: {undefined:?}"
        );
        assert!(crate::api::auth::allowed(
            Role::ReadOnly,
            &Method::GET,
            "/v1/openapi.json"
        ));
    }
}

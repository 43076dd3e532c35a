//! HTTP routes of daemon administration (see `oxvirt_api::admin`): the log's filters and
//! outputs, changed without a restart (src/logging.rs).

use std::sync::Arc;

use axum::body::Bytes;
use axum::routing::get;
use axum::{Json, Router};
use oxvirt_api::{code, ApiError, LogFilters, LogOutputs};

use super::reply::{body, Failure, Reply};
use crate::logging;
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/v1/admin/log-filters", get(filters).put(set_filters))
        .route("/v1/admin/log-outputs", get(outputs).put(set_outputs))
}

fn bad(message: String) -> Failure {
    Failure(ApiError::new(code::BAD_REQUEST, message))
}

async fn filters() -> Reply<LogFilters> {
    Ok(Json(LogFilters {
        filters: logging::filters(),
    }))
}

async fn set_filters(bytes: Bytes) -> Reply<LogFilters> {
    let request: LogFilters = body(&bytes)?;
    logging::set_filters(&request.filters).map_err(bad)?;
    tracing::info!(filters = %logging::filters(), "log filters changed");
    filters().await
}

async fn outputs() -> Reply<LogOutputs> {
    Ok(Json(LogOutputs {
        outputs: logging::outputs(),
    }))
}

async fn set_outputs(bytes: Bytes) -> Reply<LogOutputs> {
    let request: LogOutputs = body(&bytes)?;
    // Opening files is blocking work; it is rare and quick, and the outputs' lock must be
    // taken anyway, so it runs on the blocking pool.
    let wanted = request.outputs.clone();
    tokio::task::spawn_blocking(move || logging::set_outputs(&wanted))
        .await
        .map_err(|e| bad(format!("changing the log outputs: {e}")))?
        .map_err(bad)?;
    tracing::info!(outputs = %logging::outputs(), "log outputs changed");
    outputs().await
}

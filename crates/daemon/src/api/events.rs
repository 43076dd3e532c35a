//! HTTP route of the event stream (see `oxvirt_api::events`): Server-Sent Events, one per
//! domain event the subscriber's filter lets through.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream};
use oxvirt_api::events::{Lagged, LAGGED};
use oxvirt_api::EventFilter;
use tokio::sync::broadcast::error::RecvError;

use super::reply::Failure;
use crate::services::Services;

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route("/v1/events", get(events))
}

/// These routes' operations in the OpenAPI document (src/api/openapi.rs).
#[derive(utoipa::OpenApi)]
#[openapi(paths(events))]
pub(super) struct Doc;

/// Subscribes before answering (so every event after the answer's headers reaches the
/// client), then sends events as they come. The stream is only polled as fast as the client
/// reads: one that stops reading falls behind on its own receiver, never holding up the bus.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events_events",
    tag = "events",
    params(EventFilter),
    responses((
        status = 200,
        description = "Server-Sent Events, one JSON `Event` (or a `lagged` notice) per `data:` line, until the client hangs up",
        body = String,
        content_type = "text/event-stream"
    )),
)]
async fn events(
    State(services): State<Arc<Services>>,
    Query(filter): Query<EventFilter>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, Failure> {
    let (subscription, receiver) = services.domains.subscribe_events(&filter)?;
    let stream = stream::unfold(
        (receiver, subscription),
        |(mut receiver, subscription)| async move {
            loop {
                let sse = match receiver.recv().await {
                    Ok(event) if subscription.wants(&event) => {
                        SseEvent::default().json_data(&event)
                    }
                    Ok(_) => continue,
                    Err(RecvError::Lagged(missed)) => SseEvent::default()
                        .event(LAGGED)
                        .json_data(Lagged { missed }),
                    // The daemon is going away.
                    Err(RecvError::Closed) => return None,
                };
                // Serializing these plain types cannot fail; if it did, the client would
                // see a comment rather than a broken stream.
                let sse =
                    sse.unwrap_or_else(|_| SseEvent::default().comment("unserializable event"));
                return Some((Ok(sse), (receiver, subscription)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

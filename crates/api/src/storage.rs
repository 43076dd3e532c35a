//! Storage pools (type `dir`), their volumes, a domain's disks and live disk resizing: wire
//! types and
//! [`Client`] calls.
//!
//! Endpoints (`{pool}` is a pool name or UUID, `{vol}` a volume name, `{id}` a domain name or
//! UUID, all percent-encoded):
//!
//! | method + path                                      | body                      | reply            |
//! |----------------------------------------------------|---------------------------|------------------|
//! | `GET /v1/pools`                                    |                           | `[PoolInfo]`     |
//! | `POST /v1/pools`                                   | [`XmlDocument`]           | [`PoolInfo`]     |
//! | `GET /v1/pools/{pool}`                             |                           | [`PoolInfo`]     |
//! | `DELETE /v1/pools/{pool}`                          |                           | [`PoolInfo`]     |
//! | `GET /v1/pools/{pool}/xml`                         |                           | [`XmlDocument`]  |
//! | `POST /v1/pools/{pool}/{build,start,destroy,refresh}` |                        | [`PoolInfo`]     |
//! | `PUT /v1/pools/{pool}/autostart`                   | [`AutostartRequest`]      | [`PoolInfo`]     |
//! | `GET /v1/pools/{pool}/volumes`                     |                           | `[VolumeInfo]`   |
//! | `POST /v1/pools/{pool}/volumes`                    | [`CreateVolumeRequest`]   | [`VolumeInfo`]   |
//! | `POST /v1/pools/{pool}/volume-xml`                 | [`XmlDocument`]           | [`VolumeInfo`]   |
//! | `GET /v1/pools/{pool}/volumes/{vol}`               |                           | [`VolumeInfo`]   |
//! | `DELETE /v1/pools/{pool}/volumes/{vol}`            |                           | [`VolumeInfo`]   |
//! | `GET /v1/pools/{pool}/volumes/{vol}/xml`           |                           | [`XmlDocument`]  |
//! | `POST /v1/pools/{pool}/volumes/{vol}/clone`        | [`CloneVolumeRequest`]    | [`VolumeInfo`]   |
//! | `POST /v1/pools/{pool}/volumes/{vol}/resize`       | [`ResizeVolumeRequest`]   | [`VolumeInfo`]   |
//! | `PUT /v1/pools/{pool}/volumes/{vol}/data`          | the file's bytes          | [`VolumeInfo`]   |
//! | `GET /v1/pools/{pool}/volumes/{vol}/data`          |                           | the file's bytes |
//! | `GET /v1/domains/{id}/disks`                       |                           | `[DomainDisk]`   |
//! | `POST /v1/domains/{id}/block-resize`               | [`BlockResizeRequest`]    | [`BlockResized`] |
//!
//! `volume-xml` is `vol-create`: the body is libvirt volume XML (`<volume>`, as
//! `oxvirt_domain::volume` reads it), and the volume is made as a [`CreateVolumeRequest`] would
//! make it. (It is not `volumes/xml`, which would shadow a volume named `xml`.)
//!
//! `data` is `vol-upload` (PUT) and `vol-download` (GET): the bytes of the volume's file as
//! they are (a qcow2 volume's qcow2 file), streamed (`application/octet-stream`, any length:
//! the request size limit does not apply). An upload replaces the whole file and must be an
//! image of the volume's recorded format (a qcow2 upload with the backing file the volume
//! was made with, none for most); all-zero blocks land as holes.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::{
    domain_path, percent_encode_segment, to_json, AutostartRequest, Client, ClientError,
    XmlDocument,
};

pub use hyper::body::Bytes as BodyBytes;

/// A defined storage pool (`pool-list`, `pool-info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolInfo {
    pub name: String,
    pub uuid: String,
    /// "dir" (the only pool type oxvirt has).
    pub pool_type: String,
    /// Whether the pool is started (its volumes can be used).
    pub active: bool,
    /// Always true: oxvirt has no transient pools.
    pub persistent: bool,
    pub autostart: bool,
    /// The pool's directory.
    pub target: String,
    /// File system totals of the target (statvfs), in bytes, while the pool is active.
    pub capacity: Option<u64>,
    pub allocation: Option<u64>,
    pub available: Option<u64>,
}

/// A volume: one image file in a pool's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeInfo {
    pub name: String,
    /// Name of the pool holding it.
    pub pool: String,
    /// Absolute path of the file (also the volume's key, as in libvirt's dir pools).
    pub path: String,
    /// "file".
    pub volume_type: String,
    /// Image format: "raw" or "qcow2".
    pub format: String,
    /// Virtual size in bytes (what a guest sees).
    pub capacity: u64,
    /// Bytes the file occupies on the host.
    pub allocation: u64,
    /// Length of the file in bytes.
    pub physical: u64,
    /// The backing file of a qcow2 overlay, as stored in the image.
    #[serde(default)]
    pub backing_file: Option<String>,
    #[serde(default)]
    pub backing_format: Option<String>,
}

/// One disk of `GET /v1/domains/{id}/disks` (`domblklist`), as the definition has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainDisk {
    /// `file`, `block` or `volume`.
    pub disk_type: String,
    /// `disk` or `cdrom`.
    pub device: String,
    /// The guest's name for it, e.g. `vda`.
    pub target: String,
    /// The file or device, or the volume's name; `None` for an empty CD-ROM tray.
    pub source: Option<String>,
}

/// Body of `POST /v1/pools/{pool}/volumes` (`vol-create-as`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateVolumeRequest {
    pub name: String,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// "raw" or "qcow2".
    pub format: String,
    /// qcow2 only: write all metadata up front (`preallocation=metadata`).
    #[serde(default)]
    pub prealloc_metadata: bool,
    /// Bytes to allocate up front, as libvirt's `<allocation>`: the whole capacity (or more)
    /// reserves space for all of it (fallocate); less, or none, leaves the volume sparse.
    #[serde(default)]
    pub allocation: Option<u64>,
    /// A volume of the same pool, or the absolute path of an image, to back a qcow2 volume.
    #[serde(default)]
    pub backing_vol: Option<String>,
    /// Format of the backing volume: the backing volume's recorded format when absent.
    #[serde(default)]
    pub backing_format: Option<String>,
    /// qcow2 only: cluster size in bytes (64 KiB when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
}

/// Body of `POST /v1/pools/{pool}/volumes/{vol}/clone` (`vol-clone`): a new volume in the
/// same pool with the same format and contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CloneVolumeRequest {
    pub name: String,
}

/// Body of `POST /v1/pools/{pool}/volumes/{vol}/resize` (`vol-resize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResizeVolumeRequest {
    /// New size in bytes, or with `delta` the amount to grow (or, with `shrink`, to shrink) by.
    pub capacity: u64,
    #[serde(default)]
    pub delta: bool,
    /// Allow a smaller size (data past the new end is lost).
    #[serde(default)]
    pub shrink: bool,
}

/// Body of `POST /v1/domains/{id}/block-resize` (`blockresize`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockResizeRequest {
    /// The disk: its target device ("vda") or its source path.
    pub disk: String,
    /// New size in bytes (rounded up to a multiple of 512).
    pub size: u64,
}

/// Reply of `POST /v1/domains/{id}/block-resize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockResized {
    /// The disk's target device.
    pub target: String,
    /// The size it has now, in bytes.
    pub size: u64,
}

fn pool_path(pool: &str, suffix: &str) -> String {
    format!("/v1/pools/{}{suffix}", percent_encode_segment(pool))
}

fn volume_path(pool: &str, volume: &str, suffix: &str) -> String {
    format!(
        "/v1/pools/{}/volumes/{}{suffix}",
        percent_encode_segment(pool),
        percent_encode_segment(volume)
    )
}

/// A streamed HTTP body fed through a channel: the image bytes of an upload (the client) or a
/// download (the daemon), produced by a task that reads the file, so a whole image is never in
/// memory. The producer sends an error to make the receiving side fail instead of taking a
/// short stream as the end; [`ChannelBody::channel`] makes the pair.
#[derive(Debug)]
pub struct ChannelBody {
    receiver: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
    length: Option<u64>,
}

/// The sending side of a [`ChannelBody`].
pub type BodySender = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

impl ChannelBody {
    /// A body of `length` bytes if known (sent as Content-Length; otherwise chunked) and the
    /// sender that fills it. A few chunks are buffered, no more.
    pub fn channel(length: Option<u64>) -> (BodySender, ChannelBody) {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        (sender, ChannelBody { receiver, length })
    }

    /// A body of the `length` bytes `reader` gives, read in 1 MiB chunks on a blocking thread
    /// (call it inside a Tokio runtime). `progress(bytes so far)` is called after each chunk.
    pub fn from_reader(
        mut reader: impl std::io::Read + Send + 'static,
        length: u64,
        mut progress: impl FnMut(u64) + Send + 'static,
    ) -> ChannelBody {
        let (sender, body) = ChannelBody::channel(Some(length));
        tokio::task::spawn_blocking(move || {
            let mut done = 0u64;
            while done < length {
                let want = (length - done).min(1 << 20) as usize;
                let mut chunk = vec![0u8; want];
                let item = match reader.read_exact(&mut chunk) {
                    Ok(()) => Ok(Bytes::from(chunk)),
                    Err(err) => Err(err),
                };
                let failed = item.is_err();
                if sender.blocking_send(item).is_err() || failed {
                    return;
                }
                done += want as u64;
                progress(done);
            }
        });
        body
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.receiver
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

/// A volume's bytes as `GET .../data` streams them: [`VolumeDownload::next_chunk`] until `None`.
#[derive(Debug)]
pub struct VolumeDownload {
    body: hyper::body::Incoming,
    client: Client,
    path: String,
    /// The file's length, from Content-Length.
    pub length: Option<u64>,
}

impl VolumeDownload {
    /// The next piece of the file, `None` at its end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        use http_body_util::BodyExt;
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(self.client.protocol(format!("reading {}: {e}", self.path)))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

impl Client {
    /// `PUT /v1/pools/{pool}/volumes/{vol}/data` (`vol-upload`): replaces the volume's file with
    /// the streamed bytes.
    pub async fn upload_volume(
        &self,
        pool: &str,
        volume: &str,
        body: ChannelBody,
    ) -> Result<VolumeInfo, ClientError> {
        let path = volume_path(pool, volume, "/data");
        let response = self
            .send(Method::PUT, &path, body, Some("application/octet-stream"))
            .await?;
        let status = response.status();
        let bytes = self.reply_body(&path, response).await?;
        if !status.is_success() {
            return Err(self.error_reply(&path, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("reply to {path}: {e}")))
    }

    /// `GET /v1/pools/{pool}/volumes/{vol}/data` (`vol-download`): the volume's file, streamed.
    pub async fn download_volume(
        &self,
        pool: &str,
        volume: &str,
    ) -> Result<VolumeDownload, ClientError> {
        let path = volume_path(pool, volume, "/data");
        let response = self
            .send(
                Method::GET,
                &path,
                http_body_util::Empty::<Bytes>::new(),
                None,
            )
            .await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = self.reply_body(&path, response).await?;
            return Err(self.error_reply(&path, status, &bytes));
        }
        let length = response
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(VolumeDownload {
            body: response.into_body(),
            client: self.clone(),
            path,
            length,
        })
    }

    /// `GET /v1/pools`.
    pub async fn list_pools(&self) -> Result<Vec<PoolInfo>, ClientError> {
        self.call(Method::GET, "/v1/pools".to_string(), None).await
    }

    /// `POST /v1/pools`: define a pool (or update an inactive one of that name).
    pub async fn define_pool(&self, xml: &str) -> Result<PoolInfo, ClientError> {
        let body = to_json(&XmlDocument {
            xml: xml.to_string(),
        });
        self.call(Method::POST, "/v1/pools".to_string(), Some(body))
            .await
    }

    /// `GET /v1/pools/{pool}`.
    pub async fn pool_info(&self, pool: &str) -> Result<PoolInfo, ClientError> {
        self.call(Method::GET, pool_path(pool, ""), None).await
    }

    /// `GET /v1/pools/{pool}/xml`.
    pub async fn pool_xml(&self, pool: &str) -> Result<String, ClientError> {
        let doc: XmlDocument = self
            .call(Method::GET, pool_path(pool, "/xml"), None)
            .await?;
        Ok(doc.xml)
    }

    /// `DELETE /v1/pools/{pool}`: undefine an inactive pool (its directory stays).
    pub async fn undefine_pool(&self, pool: &str) -> Result<PoolInfo, ClientError> {
        self.call(Method::DELETE, pool_path(pool, ""), None).await
    }

    /// `POST /v1/pools/{pool}/{action}` with action `build`, `start`, `destroy` or `refresh`.
    pub async fn pool_action(&self, pool: &str, action: &str) -> Result<PoolInfo, ClientError> {
        self.call(Method::POST, pool_path(pool, &format!("/{action}")), None)
            .await
    }

    /// `PUT /v1/pools/{pool}/autostart`.
    pub async fn set_pool_autostart(
        &self,
        pool: &str,
        enabled: bool,
    ) -> Result<PoolInfo, ClientError> {
        let body = to_json(&AutostartRequest { enabled });
        self.call(Method::PUT, pool_path(pool, "/autostart"), Some(body))
            .await
    }

    /// `GET /v1/pools/{pool}/volumes`, sorted by name.
    pub async fn list_volumes(&self, pool: &str) -> Result<Vec<VolumeInfo>, ClientError> {
        self.call(Method::GET, pool_path(pool, "/volumes"), None)
            .await
    }

    /// `POST /v1/pools/{pool}/volumes`.
    pub async fn create_volume(
        &self,
        pool: &str,
        request: &CreateVolumeRequest,
    ) -> Result<VolumeInfo, ClientError> {
        self.call(
            Method::POST,
            pool_path(pool, "/volumes"),
            Some(to_json(request)),
        )
        .await
    }

    /// `POST /v1/pools/{pool}/volume-xml`: create a volume from its XML (`vol-create`).
    pub async fn create_volume_from_xml(
        &self,
        pool: &str,
        xml: &str,
    ) -> Result<VolumeInfo, ClientError> {
        let body = to_json(&XmlDocument {
            xml: xml.to_string(),
        });
        self.call(Method::POST, pool_path(pool, "/volume-xml"), Some(body))
            .await
    }

    /// `GET /v1/pools/{pool}/volumes/{vol}`.
    pub async fn volume_info(&self, pool: &str, volume: &str) -> Result<VolumeInfo, ClientError> {
        self.call(Method::GET, volume_path(pool, volume, ""), None)
            .await
    }

    /// `GET /v1/pools/{pool}/volumes/{vol}/xml`.
    pub async fn volume_xml(&self, pool: &str, volume: &str) -> Result<String, ClientError> {
        let doc: XmlDocument = self
            .call(Method::GET, volume_path(pool, volume, "/xml"), None)
            .await?;
        Ok(doc.xml)
    }

    /// `DELETE /v1/pools/{pool}/volumes/{vol}`: removes the file (refused while a guest uses it).
    pub async fn delete_volume(&self, pool: &str, volume: &str) -> Result<VolumeInfo, ClientError> {
        self.call(Method::DELETE, volume_path(pool, volume, ""), None)
            .await
    }

    /// `POST /v1/pools/{pool}/volumes/{vol}/clone`.
    pub async fn clone_volume(
        &self,
        pool: &str,
        volume: &str,
        new_name: &str,
    ) -> Result<VolumeInfo, ClientError> {
        let body = to_json(&CloneVolumeRequest {
            name: new_name.to_string(),
        });
        self.call(
            Method::POST,
            volume_path(pool, volume, "/clone"),
            Some(body),
        )
        .await
    }

    /// `POST /v1/pools/{pool}/volumes/{vol}/resize`.
    pub async fn resize_volume(
        &self,
        pool: &str,
        volume: &str,
        request: ResizeVolumeRequest,
    ) -> Result<VolumeInfo, ClientError> {
        self.call(
            Method::POST,
            volume_path(pool, volume, "/resize"),
            Some(to_json(&request)),
        )
        .await
    }

    /// `GET /v1/domains/{id}/disks`: the domain's disks, in definition order.
    pub async fn domain_disks(&self, domain: &str) -> Result<Vec<DomainDisk>, ClientError> {
        self.call(Method::GET, domain_path(domain, "/disks"), None)
            .await
    }

    /// `POST /v1/domains/{id}/block-resize`: grow a running guest's disk.
    pub async fn block_resize(
        &self,
        domain: &str,
        request: &BlockResizeRequest,
    ) -> Result<BlockResized, ClientError> {
        self.call(
            Method::POST,
            domain_path(domain, "/block-resize"),
            Some(to_json(request)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_paths_keep_names_in_one_segment() {
        assert_eq!(
            volume_path("p 1", "../x", "/xml"),
            "/v1/pools/p%201/volumes/..%2Fx/xml"
        );
    }

    #[test]
    fn optional_request_fields_may_be_left_out() {
        let request: CreateVolumeRequest =
            serde_json::from_str(r#"{"name":"v","capacity":1,"format":"raw"}"#).unwrap();
        assert!(!request.prealloc_metadata);
        assert_eq!(request.allocation, None);
        assert_eq!(request.backing_vol, None);
        let resize: ResizeVolumeRequest = serde_json::from_str(r#"{"capacity":5}"#).unwrap();
        assert!(!resize.delta && !resize.shrink);
    }
}

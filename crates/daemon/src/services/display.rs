//! What a running domain shows and plays: its graphical displays (`domdisplay`, `vncdisplay`),
//! screenshots, keys pressed on its keyboard (`send-key`), the media of its CD-ROM drives
//! (`change-media`), and its live definition: the stored one with what only a start decides
//! (the port an automatic display got) and what changed since (media), in `RUN/live.xml`, which
//! `dumpxml` of a running domain prints as libvirt does. The stored definition stays untouched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use oxvirt_api::{
    ChangeMediaRequest, DisplaysRequest, GraphicsDisplay, KeysSent, MediaAction, MediaChanged,
    Screenshot, ScreenshotRequest, SendKeyRequest,
};
use oxvirt_domain::{DiskDevice, DiskType, Domain, VideoModel, VncListen};
use oxvirt_qemu::keycodes::{self, Codeset};

use super::domains::Domains;
use super::error::{
    bad_request, db, engine_failure, internal, invalid_state, not_found, DaemonError, DaemonResult,
    ErrorKind,
};
use super::guests::stored_domain;
use crate::engine::{Control, DisplayListen};
use crate::store::{self, DomainRecord};

/// libvirt's limit on keys pressed at once (`VIR_DOMAIN_SEND_KEY_MAX_KEYS`).
const MAX_KEYS: usize = 16;

/// The live definition of a running domain in its run directory.
pub(super) fn live_xml_path(run_dir: &Path) -> PathBuf {
    run_dir.join("live.xml")
}

/// `domain` as it runs: each display with the address and port its engine reports (libvirt's
/// live XML of an `autoport` display has the port it got, and the listen address it used).
fn with_display_ports(mut domain: Domain, displays: &[DisplayListen]) -> Domain {
    for graphics in domain.devices.graphics.iter_mut() {
        let protocol = if graphics.spice.is_some() {
            "spice"
        } else {
            "vnc"
        };
        let Some(listen) = displays.iter().find(|d| d.protocol == protocol) else {
            continue;
        };
        if let VncListen::Address(address) = &mut graphics.listen {
            graphics.port = Some(listen.port);
            if address.is_none() {
                *address = Some(listen.host.clone());
            }
        }
    }
    domain
}

impl Domains {
    /// Writes the live definition of a just-started domain (`domain`: the stored one, with its
    /// ports from `control`). A failure only leaves `dumpxml` showing the stored definition.
    pub(super) async fn record_live_definition(
        &self,
        record: &DomainRecord,
        control: &dyn Control,
        run_dir: &Path,
    ) {
        let path = live_xml_path(run_dir);
        let _ = std::fs::remove_file(&path);
        let written = match (stored_domain(record), control.displays().await) {
            (Ok(domain), Ok(displays)) => {
                let live = with_display_ports(domain, &displays);
                std::fs::write(&path, live.to_xml()).map_err(|e| e.to_string())
            }
            (Err(err), _) => Err(err.to_string()),
            (_, Err(err)) => Err(err.to_string()),
        };
        if let Err(err) = written {
            tracing::warn!(domain = %record.name, "cannot record the live definition: {err}");
        }
    }

    /// Replaces the live definition of a running domain (after a change made to it live).
    pub(super) fn write_live_definition(
        &self,
        record: &DomainRecord,
        live: &Domain,
    ) -> DaemonResult<()> {
        let path = live_xml_path(&self.guests.run_dir(&record.uuid));
        std::fs::write(&path, live.to_xml())
            .map_err(|e| internal(&format!("cannot write {}", path.display()), e))
    }

    /// The live definition of a running domain, `None` when it is not running (or its live
    /// definition was not recorded).
    pub(super) fn live_xml(&self, record: &DomainRecord) -> DaemonResult<Option<String>> {
        if self.store.runtime(&record.uuid).map_err(db)?.is_none() {
            return Ok(None);
        }
        let path = live_xml_path(&self.guests.run_dir(&record.uuid));
        match std::fs::read_to_string(&path) {
            Ok(xml) => Ok(Some(xml)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(internal(&format!("cannot read {}", path.display()), err)),
        }
    }

    /// The definition the domain has now: the live one while it runs, else the stored one.
    pub(super) fn current_domain(&self, record: &DomainRecord) -> DaemonResult<Domain> {
        match self.live_xml(record)? {
            Some(xml) => oxvirt_domain::parse_domain_xml(&xml).map_err(|err| {
                internal(
                    &format!("live definition of domain '{}' does not parse", record.name),
                    err,
                )
            }),
            None => stored_domain(record),
        }
    }

    /// `domdisplay`/`vncdisplay`: where each display of a running domain listens.
    pub async fn displays(
        self: &Arc<Self>,
        id: &str,
        request: &DisplaysRequest,
    ) -> DaemonResult<Vec<GraphicsDisplay>> {
        let record = self.guests.resolve(id)?;
        let vm = self.guests.slot(&record.uuid);
        let control = self.guests.running_control(&vm, &record)?;
        let domain = self.current_domain(&record)?;
        let listening = control
            .displays()
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        let mut displays = Vec::new();
        for graphics in &domain.devices.graphics {
            let protocol = if graphics.spice.is_some() {
                "spice"
            } else {
                "vnc"
            };
            let password = graphics.passwd.clone().filter(|_| request.include_password);
            let display = match &graphics.listen {
                VncListen::Socket(path) => GraphicsDisplay {
                    protocol: protocol.to_string(),
                    listen: None,
                    port: None,
                    tls_port: None,
                    socket: Some(path.clone()),
                    password,
                },
                VncListen::Address(address) => {
                    let Some(live) = listening.iter().find(|d| d.protocol == protocol) else {
                        continue;
                    };
                    GraphicsDisplay {
                        protocol: protocol.to_string(),
                        listen: Some(address.clone().unwrap_or_else(|| live.host.clone())),
                        port: Some(live.port),
                        tls_port: live.tls_port,
                        socket: None,
                        password,
                    }
                }
                VncListen::None => continue,
            };
            displays.push(display);
        }
        Ok(displays)
    }

    /// A new client connection to a running domain's VNC server (the browser's graphical
    /// console, api/websocket.rs): our end of a socket pair whose other end the engine handed
    /// to the server. No port is involved, so the display is reachable no further than it was.
    pub async fn open_vnc(
        self: &Arc<Self>,
        id: &str,
    ) -> DaemonResult<std::os::unix::net::UnixStream> {
        let record = self.guests.resolve(id)?;
        let vm = self.guests.slot(&record.uuid);
        let control = self.guests.running_control(&vm, &record)?;
        let domain = self.current_domain(&record)?;
        if !domain.devices.graphics.iter().any(|g| g.spice.is_none()) {
            return Err(invalid_state(format!(
                "domain '{}' has no VNC graphics (<graphics type='vnc'/>)",
                record.name
            )));
        }
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| internal("cannot make a socket pair for the VNC client", e))?;
        use std::os::fd::AsFd as _;
        control
            .open_vnc(theirs.as_fd())
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        Ok(ours)
    }

    /// `screenshot`: a PNG of a running domain's screen, written by the engine into the
    /// domain's private run directory and removed there once read.
    pub async fn screenshot(
        self: &Arc<Self>,
        id: &str,
        request: &ScreenshotRequest,
    ) -> DaemonResult<Screenshot> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let control = self.guests.running_control(&vm, &record)?;
        let domain = self.current_domain(&record)?;
        let Some(video) = domain
            .devices
            .videos
            .iter()
            .find(|v| v.model != VideoModel::None)
        else {
            return Err(invalid_state(format!(
                "domain '{}' has no screens to take a screenshot from (no <video> device)",
                record.name
            )));
        };
        let heads = video.heads.unwrap_or(1);
        if request.screen >= heads {
            return Err(bad_request(format!(
                "domain '{}' has no screen {} (it has {heads})",
                record.name, request.screen
            )));
        }
        // QEMU writes it by name: in the one directory a QEMU running as a guest user may
        // write (oxvirt_qemu::RunPaths::qemu_dir), read back without following a link it
        // may have put there.
        let file = oxvirt_qemu::RunPaths::new(self.guests.run_dir(&record.uuid))
            .qemu_dir()
            .join("screenshot.png");
        let _ = std::fs::remove_file(&file);
        let taken = control.screendump(&file, request.screen).await;
        let bytes = taken
            .map_err(|e| engine_failure(&record.name, e))
            .and_then(|()| {
                use std::io::Read as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut bytes = Vec::new();
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(&file)
                    .and_then(|mut f| f.read_to_end(&mut bytes))
                    .map(|_| bytes)
                    .map_err(|e| internal(&format!("cannot read {}", file.display()), e))
            });
        let _ = std::fs::remove_file(&file);
        Ok(Screenshot {
            mime: "image/png".to_string(),
            base64: base64::engine::general_purpose::STANDARD.encode(bytes?),
        })
    }

    /// `send-key`: presses keys on a running domain's keyboard.
    pub async fn send_key(
        self: &Arc<Self>,
        id: &str,
        request: &SendKeyRequest,
    ) -> DaemonResult<KeysSent> {
        let record = self.guests.resolve(id)?;
        let codeset_name = request.codeset.as_deref().unwrap_or("linux");
        let codeset = Codeset::parse(codeset_name).ok_or_else(|| {
            bad_request(format!(
                "unknown codeset: '{codeset_name}' (oxvirt knows {})",
                Codeset::NAMES
            ))
        })?;
        if request.keys.is_empty() {
            return Err(bad_request("no keycode given"));
        }
        if request.keys.len() > MAX_KEYS {
            return Err(bad_request(format!(
                "too many keycodes: at most {MAX_KEYS} can be pressed at once"
            )));
        }
        let mut qnum = Vec::with_capacity(request.keys.len());
        for key in &request.keys {
            let code = keycodes::key_value(codeset, key)
                .and_then(|code| keycodes::to_qnum(codeset, code, codeset_name))
                .map_err(|err| bad_request(err.to_string()))?;
            qnum.push(code);
        }
        let (vm, _guard) = self.guests.begin(&record)?;
        let control = self.guests.running_control(&vm, &record)?;
        control
            .send_keys(&qnum, request.holdtime_ms)
            .await
            .map_err(|e| engine_failure(&record.name, e))?;
        Ok(KeysSent { qnum })
    }

    /// `change-media`: ejects, inserts or swaps the medium of a CD-ROM drive, in the running
    /// guest (`live`) or in the stored definition of a shut-off domain (`config`).
    pub async fn change_media(
        self: &Arc<Self>,
        id: &str,
        request: &ChangeMediaRequest,
    ) -> DaemonResult<MediaChanged> {
        let record = self.guests.resolve(id)?;
        let (vm, _guard) = self.guests.begin(&record)?;
        let running = self.store.runtime(&record.uuid).map_err(db)?.is_some();
        // Neither flag: virsh's --current, the running guest or else the definition.
        let (live, config) = match (request.live, request.config) {
            (false, false) => (running, !running),
            flags => flags,
        };
        if live && !running {
            return Err(invalid_state(format!(
                "domain '{}' is not running (--live changes a running guest; --config the definition)",
                record.name
            )));
        }
        if config && running {
            return Err(DaemonError::new(
                ErrorKind::Unsupported,
                format!(
                    "domain '{}' is running: changing its persistent definition (--config) while it runs is not supported yet; use --live, or --config once it is shut off",
                    record.name
                ),
            ));
        }
        let mut domain = self.current_domain(&record)?;
        let index = domain
            .devices
            .disks
            .iter()
            .position(|d| {
                d.target.dev == request.path || d.source.as_deref() == Some(&request.path)
            })
            .ok_or_else(|| {
                not_found(format!(
                    "No disk found whose source path or target is {}",
                    request.path
                ))
            })?;
        let disk = &domain.devices.disks[index];
        let dev = disk.target.dev.clone();
        if disk.device != DiskDevice::Cdrom {
            return Err(bad_request(format!(
                "The disk device '{dev}' is not removable"
            )));
        }
        let has_media = disk.source.is_some() || disk.volume.is_some() || disk.network.is_some();
        let insert = match (request.action, &request.source, has_media) {
            (MediaAction::Eject, _, false) => {
                return Err(bad_request(format!(
                    "The disk device '{dev}' doesn't have media"
                )))
            }
            (MediaAction::Eject, _, true) => None,
            (MediaAction::Insert, None, _) | (MediaAction::Update, None, false) => {
                return Err(bad_request("No source is given for inserting media"))
            }
            (MediaAction::Insert, Some(_), true) => {
                return Err(bad_request(format!(
                    "The disk device '{dev}' already has media"
                )))
            }
            (MediaAction::Update, None, true) => None,
            (MediaAction::Insert | MediaAction::Update, Some(source), _) => Some(source.clone()),
        };
        if let Some(source) = &insert {
            check_medium(source, request.block)?;
        }
        {
            let disk = &mut domain.devices.disks[index];
            disk.volume = None;
            disk.network = None;
            disk.auth = None;
            disk.backing_chain.clear();
            disk.source = insert.clone();
            if insert.is_some() {
                disk.disk_type = if request.block {
                    DiskType::Block
                } else {
                    DiskType::File
                };
            } else if disk.disk_type != DiskType::Block {
                disk.disk_type = DiskType::File;
            }
        }
        let new_disk = &domain.devices.disks[index];
        if live {
            let control = self.guests.running_control(&vm, &record)?;
            control
                .change_media(&dev, insert.is_some().then_some(new_disk), request.force)
                .await
                .map_err(|e| engine_failure(&record.name, e))?;
            let displays = control.displays().await.unwrap_or_default();
            self.write_live_definition(&record, &with_display_ports(domain.clone(), &displays))?;
        }
        if config {
            self.engine
                .check_definition(&domain)
                .map_err(|e| engine_failure(&record.name, e))?;
            let engine = self.engine.kind_of(&domain).to_string();
            let xml = domain.to_xml();
            self.store.transaction_or(db, |tx| -> DaemonResult<()> {
                if store::runtime(tx, &record.uuid).map_err(db)?.is_some() {
                    return Err(invalid_state(format!(
                        "domain '{}' started meanwhile; its definition was not changed",
                        record.name
                    )));
                }
                store::update_domain_xml(tx, &record.uuid, &xml, &engine).map_err(db)
            })?;
        }
        tracing::info!(domain = %record.name, disk = %dev, medium = ?insert, live, config, "media changed");
        Ok(MediaChanged {
            action: request.action,
            target: dev,
        })
    }
}

/// A medium to insert must be there, and be what `--block` says it is.
fn check_medium(source: &str, block: bool) -> DaemonResult<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(source).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => not_found(format!(
            "cannot access media file '{source}': No such file or directory"
        )),
        _ => bad_request(format!("cannot access media file '{source}': {err}")),
    })?;
    let kind = meta.file_type();
    match (block, kind.is_file(), kind.is_block_device()) {
        (false, true, _) | (true, _, true) => Ok(()),
        (false, _, true) => Err(bad_request(format!(
            "'{source}' is a block device: give --block"
        ))),
        _ => Err(bad_request(format!(
            "'{source}' is not a {}",
            if block {
                "block device"
            } else {
                "regular file"
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_definition_has_the_port_and_address_qemu_uses() {
        let domain = oxvirt_domain::parse_domain_xml(
            "<domain type='qemu'><name>g</name><memory>131072</memory><os><type>hvm</type></os>\
             <devices><graphics type='vnc'/></devices></domain>",
        )
        .unwrap();
        let stored = domain.to_xml();
        assert!(
            stored.contains("<graphics type='vnc' port='-1' autoport='yes'>"),
            "{stored}"
        );
        let live = with_display_ports(
            domain,
            &[DisplayListen {
                protocol: "vnc",
                host: "127.0.0.1".into(),
                port: 5901,
                tls_port: None,
            }],
        )
        .to_xml();
        assert!(
            live.contains(
                "<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>\n      <listen type='address' address='127.0.0.1'/>"
            ),
            "{live}"
        );
    }
}

//! SPICE: the display (`-spice`), its sound backend (see `sound.rs`), the agent channel and
//! USB redirection (`spicevmc` chardevs), as libvirt 9.0 builds them for QEMU 7.2:
//!
//! ```text
//! -spice port=5901,addr=127.0.0.1,disable-ticketing=on,image-compression=off,seamless-migration=on
//! -audiodev '{"id":"audio1","driver":"spice"}'
//! -device '{"driver":"intel-hda","id":"sound0",...}' -device '{"driver":"hda-duplex","id":"sound0-codec0","bus":"sound0.0","cad":0,"audiodev":"audio1"}'
//! -chardev spicevmc,id=charchannel1,name=vdagent -device '{"driver":"virtserialport",...,"name":"com.redhat.spice.0"}'
//! -chardev spicevmc,id=charredir0,name=usbredir -device '{"driver":"usb-redir","chardev":"charredir0","id":"redir0","bus":"usb.0"}'
//! ```
//!
//! QEMU has no automatic SPICE port: for `autoport='yes'` (virt-install's default) and
//! `port='-1'`, [`assign_spice_ports`] picks a free TCP port at start, as libvirt does (from
//! 5900 up, on the listen address); the define-time check uses a placeholder.

use std::net::TcpListener;

use oxvirt_domain::{
    ControllerType, Domain, Graphics, RedirDev, Spice, SpiceImageCompression, VncListen,
};
use serde_json::json;

use super::{escape_opt, Builder};
use crate::QemuError;

/// libvirt's SPICE listen address when the definition gives none (qemu.conf `spice_listen`).
const SPICE_DEFAULT_LISTEN: &str = "127.0.0.1";
/// The first port libvirt's allocator hands to displays (qemu.conf `remote_display_port_min`).
const SPICE_FIRST_PORT: u16 = 5900;
/// What [`super::check`] pretends a start picked for an automatic SPICE port.
pub(super) const CHECK_SPICE_PORT: u16 = 5900;

fn needs_port(graphics: &Graphics) -> bool {
    graphics
        .spice
        .as_ref()
        .is_some_and(|s| graphics.port.is_none() && (graphics.autoport || s.port_any))
}

/// `domain` with a free TCP port for each SPICE display that asks for one (`autoport='yes'`,
/// `port='-1'`), or `None` when none does. The port is free when this returns; QEMU binds it
/// right after (libvirt's allocator has the same window).
pub fn assign_spice_ports(domain: &Domain) -> Result<Option<Domain>, QemuError> {
    if !domain.devices.graphics.iter().any(needs_port) {
        return Ok(None);
    }
    let mut assigned = domain.clone();
    for graphics in assigned.devices.graphics.iter_mut() {
        if !needs_port(graphics) {
            continue;
        }
        let host = match &graphics.listen {
            VncListen::Address(Some(address)) => address.clone(),
            _ => SPICE_DEFAULT_LISTEN.to_string(),
        };
        let port = (SPICE_FIRST_PORT..=u16::MAX)
            .find(|port| TcpListener::bind((host.as_str(), *port)).is_ok())
            .ok_or_else(|| {
                QemuError::unsupported(
                    "devices/graphics",
                    graphics.line,
                    format!("no free TCP port from {SPICE_FIRST_PORT} up on {host} for SPICE"),
                )
            })?;
        graphics.port = Some(port);
    }
    Ok(Some(assigned))
}

/// For the define-time check: the placeholder port a start would pick.
pub(super) fn placeholder_spice_ports(domain: &mut Domain) {
    for graphics in domain.devices.graphics.iter_mut() {
        if needs_port(graphics) {
            graphics.port = Some(CHECK_SPICE_PORT);
        }
    }
}

impl Builder<'_> {
    /// The `-spice` option of a SPICE display.
    pub(super) fn spice(&self, graphics: &Graphics, spice: &Spice) -> Result<String, QemuError> {
        let Graphics {
            listen,
            port,
            autoport,
            // Set over QMP right after start (`set_password`), so it never shows in `ps`.
            passwd,
            spice: _,
            line,
        } = graphics;
        let Spice {
            port_any,
            image_compression,
            image_line: _,
        } = spice;
        let mut options = Vec::new();
        match listen {
            VncListen::None => {}
            VncListen::Socket(_) => {
                return Err(QemuError::unsupported(
                    "devices/graphics/listen",
                    *line,
                    "a SPICE display on a UNIX socket",
                ))
            }
            VncListen::Address(address) => {
                let port = port.ok_or_else(|| {
                    let why = if *autoport || *port_any {
                        "the SPICE port is picked at start (oxvirt_qemu::assign_spice_ports)"
                    } else {
                        "a SPICE display listening on an address needs a port"
                    };
                    QemuError::invalid("devices/graphics@port", *line, why)
                })?;
                let host = address.as_deref().unwrap_or(SPICE_DEFAULT_LISTEN);
                if host.contains(',') {
                    return Err(QemuError::invalid(
                        "devices/graphics@listen",
                        *line,
                        "not an address",
                    ));
                }
                options.push(format!("port={port}"));
                options.push(format!("addr={}", escape_opt(host)));
            }
        }
        if passwd.is_none() {
            options.push("disable-ticketing=on".to_string());
        }
        if let Some(compression) = image_compression {
            let value = match compression {
                SpiceImageCompression::AutoGlz => "auto_glz",
                SpiceImageCompression::AutoLz => "auto_lz",
                SpiceImageCompression::Quic => "quic",
                SpiceImageCompression::Glz => "glz",
                SpiceImageCompression::Lz => "lz",
                SpiceImageCompression::Off => "off",
            };
            options.push(format!("image-compression={value}"));
        }
        options.push("seamless-migration=on".to_string());
        Ok(options.join(","))
    }

    /// `<redirdev bus='usb' type='spicevmc'>`: a `usb-redir` device fed by the SPICE client.
    pub(super) fn redirdevs(
        &mut self,
        redirdevs: &[RedirDev],
        spice_display: bool,
    ) -> Result<(), QemuError> {
        for (index, redirdev) in redirdevs.iter().enumerate() {
            // USB addresses are not assigned (as for USB inputs): QEMU picks the port.
            let RedirDev { address: _, line } = redirdev;
            let element = format!("devices/redirdev[{index}]");
            if !spice_display {
                return Err(QemuError::invalid(
                    element,
                    *line,
                    "USB redirection needs a SPICE display",
                ));
            }
            if !self.has_controller(ControllerType::Usb, 0) {
                return Err(QemuError::invalid(
                    element,
                    *line,
                    "USB redirection needs a USB controller",
                ));
            }
            let id = format!("charredir{index}");
            self.arg("-chardev", format!("spicevmc,id={id},name=usbredir"));
            self.devices.on_buses.push(json!({
                "driver": "usb-redir", "chardev": id, "id": format!("redir{index}"), "bus": "usb.0",
            }));
        }
        Ok(())
    }
}

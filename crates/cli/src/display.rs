//! Graphical consoles and removable media: `domdisplay`, `vncdisplay`, `screenshot`,
//! `send-key`, `change-media`, with virsh's arguments and messages.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use clap::Subcommand;
use oxvirt_api::{
    ChangeMediaRequest, Client, DisplaysRequest, GraphicsDisplay, MediaAction, ScreenshotRequest,
    SendKeyRequest,
};

use crate::commands::{block_on, Scope};

#[derive(Subcommand, Debug)]
pub enum DisplayCommand {
    /// Print the URI of a running domain's graphical display (vnc://..., spice://...).
    Domdisplay {
        /// Domain name or UUID.
        domain: String,
        /// Only a display of this type (vnc, spice).
        #[arg(long = "type")]
        display_type: Option<String>,
        /// Include the display's password in the URI.
        #[arg(long)]
        include_password: bool,
        /// Print every display, one a line.
        #[arg(long)]
        all: bool,
    },
    /// Print the address and display number of a running domain's VNC server.
    Vncdisplay {
        /// Domain name or UUID.
        domain: String,
    },
    /// Save a PNG of a running domain's screen (default file: DOMAIN-DATE.png).
    Screenshot {
        /// Domain name or UUID.
        domain: String,
        /// Where to write the image.
        file: Option<PathBuf>,
        /// Which screen (0: the primary display).
        #[arg(long, default_value_t = 0)]
        screen: u32,
    },
    /// Press keys on a running domain's keyboard, all at once.
    SendKey {
        /// Domain name or UUID.
        domain: String,
        /// Code set of the keys: linux (default; takes KEY_* names), xt, xt_kbd, atset1, usb,
        /// qnum, rfb.
        #[arg(long)]
        codeset: Option<String>,
        /// Hold the keys this many milliseconds.
        #[arg(long)]
        holdtime: Option<u32>,
        /// Key names (KEY_LEFTCTRL) or numbers (decimal, or 0x hex).
        #[arg(required = true)]
        keycode: Vec<String>,
    },
    /// Eject, insert or change the medium of a CD-ROM drive.
    ChangeMedia {
        /// Domain name or UUID.
        domain: String,
        /// The drive: its target (hdc, sda) or its current source path.
        path: String,
        /// The medium to insert (a file; a block device with --block).
        source: Option<String>,
        /// Eject the medium.
        #[arg(long, conflicts_with_all = ["insert", "update"])]
        eject: bool,
        /// Insert SOURCE into an empty drive.
        #[arg(long, conflicts_with = "update")]
        insert: bool,
        /// Eject and/or insert, as the drive and SOURCE ask (the default).
        #[arg(long)]
        update: bool,
        /// Open a tray the guest locked.
        #[arg(long)]
        force: bool,
        /// What changes (--config: the definition of a shut-off domain, for now).
        #[command(flatten)]
        scope: Scope,
        /// SOURCE is a block device.
        #[arg(long)]
        block: bool,
    },
}

pub fn run(client: &Client, command: DisplayCommand) -> anyhow::Result<String> {
    block_on(run_async(client, command))?
}

async fn run_async(client: &Client, command: DisplayCommand) -> anyhow::Result<String> {
    Ok(match command {
        DisplayCommand::Domdisplay {
            domain,
            display_type,
            include_password,
            all,
        } => {
            let displays = client
                .domain_displays(&domain, &DisplaysRequest { include_password })
                .await?;
            let uris: Vec<String> = displays
                .iter()
                .filter(|d| display_type.as_deref().is_none_or(|t| t == d.protocol))
                .filter_map(display_uri)
                .collect();
            match (uris.first(), all) {
                (None, _) => anyhow::bail!("No graphical display found"),
                (Some(first), false) => format!("{first}\n"),
                (Some(_), true) => uris.iter().map(|u| format!("{u}\n")).collect(),
            }
        }
        DisplayCommand::Vncdisplay { domain } => {
            let displays = client
                .domain_displays(&domain, &DisplaysRequest::default())
                .await?;
            let vnc = displays
                .iter()
                .find(|d| d.protocol == "vnc" && d.port.is_some())
                .context("Failed to get VNC port. Is this domain using VNC?")?;
            vnc_display(vnc)
        }
        DisplayCommand::Screenshot {
            domain,
            file,
            screen,
        } => {
            let shot = client
                .screenshot(&domain, &ScreenshotRequest { screen })
                .await?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&shot.base64)
                .context("oxvirtd sent a malformed screenshot")?;
            let file = match file {
                Some(file) => file,
                None => default_file_name(&client.domain_info(&domain).await?.name, &shot.mime),
            };
            std::fs::write(&file, bytes)
                .with_context(|| format!("cannot write {}", file.display()))?;
            format!(
                "Screenshot saved to {}, with type of {}\n",
                file.display(),
                shot.mime
            )
        }
        DisplayCommand::SendKey {
            domain,
            codeset,
            holdtime,
            keycode,
        } => {
            client
                .send_key(
                    &domain,
                    &SendKeyRequest {
                        codeset,
                        holdtime_ms: holdtime,
                        keys: keycode,
                    },
                )
                .await?;
            String::new()
        }
        DisplayCommand::ChangeMedia {
            domain,
            path,
            source,
            eject,
            insert,
            update: _,
            force,
            scope,
            block,
        } => {
            let action = if eject {
                MediaAction::Eject
            } else if insert {
                MediaAction::Insert
            } else {
                MediaAction::Update
            };
            client
                .change_media(
                    &domain,
                    &ChangeMediaRequest {
                        path,
                        source,
                        action,
                        block,
                        force,
                        live: scope.live,
                        config: scope.config,
                    },
                )
                .await?;
            match action {
                MediaAction::Eject => "Successfully ejected media.\n",
                MediaAction::Insert => "Successfully inserted media.\n",
                MediaAction::Update => "Successfully updated media.\n",
            }
            .to_string()
        }
    })
}

/// virsh's host part of a display URI: a wildcard address is the connection's host (local
/// here), an IPv6 address goes in brackets.
fn uri_host(listen: Option<&str>) -> String {
    match listen {
        None | Some("0.0.0.0" | "::" | "") => "localhost".to_string(),
        Some(address) if address.contains(':') => format!("[{address}]"),
        Some(address) => address.to_string(),
    }
}

/// virsh's URI of a display: `vnc://127.0.0.1:0` (VNC: the display number),
/// `spice://127.0.0.1:5900?tls-port=5901`, `vnc+unix:///path` for a UNIX socket display; with a
/// password, `:PASSWORD@` before the host (and SPICE's `password=` parameter too, as virsh).
fn display_uri(display: &GraphicsDisplay) -> Option<String> {
    let mut uri = match &display.socket {
        Some(_) => format!("{}+unix://", display.protocol),
        None => format!("{}://", display.protocol),
    };
    if let Some(password) = &display.password {
        uri.push_str(&format!(":{password}@"));
    }
    if let Some(socket) = &display.socket {
        uri.push_str(socket);
    } else {
        let port = display.port?;
        uri.push_str(&uri_host(display.listen.as_deref()));
        let shown = if display.protocol == "vnc" {
            i32::from(port) - 5900
        } else {
            i32::from(port)
        };
        uri.push_str(&format!(":{shown}"));
    }
    if let Some(tls) = display.tls_port {
        uri.push_str(&format!("?tls-port={tls}"));
    }
    if let (Some(password), "spice") = (&display.password, display.protocol.as_str()) {
        let separator = if display.tls_port.is_some() { '&' } else { '?' };
        uri.push_str(&format!("{separator}password={password}"));
    }
    Some(uri)
}

/// `vncdisplay`: `ADDRESS:DISPLAY`, or `:DISPLAY` for a server on every address.
fn vnc_display(display: &GraphicsDisplay) -> String {
    let number = i32::from(display.port.unwrap_or(5900)) - 5900;
    match display.listen.as_deref() {
        None | Some("0.0.0.0") => format!(":{number}\n"),
        Some(address) => format!("{address}:{number}\n"),
    }
}

/// virsh's default screenshot name: `DOMAIN-YYYY-MM-DD-HH:MM:SS.png` (local time).
fn default_file_name(domain: &str, mime: &str) -> PathBuf {
    let now = jiff::tz::TimeZone::system()
        .to_datetime(jiff::Timestamp::now())
        .strftime("%Y-%m-%d-%H:%M:%S")
        .to_string();
    let extension = match mime {
        "image/png" => ".png",
        "image/x-portable-pixmap" => ".ppm",
        _ => "",
    };
    PathBuf::from(format!("{domain}-{now}{extension}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn display(protocol: &str, listen: &str, port: u16) -> GraphicsDisplay {
        GraphicsDisplay {
            protocol: protocol.into(),
            listen: Some(listen.into()),
            port: Some(port),
            tls_port: None,
            socket: None,
            password: None,
        }
    }

    #[test]
    fn uris_as_virsh_prints_them() {
        assert_eq!(
            display_uri(&display("vnc", "127.0.0.1", 5901)).unwrap(),
            "vnc://127.0.0.1:1"
        );
        assert_eq!(
            display_uri(&display("vnc", "0.0.0.0", 5900)).unwrap(),
            "vnc://localhost:0"
        );
        assert_eq!(
            display_uri(&display("spice", "::1", 5930)).unwrap(),
            "spice://[::1]:5930"
        );
        let mut secret = display("vnc", "127.0.0.1", 5900);
        secret.password = Some("pw".into());
        assert_eq!(display_uri(&secret).unwrap(), "vnc://:pw@127.0.0.1:0");
        let mut spice = display("spice", "127.0.0.1", 5901);
        spice.password = Some("pw".into());
        assert_eq!(
            display_uri(&spice).unwrap(),
            "spice://:pw@127.0.0.1:5901?password=pw"
        );
        let socket = GraphicsDisplay {
            listen: None,
            port: None,
            socket: Some("/run/vnc.sock".into()),
            ..display("vnc", "", 0)
        };
        assert_eq!(display_uri(&socket).unwrap(), "vnc+unix:///run/vnc.sock");
        assert_eq!(
            vnc_display(&display("vnc", "127.0.0.1", 5902)),
            "127.0.0.1:2\n"
        );
        assert_eq!(vnc_display(&display("vnc", "0.0.0.0", 5900)), ":0\n");
        let name = default_file_name("web", "image/png");
        let name = name.to_str().unwrap();
        assert!(
            name.starts_with("web-") && name.ends_with(".png") && name.len() == 27,
            "{name}"
        );
    }
}

//! What storage pool and volume XML share: `<permissions>`, sizes with units, and the small
//! indented writer both print with.

use crate::elem::{set_once, Elem, Result};
use crate::units::{parse_decimal_u64, size_bytes_at};

/// `<permissions>` of a pool's directory or a volume's file, as libvirt writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// File mode bits, at most `0o777`.
    pub mode: Option<u32>,
    /// User id (`-1` in the XML, "unchanged", is `None`).
    pub owner: Option<u32>,
    /// Group id (`-1` is `None`).
    pub group: Option<u32>,
    /// Security label (SELinux context).
    pub label: Option<String>,
}

pub(crate) fn parse_permissions(elem: &mut Elem) -> Result<Permissions> {
    elem.finish_attrs()?;
    let mut mode = None;
    let mut owner = None;
    let mut group = None;
    let mut label = None;
    for child in elem.children()? {
        child.finish_attrs()?;
        let text = child.text()?;
        let value = text.trim();
        match child.name() {
            "mode" => {
                // libvirt: octal, permission bits only.
                let parsed = u32::from_str_radix(value, 8)
                    .ok()
                    .filter(|m| *m <= 0o777 && !value.starts_with(['+', '-']))
                    .ok_or_else(|| {
                        child.invalid("value", value, "expected octal permission bits (0 to 0777)")
                    })?;
                set_once(&mut mode, parsed, &child)?;
            }
            "owner" => set_once(&mut owner, id(&child, value)?, &child)?,
            "group" => set_once(&mut group, id(&child, value)?, &child)?,
            "label" => set_once(&mut label, value.to_string(), &child)?,
            _ => return Err(child.unsupported()),
        }
    }
    Ok(Permissions {
        mode,
        owner: owner.flatten(),
        group: group.flatten(),
        label,
    })
}

/// A user or group id; `-1` (libvirt's "leave it as it is") is `None`.
fn id(elem: &Elem, value: &str) -> Result<Option<u32>> {
    if value == "-1" {
        return Ok(None);
    }
    parse_decimal_u64(value)
        .and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| elem.invalid("value", value, "expected a numeric id or -1"))
}

/// A size element (`<capacity unit='G'>2</capacity>`) in bytes; without `unit`, bytes (as
/// libvirt reads storage sizes).
pub(crate) fn parse_size(elem: &mut Elem) -> Result<u64> {
    let unit = elem.attr("unit");
    elem.finish_attrs()?;
    let text = elem.text()?;
    size_bytes_at(&text, unit, 1, &elem.loc(), "value")
}

/// Two-space indented lines of XML.
pub(crate) struct Lines {
    pub out: String,
}

impl Lines {
    pub(crate) fn new() -> Self {
        Lines { out: String::new() }
    }

    pub(crate) fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    /// `<name>escaped text</name>`.
    pub(crate) fn text(&mut self, depth: usize, name: &str, text: &str) {
        self.line(
            depth,
            &format!("<{name}>{}</{name}>", oxvirt_xml::escape_text(text)),
        );
    }

    /// `<name unit='bytes'>n</name>`.
    pub(crate) fn bytes(&mut self, depth: usize, name: &str, bytes: u64) {
        self.line(depth, &format!("<{name} unit='bytes'>{bytes}</{name}>"));
    }

    pub(crate) fn permissions(&mut self, depth: usize, permissions: &Permissions) {
        self.line(depth, "<permissions>");
        if let Some(mode) = permissions.mode {
            self.line(depth + 1, &format!("<mode>{mode:04o}</mode>"));
        }
        if let Some(owner) = permissions.owner {
            self.line(depth + 1, &format!("<owner>{owner}</owner>"));
        }
        if let Some(group) = permissions.group {
            self.line(depth + 1, &format!("<group>{group}</group>"));
        }
        if let Some(label) = &permissions.label {
            self.text(depth + 1, "label", label);
        }
        self.line(depth, "</permissions>");
    }
}

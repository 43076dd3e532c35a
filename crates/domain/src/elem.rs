//! The strict element reader every definition parser of this crate (domain, pool, volume) is
//! built on: the document is read through `oxvirt-xml` (size, depth, attribute, node and
//! namespace limits), and each [`Elem`] remembers which attributes were read so `finish_attrs`
//! rejects the rest: nothing is dropped silently.

use oxvirt_xml::roxmltree::{Document, Node, NodeType};
use oxvirt_xml::XmlError;

use crate::error::{DomainError, Location};
use crate::model::SourceLine;
use crate::units::parse_decimal_u64;

pub(crate) type Result<T> = std::result::Result<T, DomainError>;

/// Reads untrusted definition text under the project's XML limits.
pub(crate) fn read(xml: &str) -> Result<Document<'_>> {
    oxvirt_xml::parse(xml).map_err(|err| match err {
        XmlError::Limit(limit) => DomainError::Limit(limit),
        XmlError::Malformed {
            line,
            column,
            message,
        } => DomainError::MalformedXml {
            line,
            column,
            message,
        },
    })
}

/// Namespaced children of the root element that a parser understands (oxvirt's own
/// `<oxvirt:engine>` in a domain): their namespace and the prefix used in error paths.
#[derive(Clone, Copy)]
pub(crate) struct Extension {
    pub namespace: &'static str,
    pub prefix: &'static str,
}

/// One element being parsed, with its path for error messages (relative to the root element,
/// which is named by itself: `pool`, `target/path`).
pub(crate) struct Elem<'a, 'input> {
    doc: &'a Document<'input>,
    node: Node<'a, 'input>,
    path: String,
    used: Vec<&'static str>,
    is_root: bool,
    extension: Option<Extension>,
}

impl<'a, 'input> Elem<'a, 'input> {
    /// The root element; refused unless it is `<name>` without a namespace.
    pub(crate) fn root(
        doc: &'a Document<'input>,
        name: &str,
        extension: Option<Extension>,
    ) -> Result<Self> {
        let node = doc.root_element();
        let elem = Elem {
            doc,
            node,
            path: node.tag_name().name().to_string(),
            used: Vec::new(),
            is_root: true,
            extension,
        };
        if node.tag_name().name() != name || node.tag_name().namespace().is_some() {
            return Err(elem.unsupported());
        }
        Ok(elem)
    }

    fn child(&self, node: Node<'a, 'input>, path: String) -> Self {
        Elem {
            doc: self.doc,
            node,
            path,
            used: Vec::new(),
            is_root: false,
            extension: self.extension,
        }
    }

    fn child_path(&self, name: &str) -> String {
        if self.is_root {
            name.to_string()
        } else {
            format!("{}/{}", self.path, name)
        }
    }

    pub(crate) fn name(&self) -> &'a str {
        self.node.tag_name().name()
    }

    pub(crate) fn namespace(&self) -> Option<&'a str> {
        self.node.tag_name().namespace()
    }

    /// The roxmltree node, for a subtree kept verbatim (`<metadata>`).
    pub(crate) fn node(&self) -> Node<'a, 'input> {
        self.node
    }

    pub(crate) fn line(&self) -> u32 {
        self.doc.text_pos_at(self.node.range().start).row
    }

    /// The element's line, for the model (engines point at it when they refuse the element).
    pub(crate) fn source_line(&self) -> SourceLine {
        SourceLine::at(self.line())
    }

    pub(crate) fn loc(&self) -> Location {
        Location::new(self.path.clone(), Some(self.line()))
    }

    pub(crate) fn attr(&mut self, name: &'static str) -> Option<&'a str> {
        self.used.push(name);
        self.node.attribute(name)
    }

    /// `name`'s value when `wanted`; otherwise the attribute is left unread (so
    /// `finish_attrs` refuses it as unknown there).
    pub(crate) fn attr_if(&mut self, wanted: bool, name: &'static str) -> Option<&'a str> {
        if wanted {
            self.attr(name)
        } else {
            None
        }
    }

    pub(crate) fn required_attr(&mut self, name: &'static str) -> Result<&'a str> {
        self.attr(name).ok_or_else(|| DomainError::Missing {
            what: format!("attribute '{name}'"),
            location: self.loc(),
        })
    }

    pub(crate) fn invalid(
        &self,
        attribute: &str,
        value: &str,
        reason: impl Into<String>,
    ) -> DomainError {
        DomainError::InvalidValue {
            attribute: attribute.to_string(),
            value: value.to_string(),
            reason: reason.into(),
            location: self.loc(),
        }
    }

    pub(crate) fn enum_attr<T: Copy>(
        &mut self,
        name: &'static str,
        table: &[(&str, T)],
    ) -> Result<Option<T>> {
        match self.attr(name) {
            None => Ok(None),
            Some(value) => lookup(table, value)
                .map(Some)
                .ok_or_else(|| self.enum_error(&format!("attribute '{name}'"), value, table)),
        }
    }

    pub(crate) fn enum_error<T>(
        &self,
        what: &str,
        value: &str,
        table: &[(&str, T)],
    ) -> DomainError {
        DomainError::InvalidEnumValue {
            attribute: what.to_string(),
            value: value.to_string(),
            allowed: table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            location: self.loc(),
        }
    }

    /// A value libvirt knows but oxvirt does not implement.
    pub(crate) fn unsupported_value<T>(
        &self,
        what: &str,
        value: &str,
        table: &[(&str, T)],
    ) -> DomainError {
        DomainError::UnsupportedValue {
            attribute: what.to_string(),
            value: value.to_string(),
            supported: table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            location: self.loc(),
        }
    }

    pub(crate) fn u32_attr(&mut self, name: &'static str) -> Result<Option<u32>> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => parse_decimal_u64(v.trim())
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    self.invalid(
                        &format!("attribute '{name}'"),
                        v,
                        "expected an unsigned 32-bit integer",
                    )
                }),
        }
    }

    /// An integer in C `strtoul(.., 0)` syntax (`0x` hex, leading `0` octal), as libvirt
    /// accepts for address fields.
    pub(crate) fn c_uint_attr(&mut self, name: &'static str, max: u64) -> Result<Option<u64>> {
        match self.attr(name) {
            None => Ok(None),
            Some(v) => parse_c_uint(v.trim())
                .filter(|n| *n <= max)
                .map(Some)
                .ok_or_else(|| {
                    self.invalid(
                        &format!("attribute '{name}'"),
                        v,
                        format!("expected an integer from 0 to {max:#x}"),
                    )
                }),
        }
    }

    pub(crate) fn yes_no_attr(&mut self, name: &'static str) -> Result<Option<bool>> {
        self.enum_attr(name, &[("yes", true), ("no", false)])
    }

    pub(crate) fn on_off_attr(&mut self, name: &'static str) -> Result<Option<bool>> {
        self.enum_attr(name, &[("on", true), ("off", false)])
    }

    /// Rejects any attribute that was not read.
    pub(crate) fn finish_attrs(&self) -> Result<()> {
        for attr in self.node.attributes() {
            if attr.namespace().is_some() || !self.used.contains(&attr.name()) {
                let name = match attr.namespace() {
                    Some(ns) => format!("{{{ns}}}{}", attr.name()),
                    None => attr.name().to_string(),
                };
                return Err(DomainError::UnsupportedAttribute {
                    attribute: name,
                    location: self.loc(),
                });
            }
        }
        Ok(())
    }

    /// Element children; non-blank text between them is an error.
    pub(crate) fn children(&self) -> Result<Vec<Elem<'a, 'input>>> {
        let mut out = Vec::new();
        for child in self.node.children() {
            match child.node_type() {
                NodeType::Element => {
                    let name = child.tag_name().name();
                    let namespace = child.tag_name().namespace();
                    let extension = self
                        .extension
                        .filter(|e| self.is_root && namespace == Some(e.namespace));
                    let path = match extension {
                        Some(e) => format!("{}:{name}", e.prefix),
                        None => self.child_path(name),
                    };
                    let elem = self.child(child, path);
                    if namespace.is_some() && extension.is_none() {
                        return Err(elem.unsupported());
                    }
                    out.push(elem);
                }
                NodeType::Text => {
                    let text = child.text().unwrap_or("");
                    if !text.trim().is_empty() {
                        return Err(DomainError::UnexpectedText {
                            text: truncate(text.trim()),
                            location: self.loc(),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// An element with no children at all (attributes only).
    pub(crate) fn leaf(&self) -> Result<()> {
        if let Some(child) = self.children()?.into_iter().next() {
            return Err(child.unsupported());
        }
        Ok(())
    }

    /// The element's text (no child elements allowed); not trimmed.
    pub(crate) fn text(&self) -> Result<String> {
        let mut text = String::new();
        for child in self.node.children() {
            match child.node_type() {
                NodeType::Element => {
                    let path = self.child_path(child.tag_name().name());
                    return Err(self.child(child, path).unsupported());
                }
                NodeType::Text => text.push_str(child.text().unwrap_or("")),
                _ => {}
            }
        }
        Ok(text)
    }

    /// The text of a `<name>` element (no attributes), checked by `validate`, whose error is
    /// located at this element.
    pub(crate) fn name_text(&self, validate: fn(&str) -> Result<()>) -> Result<String> {
        self.finish_attrs()?;
        let value = self.text()?.trim().to_string();
        validate(&value).map_err(|err| match err {
            DomainError::InvalidName {
                what, name, reason, ..
            } => DomainError::InvalidName {
                what,
                name,
                reason,
                location: self.loc(),
            },
            other => other,
        })?;
        Ok(value)
    }

    /// The text of a `<uuid>` element (no attributes) as a UUID.
    pub(crate) fn uuid_text(&self) -> Result<uuid::Uuid> {
        self.finish_attrs()?;
        let text = self.text()?;
        crate::rules::parse_uuid(text.trim()).ok_or_else(|| {
            self.invalid(
                "value",
                text.trim(),
                "expected a UUID like c7a5fdbd-edaf-9455-926a-d65c16db1809",
            )
        })
    }

    pub(crate) fn text_u64(&self) -> Result<u64> {
        let text = self.text()?;
        parse_decimal_u64(text.trim())
            .ok_or_else(|| self.invalid("value", text.trim(), "expected an unsigned integer"))
    }

    pub(crate) fn text_u32(&self) -> Result<u32> {
        let n = self.text_u64()?;
        u32::try_from(n).map_err(|_| self.invalid("value", &n.to_string(), "too large"))
    }

    pub(crate) fn text_i64(&self) -> Result<i64> {
        let text = self.text()?;
        let t = text.trim();
        let (neg, digits) = match t.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, t),
        };
        let n = parse_decimal_u64(digits)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| self.invalid("value", t, "expected an integer"))?;
        Ok(if neg { -n } else { n })
    }

    pub(crate) fn text_enum<T: Copy>(&self, table: &[(&str, T)]) -> Result<T> {
        let text = self.text()?;
        lookup(table, text.trim()).ok_or_else(|| self.enum_error("value", text.trim(), table))
    }

    pub(crate) fn unsupported(&self) -> DomainError {
        DomainError::UnsupportedElement {
            location: self.loc(),
        }
    }

    pub(crate) fn duplicate(&self) -> DomainError {
        DomainError::Duplicate {
            location: self.loc(),
        }
    }

    pub(crate) fn missing(&self, what: impl Into<String>) -> DomainError {
        DomainError::Missing {
            what: what.into(),
            location: self.loc(),
        }
    }
}

pub(crate) fn truncate(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

pub(crate) fn lookup<T: Copy>(table: &[(&str, T)], value: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == value).map(|(_, v)| *v)
}

fn parse_c_uint(text: &str) -> Option<u64> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else if text.len() > 1 && text.starts_with('0') {
        if !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return None;
        }
        u64::from_str_radix(&text[1..], 8).ok()
    } else {
        parse_decimal_u64(text)
    }
}

/// Stores `value` into a singleton slot, rejecting a second occurrence.
pub(crate) fn set_once<T>(slot: &mut Option<T>, value: T, elem: &Elem) -> Result<()> {
    if slot.is_some() {
        return Err(elem.duplicate());
    }
    *slot = Some(value);
    Ok(())
}

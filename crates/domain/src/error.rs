//! Errors: each says what was wrong and where (element path and, when parsing, the line).

use std::fmt;

/// Where in a definition a problem is: the element path below the root element (e.g.
/// `devices/disk/driver` in a domain, `target/path` in a pool; the root is named by itself, as
/// `domain`) and its line when parsed from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: String,
    pub line: Option<u32>,
}

impl Location {
    pub fn new(path: impl Into<String>, line: Option<u32>) -> Self {
        Location {
            path: path.into(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "<{}> at line {line}", self.path),
            None => write!(f, "<{}>", self.path),
        }
    }
}

/// What is wrong with a definition: of a domain, and also of a storage pool or volume
/// ([`crate::pool`], [`crate::volume`]), which are read the same strict way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The text breaks one of the XML limits (size, nesting, attributes, nodes, namespaces).
    #[error("{0}")]
    Limit(oxvirt_xml::LimitError),
    /// The text is not well-formed XML.
    #[error("malformed XML at line {line}, column {column}: {message}")]
    MalformedXml {
        line: u32,
        column: u32,
        message: String,
    },
    /// An element oxvirt does not model.
    #[error("unsupported element {location}")]
    UnsupportedElement { location: Location },
    /// An attribute oxvirt does not model.
    #[error("unsupported attribute '{attribute}' on {location}")]
    UnsupportedAttribute {
        attribute: String,
        location: Location,
    },
    /// Text content where oxvirt expects none (or text in an element that takes none).
    #[error("unexpected text '{text}' in {location}")]
    UnexpectedText { text: String, location: Location },
    /// A value outside its enumeration.
    #[error("invalid value '{value}' for {attribute} on {location}; allowed: {allowed}")]
    InvalidEnumValue {
        attribute: String,
        value: String,
        allowed: String,
        location: Location,
    },
    /// A value libvirt knows that oxvirt does not implement (e.g. a pool type other than `dir`).
    #[error("unsupported value '{value}' for {attribute} on {location}; supported: {supported}")]
    UnsupportedValue {
        attribute: String,
        value: String,
        supported: String,
        location: Location,
    },
    /// A value that does not parse or is out of range.
    #[error("invalid value '{value}' for {attribute} on {location}: {reason}")]
    InvalidValue {
        attribute: String,
        value: String,
        reason: String,
        location: Location,
    },
    /// A required element or attribute is absent.
    #[error("missing {what} in {location}")]
    Missing { what: String, location: Location },
    /// An element that may appear once appears again.
    #[error("duplicate element {location}")]
    Duplicate { location: Location },
    /// A name (of a domain, storage pool or storage volume: `what`) breaks the naming rules.
    #[error("invalid {what} name '{name}' in {location}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: String,
        location: Location,
    },
    /// The definition parses but is inconsistent (e.g. topology does not match vcpus).
    #[error("invalid definition at {location}: {reason}")]
    Invalid { reason: String, location: Location },
}

impl DomainError {
    /// The line the error refers to, when known.
    pub fn line(&self) -> Option<u32> {
        match self {
            DomainError::MalformedXml { line, .. } => Some(*line),
            DomainError::Limit(limit) => limit.line,
            DomainError::UnsupportedElement { location }
            | DomainError::UnsupportedAttribute { location, .. }
            | DomainError::UnexpectedText { location, .. }
            | DomainError::InvalidEnumValue { location, .. }
            | DomainError::UnsupportedValue { location, .. }
            | DomainError::InvalidValue { location, .. }
            | DomainError::Missing { location, .. }
            | DomainError::Duplicate { location }
            | DomainError::Invalid { location, .. }
            | DomainError::InvalidName { location, .. } => location.line,
        }
    }

    /// True for "oxvirt does not model this" (as opposed to "this is wrong").
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            DomainError::UnsupportedElement { .. }
                | DomainError::UnsupportedAttribute { .. }
                | DomainError::UnsupportedValue { .. }
        )
    }
}

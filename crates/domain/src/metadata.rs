//! `<metadata>`: other applications' data in a domain (virt-install's
//! `<libosinfo:libosinfo>`, virt-manager's, ...). libvirt keeps it verbatim and never interprets
//! it; so does oxvirt: the subtree is copied into an owned tree ([`Metadata`]) and printed back
//! as libvirt prints it (libxml2's `xmlNodeDump`: double-quoted attributes, namespace
//! declarations before the attributes, children indented unless an element holds text).
//!
//! What libvirt 9.0 does with the subtree (found with `scripts/libvirt-references.sh`, the
//! `metadata-*` cases) and oxvirt with it:
//! - each child of `<metadata>` is an element in its own namespace: kept, with everything inside
//!   (text, comments, processing instructions, elements of any namespace or none);
//! - a namespace declared on `<domain>` and used inside is declared on `<metadata>` (libxml2's
//!   copy of the node reconciles it there); one declared on `<metadata>` stays there;
//! - blank text between elements is not kept (libvirt parses without blanks and re-indents);
//! - comments directly under `<metadata>` are dropped (libvirt too; they are no data);
//! - libvirt silently drops a child without a namespace, text directly under `<metadata>`, a
//!   second child in a namespace already used, and a second `<metadata>`. oxvirt never drops
//!   data silently: it refuses each of them (stricter than libvirt; listed in `tests/cases.rs`).
//!
//! This module reads from roxmltree nodes and writes text; it knows nothing else of the domain.

use oxvirt_xml::roxmltree::{Node, NodeType};

use crate::error::{DomainError, Location};
use crate::model::{Metadata, XmlAttribute, XmlElement, XmlNamespace, XmlNode};

type Result<T> = std::result::Result<T, DomainError>;

fn line_of(node: Node) -> u32 {
    node.document().text_pos_at(node.range().start).row
}

fn invalid(node: Node, path: &str, value: &str, reason: &str) -> DomainError {
    DomainError::InvalidValue {
        attribute: "element".to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
        location: Location::new(path, Some(line_of(node))),
    }
}

/// The names of the namespace declarations (`xmlns`, `xmlns:p`) written in an element's start
/// tag, in order. roxmltree does not list them as attributes; the text was checked well-formed
/// by roxmltree already, so a simple scan of the start tag is enough.
fn declared_prefixes<'i>(node: Node<'_, 'i>) -> Vec<Option<&'i str>> {
    let text = node.document().input_text();
    let Some(tag) = text.get(node.range().start..) else {
        return Vec::new();
    };
    let bytes = tag.as_bytes();
    // Skip '<' and the element's name.
    let mut i = 1;
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'/' && bytes[i] != b'>'
    {
        i += 1;
    }
    let mut out = Vec::new();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'/' || bytes[i] == b'>' {
            return out;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let name = &tag[start..i];
        while i < bytes.len() && bytes[i] != b'\'' && bytes[i] != b'"' {
            i += 1;
        }
        let Some(&quote) = bytes.get(i) else {
            return out;
        };
        i += 1;
        while i < bytes.len() && bytes[i] != quote {
            i += 1;
        }
        i += 1;
        if name == "xmlns" {
            out.push(None);
        } else if let Some(prefix) = name.strip_prefix("xmlns:") {
            out.push(Some(prefix));
        }
    }
}

/// The element's name as written (`libosinfo:os`): the first name in its start tag.
fn qualified_name(node: Node) -> String {
    let text = node.document().input_text();
    let start = node.range().start + 1;
    let rest = text.get(start..).unwrap_or("");
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    rest[..end].to_string()
}

fn declarations(node: Node) -> Vec<XmlNamespace> {
    declared_prefixes(node)
        .into_iter()
        .filter_map(|prefix| {
            let uri = node.lookup_namespace_uri(prefix)?;
            Some(XmlNamespace {
                prefix: prefix.map(str::to_string),
                uri: uri.to_string(),
            })
        })
        .collect()
}

/// The prefix of a qualified name (`a` of `a:b`), `None` without one.
fn prefix_of(qname: &str) -> Option<&str> {
    qname.split_once(':').map(|(p, _)| p)
}

/// Reads `<metadata>` (`node`, at `path` for messages).
pub(crate) fn parse(node: Node, path: &str) -> Result<Metadata> {
    let mut metadata = Metadata {
        namespaces: declarations(node),
        children: Vec::new(),
        line: crate::model::SourceLine::at(line_of(node)),
    };
    if let Some(attr) = node.attributes().next() {
        return Err(DomainError::UnsupportedAttribute {
            attribute: attr.name().to_string(),
            location: Location::new(path, Some(line_of(node))),
        });
    }
    let mut used: Vec<&str> = Vec::new();
    for child in node.children() {
        match child.node_type() {
            NodeType::Element => {
                let name = qualified_name(child);
                let child_path = format!("{path}/{name}");
                let Some(namespace) = child.tag_name().namespace() else {
                    return Err(invalid(
                        child,
                        &child_path,
                        &name,
                        "each child of <metadata> needs its own XML namespace \
                         (libvirt drops one without)",
                    ));
                };
                if used.contains(&namespace) {
                    return Err(invalid(
                        child,
                        &child_path,
                        &name,
                        "a second child of <metadata> in the same XML namespace \
                         (libvirt keeps only the first)",
                    ));
                }
                used.push(namespace);
                // oxvirt's own element is data oxvirt reads (the cluster's placement): checked
                // here, kept verbatim like the others.
                if namespace == crate::model::OXVIRT_NAMESPACE {
                    crate::placement::check(child, &child_path)?;
                }
                metadata.children.push(read_element(child));
            }
            NodeType::Text => {
                let text = child.text().unwrap_or("");
                if !text.trim().is_empty() {
                    return Err(DomainError::UnexpectedText {
                        text: crate::elem::truncate(text.trim()),
                        location: Location::new(path, Some(line_of(node))),
                    });
                }
            }
            // Comments and processing instructions directly under <metadata>: libvirt drops
            // them too; they carry no application's data.
            _ => {}
        }
    }
    // Namespaces declared outside <metadata> (on <domain>) that the subtree uses: libvirt's
    // copy of the subtree declares them on <metadata>, in the order they are first used.
    let mut outside = Vec::new();
    for child in &metadata.children {
        collect_outside(
            child,
            node,
            &mut Vec::new(),
            &metadata.namespaces,
            &mut outside,
        );
    }
    metadata.namespaces.extend(outside);
    Ok(metadata)
}

/// Prefixes used in `element` (its own name, then its attributes, then its children) that are
/// declared neither inside the subtree (`scope`) nor on `<metadata>` (`on_metadata`): their
/// declaration comes from `<domain>`, looked up at `metadata_node`.
fn collect_outside(
    element: &XmlElement,
    metadata_node: Node,
    scope: &mut Vec<Option<String>>,
    on_metadata: &[XmlNamespace],
    out: &mut Vec<XmlNamespace>,
) {
    let pushed = element.namespaces.len();
    scope.extend(element.namespaces.iter().map(|n| n.prefix.clone()));
    let mut prefixes: Vec<Option<&str>> = Vec::new();
    prefixes.push(prefix_of(&element.name));
    for attr in &element.attributes {
        if let Some(p) = prefix_of(&attr.name) {
            prefixes.push(Some(p));
        }
    }
    for prefix in prefixes {
        // `xml:` is predeclared; an unprefixed attribute has no namespace.
        if prefix == Some("xml") {
            continue;
        }
        let known = scope.iter().any(|p| p.as_deref() == prefix)
            || on_metadata.iter().any(|n| n.prefix.as_deref() == prefix)
            || out
                .iter()
                .any(|n: &XmlNamespace| n.prefix.as_deref() == prefix);
        if known {
            continue;
        }
        if let Some(uri) = metadata_node.lookup_namespace_uri(prefix) {
            out.push(XmlNamespace {
                prefix: prefix.map(str::to_string),
                uri: uri.to_string(),
            });
        }
    }
    for child in &element.children {
        if let XmlNode::Element(e) = child {
            collect_outside(e, metadata_node, scope, on_metadata, out);
        }
    }
    scope.truncate(scope.len() - pushed);
}

fn read_element(node: Node) -> XmlElement {
    let text = node.document().input_text();
    let attributes = node
        .attributes()
        .map(|a| XmlAttribute {
            name: text.get(a.range_qname()).unwrap_or(a.name()).to_string(),
            value: a.value().to_string(),
        })
        .collect();
    let mut children = Vec::new();
    // libvirt parses without blank text (and re-indents) unless the element holds text.
    let mixed = node
        .children()
        .any(|c| c.is_text() && !c.text().unwrap_or("").trim().is_empty());
    for child in node.children() {
        match child.node_type() {
            NodeType::Element => children.push(XmlNode::Element(read_element(child))),
            NodeType::Text => {
                let t = child.text().unwrap_or("");
                if mixed || !t.trim().is_empty() {
                    children.push(XmlNode::Text(t.to_string()));
                }
            }
            NodeType::Comment => {
                children.push(XmlNode::Comment(child.text().unwrap_or("").to_string()))
            }
            NodeType::PI => {
                if let Some(pi) = child.pi() {
                    children.push(XmlNode::ProcessingInstruction {
                        target: pi.target.to_string(),
                        value: pi.value.map(str::to_string),
                    });
                }
            }
            NodeType::Root => {}
        }
    }
    XmlElement {
        name: qualified_name(node),
        namespaces: declarations(node),
        attributes,
        children,
    }
}

/// libxml2's escaping of text: `&`, `<`, `>`, and CR.
fn escape_text(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

/// libxml2's escaping of attribute values (double-quoted): also `"`, newline, CR and tab.
fn escape_attr(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
}

fn push_declarations(namespaces: &[XmlNamespace], out: &mut String) {
    for ns in namespaces {
        match &ns.prefix {
            Some(p) => {
                out.push_str(" xmlns:");
                out.push_str(p);
            }
            None => out.push_str(" xmlns"),
        }
        out.push_str("=\"");
        escape_attr(&ns.uri, out);
        out.push('"');
    }
}

fn indent(depth: usize, out: &mut String) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Prints `<metadata>` at `depth` (two spaces a level), as `virsh dumpxml` does.
pub(crate) fn write(metadata: &Metadata, depth: usize, out: &mut String) {
    indent(depth, out);
    out.push_str("<metadata");
    push_declarations(&metadata.namespaces, out);
    if metadata.children.is_empty() {
        out.push_str("/>\n");
        return;
    }
    out.push_str(">\n");
    for child in &metadata.children {
        indent(depth + 1, out);
        write_element(child, depth + 1, true, out);
        out.push('\n');
    }
    indent(depth, out);
    out.push_str("</metadata>\n");
}

/// One element; `format` is libxml2's: children on their own indented lines, which it turns
/// off inside an element that holds text.
fn write_element(element: &XmlElement, depth: usize, format: bool, out: &mut String) {
    out.push('<');
    out.push_str(&element.name);
    push_declarations(&element.namespaces, out);
    for attr in &element.attributes {
        out.push(' ');
        out.push_str(&attr.name);
        out.push_str("=\"");
        escape_attr(&attr.value, out);
        out.push('"');
    }
    if element.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    let format = format
        && !element
            .children
            .iter()
            .any(|c| matches!(c, XmlNode::Text(_)));
    for child in &element.children {
        if format {
            out.push('\n');
            indent(depth + 1, out);
        }
        match child {
            XmlNode::Element(e) => write_element(e, depth + 1, format, out),
            XmlNode::Text(t) => escape_text(t, out),
            XmlNode::Comment(c) => {
                out.push_str("<!--");
                out.push_str(c);
                out.push_str("-->");
            }
            XmlNode::ProcessingInstruction { target, value } => {
                out.push_str("<?");
                out.push_str(target);
                if let Some(v) = value {
                    out.push(' ');
                    out.push_str(v);
                }
                out.push_str("?>");
            }
        }
    }
    if format {
        out.push('\n');
        indent(depth, out);
    }
    out.push_str("</");
    out.push_str(&element.name);
    out.push('>');
}

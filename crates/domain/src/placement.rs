//! `<metadata><oxvirt:placement group='G' policy='spread'><oxvirt:ha/></oxvirt:placement></metadata>`:
//! where the cluster may run a guest (docs/cluster.md). It lives in `<metadata>`, which is kept
//! verbatim (metadata.rs), so `dumpxml` prints it back as written; this module only checks it
//! when the definition is read (a bad value is refused naming the element and its line) and
//! reads it back from the kept copy for the cluster.
//!
//! `<metadata>` holds one element per namespace, so high availability (`<oxvirt:ha/>`) is a
//! child of `<oxvirt:placement>` rather than an element of its own.

use oxvirt_xml::roxmltree::{Node, NodeType};

use crate::error::{DomainError, Location};
use crate::model::{Domain, Metadata, XmlElement, XmlNode, OXVIRT_NAMESPACE};

/// How a guest is placed among the cluster's hosts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// `group='G'`: the anti-affinity group.
    pub group: Option<String>,
    /// `policy='spread'`: never on a host that runs another guest of the group while a host
    /// without one can take it.
    pub spread: bool,
    /// `<oxvirt:ha/>`: restarted on another host when its host's lease expires.
    pub ha: bool,
}

/// The policies `policy=` takes.
const POLICIES: &str = "spread";

fn line_of(node: Node) -> u32 {
    node.document().text_pos_at(node.range().start).row
}

/// Checks an element of oxvirt's namespace under `<metadata>` (`node`, at `path`).
pub(crate) fn check(node: Node, path: &str) -> Result<(), DomainError> {
    let location = |node: Node, path: &str| Location::new(path, Some(line_of(node)));
    if node.tag_name().name() != "placement" {
        return Err(DomainError::UnsupportedElement {
            location: location(node, path),
        });
    }
    let mut group = None;
    let mut policy = None;
    for attr in node.attributes() {
        match (attr.namespace(), attr.name()) {
            (None, "group") => group = Some(attr.value()),
            (None, "policy") => policy = Some(attr.value()),
            _ => {
                return Err(DomainError::UnsupportedAttribute {
                    attribute: attr.name().to_string(),
                    location: location(node, path),
                })
            }
        }
    }
    if let Some(group) = group {
        let ok = !group.is_empty()
            && group.len() <= 63
            && group
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(DomainError::InvalidValue {
                attribute: "group".to_string(),
                value: group.to_string(),
                reason: "a group is 1 to 63 letters, digits, '-', '_' or '.'".to_string(),
                location: location(node, path),
            });
        }
    }
    if let Some(policy) = policy {
        if policy != "spread" {
            return Err(DomainError::InvalidEnumValue {
                attribute: "policy".to_string(),
                value: policy.to_string(),
                allowed: POLICIES.to_string(),
                location: location(node, path),
            });
        }
        if group.is_none() {
            return Err(DomainError::Missing {
                what: "attribute 'group' (policy='spread' spreads the guests of a group)"
                    .to_string(),
                location: location(node, path),
            });
        }
    }
    let mut ha = false;
    for child in node.children() {
        match child.node_type() {
            NodeType::Element => {
                let child_path = format!("{path}/{}", child.tag_name().name());
                let known = child.tag_name().namespace() == Some(OXVIRT_NAMESPACE)
                    && child.tag_name().name() == "ha"
                    && !ha;
                if !known {
                    return Err(DomainError::UnsupportedElement {
                        location: location(child, &child_path),
                    });
                }
                if let Some(attr) = child.attributes().next() {
                    return Err(DomainError::UnsupportedAttribute {
                        attribute: attr.name().to_string(),
                        location: location(child, &child_path),
                    });
                }
                if child.children().any(|c| !c.is_text() || !blank(c)) {
                    return Err(DomainError::UnsupportedElement {
                        location: location(child, &child_path),
                    });
                }
                ha = true;
            }
            NodeType::Text if !blank(child) => {
                return Err(DomainError::UnexpectedText {
                    text: crate::elem::truncate(child.text().unwrap_or("").trim()),
                    location: location(node, path),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

fn blank(node: Node) -> bool {
    node.text().unwrap_or("").trim().is_empty()
}

/// The namespace URI `prefix` stands for at `element`, declared on it or on `<metadata>`
/// (metadata.rs moves a declaration made on `<domain>` there).
fn namespace_of<'a>(
    metadata: &'a Metadata,
    element: &'a XmlElement,
    prefix: Option<&str>,
) -> Option<&'a str> {
    element
        .namespaces
        .iter()
        .chain(&metadata.namespaces)
        .find(|n| n.prefix.as_deref() == prefix)
        .map(|n| n.uri.as_str())
}

fn split(qname: &str) -> (Option<&str>, &str) {
    match qname.split_once(':') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, qname),
    }
}

impl Domain {
    /// `<oxvirt:placement>` of the domain's `<metadata>`, checked when it was parsed.
    pub fn placement(&self) -> Option<Placement> {
        let metadata = self.metadata.as_ref()?;
        let element = metadata.children.iter().find(|e| {
            let (prefix, local) = split(&e.name);
            local == "placement" && namespace_of(metadata, e, prefix) == Some(OXVIRT_NAMESPACE)
        })?;
        let attr = |name: &str| {
            element
                .attributes
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.value.clone())
        };
        let ha = element.children.iter().any(|child| match child {
            XmlNode::Element(e) => split(&e.name).1 == "ha",
            _ => false,
        });
        Some(Placement {
            group: attr("group"),
            spread: attr("policy").as_deref() == Some("spread"),
            ha,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::parse_domain_xml;

    fn domain(metadata: &str) -> String {
        format!(
            "<domain type='qemu'><name>g</name><memory>65536</memory>\
             <os><type>hvm</type></os><metadata>{metadata}</metadata></domain>"
        )
    }

    const NS: &str = "xmlns:oxvirt='urn:oxvirt:domain:1.0'";

    #[test]
    fn placement_is_read_and_printed_back() {
        let xml = domain(&format!(
            "<oxvirt:placement {NS} group='web' policy='spread'><oxvirt:ha/></oxvirt:placement>"
        ));
        let parsed = parse_domain_xml(&xml).unwrap();
        let placement = parsed.placement().unwrap();
        assert_eq!(placement.group.as_deref(), Some("web"));
        assert!(placement.spread && placement.ha);
        let written = parsed.to_xml();
        assert!(
            written.contains("<oxvirt:placement")
                && written.contains("group=\"web\"")
                && written.contains("<oxvirt:ha/>"),
            "{written}"
        );
        // Read again: the same placement.
        let again = parse_domain_xml(&written).unwrap();
        assert_eq!(again.placement(), Some(placement));

        // Declared on <domain>: the same.
        let on_domain = format!(
            "<domain type='qemu' {NS}><name>g</name><memory>65536</memory>\
             <os><type>hvm</type></os><metadata><oxvirt:placement group='db'/></metadata></domain>"
        );
        let parsed = parse_domain_xml(&on_domain).unwrap();
        assert_eq!(parsed.placement().unwrap().group.as_deref(), Some("db"));
        assert!(!parsed.placement().unwrap().spread);

        // Other applications' metadata is no placement.
        let other = domain("<x:placement xmlns:x='urn:other' group='web'/>");
        assert_eq!(parse_domain_xml(&other).unwrap().placement(), None);
    }

    #[test]
    fn bad_placement_is_refused_naming_the_element() {
        for (metadata, needle) in [
            (
                format!("<oxvirt:placement {NS} group='web' policy='pack'/>"),
                "'pack' for policy on <metadata/oxvirt:placement> at line 1",
            ),
            (
                format!("<oxvirt:placement {NS} policy='spread'/>"),
                "attribute 'group'",
            ),
            (
                format!("<oxvirt:placement {NS} group='a b'/>"),
                "'a b' for group",
            ),
            (
                format!("<oxvirt:placement {NS} weight='3'/>"),
                "unsupported attribute 'weight'",
            ),
            (format!("<oxvirt:affinity {NS}/>"), "oxvirt:affinity"),
            (
                format!("<oxvirt:placement {NS}><oxvirt:ha/><oxvirt:ha/></oxvirt:placement>"),
                "unsupported element <metadata/oxvirt:placement/ha>",
            ),
        ] {
            let err = parse_domain_xml(&domain(&metadata))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{metadata}: {err}");
        }
    }
}

//! Small questions about a definition's XML text that its parsed model cannot answer (parsing
//! fills in what the text left out).

/// Whether the XML text has a `<uuid>` child of its root (parsing generates one otherwise).
pub fn names_uuid(xml: &str) -> bool {
    oxvirt_xml::parse(xml)
        .map(|doc| {
            doc.root_element()
                .children()
                .any(|c| c.has_tag_name("uuid"))
        })
        .unwrap_or(false)
}

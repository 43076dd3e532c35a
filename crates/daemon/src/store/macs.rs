//! `domain_macs`: the MAC addresses of stored and live definitions, indexed, so a uniqueness
//! check reads one row instead of parsing every definition.

use oxvirt_domain::MacAddr;
use rusqlite::{params, OptionalExtension, Transaction};
use uuid::Uuid;

// ---- MAC addresses (`domain_macs`) ----

/// The MAC addresses a domain definition gives its interfaces
/// (`<devices><interface><mac address>`), read without validating the rest: what reserves a MAC
/// is that a definition names it. An address that is not a MAC is skipped (such a definition
/// never passed parsing); XML that is not well-formed is an error.
pub fn macs_of_xml(xml: &str) -> Result<Vec<MacAddr>, oxvirt_xml::XmlError> {
    let doc = oxvirt_xml::parse(xml)?;
    Ok(doc
        .root_element()
        .children()
        .filter(|c| c.has_tag_name("devices"))
        .flat_map(|devices| devices.children().filter(|c| c.has_tag_name("interface")))
        .flat_map(|iface| iface.children().filter(|c| c.has_tag_name("mac")))
        .filter_map(|mac| mac.attribute("address"))
        .filter_map(|text| oxvirt_domain::parse_mac(text).ok())
        .collect())
}

/// Replaces the indexed MACs of domain `uuid`'s stored (`live` false) or live definition.
pub(crate) fn index_macs(
    tx: &Transaction<'_>,
    uuid: &str,
    live: bool,
    xml: &str,
) -> rusqlite::Result<()> {
    // A definition whose MACs cannot be read would reserve none: refuse to store it.
    let macs =
        macs_of_xml(xml).map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
    unindex_macs(tx, uuid, live)?;
    let mut insert = tx.prepare_cached(
        "INSERT OR IGNORE INTO domain_macs (mac, uuid, live) VALUES (?1, ?2, ?3)",
    )?;
    for mac in macs {
        insert.execute(params![mac.to_string(), uuid, live])?;
    }
    Ok(())
}

pub(super) fn unindex_macs(tx: &Transaction<'_>, uuid: &str, live: bool) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM domain_macs WHERE uuid = ?1 AND live = ?2",
        params![uuid, live],
    )?;
    Ok(())
}

/// Indexes the MACs of the live definition of running domain `uuid` (hot-plugged NICs included);
/// call in the transaction that writes that definition.
pub fn index_live_macs(tx: &Transaction<'_>, uuid: &Uuid, xml: &str) -> rusqlite::Result<()> {
    index_macs(tx, &uuid.to_string(), true, xml)
}

/// Forgets the MACs of domain `uuid`'s live definition (the guest is gone).
pub fn unindex_live_macs(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<()> {
    unindex_macs(tx, &uuid.to_string(), true)
}

/// The name of a domain whose stored or live definition has `mac` (its uuid if it has no stored
/// definition any more), leaving out the domain `except` (uuid, name): the one being defined.
pub fn mac_user(
    tx: &Transaction<'_>,
    mac: MacAddr,
    except: Option<(&Uuid, &str)>,
) -> rusqlite::Result<Option<String>> {
    let (uuid, name) = match except {
        Some((uuid, name)) => (Some(uuid.to_string()), Some(name)),
        None => (None, None),
    };
    tx.prepare_cached(
        "SELECT COALESCE(d.name, m.uuid) FROM domain_macs m
         LEFT JOIN domains d ON d.uuid = m.uuid
         WHERE m.mac = ?1 AND (?2 IS NULL OR (m.uuid != ?2 AND d.name IS NOT ?3))
         LIMIT 1",
    )?
    .query_row(params![mac.to_string(), uuid, name], |row| row.get(0))
    .optional()
}

/// A MAC address that domain `uuid` shares with another domain, and that domain's name: the
/// last word on uniqueness, inside the transaction that stores a definition, for two defines
/// that checked at the same time.
pub fn mac_clash(tx: &Transaction<'_>, uuid: &Uuid) -> rusqlite::Result<Option<(String, String)>> {
    tx.prepare_cached(
        "SELECT a.mac, COALESCE(d.name, b.uuid) FROM domain_macs a
         JOIN domain_macs b ON b.mac = a.mac AND b.uuid != a.uuid
         LEFT JOIN domains d ON d.uuid = b.uuid
         WHERE a.uuid = ?1
         LIMIT 1",
    )?
    .query_row(params![uuid.to_string()], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })
    .optional()
}

//! `<sysinfo type='smbios'>` with `<system>` entries, and `<os><smbios mode=...>`: the SMBIOS
//! strings a guest reads. virt-install's cloud-init install puts `serial=ds=nocloud` there, so
//! cloud-init's NoCloud datasource looks for its seed. Other SMBIOS tables (`<bios>`,
//! `<baseBoard>`, `<chassis>`, `<oemStrings>`) and other sysinfo types are refused.

use crate::elem::{set_once, Elem};
use crate::error::DomainError;
use crate::model::{SmbiosMode, SourceLine, Sysinfo};

type Result<T> = std::result::Result<T, DomainError>;

/// The `<system>` entry names libvirt takes, in the order it prints them.
pub const SYSTEM_ENTRIES: &[&str] = &[
    "manufacturer",
    "product",
    "version",
    "serial",
    "uuid",
    "sku",
    "family",
];

pub const SMBIOS_MODES: &[(&str, SmbiosMode)] = &[
    ("emulate", SmbiosMode::Emulate),
    ("host", SmbiosMode::Host),
    ("sysinfo", SmbiosMode::Sysinfo),
];

pub(crate) fn parse(elem: &mut Elem) -> Result<Sysinfo> {
    let kind = elem.required_attr("type")?;
    match kind {
        "smbios" => {}
        // libvirt's other type: firmware config files, which oxvirt does not model.
        "fwcfg" => return Err(elem.unsupported_value("attribute 'type'", kind, &[("smbios", ())])),
        _ => {
            return Err(elem.enum_error("attribute 'type'", kind, &[("smbios", ()), ("fwcfg", ())]))
        }
    }
    elem.finish_attrs()?;
    let mut system: Option<Vec<(String, String)>> = None;
    for child in elem.children()? {
        match child.name() {
            "system" => {
                child.finish_attrs()?;
                let mut entries: Vec<(String, String)> = Vec::new();
                for mut entry in child.children()? {
                    if entry.name() != "entry" {
                        return Err(entry.unsupported());
                    }
                    let name = entry.required_attr("name")?;
                    if !SYSTEM_ENTRIES.contains(&name) {
                        return Err(entry.invalid(
                            "attribute 'name'",
                            name,
                            "expected manufacturer, product, version, serial, uuid, sku or family",
                        ));
                    }
                    entry.finish_attrs()?;
                    let value = entry.text()?;
                    // libvirt keeps the last of repeated names.
                    entries.retain(|(existing, _)| existing != name);
                    entries.push((name.to_string(), value));
                }
                entries
                    .sort_by_key(|(name, _)| SYSTEM_ENTRIES.iter().position(|known| known == name));
                set_once(&mut system, entries, &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    Ok(Sysinfo {
        system: system.unwrap_or_default(),
        line: elem.source_line(),
    })
}

/// libvirt's rule: a `uuid` entry must be the domain's UUID (any case, with or without dashes).
pub(crate) fn check_uuid(sysinfo: Option<&Sysinfo>, uuid: &uuid::Uuid) -> Result<()> {
    let Some(sysinfo) = sysinfo else {
        return Ok(());
    };
    for (name, value) in &sysinfo.system {
        if name == "uuid" && uuid::Uuid::parse_str(value.trim()).ok().as_ref() != Some(uuid) {
            return Err(DomainError::Invalid {
                reason: "UUID mismatch between <uuid> and <sysinfo>".to_string(),
                location: crate::error::Location::new("sysinfo/system/entry", sysinfo.line.get()),
            });
        }
    }
    Ok(())
}

/// `<os><smbios mode=...>`.
pub(crate) fn parse_mode(elem: &mut Elem) -> Result<(SmbiosMode, SourceLine)> {
    let mode = elem
        .enum_attr("mode", SMBIOS_MODES)?
        .ok_or_else(|| elem.missing("attribute 'mode'"))?;
    elem.finish_attrs()?;
    elem.leaf()?;
    Ok((mode, elem.source_line()))
}

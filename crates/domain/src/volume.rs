//! libvirt's storage volume XML, for volumes of `dir` pools (image files).
//!
//! [`VolumeDef::from_xml`] reads the input of `virsh vol-create` and the output of
//! `vol-dumpxml`, as strictly as the domain parser: anything else is an error naming the
//! element or attribute and its line. [`VolumeDef::to_xml`] prints the `vol-dumpxml` form.
//!
//! ```text
//! <volume type='file'>                      type optional; only 'file'
//!   <name>web1.qcow2</name>                 required
//!   <key>/pool/web1.qcow2</key>             output: kept, ignored on create (as libvirt)
//!   <capacity unit='G'>20</capacity>        required; units as libvirt, default bytes
//!   <allocation unit='bytes'>0</allocation> optional (see VolumeDef::allocation)
//!   <physical unit='bytes'>..</physical>    output: kept, ignored on create
//!   <target>                                optional
//!     <path>/pool/web1.qcow2</path>         output: kept, ignored on create
//!     <format type='qcow2'/>                raw (default) or qcow2
//!     <permissions>..</permissions>         kept, ignored on create (as printed by vol-dumpxml)
//!     <timestamps>..</timestamps>           output only: ignored on create (as libvirt)
//!     <compat>1.1</compat>                  qcow2: 1.1 (v3), the only version oxvirt creates
//!     <clusterSize unit='KiB'>64</clusterSize>  qcow2: a power of two, 512 B to 2 MiB
//!     <features/>                           qcow2: empty (lazy_refcounts is not supported)
//!   </target>
//!   <backingStore>                          qcow2 only
//!     <path>/pool/base.raw</path>           required
//!     <format type='raw'/>                  optional
//!   </backingStore>
//! </volume>
//! ```

use crate::elem::{self, set_once, Elem, Result};
use crate::error::Location;
use crate::storage::{parse_permissions, parse_size, Lines};
use crate::DomainError;

pub use crate::storage::Permissions;

/// Longest volume name, in bytes (a volume is a file in its pool's directory).
pub const MAX_VOLUME_NAME_BYTES: usize = 255;

/// Image formats of volumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeFormat {
    Raw,
    Qcow2,
}

const VOLUME_FORMATS: &[(&str, VolumeFormat)] =
    &[("raw", VolumeFormat::Raw), ("qcow2", VolumeFormat::Qcow2)];

/// Volume types libvirt has; only `file` is implemented.
const VOLUME_TYPES: &[(&str, ())] = &[("file", ())];

impl VolumeFormat {
    /// The format as libvirt writes it (`raw`, `qcow2`).
    pub fn as_str(self) -> &'static str {
        crate::names::name_of(VOLUME_FORMATS, self)
    }

    /// The format named `name`, if oxvirt has it.
    pub fn from_name(name: &str) -> Option<VolumeFormat> {
        elem::lookup(VOLUME_FORMATS, name)
    }
}

/// A storage volume: what `vol-create` reads and `vol-dumpxml` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDef {
    pub name: String,
    /// `<key>` (the path, for dir pools); printed by vol-dumpxml, ignored on create.
    pub key: Option<String>,
    /// Virtual size in bytes.
    pub capacity: u64,
    /// Bytes allocated on the host. On create, libvirt reads an absent `<allocation>` as "all
    /// of the capacity" (allocate in full) and one below the capacity as a wish the pool may
    /// meet by making the volume sparse.
    pub allocation: Option<u64>,
    /// `<physical>`: length of the file; printed by vol-dumpxml, ignored on create.
    pub physical: Option<u64>,
    pub target: VolumeTarget,
    pub backing_store: Option<BackingStore>,
}

/// `<target>` of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeTarget {
    /// The file's path; printed by vol-dumpxml, ignored on create (the pool decides).
    pub path: Option<String>,
    /// `raw` when the XML names none.
    pub format: VolumeFormat,
    /// Printed by vol-dumpxml; ignored on create.
    pub permissions: Option<Permissions>,
    /// qcow2 cluster size in bytes (`<clusterSize>`); the image library's default when `None`.
    pub cluster_size: Option<u64>,
}

/// Smallest and largest qcow2 cluster sizes (QEMU's limits).
const MIN_CLUSTER_SIZE: u64 = 512;
const MAX_CLUSTER_SIZE: u64 = 2 << 20;

/// `<backingStore>`: the image a qcow2 volume is an overlay of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingStore {
    pub path: String,
    /// Probed from the image when `None`.
    pub format: Option<VolumeFormat>,
}

impl VolumeDef {
    /// Parses a `<volume>` (see the module documentation for what is accepted).
    pub fn from_xml(xml: &str) -> std::result::Result<VolumeDef, DomainError> {
        let doc = elem::read(xml)?;
        let mut root = Elem::root(&doc, "volume", None)?;
        parse_volume(&mut root)
    }

    /// The volume as `virsh vol-dumpxml` prints it (elements that are `None` are left out).
    pub fn to_xml(&self) -> String {
        let mut xml = Lines::new();
        xml.line(0, "<volume type='file'>");
        xml.text(1, "name", &self.name);
        if let Some(key) = &self.key {
            xml.text(1, "key", key);
        }
        xml.bytes(1, "capacity", self.capacity);
        if let Some(allocation) = self.allocation {
            xml.bytes(1, "allocation", allocation);
        }
        if let Some(physical) = self.physical {
            xml.bytes(1, "physical", physical);
        }
        xml.line(1, "<target>");
        if let Some(path) = &self.target.path {
            xml.text(2, "path", path);
        }
        xml.line(
            2,
            &format!("<format type='{}'/>", self.target.format.as_str()),
        );
        if let Some(permissions) = &self.target.permissions {
            xml.permissions(2, permissions);
        }
        xml.line(1, "</target>");
        if let Some(backing) = &self.backing_store {
            xml.line(1, "<backingStore>");
            xml.text(2, "path", &backing.path);
            if let Some(format) = backing.format {
                xml.line(2, &format!("<format type='{}'/>", format.as_str()));
            }
            xml.line(1, "</backingStore>");
        }
        xml.line(0, "</volume>");
        xml.out
    }
}

/// Checks a volume name: one file name in the pool's directory, so never a path and never
/// hidden: not empty, at most [`MAX_VOLUME_NAME_BYTES`] bytes, no `/`, not starting with `.`
/// (which also rules out `.` and `..`), no control characters.
pub fn validate_volume_name(name: &str) -> std::result::Result<(), DomainError> {
    let reason = if name.is_empty() {
        "it is empty".to_string()
    } else if name.len() > MAX_VOLUME_NAME_BYTES {
        format!("it is longer than {MAX_VOLUME_NAME_BYTES} bytes")
    } else if name.contains('/') {
        "it contains '/' (a volume is a file directly in the pool's directory)".to_string()
    } else if name.starts_with('.') {
        "it starts with '.'".to_string()
    } else if name.chars().any(char::is_control) {
        "it contains control characters".to_string()
    } else {
        return Ok(());
    };
    Err(DomainError::InvalidName {
        what: "storage volume",
        name: name.escape_debug().to_string(),
        reason,
        location: Location::new("name", None),
    })
}

fn parse_volume(root: &mut Elem) -> Result<VolumeDef> {
    if let Some(kind) = root.attr("type") {
        if kind != "file" {
            return Err(root.unsupported_value("attribute 'type'", kind, VOLUME_TYPES));
        }
    }
    root.finish_attrs()?;
    let mut name = None;
    let mut key = None;
    let mut capacity = None;
    let mut allocation = None;
    let mut physical = None;
    let mut target = None;
    let mut backing_store = None;
    for mut child in root.children()? {
        match child.name() {
            "name" => set_once(&mut name, child.name_text(validate_volume_name)?, &child)?,
            "key" => {
                child.finish_attrs()?;
                let value = child.text()?.trim().to_string();
                set_once(&mut key, value, &child)?;
            }
            "capacity" => set_once(&mut capacity, parse_size(&mut child)?, &child)?,
            "allocation" => set_once(&mut allocation, parse_size(&mut child)?, &child)?,
            "physical" => set_once(&mut physical, parse_size(&mut child)?, &child)?,
            "target" => {
                let parsed = parse_target(&mut child)?;
                set_once(&mut target, parsed, &child)?;
            }
            "backingStore" => {
                let parsed = parse_backing_store(&mut child)?;
                set_once(&mut backing_store, (parsed, child.loc()), &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    let name = name.ok_or_else(|| root.missing("element <name>"))?;
    let capacity = capacity.ok_or_else(|| root.missing("element <capacity>"))?;
    let target = target.unwrap_or(VolumeTarget {
        path: None,
        format: VolumeFormat::Raw,
        permissions: None,
        cluster_size: None,
    });
    let backing_store = match backing_store {
        Some((_, location)) if target.format != VolumeFormat::Qcow2 => {
            return Err(DomainError::Invalid {
                reason: format!(
                    "a {} volume cannot have a backing store (only qcow2 can)",
                    target.format.as_str()
                ),
                location,
            })
        }
        other => other.map(|(backing, _)| backing),
    };
    Ok(VolumeDef {
        name,
        key,
        capacity,
        allocation,
        physical,
        target,
        backing_store,
    })
}

fn parse_format(elem: &mut Elem) -> Result<VolumeFormat> {
    let kind = elem.required_attr("type")?;
    let format = VolumeFormat::from_name(kind)
        .ok_or_else(|| elem.unsupported_value("attribute 'type'", kind, VOLUME_FORMATS))?;
    elem.finish_attrs()?;
    elem.leaf()?;
    Ok(format)
}

fn parse_path(elem: &mut Elem) -> Result<String> {
    elem.finish_attrs()?;
    let value = elem.text()?.trim().to_string();
    if value.is_empty() {
        return Err(elem.missing("a path"));
    }
    Ok(value)
}

fn parse_target(elem: &mut Elem) -> Result<VolumeTarget> {
    elem.finish_attrs()?;
    let mut path = None;
    let mut format = None;
    let mut permissions = None;
    let mut timestamps = None;
    let mut compat = None;
    let mut cluster_size = None;
    let mut features = None;
    for mut child in elem.children()? {
        match child.name() {
            "path" => set_once(&mut path, parse_path(&mut child)?, &child)?,
            "format" => set_once(&mut format, parse_format(&mut child)?, &child)?,
            "permissions" => {
                let parsed = parse_permissions(&mut child)?;
                set_once(&mut permissions, parsed, &child)?;
            }
            // What vol-dumpxml prints about the file's times: meaningless for a new volume,
            // and libvirt ignores it on input too.
            "timestamps" => {
                child.finish_attrs()?;
                for time in child.children()? {
                    match time.name() {
                        "atime" | "mtime" | "ctime" | "btime" => {
                            time.finish_attrs()?;
                            time.text()?;
                        }
                        _ => return Err(time.unsupported()),
                    }
                }
                set_once(&mut timestamps, (), &child)?;
            }
            "compat" => {
                child.finish_attrs()?;
                let value = child.text()?.trim().to_string();
                if value != "1.1" {
                    return Err(child.unsupported_value("version", &value, &[("1.1", ())]));
                }
                set_once(&mut compat, child.loc(), &child)?;
            }
            "clusterSize" => {
                let location = child.loc();
                let size = parse_size(&mut child)?;
                if !size.is_power_of_two() || !(MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&size)
                {
                    return Err(DomainError::InvalidValue {
                        attribute: "<clusterSize>".to_string(),
                        value: size.to_string(),
                        reason: format!(
                            "a qcow2 cluster is a power of two from {MIN_CLUSTER_SIZE} bytes to {} MiB",
                            MAX_CLUSTER_SIZE >> 20
                        ),
                        location,
                    });
                }
                set_once(&mut cluster_size, (size, location), &child)?;
            }
            "features" => {
                child.finish_attrs()?;
                if let Some(feature) = child.children()?.into_iter().next() {
                    return Err(feature.unsupported());
                }
                set_once(&mut features, child.loc(), &child)?;
            }
            _ => return Err(child.unsupported()),
        }
    }
    let format = format.unwrap_or(VolumeFormat::Raw);
    let qcow2_only = [
        compat.map(|l| ("<compat>", l)),
        cluster_size
            .as_ref()
            .map(|(_, l)| ("<clusterSize>", l.clone())),
        features.map(|l| ("<features>", l)),
    ];
    if format != VolumeFormat::Qcow2 {
        if let Some((what, location)) = qcow2_only.into_iter().flatten().next() {
            return Err(DomainError::Invalid {
                reason: format!("{what} applies to qcow2 volumes only"),
                location,
            });
        }
    }
    Ok(VolumeTarget {
        path,
        format,
        permissions,
        cluster_size: cluster_size.map(|(size, _)| size),
    })
}

fn parse_backing_store(elem: &mut Elem) -> Result<BackingStore> {
    elem.finish_attrs()?;
    let mut path = None;
    let mut format = None;
    for mut child in elem.children()? {
        match child.name() {
            "path" => set_once(&mut path, parse_path(&mut child)?, &child)?,
            "format" => set_once(&mut format, parse_format(&mut child)?, &child)?,
            _ => return Err(child.unsupported()),
        }
    }
    let path = path.ok_or_else(|| elem.missing("element <path>"))?;
    Ok(BackingStore { path, format })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(xml: &str) -> DomainError {
        VolumeDef::from_xml(xml).expect_err("must be refused")
    }

    fn full() -> VolumeDef {
        VolumeDef {
            name: "web1.qcow2".to_string(),
            key: Some("/pool/web1.qcow2".to_string()),
            capacity: 20 << 30,
            allocation: Some(196_608),
            physical: Some(196_616),
            target: VolumeTarget {
                path: Some("/pool/web1.qcow2".to_string()),
                format: VolumeFormat::Qcow2,
                permissions: None,
                cluster_size: None,
            },
            backing_store: Some(BackingStore {
                path: "/pool/base.raw".to_string(),
                format: Some(VolumeFormat::Raw),
            }),
        }
    }

    #[test]
    fn vol_dumpxml_form_is_unchanged_and_parses_back() {
        let def = full();
        let xml = def.to_xml();
        assert_eq!(
            xml,
            "<volume type='file'>
  <name>web1.qcow2</name>
  <key>/pool/web1.qcow2</key>
  <capacity unit='bytes'>21474836480</capacity>
  <allocation unit='bytes'>196608</allocation>
  <physical unit='bytes'>196616</physical>
  <target>
    <path>/pool/web1.qcow2</path>
    <format type='qcow2'/>
  </target>
  <backingStore>
    <path>/pool/base.raw</path>
    <format type='raw'/>
  </backingStore>
</volume>
"
        );
        assert_eq!(VolumeDef::from_xml(&xml), Ok(def));
    }

    #[test]
    fn escaped_names_and_permissions_round_trip() {
        let mut def = full();
        def.name = "a<b>&'c\"".to_string();
        def.key = Some("/p/a<b>&'c\"".to_string());
        def.target.permissions = Some(Permissions {
            mode: Some(0o600),
            owner: Some(0),
            group: None,
            label: Some("x&y".to_string()),
        });
        assert_eq!(VolumeDef::from_xml(&def.to_xml()), Ok(def));
    }

    #[test]
    fn minimal_input_with_libvirt_units() {
        let def = VolumeDef::from_xml(
            "<volume><name>v</name><capacity unit='G'>2</capacity>\
             <allocation unit='KiB'>0</allocation></volume>",
        )
        .unwrap();
        assert_eq!(def.capacity, 2 << 30);
        assert_eq!(def.allocation, Some(0));
        assert_eq!(def.target.format, VolumeFormat::Raw);
        assert_eq!(def.backing_store, None);
        for (unit, bytes) in [
            ("bytes", 5),
            ("b", 5),
            ("KB", 5000),
            ("MiB", 5 << 20),
            ("T", 5 << 40),
        ] {
            let def = VolumeDef::from_xml(&format!(
                "<volume><name>v</name><capacity unit='{unit}'>5</capacity></volume>"
            ))
            .unwrap();
            assert_eq!(def.capacity, bytes, "{unit}");
        }
        // Without a unit, storage sizes are bytes.
        let def = VolumeDef::from_xml("<volume><name>v</name><capacity>4096</capacity></volume>")
            .unwrap();
        assert_eq!(def.capacity, 4096);
    }

    #[test]
    fn unknown_elements_and_attributes_are_named_with_their_line() {
        let cases = [
            (
                "<volume type='file' x='1'><name>v</name></volume>",
                "unsupported attribute 'x' on <volume> at line 1",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity>\n<target>\n<format type='qcow2'/>\n<compat>0.10</compat></target></volume>",
                "unsupported value '0.10' for version on <target/compat> at line 4",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity>\n<source/></volume>",
                "unsupported element <source> at line 2",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><target><format type='qcow2' v='3'/></target></volume>",
                "unsupported attribute 'v' on <target/format>",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><target><format type='qcow2'/></target>\
                 <backingStore><path>/b</path><permissions/></backingStore></volume>",
                "unsupported element <backingStore/permissions>",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><target><format type='vmdk'/></target></volume>",
                "unsupported value 'vmdk' for attribute 'type' on <target/format> at line 1; supported: raw, qcow2",
            ),
            (
                "<volume type='block'><name>v</name></volume>",
                "unsupported value 'block' for attribute 'type' on <volume>",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><timestamps/></volume>",
                "unsupported element <timestamps>",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><target><clusterSize>3000</clusterSize><format type='qcow2'/></target></volume>",
                "invalid value '3000' for <clusterSize>",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><target><format type='raw'/><compat>1.1</compat></target></volume>",
                "<compat> applies to qcow2 volumes only",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><target><format type='qcow2'/><features><lazy_refcounts/></features></target></volume>",
                "unsupported element <target/features/lazy_refcounts>",
            ),
        ];
        for (xml, want) in cases {
            let msg = err(xml).to_string();
            assert!(msg.contains(want), "{xml}\n{msg}");
        }
    }

    #[test]
    fn missing_and_invalid_parts() {
        let cases = [
            ("<volume><capacity>1</capacity></volume>", "missing element <name>"),
            ("<volume><name>v</name></volume>", "missing element <capacity>"),
            (
                "<volume><name>v</name><capacity unit='furlongs'>1</capacity></volume>",
                "furlongs",
            ),
            (
                "<volume><name>v</name><capacity>-1</capacity></volume>",
                "not an unsigned integer",
            ),
            (
                "<volume><name>v</name><capacity unit='E'>9000</capacity></volume>",
                "overflows",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><capacity>2</capacity></volume>",
                "duplicate element <capacity>",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><target><format/></target></volume>",
                "missing attribute 'type'",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity><target><format type='qcow2'/></target>\
                 <backingStore><format type='raw'/></backingStore></volume>",
                "missing element <path> in <backingStore>",
            ),
            (
                "<volume><name>v</name><capacity>1</capacity>\n<backingStore><path>/b</path></backingStore></volume>",
                "invalid definition at <backingStore> at line 2: a raw volume cannot have a backing store",
            ),
        ];
        for (xml, want) in cases {
            let msg = err(xml).to_string();
            assert!(msg.contains(want), "{xml}\n{msg}");
        }
    }

    #[test]
    fn volume_names_never_leave_the_pool() {
        for bad in ["", "../x", "a/b", ".hidden", "..", ".", "x\ny"] {
            let e = validate_volume_name(bad).unwrap_err();
            assert!(
                matches!(
                    &e,
                    DomainError::InvalidName {
                        what: "storage volume",
                        ..
                    }
                ),
                "{bad:?}"
            );
        }
        for good in ["disk.qcow2", "a b", "x..y", "v-1_2"] {
            assert!(validate_volume_name(good).is_ok(), "{good:?}");
        }
        let e = err("<volume>\n<name>../x</name><capacity>1</capacity></volume>");
        assert_eq!(
            e.to_string(),
            "invalid storage volume name '../x' in <name> at line 2: it contains '/' (a volume is a file directly in the pool's directory)"
        );
    }

    /// Just over each XML limit: the error names the limit.
    #[test]
    fn libvirts_own_vol_dumpxml_output_is_accepted() {
        // The shape of libvirt's `virsh vol-dumpxml` for a qcow2 file volume (permissions,
        // timestamps, compat, clusterSize, features), which users feed back to vol-create.
        let xml = "<volume type='file'>
  <name>disk.qcow2</name>
  <key>/var/lib/libvirt/images/disk.qcow2</key>
  <capacity unit='bytes'>1073741824</capacity>
  <allocation unit='bytes'>200704</allocation>
  <physical unit='bytes'>196624</physical>
  <target>
    <path>/var/lib/libvirt/images/disk.qcow2</path>
    <format type='qcow2'/>
    <permissions>
      <mode>0600</mode>
      <owner>0</owner>
      <group>0</group>
    </permissions>
    <timestamps>
      <atime>1764662400.123456789</atime>
      <mtime>1764662400.123456789</mtime>
      <ctime>1764662400.123456789</ctime>
      <btime>0</btime>
    </timestamps>
    <compat>1.1</compat>
    <clusterSize unit='B'>65536</clusterSize>
    <features/>
  </target>
</volume>
";
        let def = VolumeDef::from_xml(xml).expect("libvirt-shaped output parses");
        assert_eq!(def.name, "disk.qcow2");
        assert_eq!(def.capacity, 1 << 30);
        assert_eq!(def.target.format, VolumeFormat::Qcow2);
        assert_eq!(def.target.cluster_size, Some(65536));
    }

    #[test]
    fn inputs_just_over_each_xml_limit_are_refused() {
        use oxvirt_xml::{Limit, Limits};
        let limits = Limits::DEFAULT;
        let base = "<volume>\n<name>v</name>\n<capacity>1</capacity>\n</volume>";
        let limit_of = |xml: &str| match VolumeDef::from_xml(xml) {
            Err(DomainError::Limit(e)) => (e.limit, e.line),
            other => panic!("expected a limit error, got {other:?}"),
        };
        let pad = limits.max_bytes + 1 - base.len() - "<!---->".len();
        assert_eq!(
            limit_of(&format!("{base}<!--{}-->", "x".repeat(pad))),
            (Limit::Size, None)
        );
        let nest = "<x>".repeat(64) + &"</x>".repeat(64);
        assert_eq!(
            limit_of(&base.replace("<name>", &format!("{nest}<name>"))),
            (Limit::Depth, Some(2))
        );
        let attrs: String = (0..65).map(|n| format!(" a{n}='x'")).collect();
        assert_eq!(
            limit_of(&base.replace("<capacity>", &format!("<capacity{attrs}>"))),
            (Limit::Attributes, Some(3))
        );
        let comments = "<!---->".repeat(limits.max_nodes);
        assert_eq!(
            limit_of(&base.replace("<name>", &format!("{comments}<name>"))).0,
            Limit::Nodes
        );
        let declarations = "<x xmlns:q='urn:q'/>".repeat(limits.max_namespaces + 1);
        assert_eq!(
            limit_of(&base.replace("<name>", &format!("{declarations}<name>"))).0,
            Limit::Namespaces
        );
    }
}

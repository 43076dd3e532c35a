//! libvirt's domain snapshot XML (`<domainsnapshot>`): what `snapshot-create FILE` reads and
//! what `snapshot-dumpxml` prints.
//!
//! [`SnapshotRequest::from_xml`] reads what a user asks for (libvirt's document without
//! `--redefine`): a name, a description, where the memory goes and what happens to each disk.
//! [`Snapshot::to_xml`] prints a taken snapshot as `virsh snapshot-dumpxml` does (libvirt 9.0):
//!
//! ```text
//! <domainsnapshot>
//!   <name>s2</name>
//!   <description>before the upgrade</description>     only when set
//!   <state>running</state>                              the domain's state when taken
//!   <parent>                                            only when it has one
//!     <name>s1</name>
//!   </parent>
//!   <creationTime>1796237411</creationTime>
//!   <memory snapshot='internal'/>                       no | internal | external file='...'
//!   <disks>
//!     <disk name='vda' snapshot='internal'/>
//!     <disk name='vdb' snapshot='external' type='file'>
//!       <driver type='qcow2'/>
//!       <source file='/var/lib/oxvirt/images/vdb.s2'/>
//!     </disk>
//!     <disk name='hdc' snapshot='no'/>
//!   </disks>
//!   <domain type='kvm'>...</domain>                     the definition when taken
//! </domainsnapshot>
//! ```

use crate::elem::{self, lookup, set_once, Elem, Result};
use crate::storage::Lines;
use crate::DomainError;

/// Longest snapshot name oxvirt takes (libvirt has no limit; names become QEMU snapshot tags
/// and file name parts, which have).
pub const MAX_SNAPSHOT_NAME_BYTES: usize = 200;

/// What happens to the guest's memory (and device state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Not saved: a disk-only snapshot, or one of a shut-off domain.
    No,
    /// Inside the disk images (QEMU's `savevm`).
    Internal,
    /// In a file of its own.
    External,
}

const MEMORY_KINDS: &[(&str, MemoryKind)] = &[
    ("no", MemoryKind::No),
    ("internal", MemoryKind::Internal),
    ("external", MemoryKind::External),
];

/// What happens to one disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskSnapshotKind {
    /// Left out (a CD-ROM, a read-only disk, or asked for).
    No,
    /// A qcow2 internal snapshot inside the disk's image.
    Internal,
    /// A new qcow2 overlay on top of the image, which becomes read-only.
    External,
}

const DISK_KINDS: &[(&str, DiskSnapshotKind)] = &[
    ("no", DiskSnapshotKind::No),
    ("internal", DiskSnapshotKind::Internal),
    ("external", DiskSnapshotKind::External),
];

impl MemoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryKind::No => "no",
            MemoryKind::Internal => "internal",
            MemoryKind::External => "external",
        }
    }
}

impl DiskSnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskSnapshotKind::No => "no",
            DiskSnapshotKind::Internal => "internal",
            DiskSnapshotKind::External => "external",
        }
    }
}

/// One disk of a snapshot: its target (`vda`) and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotDisk {
    /// The disk's target name (a request may name the source path instead; the daemon
    /// resolves it).
    pub name: String,
    pub kind: DiskSnapshotKind,
    /// An external snapshot's overlay file (chosen by the daemon when the request gives none).
    pub file: Option<String>,
}

/// The domain's state when the snapshot was taken (`<state>`), as libvirt names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    Running,
    Paused,
    Shutoff,
    /// A disk-only snapshot (of a running or shut-off domain).
    DiskSnapshot,
}

const STATES: &[(&str, SnapshotState)] = &[
    ("running", SnapshotState::Running),
    ("paused", SnapshotState::Paused),
    ("shutoff", SnapshotState::Shutoff),
    ("disk-snapshot", SnapshotState::DiskSnapshot),
];

impl SnapshotState {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Running => "running",
            SnapshotState::Paused => "paused",
            SnapshotState::Shutoff => "shutoff",
            SnapshotState::DiskSnapshot => "disk-snapshot",
        }
    }

    pub fn parse(text: &str) -> Option<SnapshotState> {
        lookup(STATES, text)
    }
}

/// What `snapshot-create FILE` (or `snapshot-create-as`) asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// `None`: the daemon names it after the creation time, as libvirt does.
    pub name: Option<String>,
    pub description: Option<String>,
    /// `None`: the daemon decides (internal for a running guest, no otherwise).
    pub memory: Option<MemoryKind>,
    /// The memory file of an external memory snapshot.
    pub memory_file: Option<String>,
    /// Per-disk choices; disks not named get the default.
    pub disks: Vec<SnapshotDisk>,
}

/// A taken snapshot, as stored and as `snapshot-dumpxml` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub description: Option<String>,
    pub state: SnapshotState,
    pub parent: Option<String>,
    /// Seconds since the epoch.
    pub creation_time: i64,
    pub memory: MemoryKind,
    pub memory_file: Option<String>,
    pub disks: Vec<SnapshotDisk>,
    /// The domain's definition when the snapshot was taken (libvirt's normalized XML).
    pub domain_xml: String,
}

/// Checks a snapshot name: libvirt refuses `/`; oxvirt also refuses what cannot be a file name
/// part or a QEMU snapshot tag (control characters, leading dots, overlong names).
pub fn validate_snapshot_name(name: &str) -> std::result::Result<(), DomainError> {
    crate::rules::check_name(
        "snapshot",
        "domainsnapshot/name",
        MAX_SNAPSHOT_NAME_BYTES,
        name,
    )
}

impl SnapshotRequest {
    /// Parses a `<domainsnapshot>` document as `snapshot-create` takes it (no `--redefine`:
    /// `<state>`, `<parent>`, `<creationTime>` and `<domain>` are the daemon's to fill in).
    pub fn from_xml(xml: &str) -> std::result::Result<SnapshotRequest, DomainError> {
        let doc = elem::read(xml)?;
        let mut root = Elem::root(&doc, "domainsnapshot", None)?;
        parse_request(&mut root)
    }
}

fn parse_request(root: &mut Elem) -> Result<SnapshotRequest> {
    root.finish_attrs()?;
    let mut request = SnapshotRequest::default();
    let (mut name, mut description, mut memory, mut disks) = (None, None, None, None);
    for mut child in root.children()? {
        match child.name() {
            "name" => {
                let text = child.name_text(validate_snapshot_name)?;
                set_once(&mut name, text, &child)?;
            }
            "description" => {
                child.finish_attrs()?;
                let text = child.text()?;
                set_once(&mut description, text, &child)?;
            }
            "memory" => {
                let kind = child.enum_attr("snapshot", MEMORY_KINDS)?;
                let file = child.attr("file").map(str::to_string);
                child.finish_attrs()?;
                child.leaf()?;
                let kind = match (kind, &file) {
                    (Some(kind), _) => kind,
                    (None, Some(_)) => MemoryKind::External,
                    (None, None) => return Err(child.missing("attribute 'snapshot'")),
                };
                if kind == MemoryKind::External && file.is_none() {
                    return Err(child.missing("attribute 'file' (an external memory snapshot)"));
                }
                if kind != MemoryKind::External && file.is_some() {
                    return Err(child.invalid(
                        "attribute 'file'",
                        file.as_deref().unwrap_or_default(),
                        "only an external memory snapshot has a file",
                    ));
                }
                set_once(&mut memory, (kind, file), &child)?;
            }
            "disks" => {
                child.finish_attrs()?;
                let mut parsed = Vec::new();
                for mut disk in child.children()? {
                    if disk.name() != "disk" {
                        return Err(disk.unsupported());
                    }
                    parsed.push(parse_disk(&mut disk)?);
                }
                set_once(&mut disks, parsed, &child)?;
            }
            // Only a redefinition (`--redefine`, not supported) may give what the daemon
            // records itself.
            _ => return Err(child.unsupported()),
        }
    }
    request.name = name;
    request.description = description;
    if let Some((kind, file)) = memory {
        request.memory = Some(kind);
        request.memory_file = file;
    }
    request.disks = disks.unwrap_or_default();
    Ok(request)
}

fn parse_disk(disk: &mut Elem) -> Result<SnapshotDisk> {
    let name = disk.required_attr("name")?.to_string();
    let kind = disk.enum_attr("snapshot", DISK_KINDS)?;
    let disk_type = disk.attr("type");
    disk.finish_attrs()?;
    if let Some(disk_type) = disk_type {
        if disk_type != "file" {
            return Err(disk.invalid(
                "attribute 'type'",
                disk_type,
                "oxvirt makes external snapshots as files only",
            ));
        }
    }
    let mut file = None;
    for mut child in disk.children()? {
        match child.name() {
            "source" => {
                let path = child.required_attr("file")?.to_string();
                child.finish_attrs()?;
                child.leaf()?;
                if !path.starts_with('/') {
                    return Err(child.invalid(
                        "attribute 'file'",
                        &path,
                        "an overlay is named by its absolute path",
                    ));
                }
                set_once(&mut file, path, &child)?;
            }
            "driver" => {
                let format = child.required_attr("type")?;
                child.finish_attrs()?;
                child.leaf()?;
                if format != "qcow2" {
                    return Err(child.invalid(
                        "attribute 'type'",
                        format,
                        "an external snapshot's overlay is qcow2",
                    ));
                }
            }
            _ => return Err(child.unsupported()),
        }
    }
    let kind = match (kind, &file) {
        (Some(kind), _) => kind,
        (None, Some(_)) => DiskSnapshotKind::External,
        (None, None) => DiskSnapshotKind::Internal,
    };
    if kind != DiskSnapshotKind::External && file.is_some() {
        return Err(disk.invalid(
            "element <source>",
            file.as_deref().unwrap_or_default(),
            "only an external disk snapshot has a source",
        ));
    }
    Ok(SnapshotDisk { name, kind, file })
}

impl Snapshot {
    /// Reads a snapshot back from what [`Snapshot::to_xml`] printed (the daemon's record, or
    /// `snapshot-edit`'s result); its `<domain>` is parsed and printed again in normalized form.
    pub fn from_xml(xml: &str) -> std::result::Result<Snapshot, DomainError> {
        let doc = elem::read(xml)?;
        let root = Elem::root(&doc, "domainsnapshot", None)?;
        root.finish_attrs()?;
        let mut request_part = String::from("<domainsnapshot>");
        let (mut state, mut parent, mut created, mut domain) = (None, None, None, None);
        let mut name = None;
        for child in root.children()? {
            let range = child.node().range();
            match child.name() {
                "name" => {
                    child.finish_attrs()?;
                    set_once(&mut name, child.text()?, &child)?;
                }
                "description" | "memory" | "disks" => {
                    request_part.push_str(xml.get(range).unwrap_or_default());
                }
                "state" => {
                    child.finish_attrs()?;
                    let value = child.text_enum(STATES)?;
                    set_once(&mut state, value, &child)?;
                }
                "parent" => {
                    child.finish_attrs()?;
                    let mut parent_name = None;
                    for grandchild in child.children()? {
                        if grandchild.name() != "name" {
                            return Err(grandchild.unsupported());
                        }
                        grandchild.finish_attrs()?;
                        set_once(&mut parent_name, grandchild.text()?, &grandchild)?;
                    }
                    let parent_name = parent_name.ok_or_else(|| child.missing("element <name>"))?;
                    set_once(&mut parent, parent_name, &child)?;
                }
                "creationTime" => {
                    child.finish_attrs()?;
                    set_once(&mut created, child.text_i64()?, &child)?;
                }
                "domain" => {
                    let text = xml.get(range).unwrap_or_default();
                    let parsed =
                        crate::parse_domain_xml(text).map_err(|err| DomainError::Invalid {
                            reason: format!("its <domain> does not parse: {err}"),
                            location: child.loc(),
                        })?;
                    set_once(&mut domain, parsed.to_xml(), &child)?;
                }
                _ => return Err(child.unsupported()),
            }
        }
        request_part.push_str("</domainsnapshot>");
        // Description, memory and disks read as a request does.
        let request = SnapshotRequest::from_xml(&request_part)?;
        let name = name.ok_or_else(|| root.missing("element <name>"))?;
        validate_snapshot_name(&name)?;
        Ok(Snapshot {
            name,
            description: request.description,
            state: state.ok_or_else(|| root.missing("element <state>"))?,
            parent,
            creation_time: created.ok_or_else(|| root.missing("element <creationTime>"))?,
            memory: request.memory.unwrap_or(MemoryKind::No),
            memory_file: request.memory_file,
            disks: request.disks,
            domain_xml: domain.ok_or_else(|| root.missing("element <domain>"))?,
        })
    }

    /// Where the snapshot lives, as `snapshot-info` and `snapshot-list` say: `external` when
    /// the memory or any disk is outside the images, `internal` otherwise.
    pub fn location(&self) -> &'static str {
        let external = self.memory == MemoryKind::External
            || self
                .disks
                .iter()
                .any(|d| d.kind == DiskSnapshotKind::External);
        if external {
            "external"
        } else {
            "internal"
        }
    }

    /// The snapshot as `virsh snapshot-dumpxml` prints it.
    pub fn to_xml(&self) -> String {
        let mut xml = Lines::new();
        xml.line(0, "<domainsnapshot>");
        xml.text(1, "name", &self.name);
        if let Some(description) = &self.description {
            xml.text(1, "description", description);
        }
        xml.text(1, "state", self.state.as_str());
        if let Some(parent) = &self.parent {
            xml.line(1, "<parent>");
            xml.text(2, "name", parent);
            xml.line(1, "</parent>");
        }
        xml.text(1, "creationTime", &self.creation_time.to_string());
        match &self.memory_file {
            Some(file) => xml.line(
                1,
                &format!(
                    "<memory snapshot='{}' file='{}'/>",
                    self.memory.as_str(),
                    oxvirt_xml::escape_attr(file)
                ),
            ),
            None => xml.line(1, &format!("<memory snapshot='{}'/>", self.memory.as_str())),
        }
        if !self.disks.is_empty() {
            xml.line(1, "<disks>");
            for disk in &self.disks {
                let name = oxvirt_xml::escape_attr(&disk.name);
                match &disk.file {
                    Some(file) => {
                        xml.line(
                            2,
                            &format!(
                                "<disk name='{name}' snapshot='{}' type='file'>",
                                disk.kind.as_str()
                            ),
                        );
                        xml.line(3, "<driver type='qcow2'/>");
                        xml.line(
                            3,
                            &format!("<source file='{}'/>", oxvirt_xml::escape_attr(file)),
                        );
                        xml.line(2, "</disk>");
                    }
                    None => xml.line(
                        2,
                        &format!("<disk name='{name}' snapshot='{}'/>", disk.kind.as_str()),
                    ),
                }
            }
            xml.line(1, "</disks>");
        }
        for line in self.domain_xml.lines() {
            xml.line(1, line);
        }
        xml.line(0, "</domainsnapshot>");
        xml.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request_with_disks_and_memory() {
        let request = SnapshotRequest::from_xml(
            "<domainsnapshot>\n  <name>before-upgrade</name>\n  <description>safe point</description>\n  \
             <memory snapshot='no'/>\n  <disks>\n    <disk name='vda' snapshot='external'>\n      \
             <driver type='qcow2'/>\n      <source file='/var/lib/x/vda.ovl'/>\n    </disk>\n    \
             <disk name='hdc' snapshot='no'/>\n  </disks>\n</domainsnapshot>",
        )
        .unwrap();
        assert_eq!(request.name.as_deref(), Some("before-upgrade"));
        assert_eq!(request.description.as_deref(), Some("safe point"));
        assert_eq!(request.memory, Some(MemoryKind::No));
        assert_eq!(
            request.disks,
            vec![
                SnapshotDisk {
                    name: "vda".into(),
                    kind: DiskSnapshotKind::External,
                    file: Some("/var/lib/x/vda.ovl".into()),
                },
                SnapshotDisk {
                    name: "hdc".into(),
                    kind: DiskSnapshotKind::No,
                    file: None,
                },
            ]
        );
    }

    #[test]
    fn refuses_what_only_a_redefinition_gives_and_bad_names() {
        let err = SnapshotRequest::from_xml(
            "<domainsnapshot>\n  <name>a</name>\n  <state>running</state>\n</domainsnapshot>",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("state") && err.contains("line 3"), "{err}");
        let err = SnapshotRequest::from_xml("<domainsnapshot><name>a/b</name></domainsnapshot>")
            .unwrap_err()
            .to_string();
        assert!(err.contains("name contains '/'"), "{err}");
        let err = SnapshotRequest::from_xml(
            "<domainsnapshot><memory snapshot='external'/></domainsnapshot>",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("file"), "{err}");
    }

    #[test]
    fn prints_what_virsh_snapshot_dumpxml_prints() {
        // libvirt 9.0's snapshot-dumpxml of a shut-off domain's internal snapshot, its domain
        // shortened.
        let snapshot = Snapshot {
            name: "s2".into(),
            description: None,
            state: SnapshotState::Shutoff,
            parent: Some("s1".into()),
            creation_time: 1796237411,
            memory: MemoryKind::No,
            memory_file: None,
            disks: vec![SnapshotDisk {
                name: "vda".into(),
                kind: DiskSnapshotKind::Internal,
                file: None,
            }],
            domain_xml: "<domain type='qemu'>\n  <name>t1</name>\n</domain>\n".into(),
        };
        assert_eq!(
            snapshot.to_xml(),
            "<domainsnapshot>\n  <name>s2</name>\n  <state>shutoff</state>\n  <parent>\n    \
             <name>s1</name>\n  </parent>\n  <creationTime>1796237411</creationTime>\n  \
             <memory snapshot='no'/>\n  <disks>\n    <disk name='vda' snapshot='internal'/>\n  \
             </disks>\n  <domain type='qemu'>\n    <name>t1</name>\n  </domain>\n</domainsnapshot>\n"
        );
        assert_eq!(snapshot.location(), "internal");
    }

    #[test]
    fn reads_back_what_it_prints() {
        let domain = crate::Domain::new(crate::DomainType::Qemu, "t1", 65536, 1).unwrap();
        let snapshot = Snapshot {
            name: "s3".into(),
            description: Some("a <b> & c".into()),
            state: SnapshotState::DiskSnapshot,
            parent: Some("s2".into()),
            creation_time: 1796237411,
            memory: MemoryKind::No,
            memory_file: None,
            disks: vec![SnapshotDisk {
                name: "vda".into(),
                kind: DiskSnapshotKind::External,
                file: Some("/images/vda.s3".into()),
            }],
            domain_xml: domain.to_xml(),
        };
        let xml = snapshot.to_xml();
        assert_eq!(Snapshot::from_xml(&xml).unwrap(), snapshot);
        assert_eq!(snapshot.location(), "external");
    }
}

//! What the qemu engine accepts in a definition, for `domcapabilities`: found by trying, never
//! kept in a table of our own. Each value of libvirt's vocabulary for an element (the values
//! libvirt's `domcapabilities` can list) is written into a minimal definition, read by the
//! domain parser (`oxvirt_domain::parse_domain_xml`: parse, normalize, validate) and given to
//! [`crate::check`], the engine's define-time dry run of its command-line builder. A value is
//! listed when both accept it, so the answer follows the parser and the engine as they change.
//! What depends on the host (firmware files, CPU models, machine types) is the caller's.

use oxvirt_domain::parse_domain_xml;

/// One element of `domcapabilities` (`<disk supported='yes'>` and its `<enum>`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    pub name: &'static str,
    pub supported: bool,
    pub enums: Vec<SupportEnum>,
}

/// `<enum name=...>` with the values the engine accepts, in libvirt's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportEnum {
    pub name: &'static str,
    pub values: Vec<&'static str>,
}

/// The engine's answers for one domain type and machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSupport {
    /// The most vCPUs a definition of this machine may have (at most `qemu_max`).
    pub vcpu_max: u32,
    pub iothreads: bool,
    /// `<os>`: its `firmware` enum.
    pub os: Support,
    /// `<os><loader>`: its `type`, `readonly` and `secure` enums (the paths are the caller's).
    pub loader: Support,
    pub host_passthrough: bool,
    /// `<cpu mode='maximum'>`: `None` when refused, else the `migratable` values accepted.
    pub maximum: Option<Vec<&'static str>>,
    pub host_model: bool,
    pub custom: bool,
    pub memory_backing: Support,
    /// `<devices>`' children, in libvirt's order.
    pub devices: Vec<Support>,
    /// `<features>`' children, in libvirt's order.
    pub features: Vec<Support>,
}

/// The parts of a trial definition; empty parts are left out.
#[derive(Default)]
struct Parts<'a> {
    /// Elements directly under `<domain>` (`<cpu>`, `<features>`, `<genid/>`, ...).
    top: &'a str,
    /// Attributes of `<os>`.
    os_attrs: &'a str,
    /// Elements of `<os>` after `<type>`.
    os: &'a str,
    devices: &'a str,
    /// The `<vcpu>` count.
    vcpus: Option<u32>,
}

struct Trial<'a> {
    virttype: &'a str,
    machine: &'a str,
}

impl Trial<'_> {
    fn accepts(&self, parts: Parts) -> bool {
        let xml = format!(
            "<domain type='{virttype}'>\n  <name>domcapabilities-trial</name>\n  \
             <memory unit='MiB'>256</memory>\n  <vcpu>{vcpus}</vcpu>\n  {top}\n  \
             <os{os_attrs}>\n    <type arch='x86_64' machine='{machine}'>hvm</type>\n    \
             {os}\n  </os>\n  <devices>\n    {devices}\n  </devices>\n</domain>\n",
            virttype = self.virttype,
            vcpus = parts.vcpus.unwrap_or(1),
            top = parts.top,
            os_attrs = parts.os_attrs,
            machine = oxvirt_xml::escape_attr(self.machine),
            os = parts.os,
            devices = parts.devices,
        );
        parse_domain_xml(&xml).is_ok_and(|domain| crate::check(&domain).is_ok())
    }

    fn devices(&self, devices: &str) -> bool {
        self.accepts(Parts {
            devices,
            ..Parts::default()
        })
    }

    fn top(&self, top: &str) -> bool {
        self.accepts(Parts {
            top,
            ..Parts::default()
        })
    }

    /// With ACPI, which UEFI firmware needs on x86_64.
    fn os(&self, os_attrs: &str, os: &str) -> bool {
        self.accepts(Parts {
            top: "<features><acpi/></features>",
            os_attrs,
            os,
            ..Parts::default()
        })
    }
}

/// The values of `vocabulary` for which `snippet(value)` is accepted.
fn accepted(
    name: &'static str,
    vocabulary: &[&'static str],
    mut accepts: impl FnMut(&str) -> bool,
) -> SupportEnum {
    SupportEnum {
        name,
        values: vocabulary
            .iter()
            .copied()
            .filter(|value| accepts(value))
            .collect(),
    }
}

/// An element that is supported when any value of its first enum is.
fn group(name: &'static str, enums: Vec<SupportEnum>) -> Support {
    Support {
        name,
        supported: enums.first().is_some_and(|e| !e.values.is_empty()),
        enums,
    }
}

fn flag(name: &'static str, supported: bool) -> Support {
    Support {
        name,
        supported,
        enums: Vec::new(),
    }
}

/// A disk of `device` on `bus`, with the target name that bus takes.
fn disk(device: &str, bus: &str, model: &str) -> String {
    let target = match bus {
        "virtio" => "vda",
        "ide" => "hda",
        "fdc" => "fda",
        _ => "sda",
    };
    let (disk_type, source) = match device {
        "lun" => ("block", "<source dev='/dev/oxvirt-trial'/>"),
        "cdrom" => ("file", ""),
        _ => ("file", "<source file='/var/lib/oxvirt/trial.img'/>"),
    };
    let model = if model.is_empty() {
        String::new()
    } else {
        format!(" model='{model}'")
    };
    format!(
        "<disk type='{disk_type}' device='{device}'{model}><driver name='qemu' type='raw'/>\
         {source}<target dev='{target}' bus='{bus}'/></disk>"
    )
}

const SPICE: &str = "<graphics type='spice' autoport='yes'/>";

/// What the qemu engine accepts for `virttype` (`qemu` or `kvm`) and `machine`, whose QEMU
/// takes at most `qemu_max` vCPUs.
pub fn engine_support(virttype: &str, machine: &str, qemu_max: u32) -> EngineSupport {
    let trial = Trial { virttype, machine };
    EngineSupport {
        vcpu_max: vcpu_max(&trial, qemu_max),
        iothreads: trial.top("<iothreads>1</iothreads>"),
        os: os(&trial),
        loader: loader(&trial),
        host_passthrough: trial.top("<cpu mode='host-passthrough'/>"),
        maximum: {
            let migratable = accepted("maximumMigratable", &["on", "off"], |value| {
                trial.top(&format!("<cpu mode='maximum' migratable='{value}'/>"))
            });
            trial
                .top("<cpu mode='maximum'/>")
                .then_some(migratable.values)
        },
        host_model: trial.top("<cpu mode='host-model'/>"),
        custom: trial.top("<cpu mode='custom' match='exact'><model>qemu64</model></cpu>"),
        memory_backing: group(
            "memoryBacking",
            vec![accepted(
                "sourceType",
                &["file", "anonymous", "memfd"],
                |value| {
                    trial.top(&format!(
                        "<memoryBacking><source type='{value}'/></memoryBacking>"
                    ))
                },
            )],
        ),
        devices: devices(&trial),
        features: features(&trial),
    }
}

/// The largest vCPU count up to `qemu_max` the engine takes (the parser has its own limits).
fn vcpu_max(trial: &Trial, qemu_max: u32) -> u32 {
    let takes = |count: u32| {
        trial.accepts(Parts {
            vcpus: Some(count),
            ..Parts::default()
        })
    };
    let (mut low, mut high) = (1, qemu_max.max(1));
    if takes(high) {
        return high;
    }
    // takes(low) holds (one vCPU), takes(high) does not.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if takes(middle) {
            low = middle;
        } else {
            high = middle;
        }
    }
    low
}

fn os(trial: &Trial) -> Support {
    let firmware = accepted("firmware", &["bios", "efi"], |value| {
        trial.os(&format!(" firmware='{value}'"), "")
    });
    Support {
        name: "os",
        supported: true,
        enums: vec![firmware],
    }
}

fn loader(trial: &Trial) -> Support {
    const CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
    let loader = |attrs: &str| trial.os("", &format!("<loader{attrs}>{CODE}</loader>"));
    group(
        "loader",
        vec![
            accepted("type", &["rom", "pflash"], |value| {
                loader(&format!(" type='{value}'"))
            }),
            accepted("readonly", &["yes", "no"], |value| {
                loader(&format!(" type='pflash' readonly='{value}'"))
            }),
            accepted("secure", &["yes", "no"], |value| {
                loader(&format!(" type='pflash' readonly='yes' secure='{value}'"))
            }),
        ],
    )
}

fn devices(trial: &Trial) -> Vec<Support> {
    let devices = |xml: &str| trial.devices(xml);
    let mut list = Vec::new();

    list.push(group(
        "disk",
        vec![
            accepted(
                "diskDevice",
                &["disk", "cdrom", "floppy", "lun"],
                |device| {
                    let buses: &[&str] = match device {
                        "floppy" => &["fdc"],
                        "lun" => &["scsi", "virtio"],
                        _ => &["virtio", "sata", "ide", "scsi"],
                    };
                    buses.iter().any(|bus| devices(&disk(device, bus, "")))
                },
            ),
            accepted(
                "bus",
                &[
                    "ide", "fdc", "scsi", "virtio", "xen", "usb", "uml", "sata", "sd",
                ],
                |bus| {
                    let device = if bus == "fdc" { "floppy" } else { "disk" };
                    devices(&disk(device, bus, ""))
                },
            ),
            accepted(
                "model",
                &["virtio", "virtio-transitional", "virtio-non-transitional"],
                |model| devices(&disk("disk", "virtio", model)),
            ),
        ],
    ));

    list.push(group(
        "graphics",
        vec![accepted(
            "type",
            &[
                "sdl",
                "vnc",
                "spice",
                "egl-headless",
                "dbus",
                "rdp",
                "desktop",
            ],
            |kind| devices(&format!("<graphics type='{kind}'/>")),
        )],
    ));

    list.push(group(
        "video",
        vec![accepted(
            "modelType",
            &[
                "vga",
                "cirrus",
                "vmvga",
                "xen",
                "vbox",
                "qxl",
                "parallels",
                "virtio",
                "gop",
                "none",
                "bochs",
                "ramfb",
            ],
            |model| devices(&format!("<video><model type='{model}'/></video>")),
        )],
    ));

    let usb = |policy: &str| {
        format!(
            "<hostdev mode='subsystem' type='usb'><source{policy}><vendor id='0x1d6b'/>\
             <product id='0x0002'/></source></hostdev>"
        )
    };
    let pci = |driver: &str| {
        format!(
            "<hostdev mode='subsystem' type='pci' managed='yes'>{driver}<source><address \
             domain='0x0000' bus='0x06' slot='0x02' function='0x0'/></source></hostdev>"
        )
    };
    list.push(group(
        "hostdev",
        vec![
            accepted("mode", &["subsystem", "capabilities"], |mode| {
                if mode == "subsystem" {
                    devices(&usb("")) || devices(&pci(""))
                } else {
                    devices("<hostdev mode='capabilities' type='misc'><source><char>/dev/null</char></source></hostdev>")
                }
            }),
            accepted(
                "startupPolicy",
                &["default", "mandatory", "requisite", "optional"],
                |policy| {
                    // libvirt's `default` is the attribute left out.
                    if policy == "default" {
                        devices(&usb(""))
                    } else {
                        devices(&usb(&format!(" startupPolicy='{policy}'")))
                    }
                },
            ),
            accepted(
                "subsysType",
                &["usb", "pci", "scsi", "scsi_host", "mdev"],
                |kind| match kind {
                    "usb" => devices(&usb("")),
                    "pci" => devices(&pci("")),
                    "scsi" => devices(
                        "<hostdev mode='subsystem' type='scsi'><source><adapter \
                         name='scsi_host0'/><address bus='0' target='0' unit='0'/></source>\
                         </hostdev>",
                    ),
                    "scsi_host" => devices(
                        "<hostdev mode='subsystem' type='scsi_host'><source protocol='vhost' \
                         wwpn='naa.5001405df3e54061'/></hostdev>",
                    ),
                    _ => devices(
                        "<hostdev mode='subsystem' type='mdev' model='vfio-pci'><source>\
                         <address uuid='c2177883-f1bb-47f0-914d-32a22e3a8804'/></source>\
                         </hostdev>",
                    ),
                },
            ),
            accepted("capsType", &["storage", "misc", "net"], |kind| {
                devices(&format!(
                    "<hostdev mode='capabilities' type='{kind}'><source><char>/dev/null</char>\
                     </source></hostdev>"
                ))
            }),
            // (libvirt's `default`, its own choice of backend, is not written in a definition.)
            accepted("pciBackend", &["kvm", "vfio", "xen"], |backend| {
                devices(&pci(&format!("<driver name='{backend}'/>")))
            }),
        ],
    ));

    list.push(group(
        "rng",
        vec![
            accepted(
                "model",
                &["virtio", "virtio-transitional", "virtio-non-transitional"],
                |model| {
                    devices(&format!(
                        "<rng model='{model}'><backend model='random'>/dev/urandom</backend></rng>"
                    ))
                },
            ),
            accepted("backendModel", &["random", "egd", "builtin"], |backend| {
                let body = match backend {
                    "random" => "<backend model='random'>/dev/urandom</backend>",
                    "egd" => {
                        "<backend model='egd' type='tcp'><source mode='connect' \
                              host='127.0.0.1' port='1234'/></backend>"
                    }
                    _ => "<backend model='builtin'/>",
                };
                devices(&format!("<rng model='virtio'>{body}</rng>"))
            }),
        ],
    ));

    list.push(group(
        "filesystem",
        vec![accepted(
            "driverType",
            &["path", "handle", "loop", "nbd", "ploop", "virtiofs"],
            |driver| {
                devices(&format!(
                    "<filesystem type='mount' accessmode='passthrough'><driver type='{driver}'/>\
                     <source dir='/var/lib/oxvirt'/><target dir='trial'/></filesystem>"
                ))
            },
        )],
    ));

    list.push(group(
        "tpm",
        vec![
            accepted(
                "model",
                &["tpm-tis", "tpm-crb", "tpm-spapr", "spapr-tpm-proxy"],
                |model| {
                    devices(&format!(
                        "<tpm model='{model}'><backend type='emulator' version='2.0'/></tpm>"
                    ))
                },
            ),
            accepted(
                "backendModel",
                &["passthrough", "emulator", "external"],
                |backend| {
                    let body = match backend {
                        "passthrough" => {
                            "<backend type='passthrough'><device path='/dev/tpm0'/></backend>"
                        }
                        "emulator" => "<backend type='emulator'/>",
                        _ => {
                            "<backend type='external'><source type='unix' mode='connect' \
                              path='/run/oxvirt-trial.sock'/></backend>"
                        }
                    };
                    devices(&format!("<tpm model='tpm-crb'>{body}</tpm>"))
                },
            ),
            accepted("backendVersion", &["1.2", "2.0"], |version| {
                devices(&format!(
                    "<tpm model='tpm-tis'><backend type='emulator' version='{version}'/></tpm>"
                ))
            }),
        ],
    ));

    list.push(group(
        "redirdev",
        vec![accepted("bus", &["usb"], |bus| {
            devices(&format!("{SPICE}<redirdev bus='{bus}' type='spicevmc'/>"))
        })],
    ));

    list.push(group(
        "channel",
        vec![accepted("type", &["pty", "unix", "spicevmc"], |kind| {
            devices(&match kind {
                "pty" => "<channel type='pty'><target type='virtio' \
                          name='org.qemu.guest_agent.0'/></channel>"
                    .to_string(),
                "unix" => "<channel type='unix'><source mode='bind'/><target type='virtio' \
                           name='org.qemu.guest_agent.0'/></channel>"
                    .to_string(),
                _ => format!(
                    "{SPICE}<channel type='spicevmc'><target type='virtio' \
                     name='com.redhat.spice.0'/></channel>"
                ),
            })
        })],
    ));

    list.push(group(
        "crypto",
        vec![
            accepted("model", &["virtio"], |model| {
                devices(&format!(
                    "<crypto model='{model}' type='qemu'><backend model='builtin' \
                     queues='1'/></crypto>"
                ))
            }),
            accepted("type", &["qemu"], |kind| {
                devices(&format!(
                    "<crypto model='virtio' type='{kind}'><backend model='builtin' \
                     queues='1'/></crypto>"
                ))
            }),
            accepted("backendModel", &["builtin", "lkcf"], |backend| {
                devices(&format!(
                    "<crypto model='virtio' type='qemu'><backend model='{backend}' \
                     queues='1'/></crypto>"
                ))
            }),
        ],
    ));

    list.push(group(
        "interface",
        vec![accepted("backendType", &["default", "passt"], |backend| {
            // libvirt's `default` is QEMU's own user-mode stack: no <backend>.
            if backend == "default" {
                devices("<interface type='user'><model type='virtio'/></interface>")
            } else {
                devices(&format!(
                    "<interface type='user'><backend type='{backend}'/><model \
                     type='virtio'/></interface>"
                ))
            }
        })],
    ));

    list.push(group(
        "panic",
        vec![accepted(
            "model",
            &["isa", "pseries", "hyperv", "s390", "pvpanic"],
            |model| devices(&format!("<panic model='{model}'/>")),
        )],
    ));
    list
}

fn features(trial: &Trial) -> Vec<Support> {
    let features = |xml: &str| trial.top(&format!("<features>{xml}</features>"));
    let hyperv = accepted(
        "features",
        &[
            "relaxed",
            "vapic",
            "spinlocks",
            "vpindex",
            "runtime",
            "synic",
            "stimer",
            "reset",
            "vendor_id",
            "frequencies",
            "reenlightenment",
            "tlbflush",
            "ipi",
            "evmcs",
            "avic",
        ],
        |feature| {
            let attrs = match feature {
                "spinlocks" => " retries='4096'",
                "vendor_id" => " value='KVM Hv'",
                _ => "",
            };
            features(&format!(
                "<hyperv mode='custom'><{feature} state='on'{attrs}/></hyperv>"
            ))
        },
    );
    vec![
        // An ARM interrupt controller: no x86 machine has one.
        flag("gic", false),
        flag("vmcoreinfo", features("<vmcoreinfo state='on'/>")),
        flag("genid", trial.top("<genid/>")),
        flag(
            "backingStoreInput",
            trial.devices(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source \
                 file='/var/lib/oxvirt/trial.qcow2'/><backingStore type='file'><format \
                 type='raw'/><source file='/var/lib/oxvirt/trial.img'/></backingStore><target \
                 dev='vda' bus='virtio'/></disk>",
            ),
        ),
        // libvirt's pull/push backup jobs (virsh backup-begin): oxvirt has no such verb.
        flag("backup", false),
        flag(
            "async-teardown",
            features("<async-teardown enabled='yes'/>"),
        ),
        flag(
            "sev",
            trial.top("<launchSecurity type='sev'><policy>0x0003</policy></launchSecurity>"),
        ),
        flag(
            "sgx",
            trial.devices(
                "<memory model='sgx-epc'><target><size unit='KiB'>16384</size></target></memory>",
            ),
        ),
        group("hyperv", vec![hyperv]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(support: &'a Support, name: &str) -> &'a [&'static str] {
        &support
            .enums
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no enum {name} in {support:?}"))
            .values
    }

    fn device<'a>(support: &'a EngineSupport, name: &str) -> &'a Support {
        support
            .devices
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    /// The parser and the engine decide: values they refuse are not listed, and a
    /// definition written with every listed value is accepted.
    #[test]
    fn listed_values_are_the_accepted_ones() {
        let support = engine_support("qemu", "pc-i440fx-7.2", 255);
        let disk = device(&support, "disk");
        assert!(disk.supported);
        assert!(values(disk, "bus").contains(&"virtio"));
        assert!(!values(disk, "bus").contains(&"xen"), "{disk:?}");
        assert!(values(disk, "diskDevice").contains(&"cdrom"));
        let video = device(&support, "video");
        assert!(values(video, "modelType").contains(&"vga"));
        assert!(!values(video, "modelType").contains(&"vbox"));
        // No <filesystem> in oxvirt's model: refused, so not supported.
        assert!(!device(&support, "filesystem").supported);
        assert_eq!(support.vcpu_max, 255);
        assert!(support.memory_backing.supported);
        let gic = support.features.iter().find(|f| f.name == "gic");
        assert!(gic.is_some_and(|f| !f.supported));
        // Secure Boot needs SMM, which i440fx lacks.
        assert_eq!(values(&support.loader, "secure"), ["no"]);
        let q35 = engine_support("qemu", "pc-q35-7.2", 288);
        assert_eq!(q35.vcpu_max, 288);
    }
}

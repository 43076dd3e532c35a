//! The domain XML `oxvirt install` defines, built as virt-install 4.1 builds it for the same
//! arguments (its defaults included: q35 with 14 PCIe root ports for OSes that support it, a
//! SPICE display unless told otherwise, the guest agent channel, `<metadata>` naming the
//! libosinfo OS), so that `--print-xml` prints what `virt-install --print-xml` prints.
//!
//! A media install has two documents: the one the installer boots with (`install`: the CD-ROM
//! first, or the tree's kernel; `on_reboot` destroy so that the installer's reboot ends the phase)
//! and the definition kept afterwards (`final`: boots the disk; the CD-ROM tray is empty).

use oxvirt_xml::{escape_attr as attr, escape_text as text};

use super::options::{CpuOption, GraphicsOption, NetworkOption};
use super::osinfo::Os;

/// The machine virt-install takes when the OS does not support q35: the first machine of QEMU
/// 7.2's capabilities (Debian 12's QEMU), as libvirt lists them.
pub const DEFAULT_PC_MACHINE: &str = "pc-i440fx-7.2";

/// A disk as it goes into the XML (paths resolved, targets assigned).
#[derive(Debug, Clone, PartialEq)]
pub struct XmlDisk {
    /// `disk` or `cdrom`.
    pub device: String,
    /// None: an empty CD-ROM tray.
    pub path: Option<String>,
    pub format: Option<String>,
    pub bus: String,
    pub target: String,
    pub cache: Option<String>,
    pub io: Option<String>,
}

/// What boots the first time.
#[derive(Debug, Clone, PartialEq)]
pub enum InstallMedia {
    /// `--import` (or `--boot` given): one document.
    None,
    /// `--cdrom ISO`: the ISO in a CD-ROM drive, booted first.
    Cdrom(String),
    /// `--location`: the tree's kernel and initrd (copied out), with `--extra-args`.
    Kernel {
        kernel: String,
        initrd: String,
        args: Option<String>,
    },
}

/// Everything the documents are made of.
#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    pub uuid: String,
    pub os: Os,
    pub memory_mib: u64,
    pub vcpus: (u32, Option<u32>),
    pub cpu: CpuOption,
    pub machine: String,
    pub uefi: bool,
    pub disks: Vec<XmlDisk>,
    /// (interface, its MAC).
    pub interfaces: Vec<(NetworkOption, String)>,
    pub graphics: GraphicsOption,
    pub console_target: Option<String>,
    /// `--boot hd,cdrom`; empty: `hd`.
    pub boot_devices: Vec<String>,
    /// `--boot kernel=,initrd=,kernel_args=`.
    pub direct_kernel: Option<(Option<String>, Option<String>, Option<String>)>,
    pub media: InstallMedia,
    /// The cloud-init seed ISO, attached for the first boot only.
    pub seed: Option<String>,
}

impl Plan {
    pub fn is_q35(&self) -> bool {
        self.machine == "q35" || self.machine.starts_with("pc-q35")
    }

    /// Whether the first boot uses a document of its own.
    pub fn has_install_phase(&self) -> bool {
        self.media != InstallMedia::None || self.seed.is_some()
    }

    /// The bus a CD-ROM drive goes on: SATA on q35, IDE on i440fx.
    pub fn cdrom_bus(&self) -> &'static str {
        if self.is_q35() {
            "sata"
        } else {
            "ide"
        }
    }

    /// A raw CD-ROM drive on [`Self::cdrom_bus`], at the next free target (its medium is given
    /// when it is written).
    fn cdrom_drive(&self, targets: &mut Targets) -> XmlDisk {
        let bus = self.cdrom_bus();
        XmlDisk {
            device: "cdrom".to_string(),
            path: None,
            format: Some("raw".to_string()),
            bus: bus.to_string(),
            target: targets.next(bus),
            cache: None,
            io: None,
        }
    }

    /// The install-phase document, when there is one.
    pub fn install_xml(&self) -> Option<String> {
        self.has_install_phase().then(|| self.document(true))
    }

    /// The definition kept after the install.
    pub fn final_xml(&self) -> String {
        self.document(false)
    }

    fn has_spice(&self) -> bool {
        matches!(self.graphics, GraphicsOption::Spice { .. })
    }

    fn document(&self, install: bool) -> String {
        let mut x = String::new();
        x.push_str("<domain type=\"kvm\">\n");
        x.push_str(&format!("  <name>{}</name>\n", text(&self.name)));
        x.push_str(&format!("  <uuid>{}</uuid>\n", self.uuid));
        if let Some(id) = self.os.id {
            x.push_str("  <metadata>\n");
            x.push_str("    <libosinfo:libosinfo xmlns:libosinfo=\"http://libosinfo.org/xmlns/libvirt/domain/1.0\">\n");
            x.push_str(&format!("      <libosinfo:os id=\"{}\"/>\n", attr(id)));
            x.push_str("    </libosinfo:libosinfo>\n");
            x.push_str("  </metadata>\n");
        }
        let kib = self.memory_mib * 1024;
        x.push_str(&format!("  <memory>{kib}</memory>\n"));
        x.push_str(&format!("  <currentMemory>{kib}</currentMemory>\n"));
        match self.vcpus {
            (current, Some(max)) => {
                x.push_str(&format!("  <vcpu current=\"{current}\">{max}</vcpu>\n"))
            }
            (count, None) => x.push_str(&format!("  <vcpu>{count}</vcpu>\n")),
        }
        self.write_os(&mut x, install);
        self.write_features(&mut x);
        match &self.cpu {
            CpuOption::HostPassthrough => x.push_str("  <cpu mode=\"host-passthrough\"/>\n"),
            CpuOption::HostModel => x.push_str("  <cpu mode=\"host-model\"/>\n"),
            CpuOption::Model { name, features } => {
                x.push_str("  <cpu mode=\"custom\" match=\"exact\">\n");
                x.push_str(&format!("    <model>{}</model>\n", text(name)));
                for (policy, feature) in features {
                    // virt-install writes `+feature` as policy force.
                    let policy = if *policy == "require" {
                        "force"
                    } else {
                        policy
                    };
                    x.push_str(&format!(
                        "    <feature policy=\"{policy}\" name=\"{}\"/>\n",
                        attr(feature)
                    ));
                }
                x.push_str("  </cpu>\n");
            }
        }
        let offset = if self.os.windows { "localtime" } else { "utc" };
        x.push_str(&format!("  <clock offset=\"{offset}\">\n"));
        x.push_str("    <timer name=\"rtc\" tickpolicy=\"catchup\"/>\n");
        x.push_str("    <timer name=\"pit\" tickpolicy=\"delay\"/>\n");
        x.push_str("    <timer name=\"hpet\" present=\"no\"/>\n");
        if self.os.windows {
            x.push_str("    <timer name=\"hypervclock\" present=\"yes\"/>\n");
        }
        x.push_str("  </clock>\n");
        x.push_str("  <pm>\n    <suspend-to-mem enabled=\"no\"/>\n    <suspend-to-disk enabled=\"no\"/>\n  </pm>\n");
        x.push_str("  <devices>\n");
        self.write_devices(&mut x, install);
        x.push_str("  </devices>\n");
        if install && self.seed.is_some() {
            // cloud-init's NoCloud datasource also looks for `ds=nocloud` in the SMBIOS serial.
            x.push_str("  <sysinfo type=\"smbios\">\n    <system>\n      <entry name=\"serial\">ds=nocloud</entry>\n    </system>\n  </sysinfo>\n");
        }
        if install {
            x.push_str("  <on_reboot>destroy</on_reboot>\n");
        }
        x.push_str("</domain>\n");
        x
    }

    fn write_os(&self, x: &mut String, install: bool) {
        if self.uefi {
            x.push_str("  <os firmware=\"efi\">\n");
        } else {
            x.push_str("  <os>\n");
        }
        x.push_str(&format!(
            "    <type arch=\"x86_64\" machine=\"{}\">hvm</type>\n",
            attr(&self.machine)
        ));
        let kernel = |x: &mut String,
                      kernel: &Option<String>,
                      initrd: &Option<String>,
                      args: &Option<String>| {
            if let Some(kernel) = kernel {
                x.push_str(&format!("    <kernel>{}</kernel>\n", text(kernel)));
            }
            if let Some(initrd) = initrd {
                x.push_str(&format!("    <initrd>{}</initrd>\n", text(initrd)));
            }
            if let Some(args) = args {
                x.push_str(&format!("    <cmdline>{}</cmdline>\n", text(args)));
            }
        };
        match (&self.media, install) {
            (
                InstallMedia::Kernel {
                    kernel: k,
                    initrd,
                    args,
                },
                true,
            ) => kernel(x, &Some(k.clone()), &Some(initrd.clone()), args),
            (InstallMedia::Cdrom(_), true) => {
                x.push_str("    <boot dev=\"cdrom\"/>\n    <boot dev=\"hd\"/>\n")
            }
            // An import with a cloud-init seed: the seed is found through SMBIOS; the first
            // boot is left to the firmware's default order, as virt-install leaves it.
            (InstallMedia::None, true) => x.push_str("    <smbios mode=\"sysinfo\"/>\n"),
            _ => match &self.direct_kernel {
                Some((k, initrd, args)) => kernel(x, k, initrd, args),
                None if self.boot_devices.is_empty() => x.push_str("    <boot dev=\"hd\"/>\n"),
                None => {
                    for dev in &self.boot_devices {
                        x.push_str(&format!("    <boot dev=\"{dev}\"/>\n"));
                    }
                }
            },
        }
        x.push_str("  </os>\n");
    }

    fn write_features(&self, x: &mut String) {
        x.push_str("  <features>\n    <acpi/>\n    <apic/>\n");
        if self.os.windows {
            x.push_str("    <hyperv>\n      <relaxed state=\"on\"/>\n      <vapic state=\"on\"/>\n      <spinlocks state=\"on\" retries=\"8191\"/>\n    </hyperv>\n");
        }
        // virt-install turns VMware's I/O port off with SPICE (its tablet does the job).
        if self.has_spice() {
            x.push_str("    <vmport state=\"off\"/>\n");
        }
        x.push_str("  </features>\n");
    }

    fn write_disk(x: &mut String, disk: &XmlDisk, path: Option<&str>) {
        x.push_str(&format!(
            "    <disk type=\"file\" device=\"{}\">\n",
            disk.device
        ));
        if let Some(path) = path {
            let format = disk.format.as_deref().unwrap_or("raw");
            let mut driver = format!("<driver name=\"qemu\" type=\"{format}\"");
            if let Some(cache) = &disk.cache {
                driver.push_str(&format!(" cache=\"{cache}\""));
            }
            if let Some(io) = &disk.io {
                driver.push_str(&format!(" io=\"{io}\""));
            }
            x.push_str(&format!("      {driver}/>\n"));
            x.push_str(&format!("      <source file=\"{}\"/>\n", attr(path)));
        }
        x.push_str(&format!(
            "      <target dev=\"{}\" bus=\"{}\"/>\n",
            disk.target, disk.bus
        ));
        if disk.device == "cdrom" {
            x.push_str("      <readonly/>\n");
        }
        x.push_str("    </disk>\n");
    }

    fn write_devices(&self, x: &mut String, install: bool) {
        x.push_str("    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n");
        for disk in &self.disks {
            Self::write_disk(x, disk, disk.path.as_deref());
        }
        let mut targets = Targets::of(&self.disks);
        if let InstallMedia::Cdrom(iso) = &self.media {
            let drive = self.cdrom_drive(&mut targets);
            // The final definition keeps the drive with its tray empty.
            Self::write_disk(x, &drive, install.then_some(iso.as_str()));
        }
        if self.os.q35() {
            x.push_str("    <controller type=\"usb\" model=\"qemu-xhci\" ports=\"15\"/>\n");
        } else {
            x.push_str("    <controller type=\"usb\" model=\"ich9-ehci1\"/>\n");
            for (index, port) in [0, 2, 4].iter().enumerate() {
                x.push_str(&format!(
                    "    <controller type=\"usb\" model=\"ich9-uhci{}\">\n      <master startport=\"{port}\"/>\n    </controller>\n",
                    index + 1
                ));
            }
        }
        if self.disks.iter().any(|disk| disk.bus == "scsi") {
            x.push_str("    <controller type=\"scsi\" model=\"virtio-scsi\"/>\n");
        }
        if self.is_q35() {
            // virt-install leaves 14 free root ports for hotplug.
            x.push_str("    <controller type=\"pci\" model=\"pcie-root\"/>\n");
            for _ in 0..14 {
                x.push_str("    <controller type=\"pci\" model=\"pcie-root-port\"/>\n");
            }
        }
        for (interface, mac) in &self.interfaces {
            let (kind, source, name, model) = match interface {
                NetworkOption::None => continue,
                NetworkOption::Network { name, model, .. } => ("network", "network", name, model),
                NetworkOption::Bridge { name, model, .. } => ("bridge", "bridge", name, model),
            };
            let model = model.clone().unwrap_or_else(|| {
                if self.os.virtio {
                    "virtio".to_string()
                } else if self.is_q35() {
                    "e1000e".to_string()
                } else {
                    "e1000".to_string()
                }
            });
            x.push_str(&format!("    <interface type=\"{kind}\">\n"));
            x.push_str(&format!("      <source {source}=\"{}\"/>\n", attr(name)));
            x.push_str(&format!("      <mac address=\"{mac}\"/>\n"));
            x.push_str(&format!("      <model type=\"{}\"/>\n", attr(&model)));
            x.push_str("    </interface>\n");
        }
        match &self.console_target {
            Some(target) => x.push_str(&format!(
                "    <console type=\"pty\">\n      <target type=\"{target}\"/>\n    </console>\n"
            )),
            None => x.push_str("    <console type=\"pty\"/>\n"),
        }
        if self.os.virtio {
            x.push_str("    <channel type=\"unix\">\n      <source mode=\"bind\"/>\n      <target type=\"virtio\" name=\"org.qemu.guest_agent.0\"/>\n    </channel>\n");
        }
        let spice = self.has_spice();
        if spice {
            x.push_str("    <channel type=\"spicevmc\">\n      <target type=\"virtio\" name=\"com.redhat.spice.0\"/>\n    </channel>\n");
        }
        if self.graphics != GraphicsOption::None {
            x.push_str("    <input type=\"tablet\" bus=\"usb\"/>\n");
        }
        match &self.graphics {
            GraphicsOption::None => {}
            GraphicsOption::Vnc {
                listen,
                port,
                password,
            } => {
                let mut element = format!("<graphics type=\"vnc\" port=\"{}\"", port.unwrap_or(-1));
                if let Some(password) = password {
                    element.push_str(&format!(" passwd=\"{}\"", attr(password)));
                }
                if let Some(listen) = listen {
                    element.push_str(&format!(" listen=\"{}\"", attr(listen)));
                }
                x.push_str(&format!("    {element}/>\n"));
            }
            GraphicsOption::Spice {
                listen,
                port,
                password,
            } => {
                let mut element = match port {
                    Some(port) => format!("<graphics type=\"spice\" port=\"{port}\""),
                    None => "<graphics type=\"spice\" port=\"-1\" tlsPort=\"-1\" autoport=\"yes\""
                        .to_string(),
                };
                if let Some(password) = password {
                    element.push_str(&format!(" passwd=\"{}\"", attr(password)));
                }
                if let Some(listen) = listen {
                    element.push_str(&format!(" listen=\"{}\"", attr(listen)));
                }
                x.push_str(&format!(
                    "    {element}>\n      <image compression=\"off\"/>\n    </graphics>\n"
                ));
            }
        }
        if spice {
            let sound = if self.is_q35() { "ich9" } else { "ich6" };
            x.push_str(&format!("    <sound model=\"{sound}\"/>\n"));
        }
        if self.graphics != GraphicsOption::None {
            let video = if self.os.virtio_gpu {
                "virtio"
            } else if spice {
                "qxl"
            } else {
                "vga"
            };
            x.push_str(&format!(
                "    <video>\n      <model type=\"{video}\"/>\n    </video>\n"
            ));
        }
        if spice {
            x.push_str("    <redirdev bus=\"usb\" type=\"spicevmc\"/>\n");
            x.push_str("    <redirdev bus=\"usb\" type=\"spicevmc\"/>\n");
        }
        if self.os.virtio {
            x.push_str("    <memballoon model=\"virtio\"/>\n");
            x.push_str("    <rng model=\"virtio\">\n      <backend model=\"random\">/dev/urandom</backend>\n    </rng>\n");
        }
        if let Some(seed) = &self.seed {
            // The seed goes last, after virt-install has added its default devices.
            let mut targets = targets;
            if let InstallMedia::Cdrom(_) = self.media {
                targets.next(self.cdrom_bus());
            }
            let drive = self.cdrom_drive(&mut targets);
            Self::write_disk(x, &drive, install.then_some(seed.as_str()));
        }
    }
}

/// Target names in use, to give the next disk on a bus its name (`vda`, `sda`, `hda`, ...).
#[derive(Debug, Clone, Default)]
pub struct Targets {
    used: Vec<String>,
}

impl Targets {
    pub fn of(disks: &[XmlDisk]) -> Targets {
        Targets {
            used: disks.iter().map(|disk| disk.target.clone()).collect(),
        }
    }

    /// The first free name of the bus's prefix (SATA, SCSI and USB share `sd`).
    pub fn next(&mut self, bus: &str) -> String {
        let prefix = match bus {
            "virtio" => "vd",
            "ide" => "hd",
            _ => "sd",
        };
        for index in 0.. {
            let name = format!("{prefix}{}", disk_letters(index));
            if !self.used.contains(&name) {
                self.used.push(name.clone());
                return name;
            }
        }
        unreachable!("the loop returns")
    }
}

/// 0 -> a, 25 -> z, 26 -> aa, as Linux names disks.
fn disk_letters(mut index: usize) -> String {
    let mut letters = Vec::new();
    loop {
        letters.push(b'a' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    letters.reverse();
    String::from_utf8_lossy(&letters).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_follow_linux() {
        assert_eq!(disk_letters(0), "a");
        assert_eq!(disk_letters(25), "z");
        assert_eq!(disk_letters(26), "aa");
        let mut targets = Targets::default();
        assert_eq!(targets.next("sata"), "sda");
        assert_eq!(targets.next("scsi"), "sdb");
        assert_eq!(targets.next("virtio"), "vda");
        assert_eq!(targets.next("ide"), "hda");
    }
}

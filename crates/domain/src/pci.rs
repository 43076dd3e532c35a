//! PCI topology as libvirt 9.0 lays it out when it defines a domain (its
//! `qemuDomainAssignPCIAddresses` and `domain_addr.c`): which buses (PCI controllers) a domain
//! gets, and which `<address type='pci'>` each PCI device gets.
//!
//! The algorithm is libvirt's, step by step, so that the result is the same address by address:
//!
//! 1. A *dry run* over an address set with one bus per PCI controller: the chipset's fixed
//!    devices (PIIX3 at 00:01, or on q35 the ICH9 at 00:1f and the primary video at 00:01.0),
//!    then every device without an address in libvirt's order (PCI controllers, NICs, other
//!    controllers, virtio disks, balloon, RNGs, videos, virtio inputs). When no slot fits, the
//!    dry run *grows* the set by a bus of the kind the device needs: a `pci-bridge` for a PCI
//!    device on `pc`, a `pcie-root-port` for a PCIe device on q35, a `pcie-root-port` plus a
//!    `pcie-to-pci-bridge` for the first conventional PCI device on q35. On `pc` one slot is held
//!    back for a future bridge; on a new q35 domain whose buses libvirt added, one spare root
//!    port is added for hotplug. Each added bus becomes a controller, which needs a slot too.
//! 2. The real pass over the final buses: explicit addresses are checked (bus exists and takes
//!    the device, slot in range, not used twice), the chipset devices placed, every other device
//!    given the first free slot that takes it (root ports share a slot as functions 0..7).
//! 3. `multifunction='on'` on function 0 of every slot with other functions in use; the
//!    controllers' defaults (`<model name>`, `chassisNr`, `chassis`, `port`).
//!
//! Devices are "PCI Express" on q35 (`pcie-root` bus 0) where libvirt says so (virtio, e1000e,
//! qemu-xhci, bochs) and conventional PCI otherwise (rtl8139, e1000, lsilogic, vga, cirrus, the
//! ICH9 USB2 set, ...); on `pc` everything is conventional PCI.

use crate::error::{DomainError, Location};
use crate::model::*;

// Connect flags: what a device plugs in as, and what a bus accepts (libvirt's
// VIR_PCI_CONNECT_*).
const PCI_DEVICE: u32 = 1 << 0;
const PCIE_DEVICE: u32 = 1 << 1;
const PCIE_ROOT_PORT: u32 = 1 << 2;
const DMI_TO_PCI_BRIDGE: u32 = 1 << 3;
const PCI_BRIDGE: u32 = 1 << 4;
const PCIE_TO_PCI_BRIDGE: u32 = 1 << 5;
const TYPES_MASK: u32 =
    PCI_DEVICE | PCIE_DEVICE | PCIE_ROOT_PORT | DMI_TO_PCI_BRIDGE | PCI_BRIDGE | PCIE_TO_PCI_BRIDGE;
const ENDPOINT: u32 = PCI_DEVICE | PCIE_DEVICE;
/// The device may be placed automatically / the bus takes automatically placed devices.
const AUTOASSIGN: u32 = 1 << 8;
/// Root ports share a slot, one per function.
const AGGREGATE_SLOT: u32 = 1 << 9;

/// The PCI controller models oxvirt lays out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PciModel {
    PciRoot,
    PcieRoot,
    PcieRootPort,
    PciBridge,
    DmiToPciBridge,
    PcieToPciBridge,
}

impl PciModel {
    pub(crate) fn from_name(name: &str) -> Option<PciModel> {
        Some(match name {
            "pci-root" => PciModel::PciRoot,
            "pcie-root" => PciModel::PcieRoot,
            "pcie-root-port" => PciModel::PcieRootPort,
            "pci-bridge" => PciModel::PciBridge,
            "dmi-to-pci-bridge" => PciModel::DmiToPciBridge,
            "pcie-to-pci-bridge" => PciModel::PcieToPciBridge,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            PciModel::PciRoot => "pci-root",
            PciModel::PcieRoot => "pcie-root",
            PciModel::PcieRootPort => "pcie-root-port",
            PciModel::PciBridge => "pci-bridge",
            PciModel::DmiToPciBridge => "dmi-to-pci-bridge",
            PciModel::PcieToPciBridge => "pcie-to-pci-bridge",
        }
    }

    /// libvirt's `<model name>` for the model (QEMU 7.2 has the generic root port).
    fn default_model_name(self) -> Option<&'static str> {
        match self {
            PciModel::PciRoot | PciModel::PcieRoot => None,
            PciModel::PcieRootPort => Some("pcie-root-port"),
            PciModel::PciBridge => Some("pci-bridge"),
            PciModel::DmiToPciBridge => Some("i82801b11-bridge"),
            PciModel::PcieToPciBridge => Some("pcie-pci-bridge"),
        }
    }

    /// The `<model name>`s libvirt accepts for the model.
    pub(crate) fn model_names(self) -> &'static [&'static str] {
        match self {
            PciModel::PciRoot | PciModel::PcieRoot => &[],
            PciModel::PcieRootPort => &["pcie-root-port", "ioh3420"],
            PciModel::PciBridge => &["pci-bridge"],
            PciModel::DmiToPciBridge => &["i82801b11-bridge"],
            PciModel::PcieToPciBridge => &["pcie-pci-bridge"],
        }
    }

    /// How the controller plugs into its parent bus.
    fn connect(self) -> u32 {
        match self {
            PciModel::PciRoot | PciModel::PcieRoot => 0,
            PciModel::PcieRootPort => PCIE_ROOT_PORT | AGGREGATE_SLOT,
            PciModel::PciBridge => PCI_BRIDGE,
            PciModel::DmiToPciBridge => DMI_TO_PCI_BRIDGE,
            PciModel::PcieToPciBridge => PCIE_TO_PCI_BRIDGE,
        }
    }
}

/// The model of a PCI controller, if it is one oxvirt lays out.
pub(crate) fn controller_model(c: &Controller) -> Option<PciModel> {
    if c.controller_type != ControllerType::Pci {
        return None;
    }
    c.model.as_deref().and_then(PciModel::from_name)
}

#[derive(Clone, Copy, Default)]
struct Slot {
    functions: u8,
    aggregate: bool,
}

#[derive(Clone)]
struct Bus {
    model: PciModel,
    flags: u32,
    min_slot: u8,
    max_slot: u8,
    slots: [Slot; 32],
}

impl Bus {
    fn new(model: PciModel) -> Bus {
        let (flags, min_slot, max_slot) = match model {
            PciModel::PciRoot => (AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE, 1, 31),
            PciModel::PciBridge | PciModel::PcieToPciBridge => {
                (AUTOASSIGN | PCI_DEVICE | PCI_BRIDGE, 1, 31)
            }
            // Endpoints only where the definition puts them (integrated devices).
            PciModel::PcieRoot => (PCIE_DEVICE | PCIE_ROOT_PORT | DMI_TO_PCI_BRIDGE, 1, 31),
            PciModel::DmiToPciBridge => (PCI_DEVICE | PCI_BRIDGE, 0, 31),
            PciModel::PcieRootPort => (AUTOASSIGN | PCIE_DEVICE | PCIE_TO_PCI_BRIDGE, 0, 0),
        };
        Bus {
            model,
            flags,
            min_slot,
            max_slot,
            slots: [Slot::default(); 32],
        }
    }

    fn fully_reserved(&self) -> bool {
        (self.min_slot..=self.max_slot).all(|s| self.slots[usize::from(s)].functions != 0)
    }
}

/// Where a device is, for errors: its element path and the line of its `<address>` (or of
/// the device).
#[derive(Clone, Copy)]
struct Site {
    path: &'static str,
    line: SourceLine,
}

fn error(site: Site, reason: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        reason: reason.into(),
        location: Location::new(site.path, site.line.get()),
    }
}

fn addr_str(a: &PciAddress) -> String {
    format!(
        "{:04x}:{:02x}:{:02x}.{:x}",
        a.domain, a.bus, a.slot, a.function
    )
}

fn pci_at(bus: u8, slot: u8, function: u8) -> PciAddress {
    PciAddress {
        domain: 0,
        bus,
        slot,
        function,
        multifunction: None,
        line: SourceLine::NONE,
    }
}

struct AddressSet {
    buses: Vec<Bus>,
    dry_run: bool,
}

impl AddressSet {
    /// Whether a bus takes a device (libvirt's virDomainPCIAddressFlagsCompatible).
    fn compatible(bus_flags: u32, dev_flags: u32, from_config: bool) -> bool {
        let mut bus_flags = bus_flags;
        let mut dev_flags = dev_flags;
        if from_config {
            // An address the definition gives may put a PCI device in a PCIe slot and back,
            // and a pci-bridge anywhere a PCI device goes.
            if bus_flags & ENDPOINT != 0 {
                bus_flags |= ENDPOINT;
            }
            if dev_flags & PCI_BRIDGE != 0 {
                dev_flags |= PCI_DEVICE;
            }
        } else if dev_flags & AUTOASSIGN != 0 && bus_flags & AUTOASSIGN == 0 {
            return false;
        }
        dev_flags & bus_flags & TYPES_MASK != 0
    }

    fn validate(
        &self,
        a: &PciAddress,
        flags: u32,
        from_config: bool,
        site: Site,
    ) -> Result<(), DomainError> {
        let s = addr_str(a);
        if a.domain != 0 {
            return Err(error(
                site,
                format!("Invalid PCI address {s}. Only PCI domain 0 is available"),
            ));
        }
        let Some(bus) = self.buses.get(usize::from(a.bus)) else {
            return Err(error(
                site,
                format!(
                    "Invalid PCI address {s}. Only PCI buses up to {} are available",
                    self.buses.len().saturating_sub(1)
                ),
            ));
        };
        if !Self::compatible(bus.flags, flags, from_config) {
            return Err(error(
                site,
                format!(
                    "The device at PCI address {s} cannot be plugged into the PCI controller with index='{}' ({}). It requires a controller that accepts a {}.",
                    a.bus,
                    bus.model.name(),
                    connect_name(flags)
                ),
            ));
        }
        if a.slot < bus.min_slot {
            return Err(error(
                site,
                format!("Invalid PCI address {s}. slot must be >= {}", bus.min_slot),
            ));
        }
        if a.slot > bus.max_slot {
            return Err(error(
                site,
                format!("Invalid PCI address {s}. slot must be <= {}", bus.max_slot),
            ));
        }
        if a.function > 7 {
            return Err(error(
                site,
                format!("Invalid PCI address {s}. function must be <= 7"),
            ));
        }
        Ok(())
    }

    /// Adds buses so that `a.bus` exists (dry run only); may move `a` to a later bus (the
    /// first conventional PCI device of a PCIe-only machine goes behind a new root port and
    /// pcie-to-pci-bridge).
    fn grow(&mut self, a: &mut PciAddress, flags: u32, site: Site) -> Result<(), DomainError> {
        let mut add = i64::from(a.bus) - self.buses.len() as i64 + 1;
        if add <= 0 {
            return Ok(());
        }
        let model;
        let mut need_pcie_to_pci = false;
        if flags & PCI_DEVICE != 0 {
            model = PciModel::PciBridge;
            // No bus takes a pci-bridge yet: a PCIe-only machine; QEMU 7.2 has the
            // pcie-pci-bridge, which libvirt prefers to a dmi-to-pci-bridge.
            need_pcie_to_pci = !self.buses.iter().any(|b| b.flags & PCI_BRIDGE != 0);
            if need_pcie_to_pci && add == 1 {
                add += 1;
                a.bus = a.bus.checked_add(1).ok_or_else(|| too_many_buses(site))?;
            }
        } else if flags & PCIE_DEVICE != 0 {
            model = PciModel::PcieRootPort;
        } else {
            let what = if flags & PCIE_ROOT_PORT != 0 {
                Some("pcie-root-port")
            } else if flags & DMI_TO_PCI_BRIDGE != 0 {
                Some("dmi-to-pci-bridge")
            } else if flags & PCI_BRIDGE != 0 {
                Some("pci-bridge")
            } else if flags & PCIE_TO_PCI_BRIDGE != 0 {
                Some("pcie-to-pci-bridge")
            } else {
                None
            };
            return Err(error(
                site,
                match what {
                    Some(model) => format!(
                        "a PCI slot is needed to connect a PCI controller model='{model}', but none is available, and it cannot be automatically added"
                    ),
                    None => "Cannot automatically add a new PCI bus for this device".to_string(),
                },
            ));
        }
        if self.buses.len() as i64 + add > 256 {
            return Err(too_many_buses(site));
        }
        let mut remaining = add;
        if need_pcie_to_pci {
            // The root port takes only the bridge, so that the spare root port libvirt adds
            // for hotplug stays a separate one.
            let mut port = Bus::new(PciModel::PcieRootPort);
            port.flags = PCIE_TO_PCI_BRIDGE;
            self.buses.push(port);
            self.buses.push(Bus::new(PciModel::PcieToPciBridge));
            remaining -= 2;
        }
        for _ in 0..remaining {
            self.buses.push(Bus::new(model));
        }
        Ok(())
    }

    fn reserve(
        &mut self,
        a: &mut PciAddress,
        flags: u32,
        from_config: bool,
        site: Site,
    ) -> Result<(), DomainError> {
        if self.dry_run {
            self.grow(a, flags, site)?;
        }
        self.validate(a, flags, from_config, site)?;
        let bus = &mut self.buses[usize::from(a.bus)];
        let slot = &mut bus.slots[usize::from(a.slot)];
        if slot.functions & (1 << a.function) != 0 {
            return Err(error(
                site,
                format!("PCI address {} is used twice", addr_str(a)),
            ));
        }
        if slot.functions == 0 && flags & AGGREGATE_SLOT != 0 {
            slot.aggregate = true;
        }
        slot.functions |= 1 << a.function;
        Ok(())
    }

    fn slot_in_use(&self, a: &PciAddress) -> bool {
        self.buses
            .get(usize::from(a.bus))
            .is_some_and(|b| b.slots[usize::from(a.slot)].functions != 0)
    }

    /// The first free address that takes the device (libvirt's virDomainPCIAddressGetNextAddr);
    /// `function` None is "any function" (function 0 of a free slot, or any free function of a
    /// shared root-port slot).
    fn next(
        &mut self,
        flags: u32,
        function: Option<u8>,
        site: Site,
    ) -> Result<PciAddress, DomainError> {
        let mut a = pci_at(0, 0, function.unwrap_or(0));
        for (bus_index, bus) in self.buses.iter().enumerate() {
            if !Self::compatible(bus.flags, flags, false) {
                continue;
            }
            for slot in bus.min_slot..=bus.max_slot {
                let s = bus.slots[usize::from(slot)];
                let bus_number = bus_index as u8;
                if s.functions == 0 {
                    a.bus = bus_number;
                    a.slot = slot;
                    return Ok(a);
                }
                if flags & AGGREGATE_SLOT != 0 && s.aggregate {
                    if s.functions & (1 << a.function) == 0 {
                        a.bus = bus_number;
                        a.slot = slot;
                        return Ok(a);
                    }
                    if function.is_none() {
                        if let Some(f) = (0..8u8).find(|f| s.functions & (1 << f) == 0) {
                            a.bus = bus_number;
                            a.slot = slot;
                            a.function = f;
                            return Ok(a);
                        }
                    }
                }
            }
        }
        if self.dry_run {
            a.bus = u8::try_from(self.buses.len()).map_err(|_| too_many_buses(site))?;
            self.grow(&mut a, flags, site)?;
            a.slot = self.buses[usize::from(a.bus)].min_slot;
            return Ok(a);
        }
        Err(error(site, "No more available PCI slots"))
    }

    /// Reserves the next free address; sets it on the device except in the dry run.
    fn reserve_next(
        &mut self,
        target: &mut Option<Address>,
        flags: u32,
        function: Option<u8>,
        site: Site,
    ) -> Result<(), DomainError> {
        let mut a = self.next(flags, function, site)?;
        self.reserve(&mut a, flags, false, site)?;
        if !self.dry_run {
            *target = Some(Address::Pci(a));
        }
        Ok(())
    }
}

fn too_many_buses(site: Site) -> DomainError {
    error(site, "No more available PCI buses (at most 256)")
}

fn connect_name(flags: u32) -> &'static str {
    if flags & PCI_DEVICE != 0 {
        "standard PCI device"
    } else if flags & PCIE_DEVICE != 0 {
        "PCI Express device"
    } else if flags & PCIE_ROOT_PORT != 0 {
        "pcie-root-port"
    } else if flags & DMI_TO_PCI_BRIDGE != 0 {
        "dmi-to-pci-bridge"
    } else if flags & PCIE_TO_PCI_BRIDGE != 0 {
        "pcie-to-pci-bridge"
    } else {
        "pci-bridge"
    }
}

/// A device that may have a PCI address, by kind and position in its list.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dev {
    Disk(usize),
    Interface(usize),
    Video(usize),
    Controller(usize),
    Input(usize),
    Balloon,
    Rng(usize),
    Host(usize),
    Sound(usize),
}

fn address_mut(d: &mut Devices, dev: Dev) -> Option<&mut Option<Address>> {
    Some(match dev {
        Dev::Disk(i) => &mut d.disks.get_mut(i)?.address,
        Dev::Interface(i) => &mut d.interfaces.get_mut(i)?.address,
        Dev::Video(i) => &mut d.videos.get_mut(i)?.address,
        Dev::Controller(i) => &mut d.controllers.get_mut(i)?.address,
        Dev::Input(i) => &mut d.inputs.get_mut(i)?.address,
        Dev::Balloon => &mut d.memballoon.as_mut()?.address,
        Dev::Rng(i) => &mut d.rngs.get_mut(i)?.address,
        Dev::Host(i) => &mut d.hostdevs.get_mut(i)?.address,
        Dev::Sound(i) => &mut d.sounds.get_mut(i)?.address,
    })
}

fn address(d: &Devices, dev: Dev) -> Option<&Option<Address>> {
    Some(match dev {
        Dev::Disk(i) => &d.disks.get(i)?.address,
        Dev::Interface(i) => &d.interfaces.get(i)?.address,
        Dev::Video(i) => &d.videos.get(i)?.address,
        Dev::Controller(i) => &d.controllers.get(i)?.address,
        Dev::Input(i) => &d.inputs.get(i)?.address,
        Dev::Balloon => &d.memballoon.as_ref()?.address,
        Dev::Rng(i) => &d.rngs.get(i)?.address,
        Dev::Host(i) => &d.hostdevs.get(i)?.address,
        Dev::Sound(i) => &d.sounds.get(i)?.address,
    })
}

fn site(d: &Devices, dev: Dev) -> Site {
    let (path, line) = match dev {
        Dev::Disk(i) => ("devices/disk", d.disks.get(i).map(|x| x.line)),
        Dev::Interface(i) => ("devices/interface", d.interfaces.get(i).map(|x| x.line)),
        Dev::Video(i) => ("devices/video", d.videos.get(i).map(|x| x.line)),
        Dev::Controller(i) => ("devices/controller", d.controllers.get(i).map(|x| x.line)),
        Dev::Input(i) => ("devices/input", d.inputs.get(i).map(|x| x.line)),
        Dev::Balloon => ("devices/memballoon", d.memballoon.as_ref().map(|x| x.line)),
        Dev::Rng(i) => ("devices/rng", d.rngs.get(i).map(|x| x.line)),
        Dev::Host(i) => ("devices/hostdev", d.hostdevs.get(i).map(|x| x.line)),
        Dev::Sound(i) => ("devices/sound", d.sounds.get(i).map(|x| x.line)),
    };
    // The <address> line when there is one: that is what an address error is about.
    match address(d, dev).and_then(|a| a.as_ref()) {
        Some(a) if a.line().get().is_some() => Site {
            path: match dev {
                Dev::Disk(_) => "devices/disk/address",
                Dev::Interface(_) => "devices/interface/address",
                Dev::Video(_) => "devices/video/address",
                Dev::Controller(_) => "devices/controller/address",
                Dev::Input(_) => "devices/input/address",
                Dev::Balloon => "devices/memballoon/address",
                Dev::Rng(_) => "devices/rng/address",
                Dev::Host(_) => "devices/hostdev/address",
                Dev::Sound(_) => "devices/sound/address",
            },
            line: a.line(),
        },
        _ => Site {
            path,
            line: line.unwrap_or(SourceLine::NONE),
        },
    }
}

fn pci_address(d: &Devices, dev: Dev) -> Option<PciAddress> {
    match address(d, dev) {
        Some(Some(Address::Pci(a))) => Some(*a),
        _ => None,
    }
}

/// No address, or the all-zero PCI address libvirt reads as "pick one".
fn wanted(d: &Devices, dev: Dev) -> bool {
    matches!(address(d, dev), Some(None))
}

fn set_pci(d: &mut Devices, dev: Dev, a: PciAddress) {
    if let Some(slot) = address_mut(d, dev) {
        *slot = Some(Address::Pci(a));
    }
}

const USB2_MODELS: &[&str] = &["ich9-ehci1", "ich9-uhci1", "ich9-uhci2", "ich9-uhci3"];

fn is_usb2(c: &Controller) -> bool {
    c.controller_type == ControllerType::Usb
        && c.model.as_deref().is_some_and(|m| USB2_MODELS.contains(&m))
}

/// How each device connects (libvirt's qemuDomainDeviceCalculatePCIConnectFlags); 0 for a
/// device that is not on PCI.
struct Flags {
    pci: u32,
    pcie: u32,
}

impl Flags {
    fn of(d: &Devices) -> Flags {
        let pcie_root = d
            .controllers
            .iter()
            .any(|c| c.index == 0 && controller_model(c) == Some(PciModel::PcieRoot));
        Flags {
            pci: PCI_DEVICE | AUTOASSIGN,
            pcie: if pcie_root {
                PCIE_DEVICE | AUTOASSIGN
            } else {
                PCI_DEVICE | AUTOASSIGN
            },
        }
    }

    fn device(&self, d: &Devices, dev: Dev) -> u32 {
        // QEMU 7.2 has virtio's non-transitional devices: virtio is PCIe where PCIe is.
        let virtio = self.pcie;
        match dev {
            Dev::Disk(i) => match d.disks.get(i).map(|x| x.target.bus) {
                Some(DiskBus::Virtio) => virtio,
                _ => 0,
            },
            Dev::Interface(i) => match d.interfaces.get(i).and_then(|x| x.model.as_deref()) {
                Some("virtio" | "virtio-non-transitional") => virtio,
                Some("e1000e") => self.pcie,
                _ => self.pci,
            },
            Dev::Video(i) => match d.videos.get(i).map(|v| v.model) {
                Some(VideoModel::Virtio) => virtio,
                Some(VideoModel::Bochs) => self.pcie,
                Some(VideoModel::Vga | VideoModel::Cirrus) => self.pci,
                _ => 0,
            },
            Dev::Controller(i) => {
                let Some(c) = d.controllers.get(i) else {
                    return 0;
                };
                let model = c.model.as_deref();
                match c.controller_type {
                    ControllerType::Pci => controller_model(c).map_or(0, PciModel::connect),
                    ControllerType::Sata | ControllerType::Ide => self.pci,
                    ControllerType::Usb => match model {
                        Some("qemu-xhci" | "nec-xhci") => self.pcie,
                        Some("none") => 0,
                        _ => self.pci,
                    },
                    ControllerType::Scsi => match model {
                        Some("virtio-scsi" | "virtio-non-transitional") => virtio,
                        _ => self.pci,
                    },
                    ControllerType::VirtioSerial => match model {
                        Some("virtio-transitional") => self.pci,
                        _ => virtio,
                    },
                    ControllerType::Fdc => 0,
                }
            }
            Dev::Input(i) => match d.inputs.get(i).map(|x| x.bus) {
                Some(InputBus::Virtio) => virtio,
                _ => 0,
            },
            Dev::Balloon => match d.memballoon.as_ref().map(|b| b.model) {
                Some(MemBalloonModel::Virtio) => virtio,
                _ => 0,
            },
            Dev::Rng(_) => virtio,
            // libvirt reads the host device's PCI Express capability from sysfs; this crate
            // does no I/O and takes PCI Express, which is what libvirt assumes for a device it
            // cannot read (and what almost every assignable device is). On pc it is PCI.
            Dev::Host(i) => match d.hostdevs.get(i).map(|h| &h.source) {
                Some(HostDevSource::Pci { .. }) => self.pcie,
                _ => 0,
            },
            // Sound cards are conventional PCI devices; the ISA ones and USB audio are not on
            // PCI at all.
            Dev::Sound(i) => match d.sounds.get(i).map(|x| x.model) {
                Some(SoundModel::Sb16 | SoundModel::Pcspk | SoundModel::Usb) | None => 0,
                Some(_) => self.pci,
            },
        }
    }
}

/// Every device that may have a PCI address, in libvirt's device iteration order.
fn all_devices(d: &Devices) -> Vec<Dev> {
    let mut all = Vec::new();
    all.extend((0..d.disks.len()).map(Dev::Disk));
    all.extend((0..d.interfaces.len()).map(Dev::Interface));
    all.extend((0..d.sounds.len()).map(Dev::Sound));
    all.extend((0..d.hostdevs.len()).map(Dev::Host));
    all.extend((0..d.videos.len()).map(Dev::Video));
    all.extend((0..d.controllers.len()).map(Dev::Controller));
    all.extend((0..d.inputs.len()).map(Dev::Input));
    if d.memballoon.is_some() {
        all.push(Dev::Balloon);
    }
    all.extend((0..d.rngs.len()).map(Dev::Rng));
    all
}

/// Inserts a controller as libvirt does: among controllers of the same type by index, else
/// at the end.
pub(crate) fn insert_controller(controllers: &mut Vec<Controller>, controller: Controller) {
    let mut insert_at = None;
    let mut last_same_type = None;
    for (i, c) in controllers.iter().enumerate().rev() {
        if c.controller_type == controller.controller_type {
            if controller.index < c.index {
                insert_at = Some(i);
            }
            last_same_type.get_or_insert(i);
        }
    }
    let at = insert_at
        .or(last_same_type.map(|i| i + 1))
        .unwrap_or(controllers.len());
    controllers.insert(at, controller);
}

/// Checks of the PCI controllers that come before any address is given.
fn check_controllers(d: &Domain) -> Result<(), DomainError> {
    let q35 = crate::rules::is_q35(&d.os.machine);
    for c in &d.devices.controllers {
        if c.controller_type != ControllerType::Pci {
            continue;
        }
        let site = Site {
            path: "devices/controller",
            line: c.line,
        };
        let Some(model) = controller_model(c) else {
            let reason = if c.index == 0 {
                format!(
                    "The PCI controller with index='0' must be model='{}' for this machine type, but no model was given",
                    if q35 { "pcie-root" } else { "pci-root" }
                )
            } else {
                format!("PCI controller with index '{}' has no model", c.index)
            };
            return Err(error(site, reason));
        };
        let root = matches!(model, PciModel::PciRoot | PciModel::PcieRoot);
        if root && c.index != 0 {
            return Err(error(
                site,
                "pci-root and pcie-root controllers should have index 0",
            ));
        }
        if root && c.address.is_some() {
            return Err(error(
                site,
                "pci-root and pcie-root controllers should not have an address",
            ));
        }
        if c.index == 0 {
            let wanted = if q35 {
                PciModel::PcieRoot
            } else {
                PciModel::PciRoot
            };
            if model != wanted {
                return Err(error(
                    site,
                    format!(
                        "The PCI controller with index='0' must be model='{}' for this machine type, but model='{}' was found instead",
                        wanted.name(),
                        model.name()
                    ),
                ));
            }
        }
        if let Some(name) = &c.model_name {
            if !model.model_names().contains(&name.as_str()) {
                return Err(DomainError::Invalid {
                    reason: format!(
                        "Option 'modelName' has invalid value for PCI controller with index '{}', model '{}' and modelName '{name}'",
                        c.index,
                        model.name()
                    ),
                    location: Location::new("devices/controller/model", c.model_name_line.get()),
                });
            }
        }
        if let Some(t) = &c.target {
            let target_site = Site {
                path: "devices/controller/target",
                line: t.line,
            };
            let (chassis_nr_ok, chassis_ok) = match model {
                PciModel::PciBridge => (true, false),
                PciModel::PcieRootPort => (false, true),
                _ => (false, false),
            };
            for (what, given, ok) in [
                ("chassisNr", t.chassis_nr.is_some(), chassis_nr_ok),
                ("chassis", t.chassis.is_some(), chassis_ok),
                ("port", t.port.is_some(), chassis_ok),
            ] {
                if given && !ok {
                    return Err(error(
                        target_site,
                        format!(
                            "Option '{what}' is not valid for PCI controller with index '{}', model '{}'",
                            c.index,
                            model.name()
                        ),
                    ));
                }
            }
            if t.chassis_nr == Some(0) {
                return Err(error(
                    target_site,
                    "PCI controller chassisNr '0' out of range - must be 1-255",
                ));
            }
        }
    }
    Ok(())
}

/// The fixed places of the chipset (libvirt's qemuDomainValidateDevicePCISlotsPIIX3 / Q35).
fn chipset(d: &mut Domain, addrs: &mut AddressSet, flags: &Flags) -> Result<(), DomainError> {
    let q35 = crate::rules::is_q35(&d.os.machine);
    let devs = &mut d.devices;
    if q35 {
        let fixed = PCIE_DEVICE;
        for i in 0..devs.controllers.len() {
            let dev = Dev::Controller(i);
            let c = &devs.controllers[i];
            match c.controller_type {
                ControllerType::Sata if c.index == 0 => {
                    let primary = pci_at(0, 0x1f, 2);
                    match pci_address(devs, dev) {
                        Some(a) if !same(&a, &primary) => {
                            return Err(error(
                                site(devs, dev),
                                "Primary SATA controller must have PCI address 0:0:1f.2",
                            ))
                        }
                        Some(_) => {}
                        None => set_pci(devs, dev, primary),
                    }
                }
                ControllerType::Usb
                    if c.model.as_deref() == Some("ich9-uhci1") && c.address.is_none() =>
                {
                    // Where real ICH9 hardware has its USB2 sets.
                    let s = site(devs, dev);
                    for slot in [0x1d, 0x1a] {
                        let mut a = pci_at(0, slot, 0);
                        if !addrs.slot_in_use(&a) {
                            addrs.reserve(&mut a, fixed, true, s)?;
                            a.multifunction = Some(true);
                            set_pci(devs, dev, a);
                            break;
                        }
                    }
                }
                ControllerType::Pci
                    if controller_model(c) == Some(PciModel::DmiToPciBridge)
                        && c.address.is_none() =>
                {
                    let s = site(devs, dev);
                    let mut a = pci_at(0, 0x1e, 0);
                    if !addrs.slot_in_use(&a) {
                        addrs.reserve(&mut a, fixed, true, s)?;
                        set_pci(devs, dev, a);
                    }
                }
                _ => {}
            }
        }
        // 00:1b.0 is where ICH9 has its HD audio: an `ich9` sound card without an address
        // goes there when it is free (libvirt's rule).
        for i in 0..devs.sounds.len() {
            let dev = Dev::Sound(i);
            if devs.sounds[i].model != SoundModel::Ich9 || !wanted(devs, dev) {
                continue;
            }
            let mut a = pci_at(0, 0x1b, 0);
            if !addrs.slot_in_use(&a) {
                let s = site(devs, dev);
                addrs.reserve(&mut a, fixed, true, s)?;
                set_pci(devs, dev, a);
            }
        }
        // The ISA bridge (00:1f.0) and SMBus (00:1f.3) every q35 has.
        let s = Site {
            path: "devices",
            line: SourceLine::NONE,
        };
        addrs.reserve(&mut pci_at(0, 0x1f, 0), fixed, true, s)?;
        addrs.reserve(&mut pci_at(0, 0x1f, 3), fixed, true, s)?;
        primary_video(devs, addrs, flags, 1, fixed)
    } else {
        let fixed = PCI_DEVICE | AUTOASSIGN;
        for i in 0..devs.controllers.len() {
            let dev = Dev::Controller(i);
            let c = &devs.controllers[i];
            let (place, message) = match (c.controller_type, c.index, c.model.as_deref()) {
                (ControllerType::Ide, 0, _) => (
                    pci_at(0, 1, 1),
                    "Primary IDE controller must have PCI address 0:0:1.1",
                ),
                (ControllerType::Usb, 0, Some("piix3-uhci") | None) => (
                    pci_at(0, 1, 2),
                    "PIIX3 USB controller at index 0 must have PCI address 0:0:1.2",
                ),
                _ => continue,
            };
            let s = site(devs, dev);
            match pci_address(devs, dev) {
                Some(a) if !same(&a, &place) => return Err(error(s, message)),
                Some(_) => {}
                None => set_pci(devs, dev, place),
            }
            addrs.reserve(&mut place.clone(), fixed, true, s)?;
        }
        // The ISA bridge (00:01.0) and the power management function (00:01.3) of the PIIX3.
        let s = Site {
            path: "devices",
            line: SourceLine::NONE,
        };
        addrs.reserve(&mut pci_at(0, 1, 0), fixed, true, s)?;
        addrs.reserve(&mut pci_at(0, 1, 3), fixed, true, s)?;
        primary_video(devs, addrs, flags, 2, fixed)
    }
}

/// The primary video card goes where QEMU would put the first VGA: 00:02.0 on pc, 00:01.0 on
/// q35, or the next free slot when that one is taken.
fn primary_video(
    devs: &mut Devices,
    addrs: &mut AddressSet,
    flags: &Flags,
    slot: u8,
    fixed: u32,
) -> Result<(), DomainError> {
    let Some(video) = devs.videos.first() else {
        return Ok(());
    };
    if matches!(video.model, VideoModel::None | VideoModel::Ramfb) {
        return Ok(());
    }
    let dev = Dev::Video(0);
    if !wanted(devs, dev) {
        return Ok(());
    }
    let s = site(devs, dev);
    let mut a = pci_at(0, slot, 0);
    addrs.validate(&a, fixed, true, s)?;
    if addrs.slot_in_use(&a) {
        let own = flags.device(devs, dev);
        let target = address_mut(devs, dev).ok_or_else(|| error(s, "no such device"))?;
        addrs.reserve_next(target, own, None, s)
    } else {
        addrs.reserve(&mut a, fixed, true, s)?;
        set_pci(devs, dev, a);
        Ok(())
    }
}

fn same(a: &PciAddress, b: &PciAddress) -> bool {
    (a.domain, a.bus, a.slot, a.function) == (b.domain, b.bus, b.slot, b.function)
}

/// Every device without an address gets the next free one, in libvirt's order
/// (qemuDomainAssignDevicePCISlots).
fn assign_slots(d: &mut Domain, addrs: &mut AddressSet, flags: &Flags) -> Result<(), DomainError> {
    let devs = &mut d.devices;
    let next = |devs: &mut Devices, addrs: &mut AddressSet, dev: Dev| {
        if !wanted(devs, dev) {
            return Ok(());
        }
        let f = flags.device(devs, dev);
        if f == 0 {
            return Ok(());
        }
        let s = site(devs, dev);
        let target = address_mut(devs, dev).ok_or_else(|| error(s, "no such device"))?;
        addrs.reserve_next(target, f, None, s)
    };
    for i in 0..devs.controllers.len() {
        let c = &devs.controllers[i];
        if c.controller_type == ControllerType::Pci
            && !matches!(
                controller_model(c),
                Some(PciModel::PciRoot | PciModel::PcieRoot)
            )
        {
            next(devs, addrs, Dev::Controller(i))?;
        }
    }
    for i in 0..devs.interfaces.len() {
        next(devs, addrs, Dev::Interface(i))?;
    }
    // Sound cards after the NICs, as libvirt assigns them.
    for i in 0..devs.sounds.len() {
        next(devs, addrs, Dev::Sound(i))?;
    }
    for i in 0..devs.controllers.len() {
        let c = &devs.controllers[i];
        let skip = match c.controller_type {
            ControllerType::Pci | ControllerType::Fdc => true,
            ControllerType::Usb => c.model.as_deref() == Some("none"),
            ControllerType::Ide => c.index == 0,
            _ => false,
        };
        if skip {
            continue;
        }
        let dev = Dev::Controller(i);
        if !is_usb2(c) {
            next(devs, addrs, dev)?;
            continue;
        }
        if !wanted(devs, dev) {
            continue;
        }
        // A USB2 set (EHCI and its UHCI companions) shares one slot: EHCI at function 7,
        // UHCI1..3 at 0..2, function 0 multifunction.
        let index = c.index;
        let (function, multi) = match c.model.as_deref() {
            Some("ich9-ehci1") => (7, None),
            Some("ich9-uhci1") => (0, Some(true)),
            Some("ich9-uhci2") => (1, None),
            _ => (2, None),
        };
        let found = devs
            .controllers
            .iter()
            .filter(|o| is_usb2(o) && o.index == index)
            .find_map(|o| match &o.address {
                Some(Address::Pci(a)) if !is_zero(a) => Some(*a),
                _ => None,
            });
        let f = flags.device(devs, dev);
        let s = site(devs, dev);
        match found {
            Some(mut a) => {
                a.function = function;
                a.multifunction = multi;
                a.line = SourceLine::NONE;
                addrs.reserve(&mut a, f, true, s)?;
                set_pci(devs, dev, a);
            }
            None => {
                let target = address_mut(devs, dev).ok_or_else(|| error(s, "no such device"))?;
                addrs.reserve_next(target, f, Some(function), s)?;
                if let Some(Address::Pci(a)) = target {
                    a.multifunction = multi;
                }
            }
        }
    }
    for i in 0..devs.disks.len() {
        if devs.disks[i].target.bus != DiskBus::Virtio {
            continue;
        }
        if let Some(other) = &devs.disks[i].address {
            if !matches!(other, Address::Pci(_)) {
                return Err(error(
                    site(devs, Dev::Disk(i)),
                    "virtio disk cannot have an address of type 'drive'",
                ));
            }
        }
        next(devs, addrs, Dev::Disk(i))?;
    }
    for i in 0..devs.hostdevs.len() {
        next(devs, addrs, Dev::Host(i))?;
    }
    next(devs, addrs, Dev::Balloon)?;
    for i in 0..devs.rngs.len() {
        next(devs, addrs, Dev::Rng(i))?;
    }
    for i in 0..devs.videos.len() {
        next(devs, addrs, Dev::Video(i))?;
    }
    for i in 0..devs.inputs.len() {
        next(devs, addrs, Dev::Input(i))?;
    }
    Ok(())
}

fn is_zero(a: &PciAddress) -> bool {
    a.domain == 0 && a.bus == 0 && a.slot == 0 && a.function == 0
}

/// One address set with a bus per PCI controller, the addresses the definition gives
/// reserved (libvirt's qemuDomainPCIAddressSetCreate).
fn address_set(
    d: &Domain,
    nbuses: usize,
    flags: &Flags,
    dry_run: bool,
) -> Result<AddressSet, DomainError> {
    let devs = &d.devices;
    let pcie_root = devs
        .controllers
        .iter()
        .any(|c| c.index == 0 && controller_model(c) == Some(PciModel::PcieRoot));
    let default_model = if pcie_root {
        PciModel::PcieRootPort
    } else {
        PciModel::PciBridge
    };
    let mut buses: Vec<Option<PciModel>> = vec![None; nbuses];
    for c in &devs.controllers {
        if let Some(model) = controller_model(c) {
            if let Some(bus) = buses.get_mut(c.index as usize) {
                *bus = Some(model);
            }
        }
    }
    let mut addrs = AddressSet {
        buses: buses
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Bus::new(m.unwrap_or(if i == 0 {
                    PciModel::PciRoot
                } else {
                    default_model
                }))
            })
            .collect(),
        dry_run,
    };
    for dev in all_devices(devs) {
        let Some(mut a) = pci_address(devs, dev) else {
            continue;
        };
        let mut f = flags.device(devs, dev);
        if let Dev::Controller(i) = dev {
            // The PIIX3's own IDE and USB functions: reserved with the chipset.
            let c = &devs.controllers[i];
            if a.domain == 0 && a.bus == 0 && a.slot == 1 {
                let piix3 =
                    (c.controller_type == ControllerType::Ide && c.index == 0 && a.function == 1)
                        || (c.controller_type == ControllerType::Usb
                            && c.index == 0
                            && matches!(c.model.as_deref(), Some("piix3-uhci") | None)
                            && a.function == 2);
                if piix3 {
                    if pcie_root {
                        return Err(error(
                            site(devs, dev),
                            "Bus 0 must be PCI for integrated PIIX3 USB or IDE controllers",
                        ));
                    }
                    continue;
                }
            }
        }
        if f == 0 {
            f = PCI_DEVICE;
        }
        addrs.reserve(&mut a, f, true, site(devs, dev))?;
    }
    Ok(addrs)
}

/// Devices that never sit on PCI refuse a PCI address (libvirt's messages).
fn check_non_pci_addresses(d: &Devices) -> Result<(), DomainError> {
    for (i, disk) in d.disks.iter().enumerate() {
        if !matches!(disk.address, Some(Address::Pci(_))) {
            continue;
        }
        let bus = disk.target.bus;
        let s = site(d, Dev::Disk(i));
        match bus {
            DiskBus::Virtio => {}
            DiskBus::Usb => {
                return Err(error(
                    s,
                    format!(
                        "Invalid address type 'pci' for the usb disk '{}'",
                        disk.target.dev
                    ),
                ))
            }
            DiskBus::Ide | DiskBus::Sata | DiskBus::Scsi | DiskBus::Fdc => {
                let name = match bus {
                    DiskBus::Ide => "ide",
                    DiskBus::Sata => "sata",
                    DiskBus::Scsi => "scsi",
                    _ => "fdc",
                };
                return Err(error(
                    s,
                    format!(
                        "Invalid address type 'pci' for the disk '{}' with the bus type '{name}'",
                        disk.target.dev
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Lays out the PCI topology of a normalized domain as libvirt 9.0 does. On error the domain
/// is left partly laid out; [`check`] reports the same error for validation.
pub(crate) fn assign(d: &mut Domain) -> Result<(), DomainError> {
    check_controllers(d)?;
    check_non_pci_addresses(&d.devices)?;
    let flags = Flags::of(&d.devices);
    // The all-zero PCI address is libvirt's "pick one".
    for dev in all_devices(&d.devices) {
        if flags.device(&d.devices, dev) == 0 {
            continue;
        }
        if let Some(slot) = address_mut(&mut d.devices, dev) {
            if matches!(slot, Some(Address::Pci(a)) if is_zero(a)) {
                *slot = None;
            }
        }
    }
    let max_index = d
        .devices
        .controllers
        .iter()
        .filter(|c| c.controller_type == ControllerType::Pci)
        .map(|c| c.index as usize)
        .max();
    let Some(max_index) = max_index else {
        return Ok(());
    };
    let pci_root = d
        .devices
        .controllers
        .iter()
        .any(|c| c.index == 0 && controller_model(c) == Some(PciModel::PciRoot));
    let pcie_root = !pci_root
        && d.devices
            .controllers
            .iter()
            .any(|c| c.index == 0 && controller_model(c) == Some(PciModel::PcieRoot));

    // 1. The dry run: how many buses.
    let mut addrs = address_set(d, max_index + 1, &flags, true)?;
    chipset(d, &mut addrs, &flags)?;
    let nowhere = Site {
        path: "devices",
        line: SourceLine::NONE,
    };
    if pci_root && !addrs.buses.iter().all(Bus::fully_reserved) {
        // One slot held back for a future pci-bridge.
        let mut dummy = None;
        addrs.reserve_next(&mut dummy, PCI_DEVICE | AUTOASSIGN, None, nowhere)?;
    }
    assign_slots(d, &mut addrs, &flags)?;
    if max_index == 0 && addrs.buses.len() > 1 && pcie_root {
        // A new domain whose root ports libvirt added: one more, empty, for hotplug.
        let mut dummy = None;
        addrs.reserve_next(&mut dummy, PCIE_DEVICE | AUTOASSIGN, None, nowhere)?;
    }
    let mut bus = 1;
    while bus < addrs.buses.len() {
        let exists = d
            .devices
            .controllers
            .iter()
            .any(|c| c.controller_type == ControllerType::Pci && c.index as usize == bus);
        if !exists {
            let model = addrs.buses[bus].model;
            let controller = Controller::new(ControllerType::Pci, bus as u32, Some(model.name()));
            insert_controller(&mut d.devices.controllers, controller);
            // The new controller needs a slot as well.
            let mut dummy = None;
            addrs.reserve_next(&mut dummy, model.connect(), None, nowhere)?;
        }
        bus += 1;
    }
    let nbuses = addrs.buses.len();

    // 2. The real pass.
    let mut addrs = address_set(d, nbuses, &flags, false)?;
    chipset(d, &mut addrs, &flags)?;
    assign_slots(d, &mut addrs, &flags)?;

    // 3. multifunction='on' where other functions of the slot are used.
    let devices = all_devices(&d.devices);
    let used: Vec<PciAddress> = devices
        .iter()
        .filter_map(|dev| pci_address(&d.devices, *dev))
        .collect();
    for dev in &devices {
        if let Some(Some(Address::Pci(a))) = address_mut(&mut d.devices, *dev) {
            let shared = a.function == 0
                && used.iter().any(|o| {
                    o.function != 0 && (o.domain, o.bus, o.slot) == (a.domain, a.bus, a.slot)
                });
            if shared && a.multifunction.is_none() {
                a.multifunction = Some(true);
            }
        }
    }
    controller_defaults(&mut d.devices)
}

/// libvirt's defaults for the PCI controllers' options, and its check that a bridge's index is
/// above the bus it sits on.
fn controller_defaults(devs: &mut Devices) -> Result<(), DomainError> {
    for c in &mut devs.controllers {
        let Some(model) = controller_model(c) else {
            continue;
        };
        if c.model_name.is_none() {
            c.model_name = model.default_model_name().map(str::to_string);
        }
        let a = match &c.address {
            Some(Address::Pci(a)) => *a,
            _ => pci_at(0, 0, 0),
        };
        match model {
            PciModel::PciBridge => {
                let t = c.target.get_or_insert_with(ControllerTarget::default);
                t.chassis_nr.get_or_insert(c.index);
            }
            PciModel::PcieRootPort => {
                let t = c.target.get_or_insert_with(ControllerTarget::default);
                t.chassis.get_or_insert(c.index);
                t.port
                    .get_or_insert((u32::from(a.slot) << 3) + u32::from(a.function));
            }
            _ => {}
        }
        if c.target
            .is_some_and(|t| t.chassis_nr.is_none() && t.chassis.is_none() && t.port.is_none())
        {
            c.target = None;
        }
        if model == PciModel::PciBridge && c.index <= u32::from(a.bus) {
            return Err(DomainError::Invalid {
                reason: format!(
                    "PCI controller at index {0} ({0:#04x}) has bus='{1:#04x}', but index must be larger than bus",
                    c.index, a.bus
                ),
                location: Location::new("devices/controller", c.line.get()),
            });
        }
    }
    Ok(())
}

/// The error [`assign`] meets on this domain, if any: a normalized domain lays out again
/// without change, so this is validation of its PCI addresses.
pub(crate) fn check(d: &Domain) -> Result<(), DomainError> {
    let mut copy = d.clone();
    assign(&mut copy)?;
    // Every device that needs a PCI address has one (the layout did not run out).
    let flags = Flags::of(&copy.devices);
    for dev in all_devices(&copy.devices) {
        // IDE controller 0 is the PIIX3's (a q35 has none: the engines refuse it there).
        let ide0 = matches!(dev, Dev::Controller(i) if copy.devices.controllers.get(i)
            .is_some_and(|c| c.controller_type == ControllerType::Ide && c.index == 0));
        if !ide0 && flags.device(&copy.devices, dev) != 0 && wanted(&copy.devices, dev) {
            return Err(error(
                site(&copy.devices, dev),
                "No more available PCI slots",
            ));
        }
    }
    Ok(())
}

//! The XML spelling of each enumeration and the other value tables of the domain format:
//! the one place that says which names exist. The parser reads values through these tables,
//! the validator checks against them, the writer prints through them, and other crates get
//! the spelling from `as_str` (`DiskFormat::Qcow2.as_str() == "qcow2"`).
//!
//! A leaf module: it imports nothing of this crate but the model.

use crate::model::*;

pub(crate) const DOMAIN_TYPES: &[(&str, DomainType)] =
    &[("kvm", DomainType::Kvm), ("qemu", DomainType::Qemu)];
pub(crate) const LIFECYCLE_ACTIONS: &[(&str, LifecycleAction)] = &[
    ("destroy", LifecycleAction::Destroy),
    ("restart", LifecycleAction::Restart),
    ("preserve", LifecycleAction::Preserve),
    ("rename-restart", LifecycleAction::RenameRestart),
    ("coredump-destroy", LifecycleAction::CoredumpDestroy),
    ("coredump-restart", LifecycleAction::CoredumpRestart),
];
pub(crate) const MEMORY_SOURCES: &[(&str, MemorySource)] = &[
    ("file", MemorySource::File),
    ("anonymous", MemorySource::Anonymous),
    ("memfd", MemorySource::Memfd),
];
pub(crate) const MEMORY_ACCESSES: &[(&str, MemoryAccess)] = &[
    ("shared", MemoryAccess::Shared),
    ("private", MemoryAccess::Private),
];
pub(crate) const MEMORY_ALLOCATIONS: &[(&str, MemoryAllocation)] = &[
    ("immediate", MemoryAllocation::Immediate),
    ("ondemand", MemoryAllocation::Ondemand),
];
pub(crate) const NUMA_MODES: &[(&str, NumaMode)] = &[
    ("strict", NumaMode::Strict),
    ("preferred", NumaMode::Preferred),
    ("interleave", NumaMode::Interleave),
    ("restrictive", NumaMode::Restrictive),
];
pub(crate) const PLACEMENTS: &[(&str, VcpuPlacement)] = &[
    ("static", VcpuPlacement::Static),
    ("auto", VcpuPlacement::Auto),
];
pub(crate) const CPU_MODES: &[(&str, CpuMode)] = &[
    ("custom", CpuMode::Custom),
    ("host-model", CpuMode::HostModel),
    ("host-passthrough", CpuMode::HostPassthrough),
    ("maximum", CpuMode::Maximum),
];
pub(crate) const CPU_MATCHES: &[(&str, CpuMatch)] = &[
    ("minimum", CpuMatch::Minimum),
    ("exact", CpuMatch::Exact),
    ("strict", CpuMatch::Strict),
];
pub(crate) const CPU_CHECKS: &[(&str, CpuCheck)] = &[
    ("none", CpuCheck::None),
    ("partial", CpuCheck::Partial),
    ("full", CpuCheck::Full),
];
pub(crate) const CPU_FALLBACKS: &[(&str, CpuFallback)] = &[
    ("allow", CpuFallback::Allow),
    ("forbid", CpuFallback::Forbid),
];
pub(crate) const FEATURE_POLICIES: &[(&str, FeaturePolicy)] = &[
    ("force", FeaturePolicy::Force),
    ("require", FeaturePolicy::Require),
    ("optional", FeaturePolicy::Optional),
    ("disable", FeaturePolicy::Disable),
    ("forbid", FeaturePolicy::Forbid),
];
pub(crate) const FIRMWARES: &[(&str, Firmware)] =
    &[("bios", Firmware::Bios), ("efi", Firmware::Efi)];
pub(crate) const BOOT_DEVICES: &[(&str, BootDevice)] = &[
    ("fd", BootDevice::Fd),
    ("hd", BootDevice::Hd),
    ("cdrom", BootDevice::Cdrom),
    ("network", BootDevice::Network),
];
pub(crate) const LOADER_TYPES: &[(&str, LoaderType)] =
    &[("rom", LoaderType::Rom), ("pflash", LoaderType::Pflash)];
pub(crate) const CLOCK_OFFSETS: &[(&str, ClockOffset)] = &[
    ("utc", ClockOffset::Utc),
    ("localtime", ClockOffset::Localtime),
];
pub(crate) const TIMER_NAMES: &[(&str, TimerName)] = &[
    ("platform", TimerName::Platform),
    ("pit", TimerName::Pit),
    ("rtc", TimerName::Rtc),
    ("hpet", TimerName::Hpet),
    ("tsc", TimerName::Tsc),
    ("kvmclock", TimerName::Kvmclock),
    ("hypervclock", TimerName::HypervClock),
];
pub(crate) const TICK_POLICIES: &[(&str, TickPolicy)] = &[
    ("delay", TickPolicy::Delay),
    ("catchup", TickPolicy::Catchup),
    ("merge", TickPolicy::Merge),
    ("discard", TickPolicy::Discard),
];
pub(crate) const DISK_TYPES: &[(&str, DiskType)] = &[
    ("file", DiskType::File),
    ("block", DiskType::Block),
    ("volume", DiskType::Volume),
    ("network", DiskType::Network),
];
pub(crate) const NETWORK_PROTOCOLS: &[(&str, NetworkProtocol)] = &[
    ("nbd", NetworkProtocol::Nbd),
    ("iscsi", NetworkProtocol::Iscsi),
    ("rbd", NetworkProtocol::Rbd),
    ("http", NetworkProtocol::Http),
    ("https", NetworkProtocol::Https),
    ("ftp", NetworkProtocol::Ftp),
    ("ftps", NetworkProtocol::Ftps),
    ("gluster", NetworkProtocol::Gluster),
];
pub(crate) const SECRET_USAGE_TYPES: &[(&str, SecretUsageType)] = &[
    ("iscsi", SecretUsageType::Iscsi),
    ("ceph", SecretUsageType::Ceph),
];
pub(crate) const DISK_DEVICES: &[(&str, DiskDevice)] =
    &[("disk", DiskDevice::Disk), ("cdrom", DiskDevice::Cdrom)];
pub(crate) const DISK_FORMATS: &[(&str, DiskFormat)] =
    &[("raw", DiskFormat::Raw), ("qcow2", DiskFormat::Qcow2)];
pub(crate) const DISK_CACHES: &[(&str, DiskCache)] = &[
    ("none", DiskCache::None),
    ("writethrough", DiskCache::Writethrough),
    ("writeback", DiskCache::Writeback),
    ("directsync", DiskCache::Directsync),
    ("unsafe", DiskCache::Unsafe),
];
pub(crate) const DISK_IOS: &[(&str, DiskIo)] = &[
    ("threads", DiskIo::Threads),
    ("native", DiskIo::Native),
    ("io_uring", DiskIo::IoUring),
];
pub(crate) const DISK_DISCARDS: &[(&str, DiskDiscard)] = &[
    ("unmap", DiskDiscard::Unmap),
    ("ignore", DiskDiscard::Ignore),
];
pub(crate) const DETECT_ZEROES: &[(&str, DetectZeroes)] = &[
    ("off", DetectZeroes::Off),
    ("on", DetectZeroes::On),
    ("unmap", DetectZeroes::Unmap),
];
pub(crate) const DISK_ERROR_POLICIES: &[(&str, DiskErrorPolicy)] = &[
    ("stop", DiskErrorPolicy::Stop),
    ("report", DiskErrorPolicy::Report),
    ("ignore", DiskErrorPolicy::Ignore),
    ("enospace", DiskErrorPolicy::Enospace),
];
pub(crate) const DISK_BUSES: &[(&str, DiskBus)] = &[
    ("ide", DiskBus::Ide),
    ("fdc", DiskBus::Fdc),
    ("scsi", DiskBus::Scsi),
    ("virtio", DiskBus::Virtio),
    ("usb", DiskBus::Usb),
    ("sata", DiskBus::Sata),
];
pub(crate) const CONTROLLER_TYPES: &[(&str, ControllerType)] = &[
    ("ide", ControllerType::Ide),
    ("fdc", ControllerType::Fdc),
    ("scsi", ControllerType::Scsi),
    ("sata", ControllerType::Sata),
    ("virtio-serial", ControllerType::VirtioSerial),
    ("usb", ControllerType::Usb),
    ("pci", ControllerType::Pci),
];
pub(crate) const INTERFACE_TYPES: &[(&str, InterfaceType)] = &[
    ("network", InterfaceType::Network),
    ("bridge", InterfaceType::Bridge),
    ("user", InterfaceType::User),
    ("ethernet", InterfaceType::Ethernet),
    ("direct", InterfaceType::Direct),
];
pub(crate) const DIRECT_MODES: &[(&str, DirectMode)] = &[
    ("vepa", DirectMode::Vepa),
    ("bridge", DirectMode::Bridge),
    ("private", DirectMode::Private),
    ("passthrough", DirectMode::Passthrough),
];
pub(crate) const INTERFACE_DRIVERS: &[(&str, InterfaceDriverName)] = &[
    ("qemu", InterfaceDriverName::Qemu),
    ("vhost", InterfaceDriverName::Vhost),
];
pub(crate) const NIC_MODELS: &[&str] = &[
    "virtio",
    "virtio-transitional",
    "virtio-non-transitional",
    "e1000",
    "e1000e",
    "rtl8139",
    "ne2k_pci",
    "pcnet",
    "vmxnet3",
];
pub(crate) const TCP_PROTOCOLS: &[(&str, TcpProtocol)] =
    &[("raw", TcpProtocol::Raw), ("telnet", TcpProtocol::Telnet)];
pub(crate) const UNIX_MODES: &[(&str, UnixMode)] =
    &[("bind", UnixMode::Bind), ("connect", UnixMode::Connect)];
pub(crate) const INPUT_TYPES: &[(&str, InputType)] = &[
    ("mouse", InputType::Mouse),
    ("keyboard", InputType::Keyboard),
    ("tablet", InputType::Tablet),
];
pub(crate) const INPUT_BUSES: &[(&str, InputBus)] = &[
    ("ps2", InputBus::Ps2),
    ("usb", InputBus::Usb),
    ("virtio", InputBus::Virtio),
];
pub(crate) const VIDEO_MODELS: &[(&str, VideoModel)] = &[
    ("vga", VideoModel::Vga),
    ("cirrus", VideoModel::Cirrus),
    ("virtio", VideoModel::Virtio),
    ("bochs", VideoModel::Bochs),
    ("ramfb", VideoModel::Ramfb),
    ("none", VideoModel::None),
    ("qxl", VideoModel::Qxl),
];
pub(crate) const BALLOON_MODELS: &[(&str, MemBalloonModel)] = &[
    ("virtio", MemBalloonModel::Virtio),
    ("none", MemBalloonModel::None),
];
pub(crate) const AUDIO_TYPES: &[(&str, AudioType)] = &[
    ("none", AudioType::None),
    ("alsa", AudioType::Alsa),
    ("coreaudio", AudioType::Coreaudio),
    ("jack", AudioType::Jack),
    ("oss", AudioType::Oss),
    ("pulseaudio", AudioType::Pulseaudio),
    ("sdl", AudioType::Sdl),
    ("spice", AudioType::Spice),
    ("file", AudioType::File),
    ("dbus", AudioType::Dbus),
];
pub(crate) const AUDIO_FORMATS: &[(&str, AudioFormat)] = &[
    ("u8", AudioFormat::U8),
    ("s8", AudioFormat::S8),
    ("u16", AudioFormat::U16),
    ("s16", AudioFormat::S16),
    ("u32", AudioFormat::U32),
    ("s32", AudioFormat::S32),
    ("f32", AudioFormat::F32),
];
/// libvirt's SDL audio drivers (`<audio type='sdl' driver=>`).
pub(crate) const SDL_AUDIO_DRIVERS: &[&str] = &["esd", "alsa", "arts", "pulseaudio"];
pub(crate) const SOUND_MODELS: &[(&str, SoundModel)] = &[
    ("sb16", SoundModel::Sb16),
    ("es1370", SoundModel::Es1370),
    ("pcspk", SoundModel::Pcspk),
    ("ac97", SoundModel::Ac97),
    ("ich6", SoundModel::Ich6),
    ("ich9", SoundModel::Ich9),
    ("usb", SoundModel::Usb),
    ("ich7", SoundModel::Ich7),
];
pub(crate) const SOUND_CODECS: &[(&str, SoundCodec)] = &[
    ("duplex", SoundCodec::Duplex),
    ("micro", SoundCodec::Micro),
    ("output", SoundCodec::Output),
];
pub(crate) const SPICE_IMAGE_COMPRESSIONS: &[(&str, SpiceImageCompression)] = &[
    ("auto_glz", SpiceImageCompression::AutoGlz),
    ("auto_lz", SpiceImageCompression::AutoLz),
    ("quic", SpiceImageCompression::Quic),
    ("glz", SpiceImageCompression::Glz),
    ("lz", SpiceImageCompression::Lz),
    ("off", SpiceImageCompression::Off),
];

/// Serial/console target types libvirt knows for x86.
pub(crate) const CHAR_TARGET_TYPES: &[&str] =
    &["isa-serial", "usb-serial", "pci-serial", "serial", "virtio"];
pub(crate) const SERIAL_TARGET_MODELS: &[&str] = &["isa-serial", "usb-serial", "pci-serial"];
pub(crate) const CONTROLLER_MODELS: &[&str] = &[
    // usb
    "piix3-uhci",
    "piix4-uhci",
    "ehci",
    "ich9-ehci1",
    "ich9-uhci1",
    "ich9-uhci2",
    "ich9-uhci3",
    "nec-xhci",
    "qemu-xhci",
    "none",
    // pci
    "pci-root",
    "pcie-root",
    "pci-bridge",
    "dmi-to-pci-bridge",
    "pcie-root-port",
    "pcie-switch-upstream-port",
    "pcie-switch-downstream-port",
    "pcie-to-pci-bridge",
    "pci-expander-bus",
    "pcie-expander-bus",
    // scsi
    "auto",
    "buslogic",
    "lsilogic",
    "lsisas1068",
    "vmpvscsi",
    "virtio-scsi",
    "lsisas1078",
    "virtio-transitional",
    "virtio-non-transitional",
];

/// PCI controller models oxvirt lays out (see `pci.rs`).
pub(crate) const PCI_CONTROLLER_MODELS: &[&str] = &[
    "pci-root",
    "pcie-root",
    "pcie-root-port",
    "pci-bridge",
    "dmi-to-pci-bridge",
    "pcie-to-pci-bridge",
];
/// PCI controller models libvirt knows that oxvirt does not lay out.
pub(crate) const LIBVIRT_ONLY_PCI_CONTROLLER_MODELS: &[&str] = &[
    "pcie-switch-upstream-port",
    "pcie-switch-downstream-port",
    "pci-expander-bus",
    "pcie-expander-bus",
];
/// `<controller type='pci'><model name=>`: the QEMU devices libvirt names there.
pub(crate) const PCI_CONTROLLER_MODEL_NAMES: &[&str] = &[
    "pci-bridge",
    "i82801b11-bridge",
    "ioh3420",
    "pcie-root-port",
    "x3130-upstream",
    "xio3130-downstream",
    "pxb",
    "pxb-pcie",
    "pcie-pci-bridge",
    "spapr-pci-host-bridge",
];

/// The name of `value` in its parse table (every variant is listed).
pub(crate) fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], value: T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(n, _)| *n)
        .unwrap_or("")
}

macro_rules! xml_names {
    ($($ty:ty => $table:ident),* $(,)?) => {
        $(
            impl $ty {
                /// The value as written in domain XML.
                pub fn as_str(self) -> &'static str {
                    name_of($table, self)
                }
            }
        )*
    };
}

xml_names! {
    DomainType => DOMAIN_TYPES,
    LifecycleAction => LIFECYCLE_ACTIONS,
    VcpuPlacement => PLACEMENTS,
    NumaMode => NUMA_MODES,
    MemorySource => MEMORY_SOURCES,
    MemoryAccess => MEMORY_ACCESSES,
    MemoryAllocation => MEMORY_ALLOCATIONS,
    CpuMode => CPU_MODES,
    CpuMatch => CPU_MATCHES,
    CpuCheck => CPU_CHECKS,
    CpuFallback => CPU_FALLBACKS,
    FeaturePolicy => FEATURE_POLICIES,
    Firmware => FIRMWARES,
    BootDevice => BOOT_DEVICES,
    LoaderType => LOADER_TYPES,
    ClockOffset => CLOCK_OFFSETS,
    TimerName => TIMER_NAMES,
    TickPolicy => TICK_POLICIES,
    DiskType => DISK_TYPES,
    NetworkProtocol => NETWORK_PROTOCOLS,
    SecretUsageType => SECRET_USAGE_TYPES,
    DiskDevice => DISK_DEVICES,
    DiskFormat => DISK_FORMATS,
    DiskCache => DISK_CACHES,
    DiskIo => DISK_IOS,
    DiskDiscard => DISK_DISCARDS,
    DetectZeroes => DETECT_ZEROES,
    DiskErrorPolicy => DISK_ERROR_POLICIES,
    DiskBus => DISK_BUSES,
    ControllerType => CONTROLLER_TYPES,
    InterfaceType => INTERFACE_TYPES,
    DirectMode => DIRECT_MODES,
    InterfaceDriverName => INTERFACE_DRIVERS,
    UnixMode => UNIX_MODES,
    TcpProtocol => TCP_PROTOCOLS,
    InputType => INPUT_TYPES,
    InputBus => INPUT_BUSES,
    VideoModel => VIDEO_MODELS,
    MemBalloonModel => BALLOON_MODELS,
    AudioType => AUDIO_TYPES,
    AudioFormat => AUDIO_FORMATS,
    SoundModel => SOUND_MODELS,
    SoundCodec => SOUND_CODECS,
    SpiceImageCompression => SPICE_IMAGE_COMPRESSIONS,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_name() {
        assert_eq!(DiskFormat::Qcow2.as_str(), "qcow2");
        assert_eq!(
            LifecycleAction::CoredumpRestart.as_str(),
            "coredump-restart"
        );
        assert_eq!(ControllerType::VirtioSerial.as_str(), "virtio-serial");
        for (table_len, names) in [
            (DISK_BUSES.len(), 6),
            (LIFECYCLE_ACTIONS.len(), 6),
            (CONTROLLER_TYPES.len(), 7),
            (VIDEO_MODELS.len(), 7),
            (TIMER_NAMES.len(), 7),
        ] {
            assert_eq!(table_len, names);
        }
    }
}

//! The XML spelling of each enumeration (`DiskFormat::Qcow2.as_str() == "qcow2"`), for
//! other crates that print or log values the way libvirt writes them.

use crate::model::*;
use crate::parse::*;

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
    DiskDevice => DISK_DEVICES,
    DiskFormat => DISK_FORMATS,
    DiskCache => DISK_CACHES,
    DiskIo => DISK_IOS,
    DiskDiscard => DISK_DISCARDS,
    DetectZeroes => DETECT_ZEROES,
    DiskBus => DISK_BUSES,
    ControllerType => CONTROLLER_TYPES,
    InterfaceType => INTERFACE_TYPES,
    InterfaceDriverName => INTERFACE_DRIVERS,
    UnixMode => UNIX_MODES,
    InputType => INPUT_TYPES,
    InputBus => INPUT_BUSES,
    VideoModel => VIDEO_MODELS,
    MemBalloonModel => BALLOON_MODELS,
    AudioType => AUDIO_TYPES,
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
            (VIDEO_MODELS.len(), 6),
            (TIMER_NAMES.len(), 7),
        ] {
            assert_eq!(table_len, names);
        }
    }
}

//! A disk's I/O limits (`<iotune>`, blkdeviotune) in QEMU: QMP `block_set_io_throttle`, as
//! libvirt does with `-blockdev` (at start, before the guest runs, and live), and the limits
//! back from `query-block`.

use oxvirt_domain::{Disk, DiskBus, IoLevel, IoLimit, IoTune};
use serde_json::{json, Value};

/// QEMU's name of a limit (`block_set_io_throttle`'s argument, `query-block`'s key).
pub fn qemu_name(limit: IoLimit) -> &'static str {
    match limit {
        IoLimit::TotalBytesSec => "bps",
        IoLimit::ReadBytesSec => "bps_rd",
        IoLimit::WriteBytesSec => "bps_wr",
        IoLimit::TotalIopsSec => "iops",
        IoLimit::ReadIopsSec => "iops_rd",
        IoLimit::WriteIopsSec => "iops_wr",
        IoLimit::TotalBytesSecMax => "bps_max",
        IoLimit::ReadBytesSecMax => "bps_rd_max",
        IoLimit::WriteBytesSecMax => "bps_wr_max",
        IoLimit::TotalIopsSecMax => "iops_max",
        IoLimit::ReadIopsSecMax => "iops_rd_max",
        IoLimit::WriteIopsSecMax => "iops_wr_max",
        IoLimit::SizeIopsSec => "iops_size",
        IoLimit::TotalBytesSecMaxLength => "bps_max_length",
        IoLimit::ReadBytesSecMaxLength => "bps_rd_max_length",
        IoLimit::WriteBytesSecMaxLength => "bps_wr_max_length",
        IoLimit::TotalIopsSecMaxLength => "iops_max_length",
        IoLimit::ReadIopsSecMaxLength => "iops_rd_max_length",
        IoLimit::WriteIopsSecMaxLength => "iops_wr_max_length",
    }
}

/// The guest device QEMU throttles for `disk` (libvirt's QOM name of it): a virtio disk's
/// block backend is below the PCI device the command line named after the target.
pub fn disk_qom_name(disk: &Disk) -> String {
    let dev = &disk.target.dev;
    match disk.target.bus {
        DiskBus::Virtio => format!("/machine/peripheral/{dev}/virtio-backend"),
        _ => dev.clone(),
    }
}

/// `block_set_io_throttle`'s arguments for guest device `qdev`: every limit (0 lifts it) and
/// the group, when there is one.
pub fn throttle_arguments(qdev: &str, tune: &IoTune) -> Value {
    let mut arguments = json!({ "id": qdev });
    for limit in IoLimit::ALL {
        // QEMU refuses a burst length of 0; left out, it is its default (1 s).
        if tune.get(limit) == 0 && limit.kind().2 == IoLevel::MaxLength {
            continue;
        }
        arguments[qemu_name(limit)] = json!(tune.get(limit));
    }
    if let Some(group) = &tune.group_name {
        arguments["group"] = json!(group);
    }
    arguments
}

/// The limits of a `query-block` entry's `inserted` object (QEMU says 1 for the length of a
/// burst given without one; libvirt shows what QEMU says).
pub fn io_tune_of(inserted: &Value) -> IoTune {
    let mut tune = IoTune::default();
    for limit in IoLimit::ALL {
        tune.set(limit, inserted[qemu_name(limit)].as_u64().unwrap_or(0));
    }
    // A length means nothing without its burst: never report one that would not pass
    // IoTune::check when it is set again.
    for limit in IoLimit::ALL {
        let length = limit.kind().2 == IoLevel::MaxLength;
        if length && limit.needs().is_some_and(|needed| tune.get(needed) == 0) {
            tune.set(limit, 0);
        }
    }
    tune.group_name = inserted["group"]
        .as_str()
        .filter(|group| !group.is_empty())
        .map(str::to_string);
    tune
}

/// Whether a start must set `disk`'s limits: it has some and a medium (QEMU cannot throttle
/// an empty drive; libvirt skips it too).
pub fn throttled_at_start(disk: &Disk) -> Option<&IoTune> {
    let has_medium = disk.source.is_some() || disk.volume.is_some() || disk.network.is_some();
    disk.iotune.as_ref().filter(|_| has_medium)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_take_qemus_names_and_come_back() {
        let mut tune = IoTune::from_iter([
            (IoLimit::TotalIopsSec, 50),
            (IoLimit::ReadBytesSec, 5),
            (IoLimit::ReadBytesSecMax, 7),
        ]);
        tune.group_name = Some("g1".into());
        let args = throttle_arguments("vdb", &tune);
        assert_eq!(args["id"], "vdb");
        assert_eq!(args["iops"], 50);
        assert_eq!(args["bps_rd_max"], 7);
        assert_eq!(args["bps"], 0);
        assert_eq!(args["group"], "g1");
        assert!(args.get("iops_max_length").is_none(), "{args}");
        let back = io_tune_of(&args);
        assert_eq!(back, tune);
        // QEMU's length of a burst it does not have is dropped.
        let mut reported = args.clone();
        reported["iops_max_length"] = json!(1);
        assert_eq!(io_tune_of(&reported), tune);
        let names: std::collections::BTreeSet<_> = IoLimit::ALL.map(qemu_name).into();
        assert_eq!(names.len(), IoLimit::ALL.len());
    }
}

//! A disk's I/O limits: `<disk><iotune>` and what `blkdeviotune` shows and changes. The one
//! list of the limits' names ([`IoLimit`]), their order, and libvirt's rules between them, for
//! the definition (parse, validate, write) and for a running guest's limits alike.

/// One limit, by libvirt's name. Every limit is per second except the burst lengths
/// (`*_max_length`, seconds) and `size_iops_sec` (bytes counted as one operation); 0 is "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IoLimit {
    TotalBytesSec,
    ReadBytesSec,
    WriteBytesSec,
    TotalIopsSec,
    ReadIopsSec,
    WriteIopsSec,
    TotalBytesSecMax,
    ReadBytesSecMax,
    WriteBytesSecMax,
    TotalIopsSecMax,
    ReadIopsSecMax,
    WriteIopsSecMax,
    SizeIopsSec,
    TotalBytesSecMaxLength,
    ReadBytesSecMaxLength,
    WriteBytesSecMaxLength,
    TotalIopsSecMaxLength,
    ReadIopsSecMaxLength,
    WriteIopsSecMaxLength,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoUnit {
    Bytes,
    Iops,
    /// `size_iops_sec`: how many bytes make one operation.
    Size,
}

/// Which I/O a limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoDirection {
    Total,
    Read,
    Write,
}

/// A rate, its burst rate, or how long a burst may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoLevel {
    Rate,
    Max,
    MaxLength,
}

/// libvirt's (and QEMU's) largest limit: libvirt refuses more with QEMU.
pub const IO_LIMIT_MAX: u64 = 1_000_000_000_000_000;

impl IoLimit {
    /// Every limit, in libvirt's order (of `<iotune>` and of blkdeviotune's output); the
    /// group name goes between [`IoLimit::SizeIopsSec`] and the burst lengths.
    pub const ALL: [IoLimit; 19] = [
        IoLimit::TotalBytesSec,
        IoLimit::ReadBytesSec,
        IoLimit::WriteBytesSec,
        IoLimit::TotalIopsSec,
        IoLimit::ReadIopsSec,
        IoLimit::WriteIopsSec,
        IoLimit::TotalBytesSecMax,
        IoLimit::ReadBytesSecMax,
        IoLimit::WriteBytesSecMax,
        IoLimit::TotalIopsSecMax,
        IoLimit::ReadIopsSecMax,
        IoLimit::WriteIopsSecMax,
        IoLimit::SizeIopsSec,
        IoLimit::TotalBytesSecMaxLength,
        IoLimit::ReadBytesSecMaxLength,
        IoLimit::WriteBytesSecMaxLength,
        IoLimit::TotalIopsSecMaxLength,
        IoLimit::ReadIopsSecMaxLength,
        IoLimit::WriteIopsSecMaxLength,
    ];

    /// libvirt's name: the element in `<iotune>`, blkdeviotune's field and option.
    pub const fn name(self) -> &'static str {
        match self {
            IoLimit::TotalBytesSec => "total_bytes_sec",
            IoLimit::ReadBytesSec => "read_bytes_sec",
            IoLimit::WriteBytesSec => "write_bytes_sec",
            IoLimit::TotalIopsSec => "total_iops_sec",
            IoLimit::ReadIopsSec => "read_iops_sec",
            IoLimit::WriteIopsSec => "write_iops_sec",
            IoLimit::TotalBytesSecMax => "total_bytes_sec_max",
            IoLimit::ReadBytesSecMax => "read_bytes_sec_max",
            IoLimit::WriteBytesSecMax => "write_bytes_sec_max",
            IoLimit::TotalIopsSecMax => "total_iops_sec_max",
            IoLimit::ReadIopsSecMax => "read_iops_sec_max",
            IoLimit::WriteIopsSecMax => "write_iops_sec_max",
            IoLimit::SizeIopsSec => "size_iops_sec",
            IoLimit::TotalBytesSecMaxLength => "total_bytes_sec_max_length",
            IoLimit::ReadBytesSecMaxLength => "read_bytes_sec_max_length",
            IoLimit::WriteBytesSecMaxLength => "write_bytes_sec_max_length",
            IoLimit::TotalIopsSecMaxLength => "total_iops_sec_max_length",
            IoLimit::ReadIopsSecMaxLength => "read_iops_sec_max_length",
            IoLimit::WriteIopsSecMaxLength => "write_iops_sec_max_length",
        }
    }

    /// The limit named `name` (libvirt's name).
    pub fn from_name(name: &str) -> Option<IoLimit> {
        IoLimit::ALL.into_iter().find(|limit| limit.name() == name)
    }

    /// What it counts, which I/O, and whether it is a rate, a burst or a burst's length.
    pub const fn kind(self) -> (IoUnit, IoDirection, IoLevel) {
        use IoDirection::*;
        use IoLevel::*;
        use IoUnit::*;
        match self {
            IoLimit::TotalBytesSec => (Bytes, Total, Rate),
            IoLimit::ReadBytesSec => (Bytes, Read, Rate),
            IoLimit::WriteBytesSec => (Bytes, Write, Rate),
            IoLimit::TotalIopsSec => (Iops, Total, Rate),
            IoLimit::ReadIopsSec => (Iops, Read, Rate),
            IoLimit::WriteIopsSec => (Iops, Write, Rate),
            IoLimit::TotalBytesSecMax => (Bytes, Total, Max),
            IoLimit::ReadBytesSecMax => (Bytes, Read, Max),
            IoLimit::WriteBytesSecMax => (Bytes, Write, Max),
            IoLimit::TotalIopsSecMax => (Iops, Total, Max),
            IoLimit::ReadIopsSecMax => (Iops, Read, Max),
            IoLimit::WriteIopsSecMax => (Iops, Write, Max),
            IoLimit::SizeIopsSec => (Size, Total, Rate),
            IoLimit::TotalBytesSecMaxLength => (Bytes, Total, MaxLength),
            IoLimit::ReadBytesSecMaxLength => (Bytes, Read, MaxLength),
            IoLimit::WriteBytesSecMaxLength => (Bytes, Write, MaxLength),
            IoLimit::TotalIopsSecMaxLength => (Iops, Total, MaxLength),
            IoLimit::ReadIopsSecMaxLength => (Iops, Read, MaxLength),
            IoLimit::WriteIopsSecMaxLength => (Iops, Write, MaxLength),
        }
    }

    /// The limit of the same unit and direction one level down: a burst's rate, a burst
    /// length's burst; `None` for rates.
    pub fn needs(self) -> Option<IoLimit> {
        let (unit, direction, level) = self.kind();
        let wanted = match level {
            IoLevel::Rate => return None,
            IoLevel::Max => IoLevel::Rate,
            IoLevel::MaxLength => IoLevel::Max,
        };
        IoLimit::ALL
            .into_iter()
            .find(|other| other.kind() == (unit, direction, wanted))
    }

    /// One line saying what the limit is (command-line help).
    pub fn describe(self) -> String {
        let (unit, direction, level) = self.kind();
        let which = match direction {
            IoDirection::Total => "total",
            IoDirection::Read => "read",
            IoDirection::Write => "write",
        };
        let (noun, rate) = match unit {
            IoUnit::Bytes => ("throughput", "throughput, bytes per second"),
            IoUnit::Iops => ("I/O operations", "I/O operations per second"),
            IoUnit::Size => {
                return "Size of an I/O operation counted by the iops limits, bytes".into()
            }
        };
        match level {
            IoLevel::Rate => format!("Limit of {which} {rate}"),
            IoLevel::Max => format!("Burst of {which} {rate}"),
            IoLevel::MaxLength => format!("How long a burst of {which} {noun} may last, seconds"),
        }
    }
}

/// `<disk><iotune>`: a disk's limits (0: none) and the throttle group it shares them in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IoTune {
    /// By [`IoLimit::ALL`]'s order.
    values: [u64; 19],
    /// `<group_name>`: disks of one group share their limits.
    pub group_name: Option<String>,
}

/// Limits from (limit, value) pairs, no group.
impl FromIterator<(IoLimit, u64)> for IoTune {
    fn from_iter<T: IntoIterator<Item = (IoLimit, u64)>>(limits: T) -> IoTune {
        let mut tune = IoTune::default();
        for (limit, value) in limits {
            tune.set(limit, value);
        }
        tune
    }
}

impl IoTune {
    pub fn get(&self, limit: IoLimit) -> u64 {
        self.values[limit as usize]
    }

    pub fn set(&mut self, limit: IoLimit, value: u64) {
        self.values[limit as usize] = value;
    }

    /// The limits that are set (nonzero), in libvirt's order.
    pub fn limits(&self) -> impl Iterator<Item = (IoLimit, u64)> + '_ {
        IoLimit::ALL
            .into_iter()
            .map(|limit| (limit, self.get(limit)))
            .filter(|(_, value)| *value != 0)
    }

    /// No limit and no group: libvirt writes no `<iotune>` for it.
    pub fn is_empty(&self) -> bool {
        self.limits().next().is_none() && self.group_name.is_none()
    }

    /// blkdeviotune's changes, as libvirt makes them: giving one limit of a kind (the rates
    /// of bytes, of operations, their bursts, the bursts' lengths, the operation size) sets
    /// the others of that kind to what is given or 0, so a new total replaces read and write
    /// limits; the kinds not given, and the group when none is given, stay as they were.
    pub fn apply(&mut self, changes: &[(IoLimit, u64)], group_name: Option<&str>) {
        let kind = |limit: IoLimit| {
            let (unit, _, level) = limit.kind();
            (unit, level)
        };
        for limit in IoLimit::ALL {
            if changes.iter().any(|(given, _)| kind(*given) == kind(limit)) {
                let value = changes
                    .iter()
                    .rev()
                    .find(|(given, _)| *given == limit)
                    .map_or(0, |(_, value)| *value);
                self.set(limit, value);
            }
        }
        if let Some(group) = group_name {
            self.group_name = (!group.is_empty()).then(|| group.to_string());
        }
    }

    /// libvirt's rules between the limits: a total and a read or write limit of one kind
    /// exclude each other, a burst needs its rate and a burst length its burst, no value is
    /// above [`IO_LIMIT_MAX`] (libvirt's messages); and QEMU's: a burst is at least its rate.
    pub fn check(&self) -> Result<(), String> {
        for (limit, value) in self.limits() {
            if value > IO_LIMIT_MAX {
                return Err(format!(
                    "{}: block I/O throttle limit must be no more than {IO_LIMIT_MAX}",
                    limit.name()
                ));
            }
        }
        for total in IoLimit::ALL {
            let (unit, direction, level) = total.kind();
            if direction != IoDirection::Total || unit == IoUnit::Size || self.get(total) == 0 {
                continue;
            }
            let clash = IoLimit::ALL.into_iter().find(|other| {
                let (u, d, l) = other.kind();
                u == unit && l == level && d != IoDirection::Total && self.get(*other) != 0
            });
            if let Some(other) = clash {
                return Err(format!(
                    "total and read/write {} cannot be set at the same time ({} and {})",
                    total.name().trim_start_matches("total_"),
                    total.name(),
                    other.name()
                ));
            }
        }
        for (limit, value) in self.limits() {
            let Some(needed) = limit.needs() else {
                continue;
            };
            let base = self.get(needed);
            if base == 0 {
                return Err(format!(
                    "value '{}' cannot be set if '{}' is not set",
                    limit.name(),
                    needed.name()
                ));
            }
            // QEMU's rule: a burst below its rate is no burst.
            if limit.kind().2 == IoLevel::Max && value < base {
                return Err(format!(
                    "value '{}' ({value}) must be at least '{}' ({base})",
                    limit.name(),
                    needed.name()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_found_again() {
        for (index, limit) in IoLimit::ALL.into_iter().enumerate() {
            assert_eq!(limit as usize, index, "ALL is in declaration order");
            assert_eq!(IoLimit::from_name(limit.name()), Some(limit));
        }
        assert_eq!(IoLimit::from_name("total_iops"), None);
        assert_eq!(
            IoLimit::TotalIopsSecMaxLength.needs(),
            Some(IoLimit::TotalIopsSecMax)
        );
        assert_eq!(
            IoLimit::ReadBytesSecMax.needs(),
            Some(IoLimit::ReadBytesSec)
        );
        assert_eq!(IoLimit::SizeIopsSec.needs(), None);
    }

    #[test]
    fn libvirts_rules() {
        let mut tune = IoTune::default();
        tune.set(IoLimit::TotalIopsSec, 50);
        assert_eq!(tune.check(), Ok(()));
        tune.set(IoLimit::ReadIopsSec, 10);
        let err = tune.check().unwrap_err();
        assert!(err.contains("total and read/write iops_sec"), "{err}");

        let mut tune = IoTune::default();
        tune.set(IoLimit::WriteBytesSecMax, 10);
        let err = tune.check().unwrap_err();
        assert_eq!(
            err,
            "value 'write_bytes_sec_max' cannot be set if 'write_bytes_sec' is not set"
        );
        tune.set(IoLimit::WriteBytesSec, 5);
        tune.set(IoLimit::WriteBytesSecMaxLength, 3);
        assert_eq!(tune.check(), Ok(()));
        tune.set(IoLimit::WriteBytesSec, 11);
        let err = tune.check().unwrap_err();
        assert!(
            err.contains("must be at least 'write_bytes_sec' (11)"),
            "{err}"
        );

        tune.set(IoLimit::WriteBytesSec, IO_LIMIT_MAX + 1);
        assert!(tune.check().unwrap_err().contains("no more than"));
    }

    #[test]
    fn changes_replace_their_kind_only() {
        let mut tune: IoTune = [
            (IoLimit::ReadIopsSec, 10),
            (IoLimit::WriteIopsSec, 20),
            (IoLimit::TotalBytesSec, 1000),
        ]
        .into_iter()
        .collect();
        tune.group_name = Some("g".into());
        tune.apply(&[(IoLimit::TotalIopsSec, 50)], None);
        assert_eq!(tune.get(IoLimit::TotalIopsSec), 50);
        assert_eq!(tune.get(IoLimit::ReadIopsSec), 0);
        assert_eq!(tune.get(IoLimit::WriteIopsSec), 0);
        assert_eq!(tune.get(IoLimit::TotalBytesSec), 1000);
        assert_eq!(tune.group_name.as_deref(), Some("g"));
        tune.apply(&[], Some(""));
        assert_eq!(tune.group_name, None);
        assert!(!tune.is_empty());
        tune.apply(
            &[(IoLimit::TotalIopsSec, 0), (IoLimit::TotalBytesSec, 0)],
            None,
        );
        assert!(tune.is_empty());
    }
}

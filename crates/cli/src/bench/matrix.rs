//! `--matrix`: the disk settings the qemu target is measured with, one list of values per axis (`cache=none,
//! writeback io=native,threads bus=virtio,scsi`), every combination a column of the report. The combinations
//! run in one guest: the data disk is hot-plugged with each combination's settings (attach-disk; on bus scsi,
//! oxvirtd plugs a virtio-scsi controller first), measured, and unplugged.

use anyhow::bail;

/// An axis of the matrix: its name, the values it takes, and the value the qemu target uses without `--matrix`.
struct Axis {
    name: &'static str,
    values: &'static [&'static str],
    default: &'static str,
}

const AXES: [Axis; 4] = [
    Axis {
        name: "cache",
        values: &["none", "writeback"],
        default: "none",
    },
    Axis {
        name: "io",
        values: &["native", "threads", "io_uring"],
        default: "native",
    },
    Axis {
        name: "format",
        values: &["raw", "qcow2"],
        default: "raw",
    },
    Axis {
        name: "bus",
        values: &["virtio", "scsi"],
        default: "virtio",
    },
];

/// One combination of disk settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSetting {
    pub cache: String,
    pub io: String,
    pub format: String,
    pub bus: String,
    /// The axes `--matrix` named, `name=value` each, in `--matrix`'s order: the column's name after `qemu:`.
    label: Vec<String>,
}

impl DiskSetting {
    /// The report's target name for this combination: `qemu:cache=none,io=native` (the axes `--matrix`
    /// named), or `qemu` without `--matrix`.
    pub fn target(&self) -> String {
        if self.label.is_empty() {
            "qemu".to_string()
        } else {
            format!("qemu:{}", self.label.join(","))
        }
    }

    /// The data disk's target in the guest's definition and the device the guest names it: the guest's first
    /// disk is a virtio `vda`, so a virtio data disk is its `vdb` and a SCSI one its first SCSI disk, `sda`.
    pub fn data_disk(&self) -> (&'static str, &'static str) {
        match self.bus.as_str() {
            "scsi" => ("sda", "/dev/sda"),
            _ => ("vdb", "/dev/vdb"),
        }
    }
}

/// The combinations `--matrix SPEC...` asks for, in order (the first axis given varies slowest). Without
/// SPECs: the qemu target's one setting. Combinations QEMU cannot run (io=native without cache=none) are
/// left out, each said in `skipped`.
pub fn parse(specs: &[String], skipped: &mut Vec<String>) -> anyhow::Result<Vec<DiskSetting>> {
    let mut chosen: Vec<(&Axis, Vec<&'static str>)> = Vec::new();
    for spec in specs {
        let Some((name, list)) = spec.split_once('=') else {
            bail!(
                "--matrix '{spec}': want AXIS=VALUE[,VALUE...] (axes: {})",
                axis_names()
            );
        };
        let axis = AXES.iter().find(|a| a.name == name).ok_or_else(|| {
            anyhow::anyhow!(
                "--matrix '{spec}': unknown axis '{name}' (known: {})",
                axis_names()
            )
        })?;
        if chosen.iter().any(|(a, _)| a.name == name) {
            bail!("--matrix '{spec}': the axis '{name}' is given twice");
        }
        let mut values = Vec::new();
        for value in list.split(',') {
            let known = axis.values.iter().find(|v| **v == value).ok_or_else(|| {
                anyhow::anyhow!(
                    "--matrix '{spec}': unknown {name} '{value}' (known: {})",
                    axis.values.join(", ")
                )
            })?;
            if !values.contains(known) {
                values.push(*known);
            }
        }
        chosen.push((axis, values));
    }
    let mut combinations: Vec<Vec<(&'static str, &'static str)>> = vec![Vec::new()];
    for (axis, values) in &chosen {
        combinations = combinations
            .iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((axis.name, *v));
                    c
                })
            })
            .collect();
    }
    let mut settings = Vec::new();
    for combination in combinations {
        let value = |name: &str| {
            combination
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .or_else(|| AXES.iter().find(|a| a.name == name).map(|a| a.default))
                .unwrap_or_default()
                .to_string()
        };
        let setting = DiskSetting {
            cache: value("cache"),
            io: value("io"),
            format: value("format"),
            bus: value("bus"),
            label: combination
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect(),
        };
        if setting.io == "native" && setting.cache != "none" {
            skipped.push(format!(
                "{}: io=native needs cache=none (QEMU's native AIO works with O_DIRECT only)",
                setting.target()
            ));
            continue;
        }
        settings.push(setting);
    }
    if settings.is_empty() {
        bail!(
            "--matrix leaves no combination QEMU can run: {}",
            skipped.join("; ")
        );
    }
    Ok(settings)
}

fn axis_names() -> String {
    AXES.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(specs: &[&str]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        let mut skipped = Vec::new();
        let settings = parse(&specs, &mut skipped)?;
        Ok((settings.iter().map(DiskSetting::target).collect(), skipped))
    }

    #[test]
    fn combinations_follow_the_axes_given() {
        assert_eq!(targets(&[]).unwrap().0, ["qemu"]);
        let (t, skipped) = targets(&["io=native,threads", "format=raw,qcow2"]).unwrap();
        assert_eq!(
            t,
            [
                "qemu:io=native,format=raw",
                "qemu:io=native,format=qcow2",
                "qemu:io=threads,format=raw",
                "qemu:io=threads,format=qcow2"
            ]
        );
        assert!(skipped.is_empty());
        let specs = ["bus=virtio,scsi".to_string()];
        let settings = parse(&specs, &mut Vec::new()).unwrap();
        let disks: Vec<_> = settings
            .iter()
            .map(|s| (s.target(), s.data_disk()))
            .collect();
        assert_eq!(
            disks,
            [
                ("qemu:bus=virtio".to_string(), ("vdb", "/dev/vdb")),
                ("qemu:bus=scsi".to_string(), ("sda", "/dev/sda"))
            ]
        );
        let (t, skipped) = targets(&["cache=none,writeback", "io=native,io_uring"]).unwrap();
        assert_eq!(
            t,
            [
                "qemu:cache=none,io=native",
                "qemu:cache=none,io=io_uring",
                "qemu:cache=writeback,io=io_uring"
            ]
        );
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(
            skipped[0].starts_with("qemu:cache=writeback,io=native: io=native needs cache=none")
        );
    }

    #[test]
    fn bad_specs_are_refused_naming_them() {
        let err = |specs: &[&str]| format!("{:#}", targets(specs).unwrap_err());
        assert_eq!(
            err(&["speed=fast"]),
            "--matrix 'speed=fast': unknown axis 'speed' (known: cache, io, format, bus)"
        );
        assert_eq!(
            err(&["cache=none,fast"]),
            "--matrix 'cache=none,fast': unknown cache 'fast' (known: none, writeback)"
        );
        assert!(err(&["cache"]).starts_with("--matrix 'cache': want AXIS=VALUE"));
        assert!(err(&["io=threads", "io=native"]).contains("given twice"));
        assert!(err(&["cache=writeback"]).contains("leaves no combination"));
    }
}

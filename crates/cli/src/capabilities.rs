//! The hypervisor's CPU models: virsh's `cpu-models`, `hypervisor-cpu-baseline` and
//! `hypervisor-cpu-compare`. oxvirtd supplies the model database (asked of QEMU, see
//! `oxvirt_api::capabilities`); the CPU descriptions the user gives are read here, each error
//! naming the file and line. How a baseline is chosen: docs/cpu-models.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use oxvirt_api::{Client, CpuModelInfo, CpuModels};
use oxvirt_xml::roxmltree;

use crate::commands::block_on;

#[derive(Subcommand, Debug)]
pub enum CapabilitiesCommand {
    /// List the named CPU models this host's QEMU offers for an architecture.
    CpuModels {
        /// The architecture (x86_64).
        arch: String,
    },
    /// Print the CPU (model and features) that every one of the described hosts runs; what each
    /// host lacks of the others' features goes to stderr.
    HypervisorCpuBaseline {
        /// Files with libvirt <cpu> descriptions, <capabilities> or <domainCapabilities>.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// List every feature, the model's too.
        #[arg(long)]
        features: bool,
        /// Use this model as the base (an error names the hosts that cannot run it).
        #[arg(long)]
        model: Option<String>,
        /// The hypervisor whose models count: qemu (TCG) or kvm.
        #[arg(long, default_value = "qemu")]
        virttype: String,
        /// The architecture.
        #[arg(long, default_value = "x86_64")]
        arch: String,
    },
    /// Compare a CPU description with the CPU the hypervisor provides on this host.
    HypervisorCpuCompare {
        /// A file with a libvirt <cpu> description (the first one found counts).
        file: PathBuf,
        /// Fail (exit 1) when the CPU is incompatible, naming the missing features.
        #[arg(long)]
        error: bool,
        /// The hypervisor: qemu (TCG's max CPU) or kvm (the host CPU under KVM).
        #[arg(long, default_value = "qemu")]
        virttype: String,
        /// The architecture.
        #[arg(long, default_value = "x86_64")]
        arch: String,
    },
}

pub fn run(client: &Client, command: CapabilitiesCommand) -> anyhow::Result<String> {
    match command {
        CapabilitiesCommand::CpuModels { arch } => {
            let models = block_on(client.cpu_models(&arch, "qemu"))??;
            Ok(list_models(&models))
        }
        CapabilitiesCommand::HypervisorCpuBaseline {
            files,
            features,
            model,
            virttype,
            arch,
        } => {
            let database = block_on(client.cpu_models(&arch, &virttype))??;
            let mut hosts = Vec::new();
            for file in &files {
                hosts.extend(read_cpus(file, &database)?);
            }
            let baseline = baseline(&database, &hosts, model.as_deref())?;
            eprint!("{}", lacks_report(&hosts));
            Ok(baseline.xml(features))
        }
        CapabilitiesCommand::HypervisorCpuCompare {
            file,
            error,
            virttype,
            arch,
        } => {
            let database = block_on(client.cpu_models(&arch, &virttype))??;
            let cpu = read_cpus(&file, &database)?
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("{}: no <cpu> description", file.display()))?;
            compare(&file, &cpu, &database, error)
        }
    }
}

/// Names one per line, the oldest first as virsh lists them (its order is libvirt's own map;
/// ours groups Intel's models before the others and orders each group by its number of
/// features, which follows the generations).
fn list_models(database: &CpuModels) -> String {
    let mut models: Vec<&CpuModelInfo> = database.models.iter().collect();
    models.sort_by_key(|m| (m.vendor != "GenuineIntel", m.features.len(), m.name.clone()));
    models.iter().map(|m| format!("{}\n", m.name)).collect()
}

/// One host's CPU as described: its features (a model's expanded) and where it was written.
#[derive(Debug, Clone)]
pub struct HostCpu {
    /// `FILE:LINE` of its `<cpu>` (or `<mode name='host-model'>`).
    pub origin: String,
    pub vendor: Option<String>,
    pub features: BTreeSet<String>,
}

/// libvirt's vendor names for CPUID's vendor strings.
fn vendor_name(cpuid: &str) -> &str {
    match cpuid {
        "GenuineIntel" => "Intel",
        "AuthenticAMD" => "AMD",
        "HygonGenuine" => "Hygon",
        other => other,
    }
}

fn line_of(document: &roxmltree::Document, node: roxmltree::Node) -> u32 {
    document.text_pos_at(node.range().start).row
}

/// Every CPU description in `file`: the file may hold `<cpu>` elements (several, as virsh
/// accepts them, without a common root), or a whole `<capabilities>` (its host `<cpu>`) or
/// `<domainCapabilities>` (its `<mode name='host-model'>`).
pub fn read_cpus(file: &Path, database: &CpuModels) -> anyhow::Result<Vec<HostCpu>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse_cpus(&file.display().to_string(), &text, database)
}

fn parse_cpus(name: &str, text: &str, database: &CpuModels) -> anyhow::Result<Vec<HostCpu>> {
    // A declaration may only open a document: blank it out (keeping lines and columns), then
    // wrap the text in a root on the same line so several top-level <cpu>s parse as one.
    let body = match text.trim_start().strip_prefix("<?xml") {
        Some(rest) => {
            let end = rest
                .find("?>")
                .ok_or_else(|| anyhow!("{name}: line 1: unterminated XML declaration"))?;
            let declaration = text.len() - rest.len() + end + 2;
            format!("{}{}", " ".repeat(declaration), &text[declaration..])
        }
        None => text.to_string(),
    };
    let wrapped = format!("<oxvirt-cpus>{body}</oxvirt-cpus>");
    let document = oxvirt_xml::parse(&wrapped).map_err(|err| anyhow!("{name}: {err}"))?;
    let mut cpus = Vec::new();
    for node in document.descendants().filter(|n| n.has_tag_name("cpu")) {
        // <cpus> in <capabilities> lists the host's logical CPUs per NUMA cell, not a model.
        if node.ancestors().any(|a| a.has_tag_name("cpus")) {
            continue;
        }
        let source = node
            .children()
            .find(|c| c.has_tag_name("mode") && c.attribute("name") == Some("host-model"))
            .unwrap_or(node);
        let origin = format!("{name}:{}", line_of(&document, source));
        let has_model = source.children().any(|c| c.has_tag_name("model"));
        let has_feature = source.children().any(|c| c.has_tag_name("feature"));
        if !has_model && !has_feature {
            continue;
        }
        cpus.push(host_cpu(name, &document, source, origin, database)?);
    }
    if cpus.is_empty() {
        let line = document
            .root_element()
            .first_element_child()
            .map_or(1, |n| line_of(&document, n));
        bail!(
            "{name}: line {line}: no <cpu> with a <model> or <feature> (expected a libvirt CPU \
             description, <capabilities> or <domainCapabilities>)"
        );
    }
    Ok(cpus)
}

fn host_cpu(
    file: &str,
    document: &roxmltree::Document,
    cpu: roxmltree::Node,
    origin: String,
    database: &CpuModels,
) -> anyhow::Result<HostCpu> {
    let mut features = BTreeSet::new();
    let mut vendor = None;
    for child in cpu.children().filter(roxmltree::Node::is_element) {
        let line = line_of(document, child);
        match child.tag_name().name() {
            "model" => {
                let wanted = child.text().unwrap_or_default().trim();
                let model = database
                    .models
                    .iter()
                    .find(|m| m.name == wanted)
                    .ok_or_else(|| {
                        anyhow!(
                            "{file}: line {line}: unknown CPU model '{wanted}' (see `oxvirt \
                             cpu-models {}`)",
                            database.arch
                        )
                    })?;
                features.extend(model.features.iter().cloned());
                vendor.get_or_insert_with(|| vendor_name(&model.vendor).to_string());
            }
            "vendor" => vendor = child.text().map(|v| v.trim().to_string()),
            _ => {}
        }
    }
    for feature in cpu.children().filter(|c| c.has_tag_name("feature")) {
        let line = line_of(document, feature);
        let name = feature
            .attribute("name")
            .ok_or_else(|| anyhow!("{file}: line {line}: <feature> without a name"))?;
        match feature.attribute("policy").unwrap_or("require") {
            "require" | "force" | "optional" => {
                features.insert(name.to_string());
            }
            "disable" | "forbid" => {
                features.remove(name);
            }
            other => bail!(
                "{file}: line {line}: feature policy '{other}' is not one of force, require, \
                 optional, disable, forbid"
            ),
        }
    }
    Ok(HostCpu {
        origin,
        vendor,
        features,
    })
}

/// The chosen model and the features beyond it that every host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline {
    pub model: String,
    pub vendor: Option<String>,
    pub model_features: BTreeSet<String>,
    pub extra: BTreeSet<String>,
}

fn common_features(hosts: &[HostCpu]) -> BTreeSet<String> {
    let mut hosts = hosts.iter();
    let Some(first) = hosts.next() else {
        return BTreeSet::new();
    };
    hosts.fold(first.features.clone(), |common, host| {
        common.intersection(&host.features).cloned().collect()
    })
}

/// The newest named model every host runs: among the models whose features are all in every
/// host's set (of the hosts' common vendor when they share one), the one with the most
/// features; then the common features it lacks.
pub fn baseline(
    database: &CpuModels,
    hosts: &[HostCpu],
    forced: Option<&str>,
) -> anyhow::Result<Baseline> {
    let common = common_features(hosts);
    let vendors: BTreeSet<Option<&str>> = hosts.iter().map(|h| h.vendor.as_deref()).collect();
    let vendor = match vendors.into_iter().collect::<Vec<_>>()[..] {
        [Some(only)] => Some(only.to_string()),
        _ => None,
    };
    let runs_everywhere = |model: &CpuModelInfo| model.features.iter().all(|f| common.contains(f));
    let chosen = match forced {
        Some(name) => {
            let model = database
                .models
                .iter()
                .find(|m| m.name == name)
                .ok_or_else(|| anyhow!("unknown CPU model '{name}'"))?;
            for host in hosts {
                let missing: Vec<&str> = model
                    .features
                    .iter()
                    .filter(|f| !host.features.contains(*f))
                    .map(String::as_str)
                    .collect();
                if !missing.is_empty() {
                    bail!(
                        "the CPU described at {} cannot run model '{name}': it lacks {}",
                        host.origin,
                        missing.join(", ")
                    );
                }
            }
            model
        }
        None => database
            .models
            .iter()
            .filter(|m| runs_everywhere(m))
            .filter(|m| {
                vendor
                    .as_deref()
                    .is_none_or(|v| vendor_name(&m.vendor) == v)
            })
            .max_by_key(|m| m.features.len())
            .ok_or_else(|| anyhow!("no named CPU model runs on every described host"))?,
    };
    let model_features: BTreeSet<String> = chosen.features.iter().cloned().collect();
    Ok(Baseline {
        model: chosen.name.clone(),
        vendor: vendor.or_else(|| Some(vendor_name(&chosen.vendor).to_string())),
        extra: common.difference(&model_features).cloned().collect(),
        model_features,
    })
}

impl Baseline {
    /// libvirt's `<cpu mode='custom' match='exact'>`; `all` lists the model's features too.
    pub fn xml(&self, all: bool) -> String {
        let mut xml = String::from("<cpu mode='custom' match='exact'>\n");
        xml.push_str(&format!(
            "  <model fallback='forbid'>{}</model>\n",
            oxvirt_xml::escape_text(&self.model)
        ));
        // No <vendor>: the model implies it, and oxvirt's <cpu><vendor> is QEMU's 12-character
        // CPUID vendor id (libvirt prints "Intel"), which a guest defined from this would refuse.
        let features: BTreeSet<&String> = if all {
            self.extra.iter().chain(&self.model_features).collect()
        } else {
            self.extra.iter().collect()
        };
        for feature in features {
            xml.push_str(&format!(
                "  <feature policy='require' name='{}'/>\n",
                oxvirt_xml::escape_attr(feature)
            ));
        }
        xml.push_str("</cpu>\n");
        xml
    }
}

/// One line per host: what it lacks of the features the others have (their union).
pub fn lacks_report(hosts: &[HostCpu]) -> String {
    let mut report = String::new();
    for (index, host) in hosts.iter().enumerate() {
        let others: BTreeSet<&String> = hosts
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .flat_map(|(_, h)| &h.features)
            .collect();
        let lacks: Vec<&str> = others
            .into_iter()
            .filter(|f| !host.features.contains(*f))
            .map(String::as_str)
            .collect();
        let what = if lacks.is_empty() {
            "nothing".to_string()
        } else {
            lacks.join(" ")
        };
        report.push_str(&format!(
            "host {} ({}) lacks: {what}\n",
            index + 1,
            host.origin
        ));
    }
    report
}

/// virsh's verdict on `cpu` against what the hypervisor provides.
fn compare(file: &Path, cpu: &HostCpu, database: &CpuModels, fail: bool) -> anyhow::Result<String> {
    let host: BTreeSet<&String> = database.host_features.iter().collect();
    let missing: Vec<&str> = cpu
        .features
        .iter()
        .filter(|f| !host.contains(f))
        .map(String::as_str)
        .collect();
    let file = file.display();
    if missing.is_empty() {
        return Ok(if cpu.features.len() == host.len() {
            format!("CPU described in {file} is identical to the CPU provided by hypervisor on the host\n")
        } else {
            format!("The CPU provided by hypervisor on the host is a superset of CPU described in {file}\n")
        });
    }
    let missing = missing.join(", ");
    if fail {
        bail!(
            "Failed to compare hypervisor CPU with {file}: the CPU is incompatible with host \
             CPU: Host CPU does not provide required features: {missing}"
        );
    }
    // virsh prints the verdict and exits 1; the features are oxvirt's addition (the error line).
    print!(
        "CPU described in {file} is incompatible with the CPU provided by hypervisor on the host\n\n"
    );
    bail!("Host CPU does not provide required features: {missing}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, vendor: &str, features: &[&str]) -> CpuModelInfo {
        CpuModelInfo {
            name: name.into(),
            vendor: vendor.into(),
            usable: true,
            features: features.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn database() -> CpuModels {
        CpuModels {
            qemu_version: "7.2.22".into(),
            arch: "x86_64".into(),
            models: vec![
                model("old", "GenuineIntel", &["fpu", "sse"]),
                model("mid", "GenuineIntel", &["fpu", "sse", "sse2"]),
                model("new", "GenuineIntel", &["fpu", "sse", "sse2", "avx"]),
                model("amd", "AuthenticAMD", &["fpu", "sse", "sse2", "svm"]),
            ],
            virttype: "qemu".into(),
            host_features: vec!["fpu".into(), "sse".into(), "sse2".into()],
        }
    }

    #[test]
    fn baseline_takes_the_largest_model_all_run_and_the_shared_rest() {
        let db = database();
        let text = "<cpu><model>new</model><feature name='aes'/></cpu>\n\
                    <cpu><model>mid</model><feature name='aes'/><feature name='x2apic'/></cpu>";
        let hosts = parse_cpus("h.xml", text, &db).expect("parses");
        let base = baseline(&db, &hosts, None).expect("baseline");
        assert_eq!(base.model, "mid");
        assert_eq!(base.extra.iter().collect::<Vec<_>>(), ["aes"]);
        assert_eq!(base.vendor.as_deref(), Some("Intel"));
        let report = lacks_report(&hosts);
        assert!(
            report.contains("host 1 (h.xml:1) lacks: x2apic"),
            "{report}"
        );
        assert!(report.contains("host 2 (h.xml:2) lacks: avx"), "{report}");
        let forced = baseline(&db, &hosts, Some("new")).expect_err("host 2 lacks avx");
        assert!(forced.to_string().contains("h.xml:2"), "{forced}");
    }

    #[test]
    fn disabled_features_leave_the_set() {
        let db = database();
        let hosts = parse_cpus(
            "d.xml",
            "<?xml version='1.0'?>\n<cpu><model>new</model><feature policy='disable' name='avx'/></cpu>",
            &db,
        )
        .expect("parses");
        assert!(!hosts[0].features.contains("avx"));
        assert_eq!(baseline(&db, &hosts, None).expect("ok").model, "mid");
    }

    #[test]
    fn bad_files_name_the_file_and_line() {
        let db = database();
        let err = parse_cpus("x.xml", "hello\n<cpu", &db).expect_err("not XML");
        assert!(
            err.to_string().starts_with("x.xml: malformed XML at line"),
            "{err}"
        );
        let err = parse_cpus("y.xml", "\n<domain/>", &db).expect_err("no cpu");
        assert!(
            err.to_string().starts_with("y.xml: line 2: no <cpu>"),
            "{err}"
        );
        let err = parse_cpus("z.xml", "<cpu>\n<model>nope</model></cpu>", &db).expect_err("model");
        assert!(
            err.to_string().contains("line 2: unknown CPU model 'nope'"),
            "{err}"
        );
    }

    #[test]
    fn compare_gives_virsh_verdicts() {
        let db = database();
        let file = Path::new("c.xml");
        let cpu = |text: &str| parse_cpus("c.xml", text, &db).expect("parses").remove(0);
        let same = compare(file, &cpu("<cpu><model>mid</model></cpu>"), &db, false).expect("ok");
        assert!(same.contains("is identical to"), "{same}");
        let less = compare(file, &cpu("<cpu><model>old</model></cpu>"), &db, false).expect("ok");
        assert!(
            less.contains("is a superset of CPU described in c.xml"),
            "{less}"
        );
        let more =
            compare(file, &cpu("<cpu><model>new</model></cpu>"), &db, false).expect_err("no");
        assert!(more.to_string().ends_with("features: avx"), "{more}");
        let err =
            compare(file, &cpu("<cpu><model>new</model></cpu>"), &db, true).expect_err("fails");
        assert!(err.to_string().contains("required features: avx"), "{err}");
    }
}

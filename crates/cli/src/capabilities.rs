//! The hypervisor's capabilities and CPU models: virsh's `capabilities`, `domcapabilities`,
//! `cpu-models`, `hypervisor-cpu-baseline` and `hypervisor-cpu-compare`. oxvirtd supplies the
//! facts (the host, what the engine accepts, the model database asked of QEMU: see
//! `oxvirt_api::capabilities`); they are printed here in libvirt's XML formats
//! (docs/capabilities.md), and the CPU descriptions the user gives are read here, each error
//! naming the file and line. How a baseline is chosen: docs/cpu-models.md.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use clap::Subcommand;
use oxvirt_api::{
    CapabilityGroup, Client, CpuModelInfo, CpuModels, DomainCapabilities, DomainCapabilitiesQuery,
    HostCapabilities,
};
use oxvirt_domain::cpu_compare::{
    self, baseline, closest_model, lacks_report, vendor_name, HostCpu, ModelDatabase, NamedModel,
    Verdict,
};

use crate::commands::block_on;

#[derive(Subcommand, Debug)]
pub enum CapabilitiesCommand {
    /// Print the host's and its hypervisor's capabilities (libvirt's capabilities XML).
    Capabilities {
        #[command(flatten)]
        select: XpathArgs,
    },
    /// Print what a domain of a type, emulator, architecture and machine may use, as the qemu
    /// engine accepts it (libvirt's domainCapabilities XML).
    Domcapabilities {
        /// The domain type: qemu (TCG) or kvm (hardware KVM only).
        #[arg(long)]
        virttype: Option<String>,
        /// The emulator binary (this host's QEMU is the only one the engine runs).
        #[arg(long)]
        emulatorbin: Option<String>,
        /// The architecture (x86_64).
        #[arg(long)]
        arch: Option<String>,
        /// The machine type (a name of `capabilities`; the emulator's default without it).
        #[arg(long)]
        machine: Option<String>,
        #[command(flatten)]
        select: XpathArgs,
    },
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

/// virsh's `--xpath` and `--wrap`: oxvirt refuses them (see [`XpathArgs::check`]).
#[derive(clap::Args, Debug)]
pub struct XpathArgs {
    /// Print only what an XPath expression selects (not supported: see docs/capabilities.md).
    #[arg(long)]
    xpath: Option<String>,
    /// With --xpath, wrap the selected nodes in one <nodes> element.
    #[arg(long)]
    wrap: bool,
}

impl XpathArgs {
    /// Refuses `--xpath` before anything is asked of oxvirtd: no well-kept Rust crate
    /// evaluates XPath (sxd-xpath has had no release since 2019), and half an XPath would
    /// answer some expressions wrongly rather than refuse them.
    fn check(&self) -> anyhow::Result<()> {
        if let Some(expression) = &self.xpath {
            bail!(
                "--xpath '{expression}' is not supported: oxvirt has no XPath engine; pipe the \
                 output through `xmllint --xpath EXPR -` (package libxml2-utils) instead"
            );
        }
        if self.wrap {
            bail!("--wrap only applies to --xpath, which oxvirt does not support");
        }
        Ok(())
    }
}

pub fn run(client: &Client, command: CapabilitiesCommand) -> anyhow::Result<String> {
    match command {
        CapabilitiesCommand::Capabilities { select } => {
            select.check()?;
            let host = block_on(client.host_capabilities())??;
            let models = block_on(client.cpu_models("x86_64", "qemu"))??;
            capabilities_xml(&host, &models)
        }
        CapabilitiesCommand::Domcapabilities {
            virttype,
            emulatorbin,
            arch,
            machine,
            select,
        } => {
            select.check()?;
            let query = DomainCapabilitiesQuery {
                virttype,
                emulatorbin,
                arch,
                machine,
            };
            let domain = block_on(client.domain_capabilities(&query))??;
            let models = block_on(client.cpu_models(&domain.arch, &domain.domain))??;
            domcapabilities_xml(&domain, &models)
        }
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
            let baseline = baseline(&model_database(&database), &hosts, model.as_deref())?;
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

/// virsh's verdict on `cpu` against what the hypervisor provides.
fn compare(file: &Path, cpu: &HostCpu, database: &CpuModels, fail: bool) -> anyhow::Result<String> {
    let host: BTreeSet<String> = database.host_features.iter().cloned().collect();
    let file = file.display();
    let missing = match cpu_compare::compare(&cpu.features, &host) {
        Verdict::Identical => {
            return Ok(format!(
            "CPU described in {file} is identical to the CPU provided by hypervisor on the host\n"
        ))
        }
        Verdict::Superset => {
            return Ok(format!(
            "The CPU provided by hypervisor on the host is a superset of CPU described in {file}\n"
        ))
        }
        Verdict::Incompatible(missing) => missing.join(", "),
    };
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

/// The model database of oxvirtd's answer, as the comparison takes it.
fn model_database(models: &CpuModels) -> ModelDatabase {
    ModelDatabase {
        arch: models.arch.clone(),
        models: models
            .models
            .iter()
            .map(|m| NamedModel {
                name: m.name.clone(),
                vendor: m.vendor.clone(),
                features: m.features.iter().cloned().collect(),
            })
            .collect(),
    }
}

/// Every CPU description in `file` (see `cpu_compare::parse_cpus`).
fn read_cpus(file: &Path, database: &CpuModels) -> anyhow::Result<Vec<HostCpu>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(cpu_compare::parse_cpus(
        &file.display().to_string(),
        &text,
        &model_database(database),
    )?)
}

/// A size in KiB in the largest unit that holds it whole, as libvirt prints cache sizes.
fn size_with_unit(kib: u64) -> (u64, &'static str) {
    let mut size = kib;
    for unit in ["KiB", "MiB", "GiB"] {
        if size % 1024 != 0 || size == 0 || unit == "GiB" {
            return (size, unit);
        }
        size /= 1024;
    }
    (size, "GiB")
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// libvirt's `<capabilities>`, from oxvirtd's facts; the host CPU's model is the newest named
/// model of its vendor whose features it has all of (the baseline of one host), and its
/// `<feature>`s are the ones beyond that model.
fn capabilities_xml(host: &HostCapabilities, models: &CpuModels) -> anyhow::Result<String> {
    use oxvirt_xml::{escape_attr as attr, escape_text as text};
    let cpu = &host.cpu;
    let vendor = vendor_name(&cpu.vendor_id).to_string();
    let host_cpu = HostCpu {
        origin: "this host".to_string(),
        model: None,
        vendor: (!vendor.is_empty()).then(|| vendor.clone()),
        features: cpu.features.iter().cloned().collect(),
    };
    let base = baseline(
        &model_database(models),
        std::slice::from_ref(&host_cpu),
        None,
    )?;
    let mut x = String::from("<capabilities>\n\n  <host>\n");
    x += &format!("    <uuid>{}</uuid>\n    <cpu>\n", text(&host.uuid));
    x += &format!("      <arch>{}</arch>\n", text(&cpu.arch));
    x += &format!("      <model>{}</model>\n", text(&base.model));
    x += &format!("      <vendor>{}</vendor>\n", text(&vendor));
    if let Some(microcode) = cpu.microcode {
        x += &format!("      <microcode version='{microcode}'/>\n");
    }
    if let (Some(family), Some(model), Some(stepping)) = (cpu.family, cpu.model, cpu.stepping) {
        x += &format!(
            "      <signature family='{family}' model='{model}' stepping='{stepping}'/>\n"
        );
    }
    if let Some(hz) = cpu.tsc_hz {
        x += &format!("      <counter name='tsc' frequency='{hz}' scaling='no'/>\n");
    }
    x += &format!(
        "      <topology sockets='{}' dies='{}' cores='{}' threads='{}'/>\n",
        cpu.sockets, cpu.dies, cpu.cores, cpu.threads
    );
    if let Some(bits) = cpu.phys_bits {
        x += &format!("      <maxphysaddr mode='emulate' bits='{bits}'/>\n");
    }
    for feature in cpu
        .features
        .iter()
        .filter(|f| !base.model_features.contains(*f))
    {
        x += &format!("      <feature name='{}'/>\n", attr(feature));
    }
    for size in &cpu.page_sizes_kib {
        x += &format!("      <pages unit='KiB' size='{size}'/>\n");
    }
    x += "    </cpu>\n    <power_management/>\n";
    x += &format!("    <iommu support='{}'/>\n", yes_no(host.iommu));
    x += &format!("    <topology>\n      <cells num='{}'>\n", host.cells.len());
    for cell in &host.cells {
        x += &format!("        <cell id='{}'>\n", cell.id);
        x += &format!(
            "          <memory unit='KiB'>{}</memory>\n",
            cell.memory_kib
        );
        for (size, count) in &cell.pages {
            x += &format!("          <pages unit='KiB' size='{size}'>{count}</pages>\n");
        }
        x += "          <distances>\n";
        for (id, value) in &cell.distances {
            x += &format!("            <sibling id='{id}' value='{value}'/>\n");
        }
        x += "          </distances>\n";
        x += &format!("          <cpus num='{}'>\n", cell.cpus.len());
        for c in &cell.cpus {
            x += &format!(
                "            <cpu id='{}' socket_id='{}' die_id='{}' core_id='{}' siblings='{}'/>\n",
                c.id,
                c.socket,
                c.die,
                c.core,
                attr(&c.siblings)
            );
        }
        x += "          </cpus>\n        </cell>\n";
    }
    x += "      </cells>\n    </topology>\n";
    if !host.caches.is_empty() {
        x += "    <cache>\n";
        for bank in &host.caches {
            let (size, unit) = size_with_unit(bank.size_kib);
            x += &format!(
                "      <bank id='{}' level='{}' type='{}' size='{size}' unit='{unit}' cpus='{}'/>\n",
                bank.id,
                bank.level,
                attr(&bank.kind),
                attr(&bank.cpus)
            );
        }
        x += "    </cache>\n";
    }
    for model in &host.secmodels {
        x += &format!(
            "    <secmodel>\n      <model>{}</model>\n      <doi>0</doi>\n    </secmodel>\n",
            text(model)
        );
    }
    x += "  </host>\n\n";
    for guest in &host.guests {
        x += &format!(
            "  <guest>\n    <os_type>{}</os_type>\n    <arch name='{}'>\n",
            text(&guest.os_type),
            attr(&guest.arch)
        );
        x += &format!("      <wordsize>{}</wordsize>\n", guest.wordsize);
        x += &format!("      <emulator>{}</emulator>\n", text(&guest.emulator));
        for machine in &guest.machines {
            let canonical = machine
                .canonical
                .as_deref()
                .map(|c| format!(" canonical='{}'", attr(c)))
                .unwrap_or_default();
            let deprecated = if machine.deprecated {
                " deprecated='yes'"
            } else {
                ""
            };
            x += &format!(
                "      <machine{canonical} maxCpus='{}'{deprecated}>{}</machine>\n",
                machine.max_cpus,
                text(&machine.name)
            );
        }
        for kind in &guest.domain_types {
            x += &format!("      <domain type='{}'/>\n", attr(kind));
        }
        x += "    </arch>\n    <features>\n";
        for feature in &guest.features {
            let mut attrs = String::new();
            if let Some(default) = &feature.default {
                attrs += &format!(" default='{}'", attr(default));
            }
            if let Some(toggle) = &feature.toggle {
                attrs += &format!(" toggle='{}'", attr(toggle));
            }
            x += &format!("      <{}{attrs}/>\n", feature.name);
        }
        x += "    </features>\n  </guest>\n\n";
    }
    x += "</capabilities>\n";
    Ok(x)
}

/// `<NAME supported='...'>` with its enums at `indent`, self-closed when there is nothing
/// inside (as libvirt writes an unsupported element). `inner` goes before the enums.
fn group_xml(group: &CapabilityGroup, indent: &str, inner: &str) -> String {
    use oxvirt_xml::{escape_attr as attr, escape_text as text};
    let open = format!(
        "{indent}<{} supported='{}'",
        group.name,
        yes_no(group.supported)
    );
    if !group.supported || (group.enums.is_empty() && inner.is_empty()) {
        return format!("{open}/>\n");
    }
    let mut x = format!("{open}>\n{inner}");
    for e in &group.enums {
        if e.values.is_empty() {
            x += &format!("{indent}  <enum name='{}'/>\n", attr(&e.name));
            continue;
        }
        x += &format!("{indent}  <enum name='{}'>\n", attr(&e.name));
        for value in &e.values {
            x += &format!("{indent}    <value>{}</value>\n", text(value));
        }
        x += &format!("{indent}  </enum>\n");
    }
    x + &format!("{indent}</{}>\n", group.name)
}

/// libvirt's `<domainCapabilities>`. The host-model CPU is the CPU this domain type provides
/// (TCG's `max` for qemu) as a named model plus features, the baseline of that one CPU.
fn domcapabilities_xml(domain: &DomainCapabilities, models: &CpuModels) -> anyhow::Result<String> {
    use oxvirt_xml::{escape_attr as attr, escape_text as text};
    let mut x = String::from("<domainCapabilities>\n");
    x += &format!("  <path>{}</path>\n", text(&domain.path));
    x += &format!("  <domain>{}</domain>\n", text(&domain.domain));
    x += &format!("  <machine>{}</machine>\n", text(&domain.machine));
    x += &format!("  <arch>{}</arch>\n", text(&domain.arch));
    x += &format!("  <vcpu max='{}'/>\n", domain.vcpu_max);
    x += &format!("  <iothreads supported='{}'/>\n", yes_no(domain.iothreads));
    let loader_values: String = domain
        .loader_values
        .iter()
        .map(|path| format!("      <value>{}</value>\n", text(path)))
        .collect();
    let loader = group_xml(&domain.loader, "    ", &loader_values);
    let mut os = group_xml(&domain.os, "  ", "");
    // <loader> closes <os>, after its enums.
    if let Some(at) = os.rfind("  </os>") {
        os.insert_str(at, &loader);
    }
    x += &os;
    x += "  <cpu>\n";
    x += &format!(
        "    <mode name='host-passthrough' supported='{}'/>\n",
        yes_no(domain.host_passthrough)
    );
    match &domain.maximum {
        Some(values) => {
            x += "    <mode name='maximum' supported='yes'>\n      <enum name='maximumMigratable'>\n";
            for value in values {
                x += &format!("        <value>{}</value>\n", text(value));
            }
            x += "      </enum>\n    </mode>\n";
        }
        None => x += "    <mode name='maximum' supported='no'/>\n",
    }
    if domain.host_model {
        let provided = HostCpu {
            origin: "the hypervisor".to_string(),
            model: None,
            vendor: Some(vendor_name(&models.host_vendor).to_string())
                .filter(|vendor| !vendor.is_empty()),
            features: models.host_features.iter().cloned().collect(),
        };
        // The model is one whose features the CPU all has, so no feature needs libvirt's
        // policy='disable'.
        let base = closest_model(&model_database(models), &provided)?;
        x += "    <mode name='host-model' supported='yes'>\n";
        x += &format!(
            "      <model fallback='forbid'>{}</model>\n",
            text(&base.model)
        );
        if let Some(vendor) = &base.vendor {
            x += &format!("      <vendor>{}</vendor>\n", text(vendor));
        }
        for feature in &base.extra {
            x += &format!(
                "      <feature policy='require' name='{}'/>\n",
                attr(feature)
            );
        }
        x += "    </mode>\n";
    } else {
        x += "    <mode name='host-model' supported='no'/>\n";
    }
    if domain.custom {
        x += "    <mode name='custom' supported='yes'>\n";
        for model in &models.models {
            let vendor = match vendor_name(&model.vendor) {
                "" => "unknown",
                name => name,
            };
            x += &format!(
                "      <model usable='{}' vendor='{}'>{}</model>\n",
                yes_no(model.usable),
                attr(vendor),
                text(&model.name)
            );
        }
        x += "    </mode>\n";
    } else {
        x += "    <mode name='custom' supported='no'/>\n";
    }
    x += "  </cpu>\n";
    x += &group_xml(&domain.memory_backing, "  ", "");
    x += "  <devices>\n";
    for device in &domain.devices {
        x += &group_xml(device, "    ", "");
    }
    x += "  </devices>\n  <features>\n";
    for feature in &domain.features {
        x += &group_xml(feature, "    ", "");
    }
    x += "  </features>\n</domainCapabilities>\n";
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_take_the_largest_whole_unit() {
        assert_eq!(size_with_unit(32768), (32, "MiB"));
        assert_eq!(size_with_unit(1536), (1536, "KiB"));
        assert_eq!(size_with_unit(2 * 1024 * 1024), (2, "GiB"));
        assert_eq!(size_with_unit(0), (0, "KiB"));
    }

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
            ],
            virttype: "qemu".into(),
            host_features: vec!["fpu".into(), "sse".into(), "sse2".into()],
            host_vendor: "GenuineIntel".into(),
        }
    }

    #[test]
    fn compare_gives_virsh_verdicts() {
        let db = database();
        let file = Path::new("c.xml");
        let cpu = |text: &str| {
            cpu_compare::parse_cpus("c.xml", text, &model_database(&db))
                .expect("parses")
                .remove(0)
        };
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

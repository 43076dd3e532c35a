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
use oxvirt_xml::roxmltree;

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
        vendor: (!vendor.is_empty()).then(|| vendor.clone()),
        features: cpu.features.iter().cloned().collect(),
    };
    let base = baseline(models, std::slice::from_ref(&host_cpu), None)?;
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
        let mut provided = HostCpu {
            origin: "the hypervisor".to_string(),
            vendor: Some(vendor_name(&models.host_vendor).to_string())
                .filter(|vendor| !vendor.is_empty()),
            features: models.host_features.iter().cloned().collect(),
        };
        // The closest model of the CPU's own vendor, or of any vendor when none of its own
        // fits. The model is one whose features the CPU all has, so no feature needs
        // libvirt's policy='disable'.
        let base = baseline(models, std::slice::from_ref(&provided), None).or_else(|_| {
            provided.vendor = None;
            baseline(models, std::slice::from_ref(&provided), None)
        })?;
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
                model("amd", "AuthenticAMD", &["fpu", "sse", "sse2", "svm"]),
            ],
            virttype: "qemu".into(),
            host_features: vec!["fpu".into(), "sse".into(), "sse2".into()],
            host_vendor: "GenuineIntel".into(),
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

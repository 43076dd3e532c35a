//! CPU descriptions measured against a database of named CPU models: what virsh's
//! `hypervisor-cpu-baseline` and `hypervisor-cpu-compare` compute (the CLI) and what a
//! migration's destination checks before anything moves (oxvirtd): the one owner of the
//! comparison. Pure code: the model database is QEMU's (asked by oxvirtd,
//! `oxvirt_qemu::cpu_models`), the descriptions are libvirt `<cpu>` XML. How a baseline is
//! chosen: docs/cpu-models.md; the migration check: docs/migration.md.

use std::collections::BTreeSet;

use oxvirt_xml::roxmltree;

use crate::{Cpu, CpuMode, FeaturePolicy, DEFAULT_CPU_MODEL};

/// A description, or a guest's CPU, that cannot be measured: the message names what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CpuError(pub String);

fn error(message: impl Into<String>) -> CpuError {
    CpuError(message.into())
}

/// One named model of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedModel {
    pub name: String,
    /// CPUID vendor string (`GenuineIntel`), empty when the model sets none.
    pub vendor: String,
    /// Its features under libvirt's names.
    pub features: BTreeSet<String>,
}

/// The named models of one architecture, in QEMU's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelDatabase {
    pub arch: String,
    pub models: Vec<NamedModel>,
}

impl ModelDatabase {
    pub fn find(&self, name: &str) -> Option<&NamedModel> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// One CPU as described (a host's, or what a hypervisor provides): its features (a model's
/// expanded), vendor and model, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCpu {
    /// `FILE:LINE` of its `<cpu>` (or `<mode name='host-model'>`), or what it is ("this host").
    pub origin: String,
    /// The named model it was described with, if any.
    pub model: Option<String>,
    /// libvirt's vendor name (`Intel`, `AMD`).
    pub vendor: Option<String>,
    pub features: BTreeSet<String>,
}

/// libvirt's vendor names for CPUID's vendor strings.
pub fn vendor_name(cpuid: &str) -> &str {
    match cpuid {
        "GenuineIntel" => "Intel",
        "AuthenticAMD" => "AMD",
        "HygonGenuine" => "Hygon",
        other => other,
    }
}

/// CPUID's vendor string for libvirt's vendor name (the reverse of [`vendor_name`]).
pub fn vendor_id(name: &str) -> &str {
    match name {
        "Intel" => "GenuineIntel",
        "AMD" => "AuthenticAMD",
        "Hygon" => "HygonGenuine",
        other => other,
    }
}

fn line_of(document: &roxmltree::Document, node: roxmltree::Node) -> u32 {
    document.text_pos_at(node.range().start).row
}

/// Every CPU description in `text` (from the file `name`): `<cpu>` elements (several, as virsh
/// accepts them, without a common root), or a whole `<capabilities>` (its host `<cpu>`) or
/// `<domainCapabilities>` (its `<mode name='host-model'>`). Errors name `name` and the line.
pub fn parse_cpus(
    name: &str,
    text: &str,
    database: &ModelDatabase,
) -> Result<Vec<HostCpu>, CpuError> {
    // A declaration may only open a document: blank it out (keeping lines and columns), then
    // wrap the text in a root on the same line so several top-level <cpu>s parse as one.
    let body = match text.trim_start().strip_prefix("<?xml") {
        Some(rest) => {
            let end = rest
                .find("?>")
                .ok_or_else(|| error(format!("{name}: line 1: unterminated XML declaration")))?;
            let declaration = text.len() - rest.len() + end + 2;
            format!("{}{}", " ".repeat(declaration), &text[declaration..])
        }
        None => text.to_string(),
    };
    let wrapped = format!("<oxvirt-cpus>{body}</oxvirt-cpus>");
    let document = oxvirt_xml::parse(&wrapped).map_err(|err| error(format!("{name}: {err}")))?;
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
        return Err(error(format!(
            "{name}: line {line}: no <cpu> with a <model> or <feature> (expected a libvirt CPU \
             description, <capabilities> or <domainCapabilities>)"
        )));
    }
    Ok(cpus)
}

fn host_cpu(
    file: &str,
    document: &roxmltree::Document,
    cpu: roxmltree::Node,
    origin: String,
    database: &ModelDatabase,
) -> Result<HostCpu, CpuError> {
    let mut features = BTreeSet::new();
    let mut vendor = None;
    let mut model_name = None;
    for child in cpu.children().filter(roxmltree::Node::is_element) {
        let line = line_of(document, child);
        match child.tag_name().name() {
            "model" => {
                let wanted = child.text().unwrap_or_default().trim();
                let model = database.find(wanted).ok_or_else(|| {
                    error(format!(
                        "{file}: line {line}: unknown CPU model '{wanted}' (see `oxvirt \
                         cpu-models {}`)",
                        database.arch
                    ))
                })?;
                features.extend(model.features.iter().cloned());
                model_name = Some(model.name.clone());
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
            .ok_or_else(|| error(format!("{file}: line {line}: <feature> without a name")))?;
        match feature.attribute("policy").unwrap_or("require") {
            "require" | "force" | "optional" => {
                features.insert(name.to_string());
            }
            "disable" | "forbid" => {
                features.remove(name);
            }
            other => {
                return Err(error(format!(
                    "{file}: line {line}: feature policy '{other}' is not one of force, \
                     require, optional, disable, forbid"
                )))
            }
        }
    }
    Ok(HostCpu {
        origin,
        model: model_name,
        vendor: vendor.filter(|v| !v.is_empty()),
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
/// features; then the common features it lacks. `forced` takes that model instead (an error
/// names a host that cannot run it).
pub fn baseline(
    database: &ModelDatabase,
    hosts: &[HostCpu],
    forced: Option<&str>,
) -> Result<Baseline, CpuError> {
    let common = common_features(hosts);
    let vendors: BTreeSet<Option<&str>> = hosts.iter().map(|h| h.vendor.as_deref()).collect();
    let vendor = match vendors.into_iter().collect::<Vec<_>>()[..] {
        [Some(only)] => Some(only.to_string()),
        _ => None,
    };
    let runs_everywhere = |model: &NamedModel| model.features.iter().all(|f| common.contains(f));
    let chosen = match forced {
        Some(name) => {
            let model = database
                .find(name)
                .ok_or_else(|| error(format!("unknown CPU model '{name}'")))?;
            for host in hosts {
                let missing = missing_features(&model.features, &host.features);
                if !missing.is_empty() {
                    return Err(error(format!(
                        "the CPU described at {} cannot run model '{name}': it lacks {}",
                        host.origin,
                        missing.join(", ")
                    )));
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
            .ok_or_else(|| error("no named CPU model runs on every described host"))?,
    };
    Ok(Baseline {
        model: chosen.name.clone(),
        vendor: vendor.or_else(|| Some(vendor_name(&chosen.vendor).to_string())),
        extra: common.difference(&chosen.features).cloned().collect(),
        model_features: chosen.features.clone(),
    })
}

/// The closest named model of one CPU: its own vendor's, or any vendor's when none of its
/// own fits (what `capabilities` and `domcapabilities` show as its model).
pub fn closest_model(database: &ModelDatabase, cpu: &HostCpu) -> Result<Baseline, CpuError> {
    baseline(database, std::slice::from_ref(cpu), None).or_else(|_| {
        let any_vendor = HostCpu {
            vendor: None,
            ..cpu.clone()
        };
        baseline(database, std::slice::from_ref(&any_vendor), None)
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
        let others: BTreeSet<String> = hosts
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .flat_map(|(_, h)| h.features.iter().cloned())
            .collect();
        let lacks = missing_features(&others, &host.features);
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

/// The features of `wanted` that `provided` lacks, in name order.
pub fn missing_features(wanted: &BTreeSet<String>, provided: &BTreeSet<String>) -> Vec<String> {
    wanted.difference(provided).cloned().collect()
}

/// virsh's verdict on a CPU against the CPU a host provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Identical,
    /// The host has every feature and more.
    Superset,
    /// The host lacks these features.
    Incompatible(Vec<String>),
}

/// `hypervisor-cpu-compare`: `cpu`'s features against `provided`'s.
pub fn compare(cpu: &BTreeSet<String>, provided: &BTreeSet<String>) -> Verdict {
    let missing = missing_features(cpu, provided);
    if !missing.is_empty() {
        Verdict::Incompatible(missing)
    } else if cpu.len() == provided.len() {
        Verdict::Identical
    } else {
        Verdict::Superset
    }
}

/// Whether a guest whose CPU is `guest` (its live definition's `<cpu>`; `None`: QEMU's default
/// model) may move from a host providing `source` to one providing `destination`, before
/// anything moves. `host-passthrough` and `maximum` guests see the source's CPU itself: they
/// go only to an identical CPU (model, vendor, features). A `host-model` guest got the
/// source's features; a custom model needs its model's features and its `<feature>`s'
/// policies (require and force add, disable and forbid take away, optional asks nothing).
/// The error names what the destination lacks.
pub fn check_migration(
    guest: Option<&Cpu>,
    source: Option<&HostCpu>,
    destination: &HostCpu,
    database: &ModelDatabase,
) -> Result<(), CpuError> {
    let mode = guest.map_or(CpuMode::Custom, |cpu| cpu.mode);
    let needed = match mode {
        CpuMode::HostPassthrough | CpuMode::Maximum => {
            let label = if mode == CpuMode::Maximum {
                "maximum"
            } else {
                "host-passthrough"
            };
            let source = source.ok_or_else(|| {
                error(format!(
                    "the guest's CPU is mode '{label}' and the source did not describe its CPU"
                ))
            })?;
            return identical(label, source, destination);
        }
        CpuMode::HostModel => source
            .ok_or_else(|| {
                error(
                    "the guest's CPU is mode 'host-model' and the source did not describe its CPU",
                )
            })?
            .features
            .clone(),
        CpuMode::Custom => custom_features(guest, database)?,
    };
    let missing = missing_features(&needed, &destination.features);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(error(format!(
            "the destination's CPU lacks: {}",
            missing.join(", ")
        )))
    }
}

/// The features a custom `<cpu>` asks of the host.
fn custom_features(
    guest: Option<&Cpu>,
    database: &ModelDatabase,
) -> Result<BTreeSet<String>, CpuError> {
    let model = guest
        .and_then(|cpu| cpu.model.as_ref())
        .map_or(DEFAULT_CPU_MODEL, |model| model.name.as_str());
    let mut features = database
        .find(model)
        .ok_or_else(|| {
            error(format!(
                "the guest's CPU model '{model}' is not a model of this host's QEMU (see `oxvirt \
                 cpu-models {}`)",
                database.arch
            ))
        })?
        .features
        .clone();
    for feature in guest.map(|cpu| cpu.features.as_slice()).unwrap_or_default() {
        match feature.policy {
            FeaturePolicy::Require | FeaturePolicy::Force => {
                features.insert(feature.name.clone());
            }
            FeaturePolicy::Disable | FeaturePolicy::Forbid => {
                features.remove(&feature.name);
            }
            FeaturePolicy::Optional => {
                features.remove(&feature.name);
            }
        }
    }
    Ok(features)
}

fn identical(label: &str, source: &HostCpu, destination: &HostCpu) -> Result<(), CpuError> {
    let mut differences = Vec::new();
    if source.model != destination.model {
        differences.push(format!(
            "its model is {} (the source's {})",
            destination.model.as_deref().unwrap_or("unnamed"),
            source.model.as_deref().unwrap_or("unnamed")
        ));
    }
    if source.vendor != destination.vendor {
        differences.push(format!(
            "its vendor is {} (the source's {})",
            destination.vendor.as_deref().unwrap_or("unknown"),
            source.vendor.as_deref().unwrap_or("unknown")
        ));
    }
    let missing = missing_features(&source.features, &destination.features);
    if !missing.is_empty() {
        differences.push(format!(
            "the destination's CPU lacks: {}",
            missing.join(", ")
        ));
    }
    let extra = missing_features(&destination.features, &source.features);
    if !extra.is_empty() {
        differences.push(format!("it has in addition: {}", extra.join(", ")));
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(error(format!(
        "the guest's CPU is mode '{label}', which moves only to a CPU identical to the \
         source's; the destination's differs: {}",
        differences.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, vendor: &str, features: &[&str]) -> NamedModel {
        NamedModel {
            name: name.into(),
            vendor: vendor.into(),
            features: features.iter().map(|f| f.to_string()).collect(),
        }
    }

    fn database() -> ModelDatabase {
        ModelDatabase {
            arch: "x86_64".into(),
            models: vec![
                model("qemu64", "AuthenticAMD", &["fpu"]),
                model("old", "GenuineIntel", &["fpu", "sse"]),
                model("mid", "GenuineIntel", &["fpu", "sse", "sse2"]),
                model("new", "GenuineIntel", &["fpu", "sse", "sse2", "avx"]),
                model("amd", "AuthenticAMD", &["fpu", "sse", "sse2", "svm"]),
            ],
        }
    }

    fn one(text: &str) -> HostCpu {
        parse_cpus("h.xml", text, &database())
            .expect("parses")
            .remove(0)
    }

    fn guest_cpu(xml: &str) -> Option<Cpu> {
        let domain = format!(
            "<domain type='qemu'><name>g</name><memory>65536</memory><os><type>hvm</type></os>{xml}</domain>"
        );
        crate::parse_domain_xml(&domain).expect("a domain").cpu
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
        assert_eq!(hosts[0].model.as_deref(), Some("new"));
        assert_eq!(baseline(&db, &hosts, None).expect("ok").model, "mid");
    }

    #[test]
    fn bad_descriptions_name_the_file_and_line() {
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
        let host = one("<cpu><model>mid</model></cpu>").features;
        assert_eq!(
            compare(&one("<cpu><model>mid</model></cpu>").features, &host),
            Verdict::Identical
        );
        assert_eq!(
            compare(&one("<cpu><model>old</model></cpu>").features, &host),
            Verdict::Superset
        );
        assert_eq!(
            compare(&one("<cpu><model>new</model></cpu>").features, &host),
            Verdict::Incompatible(vec!["avx".into()])
        );
    }

    #[test]
    fn passthrough_moves_only_to_an_identical_cpu() {
        let db = database();
        let guest = guest_cpu("<cpu mode='host-passthrough'/>");
        let newer = one("<cpu><model>new</model><feature name='aes'/></cpu>");
        let older = one("<cpu><model>mid</model></cpu>");
        check_migration(guest.as_ref(), Some(&newer), &newer, &db).expect("identical");
        let err = check_migration(guest.as_ref(), Some(&newer), &older, &db)
            .expect_err("different")
            .to_string();
        assert!(err.contains("mode 'host-passthrough'"), "{err}");
        assert!(err.contains("its model is mid (the source's new)"), "{err}");
        assert!(
            err.contains("the destination's CPU lacks: aes, avx"),
            "{err}"
        );
        // More is different too: the guest would see its CPU change under it.
        let err = check_migration(guest.as_ref(), Some(&older), &newer, &db)
            .expect_err("different")
            .to_string();
        assert!(err.contains("has in addition: aes, avx"), "{err}");
        let err = check_migration(guest.as_ref(), None, &newer, &db).expect_err("no source");
        assert!(
            err.to_string().contains("did not describe its CPU"),
            "{err}"
        );
        let maximum = guest_cpu("<cpu mode='maximum'/>");
        assert!(check_migration(maximum.as_ref(), Some(&newer), &older, &db)
            .expect_err("different")
            .to_string()
            .contains("mode 'maximum'"));
    }

    #[test]
    fn host_model_needs_the_source_features() {
        let db = database();
        let guest = guest_cpu("<cpu mode='host-model'/>");
        let mid = one("<cpu><model>mid</model></cpu>");
        let new = one("<cpu><model>new</model></cpu>");
        check_migration(guest.as_ref(), Some(&mid), &new, &db).expect("a superset will do");
        let err = check_migration(guest.as_ref(), Some(&new), &mid, &db).expect_err("lacks avx");
        assert_eq!(err.to_string(), "the destination's CPU lacks: avx");
    }

    #[test]
    fn custom_models_need_their_features_and_policies() {
        let db = database();
        let mid = one("<cpu><model>mid</model></cpu>");
        let check = |xml: &str| check_migration(guest_cpu(xml).as_ref(), None, &mid, &db);
        check("<cpu mode='custom'><model>old</model></cpu>").expect("old runs on mid");
        check("").expect("no <cpu>: QEMU's default model");
        let err = check(
            "<cpu mode='custom'><model>new</model><feature policy='require' name='aes'/></cpu>",
        )
        .expect_err("lacks");
        assert_eq!(err.to_string(), "the destination's CPU lacks: aes, avx");
        check(
            "<cpu mode='custom'><model>new</model><feature policy='disable' name='avx'/>\
             <feature policy='optional' name='aes'/></cpu>",
        )
        .expect("avx disabled, aes optional");
        let err = check("<cpu mode='custom'><model>Unheard</model></cpu>").expect_err("unknown");
        assert!(err.to_string().contains("'Unheard'"), "{err}");
    }
}

//! Domain snapshots: virsh's `snapshot-*` verbs, their options and their output (libvirt 9.0's
//! texts and layouts: the tables, `--tree`, `snapshot-info`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use oxvirt_api::{Client, CreateSnapshot, DeleteSnapshot, RevertSnapshot, SnapshotSummary};

use crate::commands::block_on;
use crate::format::{table, Output};

// The variants are virsh's verbs, which all begin with "snapshot-".
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Create a snapshot from a <domainsnapshot> XML file (every default without one).
    SnapshotCreate {
        /// Domain name or UUID.
        domain: String,
        /// The <domainsnapshot> document.
        #[arg(long = "xmlfile", value_name = "FILE")]
        xmlfile_option: Option<PathBuf>,
        /// The <domainsnapshot> document (as --xmlfile).
        #[arg(conflicts_with = "xmlfile_option", value_name = "FILE")]
        xmlfile: Option<PathBuf>,
        #[command(flatten)]
        flags: CreateFlags,
    },
    /// Create a snapshot from options (internal with the guest's memory when it runs, --disk-only for external overlays).
    SnapshotCreateAs {
        /// Domain name or UUID.
        domain: String,
        /// The snapshot's name (default: the creation time in seconds).
        #[arg(long = "name", value_name = "NAME")]
        name_option: Option<String>,
        /// The snapshot's name (as --name).
        #[arg(conflicts_with = "name_option", value_name = "NAME")]
        name: Option<String>,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        /// Print the <domainsnapshot> document instead of creating the snapshot.
        #[arg(long)]
        print_xml: bool,
        /// Memory: snapshot=no|internal|external[,file=PATH] (external memory is not supported yet).
        #[arg(long)]
        memspec: Option<String>,
        /// One disk: NAME[,snapshot=no|internal|external][,driver=qcow2][,file=PATH]; repeatable.
        #[arg(long)]
        diskspec: Vec<String>,
        #[command(flatten)]
        flags: CreateFlags,
    },
    /// List a domain's snapshots.
    SnapshotList {
        /// Domain name or UUID.
        domain: String,
        /// Add a column with each snapshot's parent.
        #[arg(long, conflicts_with_all = ["tree", "roots"])]
        parent: bool,
        /// Only snapshots without a parent.
        #[arg(long, conflicts_with_all = ["tree", "from", "current"])]
        roots: bool,
        /// Only snapshots without children.
        #[arg(long, conflicts_with = "tree")]
        leaves: bool,
        /// Only snapshots with children.
        #[arg(long, conflicts_with = "tree")]
        no_leaves: bool,
        /// Draw the snapshots as a tree of names.
        #[arg(long, conflicts_with = "name")]
        tree: bool,
        /// Names only.
        #[arg(long)]
        name: bool,
        /// Only the children of this snapshot (with --descendants: every descendant).
        #[arg(long)]
        from: Option<String>,
        /// Start from the current snapshot (as --from CURRENT).
        #[arg(long, conflicts_with = "from")]
        current: bool,
        /// With --from or --current: every descendant, not only children.
        #[arg(long)]
        descendants: bool,
        /// Only internal snapshots.
        #[arg(long)]
        internal: bool,
        /// Only external snapshots.
        #[arg(long, conflicts_with = "internal")]
        external: bool,
    },
    /// Print a snapshot's facts (name, state, location, parent, children).
    SnapshotInfo {
        /// Domain name or UUID.
        domain: String,
        #[command(flatten)]
        which: WhichSnapshot,
    },
    /// Print a snapshot's <domainsnapshot> XML.
    SnapshotDumpxml {
        /// Domain name or UUID.
        domain: String,
        /// The snapshot's name.
        snapshotname: String,
    },
    /// Print the current snapshot's XML, or with --name its name.
    SnapshotCurrent {
        /// Domain name or UUID.
        domain: String,
        /// The name only.
        #[arg(long)]
        name: bool,
    },
    /// Print the name of a snapshot's parent.
    SnapshotParent {
        /// Domain name or UUID.
        domain: String,
        #[command(flatten)]
        which: WhichSnapshot,
    },
    /// Bring a domain back to a snapshot (its disks, and its memory if the snapshot has it).
    SnapshotRevert {
        /// Domain name or UUID.
        domain: String,
        #[command(flatten)]
        which: WhichSnapshot,
        /// Run the guest afterwards, whatever the snapshot's state.
        #[arg(long)]
        running: bool,
        /// Leave the guest paused afterwards.
        #[arg(long, conflicts_with = "running")]
        paused: bool,
        /// Accepted for virsh's sake (oxvirt's reverts need no forcing).
        #[arg(long)]
        force: bool,
    },
    /// Delete a snapshot (its data in the images and its metadata).
    SnapshotDelete {
        /// Domain name or UUID.
        domain: String,
        #[command(flatten)]
        which: WhichSnapshot,
        /// Also every descendant.
        #[arg(long)]
        children: bool,
        /// Only its descendants.
        #[arg(long, conflicts_with = "children")]
        children_only: bool,
        /// Only oxvirt's record; the data stays in the images.
        #[arg(long)]
        metadata: bool,
    },
    /// Edit a snapshot's XML with $EDITOR (its description can change).
    SnapshotEdit {
        /// Domain name or UUID.
        domain: String,
        #[command(flatten)]
        which: WhichSnapshot,
    },
}

/// virsh's creation flags.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct CreateFlags {
    /// Disks only, each in a new qcow2 overlay (an external snapshot).
    #[arg(long)]
    disk_only: bool,
    /// All disks or none (oxvirt's snapshots always are).
    #[arg(long)]
    atomic: bool,
}

/// A snapshot by name, or the current one.
#[derive(clap::Args, Debug, Clone)]
pub struct WhichSnapshot {
    /// The snapshot's name.
    #[arg(required_unless_present = "current")]
    snapshotname: Option<String>,
    /// The domain's current snapshot.
    #[arg(long, conflicts_with = "snapshotname")]
    current: bool,
}

// Most verbs print virsh's blank line after their output; `snapshot-create-as`,
// `snapshot-current --name` and `snapshot-parent` do not.
fn with_blank(text: String) -> Output {
    Output {
        text,
        blank_line: true,
    }
}

fn bare(text: String) -> Output {
    Output {
        text,
        blank_line: false,
    }
}

pub fn run(client: &Client, command: SnapshotCommand) -> anyhow::Result<Output> {
    block_on(run_async(client, command))?
}

async fn resolve(client: &Client, domain: &str, which: &WhichSnapshot) -> anyhow::Result<String> {
    match &which.snapshotname {
        Some(name) if !which.current => Ok(name.clone()),
        _ => current_name(client, domain).await,
    }
}

async fn current_name(client: &Client, domain: &str) -> anyhow::Result<String> {
    let snapshots = client.list_snapshots(domain).await?;
    match snapshots.into_iter().find(|s| s.current) {
        Some(current) => Ok(current.name),
        None => bail!("domain '{domain}' has no current snapshot"),
    }
}

async fn run_async(client: &Client, command: SnapshotCommand) -> anyhow::Result<Output> {
    Ok(match command {
        SnapshotCommand::SnapshotCreate {
            domain,
            xmlfile_option,
            xmlfile,
            flags,
        } => {
            let file = xmlfile_option.or(xmlfile);
            let xml = match &file {
                Some(file) => std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
                None => String::new(),
            };
            let request = CreateSnapshot {
                xml,
                disk_only: flags.disk_only,
                atomic: flags.atomic,
            };
            let created = client.create_snapshot(&domain, &request).await?;
            match file {
                Some(file) => bare(format!(
                    "Domain snapshot {} created from '{}'\n",
                    created.name,
                    file.display()
                )),
                None => bare(format!("Domain snapshot {} created\n", created.name)),
            }
        }
        SnapshotCommand::SnapshotCreateAs {
            domain,
            name_option,
            name,
            description,
            print_xml,
            memspec,
            diskspec,
            flags,
        } => {
            let xml = create_as_xml(
                name_option.or(name).as_deref(),
                description.as_deref(),
                memspec.as_deref(),
                &diskspec,
            )?;
            if print_xml {
                return Ok(with_blank(format!("{xml}\n")));
            }
            let request = CreateSnapshot {
                xml,
                disk_only: flags.disk_only,
                atomic: flags.atomic,
            };
            let created = client.create_snapshot(&domain, &request).await?;
            bare(format!("Domain snapshot {} created\n", created.name))
        }
        SnapshotCommand::SnapshotList {
            domain,
            parent,
            roots,
            leaves,
            no_leaves,
            tree,
            name,
            from,
            current,
            descendants,
            internal,
            external,
        } => {
            let all = client.list_snapshots(&domain).await?;
            let from = match (from, current) {
                (Some(from), _) => Some(from),
                (None, true) => Some(current_name(client, &domain).await?),
                (None, false) => None,
            };
            if let Some(from) = &from {
                if !all.iter().any(|s| &s.name == from) {
                    bail!(
                        "Domain snapshot not found: no domain snapshot with matching name '{from}'"
                    );
                }
            }
            let selected = select(
                &all,
                &Filter {
                    roots,
                    leaves,
                    no_leaves,
                    from: from.as_deref(),
                    descendants: descendants || tree,
                    internal,
                    external,
                },
            );
            if tree {
                with_blank(render_tree(&selected, from.as_deref()))
            } else if name {
                with_blank(selected.iter().map(|s| format!("{}\n", s.name)).collect())
            } else {
                with_blank(render_table(&selected, parent))
            }
        }
        SnapshotCommand::SnapshotInfo { domain, which } => {
            let name = resolve(client, &domain, &which).await?;
            let all = client.list_snapshots(&domain).await?;
            let snapshot = find(&all, &name)?;
            let info = client.domain_info(&domain).await?;
            with_blank(render_info(&info.name, snapshot, &all))
        }
        SnapshotCommand::SnapshotDumpxml {
            domain,
            snapshotname,
        } => with_blank(client.snapshot_xml(&domain, &snapshotname).await?),
        SnapshotCommand::SnapshotCurrent { domain, name } => {
            let current = current_name(client, &domain).await?;
            if name {
                bare(format!("{current}\n"))
            } else {
                with_blank(client.snapshot_xml(&domain, &current).await?)
            }
        }
        SnapshotCommand::SnapshotParent { domain, which } => {
            let name = resolve(client, &domain, &which).await?;
            let all = client.list_snapshots(&domain).await?;
            match &find(&all, &name)?.parent {
                Some(parent) => bare(format!("{parent}\n")),
                None => bail!("snapshot '{name}' has no parent"),
            }
        }
        SnapshotCommand::SnapshotRevert {
            domain,
            which,
            running,
            paused,
            force: _,
        } => {
            let name = resolve(client, &domain, &which).await?;
            client
                .revert_snapshot(&domain, &name, &RevertSnapshot { running, paused })
                .await?;
            with_blank(format!("Domain snapshot {name} reverted\n"))
        }
        SnapshotCommand::SnapshotDelete {
            domain,
            which,
            children,
            children_only,
            metadata,
        } => {
            let name = resolve(client, &domain, &which).await?;
            let request = DeleteSnapshot {
                children,
                children_only,
                metadata_only: metadata,
            };
            client.delete_snapshot(&domain, &name, &request).await?;
            if children_only {
                with_blank(format!("Domain snapshot {name} children deleted\n"))
            } else {
                with_blank(format!("Domain snapshot {name} deleted\n"))
            }
        }
        SnapshotCommand::SnapshotEdit { domain, which } => {
            let name = resolve(client, &domain, &which).await?;
            // The editor session blocks (and makes its own calls): off this runtime.
            let client = client.clone();
            let message = tokio::task::spawn_blocking(move || {
                crate::edit::run_snapshot(&client, &domain, &name)
            })
            .await
            .context("the editor session failed")??;
            with_blank(message)
        }
    })
}

fn find<'a>(all: &'a [SnapshotSummary], name: &str) -> anyhow::Result<&'a SnapshotSummary> {
    all.iter().find(|s| s.name == name).ok_or_else(|| {
        anyhow::anyhow!("Domain snapshot not found: no domain snapshot with matching name '{name}'")
    })
}

/// The `<domainsnapshot>` document `snapshot-create-as` sends, from its options (the same
/// document virsh builds; `--print-xml` prints it).
fn create_as_xml(
    name: Option<&str>,
    description: Option<&str>,
    memspec: Option<&str>,
    diskspecs: &[String],
) -> anyhow::Result<String> {
    use oxvirt_xml::{escape_attr, escape_text};
    let mut xml = String::from("<domainsnapshot>\n");
    if let Some(name) = name {
        xml.push_str(&format!("  <name>{}</name>\n", escape_text(name)));
    }
    if let Some(description) = description {
        xml.push_str(&format!(
            "  <description>{}</description>\n",
            escape_text(description)
        ));
    }
    if let Some(memspec) = memspec {
        let fields = spec_fields(memspec, "--memspec", None)?;
        let mut line = String::from("  <memory");
        for (key, value) in &fields {
            match key.as_str() {
                "snapshot" | "file" => line.push_str(&format!(" {key}='{}'", escape_attr(value))),
                other => bail!("--memspec: unknown field '{other}' (snapshot, file)"),
            }
        }
        line.push_str("/>\n");
        xml.push_str(&line);
    }
    if !diskspecs.is_empty() {
        xml.push_str("  <disks>\n");
        for spec in diskspecs {
            let fields = spec_fields(spec, "--diskspec", Some("name"))?;
            let mut disk = String::from("    <disk");
            let mut inner = String::new();
            for (key, value) in &fields {
                match key.as_str() {
                    "name" | "snapshot" => {
                        disk.push_str(&format!(" {key}='{}'", escape_attr(value)))
                    }
                    "driver" => {
                        inner.push_str(&format!("      <driver type='{}'/>\n", escape_attr(value)))
                    }
                    "file" => {
                        inner.push_str(&format!("      <source file='{}'/>\n", escape_attr(value)))
                    }
                    other => bail!(
                        "--diskspec '{spec}': unknown field '{other}' (snapshot, driver, file)"
                    ),
                }
            }
            if inner.is_empty() {
                xml.push_str(&format!("{disk}/>\n"));
            } else {
                xml.push_str(&format!("{disk}>\n{inner}    </disk>\n"));
            }
        }
        xml.push_str("  </disks>\n");
    }
    xml.push_str("</domainsnapshot>");
    Ok(xml)
}

/// `a=b,c=d` (commas doubled to escape them, as virsh takes them); a bare first field is
/// `first_key`'s value.
fn spec_fields(
    spec: &str,
    option: &str,
    first_key: Option<&str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut chars = spec.chars().peekable();
    let mut parts = Vec::new();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                parts.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    for (index, part) in parts.into_iter().enumerate() {
        match part.split_once('=') {
            Some((key, value)) => fields.push((key.to_string(), value.to_string())),
            None => match (index, first_key) {
                (0, Some(key)) if !part.is_empty() => fields.push((key.to_string(), part)),
                _ => bail!("{option} '{spec}': field '{part}' is not KEY=VALUE"),
            },
        }
    }
    Ok(fields)
}

struct Filter<'a> {
    roots: bool,
    leaves: bool,
    no_leaves: bool,
    from: Option<&'a str>,
    descendants: bool,
    internal: bool,
    external: bool,
}

/// The snapshots `snapshot-list`'s filters keep, by name.
fn select<'a>(all: &'a [SnapshotSummary], filter: &Filter) -> Vec<&'a SnapshotSummary> {
    let has_children = |s: &SnapshotSummary| {
        all.iter()
            .any(|c| c.parent.as_deref() == Some(s.name.as_str()))
    };
    let under = |s: &SnapshotSummary, from: &str| {
        if !filter.descendants {
            return s.parent.as_deref() == Some(from);
        }
        let mut parent = s.parent.as_deref();
        while let Some(p) = parent {
            if p == from {
                return true;
            }
            parent = all
                .iter()
                .find(|x| x.name == p)
                .and_then(|x| x.parent.as_deref());
        }
        false
    };
    all.iter()
        .filter(|s| !filter.roots || s.parent.is_none())
        .filter(|s| !filter.leaves || !has_children(s))
        .filter(|s| !filter.no_leaves || has_children(s))
        .filter(|s| filter.from.is_none_or(|from| under(s, from)))
        .filter(|s| !filter.internal || s.location == "internal")
        .filter(|s| !filter.external || s.location == "external")
        .collect()
}

fn render_table(snapshots: &[&SnapshotSummary], with_parent: bool) -> String {
    let mut header = vec!["Name", "Creation Time", "State"];
    if with_parent {
        header.push("Parent");
    }
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|s| {
            let mut row = vec![
                s.name.clone(),
                crate::format::local_time(u64::try_from(s.creation_time).unwrap_or(0), true),
                s.state.clone(),
            ];
            if with_parent {
                row.push(s.parent.clone().unwrap_or_default());
            }
            row
        })
        .collect();
    table(&header, &rows)
}

/// virsh's `--tree` drawing (vshTreePrint): each root, then its children by name, indented,
/// with `|` continuing a branch that has more children below.
fn render_tree(snapshots: &[&SnapshotSummary], from: Option<&str>) -> String {
    let names: Vec<&str> = snapshots.iter().map(|s| s.name.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut roots = Vec::new();
    for (index, snapshot) in snapshots.iter().enumerate() {
        match snapshot.parent.as_deref() {
            Some(parent) if names.contains(&parent) => {
                children.entry(parent).or_default().push(index)
            }
            // With --from, the starting snapshot's children are the roots.
            Some(parent) if Some(parent) == from => roots.push(index),
            None => roots.push(index),
            Some(_) => roots.push(index),
        }
    }
    let mut out = String::new();
    let mut indent = String::new();
    for &root in &roots {
        tree_node(&mut out, &mut indent, &names, &children, root, root, true);
    }
    out
}

fn tree_node(
    out: &mut String,
    indent: &mut String,
    names: &[&str],
    children: &BTreeMap<&str, Vec<usize>>,
    index: usize,
    last_sibling: usize,
    root: bool,
) {
    let name = names[index];
    out.push_str(&format!(
        "{indent}{}{name}\n",
        if root { "" } else { "+- " }
    ));
    if !root {
        indent.push(if index == last_sibling { ' ' } else { '|' });
        indent.push(' ');
    }
    let mine = children.get(name).cloned().unwrap_or_default();
    let last_child = mine.last().copied();
    if last_child.is_some() {
        out.push_str(&format!("{indent}  |\n"));
    }
    indent.push_str("  ");
    for &child in &mine {
        tree_node(
            out,
            indent,
            names,
            children,
            child,
            last_child.unwrap_or(child),
            false,
        );
    }
    indent.truncate(indent.len() - 2);
    if last_child.is_none() && index == last_sibling {
        out.push_str(&format!("{indent}\n"));
    }
    if !root {
        indent.truncate(indent.len() - 2);
    }
}

fn render_info(domain: &str, snapshot: &SnapshotSummary, all: &[SnapshotSummary]) -> String {
    let children = all
        .iter()
        .filter(|s| s.parent.as_deref() == Some(snapshot.name.as_str()))
        .count();
    let descendants = select(
        all,
        &Filter {
            roots: false,
            leaves: false,
            no_leaves: false,
            from: Some(&snapshot.name),
            descendants: true,
            internal: false,
            external: false,
        },
    )
    .len();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let fields = [
        ("Name:", snapshot.name.clone()),
        ("Domain:", domain.to_string()),
        ("Current:", yes_no(snapshot.current).to_string()),
        ("State:", snapshot.state.clone()),
        ("Location:", snapshot.location.clone()),
        (
            "Parent:",
            snapshot.parent.clone().unwrap_or_else(|| "-".to_string()),
        ),
        ("Children:", children.to_string()),
        ("Descendants:", descendants.to_string()),
        ("Metadata:", "yes".to_string()),
    ];
    fields
        .iter()
        .map(|(key, value)| format!("{key:<16}{value}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(name: &str, parent: Option<&str>) -> SnapshotSummary {
        SnapshotSummary {
            name: name.into(),
            parent: parent.map(str::to_string),
            creation_time: 0,
            state: "shutoff".into(),
            location: "internal".into(),
            current: false,
        }
    }

    #[test]
    fn draws_the_tree_as_virsh_draws_it() {
        // virsh 9.0's output for s1 -> s2 -> s3 and s1 -> b1 (names sorted).
        let all = [
            snapshot("b1", Some("s1")),
            snapshot("s1", None),
            snapshot("s2", Some("s1")),
            snapshot("s3", Some("s2")),
        ];
        let refs: Vec<&SnapshotSummary> = all.iter().collect();
        assert_eq!(
            render_tree(&refs, None),
            "s1\n  |\n  +- b1\n  +- s2\n      |\n      +- s3\n        \n"
        );
        let one = [snapshot("b1", None)];
        let refs: Vec<&SnapshotSummary> = one.iter().collect();
        assert_eq!(render_tree(&refs, None), "b1\n\n");
    }

    #[test]
    fn builds_the_document_virsh_builds() {
        let xml = create_as_xml(
            Some("p1"),
            Some("dd"),
            None,
            &["vda,snapshot=external,file=/tmp/x.ovl".to_string()],
        )
        .unwrap();
        assert_eq!(
            xml,
            "<domainsnapshot>\n  <name>p1</name>\n  <description>dd</description>\n  <disks>\n    \
             <disk name='vda' snapshot='external'>\n      <source file='/tmp/x.ovl'/>\n    </disk>\n  \
             </disks>\n</domainsnapshot>"
        );
        assert!(create_as_xml(None, None, None, &["vda,bogus=1".to_string()]).is_err());
    }

    #[test]
    fn info_counts_children_and_descendants() {
        let all = [
            snapshot("b1", Some("s1")),
            snapshot("s1", None),
            snapshot("s2", Some("s1")),
            snapshot("s3", Some("s2")),
        ];
        let info = render_info("t1", &all[1], &all);
        assert!(info.contains("Parent:         -\n"), "{info}");
        assert!(info.contains("Children:       2\n"), "{info}");
        assert!(info.contains("Descendants:    3\n"), "{info}");
    }
}

//! `oxvirt install --print-xml` against what virt-install 4.1 printed for the same command lines:
//! the `virt-install-*` cases of crates/domain/tests/data/cases (made by
//! scripts/virt-install-cases.sh), compared as XML trees on every element and attribute.
//!
//! The command lines are the script's `specs`, with the case's fixed UUID and MAC passed
//! (`--uuid`, `mac=`), and the same files made under a temporary directory that is cut out of the
//! output, as the script cuts its own out. The kernel, initrd and seed ISO that oxvirt keeps under
//! its boot directory (`oxvirt-NAME-vmlinuz`, ...) are compared with the names the script stores
//! for virt-install's copies (`/var/lib/libvirt/boot/virtinst-vmlinuz`, ...). No daemon is needed:
//! `--print-xml` of file paths asks none.

use std::path::Path;
use std::process::Command;

use oxvirt_xml::roxmltree::Node;

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../domain/tests/data/cases");

/// (case, documents kept: install phase too?, arguments with IMG/ISO/TREE placeholders)
const SPECS: &[(&str, bool, &str)] = &[
    ("virt-install-cdrom", true, "--name vm1 --memory 2048 --vcpus 2 --disk path=IMG/vm1.qcow2,size=20,format=qcow2 --cdrom ISO --os-variant debian11 --network network=default --graphics vnc,listen=0.0.0.0 --noautoconsole"),
    ("virt-install-import", false, "--name cloud IMPORT"),
    ("virt-install-uefi", false, "--name uefi IMPORT --boot uefi"),
    ("virt-install-q35", false, "--name q35 IMPORT --machine q35"),
    ("virt-install-pc", false, "--name pc IMPORT --machine pc"),
    ("virt-install-pc-vnc", false, "--name pcvnc IMPORT --machine pc --graphics vnc,listen=0.0.0.0"),
    ("virt-install-spice", false, "--name spice IMPORT --graphics spice"),
    ("virt-install-pc-spice", false, "--name pcspice IMPORT --machine pc --graphics spice"),
    ("virt-install-sata", false, "--name sata --memory 1024 --vcpus 1 --disk path=IMG/vm1.qcow2,format=qcow2,bus=sata --import --os-variant debian11 --network network=default --noautoconsole"),
    ("virt-install-scsi", false, "--name scsi --memory 1024 --vcpus 1 --disk path=IMG/vm1.qcow2,format=qcow2,bus=scsi --import --os-variant debian11 --network network=default --noautoconsole"),
    ("virt-install-pc-sata-scsi", false, "--name pcdisks --memory 1024 --vcpus 1 --machine pc --disk path=IMG/vm1.qcow2,format=qcow2,bus=sata --disk path=IMG/data.qcow2,format=qcow2,bus=scsi --import --os-variant debian11 --network network=default --noautoconsole"),
    ("virt-install-serial-console", false, "--name serial IMPORT --graphics none --console pty,target_type=serial"),
    ("virt-install-pc-serial-console", false, "--name pcserial IMPORT --machine pc --graphics none --console pty,target_type=serial"),
    ("virt-install-host-passthrough", false, "--name passthrough IMPORT --cpu host-passthrough"),
    ("virt-install-cpu-model", false, "--name model --memory 1024 --vcpus 2,maxvcpus=4 --cpu Skylake-Client,+vmx --disk path=IMG/vm1.qcow2,format=qcow2,cache=writeback,io=threads --import --os-variant debian11 --network bridge=br0,model=e1000 --graphics vnc,port=5901,password=secret --noautoconsole"),
    ("virt-install-cloud-init", true, "--name ci IMPORT --cloud-init root-password-generate=on"),
    ("virt-install-generic", false, "--name generic --memory 1024 --vcpus 1 --disk path=IMG/vm1.qcow2,format=qcow2 --import --os-variant generic --network network=default --noautoconsole"),
    ("virt-install-seed-location", true, "--network bridge:br0 --name centos7 --ram=4096 --vcpus=2 --disk path=IMG/centos7.qcow2,format=qcow2,bus=virtio,cache=none,size=16 --graphics none --location TREE --extra-args=console=tty0 console=ttyS0,115200"),
    ("virt-install-seed-cdrom", true, "--name seedcd --memory 2048 --vcpus 2 --disk path=IMG/seedcd.qcow2,size=8,format=qcow2 --cdrom ISO --os-variant debian11 --graphics vnc,listen=0.0.0.0"),
];

const IMPORT: &str = "--memory 1024 --vcpus 1 --disk path=IMG/debian-11-genericcloud-amd64.qcow2,format=qcow2 --import --os-variant debian11 --network network=default --noautoconsole";

/// The fixed UUID and MAC the script gives a case (md5 of its name), read back from the case.
fn fixed_ids(case: &str) -> (String, Option<String>) {
    let xml = std::fs::read_to_string(format!("{CASES}/{case}.xml")).expect("case file");
    let doc = oxvirt_xml::roxmltree::Document::parse(&xml).expect("case parses");
    let uuid = doc
        .descendants()
        .find(|n| n.has_tag_name("uuid"))
        .and_then(|n| n.text())
        .expect("uuid")
        .to_string();
    let mac = doc
        .descendants()
        .find(|n| n.has_tag_name("mac"))
        .and_then(|n| n.attribute("address"))
        .map(str::to_string);
    (uuid, mac)
}

/// The argument list of a spec, for a case's ids. The spec is split at spaces; the one space
/// inside `--extra-args`'s value is put back.
fn arguments(spec: &str, root: &Path, uuid: &str, mac: Option<&str>) -> Vec<String> {
    let spec = spec.replace("IMPORT", IMPORT);
    let img = root.join("var/lib/oxvirt/images");
    let mut args: Vec<String> = spec
        .split(' ')
        .map(|word| {
            word.replace("IMG", img.to_str().unwrap())
                .replace("ISO", root.join("tmp/debian.iso").to_str().unwrap())
                .replace("TREE", root.join("tmp/centos7").to_str().unwrap())
        })
        .collect();
    if let Some(pos) = args.iter().position(|a| a.starts_with("--extra-args=")) {
        let rest = args.remove(pos + 1);
        args[pos] = format!("{} {rest}", args[pos]);
    }
    if let Some(mac) = mac {
        for (index, arg) in args.clone().iter().enumerate() {
            if arg == "--network" && args[index + 1] != "none" {
                args[index + 1] = format!("{},mac={mac}", args[index + 1]);
            }
        }
        if !args.iter().any(|a| a == "--network") {
            args.push("--network".to_string());
            args.push(format!("network=default,mac={mac}"));
        }
    }
    args.extend([
        "--uuid".to_string(),
        uuid.to_string(),
        "--print-xml".to_string(),
    ]);
    args
}

/// The files the command lines name, as the script makes them.
fn make_files(root: &Path) {
    let img = root.join("var/lib/oxvirt/images");
    std::fs::create_dir_all(&img).unwrap();
    for name in [
        "vm1.qcow2",
        "debian-11-genericcloud-amd64.qcow2",
        "data.qcow2",
        "centos7.qcow2",
        "seedcd.qcow2",
    ] {
        std::fs::write(img.join(name), b"QFI\xfb\0\0\0\x03").unwrap();
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(root.join("tmp/debian.iso"), vec![0u8; 4096]).unwrap();
    let tree = root.join("tmp/centos7");
    std::fs::create_dir_all(tree.join("images/pxeboot")).unwrap();
    std::fs::write(tree.join("images/pxeboot/vmlinuz"), "kernel\n").unwrap();
    std::fs::write(tree.join("images/pxeboot/initrd.img"), "initrd\n").unwrap();
    std::fs::write(
        tree.join(".treeinfo"),
        "[general]\nfamily = CentOS\nversion = 7\narch = x86_64\nname = CentOS 7\n[images-x86_64]\nkernel = images/pxeboot/vmlinuz\ninitrd = images/pxeboot/initrd.img\n",
    )
    .unwrap();
}

/// Runs oxvirt install --print-xml and returns its documents with the temporary paths cut out.
fn print_xml(root: &Path, name: &str, args: &[String]) -> Vec<String> {
    let boot = root.join("boot");
    let output = Command::new(env!("CARGO_BIN_EXE_oxvirt"))
        .args(["--socket", "/nonexistent/oxvirtd.sock", "install"])
        .args(args)
        .env("OXVIRT_BOOT_DIR", &boot)
        .output()
        .expect("run oxvirt");
    assert!(
        output.status.success(),
        "oxvirt install {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let boot = boot.to_str().unwrap();
    let text = String::from_utf8(output.stdout)
        .unwrap()
        .replace(
            &format!("{boot}/oxvirt-{name}-vmlinuz"),
            "/var/lib/libvirt/boot/virtinst-vmlinuz",
        )
        .replace(
            &format!("{boot}/oxvirt-{name}-initrd"),
            "/var/lib/libvirt/boot/virtinst-initrd.img",
        )
        .replace(
            &format!("{boot}/oxvirt-{name}-cloudinit.iso"),
            "/var/lib/libvirt/boot/virtinst-cloudinit.iso",
        )
        .replace(root.to_str().unwrap(), "");
    text.split_inclusive("</domain>\n")
        .map(str::to_string)
        .collect()
}

/// Differences between two elements as "path: what" lines.
fn diff(want: Node, got: Node, path: &str, out: &mut Vec<String>) {
    let here = format!("{path}/{}", want.tag_name().name());
    if want.tag_name() != got.tag_name() {
        out.push(format!("{here}: got <{}>", got.tag_name().name()));
        return;
    }
    let attrs = |n: Node| {
        let mut a: Vec<(String, String)> = n
            .attributes()
            .map(|a| (a.name().to_string(), a.value().to_string()))
            .collect();
        a.sort();
        a
    };
    if attrs(want) != attrs(got) {
        out.push(format!(
            "{here}: attributes {:?} != {:?}",
            attrs(want),
            attrs(got)
        ));
    }
    let text = |n: Node| {
        n.children()
            .filter(|c| c.is_text())
            .map(|c| c.text().unwrap_or("").trim().to_string())
            .collect::<String>()
    };
    if text(want) != text(got) {
        out.push(format!("{here}: text {:?} != {:?}", text(want), text(got)));
    }
    let want_children: Vec<Node> = want.children().filter(Node::is_element).collect();
    let got_children: Vec<Node> = got.children().filter(Node::is_element).collect();
    if want_children.len() != got_children.len() {
        out.push(format!(
            "{here}: {} children != {}: {:?} vs {:?}",
            want_children.len(),
            got_children.len(),
            want_children
                .iter()
                .map(|n| n.tag_name().name())
                .collect::<Vec<_>>(),
            got_children
                .iter()
                .map(|n| n.tag_name().name())
                .collect::<Vec<_>>()
        ));
        return;
    }
    for (w, g) in want_children.into_iter().zip(got_children) {
        diff(w, g, &here, out);
    }
}

fn compare(case: &str, got: &str, failures: &mut Vec<String>) {
    let want = std::fs::read_to_string(format!("{CASES}/{case}.xml")).expect("case file");
    let want_doc = oxvirt_xml::roxmltree::Document::parse(&want).expect("case parses");
    let got_doc = match oxvirt_xml::roxmltree::Document::parse(got) {
        Ok(doc) => doc,
        Err(err) => {
            failures.push(format!(
                "{case}: oxvirt printed malformed XML ({err}):\n{got}"
            ));
            return;
        }
    };
    let mut out = Vec::new();
    diff(
        want_doc.root_element(),
        got_doc.root_element(),
        "",
        &mut out,
    );
    for line in out {
        failures.push(format!("{case}: {line}"));
    }
}

#[test]
fn print_xml_is_what_virt_install_prints() {
    let root = tempfile::tempdir().unwrap();
    make_files(root.path());
    let mut failures = Vec::new();
    for (case, two_phases, spec) in SPECS {
        let name = spec
            .split(' ')
            .skip_while(|w| *w != "--name")
            .nth(1)
            .expect("--name");
        let (uuid, mac) = fixed_ids(case);
        let docs = print_xml(
            root.path(),
            name,
            &arguments(spec, root.path(), &uuid, mac.as_deref()),
        );
        let want_docs = if *two_phases { 2 } else { 1 };
        if docs.len() != want_docs {
            failures.push(format!(
                "{case}: {} documents, want {want_docs}",
                docs.len()
            ));
            continue;
        }
        compare(case, docs.last().unwrap(), &mut failures);
        if *two_phases {
            // The install document is its own case, with ids of its own.
            let install = format!("{case}-install");
            let (uuid, mac) = fixed_ids(&install);
            let docs = print_xml(
                root.path(),
                name,
                &arguments(spec, root.path(), &uuid, mac.as_deref()),
            );
            compare(&install, &docs[0], &mut failures);
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

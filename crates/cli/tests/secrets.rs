//! Secret verbs through the `oxvirt` binary against a private oxvirtd, with virsh's messages and
//! output (as libvirt 9.0's `virsh -c secret:///embed` printed them for the same input).

#[allow(dead_code)]
mod support;

use support::Daemon;

const CEPH: &str = "<secret ephemeral='no' private='no'>
  <uuid>250bd877-8ded-4c59-9d43-9b6d946959a1</uuid>
  <description>ceph admin</description>
  <usage type='ceph'>
    <name>client.admin secret</name>
  </usage>
</secret>
";

#[test]
fn secret_verbs_print_what_virsh_prints() {
    let daemon = Daemon::start();
    let file = daemon.dir.path().join("ceph.xml");
    std::fs::write(&file, CEPH).unwrap();
    let file = file.to_str().unwrap();
    assert_eq!(
        daemon.oxvirt(&["secret-define", file]).ok(),
        "Secret 250bd877-8ded-4c59-9d43-9b6d946959a1 created\n\n"
    );
    let private = daemon.dir.path().join("iscsi.xml");
    std::fs::write(
        &private,
        "<secret private='yes'><uuid>6f1c2a4e-0c1a-4d2b-9a51-0000000002ff</uuid>\
         <usage type='iscsi'><target>libvirtiscsi</target></usage></secret>",
    )
    .unwrap();
    daemon
        .oxvirt(&["secret-define", private.to_str().unwrap()])
        .ok();
    assert_eq!(
        daemon.oxvirt(&["secret-list"]).ok(),
        " UUID                                   Usage\n\
         ------------------------------------------------------------------\n \
         250bd877-8ded-4c59-9d43-9b6d946959a1   ceph client.admin secret\n \
         6f1c2a4e-0c1a-4d2b-9a51-0000000002ff   iscsi libvirtiscsi\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["secret-list", "--private"]).ok(),
        " UUID                                   Usage\n\
         ------------------------------------------------------------\n \
         6f1c2a4e-0c1a-4d2b-9a51-0000000002ff   iscsi libvirtiscsi\n\n"
    );
    assert_eq!(
        daemon
            .oxvirt(&["secret-dumpxml", "250bd877-8ded-4c59-9d43-9b6d946959a1"])
            .ok(),
        format!("{CEPH}\n")
    );

    // Values: from a file (base64, or the bytes with --plain), read back the same two ways.
    let value = daemon.dir.path().join("value");
    std::fs::write(&value, "hunter2").unwrap();
    let uuid = "250bd877-8ded-4c59-9d43-9b6d946959a1";
    assert_eq!(
        daemon
            .oxvirt(&[
                "secret-set-value",
                uuid,
                "--file",
                value.to_str().unwrap(),
                "--plain"
            ])
            .ok(),
        "Secret value set\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["secret-get-value", uuid]).ok(),
        "aHVudGVyMg==\n\n"
    );
    assert_eq!(
        daemon.oxvirt(&["secret-get-value", "--plain", uuid]).ok(),
        "hunter2\n\n"
    );
    std::fs::write(&value, "not base64!").unwrap();
    let err = daemon
        .oxvirt(&["secret-set-value", uuid, "--file", value.to_str().unwrap()])
        .error();
    assert!(err.contains("not base64"), "{err}");
    let err = daemon
        .oxvirt(&["secret-get-value", "6f1c2a4e-0c1a-4d2b-9a51-0000000002ff"])
        .error();
    assert!(err.contains("private"), "{err}");

    // A second secret for the same usage is refused naming the first; nothing changes.
    std::fs::write(
        daemon.dir.path().join("clash.xml"),
        CEPH.replace("250bd877", "350bd877"),
    )
    .unwrap();
    let err = daemon
        .oxvirt(&[
            "secret-define",
            daemon.dir.path().join("clash.xml").to_str().unwrap(),
        ])
        .error();
    assert!(
        err.contains("a secret with UUID 250bd877-8ded-4c59-9d43-9b6d946959a1 is already defined for use with ceph client.admin secret"),
        "{err}"
    );
    assert_eq!(
        daemon.oxvirt(&["secret-undefine", uuid]).ok(),
        format!("Secret {uuid} deleted\n\n")
    );
    let err = daemon.oxvirt(&["secret-dumpxml", uuid]).error();
    assert!(
        err.contains(&format!("no secret with UUID '{uuid}'")),
        "{err}"
    );
}

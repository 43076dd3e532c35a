//! The translation of representative domains into QEMU arguments.

use oxvirt_qemu::{build_command_line, command_line, Accel, QemuCommandLine, QemuError, RunPaths};
use serde_json::Value;

const RUN_DIR: &str = "/run/oxvirt/vm";

fn domain(xml: &str) -> oxvirt_qemu::Domain {
    oxvirt_domain::parse_domain_xml(xml)
        .unwrap_or_else(|err| panic!("test domain must parse: {err}\n{xml}"))
}

/// A pc domain with `extra` inside `<domain>` and `devices` inside `<devices>`.
fn xml(extra: &str, devices: &str) -> String {
    format!(
        "<domain type='kvm'>
           <name>vm1</name><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
           <memory unit='KiB'>219100</memory><vcpu>2</vcpu>
           <os><type arch='x86_64' machine='pc'>hvm</type></os>
           {extra}
           <devices>{devices}</devices>
         </domain>"
    )
}

fn build(xml: &str, accel: Accel) -> QemuCommandLine {
    build_command_line(&domain(xml), &RunPaths::new(RUN_DIR), accel).expect("translation")
}

fn args_of(xml: &str, accel: Accel) -> Vec<String> {
    build(xml, accel).args
}

fn unsupported(xml: &str) -> (String, String) {
    match command_line(&domain(xml), &RunPaths::new(RUN_DIR), Accel::Tcg) {
        Err(QemuError::Unsupported {
            element, reason, ..
        }) => (element, reason),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

fn invalid(xml: &str) -> (String, String) {
    match command_line(&domain(xml), &RunPaths::new(RUN_DIR), Accel::Tcg) {
        Err(QemuError::Invalid {
            element, reason, ..
        }) => (element, reason),
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// Values of every occurrence of `option`.
fn values<'a>(args: &'a [String], option: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == option)
        .map(|w| w[1].as_str())
        .collect()
}

fn value<'a>(args: &'a [String], option: &str) -> &'a str {
    match values(args, option).as_slice() {
        [one] => one,
        other => panic!("expected one {option}, got {other:?}"),
    }
}

fn json_values(args: &[String], option: &str) -> Vec<Value> {
    values(args, option)
        .iter()
        .map(|v| serde_json::from_str(v).expect("JSON option"))
        .collect()
}

fn device(args: &[String], id: &str) -> Value {
    json_values(args, "-device")
        .into_iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no -device with id {id}"))
}

fn blockdev(args: &[String], node: &str) -> Value {
    json_values(args, "-blockdev")
        .into_iter()
        .find(|d| d["node-name"] == node)
        .unwrap_or_else(|| panic!("no -blockdev {node}"))
}

#[test]
fn minimal_domain_has_the_engine_fixed_options() {
    let args = args_of(&xml("", ""), Accel::Tcg);
    assert_eq!(value(&args, "-name"), "guest=vm1,debug-threads=on");
    assert_eq!(
        value(&args, "-uuid"),
        "c7a5fdbd-edaf-9455-926a-d65c16db1809"
    );
    assert_eq!(
        value(&args, "-machine"),
        "pc,usb=off,dump-guest-core=off,acpi=off"
    );
    assert_eq!(value(&args, "-accel"), "tcg");
    // 219100 KiB rounds up to whole MiB, as libvirt does.
    assert_eq!(value(&args, "-m"), "size=214M");
    assert_eq!(value(&args, "-smp"), "2,sockets=2,cores=1,threads=1");
    assert_eq!(value(&args, "-cpu"), "qemu64");
    assert_eq!(value(&args, "-pidfile"), "/run/oxvirt/vm/qemu/qemu.pid");
    assert_eq!(value(&args, "-display"), "none");
    assert_eq!(value(&args, "-rtc"), "base=utc");
    assert!(
        args.contains(&"-nodefaults".to_string()) && args.contains(&"-no-user-config".to_string())
    );
    assert!(
        !args.contains(&"-no-shutdown".to_string()),
        "guest poweroff must end QEMU"
    );
    assert!(!args.contains(&"-S".to_string()));
    let chardevs = values(&args, "-chardev");
    assert!(chardevs
        .contains(&"socket,id=charmonitor,path=/run/oxvirt/vm/qemu/qmp.sock,server=on,wait=off"));
    assert!(chardevs.contains(
        &"socket,id=charserial0,path=/run/oxvirt/vm/qemu/console.sock,server=on,wait=off,logfile=/run/oxvirt/vm/console.log,logappend=on"
    ));
    assert_eq!(
        value(&args, "-mon"),
        "chardev=charmonitor,id=monitor,mode=control"
    );
    assert_eq!(device(&args, "serial0")["driver"], "isa-serial");
    assert_eq!(device(&args, "balloon0")["driver"], "virtio-balloon-pci");
    assert_eq!(device(&args, "usb")["driver"], "piix3-usb-uhci");
}

#[test]
fn kvm_type_follows_the_probe_and_qemu_type_is_always_tcg() {
    let kvm = xml("", "");
    assert_eq!(value(&args_of(&kvm, Accel::Kvm), "-accel"), "kvm");
    let under_tcg = build(&kvm, Accel::Tcg);
    assert_eq!(value(&under_tcg.args, "-accel"), "tcg");
    assert!(
        under_tcg.warnings.iter().any(|w| w.contains("TCG")),
        "{:?}",
        under_tcg.warnings
    );
    let qemu = kvm.replace("type='kvm'", "type='qemu'");
    let line = build(&qemu, Accel::Kvm);
    assert_eq!(value(&line.args, "-accel"), "tcg");
    assert!(line.warnings.is_empty());
}

#[test]
fn host_cpu_modes_map_to_max_under_tcg_with_a_warning() {
    for mode in ["host-passthrough", "host-model"] {
        let xml = xml(&format!("<cpu mode='{mode}'/>"), "");
        let tcg = build(&xml, Accel::Tcg);
        assert!(value(&tcg.args, "-cpu").starts_with("max"), "{mode}");
        assert!(
            tcg.warnings
                .iter()
                .any(|w| w.contains(mode) && w.contains("-cpu max")),
            "{:?}",
            tcg.warnings
        );
        let kvm = build(&xml, Accel::Kvm);
        assert!(value(&kvm.args, "-cpu").starts_with("host"), "{mode}");
        assert!(kvm.warnings.is_empty());
    }
}

#[test]
fn cpu_model_features_and_topology() {
    let xml = xml(
        "<cpu match='exact'><model>Haswell</model><topology sockets='1' dies='1' cores='2' threads='2'/>
           <feature policy='require' name='lahf_lm'/><feature policy='disable' name='hle'/>
           <feature policy='forbid' name='rtm'/><feature policy='force' name='x2apic'/></cpu>",
        "",
    )
    .replace("<vcpu>2</vcpu>", "<vcpu current='2'>4</vcpu>");
    let args = args_of(&xml, Accel::Kvm);
    assert_eq!(
        value(&args, "-cpu"),
        "Haswell,lahf-lm=on,hle=off,rtm=off,x2apic=on"
    );
    assert_eq!(
        value(&args, "-smp"),
        "2,maxcpus=4,sockets=1,dies=1,cores=2,threads=2"
    );
}

#[test]
fn memory_backing_hotplug_and_lifecycle() {
    let xml = xml(
        "<maxMemory slots='4' unit='MiB'>1024</maxMemory>
         <memoryBacking><hugepages/><nosharepages/></memoryBacking>
         <on_reboot>destroy</on_reboot><on_crash>preserve</on_crash>
         <features><acpi/></features><clock offset='localtime'><timer name='rtc' tickpolicy='catchup'/></clock>",
        "",
    );
    let args = args_of(&xml, Accel::Tcg);
    assert_eq!(
        value(&args, "-machine"),
        "pc,usb=off,dump-guest-core=off,mem-merge=off,memory-backend=pc.ram"
    );
    assert_eq!(value(&args, "-m"), "size=214M,slots=4,maxmem=1024M");
    let backend: Value = serde_json::from_str(value(&args, "-object")).unwrap();
    assert_eq!(backend["qom-type"], "memory-backend-file");
    assert_eq!(backend["mem-path"], "/dev/hugepages/oxvirt/vm");
    assert_eq!(backend["size"], 214 * 1024 * 1024);
    assert!(args.contains(&"-no-reboot".to_string()));
    assert!(!args.contains(&"-no-shutdown".to_string()));
    assert_eq!(value(&args, "-action"), "panic=pause");
    assert_eq!(value(&args, "-rtc"), "base=localtime,driftfix=slew");
}

#[test]
fn direct_kernel_boot_and_boot_order() {
    let boot = xml(
        "",
        "<disk type='file' device='disk'><source file='/img/a.raw'/><target dev='vda' bus='virtio'/><boot order='2'/></disk>
         <disk type='file' device='cdrom'><source file='/img/b.iso'/><target dev='hdc' bus='ide'/><boot order='1'/></disk>
         <interface type='user'><model type='virtio'/><boot order='3'/></interface>",
    );
    let args = args_of(&boot, Accel::Tcg);
    assert_eq!(device(&args, "vda")["bootindex"], 2);
    assert_eq!(device(&args, "hdc")["bootindex"], 1);
    assert_eq!(device(&args, "hdc")["driver"], "ide-cd");
    assert_eq!(device(&args, "hdc")["bus"], "ide.1");
    assert_eq!(device(&args, "net0")["bootindex"], 3);
    assert_eq!(value(&args, "-boot"), "strict=on");

    let kernel = xml("", "").replace(
        "</os>",
        "<kernel>/k/vmlinuz</kernel><initrd>/k/initrd</initrd><cmdline>console=ttyS0 a=b,c</cmdline>\
         <bootmenu enable='yes' timeout='3000'/></os>",
    );
    let args = args_of(&kernel, Accel::Tcg);
    assert_eq!(value(&args, "-kernel"), "/k/vmlinuz");
    assert_eq!(value(&args, "-initrd"), "/k/initrd");
    assert_eq!(value(&args, "-append"), "console=ttyS0 a=b,c");
    assert_eq!(value(&args, "-boot"), "strict=on,menu=on,splash-time=3000");
}

#[test]
fn disk_cache_modes_map_to_the_three_qemu_knobs() {
    // (mode, cache.direct, cache.no-flush, device write-cache)
    let expected = [
        ("none", true, false, "on"),
        ("writeback", false, false, "on"),
        ("writethrough", false, false, "off"),
        ("directsync", true, false, "off"),
        ("unsafe", false, true, "on"),
    ];
    for (mode, direct, no_flush, write_cache) in expected {
        let xml = xml(
            "",
            &format!(
                "<disk type='block' device='disk'><driver name='qemu' type='qcow2' cache='{mode}'/>
                 <source dev='/dev/vg/lv'/><target dev='vda' bus='virtio'/></disk>"
            ),
        );
        let args = args_of(&xml, Accel::Tcg);
        for node in ["drive-vda-file", "drive-vda"] {
            let node = blockdev(&args, node);
            assert_eq!(node["cache"]["direct"], direct, "{mode}");
            assert_eq!(node["cache"]["no-flush"], no_flush, "{mode}");
        }
        assert_eq!(blockdev(&args, "drive-vda-file")["driver"], "host_device");
        assert_eq!(blockdev(&args, "drive-vda")["driver"], "qcow2");
        assert_eq!(device(&args, "vda")["write-cache"], write_cache, "{mode}");
    }
}

/// One `iothread` object per IOThread, in the definition's order (listed ids, then those
/// libvirt fills in), as libvirt writes them; a disk may use any of them, pins are oxvirtd's.
#[test]
fn iothreads_by_id_in_libvirts_order() {
    let xml = xml(
        "<iothreads>3</iothreads><iothreadids><iothread id='7'/><iothread id='2'/></iothreadids>
         <cputune><iothreadpin iothread='7' cpuset='0'/></cputune>",
        "<disk type='file' device='disk'>
           <driver name='qemu' type='raw' iothread='7'/>
           <source file='/img/a.raw'/><target dev='vda' bus='virtio'/>
         </disk>",
    );
    let args = args_of(&xml, Accel::Tcg);
    let ids: Vec<Value> = json_values(&args, "-object")
        .into_iter()
        .filter(|o| o["qom-type"] == "iothread")
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(ids, ["iothread7", "iothread2", "iothread1"]);
    assert_eq!(device(&args, "vda")["iothread"], "iothread7");
}

#[test]
fn disk_io_discard_readonly_serial_iothread() {
    let xml = xml(
        "<iothreads>2</iothreads>",
        "<disk type='file' device='disk'>
           <driver name='qemu' type='raw' cache='none' io='native' discard='unmap' detect_zeroes='unmap' iothread='2'/>
           <source file='/img/a.raw'/><target dev='vda' bus='virtio'/><serial>SER1</serial><readonly/>
         </disk>",
    );
    let args = args_of(&xml, Accel::Tcg);
    let file = blockdev(&args, "drive-vda-file");
    assert_eq!(file["driver"], "file");
    assert_eq!(file["aio"], "native");
    assert_eq!(file["discard"], "unmap");
    assert_eq!(file["read-only"], true);
    let format = blockdev(&args, "drive-vda");
    assert_eq!(format["detect-zeroes"], "unmap");
    let disk = device(&args, "vda");
    assert_eq!(disk["driver"], "virtio-blk-pci");
    assert_eq!(disk["serial"], "SER1");
    assert_eq!(disk["iothread"], "iothread2");
    assert_eq!(disk["drive"], "drive-vda");
    let iothreads: Vec<Value> = json_values(&args, "-object");
    assert_eq!(
        iothreads
            .iter()
            .filter(|o| o["qom-type"] == "iothread")
            .count(),
        2
    );

    // aio=native without O_DIRECT is refused by QEMU; say so up front.
    let native_cached = xml.replace("cache='none' ", "");
    let (element, reason) = invalid(&native_cached);
    assert!(
        element.contains("disk[target@dev='vda']/driver@io"),
        "{element}"
    );
    assert!(reason.contains("cache='none'"), "{reason}");
}

/// libvirt 9.0's mapping (checked with `virsh domxml-to-native` of the own case
/// disk-driver-options): queues/queue_size on virtio-blk, werror/rerror on the frontend, and a
/// copy-on-read filter node the device reads through.
#[test]
fn disk_queues_error_policies_and_copy_on_read() {
    let xml = xml(
        "",
        "<disk type='file' device='disk'>
           <driver name='qemu' type='raw' queues='4' queue_size='256' error_policy='stop' rerror_policy='report' copy_on_read='on'/>
           <source file='/img/a.raw'/><target dev='vda' bus='virtio'/>
         </disk>
         <disk type='file' device='disk'>
           <driver name='qemu' type='qcow2' error_policy='enospace'/>
           <source file='/img/b.qcow2'/><target dev='vdb' bus='virtio'/>
         </disk>
         <disk type='file' device='disk'>
           <driver name='qemu' type='raw' error_policy='ignore'/>
           <source file='/img/c.raw'/><target dev='hda' bus='ide'/>
         </disk>",
    );
    let args = args_of(&xml, Accel::Tcg);
    let vda = device(&args, "vda");
    assert_eq!(vda["num-queues"], 4);
    assert_eq!(vda["queue-size"], 256);
    assert_eq!(vda["werror"], "stop");
    assert_eq!(vda["rerror"], "report");
    assert_eq!(vda["drive"], "drive-vda-cor");
    let cor = blockdev(&args, "drive-vda-cor");
    assert_eq!(cor["driver"], "copy-on-read");
    assert_eq!(cor["file"], "drive-vda");
    // The filter comes after the node it reads.
    let nodes: Vec<Value> = json_values(&args, "-blockdev");
    let position = |name: &str| nodes.iter().position(|n| n["node-name"] == name).unwrap();
    assert!(position("drive-vda") < position("drive-vda-cor"));

    let vdb = device(&args, "vdb");
    assert_eq!(vdb["werror"], "enospc");
    assert!(vdb.get("rerror").is_none(), "{vdb}");
    assert_eq!(vdb["drive"], "drive-vdb");
    assert!(vdb.get("num-queues").is_none());
    let hda = device(&args, "hda");
    assert_eq!(hda["werror"], "ignore");
    assert_eq!(hda["rerror"], "ignore");

    // libvirt 9.0 defines queue_size on an IDE disk; QEMU's ide-hd has no such property.
    let ide_queue = xml.replace(
        "type='raw' error_policy='ignore'",
        "type='raw' queue_size='64'",
    );
    let (element, reason) = invalid(&ide_queue);
    assert!(
        element.ends_with("disk[target@dev='hda']/driver@queue_size"),
        "{element}"
    );
    assert!(reason.contains("virtio"), "{reason}");
}

/// A serial port writing a file gets it open (launch opens it): the command line names a
/// descriptor set, never the file, which QEMU (maybe a user of its own) need not reach.
#[test]
fn serial_files_come_as_descriptor_sets() {
    let xml = xml(
        "",
        "<serial type='pty'><target port='0'/></serial>
         <serial type='file'><source path='/var/log/g/ttyS1.log' append='on'/><target port='1'/></serial>",
    );
    let args = args_of(&xml, Accel::Tcg);
    assert!(!args.iter().any(|a| a.contains("ttyS1.log")), "{args:?}");
    let add_fd = value(&args, "-add-fd");
    let set = add_fd
        .split(',')
        .find_map(|kv| kv.strip_prefix("set="))
        .unwrap_or_else(|| panic!("{add_fd}"));
    assert!(add_fd.starts_with("fd="), "{add_fd}");
    let chardevs = values(&args, "-chardev");
    let expected = format!("file,id=charserial1,path=/dev/fdset/{set},append=on");
    assert!(chardevs.contains(&expected.as_str()), "{chardevs:?}");
}

/// A serial port or a channel on a Unix socket at a path of the definition's gets it bound or
/// connected (launch does it), as libvirt hands QEMU its listening sockets: the command line
/// names a descriptor, never the path.
#[test]
fn serial_unix_sockets_come_as_descriptors() {
    let xml = xml(
        "",
        "<serial type='pty'><target port='0'/></serial>
         <serial type='unix'><source mode='bind' path='/run/g/ttyS1.sock'/><target port='1'/></serial>
         <serial type='unix'><source mode='connect' path='/run/g/ttyS2.sock'/><target port='2'/></serial>
         <channel type='unix'><source mode='bind'/><target type='virtio' name='org.example.auto'/></channel>
         <channel type='unix'><source mode='bind' path='/run/g/chan.sock'/><target type='virtio' name='org.example.c'/></channel>",
    );
    let args = args_of(&xml, Accel::Tcg);
    assert!(!args.iter().any(|a| a.contains("/run/g/")), "{args:?}");
    let chardevs = values(&args, "-chardev");
    for expected in [
        "socket,id=charserial1,fd=191,server=on,wait=off",
        "socket,id=charserial2,fd=192,server=off",
        // A channel without a path: QEMU makes it in its own part of the run directory.
        "socket,id=charchannel0,path=/run/oxvirt/vm/qemu/channel-0.sock,server=on,wait=off",
        "socket,id=charchannel1,fd=151,server=on,wait=off",
    ] {
        assert!(
            chardevs.contains(&expected),
            "{expected} not in {chardevs:?}"
        );
    }
}

/// Serial ports of the other chardev types, as libvirt 9.0 maps them (its `domxml-to-native`
/// of the own cases serial-tcp-udp and serial-null-stdio-vc).
#[test]
fn serial_tcp_udp_null_stdio_vc() {
    let xml = xml(
        "",
        "<serial type='pty'><target port='0'/></serial>
         <serial type='tcp'><source mode='bind' host='127.0.0.1' service='4555'/><protocol type='telnet'/></serial>
         <serial type='tcp'><source host='192.0.2.1' service='4556'/></serial>
         <serial type='udp'><source mode='bind' host='0.0.0.0' service='4557'/><source mode='connect' host='192.0.2.2' service='4558'/></serial>",
    );
    let args = args_of(&xml, Accel::Tcg);
    let chardevs = values(&args, "-chardev");
    for expected in [
        "socket,id=charserial1,host=127.0.0.1,port=4555,telnet=on,server=on,wait=off",
        "socket,id=charserial2,host=192.0.2.1,port=4556",
        "udp,id=charserial3,host=192.0.2.2,port=4558,localaddr=0.0.0.0,localport=4557",
    ] {
        assert!(
            chardevs.contains(&expected),
            "{expected} not in {chardevs:?}"
        );
    }
    assert_eq!(device(&args, "serial2")["chardev"], "charserial2");

    let xml = self::xml(
        "",
        "<serial type='null'/><serial type='stdio'/><serial type='vc'/>",
    );
    let args = args_of(&xml, Accel::Tcg);
    let chardevs = values(&args, "-chardev");
    for expected in [
        "null,id=charserial0",
        "stdio,id=charserial1",
        "vc,id=charserial2",
    ] {
        assert!(
            chardevs.contains(&expected),
            "{expected} not in {chardevs:?}"
        );
    }
}

/// Audio backends and sound cards as libvirt 9.0 maps them (its `domxml-to-native` of the own
/// cases sound-models and audio-backends).
#[test]
fn sound_cards_and_audio_backends() {
    let xml = xml(
        "",
        "<sound model='ich6'><audio id='2'/></sound>
         <sound model='ich9'><codec type='micro'/><codec type='output'/></sound>
         <sound model='ac97'/><sound model='es1370'/><sound model='sb16'/><sound model='usb'/>
         <audio id='1' type='pulseaudio' serverName='unix:/run/pulse/native' timerPeriod='100'>
           <input mixingEngine='yes' fixedSettings='yes' voices='1' bufferLength='100' name='in0' streamName='mic' latency='20000'>
             <settings frequency='44100' channels='2' format='s16'/>
           </input>
           <output mixingEngine='no' name='out0'/>
         </audio>
         <audio id='2' type='alsa'><input dev='default'/><output dev='hw:0'/></audio>
         <audio id='3' type='oss'><input dev='/dev/dsp0' tryPoll='yes'/></audio>
         <audio id='4' type='file' path='/tmp/out.wav'/>",
    );
    let args = args_of(&xml, Accel::Tcg);
    let audiodevs = json_values(&args, "-audiodev");
    assert_eq!(
        audiodevs[0],
        serde_json::json!({"id":"audio1","driver":"pa","timer-period":100,"server":"unix:/run/pulse/native",
            "in":{"mixing-engine":true,"fixed-settings":true,"voices":1,"buffer-length":100,"frequency":44100,
                  "channels":2,"format":"s16","name":"in0","stream-name":"mic","latency":20000},
            "out":{"mixing-engine":false,"name":"out0"}})
    );
    assert_eq!(
        audiodevs[1],
        serde_json::json!({"id":"audio2","driver":"alsa","in":{"dev":"default"},"out":{"dev":"hw:0"}})
    );
    assert_eq!(
        audiodevs[2],
        serde_json::json!({"id":"audio3","driver":"oss","in":{"dev":"/dev/dsp0","try-poll":true}})
    );
    assert_eq!(
        audiodevs[3],
        serde_json::json!({"id":"audio4","driver":"wav","path":"/tmp/out.wav"})
    );
    assert_eq!(device(&args, "sound0")["driver"], "intel-hda");
    let codec = device(&args, "sound0-codec0");
    assert_eq!(codec["driver"], "hda-duplex");
    assert_eq!(codec["bus"], "sound0.0");
    assert_eq!(codec["audiodev"], "audio2");
    assert_eq!(device(&args, "sound1")["driver"], "ich9-intel-hda");
    assert_eq!(device(&args, "sound1-codec0")["driver"], "hda-micro");
    let output = device(&args, "sound1-codec1");
    assert_eq!(output["driver"], "hda-output");
    assert_eq!(output["cad"], 1);
    // Without a link, the first <audio>.
    assert_eq!(output["audiodev"], "audio1");
    assert_eq!(device(&args, "sound2")["driver"], "AC97");
    assert_eq!(device(&args, "sound2")["audiodev"], "audio1");
    assert_eq!(device(&args, "sound3")["driver"], "ES1370");
    assert_eq!(device(&args, "sound4")["driver"], "sb16");
    assert_eq!(device(&args, "sound5")["driver"], "usb-audio");
    assert_eq!(device(&args, "sound5")["bus"], "usb.0");

    // What QEMU here cannot do, or a file backend without its file.
    let (element, _) = unsupported(
        &xml.replace("type='oss'", "type='dbus'")
            .replace("<input dev='/dev/dsp0' tryPoll='yes'/>", ""),
    );
    assert_eq!(element, "devices/audio[@id='3']");
    let (element, reason) = invalid(&xml.replace(" path='/tmp/out.wav'", ""));
    assert_eq!(element, "devices/audio[@id='4']@path");
    assert!(reason.contains("WAV"), "{reason}");
}

/// `type='ethernet'`: a TAP (the daemon's, or the host's own with managed='no') launch opens
/// and hands QEMU as a descriptor; `type='direct'` (macvtap) likewise, refused clearly without
/// its device.
#[test]
fn ethernet_and_direct_interfaces() {
    let xml = xml(
        "",
        "<interface type='ethernet'><mac address='52:54:00:00:00:01'/><target dev='mytap1' managed='no'/><model type='virtio'/></interface>",
    );
    let args = args_of(&xml, Accel::Tcg);
    let netdev: Value = serde_json::from_str(value(&args, "-netdev")).unwrap();
    assert_eq!(netdev["type"], "tap");
    let fds = oxvirt_qemu::nic_fds(&domain(&xml).devices.interfaces);
    assert_eq!(netdev["fd"], fds[0].taps[0].to_string());
    // QEMU opens nothing by name: no /dev/net/tun, no script.
    assert!(netdev.get("ifname").is_none() && netdev.get("script").is_none());
    // The define-time check passes an ethernet interface without a TAP yet (the daemon makes
    // it at start), but not an unmanaged one without a name.
    let managed = xml.replace("<target dev='mytap1' managed='no'/>", "");
    oxvirt_qemu::check(&domain(&managed)).expect("managed ethernet passes the check");
    let unnamed = xml.replace("dev='mytap1' ", "");
    let err = oxvirt_qemu::check(&domain(&unnamed)).unwrap_err();
    assert!(err.to_string().contains("managed='no'"), "{err}");

    // type='direct': the daemon makes the macvtap device; launch hands QEMU its /dev/tapN as
    // a descriptor the command line names.
    let direct = self::xml(
        "",
        "<interface type='user'/><interface type='direct'><mac address='52:54:00:00:00:02'/><source dev='eth0' mode='bridge'/><target dev='mymv0'/><model type='virtio'/></interface>",
    );
    let args = args_of(&direct, Accel::Tcg);
    let netdevs = json_values(&args, "-netdev");
    assert_eq!(netdevs[1]["type"], "tap");
    let fds = oxvirt_qemu::nic_fds(&domain(&direct).devices.interfaces);
    assert_eq!(
        fds[0],
        oxvirt_qemu::NicFds::default(),
        "user networking has none"
    );
    assert_eq!(netdevs[1]["fd"], fds[1].taps[0].to_string());
    assert!(netdevs[1].get("ifname").is_none());
    let unmade = direct.replace("<target dev='mymv0'/>", "");
    oxvirt_qemu::check(&domain(&unmade)).expect("the daemon makes the device at start");
    let (element, reason) = unsupported(&unmade);
    assert_eq!(element, "devices/interface[1]");
    assert!(reason.contains("macvtap"), "{reason}");
}

/// `<memoryBacking>` source/access/allocation/locked/discard, as libvirt 9.0 maps them (its
/// `domxml-to-native` of the own memory-backing-* cases).
#[test]
fn memory_backing_sources_and_access() {
    let backend = |backing: &str| -> (Value, Vec<String>) {
        let args = args_of(
            &xml(&format!("<memoryBacking>{backing}</memoryBacking>"), ""),
            Accel::Tcg,
        );
        let object = json_values(&args, "-object")
            .into_iter()
            .find(|o| o["id"] == "pc.ram")
            .unwrap_or_else(|| panic!("no pc.ram backend for {backing}"));
        assert!(value(&args, "-machine").contains("memory-backend=pc.ram"));
        (object, args)
    };
    let (file, _) = backend(
        "<source type='file'/><access mode='shared'/><allocation mode='immediate'/><discard/>",
    );
    assert_eq!(file["qom-type"], "memory-backend-file");
    assert_eq!(file["mem-path"], format!("{RUN_DIR}/qemu"));
    assert_eq!(file["share"], true);
    assert_eq!(file["prealloc"], true);
    assert_eq!(file["discard-data"], true);

    let (memfd, args) =
        backend("<nosharepages/><locked/><source type='memfd'/><access mode='shared'/>");
    assert_eq!(memfd["qom-type"], "memory-backend-memfd");
    assert_eq!(memfd["share"], true);
    assert!(memfd.get("prealloc").is_none());
    assert_eq!(value(&args, "-overcommit"), "mem-lock=on");
    assert!(value(&args, "-machine").contains("mem-merge=off"));

    // libvirt: an access mode makes even anonymous memory a file backend.
    let (anonymous, _) = backend(
        "<source type='anonymous'/><access mode='private'/><allocation mode='immediate' threads='2'/>",
    );
    assert_eq!(anonymous["qom-type"], "memory-backend-file");
    assert_eq!(anonymous["share"], false);
    assert_eq!(anonymous["prealloc-threads"], 2);

    let (ram, _) = backend("<allocation mode='immediate'/>");
    assert_eq!(ram["qom-type"], "memory-backend-ram");
    assert_eq!(ram["prealloc"], true);

    let (huge, _) = backend("<hugepages/><source type='memfd'/>");
    assert_eq!(huge["qom-type"], "memory-backend-memfd");
    assert_eq!(huge["hugetlb"], true);

    // Only locked: no backend object, just the lock.
    let args = args_of(
        &xml("<memoryBacking><locked/></memoryBacking>", ""),
        Accel::Tcg,
    );
    assert!(!value(&args, "-machine").contains("memory-backend"));
    assert_eq!(value(&args, "-overcommit"), "mem-lock=on");
}

/// Guest NUMA cells and numatune, as libvirt 9.0 maps them (its `domxml-to-native` of the own
/// cases numa-cells, numatune-memnode, numa-memory-only-cell and numatune-memory-only).
#[test]
fn numa_cells_and_numatune() {
    let xml = xml(
        "<numatune><memnode cellid='0' mode='preferred' nodeset='0'/><memnode cellid='1' mode='interleave' nodeset='0'/></numatune>
         <cpu><numa>
           <cell id='0' cpus='0' memory='256' unit='MiB' memAccess='shared'/>
           <cell id='1' cpus='1' memory='262144' discard='yes'/>
           <cell id='2' memory='128' unit='MiB'/>
         </numa></cpu>",
        "",
    );
    let args = args_of(&xml, Accel::Tcg);
    // <memory> became the cells' sum; no pc.ram backend.
    assert_eq!(value(&args, "-m"), "size=655360k");
    assert!(!value(&args, "-machine").contains("memory-backend"));
    let objects = json_values(&args, "-object");
    let node = |id: &str| {
        objects
            .iter()
            .find(|o| o["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {objects:?}"))
            .clone()
    };
    let node0 = node("ram-node0");
    assert_eq!(node0["qom-type"], "memory-backend-file");
    assert_eq!(node0["share"], true);
    assert_eq!(node0["size"], 268_435_456u64);
    assert_eq!(node0["host-nodes"], serde_json::json!([0]));
    assert_eq!(node0["policy"], "preferred");
    let node1 = node("ram-node1");
    assert_eq!(node1["qom-type"], "memory-backend-ram");
    assert_eq!(node1["policy"], "interleave");
    let node2 = node("ram-node2");
    assert!(node2.get("host-nodes").is_none());
    assert_eq!(
        values(&args, "-numa"),
        [
            "node,nodeid=0,cpus=0,memdev=ram-node0",
            "node,nodeid=1,cpus=1,memdev=ram-node1",
            "node,nodeid=2,memdev=ram-node2",
        ]
    );

    // Non-contiguous vCPUs: one cpus= per range.
    let split = xml
        .replace("cpus='0' memory='256'", "cpus='0,2-3' memory='256'")
        .replace("<vcpu>2</vcpu>", "<vcpu>4</vcpu>");
    let args = args_of(&split, Accel::Tcg);
    assert_eq!(
        values(&args, "-numa")[0],
        "node,nodeid=0,cpus=0,cpus=2-3,memdev=ram-node0"
    );

    // numatune memory without cells binds pc.ram (strict: 'bind').
    let args = args_of(
        &self::xml(
            "<numatune><memory mode='interleave' nodeset='0'/></numatune>",
            "",
        ),
        Accel::Tcg,
    );
    let ram = json_values(&args, "-object")
        .into_iter()
        .find(|o| o["id"] == "pc.ram")
        .expect("pc.ram");
    assert_eq!(ram["qom-type"], "memory-backend-ram");
    assert_eq!(ram["policy"], "interleave");
    assert!(value(&args, "-machine").contains("memory-backend=pc.ram"));
    let args = args_of(
        &self::xml(
            "<numatune><memory mode='strict' nodeset='0'/></numatune>",
            "",
        ),
        Accel::Tcg,
    );
    assert!(
        args.iter().any(|a| a.contains("\"policy\":\"bind\"")),
        "{args:?}"
    );

    // What needs numad or cgroups.
    let (element, _) = unsupported(&self::xml(
        "<numatune><memory mode='restrictive' nodeset='0'/></numatune>",
        "",
    ));
    assert_eq!(element, "numatune/memory@mode");
}

#[test]
fn disk_buses() {
    let pc = xml(
        "",
        "<disk type='file' device='disk'><source file='/i/a'/><target dev='hdb' bus='ide'/></disk>
         <disk type='file' device='disk'><source file='/i/b'/><target dev='sda' bus='scsi'/></disk>
         <disk type='file' device='disk'><source file='/i/c'/><target dev='sdb' bus='sata'/></disk>
         <controller type='scsi' model='virtio-scsi'/>",
    );
    let args = args_of(&pc, Accel::Tcg);
    assert_eq!(device(&args, "hdb")["driver"], "ide-hd");
    assert_eq!(
        (
            device(&args, "hdb")["bus"].clone(),
            device(&args, "hdb")["unit"].clone()
        ),
        ("ide.0".into(), 1.into())
    );
    assert_eq!(device(&args, "scsi0")["driver"], "virtio-scsi-pci");
    assert_eq!(device(&args, "sda")["driver"], "scsi-hd");
    assert_eq!(device(&args, "sda")["bus"], "scsi0.0");
    assert_eq!(device(&args, "sata0")["driver"], "ich9-ahci");
    assert_eq!(device(&args, "sdb")["bus"], "sata0.1");

    let q35 = xml("", "<disk type='file' device='disk'><source file='/i/a'/><target dev='sdc' bus='sata'/></disk>")
        .replace("machine='pc'", "machine='q35'");
    let args = args_of(&q35, Accel::Tcg);
    assert_eq!(device(&args, "sdc")["bus"], "ide.2", "q35's built-in AHCI");
    assert_eq!(device(&args, "usb")["driver"], "qemu-xhci");

    let ide_on_q35 = xml(
        "",
        "<disk type='file' device='disk'><source file='/i/a'/><target dev='hda' bus='ide'/></disk>",
    )
    .replace("machine='pc'", "machine='q35'");
    // Refused when parsed already, as libvirt does (the engine would refuse it too).
    let err = oxvirt_domain::parse_domain_xml(&ide_on_q35).unwrap_err();
    assert!(
        err.to_string().contains("IDE controllers are unsupported"),
        "{err}"
    );
}

#[test]
fn network_interfaces() {
    let user = xml("", "<interface type='user'><mac address='52:54:00:aa:bb:cc'/><model type='e1000'/></interface>");
    let args = args_of(&user, Accel::Tcg);
    let netdev: Value = serde_json::from_str(value(&args, "-netdev")).unwrap();
    assert_eq!(
        netdev,
        serde_json::json!({"type": "user", "id": "hostnet0"})
    );
    let nic = device(&args, "net0");
    assert_eq!(nic["driver"], "e1000");
    assert_eq!(nic["mac"], "52:54:00:aa:bb:cc");
    assert_eq!(nic["netdev"], "hostnet0");

    let tap = xml(
        "",
        "<interface type='bridge'><source bridge='br0'/><target dev='oxtap7'/><model type='virtio'/>
           <driver name='vhost' queues='4'/><mtu size='9000'/></interface>",
    );
    let args = args_of(&tap, Accel::Tcg);
    let netdev: Value = serde_json::from_str(value(&args, "-netdev")).unwrap();
    assert_eq!(netdev["type"], "tap");
    // Four queues: four TAP descriptors and four /dev/vhost-net ones, all different.
    let fds = oxvirt_qemu::nic_fds(&domain(&tap).devices.interfaces);
    assert_eq!((fds[0].taps.len(), fds[0].vhosts.len()), (4, 4));
    let joined = |fds: &[i32]| fds.iter().map(i32::to_string).collect::<Vec<_>>().join(":");
    assert_eq!(netdev["fds"], joined(&fds[0].taps));
    assert_eq!(netdev["vhostfds"], joined(&fds[0].vhosts));
    let mut all: Vec<i32> = fds[0].taps.iter().chain(&fds[0].vhosts).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 8);
    assert!(netdev.get("ifname").is_none() && netdev.get("queues").is_none());
    assert_eq!(netdev["vhost"], true);
    let nic = device(&args, "net0");
    assert_eq!(nic["driver"], "virtio-net-pci");
    assert_eq!(nic["mq"], true);
    assert_eq!(nic["vectors"], 10);
    assert_eq!(nic["host_mtu"], 9000);

    let network = xml(
        "",
        "<interface type='network'><source network='default'/></interface>",
    );
    let (element, reason) = unsupported(&network);
    assert_eq!(element, "devices/interface[0]");
    assert!(
        reason.contains("network 'default'") && reason.contains("TAP"),
        "{reason}"
    );
}

#[test]
fn graphics_video_rng_balloon() {
    let xml = xml(
        "",
        "<graphics type='vnc' socket='/run/vnc,1.sock'/>
         <video><model type='virtio' heads='2'/></video>
         <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
         <memballoon model='virtio' autodeflate='on'/>",
    );
    let args = args_of(&xml, Accel::Tcg);
    assert_eq!(value(&args, "-vnc"), "unix:/run/vnc,,1.sock");
    assert!(values(&args, "-display").is_empty());
    let video = device(&args, "video0");
    assert_eq!(video["driver"], "virtio-vga");
    assert_eq!(video["max_outputs"], 2);
    let rng_backend = json_values(&args, "-object")
        .into_iter()
        .find(|o| o["qom-type"] == "rng-random")
        .unwrap();
    assert_eq!(rng_backend["filename"], "/dev/urandom");
    assert_eq!(device(&args, "rng0")["rng"], rng_backend["id"]);
    assert_eq!(device(&args, "balloon0")["deflate-on-oom"], true);

    let port = xml_with_vnc("<graphics type='vnc' port='5905' listen='::1'/>");
    assert_eq!(value(&args_tcg(&port), "-vnc"), "[::1]:5");
    let auto = xml_with_vnc("<graphics type='vnc' autoport='yes'/>");
    assert_eq!(value(&args_tcg(&auto), "-vnc"), "127.0.0.1:0,to=99");
}

fn xml_with_vnc(graphics: &str) -> String {
    xml("", graphics)
}

fn args_tcg(xml: &str) -> Vec<String> {
    args_of(xml, Accel::Tcg)
}

#[test]
fn explicit_pci_addresses_come_first() {
    let xml = xml(
        "",
        "<interface type='user'><model type='virtio'/><address type='pci' domain='0' bus='0' slot='9' function='0'/></interface>",
    );
    let args = args_of(&xml, Accel::Tcg);
    let nic = device(&args, "net0");
    assert_eq!(
        (nic["bus"].as_str(), nic["addr"].as_str()),
        (Some("pci.0"), Some("0x9"))
    );
    // Every PCI device the domain crate placed is emitted before anything without an address.
    let devices = json_values(&args, "-device");
    let first_unplaced = devices
        .iter()
        .position(|d| d.get("addr").is_none())
        .unwrap();
    assert!(devices[first_unplaced..]
        .iter()
        .all(|d| d.get("addr").is_none()));
}

#[test]
fn user_strings_cannot_inject_options() {
    let xml = xml("", "").replace("<name>vm1</name>", "<name>vm,debug-threads=off</name>");
    let args = args_of(&xml, Accel::Tcg);
    assert_eq!(
        value(&args, "-name"),
        "guest=vm,,debug-threads=off,debug-threads=on"
    );
    let run = RunPaths::new("/run/a,b");
    let args = command_line(&domain(&xml), &run, Accel::Tcg).unwrap();
    assert!(values(&args, "-chardev")
        .iter()
        .any(|c| c.contains("path=/run/a,,b/qemu/qmp.sock")));
}

#[test]
fn what_the_engine_cannot_do_is_named() {
    let cases = [
        (
            "<memtune><min_guarantee unit='MiB'>64</min_guarantee></memtune>",
            "",
            "memtune/min_guarantee",
        ),
        ("<on_crash>coredump-destroy</on_crash>", "", "on_crash"),
        (
            "<cpu><topology sockets='1' dies='1' clusters='2' cores='1' threads='1'/></cpu>",
            "",
            "cpu/topology@clusters",
        ),
        (
            "",
            "<controller type='usb' index='0' model='ehci'/>",
            "devices/controller[@type='usb'][@index='0']",
        ),
        (
            "",
            "<interface type='user'><model type='ne2k_pci'/></interface>",
            "devices/interface[0]/model@type",
        ),
        (
            "",
            "<serial type='pty'/><serial type='pty'/>",
            "devices/serial[1]",
        ),
        (
            "",
            "<console type='pty'><target type='virtio'/></console>",
            "devices/console[0]/target@type",
        ),
    ];
    for (extra, devices, expected) in cases {
        let (element, reason) = unsupported(&xml(extra, devices));
        assert!(
            element.contains(expected),
            "element {element:?} should name {expected:?} ({reason})"
        );
        assert!(!reason.is_empty());
    }
    // The domain crate accepts x86_64 only today; the engine checks on its own.
    let mut arm = domain(&xml("", ""));
    arm.os.arch = "aarch64".into();
    let err = command_line(&arm, &RunPaths::new(RUN_DIR), Accel::Tcg).unwrap_err();
    assert!(
        matches!(&err, QemuError::Unsupported { element, .. } if element == "os/type@arch"),
        "{err}"
    );
    let mut isapc = domain(&xml("", ""));
    isapc.os.machine = "isapc".into();
    let err = command_line(&isapc, &RunPaths::new(RUN_DIR), Accel::Tcg).unwrap_err();
    assert!(
        matches!(&err, QemuError::Unsupported { element, .. } if element == "os/type@machine"),
        "{err}"
    );
}

#[test]
fn overlong_run_dir_is_rejected() {
    let run = RunPaths::new(format!("/tmp/{}", "d".repeat(110)));
    let err = command_line(&domain(&xml("", "")), &run, Accel::Tcg).unwrap_err();
    assert!(matches!(err, QemuError::Invalid { .. }), "{err}");
}

#[test]
fn on_poweroff_preserve_keeps_qemu_after_poweroff() {
    // libvirt (and so the domain crate) refuses it in XML today; the engine still maps the model.
    let mut preserve = domain(&xml("", ""));
    preserve.on_poweroff = oxvirt_domain::LifecycleAction::Preserve;
    let args = command_line(&preserve, &RunPaths::new(RUN_DIR), Accel::Tcg).unwrap();
    assert!(args.contains(&"-no-shutdown".to_string()));
}

#[test]
fn qcow2_disks_get_exactly_the_backing_chain_the_host_resolved() {
    let disk_xml = xml(
        "",
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
           <source file='/img/top.qcow2'/><target dev='vda' bus='virtio'/></disk>",
    );
    // Nothing resolved: QEMU must not follow a backing file named in the image's header.
    let args = args_of(&disk_xml, Accel::Tcg);
    assert_eq!(blockdev(&args, "drive-vda")["backing"], Value::Null);

    let mut vm = domain(&disk_xml);
    vm.devices.disks[0].backing_chain = vec![
        oxvirt_domain::BackingLayer {
            path: "/img/mid.qcow2".into(),
            format: oxvirt_domain::DiskFormat::Qcow2,
        },
        oxvirt_domain::BackingLayer {
            path: "/img/base.raw".into(),
            format: oxvirt_domain::DiskFormat::Raw,
        },
    ];
    let args = command_line(&vm, &RunPaths::new(RUN_DIR), Accel::Tcg).expect("translation");
    // QEMU resolves a node name when it reads it: the deepest image comes first.
    let nodes: Vec<String> = values(&args, "-blockdev")
        .iter()
        .map(|v| {
            serde_json::from_str::<Value>(v).unwrap()["node-name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        nodes,
        [
            "drive-vda-backing2-file",
            "drive-vda-backing2",
            "drive-vda-backing1-file",
            "drive-vda-backing1",
            "drive-vda-file",
            "drive-vda"
        ]
    );
    assert_eq!(
        blockdev(&args, "drive-vda")["backing"],
        "drive-vda-backing1"
    );
    let mid = blockdev(&args, "drive-vda-backing1");
    assert_eq!(mid["driver"], "qcow2");
    assert_eq!(mid["read-only"], true);
    assert_eq!(mid["backing"], "drive-vda-backing2");
    assert_eq!(mid["cache"]["direct"], true);
    let mid_file = blockdev(&args, "drive-vda-backing1-file");
    assert_eq!(mid_file["filename"], "/img/mid.qcow2");
    assert_eq!(mid_file["read-only"], true);
    let base = blockdev(&args, "drive-vda-backing2");
    assert_eq!(base["driver"], "raw");
    assert!(
        base.get("backing").is_none(),
        "raw nodes take no backing: {base}"
    );
    assert_eq!(
        blockdev(&args, "drive-vda-backing2-file")["filename"],
        "/img/base.raw"
    );

    // A raw image has no backing file; a chain on it is the host's mistake, not silently dropped.
    let mut raw = domain(&xml(
        "",
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/>
           <source file='/img/a.raw'/><target dev='vda' bus='virtio'/></disk>",
    ));
    raw.devices.disks[0].backing_chain = vec![oxvirt_domain::BackingLayer {
        path: "/img/b.raw".into(),
        format: oxvirt_domain::DiskFormat::Raw,
    }];
    match command_line(&raw, &RunPaths::new(RUN_DIR), Accel::Tcg) {
        Err(QemuError::Invalid { element, .. }) => {
            assert!(element.contains("driver@type"), "{element}")
        }
        other => panic!("a backing chain under a raw image: {other:?}"),
    }
}

#[test]
fn network_disks_open_qemu_block_drivers_with_secrets_from_files() {
    let devices = "
      <disk type='network' device='disk'>
        <source protocol='iscsi' name='iqn.2013-07.com.example:store/2'>
          <host name='192.0.2.8'/>
          <auth username='chap'><secret type='iscsi' usage='store'/></auth>
        </source>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='network' device='disk'>
        <source protocol='rbd' name='pool/image'>
          <host name='mon1' port='6321'/><host name='mon2'/>
          <auth username='admin'><secret type='ceph' usage='client.admin'/></auth>
        </source>
        <target dev='vdb' bus='virtio'/>
      </disk>
      <disk type='network' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source protocol='gluster' name='vol/dir/img.qcow2'>
          <host name='g1'/><host transport='unix' socket='/run/glusterd.sock'/>
        </source>
        <target dev='vdc' bus='virtio'/>
      </disk>
      <disk type='network' device='disk'>
        <source protocol='nbd' name='exp'><host name='nbd.example'/></source>
        <target dev='vdd' bus='virtio'/>
      </disk>
      <disk type='network' device='disk'>
        <source protocol='nbd' name='local'><host transport='unix' socket='/run/nbd.sock'/></source>
        <target dev='vde' bus='virtio'/>
      </disk>";
    let args = args_of(&xml("", devices), Accel::Tcg);
    let iscsi = blockdev(&args, "drive-vda-file");
    assert_eq!(iscsi["driver"], "iscsi");
    assert_eq!(iscsi["portal"], "192.0.2.8:3260");
    assert_eq!(iscsi["target"], "iqn.2013-07.com.example:store");
    assert_eq!(iscsi["lun"], 2);
    assert_eq!(iscsi["user"], "chap");
    let secret_id = iscsi["password-secret"].as_str().unwrap();
    let secret = json_values(&args, "-object")
        .into_iter()
        .find(|o| o["id"] == secret_id)
        .expect("the secret object");
    assert_eq!(secret["qom-type"], "secret");
    assert_eq!(secret["file"], format!("{RUN_DIR}/secret-vda"));
    assert!(secret.get("data").is_none(), "a value on the command line");

    let rbd = blockdev(&args, "drive-vdb-file");
    assert_eq!(rbd["pool"], "pool");
    assert_eq!(rbd["image"], "image");
    assert_eq!(
        rbd["server"],
        serde_json::json!([{"host": "mon1", "port": "6321"}, {"host": "mon2"}])
    );
    assert_eq!(
        rbd["auth-client-required"],
        serde_json::json!(["cephx", "none"])
    );
    assert!(rbd["key-secret"].is_string());

    let gluster = blockdev(&args, "drive-vdc-file");
    assert_eq!(gluster["volume"], "vol");
    assert_eq!(gluster["path"], "dir/img.qcow2");
    assert_eq!(gluster["server"][0]["port"], "24007");
    assert_eq!(gluster["server"][1]["type"], "unix");
    // A network qcow2's own backing file is never opened: the host cannot read its header.
    assert_eq!(blockdev(&args, "drive-vdc")["backing"], Value::Null);

    let nbd = blockdev(&args, "drive-vdd-file");
    assert_eq!(
        nbd["server"],
        serde_json::json!({"type": "inet", "host": "nbd.example", "port": "10809"})
    );
    assert_eq!(nbd["export"], "exp");
    // On a Unix socket: the socket launch connects and hands over at 100 + the disk's index,
    // never its path (QEMU may run as a user the socket refuses).
    let local = blockdev(&args, "drive-vde-file");
    assert_eq!(
        local["server"],
        serde_json::json!({"type": "fd", "str": "104"})
    );
    assert_eq!(local["export"], "local");
    assert!(
        !args.iter().any(|a| a.contains("/run/nbd.sock")),
        "{args:?}"
    );
}

#[test]
fn network_disks_qemu_cannot_open_are_refused_naming_the_disk() {
    let two_hosts = "<disk type='network' device='disk'>
        <source protocol='nbd' name='e'><host name='a'/><host name='b'/></source>
        <target dev='vda' bus='virtio'/></disk>";
    let (element, reason) = invalid(&xml("", two_hosts));
    assert_eq!(element, "devices/disk[target@dev='vda']/source");
    assert!(reason.contains("only one <host>"), "{reason}");

    let nbd_auth = "<disk type='network' device='disk'>
        <source protocol='nbd' name='e'><host name='a'/>
          <auth username='u'><secret type='iscsi' usage='x'/></auth></source>
        <target dev='vda' bus='virtio'/></disk>";
    let (element, reason) = unsupported(&xml("", nbd_auth));
    assert_eq!(element, "devices/disk[target@dev='vda']/auth");
    assert!(reason.contains("no user authentication"), "{reason}");

    let wrong_type = "<disk type='network' device='disk'>
        <source protocol='rbd' name='p/i'>
          <auth username='u'><secret type='iscsi' usage='x'/></auth></source>
        <target dev='vda' bus='virtio'/></disk>";
    let (_, reason) = invalid(&xml("", wrong_type));
    assert!(reason.contains("type 'ceph'"), "{reason}");

    let io = "<disk type='network' device='disk'><driver name='qemu' type='raw' io='threads'/>
        <source protocol='http' name='/x'><host name='a'/></source>
        <target dev='vda' bus='virtio'/></disk>";
    let (element, _) = unsupported(&xml("", io));
    assert_eq!(element, "devices/disk[target@dev='vda']/driver@io");
}

#[test]
fn host_devices_are_vfio_pci_and_usb_host_as_libvirt_writes_them() {
    let devices = "
      <hostdev mode='subsystem' type='pci' managed='yes'>
        <source><address domain='0x0000' bus='0x06' slot='0x12' function='0x5'/></source>
        <boot order='1'/><rom bar='off'/>
        <address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/>
      </hostdev>
      <hostdev mode='subsystem' type='usb'>
        <source><vendor id='0x046d'/><product id='0xc52b'/></source>
      </hostdev>
      <hostdev mode='subsystem' type='usb'>
        <source><address bus='1' device='4'/></source>
      </hostdev>";
    let args = args_of(&xml("", devices), Accel::Tcg);
    let vfio = device(&args, "hostdev0");
    assert_eq!(vfio["driver"], "vfio-pci");
    assert_eq!(vfio["host"], "0000:06:12.5");
    assert_eq!(vfio["bootindex"], 1);
    assert_eq!(vfio["rombar"], 0);
    assert_eq!(vfio["addr"], "0x7");
    let by_ids = device(&args, "hostdev1");
    assert_eq!(by_ids["driver"], "usb-host");
    assert_eq!(by_ids["vendorid"], 0x046d);
    assert_eq!(by_ids["productid"], 0xc52b);
    assert_eq!(by_ids["bus"], "usb.0");
    let by_place = device(&args, "hostdev2");
    assert_eq!(
        (by_place["hostbus"].clone(), by_place["hostaddr"].clone()),
        (1.into(), 4.into())
    );
}

/// What virt-install writes for `--graphics spice` on a pc machine (its devices, and the
/// port a start would have picked), as libvirt 9.0 would run it.
#[test]
fn spice_display_with_qxl_sound_agent_channels_and_usb_redirection() {
    let devices = "<controller type='usb' model='qemu-xhci' ports='15'/>
        <channel type='unix'><source mode='bind'/>
          <target type='virtio' name='org.qemu.guest_agent.0'/></channel>
        <channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>
        <graphics type='spice' port='5901' listen='127.0.0.1'><image compression='off'/></graphics>
        <sound model='ich6'/><sound model='ac97'/>
        <video><model type='qxl'/></video>
        <redirdev bus='usb' type='spicevmc'/>";
    let args = args_of(
        &xml(
            "<features><acpi/><vmport state='off'/></features>
             <pm><suspend-to-mem enabled='no'/><suspend-to-disk enabled='no'/></pm>",
            devices,
        ),
        Accel::Tcg,
    );
    assert_eq!(
        value(&args, "-spice"),
        "port=5901,addr=127.0.0.1,disable-ticketing=on,image-compression=off,seamless-migration=on"
    );
    assert!(!args.contains(&"-vnc".to_string()));
    assert_eq!(
        value(&args, "-machine"),
        "pc,usb=off,vmport=off,dump-guest-core=off"
    );
    let globals = values(&args, "-global");
    assert!(
        globals.contains(&"PIIX4_PM.disable_s3=1") && globals.contains(&"PIIX4_PM.disable_s4=1")
    );
    // The default audio backend of a SPICE display is SPICE's (libvirt: <audio type='spice'>).
    assert_eq!(
        json_values(&args, "-audiodev"),
        [serde_json::json!({"id": "audio1", "driver": "spice"})]
    );
    let qxl = device(&args, "video0");
    assert_eq!(qxl["driver"], "qxl-vga");
    assert_eq!(qxl["ram_size"], 67108864);
    assert_eq!(qxl["vram_size"], 67108864);
    assert_eq!(qxl["vgamem_mb"], 16);
    assert_eq!(qxl["max_outputs"], 1);
    assert_eq!(device(&args, "sound0")["driver"], "intel-hda");
    let codec = device(&args, "sound0-codec0");
    assert_eq!(codec["driver"], "hda-duplex");
    assert_eq!(codec["bus"], "sound0.0");
    assert_eq!(codec["audiodev"], "audio1");
    assert_eq!(device(&args, "sound1")["driver"], "AC97");
    assert_eq!(device(&args, "sound1")["audiodev"], "audio1");
    let xhci = device(&args, "usb");
    assert_eq!(
        (xhci["p2"].clone(), xhci["p3"].clone()),
        (15.into(), 15.into())
    );
    // virtio-serial controller added by normalization; channels numbered from port 1.
    assert_eq!(
        device(&args, "virtio-serial0")["driver"],
        "virtio-serial-pci"
    );
    let chardevs = values(&args, "-chardev");
    assert!(chardevs.contains(
        &"socket,id=charchannel0,path=/run/oxvirt/vm/qemu/channel-0.sock,server=on,wait=off"
    ));
    assert!(chardevs.contains(&"spicevmc,id=charchannel1,name=vdagent"));
    assert!(chardevs.contains(&"spicevmc,id=charredir0,name=usbredir"));
    let agent = device(&args, "channel0");
    assert_eq!(agent["driver"], "virtserialport");
    assert_eq!(agent["bus"], "virtio-serial0.0");
    assert_eq!(agent["nr"], 1);
    assert_eq!(agent["name"], "org.qemu.guest_agent.0");
    assert_eq!(device(&args, "channel1")["nr"], 2);
    assert_eq!(device(&args, "channel1")["name"], "com.redhat.spice.0");
    let redir = device(&args, "redir0");
    assert_eq!(redir["driver"], "usb-redir");
    assert_eq!(redir["bus"], "usb.0");
}

#[test]
fn spice_autoport_gets_a_free_port_at_start_and_a_passwordless_spice_none_listens_nowhere() {
    let autoport = domain(&xml(
        "",
        "<graphics type='spice' autoport='yes' listen='127.0.0.1'/>",
    ));
    // Without a picked port the builder refuses (a start picks one first).
    let err = command_line(&autoport, &RunPaths::new(RUN_DIR), Accel::Tcg).unwrap_err();
    assert!(err.to_string().contains("picked at start"), "{err}");
    oxvirt_qemu::check(&autoport).expect("the define-time check pretends a port was picked");
    let picked = oxvirt_qemu::assign_spice_ports(&autoport)
        .expect("a free port")
        .expect("autoport asks for one");
    let args = command_line(&picked, &RunPaths::new(RUN_DIR), Accel::Tcg).expect("translation");
    let spice = value(&args, "-spice");
    let port: u16 = spice
        .strip_prefix("port=")
        .and_then(|rest| rest.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{spice}"));
    assert!(port >= 5900);
    assert!(
        spice.contains(",addr=127.0.0.1,disable-ticketing=on"),
        "{spice}"
    );

    // <graphics type='spice'/> alone: libvirt makes it <listen type='none'/>.
    let none = args_of(&xml("", "<graphics type='spice'/>"), Accel::Tcg);
    assert_eq!(
        value(&none, "-spice"),
        "disable-ticketing=on,seamless-migration=on"
    );
    // A password is set over QMP after start: no ticketing switch-off, no password in argv.
    let secret = args_of(
        &xml("", "<graphics type='spice' port='5902' passwd='s3cret'/>"),
        Accel::Tcg,
    );
    assert_eq!(
        value(&secret, "-spice"),
        "port=5902,addr=127.0.0.1,seamless-migration=on"
    );
    assert!(!secret.iter().any(|a| a.contains("s3cret")));
}

#[test]
fn sound_models_qemu_lacks_are_refused() {
    // (ich7: libvirt 9.0 refuses it at define already, and so does the domain crate.)
    let (element, reason) = unsupported(&xml("", "<sound model='pcspk'/>"));
    assert_eq!(element, "devices/sound[0]@model");
    assert!(reason.contains("ich6"), "{reason}");
    let (element, _) = unsupported(&xml(
        "",
        "<channel type='pty'><target type='virtio' name='org.example.pty'/></channel>",
    ));
    assert_eq!(element, "devices/channel[0]");
}

#[test]
fn uefi_flash_and_nvram_are_libvirts_pflash_nodes() {
    // What firmware::resolve_uefi makes of virt-install's `--boot uefi` on q35, and libvirt's
    // arguments for it (`virsh domxml-to-native`, libvirt 9.0 with Debian's ovmf).
    let os = "<os><type arch='x86_64' machine='q35'>hvm</type>
        <loader readonly='yes' secure='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.ms.fd</loader>
        <nvram template='/usr/share/OVMF/OVMF_VARS_4M.ms.fd'>/var/lib/oxvirt/nvram/vm1_VARS.fd</nvram>
      </os>";
    let q35 = xml("<features><acpi/></features>", "")
        .replace("<os><type arch='x86_64' machine='pc'>hvm</type></os>", os);
    let args = args_of(&q35, Accel::Tcg);
    let blockdevs = json_values(&args, "-blockdev");
    assert_eq!(
        blockdevs[0],
        serde_json::json!({"driver":"file","filename":"/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
            "node-name":"libvirt-pflash0-storage","auto-read-only":true,"discard":"unmap"})
    );
    assert_eq!(
        blockdevs[1],
        serde_json::json!({"node-name":"libvirt-pflash0-format","read-only":true,"driver":"raw",
            "file":"libvirt-pflash0-storage"})
    );
    assert_eq!(
        blockdevs[2]["filename"],
        "/var/lib/oxvirt/nvram/vm1_VARS.fd"
    );
    assert_eq!(blockdevs[3]["read-only"], false);
    let machine = value(&args, "-machine");
    assert!(
        machine.starts_with("q35,usb=off,smm=on,dump-guest-core=off"),
        "{machine}"
    );
    assert!(
        machine.ends_with(",pflash0=libvirt-pflash0-format,pflash1=libvirt-pflash1-format"),
        "{machine}"
    );
    assert!(values(&args, "-global").contains(&"driver=cfi.pflash01,property=secure,value=on"));

    // Unresolved firmware is a start that skipped resolve_uefi; Secure Boot needs q35.
    let efi = xml("<features><acpi/></features>", "").replace("<os>", "<os firmware='efi'>");
    let (element, reason) = invalid(&efi);
    assert_eq!(element, "os/@firmware");
    assert!(reason.contains("not resolved"), "{reason}");
    let secure_pc = xml("<features><acpi/></features>", "").replace(
        "</os>",
        "<loader readonly='yes' secure='yes' type='pflash'>/fw.fd</loader><nvram>/v.fd</nvram></os>",
    );
    let (element, _) = invalid(&secure_pc);
    assert_eq!(element, "os/loader@secure");
    // A ROM loader is -bios.
    let rom = xml("<features><acpi/></features>", "").replace(
        "</os>",
        "<loader type='rom'>/usr/share/seabios/bios.bin</loader></os>",
    );
    assert_eq!(
        value(&args_of(&rom, Accel::Tcg), "-bios"),
        "/usr/share/seabios/bios.bin"
    );
}

/// `<os><smbios mode='sysinfo'>`: the `<sysinfo>` system strings are SMBIOS table 1, as libvirt
/// passes them (commas doubled); without the mode (or with 'emulate') QEMU keeps its own.
#[test]
fn sysinfo_system_strings_become_smbios_type_1() {
    let with_mode = |mode: &str| {
        format!(
            "<domain type='kvm'>
               <name>vm1</name><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
               <memory unit='KiB'>219100</memory>
               <sysinfo type='smbios'><system>
                 <entry name='serial'>ds=nocloud;s=http://h/,x</entry>
                 <entry name='manufacturer'>oxvirt</entry>
               </system></sysinfo>
               <os><type arch='x86_64' machine='pc'>hvm</type>{mode}</os>
               <devices/>
             </domain>"
        )
    };
    let args = args_of(&with_mode("<smbios mode='sysinfo'/>"), Accel::Tcg);
    assert_eq!(
        value(&args, "-smbios"),
        "type=1,manufacturer=oxvirt,serial=ds=nocloud;s=http://h/,,x"
    );
    assert!(values(&args_of(&with_mode(""), Accel::Tcg), "-smbios").is_empty());
    let emulate = with_mode("<smbios mode='emulate'/>");
    assert!(values(&args_of(&emulate, Accel::Tcg), "-smbios").is_empty());
    let (element, reason) = unsupported(&with_mode("<smbios mode='host'/>"));
    assert_eq!(element, "os/smbios");
    assert!(reason.contains("host"), "{reason}");
}

#[test]
fn a_hot_plugged_disk_gets_the_nodes_and_device_of_a_start() {
    for machine in ["pc", "q35"] {
        let text = xml(
            "",
            "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none' io='native'/>\
               <source file='/srv/a.qcow2'/><target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='disk'><driver name='qemu' type='raw'/>\
               <source file='/srv/b.raw'/><target dev='vdb' bus='virtio'/><readonly/></disk>",
        )
        .replace("machine='pc'", &format!("machine='{machine}'"));
        // Normalized as the daemon stores it: every virtio disk has its PCI address.
        let normalized = domain(&domain(&text).to_xml());
        let args = command_line(&normalized, &RunPaths::new(RUN_DIR), Accel::Tcg).unwrap();
        let plug = oxvirt_qemu::hotplug_disk(&normalized, "vdb").unwrap();
        let started: Vec<Value> = json_values(&args, "-blockdev")
            .into_iter()
            .filter(|node| {
                node["node-name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("drive-vdb"))
            })
            .collect();
        assert_eq!(plug.blockdevs, started, "{machine}");
        assert_eq!(plug.device, device(&args, "vdb"), "{machine}");
        assert_eq!(plug.device["driver"], "virtio-blk-pci");
        assert!(plug.device["bus"].is_string(), "{machine}: {}", plug.device);
        assert_eq!(plug.controller, None);
    }
    // SCSI: the disk (and a CD-ROM) at its drive address, and the controller it plugs into,
    // each as a start makes them.
    for machine in ["pc", "q35"] {
        let text = xml(
            "",
            "<controller type='scsi' model='virtio-scsi'/>\
             <disk type='file' device='disk'><source file='/srv/boot.raw'/>\
               <target dev='vda' bus='virtio'/></disk>\
             <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
               <source file='/srv/a.qcow2'/><target dev='sdb' bus='scsi'/></disk>\
             <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
               <source file='/srv/c.iso'/><target dev='sdc' bus='scsi'/></disk>",
        )
        .replace("machine='pc'", &format!("machine='{machine}'"));
        let normalized = domain(&domain(&text).to_xml());
        let args = command_line(&normalized, &RunPaths::new(RUN_DIR), Accel::Tcg).unwrap();
        for (dev, driver) in [("sdb", "scsi-hd"), ("sdc", "scsi-cd")] {
            let plug = oxvirt_qemu::hotplug_disk(&normalized, dev).unwrap();
            assert_eq!(plug.device, device(&args, dev), "{machine}");
            assert_eq!(plug.device["driver"], driver);
            assert_eq!(plug.device["bus"], "scsi0.0");
            assert_eq!(plug.device["drive"], format!("drive-{dev}"));
            assert_eq!(plug.controller, Some(device(&args, "scsi0")), "{machine}");
            assert_eq!(plug.device["lun"], if dev == "sdb" { 1 } else { 2 });
            let controller = plug.controller.unwrap();
            assert_eq!(controller["driver"], "virtio-scsi-pci");
            assert!(controller["bus"].is_string(), "{machine}: {controller}");
        }
    }
    let ide = domain(&xml(
        "",
        "<disk type='file' device='disk'><source file='/srv/c.raw'/><target dev='hdb' bus='ide'/></disk>",
    ));
    let err = oxvirt_qemu::hotplug_disk(&ide, "hdb")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bus 'virtio' or 'scsi'"), "{err}");
}

/// setmaxmem stores a size the XML parser never saw: one whose bytes do not fit in 64 bits is
/// refused by name, not an overflow (found by schemathesis, crates/cli/tests/openapi.rs).
#[test]
fn memory_beyond_64_bits_of_bytes_is_invalid() {
    let mut huge = domain(&xml("", ""));
    huge.memory_kib = 1 << 63;
    huge.current_memory_kib = huge.memory_kib;
    match command_line(&huge, &RunPaths::new(RUN_DIR), Accel::Tcg) {
        Err(QemuError::Invalid {
            element, reason, ..
        }) => {
            assert_eq!(element, "memory");
            assert!(reason.contains("9223372036854775808 KiB"), "{reason}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

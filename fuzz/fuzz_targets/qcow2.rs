//! Opens arbitrary bytes as a disk image (qcow2 when the magic matches) and reads through it.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The library opens paths (it locks and probes files), so go through a per-process file.
    let path = std::env::temp_dir().join(format!("oxvirt-fuzz-qcow2-{}", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        oxvirt_images::fuzzing::read_through(&path);
    }
    // libFuzzer ends its process without running destructors: nothing may be left for later.
    let _ = std::fs::remove_file(&path);
});

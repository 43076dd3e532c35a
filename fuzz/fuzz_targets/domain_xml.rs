//! Fuzzes the way from domain XML to an engine's plan: any bytes must give Ok or a typed error,
//! never a panic, in the parser and in both engines' planners (QEMU's command line, the native
//! VMM's config), which do arithmetic on the numbers a definition holds. Whatever parses must
//! survive a round trip through `to_xml` unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(domain) = oxvirt_domain::parse_domain_xml(text) {
        let xml = domain.to_xml();
        match oxvirt_domain::parse_domain_xml(&xml) {
            Ok(again) => assert_eq!(again, domain, "round trip changed the domain:\n{xml}"),
            Err(e) => panic!("our own output does not parse: {e}\n{xml}"),
        }
        let run = "/run/oxvirt/run/00000000-0000-0000-0000-000000000000";
        for accel in [oxvirt_qemu::Accel::Tcg, oxvirt_qemu::Accel::Kvm] {
            let _ = oxvirt_qemu::build_command_line(&domain, &oxvirt_qemu::RunPaths::new(run), accel);
        }
        let _ = oxvirt_native::plan(&domain, &oxvirt_native::RunPaths::new(run));
        // The define-time checks: the same builders, run dry.
        let _ = oxvirt_qemu::check(&domain);
        let _ = oxvirt_native::check_definition(&domain);
    }
});

//! Fuzzes the domain XML parser: any bytes must give Ok or a typed error, never a panic;
//! whatever parses must survive a round trip through `to_xml` unchanged.
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
    }
});

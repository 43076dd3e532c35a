//! Fuzzes the network XML parser: any bytes must give Ok or a typed error, never a panic;
//! whatever parses must survive a round trip through `to_xml` unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxvirt_net::NetworkDef;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(def) = NetworkDef::from_xml(text) {
        let xml = def.to_xml();
        match NetworkDef::from_xml(&xml) {
            Ok(again) => assert_eq!(again, def, "round trip changed the network:\n{xml}"),
            Err(e) => panic!("our own output does not parse: {e}\n{xml}"),
        }
    }
});

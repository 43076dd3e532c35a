//! Fuzzes the secret XML parser: any bytes must give Ok or a typed error, never a panic; whatever
//! parses must survive a round trip through `to_xml` (the secret-dumpxml form) unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxvirt_domain::secret::SecretDef;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(def) = SecretDef::from_xml(text) {
        let xml = def.to_xml();
        match SecretDef::from_xml(&xml) {
            Ok(again) => assert_eq!(again, def, "round trip changed the secret:\n{xml}"),
            Err(e) => panic!("our own output does not parse: {e}\n{xml}"),
        }
    }
});

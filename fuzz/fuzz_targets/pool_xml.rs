//! Fuzzes the storage pool XML parser: any bytes must give Ok or a typed error, never a panic;
//! whatever parses must survive a round trip through `to_xml` (the pool-dumpxml form) unchanged.
#![no_main]
use libfuzzer_sys::fuzz_target;
use oxvirt_domain::pool::{PoolDef, PoolUsage};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(def) = PoolDef::from_xml(text) {
        let usage = PoolUsage {
            capacity: 3 << 30,
            allocation: 1 << 30,
            available: 2 << 30,
        };
        let xml = def.to_xml(usage);
        match PoolDef::from_xml(&xml) {
            Ok(again) => assert_eq!(again, def, "round trip changed the pool:\n{xml}"),
            Err(e) => panic!("our own output does not parse: {e}\n{xml}"),
        }
    }
});

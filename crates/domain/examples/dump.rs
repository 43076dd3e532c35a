//! Prints the normalized form of a definition: `cargo run -p oxvirt-domain --example dump FILE`.
fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: dump FILE.xml");
        std::process::exit(2);
    };
    let xml = match std::fs::read_to_string(&path) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    match oxvirt_domain::parse_domain_xml(&xml) {
        Ok(d) => print!("{}", d.to_xml()),
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}

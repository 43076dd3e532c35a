//! Embeds the web UI's built files (`web/dist/`, which scripts/setup.sh builds with Vite) in
//! oxvirtd, served by src/api/web.rs: `$OUT_DIR/web_assets.rs` lists each file with its bytes
//! (`include_bytes!`). Without a built UI the list is empty and oxvirtd still builds (its `/`
//! then says how to build it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest.join("../../web");
    let dist = web.join("dist");
    println!("cargo:rerun-if-changed=build.rs");
    // A directory is watched with everything below it: the built files when they are there,
    // else the UI's sources (so the first build of web/dist is noticed); never a path that does
    // not exist, which would rerun this (and rebuild oxvirtd) on every build.
    if dist.is_dir() {
        println!("cargo:rerun-if-changed={}", dist.display());
    } else if web.is_dir() {
        println!("cargo:rerun-if-changed={}", web.display());
    }
    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// The web UI's files: path below web/dist (`/` separated), contents.\n\
         pub static FILES: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &files {
        // Debug formatting of a str is a valid Rust string literal.
        writeln!(
            out,
            "    ({name:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    out.push_str("];\n");
    let target =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("web_assets.rs");
    std::fs::write(&target, out).expect("writing web_assets.rs");
}

/// Every regular file below `dir`, with its path relative to `root`; names that are not UTF-8
/// are left out (no URL could name them).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            collect(root, &path, files);
        } else if kind.is_file() {
            let relative = path.strip_prefix(root).ok().and_then(Path::to_str);
            if let Some(relative) = relative {
                files.push((relative.replace('\\', "/"), path.clone()));
            }
        }
    }
}

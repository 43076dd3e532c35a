//! `io-bench`: the request pattern of `qemu-img bench`, run through `Image::read_at/write_at`,
//! so benches/images.sh can compare the library with QEMU's block layer on the same files.
//!
//! Like qemu-img bench (7.2): request i goes to `(offset + i * step) % virtual_size`; the
//! buffer is filled with `pattern`; writes end with a flush (qemu-img flushes on close).
//! Our API is synchronous, so this is qemu-img bench at queue depth 1 (`-d 1`).
//!
//!   cargo build --release -p oxvirt-images --example io-bench
//!   target/release/examples/io-bench [-w] [-f raw|qcow2] -s 4096 -S STEP -c COUNT FILE

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use oxvirt_images::{parse_size, Format, Image, OpenOptions};

#[derive(Parser, Debug)]
#[command(
    name = "io-bench",
    about = "qemu-img bench's request pattern through oxvirt-images"
)]
struct Args {
    /// Number of requests.
    #[arg(short = 'c', default_value_t = 75000)]
    count: u64,
    /// Image format (probed when absent).
    #[arg(short = 'f')]
    format: Option<Format>,
    /// First request's offset.
    #[arg(short = 'o', default_value = "0", value_parser = size)]
    offset: u64,
    /// Request size.
    #[arg(short = 's', default_value = "4096", value_parser = size)]
    buffer_size: u64,
    /// Distance between the offsets of consecutive requests (default: the request size).
    #[arg(short = 'S', value_parser = size)]
    step: Option<u64>,
    /// Write instead of read.
    #[arg(short = 'w')]
    write: bool,
    /// Byte written by write requests.
    #[arg(long, default_value_t = 0xa5)]
    pattern: u8,
    file: PathBuf,
}

fn size(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let options = OpenOptions {
        format: args.format,
        write: args.write,
        ..OpenOptions::default()
    };
    let mut image = Image::open(&args.file, &options)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let image_size = image.virtual_size();
    if args.buffer_size == 0 || args.buffer_size > image_size {
        bail!(
            "request size {} must be between 1 and the image size {image_size}",
            args.buffer_size
        );
    }
    let step = args.step.unwrap_or(args.buffer_size);
    let mut buffer = vec![args.pattern; args.buffer_size as usize];

    let start = Instant::now();
    let mut offset = args.offset;
    for _ in 0..args.count {
        if args.write {
            image.write_at(&buffer, offset)?;
        } else {
            image.read_at(&mut buffer, offset)?;
        }
        offset = (offset + step) % image_size;
    }
    if args.write {
        image.flush()?;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "Sending {} {} requests, {} bytes each, step {step}: run completed in {seconds:.3} seconds.",
        args.count,
        if args.write { "write" } else { "read" },
        args.buffer_size
    );
    Ok(())
}

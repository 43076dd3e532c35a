//! Direct kernel boot on x86-64: load a bzImage (or an ELF vmlinux) and its initrd, write the Linux zero
//! page with the e820 map and command line, and build the identity page tables and GDT the 64-bit entry
//! point expects. The boot CPU's registers come from [`BootCpuState`].

use std::fs::File;
use std::path::Path;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{load_cmdline, BzImage, Cmdline, Elf, KernelLoader};
use oxvirt_virtio::GuestRam;
use vm_memory::{Address, Bytes, GuestAddress};

use crate::layout::{self, E820Kind};

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("cannot open kernel {path}: {source}")]
    OpenKernel {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a Linux kernel (neither a bzImage nor a 64-bit ELF vmlinux)")]
    NotAKernel { path: String },
    #[error("cannot load kernel {path} into guest memory: {reason}")]
    LoadKernel { path: String, reason: String },
    #[error("cannot read initrd {path}: {source}")]
    ReadInitrd {
        path: String,
        source: std::io::Error,
    },
    #[error("initrd {path} ({size_mib} MiB) does not fit in guest memory next to the kernel")]
    InitrdTooBig { path: String, size_mib: u64 },
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    #[error("cannot write boot structures to guest memory: {0}")]
    Memory(String),
}

/// Where the boot CPU starts.
#[derive(Clone, Copy, Debug)]
pub struct KernelEntry {
    pub entry: u64,
}

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT: u32 = 0x100_0000;
/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// The kernel and initrd, opened (before the jail: `crate::resources`), with their paths for
/// messages.
pub struct BootFiles {
    kernel: File,
    kernel_path: String,
    initrd: Option<(File, String)>,
}

impl BootFiles {
    pub fn open(kernel: &Path, initrd: Option<&Path>) -> Result<BootFiles, BootError> {
        let kernel_path = kernel.display().to_string();
        let kernel = File::open(kernel).map_err(|source| BootError::OpenKernel {
            path: kernel_path.clone(),
            source,
        })?;
        let initrd = match initrd {
            Some(path) => {
                let name = path.display().to_string();
                let file = File::open(path).map_err(|source| BootError::ReadInitrd {
                    path: name.clone(),
                    source,
                })?;
                Some((file, name))
            }
            None => None,
        };
        Ok(BootFiles {
            kernel,
            kernel_path,
            initrd,
        })
    }
}

/// Loads the kernel and initrd, writes the command line, zero page and page tables.
pub fn load_linux(
    mem: &GuestRam,
    files: BootFiles,
    cmdline: &str,
    mem_size: u64,
    rsdp_addr: u64,
) -> Result<KernelEntry, BootError> {
    let BootFiles {
        mut kernel,
        kernel_path: kpath,
        initrd,
    } = files;

    // A bzImage carries a setup header we must pass on; an ELF vmlinux does not.
    let (entry, mut header) = match BzImage::load(
        mem,
        None,
        &mut kernel,
        Some(GuestAddress(layout::HIGH_RAM_START)),
    ) {
        Ok(result) => {
            let header = result.setup_header.ok_or_else(|| BootError::NotAKernel {
                path: kpath.clone(),
            })?;
            (
                result.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET,
                header,
            )
        }
        Err(linux_loader::loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::InvalidBzImage,
        )) => {
            match Elf::load(
                mem,
                None,
                &mut kernel,
                Some(GuestAddress(layout::HIGH_RAM_START)),
            ) {
                Ok(result) => {
                    let header = linux_loader::loader::bootparam::setup_header {
                        boot_flag: KERNEL_BOOT_FLAG_MAGIC,
                        header: KERNEL_HDR_MAGIC,
                        kernel_alignment: KERNEL_MIN_ALIGNMENT,
                        ..Default::default()
                    };
                    (result.kernel_load.raw_value(), header)
                }
                Err(linux_loader::loader::Error::Elf(
                    linux_loader::loader::elf::Error::InvalidElfMagicNumber
                    | linux_loader::loader::elf::Error::ReadElfHeader
                    | linux_loader::loader::elf::Error::BigEndianElfOnLittle,
                )) => return Err(BootError::NotAKernel { path: kpath }),
                Err(e) => {
                    return Err(BootError::LoadKernel {
                        path: kpath,
                        reason: e.to_string(),
                    })
                }
            }
        }
        Err(linux_loader::loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::ReadBzImageHeader
            | linux_loader::loader::bzimage::Error::SeekBzImageHeader
            | linux_loader::loader::bzimage::Error::Underflow,
        )) => return Err(BootError::NotAKernel { path: kpath }),
        Err(e) => {
            return Err(BootError::LoadKernel {
                path: kpath,
                reason: e.to_string(),
            })
        }
    };

    let mut cl =
        Cmdline::new(layout::CMDLINE_MAX_SIZE).map_err(|e| BootError::Cmdline(e.to_string()))?;
    cl.insert_str(cmdline)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;
    load_cmdline(mem, GuestAddress(layout::CMDLINE_START), &cl)
        .map_err(|e| BootError::Cmdline(e.to_string()))?;

    header.type_of_loader = KERNEL_LOADER_OTHER;
    header.cmd_line_ptr = layout::CMDLINE_START as u32;
    header.cmdline_size = cmdline.len() as u32 + 1;

    if let Some((initrd, initrd_path)) = initrd {
        let (addr, size) =
            load_initrd(mem, initrd, &initrd_path, mem_size, header.initrd_addr_max)?;
        header.ramdisk_image = addr as u32;
        header.ramdisk_size = size as u32;
    }

    let mut params = boot_params {
        hdr: header,
        acpi_rsdp_addr: rsdp_addr,
        ..Default::default()
    };
    let e820 = layout::e820_map(mem_size);
    for (slot, e) in params.e820_table.iter_mut().zip(e820.iter()) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: match e.kind {
                E820Kind::Ram => 1,
                E820Kind::Reserved => 2,
            },
        };
    }
    params.e820_entries = e820.len() as u8;
    LinuxBootConfigurator::write_bootparams::<GuestRam>(
        &BootParams::new::<boot_params>(&params, GuestAddress(layout::ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| BootError::Memory(e.to_string()))?;

    write_page_tables(mem)?;
    write_gdt(mem)?;
    Ok(KernelEntry { entry })
}

/// Puts the initrd at the top of low RAM (below the MMIO hole and the kernel's `initrd_addr_max`).
fn load_initrd(
    mem: &GuestRam,
    mut file: File,
    path: &str,
    mem_size: u64,
    addr_max: u32,
) -> Result<(u64, u64), BootError> {
    let p = path.to_string();
    let size = file
        .metadata()
        .map_err(|source| BootError::ReadInitrd {
            path: p.clone(),
            source,
        })?
        .len();
    let low_end = mem_size.min(layout::MMIO_HOLE_START);
    let limit = if addr_max == 0 {
        0x37ff_ffff
    } else {
        u64::from(addr_max)
    };
    let top = low_end.min(limit + 1);
    // Keep the first 64 MiB for the kernel to decompress into.
    let addr = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= 64 << 20);
    let addr = addr.ok_or(BootError::InitrdTooBig {
        path: p.clone(),
        size_mib: size >> 20,
    })?;
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| BootError::ReadInitrd {
            path: p,
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok((addr, size))
}

/// Identity-maps the first 4 GiB with 2 MiB pages.
fn write_page_tables(mem: &GuestRam) -> Result<(), BootError> {
    let w = |v: u64, a: u64| {
        mem.write_obj(v, GuestAddress(a))
            .map_err(|e| BootError::Memory(e.to_string()))
    };
    w(layout::PDPTE_START | 0x3, layout::PML4_START)?;
    for gib in 0..4u64 {
        let pd = layout::PDE_START + gib * 0x1000;
        w(pd | 0x3, layout::PDPTE_START + gib * 8)?;
        for i in 0..512u64 {
            // Present, writable, 2 MiB page.
            w(((gib << 30) + (i << 21)) | 0x83, pd + i * 8)?;
        }
    }
    Ok(())
}

/// x86 segment descriptor from access flags (low byte: access byte; bits 12..15: AVL, L, D/B, G), base, limit.
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | (limit & 0x0000_ffff)
}

/// KVM's view of the segment a descriptor describes.
pub fn segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let mut limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    if g == 1 {
        limit = (limit << 12) | 0xfff;
    }
    kvm_segment {
        base,
        limit,
        selector: u16::from(table_index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 1 { 0 } else { 1 },
        padding: 0,
    }
}

/// The boot GDT: null, 64-bit code, data, TSS.
pub fn boot_gdt() -> [u64; 4] {
    [
        gdt_entry(0, 0, 0),
        gdt_entry(0xa09b, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

fn write_gdt(mem: &GuestRam) -> Result<(), BootError> {
    for (i, e) in boot_gdt().iter().enumerate() {
        mem.write_obj(*e, GuestAddress(layout::BOOT_GDT_START + i as u64 * 8))
            .map_err(|e| BootError::Memory(e.to_string()))?;
    }
    mem.write_obj(0u64, GuestAddress(layout::BOOT_IDT_START))
        .map_err(|e| BootError::Memory(e.to_string()))
}

/// Register state of the boot CPU at the kernel's 64-bit entry point.
pub struct BootCpuState;

impl BootCpuState {
    pub fn regs(entry: KernelEntry) -> kvm_regs {
        kvm_regs {
            rflags: 0x2,
            rip: entry.entry,
            rsp: layout::BOOT_STACK_POINTER,
            rbp: layout::BOOT_STACK_POINTER,
            rsi: layout::ZERO_PAGE_START,
            ..Default::default()
        }
    }

    /// Long mode with paging on, flat segments from the boot GDT.
    pub fn sregs(mut sregs: kvm_sregs) -> kvm_sregs {
        let gdt = boot_gdt();
        let code = segment_from_gdt(gdt[1], 1);
        let data = segment_from_gdt(gdt[2], 2);
        let tss = segment_from_gdt(gdt[3], 3);
        sregs.gdt.base = layout::BOOT_GDT_START;
        sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
        sregs.idt.base = layout::BOOT_IDT_START;
        sregs.idt.limit = 7;
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = tss;
        const CR0_PE: u64 = 1;
        const CR0_ET: u64 = 1 << 4;
        const CR0_PG: u64 = 1 << 31;
        const CR4_PAE: u64 = 1 << 5;
        const EFER_LME: u64 = 1 << 8;
        const EFER_LMA: u64 = 1 << 10;
        sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
        sregs.cr3 = layout::PML4_START;
        sregs.cr4 |= CR4_PAE;
        sregs.efer |= EFER_LME | EFER_LMA;
        sregs
    }

    pub fn fpu() -> kvm_fpu {
        kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{create_guest_memory, MemoryOptions};

    #[test]
    fn gdt_entries_decode_to_flat_long_mode_segments() {
        let gdt = boot_gdt();
        let code = segment_from_gdt(gdt[1], 1);
        assert_eq!(
            (
                code.base,
                code.limit,
                code.l,
                code.db,
                code.present,
                code.selector
            ),
            (0, 0xffff_ffff, 1, 0, 1, 8)
        );
        let data = segment_from_gdt(gdt[2], 2);
        assert_eq!((data.type_, data.db, data.s, data.selector), (3, 1, 1, 16));
    }

    #[test]
    fn rejects_a_file_that_is_not_a_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-kernel");
        std::fs::write(&path, vec![0x5au8; 64 * 1024]).unwrap();
        let mem = create_guest_memory(64, MemoryOptions::default()).unwrap();
        let files = BootFiles::open(&path, None).unwrap();
        let err = load_linux(&mem, files, "console=ttyS0", 64 << 20, 0).unwrap_err();
        assert!(matches!(err, BootError::NotAKernel { .. }), "{err}");
    }

    #[test]
    fn missing_kernel_is_reported_with_its_path() {
        let Err(err) = BootFiles::open(Path::new("/nonexistent/vmlinuz"), None) else {
            panic!("a missing kernel opened");
        };
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
    }
}

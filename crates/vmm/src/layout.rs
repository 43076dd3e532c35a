//! Guest physical address map (x86-64) and the e820 table derived from it.
//!
//! ```text
//! 0x0000_0000  low RAM (real-mode area, boot structures at fixed addresses below)
//! 0x0009_fc00  EBDA / legacy hole (reserved in e820)
//! 0x000e_0000  ACPI tables (RSDP first, where Linux also scans for it)
//! 0x0010_0000  RAM: kernel at 1 MiB, initrd at the top of low RAM
//! 0xc000_0000  32-bit MMIO hole: PCI BARs, then MMCONFIG, IOAPIC, LAPIC
//! 0x1_0000_0000 RAM above 4 GiB when the guest has more than 3 GiB
//! ```

/// GDT used for the 64-bit entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// An empty IDT (the kernel installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// Stack pointer for the boot CPU's first instructions.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// The Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Identity-mapping page tables: PML4, PDPT, then four page directories (first 4 GiB, 2 MiB pages).
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// End of usable low memory (start of the EBDA).
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables region (inside the reserved legacy area, backed by guest RAM).
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x100000;
/// Where bzImage kernels are loaded.
pub const HIGH_RAM_START: u64 = 0x100000;

/// Start of the 32-bit MMIO hole; RAM stops here and resumes at 4 GiB.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// PCI BARs are placed in [PCI_MMIO_START, PCI_MMIO_END).
pub const PCI_MMIO_START: u64 = 0xc000_0000;
pub const PCI_MMIO_END: u64 = 0xe000_0000;
/// PCI Express enhanced configuration (MMCONFIG / ECAM) for bus 0 only: 32 devices x 8 functions x 4 KiB.
pub const PCI_MMCONFIG_START: u64 = 0xe000_0000;
pub const PCI_MMCONFIG_SIZE: u64 = 1 << 20;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const LAPIC_START: u64 = 0xfee0_0000;
pub const FOUR_GIB: u64 = 1 << 32;

/// ACPI fixed-hardware I/O ports (FADT): PM1a event block (status+enable), PM1a control block.
pub const PM1_EVENT_PORT: u16 = 0x600;
pub const PM1_EVENT_LEN: u8 = 4;
pub const PM1_CONTROL_PORT: u16 = 0x604;
pub const PM1_CONTROL_LEN: u8 = 2;
/// ACPI SCI interrupt (ISA IRQ 9, level-triggered active high, announced by a MADT override).
pub const SCI_IRQ: u32 = 9;
/// COM1.
pub const SERIAL_PORT: u16 = 0x3f8;
pub const SERIAL_IRQ: u32 = 4;
/// i8042 keyboard controller (data 0x60, command/status 0x64).
pub const I8042_PORT: u16 = 0x60;
/// CMOS / RTC index and data ports.
pub const CMOS_PORT: u16 = 0x70;
/// PCI configuration mechanism #1.
pub const PCI_CONFIG_ADDRESS_PORT: u16 = 0xcf8;

/// One e820 entry type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum E820Kind {
    Ram = 1,
    Reserved = 2,
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: E820Kind,
}

/// Guest RAM ranges (address, size) for `mem_size` bytes: one range below the MMIO hole and, when needed,
/// the rest above 4 GiB.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(0, mem_size)]
    } else {
        vec![(0, MMIO_HOLE_START), (FOUR_GIB, mem_size - MMIO_HOLE_START)]
    }
}

/// The e820 map the guest sees: low RAM up to the EBDA, the legacy area reserved (it holds the ACPI tables),
/// RAM from 1 MiB, the MMCONFIG window reserved (Linux wants it in e820 before trusting MCFG), and high RAM.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIGH_RAM_START - EBDA_START,
            kind: E820Kind::Reserved,
        },
    ];
    for (addr, size) in ram_ranges(mem_size) {
        let (addr, size) = if addr == 0 {
            (HIGH_RAM_START, size - HIGH_RAM_START)
        } else {
            (addr, size)
        };
        map.push(E820Entry {
            addr,
            size,
            kind: E820Kind::Ram,
        });
    }
    map.push(E820Entry {
        addr: PCI_MMCONFIG_START,
        size: PCI_MMCONFIG_SIZE,
        kind: E820Kind::Reserved,
    });
    map.sort_by_key(|e| e.addr);
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_ram_range_below_the_hole() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
    }

    #[test]
    fn big_guest_splits_around_the_mmio_hole() {
        let ranges = ram_ranges(4 << 30);
        assert_eq!(
            ranges,
            vec![
                (0, MMIO_HOLE_START),
                (FOUR_GIB, (4 << 30) - MMIO_HOLE_START)
            ]
        );
    }

    #[test]
    fn e820_never_reports_ram_in_the_hole_or_legacy_area() {
        for mem in [64u64 << 20, 3 << 30, 5 << 30] {
            let total: u64 = e820_map(mem)
                .iter()
                .filter(|e| e.kind == E820Kind::Ram)
                .map(|e| e.size)
                .sum();
            assert_eq!(total, mem - (HIGH_RAM_START - EBDA_START));
            for e in e820_map(mem).iter().filter(|e| e.kind == E820Kind::Ram) {
                assert!(e.addr + e.size <= MMIO_HOLE_START || e.addr >= FOUR_GIB);
                assert!(e.addr + e.size <= EBDA_START || e.addr >= HIGH_RAM_START);
            }
        }
    }
}

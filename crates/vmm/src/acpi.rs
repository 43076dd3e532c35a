//! ACPI tables for the guest: RSDP, XSDT, FADT (+FACS), DSDT, MADT and MCFG.
//!
//! The guest kernel has no MP-table parser, so the MADT is the only description of the CPUs and the
//! interrupt controllers. Power management uses ACPI fixed hardware (see [`crate::devices::pm`]): the FADT
//! points at the PM1a event/control blocks, SCI is ISA IRQ 9, the power button is the fixed-feature button,
//! and `\_S5` lets the guest power off by writing SLP_TYP/SLP_EN.

use acpi_tables::aml::{
    self, AddressSpace, AddressSpaceCacheable, Device, EISAName, Name, Package, ResourceTemplate,
};
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use oxvirt_virtio::GuestRam;
use vm_memory::{Bytes, GuestAddress};

use crate::layout;

const OEM_ID: [u8; 6] = *b"OXVIRT";
const OEM_TABLE_ID: [u8; 8] = *b"OXVIRTVM";
const OEM_REVISION: u32 = 1;
/// SLP_TYP value announced in `\_S5` and recognised by the PM control register.
pub const S5_SLEEP_TYPE: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("ACPI tables ({size} bytes) do not fit in the {room}-byte legacy area")]
    TooBig { size: u64, room: u64 },
    #[error("cannot write ACPI tables to guest memory: {0}")]
    Memory(String),
}

/// What the tables describe.
pub struct AcpiConfig {
    /// Local APIC id of each vCPU, in vCPU order.
    pub apic_ids: Vec<u8>,
}

/// The tables as (address, bytes) blobs, ready to copy into guest memory.
pub struct AcpiTables {
    pub rsdp_addr: u64,
    pub blobs: Vec<(u64, Vec<u8>)>,
}

fn bytes_of(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

/// Builds every table, laid out from [`layout::ACPI_START`].
pub fn build_tables(config: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    let mut next = layout::ACPI_START;
    let mut place = |len: usize, align: u64| {
        let addr = next.div_ceil(align) * align;
        next = addr + len as u64;
        addr
    };

    let rsdp_addr = place(Rsdp::len(), 16);
    let dsdt = dsdt();
    let dsdt_addr = place(dsdt.len(), 8);
    let facs = bytes_of(&FACS::new());
    let facs_addr = place(facs.len(), 64);
    let fadt = fadt(dsdt_addr, facs_addr);
    let fadt_addr = place(fadt.len(), 8);
    let madt = madt(&config.apic_ids);
    let madt_addr = place(madt.len(), 8);
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(layout::PCI_MMCONFIG_START, 0, 0, 0);
    let mcfg = bytes_of(&mcfg);
    let mcfg_addr = place(mcfg.len(), 8);

    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for addr in [fadt_addr, madt_addr, mcfg_addr] {
        xsdt.add_entry(addr);
    }
    let xsdt = bytes_of(&xsdt);
    let xsdt_addr = place(xsdt.len(), 8);
    let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));

    if next > layout::ACPI_END {
        return Err(AcpiError::TooBig {
            size: next - layout::ACPI_START,
            room: layout::ACPI_END - layout::ACPI_START,
        });
    }
    Ok(AcpiTables {
        rsdp_addr,
        blobs: vec![
            (rsdp_addr, rsdp),
            (dsdt_addr, dsdt),
            (facs_addr, facs),
            (fadt_addr, fadt),
            (madt_addr, madt),
            (mcfg_addr, mcfg),
            (xsdt_addr, xsdt),
        ],
    })
}

/// Copies the tables into guest memory; returns the RSDP address.
pub fn write_tables(mem: &GuestRam, config: &AcpiConfig) -> Result<u64, AcpiError> {
    let tables = build_tables(config)?;
    for (addr, blob) in &tables.blobs {
        mem.write_slice(blob, GuestAddress(*addr))
            .map_err(|e| AcpiError::Memory(e.to_string()))?;
    }
    Ok(tables.rsdp_addr)
}

fn fadt(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_32(dsdt_addr as u32)
        .firmware_ctrl_32(facs_addr as u32)
        .preferred_pm_profile(PmProfile::EnterpriseServer)
        // SLP_BUTTON set: no fixed sleep button. PWR_BUTTON clear: the power button is the fixed-feature one.
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    fadt.sci_int = (layout::SCI_IRQ as u16).into();
    // SMI_CMD = 0: the platform is always in ACPI mode (PM1 control reads SCI_EN = 1).
    fadt.pm1a_evt_blk = u32::from(layout::PM1_EVENT_PORT).into();
    fadt.pm1_evt_len = layout::PM1_EVENT_LEN;
    fadt.pm1a_cnt_blk = u32::from(layout::PM1_CONTROL_PORT).into();
    fadt.pm1_cnt_len = layout::PM1_CONTROL_LEN;
    // Reset register: writing 0x06 to port 0xcf9 (the classic reset control port) resets the VM.
    fadt.reset_reg = acpi_tables::gas::GAS::new(
        acpi_tables::gas::AddressSpace::SystemIo,
        8,
        0,
        acpi_tables::gas::AccessSize::ByteAccess,
        0xcf9,
    );
    fadt.reset_value = 0x06;
    // IA-PC boot flags: no VGA (bit 2); no 8042 announced (the controller only serves reset).
    fadt.iapc_boot_arch = (1u16 << 2).into();
    bytes_of(&fadt.finalize())
}

fn dsdt() -> Vec<u8> {
    let mut body = Vec::new();
    let s5 = Package::new(vec![&S5_SLEEP_TYPE, &S5_SLEEP_TYPE, &0u8, &0u8]);
    Name::new("_S5_".into(), &s5).to_aml_bytes(&mut body);

    let bus = AddressSpace::new_bus_number(0u16, 0u16);
    let config_ports = aml::IO::new(
        layout::PCI_CONFIG_ADDRESS_PORT,
        layout::PCI_CONFIG_ADDRESS_PORT,
        1,
        8,
    );
    let io_low = AddressSpace::new_io(0u16, layout::PCI_CONFIG_ADDRESS_PORT - 1, None);
    let io_high = AddressSpace::new_io(0x0d00u16, 0xffffu16, None);
    let mmio = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        layout::PCI_MMIO_START as u32,
        (layout::PCI_MMIO_END - 1) as u32,
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &config_ports, &io_low, &io_high, &mmio]);
    let hid = EISAName::new("PNP0A08");
    let cid = EISAName::new("PNP0A03");
    let (hid, cid, adr, seg, uid, bbn, crs) = (
        Name::new("_HID".into(), &hid),
        Name::new("_CID".into(), &cid),
        Name::new("_ADR".into(), &0u8),
        Name::new("_SEG".into(), &0u8),
        Name::new("_UID".into(), &0u8),
        Name::new("_BBN".into(), &0u8),
        Name::new("_CRS".into(), &crs),
    );
    Device::new(
        "_SB_.PCI0".into(),
        vec![&hid, &cid, &adr, &seg, &uid, &bbn, &crs],
    )
    .to_aml_bytes(&mut body);

    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// MADT: one local APIC per vCPU, the IOAPIC, and the SCI's level/active-high override.
fn madt(apic_ids: &[u8]) -> Vec<u8> {
    const PCAT_COMPAT: u32 = 1;
    let mut body = Vec::new();
    body.extend_from_slice(&(layout::LAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    for (uid, apic_id) in apic_ids.iter().enumerate() {
        // Type 0 (processor local APIC), length 8, ACPI processor UID, APIC id, flags = enabled.
        body.extend_from_slice(&[0, 8, uid as u8, *apic_id]);
        body.extend_from_slice(&1u32.to_le_bytes());
    }
    // Type 1 (IOAPIC), length 12, id 0, reserved, address, GSI base 0.
    body.extend_from_slice(&[1, 12, 0, 0]);
    body.extend_from_slice(&(layout::IOAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Type 2 (interrupt source override), length 10, bus 0 (ISA), source IRQ, GSI, flags.
    // The SCI: active high (polarity 01), level-triggered (trigger mode 11).
    body.extend_from_slice(&[2, 10, 0, layout::SCI_IRQ as u8]);
    body.extend_from_slice(&layout::SCI_IRQ.to_le_bytes());
    body.extend_from_slice(&0x000du16.to_le_bytes());
    // Type 4 (local APIC NMI): LINT1 of every processor (UID 0xff) is NMI, flags default.
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);

    let mut madt = Sdt::new(*b"APIC", 36, 4, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    madt.append_slice(&body);
    madt.as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(table: &[u8]) -> bool {
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    #[test]
    fn tables_fit_and_have_valid_checksums() {
        let tables = build_tables(&AcpiConfig {
            apic_ids: (0..8).collect(),
        })
        .unwrap();
        assert_eq!(tables.rsdp_addr, layout::ACPI_START);
        for (addr, blob) in &tables.blobs {
            assert!(*addr >= layout::ACPI_START && addr + blob.len() as u64 <= layout::ACPI_END);
            if &blob[0..4] == b"FACS" {
                // The FACS has no checksum.
                continue;
            }
            if &blob[0..8] == b"RSD PTR " {
                assert!(checksum_ok(&blob[0..20]));
                assert!(checksum_ok(blob));
            } else {
                assert!(
                    checksum_ok(blob),
                    "bad checksum in {:?}",
                    String::from_utf8_lossy(&blob[0..4])
                );
                let len = u32::from_le_bytes(blob[4..8].try_into().unwrap()) as usize;
                assert_eq!(len, blob.len());
            }
        }
    }

    #[test]
    fn madt_lists_every_vcpu() {
        let madt = madt(&[0, 1, 2]);
        let lapics = madt[44..]
            .chunks(8)
            .take(3)
            .filter(|e| e[0] == 0 && e[1] == 8)
            .count();
        assert_eq!(lapics, 3);
        assert_eq!(madt[44 + 3], 0);
        assert_eq!(madt[44 + 8 + 3], 1);
    }

    #[test]
    fn dsdt_declares_s5_and_the_pci_root() {
        let dsdt = dsdt();
        let find = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
        assert!(find(b"_S5_"));
        assert!(find(b"PCI0"));
    }
}

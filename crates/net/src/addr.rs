//! Small value types shared by the XML model and the runtime: IPv4 subnets and MAC addresses.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 subnet: a network address and a prefix length (the host bits of `network` are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet of prefix length `prefix` (0..=32) containing `address`; `None` if the prefix is out of range.
    pub fn containing(address: Ipv4Addr, prefix: u8) -> Option<Ipv4Subnet> {
        let mask = prefix_to_mask(prefix)?;
        Some(Ipv4Subnet {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix,
        })
    }

    /// The /32 holding just `address`.
    pub fn single(address: Ipv4Addr) -> Ipv4Subnet {
        Ipv4Subnet {
            network: address,
            prefix: 32,
        }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_to_mask(self.prefix).unwrap_or(u32::MAX))
    }

    /// The directed broadcast address (the last address of the subnet).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !u32::from(self.netmask()))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & u32::from(self.netmask()) == u32::from(self.network)
    }

    /// Whether the two subnets share at least one address.
    pub fn overlaps(&self, other: &Ipv4Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// Whether `address` is a usable host address of the subnet (not the network or broadcast address; for /31
    /// and /32 every address is usable).
    pub fn is_host_address(&self, address: Ipv4Addr) -> bool {
        self.contains(address)
            && (self.prefix >= 31 || (address != self.network && address != self.broadcast()))
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// `prefix` → netmask as a number; `None` for a prefix above 32.
pub fn prefix_to_mask(prefix: u8) -> Option<u32> {
    match prefix {
        0 => Some(0),
        1..=32 => Some(u32::MAX << (32 - u32::from(prefix))),
        _ => None,
    }
}

/// A netmask → its prefix length; `None` if the mask's one bits are not contiguous.
pub fn mask_to_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0).then_some(prefix as u8)
}

/// A 48-bit Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random locally chosen address under QEMU's/libvirt's 52:54:00 prefix.
    pub fn random_qemu() -> MacAddr {
        let random = uuid::Uuid::new_v4();
        let bytes = random.as_bytes();
        MacAddr([0x52, 0x54, 0x00, bytes[0], bytes[1], bytes[2]])
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = ();

    /// Parses `aa:bb:cc:dd:ee:ff` (hex digits of either case).
    fn from_str(text: &str) -> Result<MacAddr, ()> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or(())?;
            if part.len() != 2 {
                return Err(());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| ())?;
        }
        if parts.next().is_some() {
            return Err(());
        }
        Ok(MacAddr(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_arithmetic() {
        let s = Ipv4Subnet::containing(Ipv4Addr::new(192, 168, 122, 1), 24).unwrap();
        assert_eq!(s.to_string(), "192.168.122.0/24");
        assert_eq!(s.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(s.broadcast(), Ipv4Addr::new(192, 168, 122, 255));
        assert!(s.is_host_address(Ipv4Addr::new(192, 168, 122, 254)));
        assert!(!s.is_host_address(Ipv4Addr::new(192, 168, 122, 255)));
        assert!(!s.contains(Ipv4Addr::new(192, 168, 123, 1)));
        let wide = Ipv4Subnet::containing(Ipv4Addr::new(192, 168, 0, 0), 16).unwrap();
        assert!(wide.overlaps(&s) && s.overlaps(&wide));
        assert!(Ipv4Subnet::containing(Ipv4Addr::LOCALHOST, 33).is_none());
    }

    #[test]
    fn masks_and_macs() {
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_to_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        let mac: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:0f");
        assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
        assert!("52:54:00:ab:cd:0f:00".parse::<MacAddr>().is_err());
        assert!(MacAddr::random_qemu().to_string().starts_with("52:54:00:"));
    }
}

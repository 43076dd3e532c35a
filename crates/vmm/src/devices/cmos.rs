//! MC146818 RTC / CMOS: the wall-clock registers Linux reads at boot, from the host's UTC time.

use std::time::{SystemTime, UNIX_EPOCH};

use super::PioDevice;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// The CMOS's saved state: the index register and the RAM (the clock registers come from the host's
/// time whenever they are read).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CmosState {
    index: u8,
    ram: Vec<u8>,
}

/// Ports 0x70 (index; bit 7 is the NMI mask) and 0x71 (data).
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    now: fn() -> u64,
}

impl Default for Cmos {
    fn default() -> Self {
        Self::with_clock(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
    }
}

fn bcd(v: u64) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Cmos {
    pub fn with_clock(now: fn() -> u64) -> Self {
        Cmos {
            index: 0,
            ram: [0; 128],
            now,
        }
    }

    pub fn state(&self) -> CmosState {
        CmosState {
            index: self.index,
            ram: self.ram.to_vec(),
        }
    }

    pub fn restore(&mut self, state: &CmosState) -> Result<(), String> {
        self.ram = state.ram.as_slice().try_into().map_err(|_| {
            format!(
                "the saved CMOS RAM has {} bytes, expected {}",
                state.ram.len(),
                self.ram.len()
            )
        })?;
        self.index = state.index;
        Ok(())
    }

    fn register(&self, reg: u8) -> u8 {
        let t = (self.now)();
        let days = (t / 86_400) as i64;
        let secs = t % 86_400;
        let (year, month, day) = civil_from_days(days);
        match reg {
            REG_SECONDS => bcd(secs % 60),
            REG_MINUTES => bcd(secs / 60 % 60),
            REG_HOURS => bcd(secs / 3600),
            // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
            REG_WEEKDAY => bcd(((days + 4).rem_euclid(7) + 1) as u64),
            REG_DAY => bcd(u64::from(day)),
            REG_MONTH => bcd(u64::from(month)),
            REG_YEAR => bcd(year.rem_euclid(100) as u64),
            REG_CENTURY => bcd((year / 100) as u64),
            // 32.768 kHz time base, no update in progress.
            REG_A => 0x26,
            // 24-hour mode, BCD, no interrupts.
            REG_B => 0x02,
            REG_C => 0,
            // Valid RAM and time.
            REG_D => 0x80,
            r => self.ram[usize::from(r & 0x7f)],
        }
    }
}

impl PioDevice for Cmos {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let value = if offset == 1 {
            self.register(self.index)
        } else {
            0xff
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            0 => self.index = value & 0x7f,
            1 if self.index > REG_D && self.index != REG_CENTURY => {
                self.ram[usize::from(self.index)] = value
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(cmos: &mut Cmos, reg: u8) -> u8 {
        cmos.write(0, &[reg | 0x80]);
        let mut b = [0u8];
        cmos.read(1, &mut b);
        b[0]
    }

    #[test]
    fn reports_a_known_time_in_bcd() {
        // 2026-11-22 13:45:07 UTC, a Sunday.
        let mut cmos = Cmos::with_clock(|| 1_795_355_107);
        assert_eq!(read(&mut cmos, REG_YEAR), 0x26);
        assert_eq!(read(&mut cmos, REG_CENTURY), 0x20);
        assert_eq!(read(&mut cmos, REG_MONTH), 0x11);
        assert_eq!(read(&mut cmos, REG_DAY), 0x22);
        assert_eq!(read(&mut cmos, REG_HOURS), 0x13);
        assert_eq!(read(&mut cmos, REG_MINUTES), 0x45);
        assert_eq!(read(&mut cmos, REG_SECONDS), 0x07);
        assert_eq!(read(&mut cmos, REG_WEEKDAY), 0x01);
        assert_eq!(
            read(&mut cmos, REG_A) & 0x80,
            0,
            "never reports an update in progress"
        );
    }

    #[test]
    fn spare_ram_keeps_what_the_guest_wrote() {
        let mut cmos = Cmos::default();
        cmos.write(0, &[0x40]);
        cmos.write(1, &[0x5a]);
        assert_eq!(read(&mut cmos, 0x40), 0x5a);
    }
}

//! The `qemu` target: a guest of oxvirtd's qemu engine booted from the bench kit (scripts/bench-kit.sh), with
//! the data disk as its `vda`, driven over its serial console. Every wait is bounded; the guest is destroyed
//! and undefined however the run ends.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use oxvirt_api::{AttachDiskRequest, Client, DetachDiskRequest};

use super::matrix::DiskSetting;

use crate::commands::block_on;

/// The guest kit's shell prompt (scripts/guest-kit.sh).
const PROMPT: &str = "oxvirt-guest# ";
/// Booting the kit under TCG takes seconds; unpacking the bench kit's libraries adds some.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// Beyond a workload's own run time: starting the tool, laying out, printing the report.
const COMMAND_SLACK: Duration = Duration::from_secs(180);

/// The bench kit's files.
#[derive(Debug, Clone)]
pub struct Kit {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl Kit {
    /// The kit in `dir`, which must hold what scripts/bench-kit.sh writes.
    pub fn open(dir: &Path) -> anyhow::Result<Kit> {
        let kit = Kit {
            kernel: dir.join("vmlinuz"),
            initramfs: dir.join("initramfs.img"),
        };
        for file in [&kit.kernel, &kit.initramfs] {
            if !file.is_file() {
                bail!(
                    "the bench kit has no {} (build it with scripts/bench-kit.sh, or point --kit at it)",
                    file.display()
                );
            }
        }
        Ok(kit)
    }
}

/// A bench guest's definition (the qemu target's, and the nested target's L1): `<domain type='qemu'>`, one
/// vCPU, `memory_mib`, booting `kernel` and `initrd`, `cpu` (a `<cpu>` element, or nothing), and the data disk
/// (when given; `--matrix` hot-plugs it) as `vda` on virtio-blk, raw, cache=none, io=native.
pub fn domain_xml(
    name: &str,
    memory_mib: u32,
    (kernel, initrd): (&Path, &Path),
    cpu: &str,
    disk: Option<&Path>,
) -> String {
    use oxvirt_xml::escape_text as e;
    let disk = disk.map_or_else(String::new, |disk| {
        format!(
            "    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='none' io='native'/>
      <source file='{}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
",
            e(&disk.display().to_string())
        )
    });
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet loglevel=1 panic=-1 no_timer_check</cmdline>
  </os>
  {cpu}
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
{disk}    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
",
        name = e(name),
        kernel = e(&kernel.display().to_string()),
        initrd = e(&initrd.display().to_string()),
    )
}

/// A defined (and maybe running) bench guest; dropping it destroys and undefines it.
pub struct Guest {
    client: Client,
    name: String,
    console: Option<Console>,
}

impl Guest {
    /// Defines and starts the qemu target's guest, then waits for its shell.
    pub fn boot(client: &Client, kit: &Kit, disk: Option<&Path>) -> anyhow::Result<Guest> {
        let name = format!("oxvirt-bench-{}", std::process::id());
        // 1 GiB: the kit's initramfs holds fio's and sysbench's libraries.
        let xml = domain_xml(&name, 1024, (&kit.kernel, &kit.initramfs), "", disk);
        let mut guest = Guest::start(client, &name, &xml)?;
        guest
            .console()?
            .wait_for(PROMPT, BOOT_TIMEOUT)
            .with_context(|| format!("the bench guest '{name}' did not boot"))?;
        // The kernel's own messages would land in the middle of a tool's report.
        guest.run("dmesg -n 1", Duration::from_secs(30))?;
        Ok(guest)
    }

    /// Defines `xml` (a domain called `name`) through oxvirtd, starts it and connects to its console. From
    /// the definition on, the returned guest (or, on an error, the half-made one) undefines it when dropped.
    pub fn start(client: &Client, name: &str, xml: &str) -> anyhow::Result<Guest> {
        block_on(client.define_domain(xml))?
            .with_context(|| format!("cannot define the bench guest '{name}'"))?;
        let mut guest = Guest {
            client: client.clone(),
            name: name.to_string(),
            console: None,
        };
        block_on(client.start(name))?
            .with_context(|| format!("cannot start the bench guest '{name}'"))?;
        let info = block_on(client.domain_info(name))??;
        let socket = info
            .console_socket
            .with_context(|| format!("the bench guest '{name}' has no console"))?;
        guest.console = Some(Console::connect(Path::new(&socket))?);
        Ok(guest)
    }

    /// Hot-plugs `source` as the data disk with `setting`'s cache, io, format and bus, and waits until the
    /// guest has its device ([`DiskSetting::data_disk`]). (The guest's definition has a first disk, `vda`, so
    /// that a virtio data disk is the guest's `/dev/vdb`: a guest names its disks in the order it finds them.)
    pub fn plug_data_disk(&mut self, source: &Path, setting: &DiskSetting) -> anyhow::Result<()> {
        let (target, device) = setting.data_disk();
        let request = AttachDiskRequest {
            source: source.display().to_string(),
            target: target.to_string(),
            subdriver: Some(setting.format.clone()),
            cache: Some(setting.cache.clone()),
            io: Some(setting.io.clone()),
            targetbus: Some(setting.bus.clone()),
            live: true,
            ..AttachDiskRequest::default()
        };
        block_on(self.client.attach_disk(&self.name, &request))?
            .with_context(|| format!("cannot plug the data disk as {}", setting.target()))?;
        self.run(
            &format!("n=0; while [ ! -b {device} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; [ -b {device} ]"),
            Duration::from_secs(60),
        )
        .with_context(|| format!("the guest did not see the data disk ({})", setting.target()))?;
        Ok(())
    }

    /// Unplugs the data disk [`Guest::plug_data_disk`] plugged and waits until the guest let go of it.
    pub fn unplug_data_disk(&mut self, setting: &DiskSetting) -> anyhow::Result<()> {
        let (target, device) = setting.data_disk();
        let request = DetachDiskRequest {
            target: target.to_string(),
            live: true,
            ..DetachDiskRequest::default()
        };
        block_on(self.client.detach_disk(&self.name, &request))?
            .context("cannot unplug the data disk")?;
        self.run(
            &format!("n=0; while [ -b {device} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; [ ! -b {device} ]"),
            Duration::from_secs(60),
        )
        .context("the guest kept the unplugged data disk")?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads this guest's vCPU time through oxvirtd, apart from its console.
    pub fn vcpu_clock(&self) -> VcpuClock {
        VcpuClock {
            client: self.client.clone(),
            name: self.name.clone(),
        }
    }

    /// The guest's serial console.
    pub fn console(&mut self) -> anyhow::Result<&mut Console> {
        self.console.as_mut().context("the bench guest is not up")
    }

    /// Runs `command` in the guest's shell and returns its output (stdout and stderr); a non-zero exit
    /// status is an error carrying that output.
    pub fn run(&mut self, command: &str, run_time: Duration) -> anyhow::Result<String> {
        let console = self.console()?;
        // The quotes keep the markers in the echoed command line apart from the ones the shell prints.
        console.send(&format!(
            "echo BENCH\"\"-BEGIN; {command} 2>&1; echo BENCH\"\"-END-$?-DO\"\"NE\n"
        ))?;
        let text = console
            .wait_for("-DONE", run_time + COMMAND_SLACK)
            .with_context(|| format!("'{command}' did not finish in the bench guest"))?;
        let text = text.replace('\r', "");
        let body = text
            .rsplit_once("BENCH-BEGIN\n")
            .map(|(_, body)| body)
            .unwrap_or(&text);
        let (output, status) = body
            .rsplit_once("BENCH-END-")
            .with_context(|| format!("no end marker after '{command}' in the bench guest"))?;
        let status = status.trim_end_matches("-DONE");
        if status != "0" {
            bail!("'{command}' failed in the bench guest (exit status {status}):\n{output}");
        }
        Ok(output.to_string())
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // The guest may already be off; either way it must not outlive the run.
        let _ = block_on(self.client.destroy(&self.name));
        let _ = block_on(self.client.undefine_domain(&self.name, None));
    }
}

/// A running guest's vCPU time, as `vcpuinfo` shows it: how a caller waiting on the console tells a guest that
/// works from one that stopped running.
pub struct VcpuClock {
    client: Client,
    name: String,
}

impl VcpuClock {
    /// The CPU time all its vCPU threads have used so far, in nanoseconds.
    pub fn cpu_time_ns(&self) -> anyhow::Result<u64> {
        let info = block_on(self.client.vcpu_info(&self.name))?
            .with_context(|| format!("cannot read the vCPU time of '{}'", self.name))?;
        Ok(info.vcpus.iter().map(|v| v.cpu_time_ns).sum())
    }
}

/// A guest's serial console (the Unix socket the engine serves), read with bounded waits.
pub struct Console {
    stream: UnixStream,
    /// Received and not yet consumed by a wait.
    pending: String,
}

impl Console {
    fn connect(socket: &Path) -> anyhow::Result<Console> {
        let stream = UnixStream::connect(socket)
            .with_context(|| format!("cannot connect to the console at {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Console {
            stream,
            pending: String::new(),
        })
    }

    pub fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.stream
            .write_all(text.as_bytes())
            .context("cannot write to the bench guest's console")
    }

    /// Reads until `pattern` arrives; returns everything up to and including it. Errors when the console
    /// closes (the guest stopped) or `timeout` passes.
    pub fn wait_for(&mut self, pattern: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_any(&[pattern], timeout).map(|(_, text)| text)
    }

    /// Reads until one of `patterns` arrives; returns which (the one that came first) and everything up to
    /// and including it. Errors as [`Console::wait_for`] does.
    pub fn wait_for_any(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<(usize, String)> {
        self.wait_for_any_checked(patterns, timeout, timeout, || Ok(()))
    }

    /// As [`Console::wait_for_any`], and calls `check` every `every` while nothing matched: an error from
    /// it ends the wait (a guest found not to be running need not be waited for until `timeout`).
    pub fn wait_for_any_checked(
        &mut self,
        patterns: &[&str],
        timeout: Duration,
        every: Duration,
        mut check: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut next_check = Instant::now() + every;
        let mut buf = [0u8; 8192];
        loop {
            let first = patterns
                .iter()
                .enumerate()
                .filter_map(|(i, p)| self.pending.find(p).map(|at| (at, i, at + p.len())))
                .min();
            if let Some((_, which, end)) = first {
                let text = self.pending[..end].to_string();
                self.pending.drain(..end);
                return Ok((which, text));
            }
            if Instant::now() >= next_check {
                check()?;
                next_check = Instant::now() + every;
            }
            if Instant::now() >= deadline {
                bail!(
                    "nothing matched '{}' within {timeout:?}; the console's last output:\n{}",
                    patterns.join("' or '"),
                    last_lines(&self.pending)
                );
            }
            match self.stream.read(&mut buf) {
                Ok(0) => bail!(
                    "the console closed (the guest stopped); its last output:\n{}",
                    last_lines(&self.pending)
                ),
                Ok(n) => self.pending.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("cannot read the bench guest's console"),
            }
        }
    }
}

fn last_lines(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

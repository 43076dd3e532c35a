// The create-guest form's libvirt domain XML: what oxvirtd's `define` reads (docs/domain-xml.md).

export function escapeXml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

export interface GuestSpec {
  /** `kvm` (hardware virtualization where the host has it) or `qemu` (TCG emulation). */
  virtType: 'kvm' | 'qemu';
  name: string;
  vcpus: number;
  memoryMib: number;
  /** The disk's file (a pool volume's path), raw or qcow2. */
  disk: { path: string; format: string } | null;
  /** An ISO's path: a CD-ROM the firmware boots from. */
  iso: string | null;
  /** Direct kernel boot instead of the firmware's boot order. */
  kernel: { kernel: string; initrd: string; cmdline: string } | null;
  /** A defined network's name, or null for none. */
  network: string | null;
  /** A VNC display and a VGA card. */
  graphics: boolean;
}

export function domainXml(spec: GuestSpec): string {
  const e = escapeXml;
  const os: string[] = [`    <type arch='x86_64' machine='pc'>hvm</type>`];
  if (spec.kernel) {
    os.push(`    <kernel>${e(spec.kernel.kernel)}</kernel>`);
    if (spec.kernel.initrd) os.push(`    <initrd>${e(spec.kernel.initrd)}</initrd>`);
    if (spec.kernel.cmdline) os.push(`    <cmdline>${e(spec.kernel.cmdline)}</cmdline>`);
  } else {
    if (spec.iso) os.push(`    <boot dev='cdrom'/>`);
    os.push(`    <boot dev='hd'/>`);
  }
  const devices: string[] = [];
  const disk = (device: string, path: string, format: string, target: string) => [
    `    <disk type='file' device='${device}'>`,
    `      <driver name='qemu' type='${e(format)}'/>`,
    `      <source file='${e(path)}'/>`,
    target,
    ...(device === 'cdrom' ? [`      <readonly/>`] : []),
    `    </disk>`,
  ];
  if (spec.disk) {
    devices.push(...disk('disk', spec.disk.path, spec.disk.format, `      <target dev='vda' bus='virtio'/>`));
  }
  if (spec.iso) devices.push(...disk('cdrom', spec.iso, 'raw', `      <target dev='hdc' bus='ide'/>`));
  if (spec.network) {
    devices.push(
      `    <interface type='network'>`,
      `      <source network='${e(spec.network)}'/>`,
      `      <model type='virtio'/>`,
      `    </interface>`,
    );
  }
  devices.push(
    `    <serial type='pty'><target port='0'/></serial>`,
    `    <console type='pty'><target type='serial' port='0'/></console>`,
  );
  if (spec.graphics) {
    devices.push(`    <graphics type='vnc'/>`, `    <video><model type='vga'/></video>`);
  }
  return [
    `<domain type='${spec.virtType}'>`,
    `  <name>${e(spec.name)}</name>`,
    `  <memory unit='MiB'>${spec.memoryMib}</memory>`,
    `  <vcpu>${spec.vcpus}</vcpu>`,
    `  <os>`,
    ...os,
    `  </os>`,
    `  <features><acpi/></features>`,
    `  <on_poweroff>destroy</on_poweroff>`,
    `  <on_reboot>restart</on_reboot>`,
    `  <on_crash>destroy</on_crash>`,
    `  <devices>`,
    ...devices,
    `  </devices>`,
    `</domain>`,
    '',
  ].join('\n');
}

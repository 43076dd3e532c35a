// The create-guest form: builds libvirt domain XML (xml.ts) and defines it. A new disk is made as
// a volume of the chosen pool first (and removed again if the definition is refused).

import { get, post, request, seg } from '../api';
import { errorLine, fill, h } from '../dom';
import type { DomainSummary, NetworkInfo, PoolInfo, VolumeInfo } from '../types';
import type { View } from '../view';
import { domainXml, type GuestSpec } from '../xml';

const GIB = 1024 * 1024 * 1024;

function field(id: string, label: string, input: HTMLElement, hint?: string): HTMLElement {
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('small', {}, hint) : null);
}

function radio(name: string, value: string, label: string, checked = false): HTMLElement {
  const id = `${name}-${value}`;
  return h(
    'label',
    { class: 'radio', for: id },
    h('input', { type: 'radio', id, name, value, checked, 'data-testid': id }),
    ` ${label}`,
  );
}

export function createGuestPage(): View {
  const name = h('input', { id: 'g-name', required: true, pattern: '[A-Za-z0-9_.+\\-]+', 'data-testid': 'create-name' });
  const vcpus = h('input', { id: 'g-vcpus', type: 'number', min: 1, max: 256, value: '1', required: true, 'data-testid': 'create-vcpus' });
  const memory = h('input', { id: 'g-memory', type: 'number', min: 16, value: '512', required: true, 'data-testid': 'create-memory' });
  const virtType = h(
    'select',
    { id: 'g-virt', 'data-testid': 'create-virt-type' },
    h('option', { value: 'kvm' }, 'KVM (hardware virtualization where the host has it)'),
    h('option', { value: 'qemu' }, 'QEMU emulation (TCG)'),
  );

  const volumeSelect = h('select', { id: 'g-volume', 'data-testid': 'create-volume' });
  const newPool = h('select', { id: 'g-new-pool', 'data-testid': 'create-new-pool' });
  const newSize = h('input', { id: 'g-new-size', type: 'number', min: 1, value: '10', 'data-testid': 'create-new-size' });
  const newFormat = h('select', { id: 'g-new-format' }, h('option', { value: 'qcow2' }, 'qcow2'), h('option', { value: 'raw' }, 'raw'));
  const isoSelect = h('select', { id: 'g-iso', 'data-testid': 'create-iso' });
  const kernel = h('input', { id: 'g-kernel', 'data-testid': 'create-kernel' });
  const initrd = h('input', { id: 'g-initrd', 'data-testid': 'create-initrd' });
  const cmdline = h('input', { id: 'g-cmdline', value: 'console=tty0 console=ttyS0', 'data-testid': 'create-cmdline' });
  const network = h('select', { id: 'g-network', 'data-testid': 'create-network' }, h('option', { value: '' }, 'None'));
  const graphics = h('input', { id: 'g-graphics', type: 'checkbox', checked: true, 'data-testid': 'create-graphics' });
  const message = h('div', { 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', 'data-testid': 'create-submit' }, 'Create guest');
  const preview = h('pre', { 'data-testid': 'create-xml' });

  const diskNew = h('fieldset', { class: 'sub' }, h('legend', {}, 'New volume'),
    field('g-new-pool', 'Pool', newPool),
    field('g-new-size', 'Size (GiB)', newSize),
    field('g-new-format', 'Format', newFormat));
  const diskExisting = h('fieldset', { class: 'sub' }, h('legend', {}, 'Existing volume'), field('g-volume', 'Volume', volumeSelect));
  const bootFirmware = h('fieldset', { class: 'sub' }, h('legend', {}, 'Firmware boot'), field('g-iso', 'Installation ISO', isoSelect));
  const bootKernel = h('fieldset', { class: 'sub' }, h('legend', {}, 'Direct kernel boot'),
    field('g-kernel', 'Kernel (path on the host)', kernel),
    field('g-initrd', 'Initrd (path on the host)', initrd),
    field('g-cmdline', 'Kernel command line', cmdline));

  const form = h(
    'form',
    { class: 'create', 'data-testid': 'create-form' },
    h('h1', {}, 'New guest'),
    field('g-name', 'Name', name),
    field('g-vcpus', 'vCPUs', vcpus),
    field('g-memory', 'Memory (MiB)', memory),
    field('g-virt', 'Virtualization', virtType),
    h('fieldset', {}, h('legend', {}, 'Disk'),
      radio('disk', 'new', 'A new volume', true), radio('disk', 'existing', 'An existing volume'), radio('disk', 'none', 'No disk'),
      diskNew, diskExisting),
    h('fieldset', {}, h('legend', {}, 'Boot'),
      radio('boot', 'firmware', 'Firmware (disk, or the ISO)', true), radio('boot', 'kernel', 'A kernel and initrd'),
      bootFirmware, bootKernel),
    field('g-network', 'Network', network),
    h('div', { class: 'field' }, h('label', { for: 'g-graphics' }, graphics, ' Graphical console (VNC and a VGA card)')),
    submit,
    message,
    h('details', {}, h('summary', {}, 'Domain XML'), preview),
  );

  const choice = (group: string) =>
    (form.querySelector(`input[name="${group}"]:checked`) as HTMLInputElement | null)?.value ?? '';
  function sync(): void {
    diskNew.hidden = choice('disk') !== 'new';
    diskExisting.hidden = choice('disk') !== 'existing';
    bootFirmware.hidden = choice('boot') !== 'firmware';
    bootKernel.hidden = choice('boot') !== 'kernel';
    kernel.required = choice('boot') === 'kernel';
  }
  form.addEventListener('change', sync);
  sync();

  const volumes = new Map<string, VolumeInfo>();
  async function load(): Promise<void> {
    try {
      const [pools, networks] = await Promise.all([get<PoolInfo[]>('/v1/pools'), get<NetworkInfo[]>('/v1/networks')]);
      const active = pools.filter((p) => p.active);
      fill(newPool, active.map((p) => h('option', { value: p.name }, p.name)));
      const lists = await Promise.all(active.map((p) => get<VolumeInfo[]>(`/v1/pools/${seg(p.name)}/volumes`)));
      const all = lists.flat();
      for (const v of all) volumes.set(`${v.pool}/${v.name}`, v);
      const options = (filter: (v: VolumeInfo) => boolean) =>
        all.filter(filter).map((v) => h('option', { value: `${v.pool}/${v.name}` }, `${v.pool} / ${v.name}`));
      fill(volumeSelect, options((v) => !v.name.toLowerCase().endsWith('.iso')));
      fill(isoSelect, h('option', { value: '' }, 'None'), options((v) => v.name.toLowerCase().endsWith('.iso')));
      fill(network, h('option', { value: '' }, 'None'), networks.map((n) => h('option', { value: n.name }, `${n.name}${n.active ? '' : ' (inactive)'}`)));
    } catch (e) {
      fill(message, errorLine((e as Error).message));
    }
  }
  void load();

  function spec(disk: GuestSpec['disk']): GuestSpec {
    const iso = choice('boot') === 'firmware' && isoSelect.value ? volumes.get(isoSelect.value)?.path ?? null : null;
    return {
      virtType: virtType.value === 'qemu' ? 'qemu' : 'kvm',
      name: name.value.trim(),
      vcpus: Number(vcpus.value),
      memoryMib: Number(memory.value),
      disk,
      iso,
      kernel: choice('boot') === 'kernel' ? { kernel: kernel.value.trim(), initrd: initrd.value.trim(), cmdline: cmdline.value } : null,
      network: network.value || null,
      graphics: graphics.checked,
    };
  }

  form.addEventListener('input', () => {
    preview.textContent = domainXml(spec(choice('disk') === 'none' ? null : { path: '(the disk)', format: newFormat.value }));
  });

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    fill(message, h('p', { role: 'status' }, 'Creating…'));
    let made: { pool: string; volume: string } | null = null;
    try {
      let disk: GuestSpec['disk'] = null;
      if (choice('disk') === 'new') {
        if (!newPool.value) throw new Error('no active storage pool for the new volume: start or define one (Storage)');
        const format = newFormat.value;
        const volume = await post<VolumeInfo>(`/v1/pools/${seg(newPool.value)}/volumes`, {
          name: `${name.value.trim()}.${format === 'raw' ? 'img' : 'qcow2'}`,
          capacity: Number(newSize.value) * GIB,
          format,
        });
        made = { pool: newPool.value, volume: volume.name };
        disk = { path: volume.path, format: volume.format };
      } else if (choice('disk') === 'existing') {
        const volume = volumes.get(volumeSelect.value);
        if (!volume) throw new Error('choose a volume for the disk');
        disk = { path: volume.path, format: volume.format };
      }
      const xml = domainXml(spec(disk));
      preview.textContent = xml;
      const defined = await post<DomainSummary>('/v1/domains', { xml });
      location.hash = `#/guests/${encodeURIComponent(defined.name)}`;
    } catch (err) {
      if (made) {
        await request('DELETE', `/v1/pools/${seg(made.pool)}/volumes/${seg(made.volume)}`).catch(() => undefined);
      }
      fill(message, errorLine((err as Error).message, 'create-error'));
    } finally {
      submit.disabled = false;
    }
  });

  return { element: form };
}

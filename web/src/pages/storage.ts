// Storage pools and their volumes; an admin uploads an ISO (a raw volume of the file's size is
// made, then the file is PUT as its bytes: vol-create + vol-upload) with a progress bar.

import { getOrShow, isAdmin, post, request, seg, upload } from '../api';
import { errorLine, fill, h, table } from '../dom';
import { bytes } from '../format';
import type { PoolInfo, VolumeInfo } from '../types';
import type { View } from '../view';

export function storagePage(): View {
  const pools = h('section', { 'aria-label': 'Pools' });
  const volumes = h('section', { 'aria-label': 'Volumes', 'data-testid': 'volumes' });
  const message = h('div', { 'aria-live': 'polite' });
  const element = h('div', { class: 'page' }, h('h1', {}, 'Storage'), message, pools, volumes);
  let selected: string | null = null;

  async function refresh(): Promise<void> {
    const list = await getOrShow<PoolInfo[]>(pools, '/v1/pools');
    if (!list) return;
    fill(
      pools,
      h('h2', {}, 'Pools'),
      list.length === 0
        ? h('p', {}, 'No storage pools are defined.')
        : table(
            'pool-list',
            ['Name', 'State', 'Path', 'Capacity', 'Available', ''],
            list.map((p) => [
              p.name,
              p.active ? 'active' : 'inactive',
              p.target,
              bytes(p.capacity),
              bytes(p.available),
              p.active
                ? h('button', { type: 'button', 'data-testid': 'pool-open', onclick: () => void showVolumes(p.name) }, `Volumes of ${p.name}`)
                : null,
            ]),
            (i) => ({ 'data-testid': 'pool-row', 'data-name': list[i].name }),
          ),
    );
    if (selected) await showVolumes(selected);
  }

  // The volume table of the pool shown, refreshed after an upload; the upload form stays (with
  // its progress bar and status).
  const volumeTable = h('div');

  async function showVolumes(pool: string): Promise<void> {
    if (selected !== pool) {
      fill(volumes, h('h2', {}, `Volumes of ${pool}`), volumeTable, isAdmin() ? uploadForm(pool) : null);
    }
    selected = pool;
    const list = await getOrShow<VolumeInfo[]>(volumeTable, `/v1/pools/${seg(pool)}/volumes`);
    if (!list) return;
    fill(
      volumeTable,
      list.length === 0
        ? h('p', {}, 'No volumes.')
        : table(
            'volume-list',
            ['Name', 'Format', 'Capacity', 'Allocation', 'Path'],
            list.map((v) => [v.name, v.format, bytes(v.capacity), bytes(v.allocation), v.path]),
            (i) => ({ 'data-testid': 'volume-row', 'data-name': list[i].name }),
          ),
    );
  }

  function uploadForm(pool: string): HTMLElement {
    const file = h('input', { id: 'upload-file', type: 'file', accept: '.iso,application/x-iso9660-image', required: true, 'data-testid': 'upload-file' });
    const name = h('input', { id: 'upload-name', required: true, 'data-testid': 'upload-name' });
    const progress = h('progress', { max: 1, value: 0, 'data-testid': 'upload-progress', 'aria-label': 'Upload progress' });
    const status = h('span', { role: 'status', 'data-testid': 'upload-status' });
    const button = h('button', { type: 'submit', 'data-testid': 'upload-submit' }, 'Upload');
    file.addEventListener('change', () => {
      if (file.files?.[0] && !name.value) name.value = file.files[0].name;
    });
    const form = h(
      'form',
      { class: 'upload', 'data-testid': 'upload-form' },
      h('h3', {}, `Upload an ISO into ${pool}`),
      h('label', { for: 'upload-file' }, 'File'),
      file,
      h('label', { for: 'upload-name' }, 'Volume name'),
      name,
      button,
      progress,
      status,
    );
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const chosen = file.files?.[0];
      if (!chosen) return;
      button.disabled = true;
      const volume = name.value.trim();
      let created = false;
      try {
        status.textContent = 'creating the volume';
        await post<VolumeInfo>(`/v1/pools/${seg(pool)}/volumes`, { name: volume, capacity: chosen.size, format: 'raw' });
        created = true;
        await upload(`/v1/pools/${seg(pool)}/volumes/${seg(volume)}/data`, chosen, (sent, total) => {
          progress.value = total ? sent / total : 1;
          status.textContent = `${bytes(sent)} of ${bytes(total)}`;
        });
        progress.value = 1;
        status.textContent = 'uploaded';
        await showVolumes(pool);
      } catch (err) {
        // An upload that broke off leaves an empty volume: remove it, as nothing was stored.
        if (created) {
          await request('DELETE', `/v1/pools/${seg(pool)}/volumes/${seg(volume)}`).catch(() => undefined);
        }
        status.textContent = '';
        fill(message, errorLine((err as Error).message, 'upload-error'));
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  void refresh();
  return { element };
}

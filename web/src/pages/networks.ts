// Virtual networks: the list, and start/stop for an admin.

import { getOrShow, isAdmin, post, seg } from '../api';
import { errorLine, fill, h, table } from '../dom';
import type { NetworkInfo } from '../types';
import type { View } from '../view';

export function networksPage(): View {
  const body = h('div');
  const message = h('div', { 'aria-live': 'polite' });
  const element = h('div', { class: 'page' }, h('h1', {}, 'Networks'), message, body);

  async function refresh(): Promise<void> {
    const list = await getOrShow<NetworkInfo[]>(body, '/v1/networks');
    if (!list) return;
    fill(
      body,
      list.length === 0
        ? h('p', {}, 'No networks are defined.')
        : table(
            'network-list',
            ['Name', 'State', 'Bridge', 'Autostart', 'Persistent', ''],
            list.map((n) => [
              n.name,
              h('span', { 'data-testid': 'network-state' }, n.active ? 'active' : 'inactive'),
              n.bridge ?? '-',
              n.autostart ? 'yes' : 'no',
              n.persistent ? 'yes' : 'no',
              isAdmin() ? toggle(n) : null,
            ]),
            (i) => ({ 'data-testid': 'network-row', 'data-name': list[i].name }),
          ),
    );
  }

  function toggle(n: NetworkInfo): HTMLElement {
    const action = n.active ? 'destroy' : 'start';
    return h(
      'button',
      {
        type: 'button',
        'data-testid': `action-network-${action}`,
        'aria-label': `${n.active ? 'Stop' : 'Start'} network ${n.name}`,
        onclick: async () => {
          try {
            await post(`/v1/networks/${seg(n.name)}/${action}`);
            fill(message);
          } catch (e) {
            fill(message, errorLine((e as Error).message));
          }
          await refresh();
        },
      },
      n.active ? 'Stop' : 'Start',
    );
  }

  void refresh();
  return { element };
}

// The guest list: states kept current by the event stream (no reload, no polling).

import { get } from '../api';
import { actionButtons } from '../actions';
import { errorLine, fill, h, table } from '../dom';
import { subscribe } from '../events';
import type { DomainSummary } from '../types';
import type { View } from '../view';

export function guestListPage(): View {
  const body = h('div');
  const message = h('div', { 'aria-live': 'polite' });
  const element = h('div', { class: 'page' }, h('h1', {}, 'Guests'), message, body);
  const report = (error: string | null) => fill(message, error ? errorLine(error) : null);

  let generation = 0;
  async function refresh(): Promise<void> {
    // Only the newest answer is shown: events can come faster than replies.
    const mine = ++generation;
    let domains: DomainSummary[];
    try {
      domains = await get<DomainSummary[]>('/v1/domains');
    } catch (e) {
      if (mine === generation) fill(body, errorLine((e as Error).message));
      return;
    }
    if (mine !== generation) return;
    domains.sort((a, b) => a.name.localeCompare(b.name));
    fill(
      body,
      domains.length === 0
        ? h('p', { 'data-testid': 'no-guests' }, 'No guests are defined.')
        : table(
            'guest-list',
            ['Name', 'State', 'Id', 'Autostart', 'Actions'],
            domains.map((d) => [
              h('a', { href: `#/guests/${encodeURIComponent(d.name)}` }, d.name),
              h('span', { 'data-testid': 'guest-state', class: `state state-${d.state.replace(' ', '-')}` }, d.state),
              d.id === null ? '-' : String(d.id),
              d.autostart ? 'yes' : 'no',
              actionButtons(d.name, d.state, report),
            ]),
            (i) => ({ 'data-testid': 'guest-row', 'data-name': domains[i].name }),
          ),
    );
  }

  void refresh();
  const unsubscribe = subscribe(() => void refresh());
  return { element, close: unsubscribe };
}

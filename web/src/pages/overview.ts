// The host: CPU (nodeinfo, and its use from two cpustats samples), memory (memstats), storage
// (the pools' capacity) and the guests by state.

import { get } from '../api';
import { errorLine, fill, h, table } from '../dom';
import { subscribe } from '../events';
import { bytes, kib, percent } from '../format';
import type { DomainSummary, NodeInfo, NodeValues, PoolInfo } from '../types';
import type { View } from '../view';

const REFRESH_MS = 5000;

function value(values: NodeValues, name: string): number {
  return values.values.find((v) => v.name === name)?.value ?? 0;
}

export function overviewPage(): View {
  const cpu = h('section', { 'data-testid': 'host-cpu', 'aria-labelledby': 'h-cpu' });
  const memory = h('section', { 'data-testid': 'host-memory', 'aria-labelledby': 'h-mem' });
  const storage = h('section', { 'data-testid': 'host-storage', 'aria-labelledby': 'h-storage' });
  const guests = h('section', { 'data-testid': 'host-guests', 'aria-labelledby': 'h-guests' });
  const problems = h('div');
  const element = h(
    'div',
    { class: 'page' },
    h('h1', {}, 'Host'),
    problems,
    h('div', { class: 'cards' }, cpu, memory, storage, guests),
  );

  let last: { busy: number; total: number } | null = null;
  let info: NodeInfo | null = null;

  async function refresh(): Promise<void> {
    try {
      info ??= await get<NodeInfo>('/v1/node');
      const [stats, mem, pools, domains] = await Promise.all([
        get<NodeValues>('/v1/node/cpustats'),
        get<NodeValues>('/v1/node/memstats'),
        get<PoolInfo[]>('/v1/pools'),
        get<DomainSummary[]>('/v1/domains'),
      ]);
      const idle = value(stats, 'idle') + value(stats, 'iowait');
      const total = stats.values.reduce((sum, v) => sum + v.value, 0);
      const busy = total - idle;
      const use = last && total > last.total ? (busy - last.busy) / (total - last.total) : null;
      last = { busy, total };
      fill(
        cpu,
        h('h2', { id: 'h-cpu' }, 'CPU'),
        h('p', {}, `${info.cpus} CPUs (${info.sockets} sockets, ${info.cores} cores, ${info.threads} threads), ${info.arch}, ${info.mhz} MHz`),
        h('p', {}, `In use: ${use === null ? 'measuring…' : percent(use)}`),
      );
      const memTotal = value(mem, 'total');
      const memFree = value(mem, 'free') + value(mem, 'buffers') + value(mem, 'cached');
      fill(
        memory,
        h('h2', { id: 'h-mem' }, 'Memory'),
        h('p', {}, `Total ${kib(memTotal)}, free (with buffers and cache) ${kib(memFree)}`),
        h('meter', { min: 0, max: memTotal, value: memTotal - memFree, 'aria-label': 'Memory in use' }),
      );
      fill(
        storage,
        h('h2', { id: 'h-storage' }, 'Storage'),
        pools.length === 0
          ? h('p', {}, 'No storage pools.')
          : table(
              'host-pools',
              ['Pool', 'State', 'Capacity', 'Available'],
              pools.map((p) => [p.name, p.active ? 'active' : 'inactive', bytes(p.capacity), bytes(p.available)]),
            ),
      );
      const byState = new Map<string, number>();
      for (const d of domains) byState.set(d.state, (byState.get(d.state) ?? 0) + 1);
      fill(
        guests,
        h('h2', { id: 'h-guests' }, 'Guests'),
        h('p', {}, `${domains.length} defined`),
        h(
          'ul',
          {},
          [...byState.entries()].map(([state, n]) => h('li', { 'data-testid': `guests-${state.replace(' ', '-')}` }, `${state}: ${n}`)),
        ),
      );
      problems.replaceChildren();
    } catch (e) {
      fill(problems, errorLine((e as Error).message));
    }
  }

  void refresh();
  const timer = window.setInterval(() => void refresh(), REFRESH_MS);
  const unsubscribe = subscribe(() => void refresh());
  return {
    element,
    close() {
      window.clearInterval(timer);
      unsubscribe();
    },
  };
}

// One guest: its information (dominfo), disks, NICs, snapshots, CPU and memory graphs, actions;
// and its serial and graphical consoles on tabs of their own.

import { get, getOrShow, isAdmin, post, seg } from '../api';
import { actionButtons } from '../actions';
import { LineChart } from '../chart';
import { errorLine, fill, h, table } from '../dom';
import { subscribe } from '../events';
import { kib, percent } from '../format';
import type {
  DomainDisk,
  DomainInfo,
  DomainInterface,
  DomainsStats,
  SnapshotSummary,
} from '../types';
import type { View } from '../view';

const STATS_MS = 3000;
/** Ten minutes of samples. */
const SAMPLES = 200;

export function guestPage(name: string, tab: string): View {
  const base = `#/guests/${encodeURIComponent(name)}`;
  const tabs = h(
    'nav',
    { class: 'tabs', 'aria-label': 'Guest views' },
    h('a', { href: base, 'aria-current': tab === 'info' ? 'page' : undefined }, 'Overview'),
    isAdmin()
      ? [
          h('a', { href: `${base}/console`, 'data-testid': 'tab-console', 'aria-current': tab === 'console' ? 'page' : undefined }, 'Serial console'),
          h('a', { href: `${base}/graphics`, 'data-testid': 'tab-graphics', 'aria-current': tab === 'graphics' ? 'page' : undefined }, 'Graphical console'),
        ]
      : null,
  );
  const state = h('span', { 'data-testid': 'guest-state' });
  const actions = h('div');
  const message = h('div', { 'aria-live': 'polite' });
  const content = h('div');
  const element = h(
    'div',
    { class: 'page' },
    h('h1', {}, name, ' ', h('small', {}, state)),
    actions,
    message,
    tabs,
    content,
  );
  const report = (error: string | null) => fill(message, error ? errorLine(error) : null);

  let closeContent: () => void = () => undefined;
  const infoSection = h('section', { 'data-testid': 'guest-info', 'aria-label': 'Information' });

  async function refreshInfo(): Promise<void> {
    let info: DomainInfo;
    try {
      info = await get<DomainInfo>(`/v1/domains/${seg(name)}`);
    } catch (e) {
      fill(infoSection, errorLine((e as Error).message));
      fill(actions);
      state.textContent = '';
      return;
    }
    state.textContent = info.state;
    fill(actions, actionButtons(name, info.state, report, (action) => {
      if (action === 'delete') location.hash = '#/guests';
    }));
    if (tab !== 'info') return;
    fill(
      infoSection,
      h('h2', {}, 'Information'),
      h(
        'dl',
        { class: 'facts' },
        fact('State', `${info.state} (${info.state_reason})`),
        fact('UUID', info.uuid),
        fact('Id', info.id === null ? '-' : String(info.id)),
        fact('vCPUs', String(info.vcpus)),
        fact('Memory', `${kib(info.used_memory_kib)} of ${kib(info.max_memory_kib)}`),
        fact('Engine', `${info.engine} (${info.accel})`),
        fact('Autostart', info.autostart ? 'yes' : 'no'),
        fact('Persistent', info.persistent ? 'yes' : 'no'),
      ),
      info.warnings.map((w) => h('p', { class: 'warning' }, w)),
    );
  }

  function fact(term: string, value: string): HTMLElement[] {
    return [h('dt', {}, term), h('dd', {}, value)];
  }

  let closed = false;
  if ((tab === 'console' || tab === 'graphics') && isAdmin()) {
    // xterm.js and noVNC are loaded only when a console is opened (their own chunks).
    fill(content, h('p', { role: 'status' }, 'Loading the console…'));
    const load =
      tab === 'console'
        ? import('../console').then((m) => m.serialConsole(name))
        : import('../vnc').then((m) => m.graphicalConsole(name));
    load.then(
      (view) => {
        if (closed) {
          view.close();
          return;
        }
        fill(content, view.element);
        closeContent = view.close;
      },
      (e: Error) => fill(content, errorLine(`cannot load the console: ${e.message}`)),
    );
  } else {
    closeContent = overview(name, content, infoSection);
  }

  void refreshInfo();
  const unsubscribe = subscribe((event) => {
    if (event.domain === name || event.event === 'Lagged') void refreshInfo();
  });
  return {
    element,
    close() {
      closed = true;
      unsubscribe();
      closeContent();
    },
  };
}

/** The overview tab's sections below the information; returns what stops its polling. */
function overview(name: string, content: HTMLElement, infoSection: HTMLElement): () => void {
  const cpuChart = new LineChart('CPU', percent, 1, SAMPLES, 'chart-cpu');
  const memChart = new LineChart('Memory', kib, null, SAMPLES, 'chart-memory');
  const disks = h('section', { 'data-testid': 'guest-disks', 'aria-label': 'Disks' });
  const nics = h('section', { 'data-testid': 'guest-nics', 'aria-label': 'Network interfaces' });
  const snapshots = h('section', { 'data-testid': 'guest-snapshots', 'aria-label': 'Snapshots' });
  fill(
    content,
    infoSection,
    h(
      'section',
      { class: 'charts', 'aria-label': 'Use over the last minutes' },
      h('h2', {}, 'CPU and memory'),
      cpuChart.element,
      memChart.element,
    ),
    disks,
    nics,
    snapshots,
  );

  const id = seg(name);
  const section = <T>(into: HTMLElement, title: string, path: string, draw: (data: T) => Node) =>
    void getOrShow<T>(into, path).then((data) => {
      if (data !== null) fill(into, h('h2', {}, title), draw(data));
      else into.prepend(h('h2', {}, title));
    });
  section<DomainDisk[]>(disks, 'Disks', `/v1/domains/${id}/disks`, (list) =>
    table('disk-list', ['Target', 'Device', 'Type', 'Source'], list.map((d) => [d.target, d.device, d.disk_type, d.source ?? '-'])),
  );
  section<DomainInterface[]>(nics, 'Network interfaces', `/v1/domains/${id}/interfaces`, (list) =>
    list.length === 0
      ? h('p', {}, 'None.')
      : table('nic-list', ['Interface', 'Type', 'Source', 'Model', 'MAC'], list.map((n) => [n.target ?? '-', n.interface_type, n.source ?? '-', n.model ?? '-', n.mac])),
  );
  section<SnapshotSummary[]>(snapshots, 'Snapshots', `/v1/domains/${id}/snapshots`, (list) =>
    list.length === 0
      ? h('p', {}, 'None.')
      : table(
          'snapshot-list',
          ['Name', 'Created', 'State', 'Current'],
          list.map((s) => [s.name, new Date(s.creation_time * 1000).toLocaleString(), s.state, s.current ? 'yes' : '']),
        ),
  );

  // CPU use is the growth of cpu.time (ns, all vCPUs) over the wall time between two samples,
  // per vCPU; memory is what the balloon gives the guest (or the process's RSS when larger).
  let last: { time: number; at: number } | null = null;
  async function sample(): Promise<void> {
    let stats: DomainsStats;
    try {
      stats = await post<DomainsStats>('/v1/domain-stats', {
        domains: [name],
        groups: ['state', 'cpu-total', 'balloon', 'vcpu'],
      });
    } catch {
      return;
    }
    const fields = new Map((stats.domains[0]?.fields ?? []).map((f) => [f.name, Number(f.value)]));
    const at = performance.now();
    const time = fields.get('cpu.time') ?? 0;
    const vcpus = fields.get('vcpu.current') || 1;
    if (last && at > last.at && time >= last.time) {
      cpuChart.push((time - last.time) / ((at - last.at) * 1e6) / vcpus);
    }
    last = { time, at };
    memChart.push(Math.max(fields.get('balloon.current') ?? 0, fields.get('balloon.rss') ?? 0));
  }
  void sample();
  const timer = window.setInterval(() => void sample(), STATS_MS);
  return () => window.clearInterval(timer);
}

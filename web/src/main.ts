// oxvirt's web UI: hash routes, a header with navigation, and the pages under pages/.
// docs/web-ui.md describes it.

import './style.css';

import { currentSession, isAdmin, logout, onSessionChange, resume } from './api';
import { h, fill } from './dom';
import { closeEvents } from './events';
import type { View } from './view';
import { loginPage } from './pages/login';
import { overviewPage } from './pages/overview';
import { guestListPage } from './pages/guests';
import { guestPage } from './pages/guest';
import { createGuestPage } from './pages/create';
import { storagePage } from './pages/storage';
import { networksPage } from './pages/networks';

const app = document.getElementById('app') as HTMLElement;
const main = h('main', { id: 'main' });
const userLine = h('span', { 'data-testid': 'session-user' });
const nav = h(
  'nav',
  { 'aria-label': 'Main' },
  h('a', { href: '#/' }, 'Host'),
  h('a', { href: '#/guests', 'data-testid': 'nav-guests' }, 'Guests'),
  h('a', { href: '#/create', 'data-testid': 'nav-create', class: 'admin-only' }, 'New guest'),
  h('a', { href: '#/storage', 'data-testid': 'nav-storage' }, 'Storage'),
  h('a', { href: '#/networks', 'data-testid': 'nav-networks' }, 'Networks'),
);
const logoutButton = h(
  'button',
  {
    type: 'button',
    'data-testid': 'logout',
    onclick: async () => {
      await logout().catch(() => undefined);
      location.hash = '#/login';
    },
  },
  'Log out',
);
const header = h(
  'header',
  {},
  h('strong', { class: 'brand' }, 'oxvirt'),
  nav,
  h('span', { class: 'who' }, userLine, ' ', logoutButton),
);
fill(app, header, main);

let current: View | null = null;

function show(view: View): void {
  current?.close?.();
  current = view;
  fill(main, view.element);
}

function route(): void {
  const session = currentSession();
  const path = location.hash.replace(/^#/, '') || '/';
  header.hidden = !session;
  if (!session) {
    if (path !== '/login') {
      location.hash = '#/login';
      return;
    }
    show(loginPage(() => (location.hash = '#/')));
    return;
  }
  document.body.classList.toggle('read-only', !isAdmin());
  userLine.textContent = `${session.user} (${session.role})`;
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'login') {
    location.hash = '#/';
    return;
  }
  if (parts.length === 0) show(overviewPage());
  else if (parts[0] === 'guests' && parts.length === 1) show(guestListPage());
  else if (parts[0] === 'guests') show(guestPage(parts[1], parts[2] ?? 'info'));
  else if (parts[0] === 'create' && isAdmin()) show(createGuestPage());
  else if (parts[0] === 'storage') show(storagePage());
  else if (parts[0] === 'networks') show(networksPage());
  else show({ element: h('p', { role: 'alert' }, `No page at ${path}.`) });
}

onSessionChange((s) => {
  if (!s) {
    closeEvents();
    if (location.hash !== '#/login') location.hash = '#/login';
  }
});
window.addEventListener('hashchange', route);
void resume().then(route);

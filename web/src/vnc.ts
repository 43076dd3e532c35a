// The graphical console: noVNC's RFB client over `wss://HOST/v1/domains/{id}/vnc/ws`, which
// oxvirtd relays to the guest's VNC server (the VNC port itself is never exposed).

import RFB from '@novnc/novnc';

import { seg, wsUrl } from './api';
import { h } from './dom';
import { subscribe } from './events';
import type { View } from './view';

export function graphicalConsole(domain: string): Required<View> {
  const status = h('span', { class: 'status', 'data-testid': 'vnc-status', role: 'status' }, 'connecting');
  const screen = h('div', { class: 'vnc-screen', 'data-testid': 'vnc-screen' });
  const password = h('input', { type: 'password', id: 'vnc-password', autocomplete: 'off' });
  const passwordForm = h(
    'form',
    { class: 'inline', hidden: true },
    h('label', { for: 'vnc-password' }, 'VNC password'),
    password,
    h('button', { type: 'submit' }, 'Send'),
  );
  const ctrlAltDel = h('button', { type: 'button', 'data-testid': 'vnc-cad' }, 'Send Ctrl+Alt+Del');
  const element = h(
    'section',
    { class: 'vnc', 'aria-label': 'Graphical console' },
    h('p', { class: 'hint' }, status, ' ', ctrlAltDel),
    passwordForm,
    screen,
  );

  let rfb: RFB | null = null;
  let connected = false;
  function connect(): void {
    // A disconnected RFB leaves its canvas behind: start from an empty screen.
    screen.replaceChildren();
    const client = new RFB(screen, wsUrl(`/v1/domains/${seg(domain)}/vnc/ws`), {
      wsProtocols: ['binary'],
    });
    rfb = client;
    client.scaleViewport = true;
    client.background = '#000';
    // Events of a client replaced by a newer one are ignored.
    client.addEventListener('connect', () => {
      if (rfb !== client) return;
      connected = true;
      status.textContent = 'connected';
    });
    client.addEventListener('disconnect', () => {
      if (rfb !== client) return;
      connected = false;
      status.textContent =
        'not connected (the guest is not running, or has no VNC graphics): connects when it starts';
    });
    client.addEventListener('credentialsrequired', () => {
      passwordForm.hidden = false;
      password.focus();
    });
    client.addEventListener('securityfailure', (e) => {
      const reason = (e as CustomEvent<{ reason?: string }>).detail?.reason;
      status.textContent = `authentication failed${reason ? `: ${reason}` : ''}`;
    });
  }
  const unsubscribe = subscribe((event) => {
    if (event.domain === domain && event.event === 'Started' && !connected) {
      rfb?.disconnect();
      connect();
    }
  });
  queueMicrotask(connect);
  passwordForm.addEventListener('submit', (e) => {
    e.preventDefault();
    rfb?.sendCredentials({ password: password.value });
    passwordForm.hidden = true;
  });
  ctrlAltDel.addEventListener('click', () => rfb?.sendCtrlAltDel());

  return {
    element,
    close() {
      unsubscribe();
      rfb?.disconnect();
    },
  };
}

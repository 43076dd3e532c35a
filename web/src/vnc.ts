// The graphical console: noVNC's RFB client over `wss://HOST/v1/domains/{id}/vnc/ws`, which
// oxvirtd relays to the guest's VNC server (the VNC port itself is never exposed).

import RFB from '@novnc/novnc';

import { seg, wsUrl } from './api';
import { h } from './dom';

export interface VncView {
  element: HTMLElement;
  close(): void;
}

export function graphicalConsole(domain: string): VncView {
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
  queueMicrotask(() => {
    rfb = new RFB(screen, wsUrl(`/v1/domains/${seg(domain)}/vnc/ws`), {
      wsProtocols: ['binary'],
    });
    rfb.scaleViewport = true;
    rfb.background = '#000';
    rfb.addEventListener('connect', () => {
      status.textContent = 'connected';
    });
    rfb.addEventListener('disconnect', (e) => {
      const clean = (e as CustomEvent<{ clean: boolean }>).detail?.clean;
      status.textContent = clean ? 'disconnected' : 'connection lost (is the guest running with VNC graphics?)';
    });
    rfb.addEventListener('credentialsrequired', () => {
      passwordForm.hidden = false;
      password.focus();
    });
    rfb.addEventListener('securityfailure', (e) => {
      const reason = (e as CustomEvent<{ reason?: string }>).detail?.reason;
      status.textContent = `authentication failed${reason ? `: ${reason}` : ''}`;
    });
  });
  passwordForm.addEventListener('submit', (e) => {
    e.preventDefault();
    rfb?.sendCredentials({ password: password.value });
    passwordForm.hidden = true;
  });
  ctrlAltDel.addEventListener('click', () => rfb?.sendCtrlAltDel());

  return {
    element,
    close() {
      rfb?.disconnect();
    },
  };
}

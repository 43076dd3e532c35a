// The serial console in the page: xterm.js over `wss://HOST/v1/domains/{id}/console/ws`, whose
// binary frames carry the console's bytes both ways (docs/web-ui.md).
//
// Copy and paste: select with the mouse (xterm's selection) and Ctrl+Shift+C copies it;
// Ctrl+Shift+V, the browser's paste (middle click, the context menu, Ctrl+V where the guest does
// not want it) types the clipboard into the guest as xterm's `paste` does (bracketed if the guest
// asked for it).

import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';

import { seg, wsUrl } from './api';
import { h } from './dom';

export interface ConsoleView {
  element: HTMLElement;
  close(): void;
}

export function serialConsole(domain: string): ConsoleView {
  const status = h('span', { class: 'status', 'data-testid': 'console-status', role: 'status' }, 'connecting');
  const screen = h('div', { class: 'terminal', 'data-testid': 'console-terminal' });
  const element = h(
    'section',
    { class: 'console', 'aria-label': 'Serial console' },
    h('p', { class: 'hint' }, 'Select text to copy it (Ctrl+Shift+C); paste with Ctrl+Shift+V. ', status),
    screen,
  );

  const term = new Terminal({
    convertEol: false,
    cursorBlink: true,
    rows: 30,
    scrollback: 5000,
    fontFamily: 'monospace',
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  const encoder = new TextEncoder();
  let socket: WebSocket | null = null;

  term.attachCustomKeyEventHandler((e) => {
    if (e.type !== 'keydown' || !e.ctrlKey || !e.shiftKey) return true;
    if (e.code === 'KeyC') {
      const text = term.getSelection();
      if (text) void navigator.clipboard.writeText(text);
      e.preventDefault();
      return false;
    }
    if (e.code === 'KeyV') {
      navigator.clipboard.readText().then((text) => term.paste(text), () => undefined);
      e.preventDefault();
      return false;
    }
    return true;
  });
  term.onData((data) => {
    if (socket?.readyState === WebSocket.OPEN) socket.send(encoder.encode(data));
  });
  term.onBinary((data) => {
    // Bytes xterm makes as a binary string (some mouse reports): one char per byte.
    if (socket?.readyState === WebSocket.OPEN) {
      socket.send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff));
    }
  });

  const onResize = () => fit.fit();
  // Opened once the element is in the document (xterm measures its font there).
  queueMicrotask(() => {
    term.open(screen);
    fit.fit();
    window.addEventListener('resize', onResize);
    socket = new WebSocket(wsUrl(`/v1/domains/${seg(domain)}/console/ws`));
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => {
      status.textContent = 'connected';
      term.focus();
    };
    socket.onmessage = (m) => {
      if (m.data instanceof ArrayBuffer) term.write(new Uint8Array(m.data));
      else term.write(String(m.data));
    };
    socket.onclose = (e) => {
      status.textContent = `disconnected${e.reason ? `: ${e.reason}` : ''}`;
    };
    socket.onerror = () => {
      status.textContent = 'cannot connect (is the guest running?)';
    };
  });

  return {
    element,
    close() {
      window.removeEventListener('resize', onResize);
      socket?.close();
      term.dispose();
    },
  };
}

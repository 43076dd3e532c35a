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
import { subscribe } from './events';
import type { View } from './view';

export function serialConsole(domain: string): Required<View> {
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

  function connect(): void {
    const ws = new WebSocket(wsUrl(`/v1/domains/${seg(domain)}/console/ws`));
    socket = ws;
    ws.binaryType = 'arraybuffer';
    let opened = false;
    ws.onopen = () => {
      opened = true;
      status.textContent = 'connected';
      term.focus();
    };
    ws.onmessage = (m) => {
      if (m.data instanceof ArrayBuffer) term.write(new Uint8Array(m.data));
      else term.write(String(m.data));
    };
    // Refused (the guest is not running) or ended (it stopped): connect again when it starts.
    ws.onclose = () => {
      status.textContent = opened
        ? 'disconnected: reconnects when the guest starts'
        : 'not connected (the guest is not running): connects when it starts';
    };
  }

  // Fitted whenever the box changes size, and once the fonts are in (xterm measures a cell then).
  const resizes = new ResizeObserver(() => fit.fit());
  const unsubscribe = subscribe((event) => {
    const idle = !socket || socket.readyState === WebSocket.CLOSED || socket.readyState === WebSocket.CLOSING;
    if (event.domain === domain && event.event === 'Started' && idle) connect();
  });
  // Opened once the element is in the document (xterm measures its font there).
  queueMicrotask(() => {
    term.open(screen);
    fit.fit();
    resizes.observe(screen);
    void document.fonts.ready.then(() => fit.fit());
    connect();
  });

  return {
    element,
    close() {
      unsubscribe();
      resizes.disconnect();
      if (socket) {
        socket.onclose = null;
        socket.close();
      }
      term.dispose();
    },
  };
}

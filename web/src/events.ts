// The lifecycle event stream (`GET /v1/events`, Server-Sent Events; docs/events.md): one
// EventSource for the whole page, shared by whatever view listens. EventSource sends the
// session cookie (same origin) and reconnects by itself after a break.

import type { StreamEvent } from './types';

type Listener = (event: StreamEvent) => void;

let source: EventSource | null = null;
const listeners = new Set<Listener>();

function open(): void {
  source = new EventSource('/v1/events?kind=lifecycle');
  source.onmessage = (message) => {
    let event: StreamEvent;
    try {
      event = JSON.parse(message.data as string) as StreamEvent;
    } catch {
      return;
    }
    for (const listener of listeners) listener(event);
  };
  // `lagged`: events were lost; tell listeners to reread everything.
  source.addEventListener('lagged', () => {
    for (const listener of listeners) {
      listener({ domain: '', uuid: '', kind: 'lifecycle', event: 'Lagged' });
    }
  });
}

/** Calls `listener` for each lifecycle event until the returned function is called. */
export function subscribe(listener: Listener): () => void {
  if (!source) open();
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Closes the stream (on logout: its cookie is gone). */
export function closeEvents(): void {
  source?.close();
  source = null;
}

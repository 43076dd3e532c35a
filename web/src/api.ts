// The one way the UI talks to oxvirtd: same-origin fetches carrying the session cookie, with the
// session's CSRF token on every request that is not a GET (docs/remote.md, "Sessions").

import { errorLine } from './dom';
import type { ApiErrorBody, Session } from './types';

/** An error reply of the API, or a transport failure, as one sentence to show. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

// Kept in memory only: a new tab asks `GET /v1/session` for it again.
let session: Session | null = null;
const sessionListeners: ((s: Session | null) => void)[] = [];

export function currentSession(): Session | null {
  return session;
}

export function onSessionChange(listener: (s: Session | null) => void): void {
  sessionListeners.push(listener);
}

function setSession(next: Session | null): void {
  session = next;
  for (const listener of sessionListeners) listener(next);
}

export function isAdmin(): boolean {
  return session?.role === 'admin';
}

/** Percent-encodes one path segment (a domain, pool, volume or network name). */
export function seg(name: string): string {
  return encodeURIComponent(name);
}

function headers(method: string, extra: Record<string, string> = {}): Record<string, string> {
  const all: Record<string, string> = { Accept: 'application/json', ...extra };
  if (method !== 'GET' && method !== 'HEAD' && session) all['X-CSRF-Token'] = session.csrf_token;
  return all;
}

async function errorOf(response: Response): Promise<ApiError> {
  const text = await response.text();
  try {
    const body = JSON.parse(text) as ApiErrorBody;
    if (body && typeof body.message === 'string') {
      return new ApiError(response.status, body.code, body.message);
    }
  } catch {
    // Not JSON: a proxy's page or a plain-text error; show its first line.
  }
  const line = text.split('\n')[0] || response.statusText;
  return new ApiError(response.status, 'http', `HTTP ${response.status}: ${line}`);
}

/** A JSON request; resolves to the parsed reply (undefined for 204). */
export async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: headers(
        method,
        body === undefined ? {} : { 'Content-Type': 'application/json' },
      ),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', `cannot reach oxvirtd: ${String(e)}`);
  }
  if (response.status === 401 && session && path !== '/v1/session') {
    // The session expired (30 min idle, 12 h at most) or the daemon restarted.
    setSession(null);
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const get = <T>(path: string) => request<T>('GET', path);
export const post = <T>(path: string, body?: unknown) => request<T>('POST', path, body);

export async function login(user: string, password: string): Promise<Session> {
  const s = await request<Session>('POST', '/v1/session', { user, password });
  setSession(s);
  return s;
}

/** The session of this browser's cookie, if it still has one. */
export async function resume(): Promise<Session | null> {
  try {
    const s = await request<Session>('GET', '/v1/session');
    setSession(s);
    return s;
  } catch {
    setSession(null);
    return null;
  }
}

export async function logout(): Promise<void> {
  try {
    await request<void>('DELETE', '/v1/session');
  } finally {
    setSession(null);
  }
}

/**
 * `vol-upload`: PUTs `file` as the volume's bytes with an XMLHttpRequest, whose upload events
 * report progress (fetch has none for request bodies).
 */
export function upload(
  path: string,
  file: Blob,
  progress: (sent: number, total: number) => void,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', path);
    for (const [name, value] of Object.entries(
      headers('PUT', { 'Content-Type': 'application/octet-stream' }),
    )) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (e) => progress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload broke off'));
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve();
        return;
      }
      let message = `HTTP ${xhr.status}`;
      try {
        message = (JSON.parse(xhr.responseText) as ApiErrorBody).message || message;
      } catch {
        // keep the status line
      }
      reject(new ApiError(xhr.status, 'upload', message));
    };
    xhr.send(file);
  });
}

/** `wss://HOST/PATH` of this page's origin, for the console and VNC WebSockets. */
export function wsUrl(path: string): string {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

/**
 * `GET path`, or null after showing its error in `into` (role=alert): what every page does with
 * the lists it shows.
 */
export async function getOrShow<T>(into: HTMLElement, path: string): Promise<T | null> {
  try {
    return await get<T>(path);
  } catch (e) {
    into.replaceChildren(errorLine((e as Error).message));
    return null;
  }
}


// A tiny DOM builder: `h('button', { onclick, 'data-testid': 'x' }, 'Start')`. Text children are
// text nodes (never parsed as HTML), so names from the API cannot inject markup.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, unknown>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value as EventListener);
    } else if (key === 'class') {
      el.className = String(value);
    } else if (key in el && !key.includes('-')) {
      (el as unknown as Record<string, unknown>)[key] = value;
    } else {
      el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el: Node, children: (Child | Child[])[]): void {
  for (const child of children) {
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else if (child !== null && child !== undefined && child !== false) {
      el.appendChild(document.createTextNode(String(child)));
    }
  }
}

/** Replaces `el`'s children. */
export function fill(el: Element, ...children: (Child | Child[])[]): void {
  el.replaceChildren();
  append(el, children);
}

/** A message line for errors (role=alert, so screen readers announce it). */
export function errorLine(message: string, testid = 'error'): HTMLElement {
  return h('p', { class: 'error', role: 'alert', 'data-testid': testid }, message);
}

/** A table with a header row; `rows` are arrays of cells. */
export function table(
  testid: string,
  head: string[],
  rows: (Child | Child[])[][],
  rowAttrs: (i: number) => Attrs = () => ({}),
): HTMLTableElement {
  return h(
    'table',
    { 'data-testid': testid },
    h('thead', {}, h('tr', {}, head.map((c) => h('th', { scope: 'col' }, c)))),
    h(
      'tbody',
      {},
      rows.map((cells, i) => h('tr', rowAttrs(i), cells.map((c) => h('td', {}, c)))),
    ),
  );
}

/**
 * A modal confirmation (a native <dialog>): resolves true when the user confirms. Used before
 * destroy and delete.
 */
export function confirmDialog(question: string, confirmLabel: string): Promise<boolean> {
  return new Promise((resolve) => {
    const dialog = h(
      'dialog',
      { 'data-testid': 'confirm-dialog', 'aria-labelledby': 'confirm-question' },
      h('p', { id: 'confirm-question' }, question),
      h(
        'div',
        { class: 'buttons' },
        h('button', { type: 'button', 'data-testid': 'confirm-cancel', onclick: () => done(false) }, 'Cancel'),
        h(
          'button',
          { type: 'button', class: 'danger', 'data-testid': 'confirm-ok', onclick: () => done(true) },
          confirmLabel,
        ),
      ),
    );
    const done = (answer: boolean) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    dialog.addEventListener('cancel', () => done(false));
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}

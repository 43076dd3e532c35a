// A domain's lifecycle buttons, the ones its state allows; destroy and delete ask first. Only an
// admin session gets any (a read-only one would be refused with 403 anyway).

import { isAdmin, post, request, seg } from './api';
import { confirmDialog, h } from './dom';
import type { Action, DomainState } from './types';

const LABELS: Record<Action | 'delete', string> = {
  start: 'Start',
  shutdown: 'Shut down',
  reboot: 'Reboot',
  suspend: 'Pause',
  resume: 'Resume',
  destroy: 'Force off',
  delete: 'Delete',
};

function allowed(state: DomainState): (Action | 'delete')[] {
  switch (state) {
    case 'running':
      return ['shutdown', 'reboot', 'suspend', 'destroy'];
    case 'paused':
      return ['resume', 'destroy'];
    case 'in shutdown':
      return ['destroy'];
    case 'pmsuspended':
      return ['destroy'];
    default:
      return ['start', 'delete'];
  }
}

/**
 * The buttons for `domain` in `state`; `report` gets each outcome (an error message, or null
 * when it worked).
 */
export function actionButtons(
  domain: string,
  state: DomainState,
  report: (error: string | null) => void,
  after: (action: Action | 'delete') => void = () => undefined,
): HTMLElement | null {
  if (!isAdmin()) return null;
  const group = h('div', { class: 'actions', role: 'group', 'aria-label': `Actions for ${domain}` });
  for (const action of allowed(state)) {
    const destructive = action === 'destroy' || action === 'delete';
    const button = h(
      'button',
      {
        type: 'button',
        class: destructive ? 'danger' : '',
        'data-testid': `action-${action}`,
        'aria-label': `${LABELS[action]} ${domain}`,
      },
      LABELS[action],
    );
    button.addEventListener('click', async () => {
      if (destructive) {
        const question =
          action === 'destroy'
            ? `Force off ${domain}? The guest stops at once, as if its power cord were pulled.`
            : `Delete ${domain}? Its definition is removed (its disks stay).`;
        if (!(await confirmDialog(question, LABELS[action]))) return;
      }
      button.disabled = true;
      try {
        if (action === 'delete') await request('DELETE', `/v1/domains/${seg(domain)}`);
        else await post(`/v1/domains/${seg(domain)}/${action}`);
        report(null);
        after(action);
      } catch (e) {
        report(`${LABELS[action]} ${domain}: ${(e as Error).message}`);
      } finally {
        button.disabled = false;
      }
    });
    group.append(button);
  }
  return group;
}

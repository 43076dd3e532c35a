import { login } from '../api';
import { errorLine, h } from '../dom';
import type { View } from '../view';

export function loginPage(done: () => void): View {
  const user = h('input', { id: 'login-user', name: 'user', autocomplete: 'username', required: true, 'data-testid': 'login-user' });
  const password = h('input', {
    id: 'login-password',
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
    'data-testid': 'login-password',
  });
  const message = h('div', { 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', 'data-testid': 'login-submit' }, 'Log in');
  const form = h(
    'form',
    { class: 'login', 'data-testid': 'login-form' },
    h('h1', {}, 'oxvirt'),
    h('label', { for: 'login-user' }, 'User'),
    user,
    h('label', { for: 'login-password' }, 'Password'),
    password,
    button,
    message,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    message.replaceChildren();
    try {
      await login(user.value, password.value);
      done();
    } catch (err) {
      message.append(errorLine((err as Error).message, 'login-error'));
    } finally {
      button.disabled = false;
    }
  });
  queueMicrotask(() => user.focus());
  return { element: form };
}

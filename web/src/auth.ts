import { Api, ApiError } from './api';
import { h } from './dom';

/**
 * The sign-up and log-in forms. A new account goes to the log-in form with its email filled in,
 * so signing up and logging in stay two plain steps.
 */
export function authView(api: Api, onLoggedIn: () => void, notice = ''): HTMLElement {
  const root = h('section', { className: 'auth card', 'data-testid': 'auth' });
  const show = (mode: 'login' | 'signup', message = '', email = '') =>
    root.replaceChildren(mode === 'login' ? loginForm(message, email) : signupForm());

  const message = (text: string, kind: 'info' | 'error') =>
    h('p', { className: `message ${kind}`, 'data-testid': `auth-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);

  const field = (label: string, input: HTMLInputElement) =>
    h('label', {}, h('span', {}, label), input, h('small', { className: 'field-error', 'data-field': input.name }));

  function showError(form: HTMLFormElement, error: unknown) {
    form.querySelector('.message')?.remove();
    form.querySelectorAll<HTMLElement>('.field-error').forEach((el) => (el.textContent = ''));
    if (error instanceof ApiError)
      for (const [name, problems] of Object.entries(error.fields ?? {})) {
        const slot = form.querySelector<HTMLElement>(`.field-error[data-field="${name}"]`);
        if (slot) slot.textContent = problems.join('; ');
      }
    form.querySelector('button[type=submit]')!.before(message(String((error as Error).message ?? error), 'error'));
  }

  async function submit(form: HTMLFormElement, action: () => Promise<void>) {
    const button = form.querySelector<HTMLButtonElement>('button[type=submit]')!;
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      showError(form, error);
    } finally {
      button.disabled = false;
    }
  }

  function loginForm(notice: string, email: string): HTMLElement {
    const emailInput = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'email', value: email, 'data-testid': 'login-email' });
    const password = h('input', { type: 'password', name: 'password', required: true, autocomplete: 'current-password', 'data-testid': 'login-password' });
    const form: HTMLFormElement = h(
      'form',
      {
        'data-testid': 'login-form',
        onsubmit: (e: Event) => {
          e.preventDefault();
          submit(form, async () => {
            await api.login(emailInput.value.trim(), password.value);
            onLoggedIn();
          });
        },
      },
      h('h2', {}, 'Log in'),
      notice && message(notice, 'info'),
      field('Email', emailInput),
      field('Password', password),
      h('button', { type: 'submit', className: 'primary', 'data-testid': 'login-submit' }, 'Log in'),
      h('p', { className: 'switch' }, 'No account yet? ',
        h('button', { type: 'button', className: 'link', 'data-testid': 'show-signup', onclick: () => show('signup') }, 'Sign up')),
    );
    return form;
  }

  function signupForm(): HTMLElement {
    const username = h('input', { name: 'username', required: true, minLength: 3, maxLength: 50, autocomplete: 'username', 'data-testid': 'signup-username' });
    const email = h('input', { type: 'email', name: 'email', required: true, autocomplete: 'email', 'data-testid': 'signup-email' });
    const password = h('input', { type: 'password', name: 'password', required: true, minLength: 8, autocomplete: 'new-password', 'data-testid': 'signup-password' });
    const form: HTMLFormElement = h(
      'form',
      {
        'data-testid': 'signup-form',
        onsubmit: (e: Event) => {
          e.preventDefault();
          submit(form, async () => {
            const user = await api.register(username.value.trim(), email.value.trim(), password.value);
            show('login', `Account ${user.username} created. Log in to continue.`, user.email);
          });
        },
      },
      h('h2', {}, 'Sign up'),
      field('Username', username),
      field('Email', email),
      field('Password (at least 8 characters)', password),
      h('button', { type: 'submit', className: 'primary', 'data-testid': 'signup-submit' }, 'Create account'),
      h('p', { className: 'switch' }, 'Already have an account? ',
        h('button', { type: 'button', className: 'link', 'data-testid': 'show-login', onclick: () => show('login') }, 'Log in')),
    );
    return form;
  }

  show('login', notice);
  return root;
}

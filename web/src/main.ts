import 'uplot/dist/uPlot.min.css';
import './style.css';
import { Api } from './api';
import { authView } from './auth';
import { h } from './dom';
import { Library } from './library';

const api = new Api();
const app = document.getElementById('app')!;
let library: Library | null = null;

function showAuth(notice = ''): void {
  library?.close();
  library = null;
  app.replaceChildren(h('header', { className: 'topbar' }, h('h1', {}, 'DeepEmotion')), authView(api, start, notice));
}

async function start(): Promise<void> {
  if (!api.token) return showAuth();
  try {
    const user = await api.profile();
    library = new Library(api, user, () => {
      api.token = null;
      showAuth('You are logged out.');
    });
    app.replaceChildren(library.root);
  } catch (error) {
    showAuth(api.token ? `Could not reach the server: ${(error as Error).message}` : '');
  }
}

api.onUnauthorized = () => showAuth('Your session has ended; please log in again.');
start();
